"""BiFormer: official checkpoint conversion, all attention in `ops`, and sizes the official models refuse.

The official key layouts (`fixtures/biformer_official_{tiny,stl,stl_nchw}_keys.json`: names and shapes only) were
generated once from https://github.com/rayleizhu/BiFormer (`1697bbb`; its code imports on torch 2.14 with einops
installed outside the project and fairscale's `checkpoint_wrapper` stubbed as identity) with
``{k: list(v.shape) for k, v in biformer_tiny().state_dict().items()}`` (and `biformer_stl()`, `biformer_stl_nchw()`
likewise; the nchw module imports `ops.torch.rrsda`, which the renamed scratch package needed re-pointed).

Parity, measured once outside the suite (fp32, CPU, batch 2): each official model with every parameter perturbed
by N(0, 0.02) and random BatchNorm statistics, loaded into the zoo model through `checkpoint_filter_fn` (strict),
max |logit difference|:

| model | input | official | max abs diff | max abs logit |
|---|---|---|---|---|
| biformer_tiny | 224x224, 448x336 | plain | 1.9e-6, 1.7e-6 | 7.3, 7.7 |
| biformer_tiny | 256x256, 224x288, 96x160, 250x300 | auto_pad=True | 1.7e-6, 1.7e-6, 2.4e-6, 1.9e-6 | ~7 |
| biformer_tiny, n_win=8 | 224x288 | auto_pad=True | 1.7e-6 | ~7 |
| biformer_small | 224x224, 448x336 | plain | 9.1e-6, 7.6e-6 | 24.8, 28.3 |
| biformer_base | 224x224, 448x336 | plain | 3.4e-5, 3.2e-5 | 138, 166 |
| biformer_stl | 224x224, 448x336 | plain (has no auto_pad) | 1.4e-6, 1.0e-6 | 3.7, 4.0 |
| biformer_stl_nchw | 224x224, 448x336 | plain (rrsda auto_pad, unused: maps divisible) | 1.8e-6, 1.2e-6 | 4.8, 5.0 |
| biformer_stl_nchw | 256x256, 250x300, 512x683 | grid H // n_win, unmasked zero pad | 1.9, 1.3, 2.3 | 4.9, 5.1, 4.3 |

The last row is the documented, deliberate difference (zoo/models/biformer.py docstring): on maps that are not
multiples of n_win the zoo's nchw model keeps the op's n_win x n_win grid with masked padding. Zero-padding the
projected q / k / v to the official grid before the op instead was measured too (0.28, 0.83, 1.7): it still
differs, because the op averages partial edge regions over their padded size for routing, so it was not adopted.

(the un-normed last-stage maps at the auto_pad sizes agreed to 5.5e-5 on a scale of ~45.)
"""
import io
import json
import math
import re
import tokenize
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import ops
import timm
from tests.official_containers import CONTAINERS
import zoo  # noqa: F401  (registers the zoo models)
from zoo.models import biformer as zoo_biformer
from zoo.models.biformer import checkpoint_filter_fn

FIXTURES = Path(__file__).parent / 'fixtures'
# each variant's official parameter count, sum(p.numel() for p in model.parameters()): tests/models/param_counts.py
# collects this literal for the generic suite's test_param_count
PARAM_COUNTS = {
    # official rayleizhu/BiFormer code (models/biformer.py)
    'biformer_tiny': 13_142_760,
    'biformer_small': 25_536_232,
    'biformer_base': 56_804_968,
    'biformer_stl': 28_372_552,
    'biformer_stl_nchw': 28_372_552,  # models/biformer_stl_nchw.py
}
VARIANTS = ('biformer_tiny', 'biformer_small', 'biformer_base', 'biformer_stl', 'biformer_stl_nchw')


