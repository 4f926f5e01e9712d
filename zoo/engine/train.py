"""Classification training loop, built from timm's factories; super-resolution (``task: sr``) runs through the same
loop with its own data (:mod:`zoo.data.sr`), L1 loss and PSNR / SSIM evaluation (:mod:`zoo.engine.sr`).

The model comes from ``timm.create_model`` (the engine knows models only by name), the optimizer from
``timm.optim.create_optimizer_v2`` (weight decay off for the model's ``no_weight_decay()`` parameters, optional
layer-wise lr decay through its ``group_matcher``), the schedule from ``timm.scheduler.create_scheduler_v2``
(warmup; updated per optimizer step or per epoch), transforms from ``timm.data.create_transform``, mixup /
cutmix from ``timm.data.Mixup``, losses from ``timm.loss``, EMA from ``timm.utils.ModelEmaV3``.

Reproducibility: the data order comes from ``(seed, epoch)``, each sample's augmentation from
``(seed, epoch, index)`` and each step's own randomness (drop path, mixup) from ``(seed, epoch, batch, rank)``
(:mod:`zoo.data.sampler`), so the computation depends neither on the number of loader workers nor on where the
run was stopped: a run resumed from a checkpoint written after any optimizer step computes exactly what the
uninterrupted run computes from there on (bitwise on CPU). Under torchrun, ``W`` processes with batch ``B``
see exactly the samples of one process with batch ``W * B`` (:class:`~zoo.data.sampler.GlobalBatchSampler`);
evaluation splits the held-out set into disjoint per-process ranges and sums the counts (exact metrics).
"""
from __future__ import annotations

import contextlib
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from zoo.engine.checkpoint import (
    LAST_CHECKPOINT, PREVIOUS_CHECKPOINT, CheckpointError, get_rng_state, load_checkpoint, save_checkpoint,
    set_rng_state,
)
from zoo.engine.config import IMPLEMENTED_TASKS, Recipe, RecipeError, recipe_from_dict, recipe_to_dict, recipe_to_yaml
from zoo.data.sampler import GlobalBatchSampler, SeededSamples, derive_seed, shard_range
from zoo.engine.distributed import DistEnv, all_reduce_sum, init_distributed, shutdown, wrap_model
from zoo.engine.evaluate import _autocast, evaluate
from zoo.engine.export import unwrap_model
from zoo.engine.observe import CURVES_NAME, RunLog, memory_mb, plot_curves

__all__ = [
    "TrainResult", "create_model", "create_optimizer", "create_transforms", "resolve_data_config", "resolve_device",
    "seed_everything", "train",
]

EXPORT_DIR = "export"


@dataclass
class TrainResult:
    output_dir: Path
    checkpoint: Path | None  # the last training checkpoint written
    export_dir: Path | None  # None when the run stopped before its last epoch
    epoch: int  # epochs completed
    finished: bool
    weights: str  # 'model' or 'ema': the weights evaluated in `metrics` and exported
    metrics: dict[str, float] = field(default_factory=dict)  # held-out top1 / top5 / loss of those weights
    seconds: float = 0.0
    log: Path | None = None  # log.jsonl (rank 0)
    curves: Path | None = None  # curves.png, when matplotlib is installed


# ----------------------------------------------------------------------------------------------------------------
# Building blocks (importable: eval and tests build models and transforms the same way)

def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RecipeError(f"device {name!r} was asked for, but this machine has no CUDA device; use 'auto' or 'cpu'")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def create_model(recipe: Recipe, num_classes: int) -> nn.Module:
    """``timm.create_model(recipe.model.name, num_classes=..., **recipe.model.kwargs)``, errors in recipe terms."""
    import timm

    import zoo  # noqa: F401  (registers the zoo models with timm)

    cfg = recipe.model
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.kwargs.items()}
    reserved = sorted({"num_classes", "pretrained", "drop_rate", "drop_path_rate"} & kwargs.keys())
    if reserved:
        raise RecipeError(
            f"model.kwargs must not set {', '.join(reserved)}: the number of classes comes from the data set, "
            f"the others have their own keys (model.pretrained, model.drop_rate, model.drop_path_rate)")
    try:
        return timm.create_model(
            cfg.name, pretrained=cfg.pretrained, num_classes=num_classes,
            drop_rate=cfg.drop_rate, drop_path_rate=cfg.drop_path_rate, **kwargs)
    except RuntimeError as e:
        if str(e).startswith("Unknown model"):
            raise RecipeError(
                f"model.name {cfg.name!r} is not a registered timm or zoo model; zoo models: "
                f"{', '.join(zoo.list_models()) or '(none)'}") from None
        raise
    except TypeError as e:
        raise RecipeError(f"model.kwargs {cfg.kwargs} are not accepted by {cfg.name!r}: {e}") from None


