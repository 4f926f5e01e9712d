"""Recipes: YAML files validated against a schema of nested dataclasses.

A recipe is read with :func:`load_recipe` (or :func:`recipe_from_dict`); every key must belong to the schema
below, so a misspelled key is an error that names it and lists the valid keys of its section, and a value of
the wrong type is an error naming the key and the expected type. Command-line overrides use one form,
``--set section.key=value`` (the value is parsed as YAML: ``--set optim.lr=1e-3``,
``--set model.kwargs.depths=[1,1,2,1]``, ``--set ema.enabled=true``) and go through the same validation.

The embedded default (``python train.py`` with no argument) is :data:`DEFAULT_RECIPE`.
"""
from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

__all__ = [
    "DEFAULT_RECIPE", "IMPLEMENTED_TASKS", "TASKS", "RecipeError",
    "Recipe", "ModelConfig", "DataConfig", "AugConfig", "OptimConfig", "SchedConfig", "EmaConfig", "TrainConfig",
    "SrConfig",
    "apply_overrides", "load_recipe", "recipe_from_dict", "recipe_to_dict", "recipe_to_yaml",
]

# Repository root / configs / cls / digits_davit.yaml; the recipe `python train.py` runs without arguments.
DEFAULT_RECIPE = Path(__file__).resolve().parents[2] / "configs" / "cls" / "digits_davit.yaml"

TASKS = ("cls", "seg", "sr")
IMPLEMENTED_TASKS = ("cls", "sr")
SR_DATASETS = ("sr_folder", "sr_skimage")


class RecipeError(ValueError):
    """A recipe that does not match the schema: unknown key, wrong type, bad value."""


@dataclass
class ModelConfig:
    """What `timm.create_model` builds: ``create_model(name, num_classes=..., **kwargs)``."""
    name: str = "zoo_davit_tiny"
    kwargs: dict[str, Any] = field(default_factory=dict)  # architecture arguments, exported as `model_args`
    pretrained: bool = False
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    grad_checkpointing: bool = False
    channels_last: bool = False
    compile: bool = False
    init_checkpoint: str | None = None  # start from these weights: export folder, training checkpoint or BasicSR .pth
    init_strict: bool = True  # every weight of the model must be in init_checkpoint (false: missing ones keep init)


@dataclass
class DataConfig:
    """Data set and loaders. `digits`: scikit-learn's digits with a seeded stratified held-out split.
    `folder`: an ImageFolder tree ``root/<train_split>/<class>/*`` and ``root/<val_split>/<class>/*``.
    `shards`: webdataset-style tar shards ``root/<split>-*.tar`` or ``root/<split>/*.tar`` (zoo.data.shards).
    `batch_size` is per process (timm's convention): the global batch is batch_size x processes x
    optim.accum_steps. Super-resolution (task: sr) reads `sr_folder` (HR folders, optionally paired LR folders)
    or `sr_skimage` (scikit-image's bundled photographs); see section `sr`; `root` then prefixes relative sr paths."""
    name: Literal["digits", "folder", "shards", "sr_folder", "sr_skimage"] = "digits"
    root: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    test_fraction: float = 0.2  # digits: held-out fraction (stratified)
    split_seed: int = 0  # digits: the split's seed, independent of the training seed
    img_size: int = 32  # model input size (digits are upscaled from 8x8 to this)
    train_subset: int | None = None  # train on the first N training images only (quick runs, tests)
    batch_size: int = 64
    eval_batch_size: int = 256
    num_workers: int = 0
    repeated_aug: int = 1  # repeated augmentation (DeiT's RASampler): each sample this many times per epoch
    mean: tuple[float, ...] | None = None  # None: the model's pretrained_cfg
    std: tuple[float, ...] | None = None
    interpolation: str | None = None
    crop_pct: float | None = None


