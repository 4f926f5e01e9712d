"""The generic model suite: every model in ``zoo.list_models()``, present and future, runs through it.

Mirrors timm's own ``tests/test_models.py`` (forward, backward, default cfg, features_only, forward_intermediates,
grad checkpointing) and adds what the zoo promises on top: ``torch.compile(fullgraph=True)``, ``torch.export``,
inputs that are a multiple of the total stride but not of a window, parameter counts equal to the official ones,
and no name taken from timm.

Two tiers of models, by the official parameter count in ``param_counts.py``:

* up to ``MAX_REAL_PARAMS``: built with real weights on the CPU and run at small inputs;
* larger ones: built on the meta device only (no memory, no compute), where shapes, the default cfg and the
  parameter count are still checked at the default input size.

Every family gets the same checks without listing anything here except its official parameter counts.

The costly checks (``torch.compile``, ``torch.export``, gradient checkpointing: seconds to tens of seconds per
model on the CPU) run in the default tier on each family's representative -- the smallest real model of each
family file -- and on every other real model under ``-m slow``.
"""
import copy
import functools
import io
import json
import math
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import ops
import timm
import zoo
import zoo.models
from zoo.errors import ModelInputError
from timm.models import model_entrypoint
from param_counts import PARAM_COUNTS
from tests.models.bitwise import MODELS as CLASS_REPRESENTATIVES  # one model per model class

MODELS = zoo.list_models()
# Networks without a classifier (num_classes 0 in their default cfg: HAT's super-resolution models) get the registry,
# parameter-count and ops checks here; their own test file checks what they give instead of logits and features.
CLASSIFIERS = [n for n in MODELS if timm.models.get_pretrained_cfg(n).num_classes]
MAX_REAL_PARAMS = 100_000_000
# a model missing from PARAM_COUNTS fails test_param_count and counts as large here, so it is never built for real
REAL_MODELS = [n for n in CLASSIFIERS if PARAM_COUNTS.get(n, math.inf) <= MAX_REAL_PARAMS]


def _family_representatives(names: list[str]) -> set[str]:
    """The model with the fewest parameters of each family file (``zoo.models.<family>``)."""
    best: dict[str, str] = {}
    for n in names:
        family = model_entrypoint(n).__module__
        if family not in best or PARAM_COUNTS[n] < PARAM_COUNTS[best[family]]:
            best[family] = n
    return set(best.values())


REPRESENTATIVES = _family_representatives(REAL_MODELS)
# the same, over every model small enough to build (the classifier-free families included)
ALL_REPRESENTATIVES = _family_representatives([n for n in MODELS if PARAM_COUNTS.get(n, math.inf) <= MAX_REAL_PARAMS])

# Largest side of the inputs used with real weights: small, so the suite stays fast on two CPU cores.
FWD_SIZE = 128
BWD_SIZE = 64
FEAT_SIZE = 96
COMPILE_SIZE = 64
BATCH = 2


def _stride(model: nn.Module) -> int:
    return model.feature_info[-1]['reduction']