@pytest.fixture(scope='module', autouse=True)
def _one_intra_op_thread():
    """See tests/models/test_models.py: competing OpenMP threads spin; small inputs gain little from a second one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _official_tiny_state_dict(seed: int = 0, variant: str = 'tiny') -> dict[str, torch.Tensor]:
    """A random state dict in the official repository's layout (names and shapes from the fixture)."""
    keys = json.loads((FIXTURES / f'biformer_official_{variant}_keys.json').read_text())['keys']
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, shape in keys.items():
        if name.endswith('num_batches_tracked'):
            sd[name] = torch.tensor(100)
            continue
        t = torch.randn(shape, generator=g) * 0.05
        if re.search(r'(norm\d?|downsample_layers\.\d\.[0-4])\.(weight|running_var)$', name) and len(shape) == 1:
            t = t.abs() + 1
        sd[name] = t
    return sd


# --------------------------------------------------------------------------------------------------------------
# Registry


def test_names_are_the_official_ones_and_new_to_timm():
    for name in VARIANTS:
        assert timm.models.model_entrypoint(name).__module__ == 'zoo.models.biformer'
    assert set(VARIANTS) <= set(zoo.list_models('biformer*'))


@pytest.mark.parametrize('name,gmacs', [
    # the official models (rayleizhu/BiFormer models/biformer*.py) under torch's FlopCounterMode at 224x224
    ('biformer_tiny', 2.216),
    ('biformer_small', 4.464),
    ('biformer_base', 9.759),
    ('biformer_stl', 4.574),
    ('biformer_stl_nchw', 4.574),
])
def test_gmacs_match_official(name, gmacs):
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device('meta'):
        model = timm.create_model(name).eval()
        x = torch.empty(1, 3, 224, 224)
    with FlopCounterMode(display=False) as counter:
        model(x)
    assert counter.get_total_flops() / 2e9 == pytest.approx(gmacs, rel=1e-3)


# --------------------------------------------------------------------------------------------------------------
# Checkpoint conversion


def test_official_layout_loads_strict():
    official = _official_tiny_state_dict()
    model = timm.create_model('biformer_tiny').eval()
    converted = checkpoint_filter_fn(official, model)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in converted.items()} == expected
    missing, unexpected = model.load_state_dict(converted, strict=True)
    assert not missing and not unexpected
    # spot checks of the renames that carry meaning (qkv layout, output projection, MLP, head)
    sd = model.state_dict()
    pairs = {
        'stem.conv1.weight': 'downsample_layers.0.0.weight',
        'stem.norm2.running_var': 'downsample_layers.0.4.running_var',
        'stages.2.downsample.conv.weight': 'downsample_layers.2.0.weight',
        'stages.0.blocks.1.cpe.weight': 'stages.0.1.pos_embed.weight',
        'stages.1.blocks.0.attn.qkv.weight': 'stages.1.0.attn.qkv.qkv.weight',
        'stages.1.blocks.0.attn.proj.bias': 'stages.1.0.attn.wo.bias',
        'stages.3.blocks.1.attn.qkv.weight': 'stages.3.1.attn.qkv.weight',
        'stages.3.blocks.1.attn.lepe.weight': 'stages.3.1.attn.lepe.weight',
        'stages.2.blocks.7.mlp.fc2.weight': 'stages.2.7.mlp.3.weight',
        'norm.running_mean': 'norm.running_mean',
        'head.fc.weight': 'head.weight',
    }
    for zoo_key, official_key in pairs.items():
        assert torch.equal(sd[zoo_key], official[official_key]), zoo_key
    with torch.no_grad():
        out = model(torch.randn(1, 3, 224, 224))
    assert torch.isfinite(out).all()


def test_official_stl_layout_loads_strict():
    official = _official_tiny_state_dict(variant='stl')
    model = timm.create_model('biformer_stl').eval()
    converted = checkpoint_filter_fn({'model': official}, model)
    assert {k: tuple(v.shape) for k, v in converted.items()} == {
        k: tuple(v.shape) for k, v in model.state_dict().items()}
    model.load_state_dict(converted, strict=True)
    sd = model.state_dict()
    pairs = {
        'stem.conv.weight': 'downsample_layers.0.0.weight',
        'stem.norm.running_var': 'downsample_layers.0.1.running_var',
        'stages.1.downsample.norm.weight': 'downsample_layers.1.0.weight',  # BN first in the Swin layout
        'stages.1.downsample.conv.weight': 'downsample_layers.1.1.weight',
        'stages.2.blocks.5.attn.qkv.weight': 'stages.2.blocks.5.attn.qkv.qkv.weight',
        'stages.0.blocks.0.mlp.fc2.weight': 'stages.0.blocks.0.mlp.2.weight',
        'head.fc.weight': 'head.weight',
    }
    for zoo_key, official_key in pairs.items():
        assert torch.equal(sd[zoo_key], official[official_key]), zoo_key


