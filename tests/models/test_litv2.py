"""LITv2: official checkpoint conversion, HiLo / DTM against the official math, sizes the official classifier refuses.

The official key layout (`fixtures/litv2_official_small_keys.json`: names and shapes only) was generated once from
https://github.com/ziplab/LITv2 (`7501c86`, `classification/models/litv2.py`; its DTM imports the CUDA-only DCN
extension and apex, stubbed for CPU with the deformable conv routed to `torchvision.ops.deform_conv2d`, whose offset
layout is the official one) with ``{k: list(v.shape) for k, v in LITv2(...).state_dict().items()}`` for litv2_small.

Parity, measured once outside the suite (fp32, CPU): the official model with every parameter perturbed by
N(0, 0.02) (so the DTM offsets are non-zero and fractional) and random BatchNorm statistics, loaded into the zoo
model through `checkpoint_filter_fn` (strict), max |logit difference|:

| model | input | official code | max abs diff | max abs logit |
|---|---|---|---|---|
| litv2_small | 224x224, 256x256 | classification | 1.3e-6, 1.2e-6 | 2.2 |
| litv2_small, alpha 0.0 / 0.5 / 1.0 | 224x224 | classification | 1.5e-6, 1.4e-6, 1.2e-6 | 2.5, 2.3, 2.8 |
| litv2_medium | 224x224 | classification | 1.4e-6 | 2.1 |
| litv2_base | 224x224, 384x384 | classification | 2.6e-6, 2.2e-6 | 2.6, 2.8 |

and the four feature maps of the official segmentation backbone (`segmentation/mmseg/models/backbones/litv2.py`,
its per-output LayerNorms applied to the zoo's maps), litv2_small, max abs diff / max abs value over the maps:
512x512 4.9e-5 / 6.3, 512x683 7.6e-5 / 6.3 (maps 128x171, 64x85, 32x42, 16x21: HiLo pads 85 and 21 to even),
250x300 4.0e-5 / 6.1 (alpha 0.5 too), 97x131 1.0e-5 / 5.5.
"""
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import ops
import timm
from tests.official_containers import CONTAINERS
import zoo  # noqa: F401  (registers the zoo models)
from zoo.models import litv2 as zoo_litv2
from zoo.models.litv2 import LITv2, checkpoint_filter_fn

FIXTURES = Path(__file__).parent / 'fixtures'
# each variant's official parameter count, sum(p.numel() for p in model.parameters()): tests/models/param_counts.py
# collects this literal for the generic suite's test_param_count
PARAM_COUNTS = {
    # official ziplab/LITv2 code (classification/models/litv2.py, configs litv2-*.yaml)
    'litv2_small': 27_844_000,
    'litv2_medium': 48_830_368,
    'litv2_base': 86_520_704,
}
VARIANTS = ('litv2_small', 'litv2_medium', 'litv2_base')


@pytest.fixture(scope='module', autouse=True)
def _one_intra_op_thread():
    """See tests/models/test_models.py: competing OpenMP threads spin; small inputs gain little from a second one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _official_state_dict(seed: int = 0) -> dict:
    """A random state dict in the official repository's layout (names and shapes from the fixture)."""
    keys = json.loads((FIXTURES / 'litv2_official_small_keys.json').read_text())['keys']
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, shape in keys.items():
        if name.endswith('num_batches_tracked'):
            sd[name] = torch.tensor(100)
            continue
        t = torch.randn(shape, generator=g) * 0.05
        if re.search(r'(norm\d?|norm_layer)\.(weight|running_var)$', name):
            t = t.abs() + 1
        sd[name] = t
    return sd


def _perturb(module: torch.nn.Module, std: float = 0.05, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)


# --------------------------------------------------------------------------------------------------------------
# Registry, parameter counts, structure


def test_registered_variants_and_tags():
    assert set(VARIANTS) <= set(timm.list_models('litv2_*'))
    cfg = timm.create_model('litv2_base.in1k_384', device='meta').pretrained_cfg
    assert cfg['input_size'] == (3, 384, 384) and cfg['pool_size'] == (12, 12) and cfg['license'] == 'apache-2.0'


@pytest.mark.parametrize('alpha, expected', [(0.0, 28_089_760), (0.5, 27_647_392), (1.0, 28_089_760)])
def test_alpha_sweep_param_counts(alpha, expected):
    """The LITv2-S alpha sweep released in the ziplab/LITv2 README, counted on its classification/models/litv2.py
    (separate Hi-Fi / Lo-Fi output projections)."""
    model = timm.create_model('litv2_small', alpha=alpha, device='meta')
    assert sum(p.numel() for p in model.parameters()) == expected