def _input_size(model: nn.Module, target: int) -> tuple[int, int, int]:
    """The default input size, each side capped at `target` and kept a multiple of the total stride."""
    c, h, w = model.pretrained_cfg['input_size']
    if model.pretrained_cfg.get('fixed_input_size', False):
        return c, h, w
    s = _stride(model)
    cap = lambda x: x if x <= target else max(s, target // s * s)  # noqa: E731
    return c, cap(h), cap(w)


def _odd_input_size(model: nn.Module) -> tuple[int, int, int]:
    """A multiple of the total stride that is not square and whose last map, 1x3, is not a multiple of any window
    or region > 1 (DaViT's 7 and 12 divide none of the maps at 32x96: 8x24, 4x12, 2x6, 1x3 -- 12 one side only)."""
    s = _stride(model)
    return model.pretrained_cfg['input_size'][0], s, 3 * s


def _feature_shape(model: nn.Module, batch: int, size: tuple[int, int, int]) -> tuple[int, ...]:
    """The shape ``forward_features`` gives at ``size``: ``(B, C, h, w)``, or ``(B, prefix + h * w, C)`` for models
    that keep tokens (ViT-style, e.g. with a class token: ``pretrained_cfg['pool_size']`` is None)."""
    h, w = (math.ceil(s / _stride(model)) for s in size[1:])
    if model.pretrained_cfg.get('pool_size') is None:
        return batch, getattr(model, 'num_prefix_tokens', 0) + h * w, model.num_features
    return batch, model.num_features, h, w


@functools.lru_cache(maxsize=None)
def _meta_template(name: str) -> nn.Module:
    with torch.device('meta'):
        return timm.create_model(name).eval()


def _create_meta(name: str, **kwargs) -> nn.Module:
    """`name` on the meta device (no memory, no compute); without kwargs a copy of one cached build per name."""
    if not kwargs:
        return copy.deepcopy(_meta_template(name))
    with torch.device('meta'):
        return timm.create_model(name, **kwargs).eval()


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _assert_every_param_has_grad(model: nn.Module) -> None:
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f'parameters without a gradient: {missing}'
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f'non-finite gradients: {bad}'


@pytest.fixture(scope='module', autouse=True)
def _one_intra_op_thread():
    """One intra-op thread while this module runs: the inputs are small, so a second thread gains little, while
    OpenMP threads competing for the cores (pytest-xdist workers, other jobs) spin and slow runs severalfold."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module', params=REAL_MODELS)
def pristine(request) -> nn.Module:
    """One built model per name and test worker, seeded; tests work on deep copies of it."""
    torch.manual_seed(0)
    return timm.create_model(request.param).eval()


@pytest.fixture
def model(pristine) -> nn.Module:
    return copy.deepcopy(pristine)


@pytest.fixture(params=[pytest.param(n, marks=() if n in REPRESENTATIVES else pytest.mark.slow) for n in REAL_MODELS])
def costly_model(request) -> nn.Module:
    """A fresh seeded model per costly check: each family's representative by default, the others under slow."""
    torch.manual_seed(0)
    return timm.create_model(request.param).eval()


# --------------------------------------------------------------------------------------------------------------
# Registry and parameter counts (all models, meta device)


def test_zoo_registers_models_without_taking_timm_names():
    assert MODELS, 'zoo.list_models() is empty'
    # timm's own names, from a process that never imported zoo (an overwrite would otherwise hide itself)
    out = subprocess.run(
        [sys.executable, '-c', 'import json, timm; print(json.dumps(timm.list_models()))'],
        check=True, capture_output=True, text=True,
    ).stdout
    taken = sorted(set(MODELS) & set(json.loads(out)))
    assert not taken, f'zoo registers names timm already registers: {taken}'
    for name in MODELS:
        assert timm.is_model(name)


def test_param_counts_table_has_no_stale_entries():
    stale = sorted(set(PARAM_COUNTS) - set(MODELS))
    assert not stale, f'PARAM_COUNTS in tests/models/test_*.py lists models the zoo does not register: {stale}'


@pytest.mark.parametrize('name', MODELS)
def test_param_count(name):
    assert name in PARAM_COUNTS, (
        f'{name} has no official parameter count: add it, with its source, to PARAM_COUNTS in its test_<family>.py')
    assert _num_params(_create_meta(name)) == PARAM_COUNTS[name]


@pytest.mark.parametrize('name', CLASSIFIERS)
def test_default_cfg(name):
    """timm's default-cfg checks, on the meta device at the default input size (any model size)."""
    model = _create_meta(name)
    cfg = model.pretrained_cfg
    in_chans, *_ = input_size = tuple(cfg['input_size'])
    assert len(input_size) == 3
    assert len(cfg['mean']) == len(cfg['std']) == in_chans
    assert cfg.get('interpolation') and 0 < cfg.get('crop_pct', 0) <= 1
    assert cfg.get('license'), 'default cfg has no license'
    assert cfg.get('paper_ids') or cfg.get('paper_name'), 'default cfg has no paper'
    assert model.num_classes >= 0 and model.num_features > 0 and model.head_hidden_size > 0

    first_convs = (cfg['first_conv'],) if isinstance(cfg['first_conv'], str) else cfg['first_conv']
    for fc in first_convs:
        conv = model.get_submodule(fc)
        assert isinstance(conv, nn.Conv2d) and conv.in_channels == in_chans, f'first_conv {fc} is not the stem'
    if cfg.get('num_classes'):
        assert model.get_submodule(cfg['classifier']) is model.get_classifier()
        assert model.get_classifier().out_features == cfg['num_classes'] == model.num_classes

    info = model.feature_info
    assert len(info) >= 3
    reductions = [f['reduction'] for f in info]
    assert reductions == sorted(reductions)
    for f in info:
        model.get_submodule(f['module'])
    assert info[-1]['num_chs'] == model.num_features

    x = torch.empty(1, *input_size, device='meta')
    feats = model.forward_features(x)
    unpooled = _feature_shape(model, 1, input_size)  # the features, and what global_pool='' leaves of them
    assert tuple(feats.shape) == unpooled
    if cfg.get('pool_size') is not None:
        assert tuple(feats.shape[-2:]) == tuple(cfg['pool_size']), f'pool_size {cfg["pool_size"]} != {feats.shape}'
    pre = model.forward_head(feats, pre_logits=True)
    assert pre.shape == (1, model.head_hidden_size)
    assert model(x).shape == (1, model.num_classes or model.head_hidden_size)

    model.reset_classifier(0)
    assert model.num_classes == 0
    assert model(x).shape == pre.shape
    model.reset_classifier(0, '')
    assert tuple(model(x).shape) == unpooled
    model = _create_meta(name, num_classes=0, global_pool='')
    assert tuple(model(x).shape) == unpooled


@pytest.mark.parametrize('name', CLASSIFIERS)
def test_meta_shapes(name):
    """Every model, at its default size and at one that is a multiple of the stride only: intermediates and
    output shapes (on the meta device, so the largest models are covered too)."""
    model = _create_meta(name)
    for size in (tuple(model.pretrained_cfg['input_size']), _odd_input_size(model)):
        x = torch.empty(BATCH, *size, device='meta')
        final, inter = model.forward_intermediates(x)
        assert len(inter) == len(model.feature_info)
        for f, t in zip(model.feature_info, inter):
            assert tuple(t.shape) == (BATCH, f['num_chs'], *(math.ceil(s / f['reduction']) for s in size[1:]))
        assert tuple(final.shape) == _feature_shape(model, BATCH, size)
        assert model(x).shape == (BATCH, model.num_classes or model.head_hidden_size)


# --------------------------------------------------------------------------------------------------------------
# Real weights (models up to MAX_REAL_PARAMS)


def test_forward(model):
    x = torch.randn(BATCH, *_input_size(model, FWD_SIZE))
    with torch.no_grad():
        out = model(x)
    assert out.shape == (BATCH, model.num_classes or model.head_hidden_size)
    assert torch.isfinite(out).all()


def test_backward(pristine):
    name = pristine.pretrained_cfg['architecture']
    model = timm.create_model(name, num_classes=42).train()
    x = torch.randn(BATCH, *_input_size(model, BWD_SIZE))
    out = model(x)
    assert out.shape == (BATCH, 42)
    out.mean().backward()
    _assert_every_param_has_grad(model)


def test_odd_input_size(model):
    """A multiple of the total stride but not of the windows: eval and train (with every gradient)."""
    size = _odd_input_size(model)
    x = torch.randn(BATCH, *size)
    with torch.no_grad():
        out = model(x)
        feats = model.forward_features(x)
    assert out.shape == (BATCH, model.num_classes or model.head_hidden_size) and torch.isfinite(out).all()
    assert tuple(feats.shape) == _feature_shape(model, BATCH, size)
    model.train()
    out = model(x)
    out.mean().backward()
    assert torch.isfinite(out).all()
    _assert_every_param_has_grad(model)


def test_features_only(pristine):
    name = pristine.pretrained_cfg['architecture']
    size = _input_size(pristine, FEAT_SIZE)
    x = torch.randn(BATCH, *size)
    # timm's token models (ViTs) give features through forward_intermediates only ('getter'), not as a module list
    tokens = pristine.pretrained_cfg.get('pool_size') is None
    for feature_cls in ('getter',) if tokens else ('list', 'getter'):
        torch.manual_seed(0)  # the seed `pristine` was built with: the same weights
        feat_model = timm.create_model(name, features_only=True, feature_cls=feature_cls).eval()
        # the model's default out_indices: every stage for hierarchical models, the last blocks for ViT-style ones
        taken = list(feat_model.feature_info.out_indices)
        expected = [pristine.feature_info[i] for i in taken]
        assert feat_model.feature_info.channels() == [f['num_chs'] for f in expected]
        assert feat_model.feature_info.reduction() == [f['reduction'] for f in expected]
        with torch.no_grad():
            outs = feat_model(x)
            inter = pristine.forward_intermediates(x, indices=taken, intermediates_only=True)
        assert len(outs) == len(expected)
        for o, t, f in zip(outs, inter, expected):
            assert tuple(o.shape) == (BATCH, f['num_chs'], *(math.ceil(s / f['reduction']) for s in size[1:]))
            torch.testing.assert_close(o, t, msg=f'{feature_cls} features differ from forward_intermediates')


def test_forward_intermediates(model):
    size = _input_size(model, FEAT_SIZE)
    x = torch.randn(BATCH, *size)
    n = len(model.feature_info)
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        feats = model.forward_features(x)
        torch.testing.assert_close(final, feats)
        assert len(inter) == n
        for t, f in zip(inter, model.feature_info):
            assert tuple(t.shape) == (BATCH, f['num_chs'], *(math.ceil(s / f['reduction']) for s in size[1:]))

        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        assert len(last_two) == 2
        torch.testing.assert_close(last_two[-1], inter[-1])
        early = model.forward_intermediates(x, indices=[1], stop_early=True, intermediates_only=True)
        torch.testing.assert_close(early[0], inter[1])

        model.set_grad_checkpointing()
        final_ckpt, _ = model.forward_intermediates(x)
        torch.testing.assert_close(final_ckpt, final, rtol=1e-4, atol=1e-5)
        model.set_grad_checkpointing(False)

        kept = model.prune_intermediate_layers(indices=[1], prune_head=True)
        assert list(kept) == [1]
        pruned = model.forward_intermediates(x, indices=[1], intermediates_only=True)
        torch.testing.assert_close(pruned[0], inter[1])
        # the pruned head neither pools nor classifies: the pruned model gives the last kept block's output
        out = model(x)
        if out.ndim == 3:  # tokens: the same values as the intermediate, which is their NCHW view without prefix
            assert out.shape[1] == getattr(model, 'num_prefix_tokens', 0) + inter[1].shape[-2] * inter[1].shape[-1]
        else:
            assert out.shape == inter[1].shape


def test_reset_classifier(model):
    x = torch.randn(BATCH, *_input_size(model, BWD_SIZE))
    with torch.no_grad():
        pre = model.forward_head(model.forward_features(x), pre_logits=True)
    model.reset_classifier(0)
    with torch.no_grad():
        torch.testing.assert_close(model(x), pre)
    model.reset_classifier(10)
    assert model.num_classes == 10
    assert model.get_classifier().weight.shape[0] == 10
    model.train()
    out = model(x)
    assert out.shape == (BATCH, 10)
    out.mean().backward()
    assert model.get_classifier().weight.grad is not None


def test_grad_checkpointing(costly_model):
    """Same outputs and gradients with and without gradient checkpointing (train mode, no stochastic layers)."""
    model = costly_model
    x = torch.randn(BATCH, *_input_size(model, COMPILE_SIZE))
    model.train()
    out = model(x)
    out.square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)

    model.set_grad_checkpointing(True)
    out_ckpt = model(x)
    out_ckpt.square().mean().backward()
    torch.testing.assert_close(out_ckpt, out)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], msg=f'gradient of {n} differs under checkpointing')


