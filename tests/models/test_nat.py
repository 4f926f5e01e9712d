"""NAT / DiNAT / DiNAT_s / isotropic: official checkpoint conversion, NATTEN-0.14 small-map padding, segmentation sizes.

The official key layouts (`fixtures/nat_official_{nat_small,dinat_s_tiny,vitrpb_small}_keys.json`: names and shapes
only) were generated once from https://github.com/SHI-Labs/Neighborhood-Attention-Transformer (`d334f5b`,
classification/{nat,dinats,isotropic}.py) with ``{k: list(v.shape) for k, v in model.state_dict().items()}``; natten
itself is not installable here, so a naive stand-in for natten 0.14's ``NeighborhoodAttention2D`` (same parameters,
NATTEN's window-start / bias-start formulas, 0.14's zero padding of small maps) was imported in its place.

Parity, measured once outside the suite (fp32, CPU, batch 2): each official model (with the stand-in) with every
parameter perturbed by N(0, 0.02), loaded into the zoo model through `checkpoint_filter_fn` (strict), max |logit
difference| (max |logit| ~0.7-1.7):

| model | 224x224 | 64x64 (padded maps) | 97x131 | 256x192 |
|---|---|---|---|---|
| nat_mini | 4.6e-7 | 1.1e-6 | 5.4e-7 | 4.2e-7 |
| dinat_mini | 5.7e-7 | 1.1e-6 | 5.1e-7 | 4.5e-7 |
| nat_small | 2.5e-7 | 9.5e-7 | 3.6e-7 | 3.0e-7 |
| dinat_small | 9.1e-7 | 1.7e-6 | 1.1e-6 | 9.5e-7 |
| dinat_s_tiny | 6.1e-7 | 1.1e-6 | 7.2e-7 | - |
| nat_isotropic_small | 1.8e-7 | official: 224 only | | |
| dinat_isotropic_small | 1.8e-7 | | | |
| vitrpb_small | 0 | | | |
| dinat_large_384 (dilations 13 / 6 / 3, batch 1) | 384x384: 1.4e-6 (max logit 4.1) | | | |
| dinat_large_384_11x11 (batch 1) | 384x384: 1.7e-6 (max logit 3.6) | | | |
| dinat_s_large_384 (batch 1) | 384x384: 1.1e-6 (max logit 3.2) | | | |
"""
import json
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
from tests.ops.test_neighborhood_attention import naive_fp64
from zoo.models import nat as zoo_nat
from zoo.models.nat import checkpoint_filter_fn

FIXTURES = Path(__file__).parent / 'fixtures'
# each variant's official parameter count, sum(p.numel() for p in model.parameters()): tests/models/param_counts.py
# collects this literal for the generic suite's test_param_count
PARAM_COUNTS = {
    # official SHI-Labs/Neighborhood-Attention-Transformer code (classification/*.py) with a naive natten-0.14
    # stand-in; dinat_large_21k_11x11 / dinat_s_large_21k counted the same way with num_classes=21841
    'nat_mini': 19_984_174,
    'nat_tiny': 27_901_582,
    'nat_small': 50_743_297,
    'nat_base': 89_769_652,
    'dinat_mini': 19_984_174,
    'dinat_tiny': 27_901_582,
    'dinat_small': 50_719_681,
    'dinat_base': 89_769_652,
    'dinat_large': 200_943_514,
    'dinat_large_384': 200_943_514,
    'dinat_large_384_11x11': 201_144_250,
    'dinat_large_21k': 232_976_131,
    'dinat_large_21k_11x11': 233_176_867,
    'dinat_s_tiny': 28_288_354,
    'dinat_s_small': 49_606_258,
    'dinat_s_base': 87_768_224,
    'dinat_s_large': 196_532_476,
    'dinat_s_large_384': 196_532_476,
    'dinat_s_large_21k': 228_565_093,
    'nat_isotropic_small': 21_999_736,
    'dinat_isotropic_small': 21_999_736,
    'vitrpb_small': 22_080_376,
    'nat_isotropic_base': 86_465_800,
    'dinat_isotropic_base': 86_465_800,
    'vitrpb_base': 86_627_080,
}
HIERARCHICAL = (
    'nat_mini', 'nat_tiny', 'nat_small', 'nat_base', 'dinat_mini', 'dinat_tiny', 'dinat_small', 'dinat_base',
    'dinat_large', 'dinat_large_384', 'dinat_large_384_11x11', 'dinat_large_21k', 'dinat_large_21k_11x11',
    'dinat_s_tiny', 'dinat_s_small', 'dinat_s_base', 'dinat_s_large', 'dinat_s_large_384', 'dinat_s_large_21k',
)
ISOTROPIC = (
    'nat_isotropic_small', 'dinat_isotropic_small', 'vitrpb_small', 'nat_isotropic_base', 'dinat_isotropic_base',
    'vitrpb_base',
)