def resolve_data_config(recipe: Recipe, model: nn.Module) -> dict[str, Any]:
    """Input size / interpolation / mean / std / crop of the recipe, the model's pretrained_cfg filling gaps."""
    import timm.data

    d = recipe.data
    args = {"input_size": (3, d.img_size, d.img_size), "interpolation": d.interpolation,
            "mean": d.mean, "std": d.std, "crop_pct": d.crop_pct}
    cfg = timm.data.resolve_data_config(args={k: v for k, v in args.items() if v is not None}, model=model)
    return {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()}


def create_transforms(recipe: Recipe, data_config: dict[str, Any]):
    """(train, eval) transforms from `timm.data.create_transform`."""
    from timm.data import create_transform

    a = recipe.aug
    common = {k: data_config[k] for k in ("input_size", "interpolation", "mean", "std")}
    train_tf = create_transform(
        **common, is_training=True, scale=a.scale, ratio=a.ratio, hflip=a.hflip, vflip=0.0,
        color_jitter=a.color_jitter or None, auto_augment=a.auto_augment, re_prob=a.re_prob,
        re_mode=a.re_mode)
    eval_tf = create_transform(**common, is_training=False, crop_pct=data_config["crop_pct"],
                               crop_mode=data_config.get("crop_mode"))
    return train_tf, eval_tf


def _create_sr_datasets(recipe: Recipe, global_batch: int):
    """(train, eval) :class:`zoo.data.sr.SRPairs` of an SR recipe; with ``sr.iters_per_epoch`` the training set
    holds ``iters_per_epoch x global_batch`` items (cycling through the images)."""
    from zoo.data.sr import SRPairs, skimage_photos

    d, sr = recipe.data, recipe.sr
    length = None if sr.iters_per_epoch is None else sr.iters_per_epoch * global_batch
    train_kw = dict(gt_size=sr.gt_size, use_hflip=sr.use_hflip, use_rot=sr.use_rot, length=length)
    if d.name == "sr_skimage":
        train_ds = SRPairs(sr.scale, images=skimage_photos(sr.skimage_train), names=sr.skimage_train, **train_kw)
        eval_ds = SRPairs(sr.scale, images=skimage_photos(sr.skimage_val), names=sr.skimage_val)
        return train_ds, eval_ds

    def path(p: str | None) -> str | None:
        return None if p is None else str(Path(d.root) / p) if d.root else p

    try:
        train_ds = SRPairs(sr.scale, hr_dir=path(sr.train_hr), lr_dir=path(sr.train_lr),
                           filename_tmpl=sr.filename_tmpl, **train_kw)
        eval_ds = SRPairs(sr.scale, hr_dir=path(sr.val_hr), lr_dir=path(sr.val_lr), filename_tmpl=sr.filename_tmpl)
    except FileNotFoundError as e:
        raise RecipeError(f"super-resolution data of recipe {recipe.name!r}: {e} (sr.train_hr / sr.train_lr / "
                          f"sr.val_hr / sr.val_lr, relative to data.root when it is set)") from None
    return train_ds, eval_ds


def load_init_weights(model: nn.Module, path: str | Path, strict: bool = True) -> tuple[list[str], list[str]]:
    """Load starting weights into `model`: an export folder (model.safetensors), a training checkpoint of this
    engine (EMA weights when present) or another checkpoint file (e.g. BasicSR's ``params_ema`` / ``params``,
    converted by the model's ``checkpoint_filter_fn`` when its module has one). Returns (missing, unexpected)."""
    import importlib

    path = Path(path)
    if path.is_dir():
        from safetensors.torch import load_file

        from zoo.engine.export import WEIGHTS_NAME
        if not (path / WEIGHTS_NAME).is_file():
            raise FileNotFoundError(f"model.init_checkpoint {str(path)!r} is a folder without {WEIGHTS_NAME}")
        sd = load_file(str(path / WEIGHTS_NAME))
    elif path.is_file():
        sd = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(sd, dict) and "recipe" in sd and "model" in sd:  # this engine's training checkpoint
            if sd.get("ema") is not None:
                sd = {k[len("module."):]: v for k, v in sd["ema"].items() if k.startswith("module.")}
            else:
                sd = sd["model"]
        module = importlib.import_module(type(model).__module__)
        filter_fn = getattr(module, "checkpoint_filter_fn", None)
        if filter_fn is not None:
            sd = filter_fn(sd, model)
    else:
        raise FileNotFoundError(f"model.init_checkpoint {str(path)!r} does not exist")
    try:
        result = model.load_state_dict(sd, strict=strict)
    except RuntimeError as e:
        raise CheckpointError(f"model.init_checkpoint {str(path)!r} does not fit the model "
                              f"(model.init_strict {strict}): {e}") from None
    return list(result.missing_keys), list(result.unexpected_keys)


