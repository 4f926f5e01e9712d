"""HAT (super-resolution): official parameter counts and checkpoint layout, SR output shapes at any input size,
the official padding, all attention in `ops`, and the SR versions of the generic suite's checks.

The generic suite (tests/models/test_models.py) assumes classifiers; for a super-resolution model the checks that
apply are run here on a tiny configuration of a registered HAT (window 8, two groups), so they stay fast on a CPU:
output shape ``(B, 3, scale*H, scale*W)`` at sizes that are not multiples of the window, every parameter receiving
a gradient, grad checkpointing, ``torch.compile(fullgraph=True)``, ``torch.export``, and the default cfg's SR
fields. The full-size variants are checked on the meta device (parameter counts, output shapes).

The official key layout (`fixtures/hat_official_s_x4_keys.json`: names and shapes only) was generated once from
https://github.com/XPixelGroup/HAT (`1638a9a`, `hat/archs/hat_arch.py`, BasicSR's registry / `to_2tuple` /
`trunc_normal_` replaced by a 10-line stub outside the project) as
``{k: list(v.shape) for k, v in HAT(**HAT-S_SRx4 network_g).state_dict().items()}``.

Parity, measured once outside the suite (fp32, CPU, batch 1, reference backend): the official arch with every
parameter perturbed by N(0, 0.02), wrapped in BasicSR's container (``params`` deliberately different from
``params_ema``), loaded into the zoo model through `checkpoint_filter_fn` (strict); official output via
``HATModel``'s reflect-pad / run / crop, inputs uniform in [0, 1], max |SR output difference| (outputs ~1.1-2.1):

| model | LR inputs | max abs diff |
|---|---|---|
| embed 36, depths (2, 2), window 16, x2 | 32x48, 50x70, 20x33 | 7.2e-7, 8.3e-7, 7.2e-7 |
| embed 24, depths (2, 3), heads (2, 4), window 8, x3 | 24x40, 29x35 | 7.5e-7, 8.6e-7 |
| hat_s_x4 | 48x64, 37x50 | 2.0e-6, 2.0e-6 |
| hat_x3 | 32x48 | 3.3e-6 |
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
from param_counts import PARAM_COUNTS as COLLECTED_PARAM_COUNTS
from ops.overlapping_window_attention.official import table_from_official as ocab_table_from_official
from timm.optim._param_groups import param_groups_weight_decay
from zoo.models.hat import HAT_RGB_MEAN, checkpoint_filter_fn, shifted_window_mask

FIXTURES = Path(__file__).parent / 'fixtures'
# each variant's official parameter count, sum(p.numel() for p in model.parameters()): tests/models/param_counts.py
# collects this literal for the generic suite's test_param_count;
# official XPixelGroup/HAT code (hat/archs/hat_arch.py, released network_g configs)
PARAM_COUNTS = {
    'hat_s_x2': 9_473_471, 'hat_s_x3': 9_658_111, 'hat_s_x4': 9_621_183,
    'hat_x2': 20_624_795, 'hat_x3': 20_809_435, 'hat_x4': 20_772_507,
    'hat_l_x2': 40_698_863, 'hat_l_x3': 40_883_503, 'hat_l_x4': 40_846_575,
}
TINY = dict(embed_dim=24, depths=(2, 2), num_heads=(2, 3), window_size=8, compress_ratio=3, squeeze_factor=6)


@pytest.fixture(scope='module', autouse=True)
def _one_intra_op_thread():
    """See tests/models/test_models.py: competing OpenMP threads spin; small inputs gain little from a second one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tiny(name='hat_s_x2', seed=0, **kwargs):
    torch.manual_seed(seed)
    return timm.create_model(name, **{**TINY, 'drop_path_rate': 0., **kwargs}).eval()


def _scale(name: str) -> int:
    return int(name[-1])


# --------------------------------------------------------------------------------------------------------------
# Registry, parameter counts, default cfg (full-size variants, meta device)


def test_registered_variants_and_param_counts_table():
    """The parameter counts themselves are checked by the generic suite's test_param_count (meta device)."""
    assert sorted(zoo.list_models('hat_*')) == sorted(PARAM_COUNTS)
    assert {k: v for k, v in COLLECTED_PARAM_COUNTS.items() if k.startswith('hat_')} == PARAM_COUNTS


