"""RAVLT: official checkpoint conversion, the official block math, RoPE tables, and the sizes these models exist for.

The official key layout (`fixtures/ravlt_official_t_keys.json`: names and shapes only) was generated once from
https://github.com/qhfan/RALA (`a86314f`, `classfication/RALA.py`, which imports on torch 2.14 / timm 1.0.31 with
``fvcore`` stubbed and ``register_model`` made a no-op) with ``{k: list(v.shape) for k, v in
RAVLT_T().state_dict().items()}``.

Parity, measured once outside the suite (fp32, CPU, batch 2): each official model with every parameter perturbed
by N(0, 0.02) and random BatchNorm statistics, loaded into the zoo model through `checkpoint_filter_fn` (strict,
from a ``{'model': ..., 'args': ...}`` container); max |logit difference| and max |difference| of the four stage
maps (official: each stage's map before its downsample):

| model | inputs | logits max abs diff (max abs logit) | stage maps max abs diff (max abs value) |
|---|---|---|---|
| ravlt_t | 224x224, 256x320, 200x232, 96x160 | 8.3e-7, 7.1e-7, 6.9e-7, 8.1e-7 (~1.2) | 6.7e-6 (4.1) |
| ravlt_s | 224x224, 256x320, 200x232, 96x160 | 9.8e-7, 9.5e-7, 7.2e-7, 8.9e-7 (~2.0) | 1.0e-5 (7.9) |
| ravlt_b | 224x224, 256x320, 200x232, 96x160 | 3.9e-7, 5.4e-7, 3.6e-7, 4.5e-7 (~1.2) | 4.7e-6 (4.3) |
| ravlt_l | 224x224, 256x320, 200x232, 96x160 | 1.8e-7, 1.8e-7, 1.7e-7, 2.1e-7 (~0.75) | 1.4e-6 (2.7) |

(200x232 and 96x160 are not multiples of 32: both models halve with ceil in every stride-2 conv.) The zoo side ran
the reference backends on CPU (the RALA Triton kernels agree with the reference to fp32 rounding,
tests/ops/test_rala.py).
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
from zoo.models import ravlt as zoo_ravlt
from zoo.models.ravlt import checkpoint_filter_fn, rope_tables

FIXTURES = Path(__file__).parent / 'fixtures'
# each variant's official parameter count, sum(p.numel() for p in model.parameters()): tests/models/param_counts.py
# collects this literal for the generic suite's test_param_count
PARAM_COUNTS = {
    # official qhfan/RALA code (classfication/RALA.py, RAVLT_T/S/B/L)
    'ravlt_t': 14_897_768,
    'ravlt_s': 25_591_208,
    'ravlt_b': 48_241_288,
    'ravlt_l': 95_242_440,
}
VARIANTS = ('ravlt_t', 'ravlt_s', 'ravlt_b', 'ravlt_l')
# A narrow RAVLT for real runs at large inputs: every code path of the full models at a fraction of the cost.
NARROW = dict(depths=(1, 1, 1, 1), embed_dims=(16, 32, 32, 32), num_heads=(1, 2, 1, 2), head_hidden_size=64)


@pytest.fixture(scope='module', autouse=True)
def _one_intra_op_thread():
    """See tests/models/test_models.py: competing OpenMP threads spin; small inputs gain little from a second one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _official_state_dict(seed: int = 0) -> dict:
    """A random RAVLT_T state dict in the official layout (names and shapes from the fixture)."""
    keys = json.loads((FIXTURES / 'ravlt_official_t_keys.json').read_text())['keys']
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, shape in keys.items():
        if name.endswith('num_batches_tracked'):
            sd[name] = torch.tensor(100)
        elif name.endswith('running_var'):
            sd[name] = torch.rand(shape, generator=g) + 0.5
        else:
            sd[name] = torch.randn(shape, generator=g) * 0.05
    return sd