@pytest.fixture(scope='module', autouse=True)
def _one_intra_op_thread():
    """See tests/models/test_models.py: competing OpenMP threads spin; small inputs gain little from a second one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _official_state_dict(variant: str, seed: int = 0) -> dict:
    """A random state dict in the official repository's layout (names and shapes from the fixture)."""
    keys = json.loads((FIXTURES / f'nat_official_{variant}_keys.json').read_text())['keys']
    g = torch.Generator().manual_seed(seed)
    return {name: torch.randn(shape, generator=g) * 0.05 if not name.endswith('index')
            else torch.zeros(shape, dtype=torch.long) for name, shape in keys.items()}


def _meta(name: str, **kwargs):
    with torch.device('meta'):
        return timm.create_model(name, **kwargs).eval()


# --------------------------------------------------------------------------------------------------------------
# Registry


def test_names_are_the_official_ones_and_new_to_timm():
    for name in HIERARCHICAL + ISOTROPIC:
        assert timm.models.model_entrypoint(name).__module__ == 'zoo.models.nat'
    assert set(HIERARCHICAL + ISOTROPIC) == set(zoo.list_models('*nat*') + zoo.list_models('vitrpb*'))


@pytest.mark.parametrize('name,num_classes', [('dinat_large_21k', 21841), ('dinat_s_large_21k', 21841),
                                              ('dinat_large_384', 1000)])
def test_pretrained_cfgs(name, num_classes):
    model = _meta(name)
    assert model.num_classes == num_classes
    assert model.pretrained_cfg['url'].startswith('https://shi-labs.com/projects/')


def test_no_weight_decay_is_the_relative_position_biases():
    model = _meta('dinat_s_tiny')
    names = model.no_weight_decay()
    assert names and all(n.endswith('.attn.rpb') for n in names)
    assert len(names) == sum((2, 2, 6, 2))  # one table per block


@pytest.mark.parametrize('name,gmacs', [
    # the official models (SHI-Labs/Neighborhood-Attention-Transformer classification/*.py, a naive natten
    # stand-in) under torch's FlopCounterMode / 2, the attention products included on both sides
    # (nat_isotropic_small + 12 * 2 * 196 * (196 - 49) * 384 MACs = vitrpb_small: 4.308 G + 0.266 G = 4.574 G)
    ('nat_mini', 2.695),
    ('dinat_s_tiny', 4.491),
    ('nat_isotropic_small', 4.308),
    ('vitrpb_small', 4.574),
    ('dinat_large_384', 89.505),
])
def test_gmacs_match_official(name, gmacs):
    from torch.utils.flop_counter import FlopCounterMode

    model = _meta(name)
    x = torch.empty(1, 3, *model.pretrained_cfg['input_size'][1:], device='meta')
    with FlopCounterMode(display=False) as counter:
        model(x)
    assert counter.get_total_flops() / 2e9 == pytest.approx(gmacs, abs=1e-3)


# --------------------------------------------------------------------------------------------------------------
# Checkpoint conversion


