"""DaViT: the same numbers as timm's port and the official code, checkpoint conversion, and all attention in `ops`.

The official key layout (`fixtures/davit_official_tiny_keys.json`: names and shapes only) was generated once from
https://github.com/dingmyu/davit (`fc79470`, its vendored timm imports on torch 2.14) with
``{k: list(v.shape) for k, v in DaViT_tiny().state_dict().items()}``. Outside the suite, zoo_davit_tiny loaded from
a perturbed official model through `checkpoint_filter_fn` matched the official forward to 1.2e-6 (fp32, CPU) at
224x224, 250x300 and 96x128.
"""
import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn as nn

import ops
import timm
from tests.official_containers import CONTAINERS
import zoo  # noqa: F401  (registers the zoo models)
import zoo.models.davit as davit_module
from timm.models.davit import checkpoint_filter_fn as timm_checkpoint_filter_fn
from zoo.models.davit import checkpoint_filter_fn

FIXTURES = Path(__file__).parent / 'fixtures'
# each variant's official parameter count, sum(p.numel() for p in model.parameters()): tests/models/param_counts.py
# collects this literal for the generic suite's test_param_count
PARAM_COUNTS = {
    # official dingmyu/davit code (tiny/small/base/large_window12_384) and timm 1.0.31 (all)
    'zoo_davit_tiny': 28_360_168,
    'zoo_davit_small': 49_745_896,
    'zoo_davit_base': 87_954_408,
    'zoo_davit_large': 196_811_752,
    'zoo_davit_huge': 348_922_856,
    'zoo_davit_giant': 1_406_470_120,
    'zoo_davit_base_fl': 90_370_048,
    'zoo_davit_huge_fl': 360_636_416,
}
TOL = 1e-5  # fp32 max |difference| of the logits

# the embedded digits demo (configs/cls/digits_davit.yaml): kwargs as YAML gives them, lists included
DIGITS_KWARGS = dict(
    depths=[1, 1, 1, 1], embed_dims=[32, 64, 128, 256], num_heads=[1, 2, 4, 8], window_size=4, img_size=32)


@pytest.fixture(scope='module', autouse=True)
def _one_intra_op_thread():
    """See tests/models/test_models.py: competing OpenMP threads spin; small inputs gain little from a second one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _perturb_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Move every parameter off its init (zero biases would hide how padded window positions act as keys)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    return model.eval()


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def _official_tiny_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict in the official repository's layout (names and shapes from the fixture)."""
    keys = json.loads((FIXTURES / 'davit_official_tiny_keys.json').read_text())['keys']
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, shape in keys.items():
        t = torch.randn(shape, generator=g) * 0.05
        if re.search(r'norm[s\d]*\.weight$', name):
            t += 1
        sd[name] = t
    return sd


# --------------------------------------------------------------------------------------------------------------
# Parity with timm's port (timm's state dict loads unchanged)


@pytest.mark.parametrize('name,size', [
    ('davit_tiny', (224, 224)),
    ('davit_tiny', (250, 300)),  # not a multiple of 32: stem / downsample / window padding
    ('davit_tiny', (96, 128)),
    ('davit_small', (160, 224)),
    ('davit_base_fl', (250, 300)),  # v2 channel attention, 3x3 downsample, window 12, named sub-blocks
])
def test_timm_parity(name, size, record_property):
    torch.manual_seed(0)
    ref = _perturb_(timm.create_model(name))
    model = timm.create_model(f'zoo_{name}').eval()
    model.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        diff = _max_diff(model(x), ref(x))
        ref_feats = ref.forward_features(x)
        feat_diff = _max_diff(model.forward_features(x), ref_feats) / ref_feats.abs().max().item()
    record_property('max_abs_logit_diff', diff)
    print(f'zoo_{name} vs timm {name} at {size}: max |logit diff| {diff:.2e}, '
          f'max |feature diff| / max |feature| {feat_diff:.2e}')
    # the unnormalised last-stage maps reach ~20 here: fp32 rounding is relative to their scale
    assert diff <= TOL and feat_diff <= TOL


