"""Agent-Swin: official checkpoint conversion, the A / B block layout, all attention in `ops`, and sizes the
official classification models refuse.

The official key layouts (`fixtures/agent_swin_official_{t,b}_keys.json`: names and shapes only) were generated once
from https://github.com/LeapLabTHU/Agent-Attention (`207ce3e`, `agent_transformer/models/agent_swin.py`, imported
as a file; torch 2.14, timm 1.0.31) with ``{k: list(v.shape) for k, v in AgentSwinTransformer(...).state_dict()}``
for the agent_swin_t / agent_swin_b configs (cfgs/agent_swin_{t,b}.yaml).

Parity, measured once outside the suite (fp32, CPU, batch 2): each official model with every parameter perturbed by
N(0, 0.02), saved as ``{'model': state_dict}``, converted by `checkpoint_filter_fn` and loaded strict into the zoo
model; max |logit difference| at the training resolution:

| model | input | max abs diff | max abs logit |
|---|---|---|---|
| agent_swin_t | 224 | 6.6e-7 | 2.1 |
| agent_swin_s | 224 | 7.2e-7 | 2.1 |
| agent_swin_s_288 | 288 | 0 | 1.8 |
| agent_swin_b | 224 | 8.3e-7 | 2.5 |
| agent_swin_b_384 | 384 | 6.0e-7 | 2.2 |

Against the official segmentation backbone (`downstream/.../backbones/agent_swin.py`, mmseg imports stubbed),
agent_swin_t weights, its per-stage output norms applied to the zoo's intermediates, max |diff| per stage (maps of
magnitude ~4-5): at 512x512 and 512x683, with the classification agent grids and with the segmentation config's
`downstream_agent_shapes` ((9, 9), (12, 12), (14, 14), (7, 7)) as `agent_grids`: stages 1-4 <= 9.5e-7, 1.7e-6,
2.8e-6, 3.4e-6. At 224x224 stages 1-3 agree the same way and stage 4 differs by design (0.56): the 7x7 map fits one
window, where the classification code (the checkpoints') does not shift and the segmentation code shifts by 3.
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
from ops.window_attention.reference import relative_position_bias
from timm.models.swin_transformer import SwinTransformerBlock
from tests.utils import assert_close
from zoo.layers import agent as agent_layer
from zoo.layers.agent import AgentAttention, parse_attn_type
from zoo.models import agent_swin
from zoo.models.agent_swin import checkpoint_filter_fn

FIXTURES = Path(__file__).parent / 'fixtures'
# each variant's official parameter count, sum(p.numel() for p in model.parameters()): tests/models/param_counts.py
# collects this literal for the generic suite's test_param_count
PARAM_COUNTS = {
    # official LeapLabTHU/Agent-Attention code (agent_transformer/models/agent_swin.py) at each variant's resolution
    'agent_swin_t': 28_902_964,
    'agent_swin_s': 49_666_684,
    'agent_swin_s_288': 49_707_964,
    'agent_swin_b': 88_095_096,
    'agent_swin_b_384': 88_305_016,
}
VARIANTS = ('agent_swin_t', 'agent_swin_s', 'agent_swin_s_288', 'agent_swin_b', 'agent_swin_b_384')
# a narrow agent_swin_t for functional tests (the layout and agent counts of the real one)
TINY = dict(embed_dim=24, depths=(1, 1, 2, 2), num_heads=(1, 2, 2, 4), num_classes=10)


@pytest.fixture(scope='module', autouse=True)
def _one_intra_op_thread():
    """See tests/models/test_models.py: competing OpenMP threads spin; small inputs gain little from a second one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _official_keys(variant: str) -> dict:
    return json.loads((FIXTURES / f'agent_swin_official_{variant}_keys.json').read_text())['keys']