# --------------------------------------------------------------------------------------------------------------
# Variants: the official configurations (qhfan/RALA classfication/RALA.py, RAVLT_T/S/B/L)


@pytest.mark.parametrize('name,dims,depths,heads,ls', [
    ('ravlt_t', (64, 128, 256, 512), (2, 2, 6, 2), (1, 2, 4, 8), (1, 1, 1, 1)),
    ('ravlt_s', (64, 128, 320, 512), (3, 5, 9, 3), (1, 2, 5, 8), (1, 1, 1, 1)),
    ('ravlt_b', (96, 192, 384, 512), (4, 6, 12, 6), (1, 2, 6, 8), (1, 1, 1e-6, 1e-6)),
    ('ravlt_l', (96, 192, 448, 640), (4, 7, 19, 8), (1, 2, 7, 10), (1e-6,) * 4),
])
def test_variant_configs(name, dims, depths, heads, ls):
    with torch.device('meta'):
        model = timm.create_model(name, pretrained=False, drop_path_rate=0.1)
    assert model.head_hidden_size == 1024 and model.num_features == dims[-1]
    for i, stage in enumerate(model.stages):
        assert len(stage.blocks) == depths[i]
        for blk in stage.blocks:
            attn = blk.attn
            assert (attn.dim, attn.num_heads, attn.linear) == (dims[i], heads[i], i < 2)
            assert blk.mlp.fc1.out_features == int(3.5 * dims[i])
            assert blk.ls1.init_values == blk.ls2.init_values == ls[i] and blk.ls1.gamma.shape == (dims[i],)
    rates = [blk.drop_path1.drop_prob for s in model.stages for blk in s.blocks if hasattr(blk.drop_path1, 'drop_prob')]
    torch.testing.assert_close(torch.tensor(rates), torch.linspace(0, 0.1, sum(depths))[1:])


# --------------------------------------------------------------------------------------------------------------
# Checkpoint conversion


def test_filter_converts_the_official_layout():
    model = timm.create_model('ravlt_t').eval()
    official = _official_state_dict()
    converted = checkpoint_filter_fn({'model': official, 'args': object(), 'epoch': 299}, model)
    model.load_state_dict(converted, strict=True)  # every key mapped, every shape right
    # spot checks of the value mapping: 1x1 convs -> Linears, (1, C, 1, 1) layer scales -> (C,), downsample moved
    sd = model.state_dict()
    torch.testing.assert_close(sd['stages.0.blocks.1.attn.qkvo.weight'],
                               official['layers.0.blocks.1.attn.qkvo.weight'].flatten(1))
    torch.testing.assert_close(sd['stages.2.blocks.0.ls2.gamma'], official['layers.2.blocks.0.gamma_2'].flatten())
    torch.testing.assert_close(sd['stages.3.downsample.conv.weight'], official['layers.2.downsample.reduction.weight'])
    torch.testing.assert_close(sd['head.fc.weight'], official['head.weight'].flatten(1))
    torch.testing.assert_close(sd['head.norm.running_var'], official['norm.running_var'])
    torch.testing.assert_close(sd['stem.norm4.weight'], official['patch_embed.proj.10.weight'])


def test_filter_unwraps_and_drops_derived_buffers():
    model = timm.create_model('ravlt_t')
    official = _official_state_dict()
    ddp = {'module.' + k: v for k, v in official.items()}
    seg_extra = {f'extra_norms.{i}.norm.weight': torch.ones(8) for i in range(4)}
    for wrapped in ({'model_ema': ddp}, {'state_dict': official}, dict(official, **seg_extra)):
        converted = checkpoint_filter_fn(wrapped, model)
        assert not any('RoPE' in k or k.startswith('extra_norms') for k in converted)
        assert set(converted) == set(model.state_dict())