def test_timm_parity_digits_config():
    """The digits demo's small DaViT at 32x32: window 4 is larger than the 2x2 and 1x1 maps of the last stages."""
    kwargs = {k: v for k, v in DIGITS_KWARGS.items() if k != 'img_size'}  # timm's DaVit takes no img_size
    torch.manual_seed(0)
    ref = _perturb_(timm.create_model('davit_tiny', num_classes=10, **kwargs))
    model = timm.create_model('zoo_davit_tiny', num_classes=10, **DIGITS_KWARGS).eval()
    model.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert _max_diff(model(x), ref(x)) <= TOL


def test_timm_names_are_untouched():
    for name in ('davit_tiny', 'davit_small', 'davit_base', 'davit_large', 'davit_huge', 'davit_giant',
                 'davit_base_fl', 'davit_huge_fl'):
        assert timm.models.model_entrypoint(name).__module__ == 'timm.models.davit'
        assert timm.models.model_entrypoint(f'zoo_{name}').__module__ == 'zoo.models.davit'


# --------------------------------------------------------------------------------------------------------------
# Checkpoint conversion


def test_official_layout_loads_strict_and_matches_timm():
    official = _official_tiny_state_dict()
    model = timm.create_model('zoo_davit_tiny').eval()
    converted = checkpoint_filter_fn(official, model)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in converted.items()} == expected
    model.load_state_dict(converted, strict=True)

    ref = timm.create_model('davit_tiny').eval()
    ref.load_state_dict(timm_checkpoint_filter_fn(official, ref), strict=True)
    for size in ((224, 224), (96, 128)):
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            assert _max_diff(model(x), ref(x)) <= TOL


def test_zoo_layout_passes_through_unchanged():
    model = timm.create_model('zoo_davit_tiny', device='meta')
    sd = model.state_dict()
    out = checkpoint_filter_fn(sd, model)
    assert list(out) == list(sd) and all(out[k] is sd[k] for k in sd)


@pytest.mark.parametrize('wrap', [
    lambda sd: {'state_dict': sd, 'epoch': 300, 'arch': 'DaViT_tiny'},
    lambda sd: {'model': sd, 'optimizer': {}},
    lambda sd: {'state_dict_ema': sd},
    lambda sd: {f'module.{k}': v for k, v in sd.items()},  # DistributedDataParallel
], ids=['state_dict', 'model', 'state_dict_ema', 'module_prefix'])
@pytest.mark.parametrize('layout', ['official', 'zoo'])
def test_checkpoint_containers_unwrap(wrap, layout):
    model = timm.create_model('zoo_davit_tiny', device='meta')
    sd = _official_tiny_state_dict() if layout == 'official' else model.state_dict()
    plain = checkpoint_filter_fn(sd, model)
    wrapped = checkpoint_filter_fn(wrap(sd), model)
    assert set(wrapped) == set(plain) == set(model.state_dict())
    assert all(wrapped[k] is plain[k] for k in plain)


def test_pretrained_load_path_converts_official_container():
    """`create_model(pretrained=True)` runs the filter: an official training checkpoint loads, with a new head too."""
    official = _official_tiny_state_dict()
    overlay = dict(state_dict={'state_dict': official})
    model = timm.create_model('zoo_davit_tiny', pretrained=True, pretrained_cfg_overlay=overlay).eval()
    torch.testing.assert_close(model.head.fc.weight, official['head.weight'], rtol=0, atol=0)
    torch.testing.assert_close(model.stem.conv.weight, official['patch_embeds.0.proj.weight'], rtol=0, atol=0)
    model10 = timm.create_model('zoo_davit_tiny', pretrained=True, pretrained_cfg_overlay=overlay, num_classes=10)
    assert model10.get_classifier().out_features == 10
    torch.testing.assert_close(model10.head.norm.weight, official['norms.weight'], rtol=0, atol=0)