def test_official_stl_nchw_layout_loads_strict():
    """The refactored STL model: 1x1-conv qkv / output / MLP weights (out, in, 1, 1) load into the zoo's Linears."""
    official = _official_tiny_state_dict(variant='stl_nchw')
    assert official['stages.0.blocks.0.attn.qkv_linear.weight'].shape == (288, 96, 1, 1)
    model = timm.create_model('biformer_stl_nchw').eval()
    converted = checkpoint_filter_fn({'model': official}, model)
    assert {k: tuple(v.shape) for k, v in converted.items()} == {
        k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing, unexpected = model.load_state_dict(converted, strict=True)
    assert not missing and not unexpected
    sd = model.state_dict()
    pairs = {
        'stem.conv.weight': 'downsample_layers.0.0.weight',
        'stages.2.downsample.norm.running_mean': 'downsample_layers.2.0.running_mean',  # BN first
        'stages.2.downsample.conv.weight': 'downsample_layers.2.1.weight',
        'stages.0.blocks.1.norm1.weight': 'stages.0.blocks.1.norm1.weight',  # LayerNorm2d -> channels-last LN
        'stages.0.blocks.0.attn.qkv.weight': 'stages.0.blocks.0.attn.qkv_linear.weight',
        'stages.0.blocks.0.attn.qkv.bias': 'stages.0.blocks.0.attn.qkv_linear.bias',
        'stages.2.blocks.5.attn.proj.weight': 'stages.2.blocks.5.attn.output_linear.weight',
        'stages.2.blocks.5.attn.lepe.weight': 'stages.2.blocks.5.attn.lepe.weight',
        'stages.3.blocks.1.attn.qkv.weight': 'stages.3.blocks.1.attn.qkv.weight',  # nchwAttentionLePE, no bias
        'stages.3.blocks.1.attn.proj.weight': 'stages.3.blocks.1.attn.proj.weight',
        'stages.1.blocks.0.mlp.fc1.weight': 'stages.1.blocks.0.mlp.0.weight',
        'stages.1.blocks.0.mlp.fc2.weight': 'stages.1.blocks.0.mlp.2.weight',
        'norm.running_var': 'norm.running_var',
        'head.fc.weight': 'head.weight',
    }
    for zoo_key, official_key in pairs.items():
        expected = official[official_key]
        if expected.dim() == 4 and expected.shape[2:] == (1, 1):
            expected = expected.flatten(1)
        assert torch.equal(sd[zoo_key], expected), zoo_key
    assert 'stages.3.blocks.0.attn.qkv.bias' not in sd
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(1, 3, 112, 112))).all()


@pytest.mark.parametrize('name', ['biformer_tiny', 'biformer_stl', 'biformer_stl_nchw'])
def test_zoo_layout_passes_through_unchanged(name):
    model = timm.create_model(name, device='meta')
    sd = model.state_dict()
    out = checkpoint_filter_fn(sd, model)
    assert list(out) == list(sd) and all(out[k] is sd[k] for k in sd)