def test_torch_compile_fullgraph(costly_model):
    """No graph break anywhere (dynamo with the 'eager' backend: tracing only, no code generation)."""
    model = costly_model
    x = torch.randn(BATCH, *_input_size(model, COMPILE_SIZE))
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend='eager')
    try:
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), model(x))
    finally:
        torch._dynamo.reset()


def test_torch_export(costly_model):
    model = costly_model
    x = torch.randn(BATCH, *_input_size(model, COMPILE_SIZE))
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), model(x))


# --------------------------------------------------------------------------------------------------------------
# FX symbolic tracing (timm's FX feature extraction, torchvision's create_feature_extractor) and the input contract,
# on one model of every model class

FX_MODELS = [n for n in CLASS_REPRESENTATIVES if n in CLASSIFIERS]


@pytest.mark.parametrize('name', FX_MODELS)
def test_fx_trace(name):
    """timm's FX path traces the model (its notrace functions / modules as leaves) and computes the same logits."""
    from timm.layers import create_feature_extractor, get_graph_node_names

    torch.manual_seed(0)
    model = timm.create_model(name).eval()
    x = torch.randn(BATCH, *_input_size(model, COMPILE_SIZE))
    _, eval_nodes = get_graph_node_names(model)
    fx_model = create_feature_extractor(model, [eval_nodes[-1]])
    with torch.no_grad():
        torch.testing.assert_close(fx_model(x)[eval_nodes[-1]], model(x))


