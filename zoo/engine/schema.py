"""The recipe schema: one dataclass per section, :class:`RecipeError`, and the YAML dialect of recipes and
``--set`` overrides.

This module sits below everything that reads a recipe (the shared set-up, the tasks, :mod:`zoo.engine.config`,
which validates recipes against this schema and asks the task registry about the ``task`` key), so each of them
can name the recipe's types without importing the validator.
"""
from __future__ import annotations

import re
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from zoo.errors import UserError

__all__ = [
    "DEFAULT_RECIPE", "AugConfig", "DataConfig", "EmaConfig", "ModelConfig", "OptimConfig", "Recipe", "RecipeError",
    "SchedConfig", "SrConfig", "TrainConfig", "load_yaml", "parse_override",
]

# Repository root / configs / cls / digits_davit.yaml; the recipe `python train.py` runs without arguments.
DEFAULT_RECIPE = Path(__file__).resolve().parents[2] / "configs" / "cls" / "digits_davit.yaml"


class RecipeError(UserError, ValueError):
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
    digits_labels: Literal["digit", "parity"] = "digit"  # digits: the digit, or even / odd (fine-tuning demo)
    skip_corrupt: bool = False  # folder: skip (and report) unreadable images instead of stopping the run
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
    task: str = "cls"  # a name in the task registry (zoo.engine.tasks)
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


def load_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as e:
        raise RecipeError(f"{source} is not valid YAML: {e}") from None


def parse_override(item: str) -> tuple[list[str], Any]:
    """``section.key=value`` as (key path, value parsed as YAML)."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise RecipeError(f"override {item!r} is not of the form section.key=value (e.g. optim.lr=1e-3)")
    return key.split("."), load_yaml(text, f"the value of override {item!r}")