@pytest.mark.parametrize('wrap', [
    lambda sd: {'model': sd},  # the released files
    lambda sd: {'model': sd, 'model_ema': {k: v.clone() for k, v in sd.items()}, 'optimizer': {}, 'epoch': 299},
    lambda sd: {'model_ema': sd, 'optimizer': {}},
    lambda sd: {'state_dict': sd},
    lambda sd: {f'module.{k}': v for k, v in sd.items()},  # DistributedDataParallel
], ids=['model', 'training_checkpoint', 'model_ema', 'state_dict', 'module_prefix'])
@pytest.mark.parametrize('layout', ['official', 'zoo'])
def test_checkpoint_containers_unwrap(wrap, layout):
    model = timm.create_model('biformer_tiny', device='meta')
    sd = _official_tiny_state_dict() if layout == 'official' else model.state_dict()
    plain = checkpoint_filter_fn(sd, model)
    wrapped = checkpoint_filter_fn(wrap(sd), model)
    assert set(wrapped) == set(plain) == set(model.state_dict())
    assert all(wrapped[k] is plain[k] for k in plain)


def test_pretrained_load_path_converts_official_container():
    """`create_model(pretrained=True)` runs the filter: an official checkpoint loads, with a new head too."""
    official = _official_tiny_state_dict()
    overlay = dict(state_dict={'model': official})
    model = timm.create_model('biformer_tiny', pretrained=True, pretrained_cfg_overlay=overlay).eval()
    torch.testing.assert_close(model.head.fc.weight, official['head.weight'], rtol=0, atol=0)
    torch.testing.assert_close(model.stem.conv1.weight, official['downsample_layers.0.0.weight'], rtol=0, atol=0)
    model10 = timm.create_model('biformer_tiny', pretrained=True, pretrained_cfg_overlay=overlay, num_classes=10)
    assert model10.get_classifier().out_features == 10
    torch.testing.assert_close(model10.norm.weight, official['norm.weight'], rtol=0, atol=0)


# --------------------------------------------------------------------------------------------------------------
# All attention math runs in ops/


def _count_op_calls(monkeypatch) -> dict[str, list]:
    calls = {'bilevel_routing_attention': [], 'window_attention': []}
    bra_op, window_op = ops.bilevel_routing_attention, ops.window_attention

    def bilevel_routing_attention(q, k, v, n_win, topk, **kwargs):
        calls['bilevel_routing_attention'].append((tuple(q.shape), tuple(v.shape), n_win, topk, kwargs.get('scale')))
        return bra_op(q, k, v, n_win, topk, **kwargs)

    def window_attention(q, k, v, window, **kwargs):
        calls['window_attention'].append((tuple(q.shape), window, kwargs.get('scale')))
        return window_op(q, k, v, window, **kwargs)

    # the model file calls the ops by their global names (what FX's autowrap patches), so the spies go there
    monkeypatch.setattr(zoo_biformer, 'bilevel_routing_attention', bilevel_routing_attention)
    monkeypatch.setattr(zoo_biformer, 'window_attention', window_attention)
    return calls


@pytest.mark.parametrize('n_win', [7, 8])
def test_attention_goes_through_ops(monkeypatch, n_win):
    calls = _count_op_calls(monkeypatch)
    model = timm.create_model('biformer_tiny', n_win=n_win, num_classes=10).eval()
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 96))  # maps 16x24, 8x12, 4x6, 2x3: no multiple of the region grid
    bra, window = calls['bilevel_routing_attention'], calls['window_attention']
    assert len(bra) == 2 + 2 + 8 and len(window) == 2
    topk_of_dim = {64: 1, 128: 4, 256: 16}
    for (B, H, W, heads, dqk), v_shape, s, topk, scale in bra:
        # the model pads before the projection (official auto_pad), so the op only ever sees whole regions
        assert s == n_win and H % n_win == 0 and W % n_win == 0
        qk_dim = heads * dqk
        assert dqk == 32 and v_shape == (B, H, W, heads, 32)
        assert topk == topk_of_dim[qk_dim]
        assert scale == pytest.approx(qk_dim ** -0.5)  # the official full-qk_dim scale
    for (B, H, W, heads, head_dim), win, scale in window:
        assert (H, W) == (2, 3) and win == (H, W)  # one window covering the map: global attention
        assert heads == 8 and head_dim == 64 and scale == pytest.approx(64 ** -0.5)


