"""EMOv2: the official checkpoint layout, the official attention padding, segmentation-size features, `ops` attention.

The official key layout (`fixtures/emov2_official_1m_keys.json`: names and shapes only) was generated once from
https://github.com/zhangzjn/EMOv2 (`582a96f`, `model/lib_emo/emo2.py` imported with a stub registry) with
``{k: list(v.shape) for k, v in EMO2_1M_k5_hybrid().state_dict().items()}``. Outside the suite, every zoo variant
loaded from a perturbed official model (parameters + 0.02 * randn, random BatchNorm statistics, eval mode) through
`checkpoint_filter_fn` on a ``{'net': ..., 'net_E': None, ...}`` trainer checkpoint matched the official logits to
<= 1.7e-6 (fp32, CPU; logits of magnitude 1-2) at 224x224, 250x300 and 64x96 (window 7), 256x256 and 200x328
(``_256``), 512x512 and 512x683 (``_512``); per variant in the report of issue 6. The official segmentation backbone
(`downstreams/seg/backbones/emo2.py`, LayerNorm + GELU local conv, window 10; 1M and 5M, keys from an mmseg-style
``{'state_dict': {'backbone.*': ...}}``) matched emo2_*(window_size=10, dw_norm_layer='layernorm2d',
dw_act_layer='gelu').forward_intermediates to <= 1.2e-7 at 512x512 and 512x683; its key layout is
`fixtures/emov2_official_seg_1m_keys.json`, generated the same way from that file with the 1M settings of
`configs/sem_fpn/fpn_emo2_1M-160k_ade20k-512x512.py`.
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
from zoo.models import emov2 as zoo_emov2
from zoo.models.emov2 import WindowGridAttention, checkpoint_filter_fn

FIXTURES = Path(__file__).parent / 'fixtures'
# each variant's official parameter count, sum(p.numel() for p in model.parameters()): tests/models/param_counts.py
# collects this literal for the generic suite's test_param_count
PARAM_COUNTS = {
    # official zhangzjn/EMOv2 code (model/lib_emo/emo2.py, EMO2_*_k5_hybrid[_256|_512]);
    # the window-8 variants have the window-7 ones' parameters
    'emo2_1m': 1_460_844,
    'emo2_1m_256': 1_460_844,
    'emo2_1m_512': 1_460_844,
    'emo2_2m': 2_384_312,
    'emo2_2m_256': 2_384_312,
    'emo2_2m_512': 2_384_312,
    'emo2_5m': 5_126_440,
    'emo2_5m_256': 5_126_440,
    'emo2_5m_512': 5_126_440,
    'emo2_20m': 20_195_208,
    'emo2_20m_256': 20_195_208,
    'emo2_50m': 49_815_560,
}


@pytest.fixture(scope='module', autouse=True)
def _one_intra_op_thread():
    """See tests/models/test_models.py: competing OpenMP threads spin; small inputs gain little from a second one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _official_1m_state_dict(seed: int = 0) -> dict:
    """A random state dict in the official layout (names and shapes from the fixture)."""
    keys = json.loads((FIXTURES / 'emov2_official_1m_keys.json').read_text())['keys']
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, shape in keys.items():
        if name.endswith('num_batches_tracked'):
            sd[name] = torch.tensor(7)
        elif name.endswith('running_var'):
            sd[name] = torch.rand(shape, generator=g) + 0.5
        else:
            sd[name] = torch.randn(shape, generator=g) * 0.05
    return sd


# --------------------------------------------------------------------------------------------------------------
# Checkpoint conversion