def _create_datasets(recipe: Recipe):
    from zoo.data import create_dataset

    d = recipe.data
    common = dict(root=d.root, test_fraction=d.test_fraction, seed=d.split_seed, img_size=d.img_size)
    train_ds = create_dataset(d.name, "train", folder_split=d.train_split, subset=d.train_subset, **common)
    eval_ds = create_dataset(d.name, "eval", folder_split=d.val_split, **common)
    if list(train_ds.classes) != list(eval_ds.classes):
        raise RecipeError(
            f"the training and evaluation splits of data set {d.name!r} have different classes "
            f"({len(train_ds.classes)} vs {len(eval_ds.classes)}); they must list the same class folders")
    return train_ds, eval_ds


def _set_transform(dataset, transform) -> None:
    while isinstance(dataset, (torch.utils.data.Subset, SeededSamples)):
        dataset = dataset.dataset
    dataset.transform = transform


def _create_loss(recipe: Recipe, num_classes: int):
    """(mixup_fn or None, train loss) from timm.data.Mixup and timm.loss; SR: L1 (mean), BasicSR's pixel loss."""
    if recipe.task == "sr":
        return None, nn.L1Loss()
    from timm.data import Mixup
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    a = recipe.aug
    if a.mixup > 0 or a.cutmix > 0:
        mixup = Mixup(mixup_alpha=a.mixup, cutmix_alpha=a.cutmix, prob=a.mixup_prob,
                      switch_prob=a.mixup_switch_prob, mode="batch", label_smoothing=a.smoothing,
                      num_classes=num_classes)
        return mixup, SoftTargetCrossEntropy()
    if a.smoothing > 0:
        return None, LabelSmoothingCrossEntropy(smoothing=a.smoothing)
    return None, nn.CrossEntropyLoss()


# ----------------------------------------------------------------------------------------------------------------
# The run

def train(
        recipe: Recipe,
        output_dir: str | Path | None = None,
        *,
        resume: str | Path | None = None,
        stop_after: int | None = None,
        progress: bool = True,
        log: Callable[[str], None] | None = print,
) -> TrainResult:
    """Train `recipe`, writing ``checkpoint-last.pth``, ``recipe.yaml``, ``log.jsonl`` and finally ``export/`` to
    `output_dir` (default: ``recipe.output``).

    `resume`: a training checkpoint to continue from (its model, optimizer, scheduler, scaler, EMA, counters,
    sampler position and RNG states; the run's recipe is `recipe`); a checkpoint written inside an epoch
    (``train.checkpoint_every_steps``) continues at the next step. `stop_after`: run at most this many epochs in
    this call, then write the checkpoint and return (``finished=False``) -- a stopped run that ``resume``
    continues.

    Under torchrun (``WORLD_SIZE`` > 1) every process calls this; they share the work (DDP or FSDP, see
    :mod:`zoo.engine.distributed`), only rank 0 writes files and logs, and every process returns the same
    metrics.
    """
    if recipe.task not in IMPLEMENTED_TASKS:
        raise RecipeError(
            f"task {recipe.task!r} is not implemented yet; implemented tasks: {', '.join(IMPLEMENTED_TASKS)}")
    threads = torch.get_num_threads()
    if recipe.train.threads is not None:
        torch.set_num_threads(recipe.train.threads)
    env = DistEnv()
    try:
        env, device = init_distributed(resolve_device(recipe.device))
        return _train(recipe, output_dir, device, env, resume=resume, stop_after=stop_after,
                      progress=progress and env.is_main, log=log if env.is_main else None)
    finally:
        shutdown(env)
        torch.set_num_threads(threads)


def create_optimizer(recipe: Recipe, model: nn.Module, lr: float | None = None):
    """``timm.optim.create_optimizer_v2``: no weight decay for 1-d parameters and the model's
    ``no_weight_decay()`` names; with ``optim.layer_decay`` one group per ``group_matcher`` layer, its lr scaled by
    ``layer_decay ** (layers - layer)`` (``lr_scale``, which timm's schedulers apply)."""
    import timm.optim

    o = recipe.optim
    extra = {} if o.betas is None else {"betas": tuple(o.betas)}
    try:
        return timm.optim.create_optimizer_v2(
            model, opt=o.opt, lr=o.lr if lr is None else lr, weight_decay=o.weight_decay, momentum=o.momentum,
            layer_decay=o.layer_decay, **extra)
    except ValueError as e:
        if "not found" not in str(e):
            raise
        raise RecipeError(f"optim.opt {o.opt!r} is not one of timm's optimizers (timm.optim.list_optimizers(): "
                          f"{', '.join(timm.optim.list_optimizers()[:12])}, ...)") from None