@pytest.mark.parametrize('name', FX_MODELS)
def test_input_contract(name):
    """Wrong rank, wrong channel count, an integer dtype, an empty batch and inputs smaller than the total stride are
    errors (zoo.errors.ModelInputError, a ValueError) naming the shape or dtype."""
    model = _create_meta(name)
    c, h, w = _input_size(model, COMPILE_SIZE)
    s = _stride(model)
    with torch.device('meta'):
        with pytest.raises(ValueError, match=rf'\(B, {c}, H, W\), got \(2, {c + 1}, {h}, {w}\)'):
            model(torch.empty(2, c + 1, h, w))
        with pytest.raises(ValueError, match=rf'got \({c}, {h}, {w}\)'):
            model(torch.empty(c, h, w))
        with pytest.raises(ModelInputError, match='floating-point .* got torch.uint8'):
            model(torch.empty(2, c, h, w, dtype=torch.uint8))
        with pytest.raises(ModelInputError, match=rf'batch is empty \(shape \(0, {c}, {h}, {w}\)\)'):
            model(torch.empty(0, c, h, w))
        if not model.pretrained_cfg.get('fixed_input_size', False):
            with pytest.raises(ValueError, match=rf'input {s - 1}x{w} is smaller .* at least {s}'):
                model(torch.empty(2, c, s - 1, w))