@pytest.mark.parametrize('variant', ['nat_small', 'dinat_s_tiny', 'vitrpb_small'])
def test_official_layout_loads_strict(variant):
    official = _official_state_dict(variant)
    model = timm.create_model(variant).eval()
    converted = checkpoint_filter_fn(official, model)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in converted.items()} == expected
    model.load_state_dict(converted, strict=True)
    sd = model.state_dict()
    for name, value in official.items():
        if name.endswith('relative_position_index'):
            continue  # the buffer is not a parameter: the zoo's index is the window op's, not stored
        m = re.match(r'^(levels|layers)\.(\d+)\.downsample\.(.*)$', name)
        if m and variant != 'vitrpb_small':
            zoo_name = f'stages.{int(m.group(2)) + 1}.downsample.{m.group(3)}'
        elif variant != 'vitrpb_small':
            zoo_name = re.sub(r'^(levels|layers)\.', 'stages.', name)
        else:
            zoo_name = name
        torch.testing.assert_close(sd[zoo_name], value, msg=f'{name} -> {zoo_name}')


def test_zoo_layout_and_containers_pass_through():
    model = timm.create_model('dinat_s_tiny').eval()
    sd = model.state_dict()
    for wrapped in (sd, {'model': sd}, {'state_dict': {f'module.{k}': v for k, v in sd.items()}}):
        out = checkpoint_filter_fn(wrapped, model)
        assert out.keys() == sd.keys()
        assert all(out[k] is sd[k] for k in sd)


def test_pretrained_loading_goes_through_the_filter(tmp_path):
    """`pretrained=True` with an official release file (flat dict) converts it: what `build_model_with_cfg` does."""
    official = _official_state_dict('nat_small')
    path = tmp_path / 'nat_small.pth'
    torch.save(official, path)
    model = timm.create_model('nat_small', pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
    torch.testing.assert_close(
        model.stages[1].downsample.reduction.weight, official['levels.0.downsample.reduction.weight'])
    torch.testing.assert_close(model.stages[2].blocks[3].gamma2, official['levels.2.blocks.3.gamma2'])


def test_bias_tables_of_another_size_are_resized():
    """A 7x7-kernel checkpoint into an 11x11 model (DiNAT's `_11x11` practice) and vitrpb at another img_size."""
    model = timm.create_model('nat_mini', kernel_size=11, depths=(1, 1, 1, 1)).eval()
    sd = {k: v for k, v in timm.create_model('nat_mini', depths=(1, 1, 1, 1)).state_dict().items()}
    converted = checkpoint_filter_fn(sd, model)
    assert converted['stages.0.blocks.0.attn.rpb'].shape == (2, 21, 21)
    model.load_state_dict(converted, strict=True)

    official = _official_state_dict('vitrpb_small')
    model = timm.create_model('vitrpb_small', img_size=256, depth=12).eval()
    converted = checkpoint_filter_fn(official, model)
    assert converted['layers.0.attn.rpb'].shape == (12, 31, 31)
    model.load_state_dict(converted, strict=True)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 256, 256)).shape == (1, 1000)


# --------------------------------------------------------------------------------------------------------------
# Attention modules against the naive formulation


@pytest.mark.parametrize('size,kernel,dilation', [((5, 6), 3, 2), ((9, 8), 3, 2), ((4, 4), 7, 1)])
def test_small_maps_are_zero_padded_before_qkv(size, kernel, dilation):
    """NATTEN 0.14: a map smaller than kernel x dilation is zero-padded at the bottom / right BEFORE the qkv
    projection (padded tokens are keys with q / k / v = bias), then cropped; against a naive fp64 loop."""
    torch.manual_seed(0)
    attn = zoo_nat.NeighborhoodAttention(16, 2, kernel, dilation).double().eval()
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_(0, 0.3)
        x = torch.randn(2, *size, 16, dtype=torch.float64)
        span = kernel * dilation
        xp = F.pad(x, (0, 0, 0, max(0, span - size[1]), 0, max(0, span - size[0])))
        q, k, v = attn.qkv(xp).reshape(*xp.shape[:3], 3, 2, 8).unbind(3)
        ref = naive_fp64(q, k, v, (kernel, kernel), (dilation, dilation), attn.rpb)[:, :size[0], :size[1]]
        expected = attn.proj(ref.reshape(2, *size, 16))
        torch.testing.assert_close(attn(x), expected, atol=1e-6, rtol=1e-5)