@dataclass
class AugConfig:
    """Training augmentation (`timm.data.create_transform`), mixup / cutmix (`timm.data.Mixup`), smoothing."""
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    color_jitter: float = 0.0
    auto_augment: str | None = None
    re_prob: float = 0.0  # random erasing probability (timm.data.RandomErasing)
    re_mode: Literal["const", "rand", "pixel"] = "pixel"  # what erased pixels become (timm train.py: pixel)
    mixup: float = 0.0  # mixup alpha; mixup or cutmix > 0 turns timm.data.Mixup on
    cutmix: float = 0.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    smoothing: float = 0.1


@dataclass
class OptimConfig:
    """`timm.optim.create_optimizer_v2`; the model's `no_weight_decay()` parameters get no weight decay."""
    opt: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.05
    momentum: float = 0.9
    layer_decay: float | None = None  # layer-wise lr decay through the model's group_matcher
    betas: tuple[float, float] | None = None  # Adam-family betas (null: the optimizer's default)
    clip_grad: float | None = None
    clip_mode: Literal["norm", "value", "agc"] = "norm"
    accum_steps: int = 1
    lr_base_batch: int | None = None  # lr is for this global batch; scaled linearly to the run's global batch


@dataclass
class SchedConfig:
    """`timm.scheduler.create_scheduler_v2`; `step_on_epochs: false` updates the lr every optimizer step.
    The schedules offered are those fully set by these keys (plateau would need a metric). `multistep`
    multiplies the lr by `decay_rate` at each of `milestones` (epochs; with ``step_on_epochs: false`` from the
    optimizer step ``milestone x steps per epoch`` on, counted as BasicSR's MultiStepLR counts iterations)."""
    sched: Literal["cosine", "tanh", "poly", "constant", "multistep"] = "cosine"
    warmup_epochs: int = 0
    warmup_lr: float = 1e-5
    min_lr: float = 1e-6
    step_on_epochs: bool = False
    milestones: tuple[int, ...] = ()  # multistep: decay epochs, increasing
    decay_rate: float = 0.1  # multistep: lr factor at each milestone


@dataclass
class EmaConfig:
    """`timm.utils.ModelEmaV3`; when enabled the EMA weights are evaluated and exported."""
    enabled: bool = False
    decay: float = 0.9998
    warmup: bool = False


@dataclass
class TrainConfig:
    epochs: int = 10
    amp: Literal["bf16", "fp16"] | None = None
    threads: int | None = None  # CPU intra-op threads (torch.set_num_threads) for the run; null: torch's default
    eval_every: int = 1  # evaluate every N epochs (and always after the last)
    checkpoint_every: int = 1  # write `checkpoint-last.pth` every N epochs (and always after the last)
    checkpoint_every_steps: int | None = None  # also every N optimizer steps inside an epoch (exact resume there)
    parallel: Literal["ddp", "fsdp"] = "ddp"  # under torchrun: DistributedDataParallel or FSDP2 fully_shard
    log_every: int = 1  # one log.jsonl record every N optimizer steps
    tensorboard: bool = False  # also TensorBoard event files in OUTPUT/tensorboard (pip install tensorboard)
    plot: bool = True  # OUTPUT/curves.png at the end when matplotlib is installed