@pytest.mark.parametrize('name', ['hat_s_x2', 'hat_x3', 'hat_l_x4'])
def test_meta_output_shapes(name):
    with torch.device('meta'):
        model = timm.create_model(name).eval()
    s = _scale(name)
    for h, w in ((64, 64), (50, 70)) if name == 'hat_s_x2' else ((50, 70),):
        assert model(torch.empty(2, 3, h, w, device='meta')).shape == (2, 3, s * h, s * w)


@pytest.mark.parametrize('name', list(PARAM_COUNTS))
def test_pretrained_cfg_is_super_resolution(name):
    model = _tiny(name)  # the cfg comes from the name; the tiny body keeps this fast
    cfg = model.pretrained_cfg
    assert 'task: super-resolution' in cfg['notes'] and f'scale: {_scale(name)}' in cfg['notes']
    assert _scale(name) == model.upscale
    assert timm.models.get_pretrained_cfg(name).notes == cfg['notes']  # readable without building the model
    assert tuple(cfg['input_size']) == (3, 64, 64)  # the LR training patch
    assert tuple(cfg['mean']) == HAT_RGB_MEAN and tuple(cfg['std']) == (1.0, 1.0, 1.0)
    assert cfg['license'] == 'apache-2.0' and cfg['paper_ids'] and cfg['origin_url'].endswith('XPixelGroup/HAT')
    assert f'x{_scale(name)}' in cfg['description']
    conv = model.get_submodule(cfg['first_conv'])
    assert isinstance(conv, torch.nn.Conv2d) and conv.in_channels == 3
    assert model.num_classes == 0 and cfg['num_classes'] == 0
    assert model(torch.rand(1, 3, 8, 8)).shape == (1, 3, 8 * _scale(name), 8 * _scale(name))


def test_real_world_gan_generator_is_hat_x4():
    with torch.device('meta'):
        model = timm.create_model('hat_x4.real_gan')
    assert model.pretrained_cfg['tag'] == 'real_gan'
    assert sum(p.numel() for p in model.parameters()) == PARAM_COUNTS['hat_x4']
    assert timm.models.get_pretrained_cfg('hat_x4.real_gan_sharper') is not None


def test_classifier_arguments_are_errors():
    with pytest.raises(ValueError, match='super-resolution.*num_classes=42'):
        timm.create_model('hat_s_x2', num_classes=42, **TINY)
    with pytest.raises(ValueError, match='features_only is not supported'):
        timm.create_model('hat_s_x2', features_only=True, **TINY)
    model = _tiny()
    model.reset_classifier(0)
    with pytest.raises(ValueError, match='without a classifier'):
        model.reset_classifier(10)


# --------------------------------------------------------------------------------------------------------------
# The SR equivalents of the generic suite's real-weight checks (tiny configuration)


@pytest.mark.parametrize('size', [(16, 24), (13, 21), (9, 30)])
def test_any_input_size(size):
    model = _tiny('hat_s_x3')
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 3, 3 * size[0], 3 * size[1]) and torch.isfinite(out).all()


def test_padding_is_the_official_reflect_pad_and_crop():
    """HATModel: reflect-pad LR right / bottom to the window multiple, run the arch, crop scale * pad."""
    model = _tiny('hat_s_x2')
    x = torch.rand(1, 3, 13, 21)
    padded = F.pad(x, (0, 24 - 21, 0, 16 - 13), mode='reflect')
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(padded)[..., :26, :42], rtol=0, atol=0)
        feats = model.forward_features(x)
        assert feats.shape == (1, TINY['embed_dim'], 16, 24)  # features of the padded map
        torch.testing.assert_close(model.forward_head(feats)[..., :26, :42], model(x))


def test_too_small_input_is_a_clear_error():
    model = _tiny('hat_s_x2')
    with pytest.raises(ValueError, match='3x20 input cannot be reflect-padded .* window 8'):
        model(torch.rand(1, 3, 3, 20))


