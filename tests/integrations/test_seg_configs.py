"""configs/seg recipes: each loads with mmengine, builds its mmseg segmentor over the zoo backbone, and has the
published parameter count; the smallest recipe of each family runs a small forward.

Default tier: the smallest recipe per backbone line (:func:`_smallest`; forward at 64x64). The rest are ``slow``
(building every segmentor, up to 238M parameters, on the CPU takes minutes).
"""
import ast
import math
from pathlib import Path

import pytest
import torch

pytest.importorskip("mmseg.models", reason="mmsegmentation (with compiled mmcv ops) is not installed")

import timm  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.model import revert_sync_batchnorm  # noqa: E402
from mmengine.optim import build_optim_wrapper  # noqa: E402
from mmengine.registry import PARAM_SCHEDULERS, DefaultScope  # noqa: E402
from mmseg.registry import MODELS  # noqa: E402

import zoo  # noqa: E402
import zoo.integrations.mmseg  # noqa: E402,F401  (registers ZooBackbone)
from tests.models.param_counts import PARAM_COUNTS  # noqa: E402

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "seg"
# configs/seg/demo belongs to the training demo (tested with it)
CONFIGS = sorted(p for p in CONFIG_DIR.glob("*/*.py") if p.parent.name not in ("_base_", "demo"))