def test_filter_passes_the_zoo_layout_through():
    model = timm.create_model('ravlt_t')
    sd = model.state_dict()
    assert checkpoint_filter_fn(sd, model) is sd
    headless = {k: v for k, v in sd.items() if not k.startswith('head.')}
    assert checkpoint_filter_fn({'model': headless}, model) is headless


# --------------------------------------------------------------------------------------------------------------
# The official math (qhfan/RALA classfication/RALA.py), written independently in its NCHW / 1x1-conv form


def _official_rope(h, w, d):
    """sin / cos ((h w), d) as the official RoPE module builds them: row angles, then column angles."""
    angle = (1.0 / 10000 ** torch.linspace(0, 1, d // 4)).unsqueeze(-1).repeat(1, 2).flatten()
    ih, iw = torch.arange(h).float()[:, None] * angle, torch.arange(w).float()[:, None] * angle
    ang = torch.cat([ih.unsqueeze(1).repeat(1, w, 1), iw.unsqueeze(0).repeat(h, 1, 1)], -1).flatten(0, 1)
    return ang.sin(), ang.cos()


def _theta_shift(x, sin, cos):
    return x * cos + torch.stack([-x[..., 1::2], x[..., ::2]], -1).flatten(-2) * sin


def _official_attention(attn, x, linear):
    """The official GateLinearAttentionNoSilu / VanillaSelfAttention forward on an NCHW map, from attn's weights."""
    B, C, H, W = x.shape
    nh, d = attn.num_heads, attn.head_dim
    qkvo = F.conv2d(x, attn.qkvo.weight[:, :, None, None], attn.qkvo.bias)
    qkv, o = qkvo[:, :3 * C], qkvo[:, 3 * C:]
    lepe = attn.lepe(qkv[:, 2 * C:])
    q, k, v = qkv.reshape(B, 3, nh, d, H * W).permute(1, 0, 2, 4, 3)  # each (B, heads, L, d)
    sin, cos = _official_rope(H, W, d)
    if linear:
        q, k = F.elu(q) + 1, F.elu(k) + 1
        eff = torch.softmax(d**-0.5 * q.mean(-2, keepdim=True) @ k.transpose(-1, -2), -1).transpose(-1, -2)
        k = k * eff * (H * W)
        z = 1 / (q @ k.mean(-2, keepdim=True).transpose(-2, -1) + 1e-6)
        kv = (_theta_shift(k, sin, cos).transpose(-2, -1) * (H * W) ** -0.5) @ (v * (H * W) ** -0.5)
        res = _theta_shift(q, sin, cos) @ kv * z
    else:
        q, k = _theta_shift(q, sin, cos), _theta_shift(k, sin, cos)
        res = torch.softmax(d**-0.5 * q @ k.transpose(-1, -2), -1) @ v
    res = res.permute(0, 1, 3, 2).reshape(B, C, H, W)
    return F.conv2d((res + lepe) * o, attn.proj.weight[:, :, None, None], attn.proj.bias)


@pytest.mark.parametrize('linear', [True, False], ids=['rala', 'softmax'])
def test_attention_matches_official_math(linear):
    torch.manual_seed(0)
    attn = zoo_ravlt.RavltAttention(32, 2, linear=linear).double()
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_(0, 0.2)
    x = torch.randn(2, 32, 5, 7, dtype=torch.float64)
    sin, cos = rope_tables(5, 7, 16, x.device)
    got = attn(x.permute(0, 2, 3, 1), sin.double(), cos.double()).permute(0, 3, 1, 2)
    torch.testing.assert_close(got, _official_attention(attn, x, linear), atol=1e-5, rtol=1e-5)


def test_rope_tables_match_the_official_construction():
    for h, w, d in ((7, 7, 64), (3, 5, 96), (1, 4, 16)):
        for got, want in zip(rope_tables(h, w, d, torch.device('cpu')), _official_rope(h, w, d)):
            torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_triton_backend_matches_reference_in_the_model():
    """The whole model through the RALA kernels (interpreter here) vs the PyTorch reference, forward and grads."""
    torch.manual_seed(0)
    # the RALA stages only: the softmax stages' op has its own tests, and the interpreter is slow
    model = timm.create_model('ravlt_t', **dict(NARROW, depths=(1, 1, 0, 0)), num_classes=5).train()
    x = torch.randn(2, 3, 32, 48)
    results = []
    for backend in ('triton', 'reference'):
        model.zero_grad(set_to_none=True)
        with ops.use_backend(backend):
            torch.manual_seed(1)
            out = model(x)
        out.square().sum().backward()
        results.append((out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (out_t, grads_t), (out_r, grads_r) = results
    torch.testing.assert_close(out_t, out_r, atol=1e-5, rtol=1e-4)
    for n in grads_r:
        torch.testing.assert_close(grads_t[n], grads_r[n], atol=1e-5, rtol=1e-3, msg=n)


# --------------------------------------------------------------------------------------------------------------
# Sizes: segmentation crops and 1024^2 feature extraction


@pytest.mark.parametrize('size', [(512, 512), (512, 683)], ids=lambda s: f'{s[0]}x{s[1]}')
def test_features_at_segmentation_sizes(size):
    """ravlt_t's four maps (one block per stage, for time) at ADE20K's crop and at a side that is not a multiple of
    32 (each stride-2 conv halves with ceil)."""
    torch.manual_seed(0)
    model = timm.create_model('ravlt_t', features_only=True, depths=(1, 1, 1, 1)).eval()
    with torch.no_grad():
        feats = model(torch.randn(1, 3, *size))
    assert [f.shape[1] for f in feats] == [64, 128, 256, 512]
    for f, r in zip(feats, (4, 8, 16, 32)):
        assert tuple(f.shape[-2:]) == tuple(math.ceil(s / r) for s in size)
        assert torch.isfinite(f).all()


@pytest.mark.parametrize('name', ['ravlt_b'])  # head_dim 96 in stage 1; test_models.py covers 224 and odd sizes
def test_features_1024_meta(name):
    with torch.device('meta'):
        model = timm.create_model(name, features_only=True)
        feats = model(torch.empty(1, 3, 1024, 1024))
    assert [tuple(f.shape) for f in feats] == [
        (1, c, 1024 // r, 1024 // r) for c, r in zip(model.feature_info.channels(), (4, 8, 16, 32))]


def test_features_1024_real_narrow():
    """A real 1024 x 1024 run: stage 1 is 65536 tokens through linear attention (no N x N tensor), stages 3-4
    softmax attention over 4096 / 1024 tokens."""
    torch.manual_seed(0)
    model = timm.create_model('ravlt_t', features_only=True, **NARROW).eval()
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 1024, 1024))
    assert [tuple(f.shape[-2:]) for f in feats] == [(256, 256), (128, 128), (64, 64), (32, 32)]
    assert all(torch.isfinite(f).all() for f in feats)


def test_pooling_can_only_be_disabled_without_classifier():
    with pytest.raises(ValueError, match="num_classes=10"):
        timm.create_model('ravlt_t', num_classes=10, global_pool='', **NARROW)
    model = timm.create_model('ravlt_t', num_classes=0, global_pool='', **NARROW)
    with pytest.raises(ValueError, match="num_classes must be 0, got 3"):
        model.reset_classifier(3)
    model.reset_classifier(3, 'avg')
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3)


# pretrained=True for this family (tests/test_pretrained_loopback.py): the smallest model with an official key layout,
# its official weights in the container the official trainer saves, served over 127.0.0.1
LOOPBACK_MODEL = 'ravlt_t'


def official_checkpoint(seed: int) -> tuple[Any, dict[str, Any]]:
    """The official file's object for `LOOPBACK_MODEL` (random weights) and the create_model kwargs it needs."""
    return CONTAINERS['deit_namespace'](_official_state_dict(seed=seed)), {}