# zoo / timm `_fl` names -> Florence-2 vision-tower names (the inverse of timm's Florence-2 conversion)
_TO_FLORENCE2 = (
    (r'^stem\.conv\.', 'convs.0.proj.'),
    (r'^stem\.norm\.', 'convs.0.norm.'),
    (r'^stages\.(\d+)\.downsample\.conv\.', r'convs.\1.proj.'),
    (r'^stages\.(\d+)\.downsample\.norm\.', r'convs.\1.norm.'),
    (r'^stages\.(\d+)\.blocks\.', r'blocks.\1.'),
    (r'\.cpe(\d)\.proj\.', r'.conv\1.fn.dw.'),
    (r'spatial_block\.norm1\.', 'spatial_block.window_attn.norm.'),
    (r'spatial_block\.attn\.', 'spatial_block.window_attn.fn.'),
    (r'channel_block\.norm1\.', 'channel_block.channel_attn.norm.'),
    (r'channel_block\.attn\.', 'channel_block.channel_attn.fn.'),
    (r'\.norm2\.', '.ffn.norm.'),
    (r'\.mlp\.', '.ffn.fn.net.'),
)


def test_florence2_layout_converts_like_timm():
    model = timm.create_model('zoo_davit_base_fl', device='meta')
    tower = {}
    for k, v in model.state_dict().items():
        if k.startswith('head.'):
            continue  # Florence-2's tower has no head
        for pattern, repl in _TO_FLORENCE2:
            k = re.sub(pattern, repl, k)
        tower['vision_tower.' + k] = v
    florence2 = {**tower, 'language_model.lm_head.weight': torch.empty(3, 4, device='meta')}

    converted = checkpoint_filter_fn(florence2, model)
    assert converted.keys() == timm_checkpoint_filter_fn(florence2, model).keys()
    missing, unexpected = model.load_state_dict(converted, strict=False, assign=True)
    assert not unexpected and all(k.startswith('head.norm.') for k in missing) and missing


# --------------------------------------------------------------------------------------------------------------
# All attention math runs in ops/


def _count_op_calls(monkeypatch) -> dict[str, list]:
    calls = {'window_attention': [], 'channel_attention': []}
    window_op, channel_op = ops.window_attention, ops.channel_attention

    def window_attention(q, k, v, window, **kwargs):
        calls['window_attention'].append((tuple(q.shape), window))
        return window_op(q, k, v, window, **kwargs)

    def channel_attention(q, k, v, **kwargs):
        calls['channel_attention'].append((tuple(q.shape), kwargs.get('scale')))
        return channel_op(q, k, v, **kwargs)

    # the model file calls the ops by their global names (what FX's autowrap patches), so the spies go there
    monkeypatch.setattr(davit_module, 'window_attention', window_attention)
    monkeypatch.setattr(davit_module, 'channel_attention', channel_attention)
    return calls


@pytest.mark.parametrize('v2', [False, True], ids=['davit', 'florence2'])
def test_attention_goes_through_ops(monkeypatch, v2):
    calls = _count_op_calls(monkeypatch)
    kwargs = dict(DIGITS_KWARGS, channel_attn_v2=v2, down_kernel_size=3 if v2 else 2)
    model = timm.create_model('zoo_davit_tiny', num_classes=10, **kwargs).eval()
    with torch.no_grad():
        model(torch.randn(2, 3, 40, 56))  # maps 10x14, 5x7, 3x4, 2x2: none a multiple of the window 4
    n_blocks = sum(DIGITS_KWARGS['depths'])
    assert len(calls['window_attention']) == len(calls['channel_attention']) == n_blocks
    for (B, H, W, heads, head_dim), window in calls['window_attention']:
        # the model pads before the projection (official semantics), so the op only ever sees whole windows
        assert window == (4, 4) and H % 4 == 0 and W % 4 == 0
    for (B, N, groups, head_dim), scale in calls['channel_attention']:
        assert scale == pytest.approx(N ** -0.5 if v2 else head_dim ** -0.5)


# --------------------------------------------------------------------------------------------------------------
# Sizes, the digits demo, training details