def _official_state_dict(variant: str = 't', seed: int = 0, device: str = 'cpu') -> dict[str, torch.Tensor]:
    """A random state dict in the official layout (names and shapes from the fixture)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, shape in _official_keys(variant).items():
        if device == 'meta':
            sd[name] = torch.empty(shape, device='meta')
        elif name.endswith('relative_position_index'):
            sd[name] = torch.randint(0, 169, shape, generator=g)
        else:
            sd[name] = torch.randn(shape, generator=g) * 0.02 + (1 if name.endswith('norm.weight') else 0)
    return sd


# --------------------------------------------------------------------------------------------------------------
# Registry and layout


def test_names_are_the_official_ones_and_new_to_timm():
    for name in VARIANTS:
        assert timm.models.model_entrypoint(name).__module__ == 'zoo.models.agent_swin'
    assert set(VARIANTS) == set(zoo.list_models('agent_swin*'))



@pytest.mark.parametrize('name,gmacs', [
    # the official models (LeapLabTHU/Agent-Attention agent_transformer/models/agent_swin.py) under torch's
    # FlopCounterMode at their resolution. The other
    # variants were measured equal too (S 8.701, S-288 14.535, B 15.400), left out for runtime.
    ('agent_swin_t', 4.499),
    ('agent_swin_b_384', 46.207),
])
def test_gmacs_match_official(name, gmacs):
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device('meta'):
        model = timm.create_model(name).eval()
        x = torch.empty(1, *model.pretrained_cfg['input_size'])
    with FlopCounterMode(display=False) as counter:
        model(x)
    assert counter.get_total_flops() / 2e9 == pytest.approx(gmacs, rel=1e-3)

def test_parse_attn_type():
    assert parse_attn_type('AAAB', (2, 2, 6, 2)) == ['AA', 'AA', 'AAAAAA', 'BB']
    assert parse_attn_type('AAMB2', (2, 2, 18, 2)) == ['AA', 'AA', 'AA' + 'B' * 16, 'BB']
    for bad in ('AAB', 'AAXB', 'AAMB', 'AABB2', 'AAMBx'):
        with pytest.raises(ValueError, match='attn_type'):
            parse_attn_type(bad, (2, 2, 6, 2))


@pytest.mark.parametrize('name,layout,window,shifted', [
    ('agent_swin_t', 'AA AA AAAAAA BB', 7, 0),
    ('agent_swin_s', 'AA AA ' + 'B' * 18 + ' BB', 7, 9),
    ('agent_swin_s_288', 'AA AA ' + 'B' * 18 + ' BB', 9, 9),
    ('agent_swin_b', 'AA AA AA' + 'B' * 16 + ' BB', 7, 8),
    ('agent_swin_b_384', 'AA AA AA' + 'B' * 16 + ' BB', 12, 8),
])
def test_block_layout_matches_official(name, layout, window, shifted):
    """A / B per block, the B window, and which B-blocks shift at the training resolution: the official model has
    an ``attn_mask`` buffer exactly there (Agent-Swin-S 9, -B 8, none in -T, whose stage-4 map is one window)."""
    model = timm.create_model(name, device='meta')
    size = model.pretrained_cfg['input_size'][1]
    kinds, n_shifted = [], 0
    for i, layer in enumerate(model.layers):
        res = math.ceil(size / 4) // 2 ** i
        stage = ''
        for block in layer.blocks:
            if isinstance(block, agent_swin.AgentBlock):
                stage += 'A'
                assert block.attn.ah_bias.shape[3] == res  # biases sized by the training grid
            else:
                stage += 'B'
                assert block.window_size == (window, window)
                n_shifted += any(block._window_shift(res, res)[1])
        kinds.append(stage)
    assert ' '.join(kinds) == layout
    assert n_shifted == shifted


def test_b_block_is_timms_swin_block_computed_by_the_op():
    """Where timm's own Swin block applies (map a multiple of the window), the op-backed block gives its output,
    shifted-window mask and relative-position bias included."""
    torch.manual_seed(0)
    for shift in (0, 3):
        ours = agent_swin.SwinWindowBlock(48, input_resolution=(14, 14), num_heads=3, window_size=7, shift_size=shift)
        theirs = SwinTransformerBlock(48, input_resolution=(14, 14), num_heads=3, window_size=7, shift_size=shift)
        with torch.no_grad():
            for p in ours.parameters():
                p.normal_(0, 0.1)
        theirs.load_state_dict(ours.state_dict())
        x = torch.randn(2, 14, 14, 48)
        with torch.no_grad():
            torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


def test_b_block_small_map_uses_central_bias_and_no_shift():
    """A map side that fits in one window: that side's window shrinks to the map, unshifted, and the relative bias
    comes from the centre of the table (the same biases the full window gives those offsets)."""
    torch.manual_seed(0)
    block = agent_swin.SwinWindowBlock(32, input_resolution=(7, 7), num_heads=2, window_size=7, shift_size=3)
    assert block._window_shift(5, 16) == ((5, 7), (0, 3))
    assert block._window_shift(7, 7) == ((7, 7), (0, 0))
    table = block._bias_table((5, 3))
    full = block._bias_table((7, 7))
    assert table.shape == (2, 9, 5)
    torch.testing.assert_close(table, full[:, 2:11, 4:9], rtol=0, atol=0)
    # the 5x3 window's biases equal those of the 7x7 window for the same offsets
    small = relative_position_bias(table, (5, 3))
    large = relative_position_bias(full, (7, 7)).view(2, 7, 7, 7, 7)[:, :5, :3, :5, :3].reshape(2, 15, 15)
    torch.testing.assert_close(small, large, rtol=0, atol=0)


# --------------------------------------------------------------------------------------------------------------
# Checkpoint conversion


def test_official_layout_loads_strict():
    official = _official_state_dict('t')
    model = timm.create_model('agent_swin_t').eval()
    converted = checkpoint_filter_fn({'model': official, 'epoch': 299}, model)
    assert {k: tuple(v.shape) for k, v in converted.items()} == {
        k: tuple(v.shape) for k, v in model.state_dict().items()}
    model.load_state_dict(converted, strict=True)
    sd = model.state_dict()
    pairs = {
        'patch_embed.proj.weight': 'patch_embed.proj.weight',
        'patch_embed.norm.bias': 'patch_embed.norm.bias',
        'layers.1.downsample.reduction.weight': 'layers.0.downsample.reduction.weight',  # end of 0 -> start of 1
        'layers.3.downsample.norm.weight': 'layers.2.downsample.norm.weight',
        'layers.0.blocks.1.attn.an_bias': 'layers.0.blocks.1.attn.an_bias',
        'layers.1.blocks.0.attn.wa_bias': 'layers.1.blocks.0.attn.wa_bias',
        'layers.2.blocks.5.attn.dwc.weight': 'layers.2.blocks.5.attn.dwc.weight',
        'layers.3.blocks.1.attn.relative_position_bias_table': 'layers.3.blocks.1.attn.relative_position_bias_table',
        'layers.3.blocks.0.attn.qkv.weight': 'layers.3.blocks.0.attn.qkv.weight',
        'layers.3.blocks.0.mlp.fc2.bias': 'layers.3.blocks.0.mlp.fc2.bias',
        'norm.weight': 'norm.weight',
        'head.fc.weight': 'head.weight',
        'head.fc.bias': 'head.bias',
    }
    for zoo_key, official_key in pairs.items():
        assert torch.equal(sd[zoo_key], official[official_key]), zoo_key
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(1, 3, 64, 96))).all()


def test_official_mixed_layout_converts():
    """Agent-Swin-B ('AAMB2'): 2 agent blocks then 16 Swin blocks in stage 3; the 8 persistent ``attn_mask``
    buffers and every ``relative_position_index`` are dropped (meta tensors: shapes and names only)."""
    official = _official_state_dict('b', device='meta')
    assert sum(k.endswith('attn_mask') for k in official) == 8
    model = timm.create_model('agent_swin_b', device='meta')
    converted = checkpoint_filter_fn(official, model)
    assert {k: tuple(v.shape) for k, v in converted.items()} == {
        k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert 'layers.2.blocks.1.attn.an_bias' in converted
    assert 'layers.2.blocks.2.attn.relative_position_bias_table' in converted


def test_zoo_layout_passes_through_unchanged():
    model = timm.create_model('agent_swin_t', device='meta')
    sd = model.state_dict()
    out = checkpoint_filter_fn(sd, model)
    assert list(out) == list(sd) and all(out[k] is sd[k] for k in sd)


def test_checkpoint_containers_unwrap():
    model = timm.create_model('agent_swin_t', device='meta')
    official = _official_state_dict('t', device='meta')
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


def test_grids_differ_biases_resized_like_official():
    """A 224 checkpoint into a 288 model with 9x9 B windows: agent biases linearly resized along their token axis,
    relative-position tables bicubically from 13x13 to 17x17 (the official `load_pretrained`)."""
    official = _official_state_dict('t')
    model = timm.create_model('agent_swin_t', img_size=288, window_size=9)
    converted = checkpoint_filter_fn(official, model)
    model.load_state_dict(converted, strict=True)
    ah = official['layers.0.blocks.0.attn.ah_bias']  # (1, 3, 9, 56, 1)
    expected = F.interpolate(ah.squeeze(-1).squeeze(0), size=72, mode='linear').unsqueeze(0).unsqueeze(-1)
    torch.testing.assert_close(converted['layers.0.blocks.0.attn.ah_bias'], expected, rtol=0, atol=0)
    wa = official['layers.1.blocks.1.attn.wa_bias']  # (1, 6, 1, 28, 16)
    expected = F.interpolate(wa[0, :, 0].transpose(1, 2), size=36, mode='linear').transpose(1, 2)[None, :, None]
    torch.testing.assert_close(converted['layers.1.blocks.1.attn.wa_bias'], expected, rtol=0, atol=0)
    table = official['layers.3.blocks.0.attn.relative_position_bias_table']  # (169, 24)
    expected = F.interpolate(table.t().reshape(1, 24, 13, 13), size=(17, 17), mode='bicubic').reshape(24, 289).t()
    torch.testing.assert_close(converted['layers.3.blocks.0.attn.relative_position_bias_table'], expected)


def test_pretrained_load_path_converts_official_container():
    official = _official_state_dict('t')
    overlay = dict(state_dict={'model': official})
    model = timm.create_model('agent_swin_t', pretrained=True, pretrained_cfg_overlay=overlay, num_classes=10)
    assert model.get_classifier().out_features == 10
    torch.testing.assert_close(model.norm.weight, official['norm.weight'], rtol=0, atol=0)
    torch.testing.assert_close(
        model.layers[2].blocks[3].attn.na_bias, official['layers.2.blocks.3.attn.na_bias'], rtol=0, atol=0)


# --------------------------------------------------------------------------------------------------------------
# All attention math runs in ops/


def test_attention_goes_through_ops(monkeypatch):
    calls = {'agent_attention': [], 'agent_bias_maps': [], 'window_attention': []}
    originals = {n: getattr(ops, n) for n in calls}

    def spy(name):
        def fn(*args, **kwargs):
            calls[name].append((args, kwargs))
            return originals[name](*args, **kwargs)
        return fn

    owners = {'agent_attention': agent_layer, 'agent_bias_maps': agent_layer, 'window_attention': agent_swin}
    for name in calls:
        monkeypatch.setattr(owners[name], name, spy(name))
    model = timm.create_model('agent_swin_b', embed_dim=32, num_heads=(1, 2, 4, 8), depths=(1, 1, 4, 2),
                              num_classes=10).eval()
    with torch.no_grad():
        model(torch.randn(2, 3, 96, 160))  # maps 24x40, 12x20, 6x10, 3x5
    assert len(calls['agent_attention']) == len(calls['agent_bias_maps']) == 1 + 1 + 2
    assert len(calls['window_attention']) == 2 + 2
    for (q, k, v, agents), kwargs in calls['agent_attention']:
        B, N, heads, d = q.shape
        assert d == 32 and agents.shape == (B, {1: 9, 2: 16, 4: 49}[heads], heads, d)
        assert kwargs['agent_bias'].shape == (heads, agents.shape[1], N)
        assert kwargs['query_bias'].shape == (heads, N, agents.shape[1])
    assert calls['agent_bias_maps'][0][0][-1] == (24, 40)
    windows = [(tuple(a[0].shape[1:3]), a[3], kw.get('mask') is not None) for a, kw in calls['window_attention']]
    # stage 3 (6x10): the height fits one window (6 rows, unshifted), the width is padded to 14 and block 1 shifts
    # along it; stage 4 (3x5) fits one window, never shifted
    assert windows == [((6, 14), (6, 7), False), ((6, 14), (6, 7), True), ((3, 5), (3, 5), False),
                       ((3, 5), (3, 5), False)]


def test_triton_backend_matches_reference(device):
    """The model through the Triton kernels (compiled on GPU, the interpreter on CPU) gives the reference's output
    and gradients: agent blocks in stages 1 and 3, Swin blocks in stages 2 and 4 (stage 2's 16x24 map padded to
    21x28, its second block shifted: the mask path)."""
    torch.manual_seed(0)
    model = timm.create_model('agent_swin_t', embed_dim=16, depths=(1, 2, 1, 1), num_heads=(1, 2, 2, 4),
                              attn_type='ABAB', num_classes=5).to(device).train()
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


def test_agents_are_pooled_unscaled_queries(monkeypatch):
    """The agents handed to the op are the adaptive-average-pooled q (before any scaling), row-major."""
    torch.manual_seed(0)
    attn = AgentAttention(16, 2, agent_num=4, bias_grid=(6, 6)).eval()
    x = torch.randn(1, 6, 6, 16)
    seen = {}
    original = ops.agent_attention

    def capture(q, k, v, agents, **kwargs):
        seen['agents'] = agents
        return original(q, k, v, agents, **kwargs)

    monkeypatch.setattr(agent_layer, 'agent_attention', capture)
    with torch.no_grad():
        attn(x)
    q = attn.qkv(x)[..., :16]
    expected = q.reshape(1, 2, 3, 2, 3, 16).mean(dim=(2, 4)).reshape(1, 4, 2, 8)
    torch.testing.assert_close(seen['agents'], expected)


# --------------------------------------------------------------------------------------------------------------
# Sizes: any multiple of the stride (the official classification models need their training resolution)


@pytest.mark.parametrize('size', [(512, 512), (512, 683)])
def test_segmentation_features(size):
    """Feature extraction at 512x512 and 512x683 (683: not a multiple of 32; the stem pads to 4, the merges to
    even) with the real agent_swin_t, eval; the maps are ceil(size / stride) at strides 4 / 8 / 16 / 32."""
    torch.manual_seed(0)
    model = timm.create_model('agent_swin_t', features_only=True).eval()
    x = torch.randn(1, 3, *size)
    expected = [(1, c, math.ceil(size[0] / r), math.ceil(size[1] / r))
                for c, r in ((96, 4), (192, 8), (384, 16), (768, 32))]
    with torch.no_grad():
        maps = model(x)
    assert [tuple(m.shape) for m in maps] == expected
    assert all(torch.isfinite(m).all() for m in maps)


def test_segmentation_features_train_with_agent_grids():
    """Training at a segmentation-like awkward size with the segmentation agent grids: every gradient."""
    torch.manual_seed(0)
    grids = ((9, 9), (12, 12), (14, 14), (7, 7))
    model = timm.create_model('agent_swin_t', features_only=True, agent_grids=grids, **{
        k: v for k, v in TINY.items() if k != 'num_classes'}).train()
    x = torch.randn(1, 3, 160, 200)  # maps 40x50, 20x25, 10x13, 5x7
    maps = model(x)
    assert [tuple(m.shape[-2:]) for m in maps] == [(40, 50), (20, 25), (10, 13), (5, 7)]
    sum(m.square().mean() for m in maps).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize('name', ['agent_swin_s_288', 'agent_swin_b_384'])
def test_segmentation_feature_shapes_other_variants(name):
    """512x512 and 512x683 with the 9 / 12 windows of the fine-tuned models (agent_swin_t runs for real above);
    shapes only, on the meta device."""
    with torch.device('meta'):
        model = timm.create_model(name, features_only=True)
        for size in ((512, 512), (512, 683)):
            maps = model(torch.empty(1, 3, *size))
            assert [tuple(m.shape) for m in maps] == [
                (1, c, math.ceil(size[0] / r), math.ceil(size[1] / r))
                for c, r in zip(model.feature_info.channels(), model.feature_info.reduction())]


def test_bad_configuration_errors():
    with pytest.raises(ValueError, match='perfect square'):
        timm.create_model('agent_swin_t', agent_num=(9, 16, 48, 49), device='meta')
    with pytest.raises(ValueError, match='attn_type'):
        timm.create_model('agent_swin_t', attn_type='AAB', device='meta')
    with pytest.raises(ValueError, match='agent_grids'):
        timm.create_model('agent_swin_t', agent_grids=((3, 3),), device='meta')


# pretrained=True for this family (tests/test_pretrained_loopback.py): the smallest model with an official key layout,
# its official weights in the container the official trainer saves, served over 127.0.0.1
LOOPBACK_MODEL = 'agent_swin_t'


def official_checkpoint(seed: int) -> tuple[Any, dict[str, Any]]:
    """The official file's object for `LOOPBACK_MODEL` (random weights) and the create_model kwargs it needs."""
    return CONTAINERS['swin_yacs'](_official_state_dict('t', seed=seed)), {}