def _lr(recipe: Recipe, global_batch: int) -> float:
    o = recipe.optim
    return o.lr if o.lr_base_batch is None else o.lr * global_batch / o.lr_base_batch


def _model_state(model: nn.Module, optimizer, fsdp: bool) -> tuple[dict, dict]:
    """Full (unsharded) model and optimizer state dicts; under FSDP a collective every process joins, whose
    result only rank 0 holds (on the CPU)."""
    if not fsdp:
        return model.state_dict(), optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions, get_model_state_dict, get_optimizer_state_dict,
    )
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options), get_optimizer_state_dict(model, optimizer, options=options)


def _train(recipe: Recipe, output_dir, device: torch.device, env: DistEnv, *, resume, stop_after, progress,
           log) -> TrainResult:
    import timm.scheduler
    import timm.utils
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    log = log or (lambda msg: None)
    output_dir = Path(output_dir if output_dir is not None else recipe.output)
    epochs = recipe.train.epochs
    fsdp = recipe.train.parallel == "fsdp"
    if fsdp and not torch.distributed.is_initialized():
        raise RecipeError("train.parallel 'fsdp' needs a process group: launch with torchrun (torchrun "
                          "--nproc_per_node 1 train.py ... for one process)")
    if fsdp and recipe.ema.enabled:
        raise RecipeError("ema.enabled with train.parallel 'fsdp' is not supported (the EMA copy would be a "
                          "full unsharded model on every process); use train.parallel 'ddp' for EMA")

    state = None
    if resume is not None:
        state = load_checkpoint(resume)
        if state["epoch"] > epochs:
            raise RecipeError(
                f"checkpoint {str(resume)!r} has completed {state['epoch']} epochs, more than train.epochs "
                f"{epochs}; raise train.epochs to continue training")
        stored_parallel = state.get("parallel", "ddp")
        if stored_parallel != recipe.train.parallel:
            raise RecipeError(
                f"checkpoint {str(resume)!r} was written by a train.parallel {stored_parallel!r} run, this run is "
                f"{recipe.train.parallel!r}; their optimizer states are laid out differently: resume with "
                f"--set train.parallel={stored_parallel}")

    # Data first: the number of classes sizes the model's head.
    sr_task = recipe.task == "sr"
    if sr_task:
        train_ds, eval_ds = _create_sr_datasets(
            recipe, recipe.data.batch_size * env.world_size * recipe.optim.accum_steps)
    else:
        train_ds, eval_ds = _create_datasets(recipe)
    label_names = [str(c) for c in train_ds.classes]
    num_classes = len(label_names)

    seed_everything(recipe.seed)  # the same initial weights on every process
    model = create_model(recipe, num_classes)
    if sr_task:
        data_config = _sr_data_config(recipe, model)
    else:
        data_config = resolve_data_config(recipe, model)
        train_tf, eval_tf = create_transforms(recipe, data_config)
        _set_transform(train_ds, train_tf)
        _set_transform(eval_ds, eval_tf)
    if recipe.model.init_checkpoint and state is None:
        missing, unexpected = load_init_weights(model, recipe.model.init_checkpoint, recipe.model.init_strict)
        log(f"initial weights from {recipe.model.init_checkpoint}"
            + (f" ({len(missing)} missing: {', '.join(missing[:6])}{', ...' if len(missing) > 6 else ''})"
               if missing else "") + (f" ({len(unexpected)} unused)" if unexpected else ""))
    if recipe.model.grad_checkpointing:
        model.set_grad_checkpointing(True)
    if state is not None:  # full weights into the plain model, before it is moved / sharded / wrapped
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as e:
            raise CheckpointError(
                f"checkpoint {str(resume)!r} does not fit this run (model {recipe.model.name!r}): {e}") from None
    model.to(device)
    if recipe.model.channels_last:
        model.to(memory_format=torch.channels_last)
    if fsdp:
        wrap_model(model, "fsdp", env, device)  # in place: parameters become shards before the optimizer sees them

    if len(train_ds) == 0:
        raise RecipeError(f"the training split of data set {recipe.data.name!r} is empty")
    o = recipe.optim
    batch_size, world = recipe.data.batch_size, env.world_size
    drop_last = len(train_ds) >= batch_size * world  # full (and even, as Mixup needs) global batches only
    if not drop_last and env.distributed:
        raise RecipeError(f"the training split has {len(train_ds)} images, fewer than one global batch of "
                          f"{batch_size} x {world} processes; lower data.batch_size")
    sampler = GlobalBatchSampler(len(train_ds), batch_size, seed=recipe.seed, rank=env.rank, world_size=world,
                                 drop_last=drop_last, repeats=recipe.data.repeated_aug)
    batches_per_epoch = sampler.num_batches
    updates_per_epoch = math.ceil(batches_per_epoch / o.accum_steps)
    global_batch = batch_size * world * o.accum_steps
    lr = _lr(recipe, global_batch)
    optimizer = create_optimizer(recipe, model, lr)
    s = recipe.sched
    scheduler, _ = timm.scheduler.create_scheduler_v2(
        optimizer, sched=s.sched, num_epochs=epochs, warmup_epochs=s.warmup_epochs, warmup_lr=s.warmup_lr,
        min_lr=s.min_lr, step_on_epochs=s.step_on_epochs, updates_per_epoch=updates_per_epoch,
        decay_milestones=list(s.milestones), decay_rate=s.decay_rate)
    ema = None
    if recipe.ema.enabled:
        ema = timm.utils.ModelEmaV3(model, decay=recipe.ema.decay, use_warmup=recipe.ema.warmup)
    scaler = torch.amp.GradScaler(device.type, enabled=recipe.train.amp == "fp16")
    mixup_fn, train_loss = _create_loss(recipe, num_classes)
    eval_kw = dict(amp=recipe.train.amp, channels_last=recipe.model.channels_last)
    ddp_model = model if fsdp else wrap_model(model, "ddp", env, device)
    train_model = torch.compile(ddp_model) if recipe.model.compile else ddp_model

    start_epoch, start_batch, step = 0, 0, 0
    epoch_loss = [0.0, 0]
    metrics: dict[str, float] = {}
    if state is not None:
        try:
            if fsdp:
                from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict
                set_optimizer_state_dict(model, optimizer, state["optimizer"],
                                         options=StateDictOptions(full_state_dict=True))
            else:
                optimizer.load_state_dict(state["optimizer"])
            stored, current = state["recipe"], recipe_to_dict(recipe)
            # keys added to the schema later (e.g. sched.milestones) take their defaults in older checkpoints
            stored_sched = {**recipe_to_dict(Recipe())["sched"], **(stored.get("sched") or {})}
            same_schedule = stored_sched == current["sched"] and stored.get("train", {}).get("epochs") == epochs
            if same_schedule:
                scheduler.load_state_dict(state["scheduler"])
            else:  # timm's load_state_dict would bring back the old schedule's length and settings
                log("note: the recipe's schedule differs from the checkpoint's; the lr follows the new one")
            if ema is not None:
                if state.get("ema") is None:
                    raise CheckpointError(f"checkpoint {str(resume)!r} has no EMA state, the recipe enables EMA")
                ema.load_state_dict(state["ema"])
            if state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
        except (RuntimeError, ValueError, KeyError) as e:
            if isinstance(e, CheckpointError):
                raise
            raise CheckpointError(
                f"checkpoint {str(resume)!r} does not fit this run (model {recipe.model.name!r}): {e}") from None
        start_epoch, start_batch, step = int(state["epoch"]), int(state.get("batch", 0)), int(state["step"])
        if start_batch:
            saved = state.get("sampler") or {}
            now = {"global_batch": sampler.global_batch, "num_samples": sampler.num_samples,
                   "repeats": sampler.repeats, "seed": recipe.seed, "accum_steps": o.accum_steps}
            diff = {k: (saved.get(k), v) for k, v in now.items() if saved.get(k) != v}
            if diff:
                raise RecipeError(
                    f"checkpoint {str(resume)!r} was written inside epoch {start_epoch + 1}; continuing there needs "
                    f"the same data stream, but these differ (checkpoint, now): "
                    f"{', '.join(f'{k} {a} vs {b}' for k, (a, b) in diff.items())}. Resume from a checkpoint "
                    f"written at the end of an epoch, or run with the checkpoint's settings")
            if not same_schedule:
                raise RecipeError(f"checkpoint {str(resume)!r} was written inside an epoch; the schedule "
                                  f"(sched.*, train.epochs) cannot change there")
            epoch_loss = list(state.get("epoch_loss") or [0.0, 0])
        metrics = dict(state.get("metrics") or {})
        set_rng_state(state["rng"])
        if s.step_on_epochs:
            scheduler.step(start_epoch)
        else:
            scheduler.step_update(num_updates=step)
        where = f"inside epoch {start_epoch + 1} (global batch {start_batch})" if start_batch else \
            f"after epoch {start_epoch}/{epochs}"
        log(f"resumed from {resume} {where} (optimizer step {step})")

    ckpt_path = output_dir / LAST_CHECKPOINT
    if env.is_main:
        if state is None and ckpt_path.is_file():
            log(f"note: {output_dir} holds an earlier run's checkpoint, which this new run overwrites "
                f"(to continue that run instead: --resume auto)")
        output_dir.mkdir(parents=True, exist_ok=True)
        for stale in [*output_dir.glob(".checkpoint-*.tmp"), *output_dir.glob(".checkpoint-*.link")]:
            stale.unlink(missing_ok=True)  # what a process killed while writing a checkpoint left behind
        (output_dir / "recipe.yaml").write_text(recipe_to_yaml(recipe))
    runlog = RunLog(output_dir, enabled=env.is_main, resume_step=step if state is not None else None,
                    tensorboard=recipe.train.tensorboard)
    weights = "ema" if ema is not None else "model"
    n_params = sum(p.numel() for p in unwrap_model(model).parameters())  # FSDP's DTensors count globally
    procs = f", {world} processes ({recipe.train.parallel}), global batch {global_batch}" if world > 1 or fsdp \
        else ""
    what = (f"x{recipe.sr.scale} super-resolution, {len(train_ds.items)} train images ({len(train_ds)} "
            f"{recipe.sr.gt_size}px crops per epoch) / {len(eval_ds)} held-out images" if sr_task else
            f"{len(train_ds)} train / {len(eval_ds)} held-out images, {num_classes} classes")
    log(f"{recipe.name}: {recipe.model.name} ({n_params / 1e6:.2f} M parameters) on {recipe.data.name} "
        f"({what}), {device}{procs}, {epochs} epochs -> {output_dir}")

    def checkpoint(epoch: int, batch: int) -> Path | None:
        """`epoch` epochs complete, plus `batch` global batches of the next one."""
        model_sd, optim_sd = _model_state(model, optimizer, fsdp)
        if not env.is_main:
            return None
        return save_checkpoint(ckpt_path, keep_previous=output_dir / PREVIOUS_CHECKPOINT, state={
            "epoch": epoch, "batch": batch, "step": step, "model": model_sd, "optimizer": optim_sd,
            "scheduler": scheduler.state_dict(), "ema": ema.state_dict() if ema is not None else None,
            "scaler": scaler.state_dict() if scaler.is_enabled() else None, "rng": get_rng_state(),
            "sampler": {"epoch": epoch, "position": batch, "global_batch": sampler.global_batch,
                        "num_samples": sampler.num_samples, "repeats": sampler.repeats, "seed": recipe.seed,
                        "accum_steps": o.accum_steps, "world_size": world},
            "epoch_loss": list(epoch_loss), "parallel": recipe.train.parallel,
            "recipe": recipe_to_dict(recipe), "num_classes": num_classes, "label_names": label_names,
            "metrics": metrics,
        })

    def run_eval(net: nn.Module) -> dict[str, float]:
        if sr_task:
            from zoo.engine.sr import evaluate_sr
            return evaluate_sr(net, eval_loader, device, scale=recipe.sr.scale, tile=recipe.sr.val_tile,
                               overlap=recipe.sr.val_tile_overlap, env=env, amp=recipe.train.amp)
        return evaluate(net, eval_loader, device, env=env, collective_forward=fsdp, **eval_kw)

    last_epoch = epochs if stop_after is None else min(epochs, start_epoch + stop_after)
    eval_part = torch.utils.data.Subset(eval_ds, shard_range(len(eval_ds), env.rank, world))
    eval_loader = torch.utils.data.DataLoader(  # SR: whole images of different sizes, one at a time
        eval_part, batch_size=1 if sr_task else recipe.data.eval_batch_size, shuffle=False,
        num_workers=recipe.data.num_workers)
    if sr_task and state is None:
        from zoo.engine.sr import Bicubic, evaluate_sr
        base = evaluate_sr(Bicubic(recipe.sr.scale), eval_loader, device, scale=recipe.sr.scale, env=env)
        log(f"bicubic upscaling of the held-out images: {metric_line('sr', base)}")
    seeded_train = SeededSamples(train_ds, recipe.seed)
    total_batches = (last_epoch - start_epoch) * batches_per_epoch - (start_batch if last_epoch > start_epoch else 0)
    bar = tqdm(total=total_batches, desc=recipe.name, unit="step", disable=not progress, dynamic_ncols=True,
               mininterval=0.1 if sys.stderr.isatty() else 10.0)  # a log file gets a line per 10 s, not per step
    written = None
    postfix: dict[str, str] = {}  # the progress bar's: epoch, loss, lr, img/s, last top-1 (tqdm adds step/s, ETA)
    sync = getattr(ddp_model, "no_sync", None)
    log_every = recipe.train.log_every
    ckpt_steps = recipe.train.checkpoint_every_steps
    try:
        for epoch in range(start_epoch, last_epoch):
            t_epoch = time.perf_counter()
            position = start_batch if epoch == start_epoch else 0
            if position == 0:
                epoch_loss = [0.0, 0]
            sampler.set_epoch(epoch)
            sampler.set_position(position)
            seeded_train.set_epoch(epoch)
            loader = torch.utils.data.DataLoader(
                seeded_train, batch_size=batch_size, sampler=sampler, drop_last=False,
                num_workers=recipe.data.num_workers, pin_memory=device.type == "cuda")
            train_model.train()
            optimizer.zero_grad(set_to_none=True)
            t_log, images_since_log, loss_since_log = time.perf_counter(), 0, [0.0, 0]
            for i, (images, targets) in enumerate(loader, start=position):
                # drop path, mixup: a stream of their own per (seed, epoch, batch, rank), whatever came before
                seed_everything(derive_seed(recipe.seed, epoch, i, env.rank, 0x57E9))
                images = images.to(device, non_blocking=True)
                targets = targets.to(device, non_blocking=True)
                if recipe.model.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                if mixup_fn is not None:
                    images, targets = mixup_fn(images, targets)
                update = (i + 1) % o.accum_steps == 0 or i + 1 == batches_per_epoch
                if fsdp:
                    model.set_requires_gradient_sync(update)
                ctx = sync() if (sync is not None and env.distributed and not update) else contextlib.nullcontext()
                with ctx:
                    with _autocast(device, recipe.train.amp):
                        loss = train_loss(train_model(images), targets)
                    loss_value = loss.item()
                    if not math.isfinite(loss_value):
                        raise FloatingPointError(
                            f"training loss is {loss_value} at epoch {epoch + 1}, step {step}; lower optim.lr "
                            f"(now {lr}) or set optim.clip_grad")
                    scaler.scale(loss / o.accum_steps).backward()
                epoch_loss[0] += loss_value
                epoch_loss[1] += 1
                loss_since_log[0] += loss_value
                loss_since_log[1] += 1
                images_since_log += images.shape[0]
                if update:
                    if o.clip_grad is not None:
                        scaler.unscale_(optimizer)
                        timm.utils.dispatch_clip_grad(model.parameters(), o.clip_grad, mode=o.clip_mode)
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                    step += 1
                    if ema is not None:
                        ema.update(model, step=step)
                    scheduler.step_update(num_updates=step)
                    if step % log_every == 0:
                        loss_sum, count, n_img = all_reduce_sum(
                            [loss_since_log[0], loss_since_log[1], images_since_log], env, device)
                        now = time.perf_counter()
                        runlog.write({"kind": "step", "epoch": epoch + 1, "step": step, "loss": loss_sum / count,
                                      "lr": optimizer.param_groups[0]["lr"],
                                      "img_per_s": n_img / max(now - t_log, 1e-9), "mem_mb": memory_mb(device),
                                      "time": now - t0})
                        postfix.update(epoch=f"{epoch + 1}/{epochs}", loss=f"{loss_sum / count:.3f}",
                                       lr=f"{optimizer.param_groups[0]['lr']:.2e}",
                                       img_s=f"{n_img / max(now - t_log, 1e-9):.0f}")
                        bar.set_postfix(postfix, refresh=False)
                        t_log, images_since_log, loss_since_log = now, 0, [0.0, 0]
                    if ckpt_steps is not None and step % ckpt_steps == 0 and i + 1 < batches_per_epoch:
                        written = checkpoint(epoch, i + 1) or written
                bar.update(1)
            scheduler.step(epoch + 1)

            done = epoch + 1
            train_loss_value = all_reduce_sum(epoch_loss, env, device)
            train_loss_value = train_loss_value[0] / max(train_loss_value[1], 1)
            if done % recipe.train.eval_every == 0 or done == last_epoch:
                key = "psnr" if sr_task else "top1"
                metrics = run_eval(model)
                line = metric_line(recipe.task, metrics)
                if ema is not None:
                    ema_metrics = run_eval(ema.module)
                    line += ", EMA " + metric_line(recipe.task, ema_metrics)
                    metrics = dict(ema_metrics, **{f"model_{key}": metrics[key]})
                runlog.write({"kind": "eval", "epoch": done, "step": step, "train_loss": train_loss_value,
                              **metrics, "time": time.perf_counter() - t0})
                postfix.update(epoch=f"{done}/{epochs}", loss=f"{train_loss_value:.3f}", **{key: f"{metrics[key]:.2f}"})
                bar.set_postfix(postfix)
                msg = (f"epoch {done}/{epochs}: train loss {train_loss_value:.4f}, held-out {line} "
                       f"({time.perf_counter() - t_epoch:.1f} s)")
                if progress:
                    bar.write(msg)
                else:
                    log(msg)
            if done % recipe.train.checkpoint_every == 0 or done == last_epoch:
                written = checkpoint(done, 0) or written
    finally:
        bar.close()
        runlog.close()

    finished = last_epoch == epochs
    export_dir = curves = None
    if finished:
        if start_epoch == epochs:  # resumed a finished run: nothing trained, score what was loaded
            metrics = run_eval(ema.module if ema is not None else model)
        final = ema.module if ema is not None else model
        if fsdp:  # a plain copy of the full weights to export
            full, _ = _model_state(model, optimizer, fsdp)
            if env.is_main:
                final = create_model(recipe, num_classes)
                final.load_state_dict(full)
        if env.is_main:
            export_dir = export_run(recipe, final, output_dir / EXPORT_DIR, data_config=data_config,
                                    label_names=label_names, weights=weights, metrics=metrics, epochs=epochs)
    if env.is_main and recipe.train.plot and runlog.path.is_file():
        curves = plot_curves(runlog.path, output_dir / CURVES_NAME)
        if curves is None:
            log(f"note: matplotlib is not installed, so no {CURVES_NAME} (pip install matplotlib); the curves are "
                f"in {runlog.path}")
    if env.distributed:
        torch.distributed.barrier()  # nobody leaves before rank 0 has written its files
    return TrainResult(output_dir=output_dir, checkpoint=written or (Path(resume) if resume else None),
                       export_dir=export_dir, epoch=last_epoch, finished=finished, weights=weights,
                       metrics=metrics, seconds=time.perf_counter() - t0, log=runlog.path if env.is_main else None,
                       curves=curves)


