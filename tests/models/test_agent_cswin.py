"""Agent-CSWin: official checkpoint conversion, stripe attention as window attention, all attention in `ops`, and
sizes the official classification models refuse.

The official key layout (`fixtures/agent_cswin_official_t_keys.json`: names and shapes only) was generated once from
https://github.com/LeapLabTHU/Agent-Attention (`207ce3e`, `agent_transformer/models/agent_cswin.py`, imported as a
file; torch 2.14, timm 1.0.31, einops) with ``Agent_CSWin_64_24181_tiny_224(img_size=224, agent_num=['9', '16',
'49', '49'], attn_type='AABB', la_split_size='56-28-14-7').state_dict()`` (cfgs/agent_cswin_t.yaml).

Parity, measured once outside the suite (fp32, CPU, batch 2): each official model with every parameter perturbed by
N(0, 0.02), saved as ``{'model': state_dict}``, converted by `checkpoint_filter_fn` and loaded strict into the zoo
model; max |logit difference| at the training resolution:

| model | official constructor | input | max abs diff | max abs logit |
|---|---|---|---|---|
| agent_cswin_t | Agent_CSWin_64_24181_tiny_224 | 224 | 5.5e-7 | 1.1 |
| agent_cswin_s | Agent_CSWin_64_36292_small_224 | 224 | 6.0e-7 | 1.3 |
| agent_cswin_b | Agent_CSWin_96_36292_base_224 | 224 | 1.1e-6 | 1.6 |
| agent_cswin_b_384 | Agent_CSWin_96_36292_base_384 (CSWIN_LA_SPLIT_SIZE 96-48-24-12) | 384 | 8.3e-7 | 2.0 |

Other sizes: the zoo's agent_cswin_t (224 biases, resized in the forward) run at 448x448 against the official model
built at 448 (``la_split_size='112-56-28-14'``) holding the same checkpoint with its agent biases linearly resized
the way the official `load_pretrained` resizes them: max |logit diff| 3.3e-7 (max |logit| 1.0) -- the forward-time
bilinear resize equals the official checkpoint-time one. There is no official Agent-CSWin segmentation code;
stripes at sizes that are not multiples of the stripe width are padded as the official CSWin segmentation backbone
pads them, which `test_stripe_branch_matches_official_segmentation_semantics` checks against a direct transcription
of that computation.
"""
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import ops
import timm
from tests.official_containers import CONTAINERS
import zoo  # noqa: F401  (registers the zoo models)
from tests.utils import assert_close
from zoo.layers import agent as agent_layer
from zoo.models import agent_cswin
from zoo.models.agent_cswin import checkpoint_filter_fn

FIXTURES = Path(__file__).parent / 'fixtures'
# each variant's official parameter count, sum(p.numel() for p in model.parameters()): tests/models/param_counts.py
# collects this literal for the generic suite's test_param_count
PARAM_COUNTS = {
    # official LeapLabTHU/Agent-Attention code (agent_transformer/models/agent_cswin.py) at each variant's resolution
    'agent_cswin_t': 20_458_672,
    'agent_cswin_s': 32_814_100,
    'agent_cswin_b': 73_249_696,
    'agent_cswin_b_384': 73_328_416,
}
VARIANTS = ('agent_cswin_t', 'agent_cswin_s', 'agent_cswin_b', 'agent_cswin_b_384')