def test_vitrpb_attention_is_global_attention_with_key_minus_query_bias():
    torch.manual_seed(0)
    attn = zoo_nat.GlobalAttentionRPB(16, 2, grid_size=4).double().eval()
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_(0, 0.3)
        for H, W in ((4, 4), (3, 2)):
            x = torch.randn(2, H, W, 16, dtype=torch.float64)
            q, k, v = attn.qkv(x).reshape(2, H * W, 3, 2, 8).permute(2, 0, 3, 1, 4)
            ys, xs = torch.arange(H).repeat_interleave(W), torch.arange(W).repeat(H)
            # official: rpb[h, yk - yq + L - 1, xk - xq + L - 1] (Swin's index flipped in both directions)
            bias = attn.rpb[:, ys[None, :] - ys[:, None] + 3, xs[None, :] - xs[:, None] + 3]
            logits = q @ k.transpose(-2, -1) * 8 ** -0.5 + bias[None]
            ref = (logits.softmax(-1) @ v).transpose(1, 2).reshape(2, H, W, 16)
            torch.testing.assert_close(attn(x), attn.proj(ref), atol=1e-6, rtol=1e-5)
        with pytest.raises(ValueError, match=r'5x4 map is larger than the 4x4 .* img_size=80'):
            attn(torch.randn(1, 5, 4, 16, dtype=torch.float64))


# --------------------------------------------------------------------------------------------------------------
# Sizes


@pytest.mark.parametrize('name', ['dinat_mini', 'dinat_large_384', 'dinat_s_tiny'])
@pytest.mark.parametrize('size', [(512, 512), (512, 683)])
def test_segmentation_sizes_meta(name, size):
    model = _meta(name, features_only=True)
    feats = model(torch.empty(2, 3, *size, device='meta'))
    for f, r, c in zip(feats, model.feature_info.reduction(), model.feature_info.channels()):
        assert tuple(f.shape) == (2, c, -(-size[0] // r), -(-size[1] // r))


def test_segmentation_size_real_dinat_mini():
    """512x683 (not a multiple of 32): stage maps 128x171, 64x86, 32x43, 16x22; DiNAT's dilations run unpadded.
    Two blocks per stage (dilations 1, 8 / 1, 4 / 1, 2 / 1, 1) keep it quick on a CPU."""
    torch.manual_seed(0)
    model = timm.create_model(
        'dinat_mini', features_only=True, depths=(2, 2, 2, 2), dilations=((1, 8), (1, 4), (1, 2), (1, 1))).eval()
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 512, 683))
    assert [tuple(f.shape[-2:]) for f in feats] == [(128, 171), (64, 86), (32, 43), (16, 22)]
    assert all(torch.isfinite(f).all() for f in feats)


@pytest.mark.gpu
@pytest.mark.parametrize('name', ['dinat_tiny', 'dinat_s_tiny', 'dinat_isotropic_small'])
def test_gpu_triton_backend_matches_reference(name):
    """The whole model on the fused kernels against the PyTorch reference path: logits and every gradient (fp32)."""
    torch.manual_seed(0)
    model = timm.create_model(name).cuda().train()
    x = torch.randn(4, 3, 224, 224, device='cuda')
    results = {}
    for backend in ('triton', 'reference'):
        model.zero_grad(set_to_none=True)
        with ops.use_backend(backend):
            out = model(x)
        out.square().mean().backward()
        results[backend] = (out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()})
    torch.testing.assert_close(results['triton'][0], results['reference'][0], atol=1e-4, rtol=1e-3)
    for n, g in results['reference'][1].items():
        torch.testing.assert_close(results['triton'][1][n], g, atol=1e-4 * g.abs().max().item(), rtol=1e-3, msg=n)


# pretrained=True for this family (tests/test_pretrained_loopback.py): the smallest model with an official key layout,
# its official weights in the container the official trainer saves, served over 127.0.0.1
LOOPBACK_MODEL = 'dinat_s_tiny'


def official_checkpoint(seed: int) -> tuple[Any, dict[str, Any]]:
    """The official file's object for `LOOPBACK_MODEL` (random weights) and the create_model kwargs it needs."""
    return CONTAINERS['flat'](_official_state_dict('dinat_s_tiny', seed=seed)), {}