@pytest.mark.parametrize('container', ['net', 'net_E', 'plain', 'ddp'])
def test_official_layout_loads_strict(container):
    """The official trainer's {'net', 'net_E', optimizer, ...} checkpoints and the plain net.pth / net_E.pth state
    dicts load strictly, every official tensor landing on the zoo tensor it describes."""
    official = _official_1m_state_dict()
    other = _official_1m_state_dict(seed=1)
    ckpt = {
        'net': dict(net=official, net_E=other, optimizer={}, scheduler={}, epoch=299),
        'net_E': dict(net=None, net_E=official, optimizer={}, epoch=299),  # no plain weights: the EMA ones
        'plain': official,
        'ddp': {'module.' + k: v for k, v in official.items()},
    }[container]
    model = timm.create_model('emo2_1m')
    converted = checkpoint_filter_fn(ckpt, model)
    model.load_state_dict(converted, strict=True)

    sd = model.state_dict()
    expected = {
        'stem.0.conv.weight': official['stage0.0.conv.weight'],
        'stem.1.bn.running_var': official['stage0.1.norm.running_var'],
        'stem.2.weight': official['stage0.2.conv.weight'],
        'stages.0.downsample.norm.weight': official['stage1.0.norm.weight'],  # BatchNorm
        'stages.0.downsample.expand.conv.bias': official['stage1.0.eops.0.net.conv.bias'],
        'stages.0.blocks.0.conv_dw.bn.running_mean': official['stage1.1.conv_local.norm.running_mean'],
        'stages.2.downsample.norm.weight': official['stage3.0.norm.norm.weight'],  # LayerNorm2d
        'stages.2.blocks.6.attn.qk.weight': official['stage3.7.eops.0.qk.conv.weight'],
        'stages.3.blocks.1.attn.v.bias': official['stage4.2.eops.0.v.conv.bias'],
        'stages.3.blocks.1.proj.weight': official['stage4.2.proj.conv.weight'],
        'stages.3.blocks.1.ls.gamma': official['stage4.2.ls.gamma'].flatten(),  # (1, C, 1, 1) -> (C,)
        'norm.bias': official['norm.norm.bias'],
        'head.fc.weight': official['head.weight'],
    }
    for name, value in expected.items():
        assert torch.equal(sd[name], value), name
    # every official tensor is used exactly once
    assert sorted(v.data_ptr() for v in converted.values()) == sorted(v.data_ptr() for v in official.values())


def test_zoo_layout_passes_through():
    model = timm.create_model('emo2_1m')
    sd = model.state_dict()
    out = checkpoint_filter_fn(sd, model)
    assert out.keys() == sd.keys() and all(out[k] is sd[k] for k in sd)
    headless = {k: v for k, v in sd.items() if not k.startswith('head.')}
    assert checkpoint_filter_fn(headless, model).keys() == headless.keys()


def test_official_layout_fixture_covers_the_model():
    """The fixture's names map one-to-one onto emo2_1m's (a renamed zoo module would break the converter)."""
    keys = json.loads((FIXTURES / 'emov2_official_1m_keys.json').read_text())['keys']
    converted = checkpoint_filter_fn({k: torch.empty(0) for k in keys}, None)
    model = timm.create_model('emo2_1m')
    assert set(converted) == set(model.state_dict())


def test_official_downstream_backbone_layout():
    """An mmseg checkpoint of the official segmentation backbone (LayerNorm + GELU local conv, window 10; its keys
    from `fixtures/emov2_official_seg_1m_keys.json`) loads into emo2_1m built with the matching options: every
    backbone tensor lands, only the final norm and the classifier (which that backbone lacks) stay missing."""
    keys = json.loads((FIXTURES / 'emov2_official_seg_1m_keys.json').read_text())['keys']
    g = torch.Generator().manual_seed(0)
    backbone = {k: torch.randn(shape, generator=g) if shape else torch.tensor(3) for k, shape in keys.items()}
    ckpt = {'meta': {}, 'state_dict': {**{'backbone.' + k: v for k, v in backbone.items()},
                                       'decode_head.conv_seg.weight': torch.zeros(150, 128, 1, 1)}}
    model = timm.create_model('emo2_1m', window_size=10, dw_norm_layer='layernorm2d', dw_act_layer='gelu')
    converted = checkpoint_filter_fn(ckpt, model)
    result = model.load_state_dict(converted, strict=False)
    assert not result.unexpected_keys
    assert sorted(result.missing_keys) == ['head.fc.bias', 'head.fc.weight', 'norm.bias', 'norm.weight']
    sd = model.state_dict()
    assert torch.equal(sd['stages.2.blocks.3.conv_dw.bn.weight'], backbone['stage3.4.conv_local.norm.norm.weight'])
    assert model.stages[2].blocks[3].conv_dw.bn.__class__.__name__ == 'LayerNormAct2d'
    assert model.stages[2].blocks[3].attn.window_size == 10


# --------------------------------------------------------------------------------------------------------------
# The official attention: padded positions are keys (k = bias, v = act(bias)), through ops


def _attn_module(dim=8, out_chs=12, dim_head=4, ws=7):
    torch.manual_seed(0)
    attn = WindowGridAttention(dim, out_chs, dim_head, ws)
    with torch.no_grad():  # biases far from 0, so padded keys/values are far from "nothing"
        attn.qk.bias.normal_(0, 1)
        attn.v.bias.normal_(0, 1)
    return attn