@pytest.mark.parametrize('size', [(160, 224), (96, 128)])
def test_stride_multiple_not_window_multiple(size):
    """Maps 40x56 / 24x32, ... are not window multiples: train (every gradient) and eval, 4 NCHW features."""
    model = timm.create_model('zoo_davit_tiny', num_classes=10)
    x = torch.randn(2, 3, *size)
    model.train()
    model(x).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad():
        out = model(x)
        feats = model.forward_intermediates(x, intermediates_only=True)
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    assert [tuple(f.shape) for f in feats] == [
        (2, c, size[0] // r, size[1] // r) for c, r in ((96, 4), (192, 8), (384, 16), (768, 32))]


def test_digits_demo_config():
    """The engine's embedded demo builds exactly this through `model.kwargs` (YAML lists, img_size)."""
    model = timm.create_model('zoo_davit_tiny', num_classes=10, **DIGITS_KWARGS)
    assert sum(p.numel() for p in model.parameters()) == 2_301_450
    x = torch.randn(8, 3, 32, 32)
    out = model(x)
    assert out.shape == (8, 10)
    out.logsumexp(-1).mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    features = timm.create_model('zoo_davit_tiny', features_only=True, **DIGITS_KWARGS).eval()
    with torch.no_grad():
        maps = features(x)
    assert [tuple(m.shape) for m in maps] == [(8, 32, 8, 8), (8, 64, 4, 4), (8, 128, 2, 2), (8, 256, 1, 1)]
    assert features.feature_info.reduction() == [4, 8, 16, 32]


def test_drop_path_follows_the_official_schedule():
    """One rate per spatial / channel sub-block, linear from 0 over all of them (timm shares one per dual block)."""
    depths = (1, 1, 3, 1)
    model = timm.create_model('zoo_davit_tiny', drop_path_rate=0.2, device='meta')
    rates = []
    for stage in model.stages:
        for dual in stage.blocks:
            for block in dual:
                probs = {getattr(block.drop_path1, 'drop_prob', 0.), getattr(block.drop_path2, 'drop_prob', 0.)}
                assert len(probs) == 1
                rates.append(probs.pop())
    expected = torch.linspace(0, 0.2, 2 * sum(depths)).tolist()
    assert rates == pytest.approx(expected)


@pytest.mark.parametrize('name,size,gmacs', [
    # the official models (dingmyu/davit timm/models/davit.py) under torch's FlopCounterMode
    ('zoo_davit_tiny', 224, 4.522),
    ('zoo_davit_small', 224, 8.773),
    ('zoo_davit_base', 224, 15.474),
    ('zoo_davit_large', 384, 102.805),
])
def test_gmacs_match_official(name, size, gmacs):
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device('meta'):
        model = timm.create_model(name).eval()
        x = torch.empty(1, 3, size, size)
    with FlopCounterMode(display=False) as counter:
        model(x)
    assert counter.get_total_flops() / 2e9 == pytest.approx(gmacs, rel=1e-3)


def test_triton_backend_matches_reference_through_the_model(monkeypatch):
    """The whole demo-sized model on the Triton kernels (interpreter on CPU): logits and every gradient."""
    model = _perturb_(timm.create_model('zoo_davit_tiny', num_classes=10, **DIGITS_KWARGS)).train()
    x = torch.randn(2, 3, 40, 32)  # stage 1 is 10x8: partial windows on the padded map
    results = {}
    for backend in ('reference', 'triton'):
        monkeypatch.setenv(ops.ENV_BACKEND, backend)
        model.zero_grad()
        out = model(x)
        out.square().sum().backward()
        results[backend] = out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}
    (ref_out, ref_grads), (tri_out, tri_grads) = results['reference'], results['triton']
    assert _max_diff(ref_out, tri_out) <= 1e-4 * ref_out.abs().max().item()
    for name, g in ref_grads.items():
        assert torch.allclose(tri_grads[name], g, atol=1e-4 * g.abs().max().item() + 1e-6, rtol=1e-3), name


# pretrained=True for this family (tests/test_pretrained_loopback.py): the smallest model with an official key layout,
# its official weights in the container the official trainer saves, served over 127.0.0.1
LOOPBACK_MODEL = 'zoo_davit_tiny'


def official_checkpoint(seed: int) -> tuple[Any, dict[str, Any]]:
    """The official file's object for `LOOPBACK_MODEL` (random weights) and the create_model kwargs it needs."""
    return CONTAINERS['timm_namespace'](_official_tiny_state_dict(seed=seed)), {}