def test_official_shapes_and_head_split():
    """ziplab/LITv2 classification/models/litv2.py (small): stage 3 l_q (320, 384), l_kv (640, 384), l_proj
    (320, 320), h_qkv (192, 384), h_proj (64, 64); stage 4 (s = 1) Lo-Fi only over all 24 heads; stages 1-2
    without attention."""
    model = timm.create_model('litv2_small', device='meta')
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    s3 = 'stages.2.blocks.0.attn.'
    assert [shapes[s3 + n + '.weight'] for n in ('l_q', 'l_kv', 'l_proj', 'h_qkv', 'h_proj')] == [
        (320, 384), (640, 384), (320, 320), (192, 384), (64, 64)]
    s4 = 'stages.3.blocks.0.attn.'
    assert shapes[s4 + 'l_q.weight'] == (768, 768) and shapes[s4 + 'l_kv.weight'] == (1536, 768)
    assert not any(k.startswith(s4 + 'h_') for k in shapes)
    assert not any(k.startswith(('stages.0.blocks.0.attn', 'stages.1.blocks.0.norm1')) for k in shapes)
    assert shapes['stages.1.downsample.conv.weight'] == (192, 96, 2, 2)
    assert shapes['stages.1.downsample.conv_offset.weight'] == (8, 96, 2, 2)


def test_group_matcher_and_drop_path_schedule():
    model = timm.create_model('litv2_medium', drop_path_rate=0.3, device='meta')
    matcher = model.group_matcher()
    names = [n for n, _ in model.named_parameters()]
    patterns = [matcher['stem']] + [p for p, _ in matcher['blocks']]
    assert all(any(re.match(p, n) for p in patterns) or n.startswith('head.') for n in names)
    rates = [getattr(b.drop_path2, 'drop_prob', 0.) for s in model.stages for b in s.blocks]
    assert rates == pytest.approx(torch.linspace(0, 0.3, 24).tolist())


# --------------------------------------------------------------------------------------------------------------
# Official checkpoints


def test_checkpoint_filter_converts_the_official_layout():
    official = _official_state_dict()
    model = timm.create_model('litv2_small').eval()
    # the official training checkpoint: {'model': ..., 'optimizer': ..., 'epoch': ...}
    sd = checkpoint_filter_fn({'model': official, 'optimizer': {}, 'epoch': 299, 'max_accuracy': 82.0}, model)
    model.load_state_dict(sd, strict=True)
    assert torch.equal(sd['stages.1.downsample.conv.weight'], official['layers.0.downsample.dconv.weight'])
    assert torch.equal(sd['stages.3.downsample.conv_offset.bias'],
                       official['layers.2.downsample.dconv.conv_offset.bias'])
    assert torch.equal(sd['stages.2.downsample.norm.running_var'],
                       official['layers.1.downsample.norm_layer.running_var'])
    assert torch.equal(sd['stages.0.blocks.1.mlp.dwconv.weight'],
                       official['layers.0.blocks.1.mlp.dwconv.dwconv.weight'])
    assert torch.equal(sd['head.fc.weight'], official['head.weight'])
    # DDP prefix and the zoo's own layout pass through
    ddp = checkpoint_filter_fn({'model': {'module.' + k: v for k, v in official.items()}}, model)
    assert ddp.keys() == sd.keys()
    ours = model.state_dict()
    assert checkpoint_filter_fn(ours, model) is ours
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.isfinite(model(x)).all()