@pytest.mark.parametrize('shape', [(1, 1, 16, 16), (1, 4, 16, 16), (3, 16, 16)])
def test_input_that_is_not_a_colour_batch_is_a_clear_error(shape):
    """A grey image would broadcast against the RGB mean into a colour one; an unbatched one is an error too."""
    model = _tiny('hat_s_x2')
    with pytest.raises(ValueError, match=rf'image batch of shape \(B, 3, H, W\), got {re.escape(str(shape))}'):
        model(torch.rand(shape))


def test_backward_every_param_has_grad():
    model = _tiny('hat_s_x4', drop_path_rate=0.1).train()
    out = model(torch.rand(2, 3, 12, 17))
    assert out.shape == (2, 3, 48, 68)
    out.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing


def test_grad_checkpointing():
    model = _tiny('hat_s_x2').train()
    x = torch.rand(2, 3, 16, 16)
    model(x).square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    model.set_grad_checkpointing(True)
    model(x).square().mean().backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], msg=f'gradient of {n} differs under checkpointing')


def test_torch_compile_fullgraph_and_export():
    model = _tiny('hat_s_x2', depths=(2,), num_heads=(2,))  # one group: a plain and a shifted HAB, an OCAB
    x = torch.rand(1, 3, 13, 16)
    with torch.no_grad():
        want = model(x)
    torch._dynamo.reset()
    try:
        compiled = torch.compile(model, fullgraph=True, backend='eager')
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), want)
    finally:
        torch._dynamo.reset()
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), want)


def test_triton_backend_matches_reference():
    """The whole model with both ops on the Triton kernels (interpreter on CPU): output and every gradient."""
    model = _tiny('hat_s_x2', window_size=4, depths=(2,), num_heads=(2,)).train()
    x = torch.rand(1, 3, 7, 9)
    results = {}
    for backend in ('reference', 'triton'):
        model.zero_grad(set_to_none=True)
        with ops.use_backend(backend):
            out = model(x)
            out.square().mean().backward()
        results[backend] = (out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()})
    torch.testing.assert_close(results['triton'][0], results['reference'][0], rtol=1e-4, atol=1e-5)
    for n, g in results['reference'][1].items():
        torch.testing.assert_close(results['triton'][1][n], g, rtol=1e-3, atol=1e-6, msg=n)


def test_no_weight_decay_tables():
    model = _tiny()
    groups = param_groups_weight_decay(model, 0.05, no_weight_decay_list=model.no_weight_decay())
    no_decay = {id(p) for p in groups[0]['params']}
    tables = [p for n, p in model.named_parameters() if n.endswith('relative_position_bias_table')]
    assert tables and all(id(p) in no_decay for p in tables)
    assert id(model.conv_first.weight) not in no_decay


def test_group_matcher_covers_every_parameter():
    model = _tiny()
    from timm.models._manipulate import group_parameters
    groups = group_parameters(model, model.group_matcher(coarse=False))
    assert sum(len(v) for v in groups.values()) == len(list(model.named_parameters()))


# --------------------------------------------------------------------------------------------------------------
# Shifted-window mask and the official checkpoint layout


def test_shifted_window_mask_matches_official_construction():
    """Official `calculate_mask`: region ids by slices (0:-ws, -ws:-shift, -shift:), -100 across regions."""
    h, w, ws, shift = 32, 48, 16, 8
    img = torch.zeros(h, w)
    cnt = 0
    for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            img[hs, wsl] = cnt
            cnt += 1
    win = img.view(h // ws, ws, w // ws, ws).permute(0, 2, 1, 3).reshape(-1, ws * ws)
    diff = win[:, None, :] - win[:, :, None]
    want = diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)
    assert torch.equal(shifted_window_mask(h, w, ws, shift), want)


def _official_rpi_sa(ws):
    """hat_arch.calculate_rpi_sa, re-derived: (y_q - y_k + ws - 1) * (2ws - 1) + (x_q - x_k + ws - 1)."""
    c = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing='ij')).flatten(1)
    rel = (c[:, :, None] - c[:, None, :]).permute(1, 2, 0) + ws - 1
    return rel[..., 0] * (2 * ws - 1) + rel[..., 1]