def _explicit(attn, x, partition='both'):
    """Official recipe on a zero-padded map: project, attend over whole padded windows / grids, crop."""
    B, C, H, W = x.shape
    ws = attn.window_size
    xp = F.pad(x, (0, -W % ws, 0, -H % ws))
    Hp, Wp = xp.shape[-2:]
    q, k = attn.qk(xp).permute(0, 2, 3, 1).reshape(B, Hp, Wp, 2, attn.num_heads, attn.dim_head).unbind(3)
    v = attn.act(attn.v(xp)).permute(0, 2, 3, 1).reshape(B, Hp, Wp, attn.num_heads, attn.v_head)
    n1, n2 = Hp // ws, Wp // ws
    out = 0
    for grid in ((False, True) if partition == 'both' else (partition == 'grid',)):
        def part(t):  # (B, Hp, Wp, h, d) -> (B * groups, h, ws * ws, d)
            d = t.shape[-1]
            t = t.view(B, ws, n1, ws, n2, -1, d).permute(0, 2, 4, 5, 1, 3, 6) if grid else \
                t.view(B, n1, ws, n2, ws, -1, d).permute(0, 1, 3, 5, 2, 4, 6)
            return t.reshape(B * n1 * n2, -1, ws * ws, d)

        o = F.scaled_dot_product_attention(part(q), part(k), part(v))
        o = o.view(B, n1, n2, -1, ws, ws, attn.v_head)
        o = o.permute(0, 4, 1, 5, 2, 3, 6) if grid else o.permute(0, 1, 4, 2, 5, 3, 6)
        out = out + o.reshape(B, Hp, Wp, -1)
    return out[:, :H, :W].permute(0, 3, 1, 2)


@pytest.mark.parametrize('size', [(14, 14), (10, 12), (3, 2)], ids=str)
def test_attention_pads_like_the_official_code(size):
    attn = _attn_module()
    x = torch.randn(2, 8, *size)
    with torch.no_grad():
        got = attn(x)
        torch.testing.assert_close(got, _explicit(attn, x), atol=1e-5, rtol=1e-5)
        if size[0] % 7:
            # masking the padding instead (the op's own semantics on the unpadded map) gives something else
            q, k = attn.qk(x).permute(0, 2, 3, 1).reshape(2, *size, 2, 2, 4).unbind(3)
            v = attn.act(attn.v(x)).permute(0, 2, 3, 1).reshape(2, *size, 2, 6)
            masked = ops.window_grid_attention(q, k, v, 7).flatten(3).permute(0, 3, 1, 2)
            assert (masked - got).abs().max() > 1e-2


def test_single_partitions():
    attn = _attn_module()
    x = torch.randn(1, 8, 14, 21)
    with torch.no_grad():
        for partition in ('window', 'grid'):
            attn.partition = partition
            torch.testing.assert_close(attn(x), _explicit(attn, x, partition), atol=1e-5, rtol=1e-5)


def test_attention_runs_through_ops(monkeypatch):
    """Every attention block of stages 3-4 calls ops.window_grid_attention, with the window and head widths."""
    calls = []
    real = ops.window_grid_attention

    def spy(q, k, v, window, **kw):
        calls.append((tuple(q.shape), v.shape[-1], window, kw['partition']))
        return real(q, k, v, window, **kw)

    # the model file calls the op by its global name (what FX's autowrap patches), so the spy goes there
    monkeypatch.setattr(zoo_emov2, 'window_grid_attention', spy)
    model = timm.create_model('emo2_5m_512').eval()
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    # depths 3,3,9,3: 8 attention blocks in stage 3 (4x4 map padded to 8x8), 2 in stage 4 (2x2 -> 8x8)
    assert len(calls) == 10
    assert calls[0] == ((1, 8, 8, 5, 32), 128, 8, 'both') and calls[-1] == ((1, 8, 8, 9, 32), 128, 8, 'both')


def test_structure_matches_the_official_definition():
    """LayerScale at 1e-6 everywhere (stride-2 first blocks included), skips only after the first block, the
    official drop-path schedule (linear over all blocks), norms with eps 1e-6."""
    model = timm.create_model('emo2_2m', drop_path_rate=0.05)
    depths = (3, 3, 9, 3)
    rates = torch.linspace(0, 0.05, sum(depths)).tolist()
    for i, stage in enumerate(model.stages):
        assert not stage.downsample.has_skip and stage.downsample.attn is None
        assert torch.all(stage.downsample.ls.gamma == 1e-6)
        for j, block in enumerate(stage.blocks, start=1):
            assert block.has_skip and (block.attn is not None) == (i >= 2)
            assert block.drop_path.drop_prob == pytest.approx(rates[sum(depths[:i]) + j])
    assert all(m.eps == 1e-6 for m in model.modules() if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.LayerNorm)))
    assert model.stages[2].blocks[0].norm.__class__.__name__ == 'LayerNorm2d'
    assert model.stages[2].downsample.norm.normalized_shape == (48,)  # the previous stage's width, this stage's norm