def test_stl_nchw_attention_goes_through_ops(monkeypatch):
    """The refactored BRA: qk_dim = dim, scale dim ** -0.5, the projected map as is (the op masks); 8-head global
    stage whose LePE is of V."""
    calls = _count_op_calls(monkeypatch)
    model = timm.create_model('biformer_stl_nchw', num_classes=10).eval()
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 96))  # maps 16x24, 8x12, 4x6, 2x3
    bra, window = calls['bilevel_routing_attention'], calls['window_attention']
    assert len(bra) == 2 + 2 + 6 and len(window) == 2
    maps = {96: (16, 24), 192: (8, 12), 384: (4, 6)}
    topks = {96: 1, 192: 4, 384: 16}
    for (B, H, W, heads, dqk), v_shape, s, topk, scale in bra:
        dim = heads * dqk
        assert dqk == 32 and v_shape == (B, H, W, heads, 32) and s == 7
        assert (H, W) == maps[dim] and topk == topks[dim] and scale == pytest.approx(dim ** -0.5)
    assert all(q[1:4] == (2, 3, 8) and win == (2, 3) for q, win, _ in window)
    # LePE of V in the global stage: with the V rows of qkv zeroed (and nothing else), attention and LePE both see
    # V = 0, so only the LePE conv's bias reaches the output projection (LePE of the input would not vanish)
    attn = model.stages[3].blocks[0].attn
    assert attn.lepe_on_v and attn.qkv.bias is None
    x = torch.randn(1, 2, 3, 768)
    with torch.no_grad():
        attn.qkv.weight[1536:] = 0
        torch.testing.assert_close(attn(x), attn.proj(attn.lepe.bias.expand(1, 2, 3, 768)), rtol=0, atol=1e-6)


def test_model_file_has_no_routing_math():
    """Routing (region scores, top-k, gathers) lives in ops/ too (the generic suite checks the attention math):
    no `x.topk(...)` / `torch.gather(...)` calls (`self.topk`, the number of regions, is fine)."""
    source = Path(zoo_biformer.__file__).read_text()
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    for prev, tok, nxt in zip(tokens, tokens[1:], tokens[2:]):
        if tok.type == tokenize.NAME and tok.string in ('topk', 'gather', 'take_along_dim'):
            assert not (prev.string == '.' and nxt.string == '('), (
                f'routing math at line {tok.start[0]} of {zoo_biformer.__file__}')


def test_routing_attention_pads_before_qkv_like_official_auto_pad():
    """A map that is not a multiple of n_win gives what the zero-padded map gives, cropped: padded tokens are
    keys / values equal to the qkv bias (official ``auto_pad``), not masked positions."""
    torch.manual_seed(0)
    attn = zoo_biformer.BiLevelRoutingAttention(64, 2, n_win=7, topk=4).eval()
    with torch.no_grad():
        for p in attn.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # non-zero qkv bias: padded tokens matter
        x = torch.randn(2, 10, 12, 64)
        out = attn(x)
        padded = attn(F.pad(x, (0, 0, 0, 2, 0, 4)))[:, :10, :12]
    assert out.shape == x.shape
    torch.testing.assert_close(out, padded, rtol=0, atol=0)


# --------------------------------------------------------------------------------------------------------------
# Sizes: any multiple of the stride (the official classification models need multiples of 112)


@pytest.mark.parametrize('size,n_win', [
    ((224, 288), 7),  # a small analog of segmentation's 512x683: maps 56x72 .. 7x9
    ((224, 288), 8),  # segmentation's region grid
    ((96, 160), 7),
])
def test_stride_multiple_not_112_multiple(size, n_win):
    """Train (every gradient) and eval, and the four NCHW features at strides 4 / 8 / 16 / 32."""
    torch.manual_seed(0)
    model = timm.create_model('biformer_tiny', num_classes=10, n_win=n_win)
    x = torch.randn(2, 3, *size)
    model.train()
    model(x).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    expected = [
        (2, c, math.ceil(size[0] / r), math.ceil(size[1] / r)) for c, r in ((64, 4), (128, 8), (256, 16), (512, 32))]
    with torch.no_grad():
        out = model(x)
        feats = model.forward_intermediates(x, intermediates_only=True)
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    assert [tuple(f.shape) for f in feats] == expected