@pytest.fixture(scope='module', autouse=True)
def _one_intra_op_thread():
    """See tests/models/test_models.py: competing OpenMP threads spin; small inputs gain little from a second one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _official_state_dict(seed: int = 0, device: str = 'cpu') -> dict[str, torch.Tensor]:
    """A random state dict in the official layout (names and shapes from the fixture)."""
    keys = json.loads((FIXTURES / 'agent_cswin_official_t_keys.json').read_text())['keys']
    if device == 'meta':
        return {name: torch.empty(shape, device='meta') for name, shape in keys.items()}
    g = torch.Generator().manual_seed(seed)
    return {name: torch.randn(shape, generator=g) * 0.02 + (1 if 'norm' in name and name.endswith('weight') else 0)
            for name, shape in keys.items()}


# --------------------------------------------------------------------------------------------------------------
# Registry and checkpoint conversion


def test_names_are_new_to_timm():
    for name in VARIANTS:
        assert timm.models.model_entrypoint(name).__module__ == 'zoo.models.agent_cswin'
    assert set(VARIANTS) == set(zoo.list_models('agent_cswin*'))



@pytest.mark.parametrize('name,gmacs', [
    # the official models (LeapLabTHU/Agent-Attention agent_transformer/models/agent_cswin.py) under torch's
    # FlopCounterMode at their resolution. The other
    # variants were measured equal too (S 6.744, B 14.870), left out for runtime.
    ('agent_cswin_t', 4.292),
    ('agent_cswin_b_384', 46.177),
])
def test_gmacs_match_official(name, gmacs):
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device('meta'):
        model = timm.create_model(name).eval()
        x = torch.empty(1, *model.pretrained_cfg['input_size'])
    with FlopCounterMode(display=False) as counter:
        model(x)
    assert counter.get_total_flops() / 2e9 == pytest.approx(gmacs, rel=1e-3)

def test_official_layout_loads_strict():
    official = _official_state_dict()
    model = timm.create_model('agent_cswin_t').eval()
    converted = checkpoint_filter_fn({'model': official, 'epoch': 299}, model)
    assert {k: tuple(v.shape) for k, v in converted.items()} == {
        k: tuple(v.shape) for k, v in model.state_dict().items()}
    model.load_state_dict(converted, strict=True)
    sd = model.state_dict()
    pairs = {
        'stem.conv.weight': 'stage1_conv_embed.0.weight',
        'stem.norm.bias': 'stage1_conv_embed.2.bias',
        'stages.0.blocks.1.attns.0.ah_bias': 'stage1.1.attns.0.ah_bias',
        'stages.0.blocks.1.attns.0.get_v.weight': 'stage1.1.attns.0.get_v.weight',
        'stages.1.downsample.conv.weight': 'merge1.conv.weight',
        'stages.3.downsample.norm.weight': 'merge3.norm.weight',
        'stages.2.blocks.17.qkv.weight': 'stage3.17.qkv.weight',
        'stages.2.blocks.4.attns.1.get_v.bias': 'stage3.4.attns.1.get_v.bias',
        'stages.3.blocks.0.attns.0.get_v.weight': 'stage4.0.attns.0.get_v.weight',
        'stages.3.blocks.0.proj.weight': 'stage4.0.proj.weight',
        'stages.1.blocks.3.mlp.fc1.weight': 'stage2.3.mlp.fc1.weight',
        'norm.weight': 'norm.weight',
        'head.fc.weight': 'head.weight',
    }
    for zoo_key, official_key in pairs.items():
        assert torch.equal(sd[zoo_key], official[official_key]), zoo_key
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(1, 3, 64, 96))).all()


def test_zoo_layout_passes_through_unchanged():
    model = timm.create_model('agent_cswin_t', device='meta')
    sd = model.state_dict()
    out = checkpoint_filter_fn(sd, model)
    assert list(out) == list(sd) and all(out[k] is sd[k] for k in sd)


def test_checkpoint_containers_unwrap():
    model = timm.create_model('agent_cswin_t', device='meta')
    official = _official_state_dict(device='meta')
    plain = checkpoint_filter_fn(official, model)
    assert set(plain) == set(model.state_dict())
    wrappers = {
        'model': lambda sd: {'model': sd, 'optimizer': {}, 'epoch': 299},  # the official trainer's files
        'state_dict': lambda sd: {'state_dict': sd},
        'state_dict_ema': lambda sd: {'state_dict_ema': sd},
        'module_prefix': lambda sd: {f'module.{k}': v for k, v in sd.items()},  # DistributedDataParallel
    }
    for kind, wrap in wrappers.items():
        wrapped = checkpoint_filter_fn(wrap(official), model)
        assert set(wrapped) == set(plain) and all(wrapped[k] is plain[k] for k in plain), kind


def test_grids_differ_agent_biases_resized_like_official():
    official = _official_state_dict()
    model = timm.create_model('agent_cswin_t', img_size=256)
    converted = checkpoint_filter_fn(official, model)
    model.load_state_dict(converted, strict=True)
    ha = official['stage2.0.attns.0.ha_bias']  # (1, 4, 28, 1, 16)
    expected = F.interpolate(ha[0, :, :, 0].transpose(1, 2), size=32, mode='linear').transpose(1, 2)[None, :, :, None]
    torch.testing.assert_close(converted['stages.1.blocks.0.attns.0.ha_bias'], expected, rtol=0, atol=0)


# --------------------------------------------------------------------------------------------------------------
# Stripe attention = window attention with (H, sw) / (sw, W) windows


def _official_stripes(q, k, v, conv, heads, window):
    """The official CSWin segmentation `LePEAttention.forward`, transcribed: (B, H, W, C) q, k, v."""
    B, H, W, C = q.shape
    wh, ww = window
    ph, pw = (-H) % wh, (-W) % ww
    top, left = ph // 2, pw // 2
    q, k, v = (F.pad(t.permute(0, 3, 1, 2), (left, pw - left, top, ph - top)) for t in (q, k, v))
    Hp, Wp = H + ph, W + pw

    def windows(t):  # (B, C, Hp, Wp) -> (B * nW, C, wh, ww)
        return t.reshape(B, C, Hp // wh, wh, Wp // ww, ww).permute(0, 2, 4, 1, 3, 5).reshape(-1, C, wh, ww)

    def heads_of(t):  # (B * nW, C, wh, ww) -> (B * nW, heads, wh * ww, d)
        return t.reshape(t.shape[0], heads, C // heads, wh * ww).transpose(2, 3)

    qw, kw, vw = windows(q), windows(k), windows(v)
    lepe = heads_of(conv(vw))
    attn = ((heads_of(qw) * (C // heads) ** -0.5) @ heads_of(kw).transpose(-2, -1)).softmax(-1)
    out = (attn @ heads_of(vw) + lepe).transpose(2, 3).reshape(B, Hp // wh, Wp // ww, C, wh, ww)
    out = out.permute(0, 1, 4, 2, 5, 3).reshape(B, Hp, Wp, C)
    return out[:, top:top + H, left:left + W]


@pytest.mark.parametrize('idx', [0, 1, -1])
@pytest.mark.parametrize('size', [(14, 14), (10, 13), (3, 5)])
def test_stripe_branch_matches_official_segmentation_semantics(idx, size):
    torch.manual_seed(0)
    branch = agent_cswin.StripeBranch(32, 4, split_size=7, idx=idx).eval()
    q, k, v = (torch.randn(2, *size, 32) for _ in range(3))
    H, W = size
    window = {0: (H, 7), 1: (7, W), -1: (H, W)}[idx]
    with torch.no_grad():
        torch.testing.assert_close(branch(q, k, v), _official_stripes(q, k, v, branch.get_v, 4, window))


def test_attention_goes_through_ops(monkeypatch):
    calls = {'agent_attention': [], 'window_attention': []}
    originals = {n: getattr(ops, n) for n in calls}

    def spy(name):
        def fn(*args, **kwargs):
            calls[name].append((args, kwargs))
            return originals[name](*args, **kwargs)
        return fn

    owners = {'agent_attention': agent_layer, 'window_attention': agent_cswin}
    for name in calls:
        monkeypatch.setattr(owners[name], name, spy(name))
    model = timm.create_model('agent_cswin_t', embed_dim=16, depths=(1, 1, 2, 1), num_classes=10).eval()
    with torch.no_grad():
        model(torch.randn(2, 3, 96, 160))  # maps 24x40, 12x20, 6x10, 3x5
    agent = [(a[0].shape, a[3].shape) for a, _ in calls['agent_attention']]
    assert agent == [((2, 960, 2, 8), (2, 9, 2, 8)), ((2, 240, 4, 8), (2, 16, 4, 8))]
    window = [(tuple(a[0].shape[1:4]), a[3], kw.get('scale'), kw.get('mask')) for a, kw in calls['window_attention']]
    # stage 3, two branches per block of 4 heads each: 6x10 padded to 7 columns / 7 rows; stage 4: the whole map
    assert window == [((6, 14, 4), (6, 7), None, None), ((7, 10, 4), (7, 10), None, None)] * 2 + [
        ((3, 5, 16), (3, 5), None, None)]


def test_triton_backend_matches_reference(device):
    """The model through the Triton kernels (compiled on GPU, the interpreter on CPU) gives the reference's output
    and gradients: agent blocks in stages 1-2, stripes padded in stage 3 (4x6 map, 7-wide stripes), the full-map
    stage 4."""
    torch.manual_seed(0)
    model = timm.create_model('agent_cswin_t', embed_dim=16, depths=(1, 1, 2, 1), num_classes=5).to(device).train()
    x = torch.randn(1, 3, 64, 96, device=device)
    results = {}
    for backend in ('reference', 'triton'):
        model.zero_grad(set_to_none=True)
        with ops.use_backend(backend):
            out = model(x)
            out.square().sum().backward()
        results[backend] = out.detach(), {n: p.grad for n, p in model.named_parameters()}
    (out_ref, grads_ref), (out_tri, grads_tri) = results['reference'], results['triton']
    assert_close(out_tri, out_ref, atol=1e-4, rtol=1e-4, name='logits')
    for n, g in grads_ref.items():
        assert_close(grads_tri[n], g, atol=1e-3, rtol=1e-3, name=n)


# --------------------------------------------------------------------------------------------------------------
# Sizes


@pytest.mark.parametrize('size', [(512, 512), (512, 683)])
def test_segmentation_features(size):
    """Feature extraction at 512x512 and 512x683 with the real agent_cswin_t, eval: maps ceil(size / stride)."""
    torch.manual_seed(0)
    model = timm.create_model('agent_cswin_t', features_only=True).eval()
    x = torch.randn(1, 3, *size)
    expected = [(1, c, math.ceil(size[0] / r), math.ceil(size[1] / r))
                for c, r in ((64, 4), (128, 8), (256, 16), (512, 32))]
    with torch.no_grad():
        maps = model(x)
    assert [tuple(m.shape) for m in maps] == expected
    assert all(torch.isfinite(m).all() for m in maps)


def test_awkward_size_train_every_gradient():
    torch.manual_seed(0)
    model = timm.create_model('agent_cswin_t', embed_dim=16, depths=(1, 1, 2, 1), num_classes=10,
                              agent_grids=((4, 4), (4, 4), (7, 7), (7, 7))).train()
    out = model(torch.randn(2, 3, 160, 200))  # maps 40x50, 20x25, 10x13, 5x7
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize('name', ['agent_cswin_b_384'])
def test_segmentation_feature_shapes_other_variants(name):
    """512x512 and 512x683 with the 12-wide stripes of the 384 model (agent_cswin_t runs for real above); shapes
    only, on the meta device."""
    with torch.device('meta'):
        model = timm.create_model(name, features_only=True)
        for size in ((512, 512), (512, 683)):
            maps = model(torch.empty(1, 3, *size))
            assert [tuple(m.shape) for m in maps] == [
                (1, c, math.ceil(size[0] / r), math.ceil(size[1] / r))
                for c, r in zip(model.feature_info.channels(), model.feature_info.reduction())]


def test_bad_configuration_errors():
    with pytest.raises(ValueError, match='perfect square'):
        timm.create_model('agent_cswin_t', agent_num=(9, 15, 49, 49), device='meta')
    with pytest.raises(ValueError, match='attn_type'):
        timm.create_model('agent_cswin_t', attn_type='AAXB', device='meta')
    with pytest.raises(ValueError, match='split_size'):
        timm.create_model('agent_cswin_t', split_size=(1, 2, 7), device='meta')


# pretrained=True for this family (tests/test_pretrained_loopback.py): the smallest model with an official key layout,
# its official weights in the container the official trainer saves, served over 127.0.0.1
LOOPBACK_MODEL = 'agent_cswin_t'


def official_checkpoint(seed: int) -> tuple[Any, dict[str, Any]]:
    """The official file's object for `LOOPBACK_MODEL` (random weights) and the create_model kwargs it needs."""
    return CONTAINERS['swin_yacs'](_official_state_dict(seed=seed)), {}