def _official_rpi_oca(ws, wse):
    """calculate_rpi_oca of XPixelGroup/HAT hat/archs/hat_arch.py, re-derived: values in [-880, 640] for 16 / 24,
    wrapping."""
    ori = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing='ij')).flatten(1)
    ext = torch.stack(torch.meshgrid(torch.arange(wse), torch.arange(wse), indexing='ij')).flatten(1)
    rel = (ext[:, None, :] - ori[:, :, None]).permute(1, 2, 0) + ws - wse + 1
    return rel[..., 0] * (ws + wse - 1) + rel[..., 1]


def official_ocab_table_index(ws, wse):
    """The official OCAB table row that each entry of the op's ``(n, n)`` table comes from: the converter applied
    to the row numbers."""
    n = ws + wse - 1
    return ocab_table_from_official(torch.arange(n * n)[:, None], ws, wse)[0]


@pytest.mark.parametrize('ws', [16, 8])
def test_table_conversion_follows_the_official_indices(ws):
    """For every (query, key) pair the bias the op reads from the converted table is the one the official code
    reads from its flat table through its relative position index (negative indices wrap, as in PyTorch)."""
    wse = ws + ws // 2
    model = _tiny(window_size=ws)
    heads = 2
    flat_sa = torch.randn((2 * ws - 1) ** 2, heads)
    flat_oca = torch.randn((ws + wse - 1) ** 2, heads)
    sd = checkpoint_filter_fn({'layers.0.residual_group.blocks.0.attn.relative_position_bias_table': flat_sa,
                               'layers.0.residual_group.overlap_attn.relative_position_bias_table': flat_oca}, model)
    sa = sd['layers.0.residual_group.blocks.0.attn.relative_position_bias_table']
    oca = sd['layers.0.residual_group.overlap_attn.relative_position_bias_table']
    assert sa.shape == (heads, 2 * ws - 1, 2 * ws - 1) and oca.shape == (heads, ws + wse - 1, ws + wse - 1)

    qy, qx = torch.arange(ws).repeat_interleave(ws), torch.arange(ws).repeat(ws)
    ky, kx = torch.arange(wse).repeat_interleave(wse), torch.arange(wse).repeat(wse)
    # ops.window_attention reads table[h, yq - yk + ws - 1, xq - xk + ws - 1]
    got_sa = sa[:, qy[:, None] - qy[None, :] + ws - 1, qx[:, None] - qx[None, :] + ws - 1]
    assert torch.equal(got_sa, flat_sa[_official_rpi_sa(ws)].permute(2, 0, 1))
    # ops.overlapping_window_attention reads table[h, ky - qy + ws - 1, kx - qx + ws - 1]
    got_oca = oca[:, ky[None, :] - qy[:, None] + ws - 1, kx[None, :] - qx[:, None] + ws - 1]
    rpi = _official_rpi_oca(ws, wse)
    if ws == 16:
        assert rpi.min() == -880 and rpi.max() == 640 and (rpi < 0).sum() == 92_800
    assert torch.equal(got_oca, flat_oca[rpi].permute(2, 0, 1))
    # the index map is a bijection onto the official table rows
    assert torch.equal(official_ocab_table_index(ws, wse).flatten().sort().values, torch.arange((ws + wse - 1) ** 2))


def _official_state_dict(seed: int) -> dict:
    layout = json.loads((FIXTURES / 'hat_official_s_x4_keys.json').read_text())['keys']
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in layout.items():
        if k.startswith('relative_position_index_'):
            sd[k] = torch.randint(0, 100, shape, generator=gen)  # derived buffers: dropped by the converter
        else:
            sd[k] = torch.randn(shape, generator=gen)
    return sd


@pytest.fixture(scope='module')
def hat_s_x4():
    return timm.create_model('hat_s_x4').eval()


def test_official_layout_loads_strict(hat_s_x4):
    """BasicSR container with both keys: `params_ema` is the one loaded; `params` alone works too."""
    ema, raw = _official_state_dict(0), _official_state_dict(1)
    converted = checkpoint_filter_fn({'params': raw, 'params_ema': ema}, hat_s_x4)
    hat_s_x4.load_state_dict(converted, strict=True)
    torch.testing.assert_close(hat_s_x4.conv_first.weight, ema['conv_first.weight'], rtol=0, atol=0)
    converted = checkpoint_filter_fn({'params': raw}, hat_s_x4)
    hat_s_x4.load_state_dict(converted, strict=True)
    torch.testing.assert_close(hat_s_x4.conv_first.weight, raw['conv_first.weight'], rtol=0, atol=0)
    # a DDP-saved plain state dict
    hat_s_x4.load_state_dict(checkpoint_filter_fn({f'module.{k}': v for k, v in ema.items()}, hat_s_x4), strict=True)
    table = 'layers.2.residual_group.blocks.3.attn.relative_position_bias_table'
    torch.testing.assert_close(hat_s_x4.get_parameter(table), ema[table].t().reshape(6, 31, 31), rtol=0, atol=0)