# --------------------------------------------------------------------------------------------------------------
# Segmentation sizes


@pytest.mark.parametrize('size', [(512, 512), (512, 683)], ids=lambda s: f'{s[0]}x{s[1]}')
def test_features_at_segmentation_sizes(size):
    """features_only at 512x512 and 512x683 (not a multiple of 32: every map is ceil(size / stride))."""
    torch.manual_seed(0)
    feat_model = timm.create_model('emo2_1m_512', features_only=True).eval()
    torch.manual_seed(0)
    model = timm.create_model('emo2_1m_512').eval()
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        feats = feat_model(x)
        inter = model.forward_intermediates(x, intermediates_only=True)
    assert feat_model.feature_info.channels() == [32, 48, 80, 180]
    assert feat_model.feature_info.reduction() == [4, 8, 16, 32]
    for f, t, r, c in zip(feats, inter, (4, 8, 16, 32), (32, 48, 80, 180)):
        assert tuple(f.shape) == (1, c, math.ceil(size[0] / r), math.ceil(size[1] / r))
        assert torch.isfinite(f).all()
        torch.testing.assert_close(f, t)


def test_bad_config_is_a_clear_error():
    with pytest.raises(ValueError, match='dim 80 is not a multiple of dim_head 32'):
        timm.create_model('emo2_1m', dim_heads=(16, 16, 32, 20))
    with pytest.raises(ValueError, match=r'window_size must be a positive int or a tuple of 4 .* got \(7, 7\)'):
        timm.create_model('emo2_1m', window_size=(7, 7))
    with pytest.raises(ValueError, match="partition must be one of .*'close'"):
        timm.create_model('emo2_1m', attn_partition='close')


# --------------------------------------------------------------------------------------------------------------
# The Triton path through the whole model


def test_triton_backend_matches_reference_through_the_model():
    """emo2_1m's widths with one attention block per stage, forward and every gradient, with the attention on the
    Triton kernels (the interpreter here)."""
    torch.manual_seed(0)
    model = timm.create_model('emo2_1m', depths=(1, 1, 2, 2), num_classes=10).train()
    x = torch.randn(1, 3, 40, 56)  # stage 3: 3x4 map padded to one 7x7 window; stage 4: 2x2

    def run(backend):
        model.zero_grad(set_to_none=True)
        with ops.use_backend(backend):
            out = model(x)
        out.square().sum().backward()
        return out, {n: p.grad.clone() for n, p in model.named_parameters()}

    out_t, grads_t = run('triton')
    out_r, grads_r = run('reference')
    torch.testing.assert_close(out_t, out_r, atol=1e-5, rtol=1e-4)
    for n, g in grads_r.items():
        torch.testing.assert_close(grads_t[n], g, atol=1e-5 * g.abs().max().item() + 1e-7, rtol=1e-3, msg=n)


@pytest.mark.gpu
@pytest.mark.parametrize('name,size', [('emo2_5m', (224, 224)), ('emo2_5m_512', (512, 683))])
def test_gpu_triton_matches_reference(name, size):
    torch.manual_seed(0)
    model = timm.create_model(name).cuda().eval()
    x = torch.randn(4, 3, *size, device='cuda')
    with torch.no_grad():
        with ops.use_backend('reference'):
            want = model.forward_intermediates(x)
        got = model.forward_intermediates(x)  # CUDA default: triton
    torch.testing.assert_close(got[0], want[0], atol=1e-4, rtol=1e-3)
    for g, w in zip(got[1], want[1]):
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-3)


# pretrained=True for this family (tests/test_pretrained_loopback.py): the smallest model with an official key layout,
# its official weights in the container the official trainer saves, served over 127.0.0.1
LOOPBACK_MODEL = 'emo2_1m'


def official_checkpoint(seed: int) -> tuple[Any, dict[str, Any]]:
    """The official file's object for `LOOPBACK_MODEL` (random weights) and the create_model kwargs it needs."""
    return CONTAINERS['emo_net'](_official_1m_state_dict(seed=seed)), {}