def test_features_only_with_n_win_override():
    torch.manual_seed(0)
    features = timm.create_model('biformer_tiny', features_only=True, n_win=8, out_indices=(0, 1, 2, 3)).eval()
    assert features.feature_info.reduction() == [4, 8, 16, 32]
    assert features.feature_info.channels() == [64, 128, 256, 512]
    with torch.no_grad():
        maps = features(torch.randn(1, 3, 128, 160))
    assert [tuple(m.shape) for m in maps] == [(1, 64, 32, 40), (1, 128, 16, 20), (1, 256, 8, 10), (1, 512, 4, 5)]


@pytest.mark.parametrize('size', [(512, 512), (512, 683)])
def test_segmentation_features_n_win_8(size):
    """Issue requirement: feature extraction at 512x512 and at non-square sizes such as 512x683 (maps not
    multiples of n_win; 683 not even a multiple of 32), in train and eval mode, with the official segmentation
    setting n_win=8. The official seg pipeline pads images to multiples of 32 (683 -> 704); the zoo accepts the
    size as is: the stride-2 convs round up, so the maps are ceil(size / stride) (22 columns at stride 32, as
    704 gives) and each BRA stage pads to whole regions itself."""
    torch.manual_seed(0)
    model = timm.create_model('biformer_tiny', features_only=True, n_win=8)
    x = torch.randn(1, 3, *size)
    expected = [
        (1, c, math.ceil(size[0] / r), math.ceil(size[1] / r)) for c, r in ((64, 4), (128, 8), (256, 16), (512, 32))]
    model.train()
    maps = model(x)
    assert [tuple(m.shape) for m in maps] == expected
    if size[1] % 32:  # one backward, at the awkward size only (runtime)
        sum(m.float().square().mean() for m in maps).backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad():
        maps = model(x)
    assert [tuple(m.shape) for m in maps] == expected and all(torch.isfinite(m).all() for m in maps)


@pytest.mark.parametrize('name', VARIANTS)
def test_segmentation_feature_shapes_all_variants(name):
    """The same sizes for every variant, shapes only (meta device), train and eval. The Swin-layout STL models
    patchify with stride-4 / stride-2 convs, which floor (683 -> 170, 85, 42, 21), as the official ones do."""
    with torch.device('meta'):
        model = timm.create_model(name, features_only=True, n_win=8)
        for size in ((512, 512), (512, 683)):
            x = torch.empty(1, 3, *size)
            rnd = math.floor if name.startswith('biformer_stl') else math.ceil
            expected = [(1, model.feature_info.channels()[i], rnd(size[0] / r), rnd(size[1] / r))
                        for i, r in enumerate(model.feature_info.reduction())]
            for train in (True, False):
                model.train(train)
                assert [tuple(m.shape) for m in model(x)] == expected, (size, train)


def test_drop_path_follows_the_official_schedule():
    """One rate per block, linear from 0 over all blocks (official ``torch.linspace(0, rate, sum(depth))``)."""
    model = timm.create_model('biformer_small', drop_path_rate=0.15, device='meta')
    rates = []
    for stage in model.stages:
        for block in stage.blocks:
            probs = {getattr(block.drop_path1, 'drop_prob', 0.), getattr(block.drop_path2, 'drop_prob', 0.)}
            assert len(probs) == 1
            rates.append(probs.pop())
    assert rates == pytest.approx(torch.linspace(0, 0.15, 30).tolist())


# pretrained=True for this family (tests/test_pretrained_loopback.py): the smallest model with an official key layout,
# its official weights in the container the official trainer saves, served over 127.0.0.1
LOOPBACK_MODEL = 'biformer_tiny'


def official_checkpoint(seed: int) -> tuple[Any, dict[str, Any]]:
    """The official file's object for `LOOPBACK_MODEL` (random weights) and the create_model kwargs it needs."""
    return CONTAINERS['model'](_official_tiny_state_dict(seed=seed)), {}