def _model_name(path: Path) -> str:
    """The recipe's ``model.backbone.model_name``, read from its source: every recipe names its own backbone."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.keyword) and node.arg == "model_name":
            return ast.literal_eval(node.value)
    raise ValueError(f"{path} sets no model.backbone.model_name; every recipe names its own backbone")


def _smallest(paths: list[Path]) -> set[str]:
    """The recipe names built in the default tier and run forward: per backbone line (the name's backbone part
    without its size: ``upernet_dinat_s_tiny_ade20k_...`` -> ``dinat_s``), the recipe whose backbone has the
    fewest parameters (its classification model's official count); on a tie (one backbone under two heads) the
    first name alphabetically."""
    lines: dict[str, list[Path]] = {}
    for path in paths:
        backbone = path.stem.split("_ade20k_")[0].split("_", 1)[1]
        lines.setdefault(backbone.rsplit("_", 1)[0], []).append(path)
    return {min(group, key=lambda p: (PARAM_COUNTS[_model_name(p)], p.stem)).stem for group in lines.values()}


SMALLEST = _smallest(CONFIGS)

# Each recipe states its own sizes as top-level variables that mmseg ignores:
# - ``published_params = dict(millions=..., rounding=..., source=...)``: the whole segmentor's parameter count as
#   published, in millions; ``round``: the number is the count rounded to 1M (|count - ref| <= 0.5M), ``trunc``:
#   the count truncated to 0.1M; ``None`` where the official repository publishes none (with a comment saying so).
# - optionally ``official_backbone_params = dict(count=..., source=...)``: the official segmentation backbone built
#   from the official code with the recipe's arguments (the repository's mmseg backbone file with its registry
#   imports stubbed; counted, not published): the zoo backbone (with its output norms) must have exactly as many.
ROUNDING = ("round", "trunc")


def _top_level_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets if isinstance(t, ast.Name)}


def _param(path: Path):
    marks = []
    if path.stem not in SMALLEST:
        marks.append(pytest.mark.slow)
    return pytest.param(path, id=path.stem, marks=marks)


@pytest.fixture(scope="module")
def build():
    """build(path) -> (config, segmentor); the default-tier recipes are built once and shared by the tests."""
    cache = {}

    def _build(path: Path):
        if path.stem in cache:
            return cache[path.stem]
        cfg = Config.fromfile(str(path))
        torch.manual_seed(0)
        with DefaultScope.overwrite_default_scope(cfg.default_scope):  # as the Runner sets it
            built = (cfg, MODELS.build(cfg.model))
        if path.stem in SMALLEST:
            cache[path.stem] = built
        return built

    yield _build
    cache.clear()


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _head_in_channels(cfg) -> list:
    return list(cfg.model.neck.in_channels if "neck" in cfg.model else cfg.model.decode_head.in_channels)


def test_every_recipe_states_its_published_size():
    """In the recipe's own file: a sibling's value, inherited through ``_base_``, would be checked silently."""
    missing = [p.stem for p in CONFIGS if "published_params" not in _top_level_names(p)]
    assert not missing, f"recipes without their own published_params (None where nothing is published): {missing}"


@pytest.mark.parametrize("path", [_param(p) for p in CONFIGS])
def test_config_builds_with_published_size(path, build):
    cfg, segmentor = build(path)
    bcfg = cfg.model.backbone
    assert bcfg.type == "ZooBackbone"
    assert bcfg.model_name in zoo.list_models(), bcfg.model_name
    assert cfg.train_cfg.max_iters == int(path.stem.rsplit("_", 1)[1].rstrip("k")) * 1000
    crop = int(path.stem.split("_ade20k_")[1].split("x")[0])
    assert tuple(cfg.model.data_preprocessor.size) == (crop, crop)
    assert tuple(cfg.train_dataloader.dataset.pipeline[3].crop_size) == (crop, crop)  # RandomCrop

    backbone = segmentor.backbone
    assert backbone.out_channels == _head_in_channels(cfg)
    assert backbone.strides == [4, 8, 16, 32]

    # The backbone is the classification model without its classifier and final norm, plus one LayerNorm per
    # returned map where the recipe asks for the official per-output norms: same parameter names, same sizes.
    with torch.device("meta"):  # shapes only: skips the initialisation
        cls_model = timm.create_model(bcfg.model_name, **bcfg.model_kwargs)
    body = {n: p.numel() for n, p in cls_model.named_parameters() if n.split(".")[0] not in ("head", "norm")}
    got = {n[len("model."):]: p.numel() for n, p in backbone.named_parameters() if n.startswith("model.")}
    assert got == body
    out_norm = 2 * sum(backbone.out_channels) if bcfg.out_norm else 0
    assert _count(backbone) == sum(body.values()) + out_norm
    official = cfg.get("official_backbone_params")
    if official is not None:
        assert _count(backbone) == official["count"], f"{_count(backbone)} params, {official['source']} has {official}"

    total = _count(segmentor) / 1e6
    if cfg.published_params is None:
        return
    ref, rule, source = (cfg.published_params[k] for k in ("millions", "rounding", "source"))
    assert rule in ROUNDING, f"published_params rounding {rule!r}, expected one of {ROUNDING}"
    if rule == "round":
        assert abs(total - ref) <= 0.5, f"{total:.3f}M params, {source} states {ref}M"
    else:
        assert math.floor(total * 10) / 10 == pytest.approx(ref), f"{total:.3f}M params, {source} states {ref}M"


# DiNAT / DiNAT_s run NAT's code (nat_mini is forwarded in the default tier) with dilations up to 16, which pads
# every stage-1 map to 112x112 (NATTEN 0.14 semantics): seconds on the CPU, so their forwards are `slow`.
SLOW_FORWARD = {"upernet_dinat_mini_ade20k_512x512_160k", "upernet_dinat_s_tiny_ade20k_512x512_160k"}


def _forward_param(path: Path):
    param = _param(path)
    if path.stem in SLOW_FORWARD:
        return pytest.param(*param.values, id=param.id, marks=[*param.marks, pytest.mark.slow])
    return param


@pytest.mark.parametrize("path", [_forward_param(p) for p in CONFIGS if p.stem in SMALLEST])
def test_smallest_forward(path, build):
    _, segmentor = build(path)
    segmentor = revert_sync_batchnorm(segmentor).eval()
    feats = []
    hook = segmentor.backbone.register_forward_hook(lambda m, i, o: feats.extend(o))
    try:
        with torch.no_grad():
            logits = segmentor(torch.randn(1, 3, 64, 64), mode="tensor")
    finally:
        hook.remove()
    assert [tuple(f.shape) for f in feats] == [(1, c, 64 // s, 64 // s) for c, s in
                                               zip(segmentor.backbone.out_channels, (4, 8, 16, 32))]
    assert tuple(logits.shape) == (1, 150, 16, 16)
    assert torch.isfinite(logits).all()


def _groups(cfg, segmentor):
    """{parameter name: (weight decay, lr)} from the recipe's optim_wrapper."""
    ocfg = cfg.optim_wrapper.copy()
    ocfg["type"] = "OptimWrapper"  # AmpOptimWrapper needs a GPU; the parameter groups are the same
    ocfg.pop("loss_scale", None)
    wrapper = build_optim_wrapper(segmentor, ocfg)
    by_id = {id(p): n for n, p in segmentor.named_parameters()}
    return {by_id[id(p)]: (g["weight_decay"], g["lr"]) for g in wrapper.optimizer.param_groups for p in g["params"]}


# (recipe, {parameter: (weight decay, lr)}): the official no-decay keys must hit the zoo's names as they hit the
# official ones.
PARAMWISE = [
    ("upernet_nat_mini_ade20k_512x512_160k", {  # relative position biases and every norm exempt
        "backbone.model.stages.0.blocks.0.attn.rpb": (0.0, 6e-5),
        "backbone.model.stages.1.downsample.norm.weight": (0.0, 6e-5),
        "backbone.out_norms.3.bias": (0.0, 6e-5),
        "backbone.model.stages.0.blocks.0.attn.qkv.weight": (0.01, 6e-5),
        "decode_head.conv_seg.weight": (0.01, 6e-5)}),
    ("upernet_agent_swin_t_ade20k_512x512_160k", {  # agent biases exempt
        "backbone.model.layers.0.blocks.0.attn.an_bias": (0.0, 6e-5),
        "backbone.model.layers.0.blocks.0.attn.wa_bias": (0.0, 6e-5),
        "backbone.model.layers.3.blocks.0.attn.relative_position_bias_table": (0.0, 6e-5),
        "backbone.model.layers.0.blocks.0.attn.qkv.weight": (0.01, 6e-5)}),
    ("fpn_emo2_1m_ade20k_512x512_160k", {  # every backbone norm exempt (all named `norm` there), head at 10x lr
        "backbone.model.stem.0.bn.weight": (0.0, 1.2e-4),
        "backbone.model.stages.2.blocks.0.conv_dw.bn.weight": (0.0, 1.2e-4),
        "backbone.model.stages.2.blocks.0.norm.weight": (0.0, 1.2e-4),
        "backbone.model.stages.2.blocks.0.attn.qk.weight": (0.05, 1.2e-4),
        "decode_head.conv_seg.weight": (0.05, 1.2e-3)}),
    # official stem (and BiFormer's downsampling) BatchNorms are unnamed Sequential members: "norm" misses them
    ("upernet_ravlt_s_ade20k_512x512_160k", {
        "backbone.model.stem.norm1.weight": (0.01, 6e-5),
        "backbone.model.stages.1.downsample.norm.weight": (0.0, 6e-5),
        "backbone.model.stages.0.blocks.0.norm1.weight": (0.0, 6e-5),
        "backbone.out_norms.0.weight": (0.0, 6e-5),
        "backbone.model.stages.0.blocks.0.attn.qkvo.weight": (0.01, 6e-5)}),
    ("upernet_biformer_small_ade20k_512x512_160k", {
        "backbone.model.stem.norm1.weight": (0.01, 6e-5),
        "backbone.model.stages.1.downsample.norm.weight": (0.01, 6e-5),
        "backbone.model.stages.0.blocks.0.norm1.weight": (0.0, 6e-5),
        "backbone.out_norms.0.weight": (0.0, 6e-5)}),
]


@pytest.mark.parametrize("stem, expected", [
    pytest.param(s, e, id=s, marks=[] if s in SMALLEST else [pytest.mark.slow]) for s, e in PARAMWISE])
def test_paramwise_groups(stem, expected, build):
    cfg, segmentor = build(next(p for p in CONFIGS if p.stem == stem))
    groups = _groups(cfg, segmentor)
    for name, want in expected.items():
        assert groups[name] == pytest.approx(want), name


def _poly(base, t, total, power, eta_min=0.0):
    return (base - eta_min) * (1 - t / total) ** power + eta_min


def _warmup(t, iters, ratio):
    return ratio + (1 - ratio) * min(t, iters) / iters


# The official 0.x schedules (mmcv LrUpdaterHook: the regular lr of the whole run times the warmup factor), with
# one difference that the mmseg 1.x convention (`end=1500`, `end=max_iters`, as in mmseg's own configs) brings:
# mmengine's LinearLR / PolyLR span `end - begin - 1` steps, so they reach their final value one iteration before
# mmcv's hooks did (warmup lr at most 0.07 % higher); the formulas below use those spans.
SCHEDULES = [
    ("upernet_nat_mini_ade20k_512x512_160k",  # poly power 1, min_lr 0, linear warmup 1500 from 1e-6
     lambda t: _poly(6e-5, t, 160000 - 1, 1.0) * _warmup(t, 1500 - 1, 1e-6)),
    ("fpn_biformer_small_ade20k_512x512_80k",  # CosineAnnealing min_lr_ratio 1e-8, linear warmup 1000 from 0.1
     lambda t: (2e-12 + (2e-4 - 2e-12) * (1 + math.cos(math.pi * t / 80000)) / 2) * _warmup(t, 1000 - 1, 0.1)),
    ("fpn_litv2_small_ade20k_512x512_80k",  # poly power 0.9, min_lr 1e-6, no warmup
     lambda t: _poly(1e-4, t, 80000 - 1, 0.9, 1e-6)),
]


@pytest.mark.parametrize("stem, lr_at", [pytest.param(s, f, id=s) for s, f in SCHEDULES])
def test_schedule_matches_mmseg0x(stem, lr_at):
    """The recipes' chained mmengine schedulers multiply as mmcv's warmup did (checked over warmup and beyond)."""
    cfg = Config.fromfile(str(next(p for p in CONFIGS if p.stem == stem)))
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.optim_wrapper.optimizer.lr)
    scheds = [PARAM_SCHEDULERS.build(dict(s, optimizer=opt)) for s in cfg.param_scheduler]
    checks = {0, 1, 500, 999, 1000, 1001, 1499, 1500, 1501, 2999}
    for t in range(3000):
        if t in checks:
            assert opt.param_groups[0]["lr"] == pytest.approx(lr_at(t), rel=1e-5, abs=1e-15), t
        opt.step()
        for sched in scheds:
            sched.step()