# --------------------------------------------------------------------------------------------------------------
# Attention lives in ops/: model files hold architecture only

# every family file, and the blocks families share (zoo/layers): architecture only
_ZOO = Path(zoo.__file__).parent
FAMILY_FILES = sorted(p for folder in ('models', 'layers') for p in (_ZOO / folder).glob('*.py')
                      if not p.name.startswith('_'))
# Names whose presence in a model file means attention math written there instead of in ops/.
ATTENTION_MATH = {'softmax', 'log_softmax', 'einsum', 'matmul', 'bmm', 'baddbmm', 'scaled_dot_product_attention',
                  'flex_attention'}


@pytest.mark.parametrize('path', FAMILY_FILES, ids=lambda p: f'{p.parent.name}/{p.name}')
def test_model_file_has_no_attention_math(path):
    tokens = list(tokenize.generate_tokens(io.StringIO(path.read_text()).readline))
    names = {t.string for t in tokens if t.type == tokenize.NAME}
    assert not names & ATTENTION_MATH, f'attention math in {path}: {sorted(names & ATTENTION_MATH)}'
    for prev, tok in zip(tokens, tokens[1:]):
        if tok.type == tokenize.OP and tok.string in ('@', '@='):
            # a decorator's @ starts a logical line; anything else is a matrix product
            assert prev.type in (tokenize.NEWLINE, tokenize.NL, tokenize.INDENT, tokenize.DEDENT), (
                f'matrix product at line {tok.start[0]} of {path}')


@pytest.mark.parametrize('name', sorted(ALL_REPRESENTATIVES))
def test_backend_choice_reaches_the_model(name, monkeypatch):
    """The model's attention goes through ops/: an unknown backend named in the environment is an error there."""
    torch.manual_seed(0)
    model = timm.create_model(name).eval()
    if name in CLASSIFIERS:
        size = _input_size(model, COMPILE_SIZE)
    else:
        c, h, w = model.pretrained_cfg['input_size']
        size = c, min(h, 32), min(w, 32)
    x = torch.randn(1, *size)
    monkeypatch.setenv(ops.ENV_BACKEND, 'no_such_backend')
    with pytest.raises(ValueError, match='no_such_backend'), torch.no_grad():
        model(x)