def test_zoo_layout_passes_through(hat_s_x4):
    sd = hat_s_x4.state_dict()
    out = checkpoint_filter_fn(sd, hat_s_x4)
    assert list(out) == list(sd)
    assert all(out[k] is sd[k] for k in sd)


def _to_official_layout(model) -> dict:
    """The zoo state dict in the official layout: flat (rows, heads) tables (the OCAB one through the official wrapped
    index), plus the official relative_position_index_* buffers (values irrelevant: the converter drops them)."""
    ws, wse = model.window_size, model.overlap_win_size
    index = official_ocab_table_index(ws, wse).view(-1)
    out = {'relative_position_index_SA': torch.zeros(ws * ws, ws * ws, dtype=torch.long),
           'relative_position_index_OCA': torch.zeros(ws * ws, wse * wse, dtype=torch.long)}
    for k, v in model.state_dict().items():
        if k.endswith('overlap_attn.relative_position_bias_table'):
            flat = torch.empty(v.shape[1] * v.shape[2], v.shape[0])
            flat[index] = v.reshape(v.shape[0], -1).t()
            v = flat
        elif k.endswith('relative_position_bias_table'):
            v = v.reshape(v.shape[0], -1).t().contiguous()
        out[k] = v
    return out


def test_basicsr_file_loads_through_timm_pretrained(tmp_path):
    """A BasicSR .pth in the official layout, loaded by timm (pretrained=True, file overlay): the same network."""
    src = _tiny('hat_s_x2', seed=1)
    official = _to_official_layout(src)
    assert official['layers.0.residual_group.overlap_attn.relative_position_bias_table'].shape == ((8 + 12 - 1) ** 2, 2)
    path = tmp_path / 'HAT_tiny_SRx2.pth'
    torch.save({'params': {k: torch.zeros_like(v) for k, v in official.items()}, 'params_ema': official}, path)
    model = timm.create_model('hat_s_x2', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                              **{**TINY, 'drop_path_rate': 0.}).eval()
    x = torch.rand(1, 3, 11, 19)
    with torch.no_grad():
        torch.testing.assert_close(model(x), src(x), rtol=0, atol=0)


def test_convert_export_and_local_dir_round_trip(tmp_path):
    """`python -m zoo.convert` on a BasicSR file, then timm's `local-dir:` loading of the export: the same network,
    and the SR notes survive timm's config.json."""
    from zoo.convert import convert

    src = _tiny('hat_s_x2', seed=1)
    path = tmp_path / 'HAT_tiny_SRx2.pth'
    torch.save({'params_ema': _to_official_layout(src)}, path)
    out = convert('hat_s_x2', path, tmp_path / 'export', **{**TINY, 'drop_path_rate': 0.})
    model = timm.create_model(f'local-dir:{out}', pretrained=True).eval()
    x = torch.rand(1, 3, 11, 19)
    with torch.no_grad():
        torch.testing.assert_close(model(x), src(x), rtol=0, atol=0)
    assert 'task: super-resolution' in model.pretrained_cfg['notes']


# pretrained=True for this family (tests/test_pretrained_loopback.py): the smallest model with an official key layout,
# its official weights in the container the official trainer saves, served over 127.0.0.1
LOOPBACK_MODEL = 'hat_s_x2'


def official_checkpoint(seed: int) -> tuple[Any, dict[str, Any]]:
    """The official file's object for `LOOPBACK_MODEL` (random weights) and the create_model kwargs it needs."""
    return CONTAINERS['basicsr'](_to_official_layout(_tiny('hat_s_x2', seed=seed))), dict(TINY, drop_path_rate=0.)