def test_pretrained_loads_through_the_filter(tmp_path):
    """`pretrained=True` with a local official checkpoint goes through `checkpoint_filter_fn`."""
    path = tmp_path / 'litv2_s.pth'
    official = _official_state_dict(seed=1)
    torch.save({'model': official, 'epoch': 1}, path)
    model = timm.create_model('litv2_small', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    assert torch.equal(model.stages[2].blocks[1].attn.h_qkv.weight, official['layers.2.blocks.1.attn.h_qkv.weight'])


# --------------------------------------------------------------------------------------------------------------
# HiLo and DTM against the official math


def _official_dense_hilo(attn: zoo_litv2.HiLo, x: torch.Tensor) -> torch.Tensor:
    """The official dense-prediction HiLo, restated in fp64 from the zoo module's weights: the normed map is
    zero-padded to multiples of s BEFORE every projection; Hi-Fi windows by reshape, Lo-Fi keys from the
    AvgPool2d'd padded map; both cropped, Hi-Fi channels first."""
    B, H, W, C = x.shape
    s, d = attn.ws, attn.head_dim
    lin = lambda m, t: F.linear(t, m.weight.double(), m.bias.double())  # noqa: E731
    x = F.pad(x.double(), (0, 0, 0, (s - W % s) % s, 0, (s - H % s) % s))
    Hp, Wp = x.shape[1:3]
    outs = []
    if attn.h_heads:
        hh = attn.h_heads
        xw = x.reshape(B, Hp // s, s, Wp // s, s, C).transpose(2, 3)
        qkv = lin(attn.h_qkv, xw).reshape(B, -1, s * s, 3, hh, d).permute(3, 0, 1, 4, 2, 5)
        a = ((qkv[0] @ qkv[1].transpose(-2, -1)) * attn.scale).softmax(-1) @ qkv[2]
        a = a.transpose(2, 3).reshape(B, Hp // s, Wp // s, s, s, hh * d).transpose(2, 3).reshape(B, Hp, Wp, -1)
        outs.append(lin(attn.h_proj, a)[:, :H, :W])
    if attn.l_heads:
        lh = attn.l_heads
        q = lin(attn.l_q, x).reshape(B, Hp * Wp, lh, d).transpose(1, 2)
        pooled = F.avg_pool2d(x.permute(0, 3, 1, 2), s).flatten(2).transpose(1, 2) if s > 1 else x.flatten(1, 2)
        kv = lin(attn.l_kv, pooled).reshape(B, -1, 2, lh, d).permute(2, 0, 3, 1, 4)
        a = ((q @ kv[0].transpose(-2, -1)) * attn.scale).softmax(-1) @ kv[1]
        outs.append(lin(attn.l_proj, a.transpose(1, 2).reshape(B, Hp, Wp, -1))[:, :H, :W])
    return torch.cat(outs, dim=-1)


@pytest.mark.parametrize('heads, alpha, ws, size', [
    (4, 0.5, 2, (6, 8)),  # both paths, divisible
    (4, 0.75, 2, (5, 7)),  # both paths, padded: padded tokens are keys equal to the bias, pooled borders diluted
    (4, 0.9, 3, (7, 5)),  # ws 3, padded
    (4, 0.0, 2, (5, 6)),  # Hi-Fi only
    (4, 1.0, 2, (5, 6)),  # Lo-Fi only, pooled
    (4, 0.9, 1, (5, 6)),  # s = 1: global attention over all heads
])
def test_hilo_matches_official_dense_math(heads, alpha, ws, size):
    torch.manual_seed(0)
    attn = zoo_litv2.HiLo(32, heads, window_size=ws, alpha=alpha)
    _perturb(attn)  # non-zero biases: padded positions matter
    x = torch.randn(2, *size, 32)
    with torch.no_grad():
        got = attn(x)
    torch.testing.assert_close(got.double(), _official_dense_hilo(attn, x), rtol=1e-5, atol=1e-5)


def test_dtm_offsets_use_the_official_layout():
    """Zero offsets: a plain 2x2/2 conv. Offset channels (2t, 2t+1) = (dy, dx) of kernel tap t: dy = 1 on every tap
    samples one row lower (zeros below the map), dx = 1 one column to the right."""
    torch.manual_seed(0)
    dtm = zoo_litv2.DeformableTokenMerging(8, 16).eval()
    x = torch.randn(2, 6, 10, 8)  # NHWC
    conv = lambda t: F.conv2d(t, dtm.conv.weight, dtm.conv.bias, stride=2)  # noqa: E731
    post = lambda t: dtm.act(dtm.norm(t)).permute(0, 2, 3, 1)  # noqa: E731
    xc = x.permute(0, 3, 1, 2)
    with torch.no_grad():
        torch.testing.assert_close(dtm(x), post(conv(xc)))
        for channels, shifted in (((0, 2, 4, 6), F.pad(xc[:, :, 1:], (0, 0, 0, 1))),
                                  ((1, 3, 5, 7), F.pad(xc[:, :, :, 1:], (0, 1)))):
            dtm.conv_offset.bias.zero_()
            dtm.conv_offset.bias[list(channels)] = 1.0
            torch.testing.assert_close(dtm(x), post(conv(shifted)), rtol=1e-5, atol=1e-5)


def test_triton_backend_matches_reference_on_a_demo_model():
    """A demo-sized LITv2 on the Triton kernels (window attention + Lo-Fi; the interpreter on CPU): logits and every
    parameter gradient equal the reference backend's."""
    torch.manual_seed(0)
    model = LITv2(num_classes=5, embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), alpha=0.5)
    _perturb(model, std=0.02)
    x = torch.randn(1, 3, 64, 96)

    def run(backend):
        model.zero_grad(set_to_none=True)
        with ops.use_backend(backend):
            out = model(x)
        out.square().sum().backward()
        return out, {n: p.grad.clone() for n, p in model.named_parameters()}

    out_t, grads_t = run('triton')
    out_r, grads_r = run('reference')
    torch.testing.assert_close(out_t, out_r, rtol=1e-4, atol=1e-5)
    for n in grads_r:
        torch.testing.assert_close(grads_t[n], grads_r[n], rtol=1e-3, atol=1e-5, msg=n)


# --------------------------------------------------------------------------------------------------------------
# Sizes: any input (the official classifier asserts its construction size); segmentation feature extraction


def _official_dense_sizes(size):
    """Map sizes of the official dense backbone: input padded to a multiple of 4, then 2x2/2 DTMs that floor."""
    h, w = math.ceil(size[0] / 4), math.ceil(size[1] / 4)
    out = []
    for _ in range(4):
        out.append((h, w))
        h, w = h // 2, w // 2
    return out


@pytest.mark.parametrize('size', [(512, 512), (512, 683)])
def test_segmentation_features(size):
    """Issue requirement: feature extraction at 512x512 and 512x683 (683 not a multiple of 4 or 32: maps 128x171,
    64x85, 32x42, 16x21 as the official segmentation backbone makes them; HiLo pads 85 -> 86 and 21 -> 22)."""
    torch.manual_seed(0)
    model = timm.create_model('litv2_small', features_only=True).eval()
    expected = [(1, c, *hw) for c, hw in zip((96, 192, 384, 768), _official_dense_sizes(size))]
    with torch.no_grad():
        maps = model(torch.randn(1, 3, *size))
    assert [tuple(m.shape) for m in maps] == expected and all(torch.isfinite(m).all() for m in maps)


def test_segmentation_features_train_at_an_awkward_size():
    """Train mode with every gradient at a small analog of 512x683 (128x171: 171 not a multiple of 4; maps 32x43,
    16x21, 8x10, 4x5 -- odd maps into the DTMs, a stage-3 map HiLo pads)."""
    torch.manual_seed(0)
    model = timm.create_model('litv2_small', features_only=True).train()
    size = (128, 171)
    maps = model(torch.randn(2, 3, *size))
    assert [tuple(m.shape[-2:]) for m in maps] == _official_dense_sizes(size)
    sum(m.square().mean() for m in maps).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize('name', ['litv2_small', 'litv2_base'])  # medium has small's maps
def test_segmentation_feature_shapes(name):
    with torch.device('meta'):
        model = timm.create_model(name, features_only=True, out_indices=(0, 1, 2, 3))
        for size in ((512, 512), (512, 683), (97, 131)):
            expected = [(1, c, *hw) for c, hw in zip(model.feature_info.channels(), _official_dense_sizes(size))]
            assert [tuple(m.shape) for m in model(torch.empty(1, 3, *size))] == expected, size


def test_classification_at_384_and_odd_sizes():
    """The classifier takes any size (official: only its construction size); 384 is the fine-tuned model's."""
    model = timm.create_model('litv2_small', num_classes=7, device='meta').eval()
    for size in ((384, 384), (250, 300), (33, 65)):
        assert model(torch.empty(2, 3, *size, device='meta')).shape == (2, 7)


# pretrained=True for this family (tests/test_pretrained_loopback.py): the smallest model with an official key layout,
# its official weights in the container the official trainer saves, served over 127.0.0.1
LOOPBACK_MODEL = 'litv2_small'


def official_checkpoint(seed: int) -> tuple[Any, dict[str, Any]]:
    """The official file's object for `LOOPBACK_MODEL` (random weights) and the create_model kwargs it needs."""
    return CONTAINERS['swin_yacs'](_official_state_dict(seed=seed)), {}