@dataclass
class SrConfig:
    """Super-resolution data and evaluation (task: sr), as BasicSR's PairedImageDataset: HR / LR folders matched by
    name (``filename_tmpl`` maps an HR file stem to its LR stem, e.g. ``'{}x2'``), or HR only with the LR made on
    the fly by MATLAB-style bicubic downscaling (HR first cropped to a multiple of the scale); training pairs are
    random ``gt_size`` HR crops (``gt_size / scale`` LR) with flips / 90-degree rotations; validation scores whole
    images (PSNR / SSIM on Y, border crop = scale). `iters_per_epoch`: one epoch is this many optimizer steps (the
    data set is cycled to fill it, as BasicSR's enlarged sampler), so schedules in iterations map onto epochs."""
    scale: int = 4
    gt_size: int = 256  # HR training patch; the LR patch is gt_size / scale
    train_hr: str | None = None  # sr_folder: HR training images
    train_lr: str | None = None  # sr_folder: LR training images (null: bicubic from train_hr)
    val_hr: str | None = None  # sr_folder: HR validation images
    val_lr: str | None = None  # sr_folder: LR validation images (null: bicubic from val_hr)
    filename_tmpl: str = "{}"  # LR file stem from the HR stem (BasicSR's filename_tmpl)
    use_hflip: bool = True
    use_rot: bool = True  # vertical flip and transpose (rotations by 90 degrees)
    iters_per_epoch: int | None = None  # null: one pass over the training images per epoch
    skimage_train: tuple[str, ...] = ("astronaut", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")
    skimage_val: tuple[str, ...] = ("chelsea", "coffee")
    val_tile: int | None = None  # validate tile by tile (LR pixels) for large images; null: whole images
    val_tile_overlap: int = 32


@dataclass
class Recipe:
    task: Literal["cls", "seg", "sr"] = "cls"
    name: str = "run"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    output: str = "output/run"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    aug: AugConfig = field(default_factory=AugConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sr: SrConfig = field(default_factory=SrConfig)


# ----------------------------------------------------------------------------------------------------------------
# YAML with `1e-3` read as a number: YAML 1.1 (PyYAML) reads an exponent without a dot as a string.

class _Loader(yaml.SafeLoader):
    pass


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+][0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def _yaml_load(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as e:
        raise RecipeError(f"{source} is not valid YAML: {e}") from None


# ----------------------------------------------------------------------------------------------------------------
# Validation

def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is type(None):
        return "null"
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0])}"
        return f"a list of {len(args)} values ({', '.join(_type_name(a) for a in args)})"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping (section)"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def _show(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _coerce(tp: Any, value: Any, key: str, source: str) -> Any:
    """`value` checked against the type hint `tp` (and lightly converted: int -> float, list -> tuple)."""
    origin = typing.get_origin(tp)
    bad = RecipeError(f"recipe key '{key}' in {source} must be {_type_name(tp)}, got {_show(value)}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise bad
        return _build(tp, value, key + ".", source)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise bad
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key, source)
            except RecipeError:
                pass
        raise bad
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise bad
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise bad
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            args = (args[0],) * len(value)
        elif len(args) != len(value):
            raise bad
        return tuple(_coerce(a, v, f"{key}[{i}]", source) for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise bad
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    raise TypeError(f"unsupported type hint {tp!r} for recipe key '{key}'")  # a schema bug, not a user error


def _build(cls: type, data: dict, prefix: str, source: str):
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in hints:
            section = f"section '{prefix[:-1]}'" if prefix else "the top level"
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise RecipeError(
                f"unknown recipe key '{prefix}{key}' in {source}{hint}; valid keys in {section}: {', '.join(valid)}")
    return cls(**{k: _coerce(hints[k], v, prefix + k, source) for k, v in data.items()})


def _check_values(recipe: Recipe, source: str) -> None:
    """Value checks the types alone cannot express."""
    def need(ok: bool, key: str, what: str, value: Any) -> None:
        if not ok:
            raise RecipeError(f"recipe key '{key}' in {source} must be {what}, got {value!r}")

    need(recipe.train.epochs >= 1, "train.epochs", "at least 1", recipe.train.epochs)
    need(recipe.train.eval_every >= 1, "train.eval_every", "at least 1", recipe.train.eval_every)
    need(recipe.train.checkpoint_every >= 1, "train.checkpoint_every", "at least 1", recipe.train.checkpoint_every)
    need(recipe.train.threads is None or recipe.train.threads >= 1, "train.threads", "null or at least 1",
         recipe.train.threads)
    need(recipe.data.batch_size >= 1, "data.batch_size", "at least 1", recipe.data.batch_size)
    need(recipe.data.eval_batch_size >= 1, "data.eval_batch_size", "at least 1", recipe.data.eval_batch_size)
    need(recipe.data.img_size >= 1, "data.img_size", "at least 1", recipe.data.img_size)
    need(recipe.data.num_workers >= 0, "data.num_workers", "0 or more", recipe.data.num_workers)
    need(0.0 < recipe.data.test_fraction < 1.0, "data.test_fraction", "between 0 and 1", recipe.data.test_fraction)
    need(recipe.data.train_subset is None or recipe.data.train_subset >= 1, "data.train_subset",
         "null or at least 1", recipe.data.train_subset)
    mixing = recipe.aug.mixup > 0 or recipe.aug.cutmix > 0
    need(not mixing or recipe.data.batch_size % 2 == 0, "data.batch_size",
         "even when aug.mixup or aug.cutmix is on (timm's Mixup pairs the batch)", recipe.data.batch_size)
    need(recipe.optim.lr > 0, "optim.lr", "positive", recipe.optim.lr)
    need(recipe.optim.accum_steps >= 1, "optim.accum_steps", "at least 1", recipe.optim.accum_steps)
    need(0.0 <= recipe.aug.smoothing < 1.0, "aug.smoothing", "in [0, 1)", recipe.aug.smoothing)
    need(0.0 <= recipe.ema.decay < 1.0, "ema.decay", "in [0, 1)", recipe.ema.decay)
    need(recipe.sched.warmup_epochs >= 0, "sched.warmup_epochs", "0 or more", recipe.sched.warmup_epochs)
    need(recipe.data.name not in ("folder", "shards") or bool(recipe.data.root), "data.root",
         ("the ImageFolder root directory" if recipe.data.name == "folder" else "the tar shards' root directory")
         + f" when data.name is {recipe.data.name!r}", recipe.data.root)
    need(recipe.data.repeated_aug >= 1, "data.repeated_aug", "at least 1", recipe.data.repeated_aug)
    need(recipe.optim.lr_base_batch is None or recipe.optim.lr_base_batch >= 1, "optim.lr_base_batch",
         "null or at least 1", recipe.optim.lr_base_batch)
    need(recipe.train.checkpoint_every_steps is None or recipe.train.checkpoint_every_steps >= 1,
         "train.checkpoint_every_steps", "null or at least 1", recipe.train.checkpoint_every_steps)
    need(recipe.train.log_every >= 1, "train.log_every", "at least 1", recipe.train.log_every)
    need(recipe.optim.clip_grad is None or recipe.optim.clip_grad > 0, "optim.clip_grad", "null or positive",
         recipe.optim.clip_grad)
    need(recipe.optim.layer_decay is None or 0.0 < recipe.optim.layer_decay <= 1.0, "optim.layer_decay",
         "null or in (0, 1]", recipe.optim.layer_decay)
    for key in ("mean", "std"):
        value = getattr(recipe.data, key)
        need(value is None or len(value) in (1, 3), f"data.{key}", "null or a list of 1 or 3 numbers", value)
    m = recipe.sched.milestones
    need(all(x >= 1 for x in m) and list(m) == sorted(set(m)), "sched.milestones",
         "strictly increasing positive epochs", list(m))
    need(recipe.sched.sched != "multistep" or bool(m), "sched.milestones", "set when sched.sched is 'multistep'",
         list(m))
    need(recipe.sched.decay_rate > 0, "sched.decay_rate", "positive", recipe.sched.decay_rate)
    need(recipe.optim.betas is None or all(0.0 <= b < 1.0 for b in recipe.optim.betas), "optim.betas",
         "null or two numbers in [0, 1)", recipe.optim.betas)
    need(not recipe.model.init_checkpoint or not recipe.model.pretrained, "model.init_checkpoint",
         "null when model.pretrained is true (one starting point)", recipe.model.init_checkpoint)
    _check_sr(recipe, need)
    need(recipe.device == "auto" or re.fullmatch(r"cpu|cuda(:\d+)?|mps", recipe.device) is not None,
         "device", "'auto', 'cpu', 'cuda' or 'cuda:N'", recipe.device)


def _check_sr(recipe: Recipe, need) -> None:
    sr, name = recipe.sr, recipe.data.name
    if recipe.task == "sr":
        need(name in SR_DATASETS, "data.name", f"one of {', '.join(SR_DATASETS)} when task is 'sr'", name)
    else:
        need(name not in SR_DATASETS, "data.name", f"not an SR data set when task is {recipe.task!r}", name)
        need(sr.iters_per_epoch is None, "sr.iters_per_epoch", "null unless task is 'sr'", sr.iters_per_epoch)
        return
    need(sr.scale >= 1, "sr.scale", "at least 1", sr.scale)
    need(sr.gt_size >= sr.scale and sr.gt_size % sr.scale == 0, "sr.gt_size",
         f"a positive multiple of sr.scale ({sr.scale})", sr.gt_size)
    need(sr.iters_per_epoch is None or sr.iters_per_epoch >= 1, "sr.iters_per_epoch", "null or at least 1",
         sr.iters_per_epoch)
    need("{}" in sr.filename_tmpl, "sr.filename_tmpl", "a template containing '{}' (the HR file stem)",
         sr.filename_tmpl)
    need(sr.val_tile is None or sr.val_tile >= 1, "sr.val_tile", "null or at least 1", sr.val_tile)
    need(sr.val_tile_overlap >= 0, "sr.val_tile_overlap", "0 or more", sr.val_tile_overlap)
    if name == "sr_folder":
        need(bool(sr.train_hr), "sr.train_hr", "the HR training folder when data.name is 'sr_folder'", sr.train_hr)
        need(bool(sr.val_hr), "sr.val_hr", "the HR validation folder when data.name is 'sr_folder'", sr.val_hr)
    else:
        need(bool(sr.skimage_train), "sr.skimage_train", "at least one scikit-image photograph", sr.skimage_train)
        need(bool(sr.skimage_val), "sr.skimage_val", "at least one scikit-image photograph", sr.skimage_val)
        overlap = sorted(set(sr.skimage_train) & set(sr.skimage_val))
        need(not overlap, "sr.skimage_val", "photographs not in sr.skimage_train", overlap)
    need(recipe.train.parallel == "ddp", "train.parallel", "'ddp' when task is 'sr'", recipe.train.parallel)
    need(recipe.aug.mixup == 0 and recipe.aug.cutmix == 0, "aug.mixup / aug.cutmix", "0 when task is 'sr'",
         (recipe.aug.mixup, recipe.aug.cutmix))


def recipe_from_dict(data: Any, source: str = "recipe") -> Recipe:
    """A validated :class:`Recipe` from a plain mapping (e.g. parsed YAML); `source` names it in errors."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{source} must be a mapping of recipe keys, got {_show(data)}")
    recipe = _build(Recipe, data, "", source)
    _check_values(recipe, source)
    return recipe


def _parse_override(item: str) -> tuple[list[str], Any]:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise RecipeError(f"override {item!r} is not of the form section.key=value (e.g. optim.lr=1e-3)")
    return key.split("."), _yaml_load(text, f"the value of override {item!r}")


def apply_overrides(data: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """A copy of the raw recipe mapping `data` with ``section.key=value`` overrides applied (not yet validated;
    :func:`recipe_from_dict` then reports unknown keys and bad types as for a file)."""
    import copy
    data = copy.deepcopy(data) if data else {}
    for item in overrides:
        path, value = _parse_override(item)
        node = data
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                section = ".".join(path[:i + 1])
                raise RecipeError(f"override {item!r}: '{section}' is a value ({child!r}), not a section")
            node = child
        node[path[-1]] = value
    return data


def load_recipe(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """The validated recipe in the YAML file `path` (the embedded default when None), with `overrides`."""
    path = Path(path) if path is not None else DEFAULT_RECIPE
    if not path.is_file():
        raise RecipeError(f"recipe file {str(path)!r} does not exist")
    data = _yaml_load(path.read_text(), f"recipe {str(path)!r}")
    if data is not None and not isinstance(data, dict):
        raise RecipeError(f"recipe {str(path)!r} must be a mapping of recipe keys, got {_show(data)}")
    source = f"recipe {str(path)!r}" + (" with --set overrides" if overrides else "")
    return recipe_from_dict(apply_overrides(data or {}, overrides), source)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def recipe_to_dict(recipe: Recipe) -> dict:
    """The recipe as plain dicts / lists / scalars (YAML, JSON and `torch.load(weights_only=True)` safe)."""
    return _plain(dataclasses.asdict(recipe))


def recipe_to_yaml(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False, default_flow_style=None)