def export_run(recipe: Recipe, model: nn.Module, export_dir: Path, *, data_config: dict[str, Any],
               label_names: list[str], weights: str, metrics: dict[str, float], epochs: int) -> Path:
    """Export `model` (the run's final weights) with the recipe and its held-out metrics in config.json."""
    from zoo.engine.export import export_model

    return export_model(
        model, export_dir, model_args=recipe_to_dict(recipe)["model"]["kwargs"],
        data_config={k: data_config[k] for k in ("input_size", "interpolation", "mean", "std", "crop_pct")},
        label_names=label_names, weights=weights,
        pretrained_cfg={"tag": recipe.name},  # not the tag of the weights the architecture's entry describes
        extra={"recipe": recipe_to_dict(recipe), "epochs": epochs, "task": recipe.task,
               **({"scale": recipe.sr.scale} if recipe.task == "sr" else {}),
               "held_out": {k: metrics[k] for k in ("top1", "top5", "loss", "count", "psnr", "ssim") if k in metrics}})


def metric_line(task: str, metrics: dict[str, float]) -> str:
    """The held-out metric of a task in words (progress lines)."""
    if task == "sr":
        return f"PSNR {metrics['psnr']:.2f} dB / SSIM {metrics['ssim']:.4f} (Y)"
    return f"top-1 {metrics['top1']:.2f} %"


def _sr_data_config(recipe: Recipe, model: nn.Module) -> dict[str, Any]:
    """The exported data config of an SR model: the LR training patch as input size, the model's mean / std."""
    import timm.data

    lr_patch = recipe.sr.gt_size // recipe.sr.scale
    upscale = getattr(model, "upscale", None)
    if upscale is not None and upscale != recipe.sr.scale:
        raise RecipeError(f"model {recipe.model.name!r} upscales x{upscale}, but sr.scale is {recipe.sr.scale}")
    cfg = timm.data.resolve_data_config(args={"input_size": (3, lr_patch, lr_patch), "crop_pct": 1.0}, model=model)
    return {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()}


def recipe_from_checkpoint(path: str | Path) -> Recipe:
    """The recipe a training checkpoint was written with (validated against the current schema)."""
    return recipe_from_dict(load_checkpoint(path)["recipe"], f"the recipe stored in checkpoint {str(path)!r}")
