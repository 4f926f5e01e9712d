"""Classification training loop, built from timm's factories.

The model comes from ``timm.create_model`` (the engine knows models only by name), the optimizer from
``timm.optim.create_optimizer_v2`` (weight decay off for the model's ``no_weight_decay()`` parameters, optional
layer-wise lr decay through its ``group_matcher``), the schedule from ``timm.scheduler.create_scheduler_v2``
(warmup; updated per optimizer step or per epoch), transforms from ``timm.data.create_transform``, mixup /
cutmix from ``timm.data.Mixup``, losses from ``timm.loss``, EMA from ``timm.utils.ModelEmaV3``.

Reproducibility: every epoch reseeds Python, NumPy and torch from ``(seed, epoch)`` before its data order and
augmentations are drawn, so a run resumed from the checkpoint written after epoch k computes exactly what the
uninterrupted run computes from epoch k + 1 on (bitwise on CPU).
"""
from __future__ import annotations

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
    LAST_CHECKPOINT, CheckpointError, get_rng_state, load_checkpoint, save_checkpoint, set_rng_state,
)
from zoo.engine.config import IMPLEMENTED_TASKS, Recipe, RecipeError, recipe_from_dict, recipe_to_dict, recipe_to_yaml
from zoo.engine.evaluate import _autocast, evaluate

__all__ = [
    "TrainResult", "create_model", "create_transforms", "epoch_seed", "resolve_data_config", "resolve_device",
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


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch `epoch` of a run seeded `seed` (independent streams per epoch)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0] % 2**63)


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
        color_jitter=a.color_jitter or None, auto_augment=a.auto_augment, re_prob=a.re_prob)
    eval_tf = create_transform(**common, is_training=False, crop_pct=data_config["crop_pct"],
                               crop_mode=data_config.get("crop_mode"))
    return train_tf, eval_tf


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
    while isinstance(dataset, torch.utils.data.Subset):
        dataset = dataset.dataset
    dataset.transform = transform


def _create_loss(recipe: Recipe, num_classes: int):
    """(mixup_fn or None, train loss) from timm.data.Mixup and timm.loss."""
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
    """Train `recipe`, writing ``checkpoint-last.pth``, ``recipe.yaml`` and finally ``export/`` to
    `output_dir` (default: ``recipe.output``).

    `resume`: a training checkpoint to continue from (its model, optimizer, scheduler, EMA, counters and RNG
    states; the run's recipe is `recipe`). `stop_after`: run at most this many epochs in this call, then write
    the checkpoint and return (``finished=False``) -- a stopped run that ``resume`` continues.
    """
    if recipe.task not in IMPLEMENTED_TASKS:
        raise RecipeError(
            f"task {recipe.task!r} is not implemented yet; implemented tasks: {', '.join(IMPLEMENTED_TASKS)}")
    threads = torch.get_num_threads()
    if recipe.train.threads is not None:
        torch.set_num_threads(recipe.train.threads)
    try:
        return _train(recipe, output_dir, resume=resume, stop_after=stop_after, progress=progress, log=log)
    finally:
        torch.set_num_threads(threads)


def _train(recipe: Recipe, output_dir, *, resume, stop_after, progress, log) -> TrainResult:
    import timm.optim
    import timm.scheduler
    import timm.utils
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    log = log or (lambda msg: None)
    output_dir = Path(output_dir if output_dir is not None else recipe.output)
    device = resolve_device(recipe.device)
    epochs = recipe.train.epochs

    state = None
    if resume is not None:
        state = load_checkpoint(resume)
        if state["epoch"] > epochs:
            raise RecipeError(
                f"checkpoint {str(resume)!r} has completed {state['epoch']} epochs, more than train.epochs "
                f"{epochs}; raise train.epochs to continue training")

    # Data first: the number of classes sizes the model's head.
    train_ds, eval_ds = _create_datasets(recipe)
    label_names = [str(c) for c in train_ds.classes]
    num_classes = len(label_names)

    seed_everything(recipe.seed)
    model = create_model(recipe, num_classes)
    data_config = resolve_data_config(recipe, model)
    train_tf, eval_tf = create_transforms(recipe, data_config)
    _set_transform(train_ds, train_tf)
    _set_transform(eval_ds, eval_tf)
    if recipe.model.grad_checkpointing:
        model.set_grad_checkpointing(True)
    model.to(device)
    if recipe.model.channels_last:
        model.to(memory_format=torch.channels_last)

    o = recipe.optim
    try:
        optimizer = timm.optim.create_optimizer_v2(
            model, opt=o.opt, lr=o.lr, weight_decay=o.weight_decay, momentum=o.momentum, layer_decay=o.layer_decay)
    except ValueError as e:
        if "not found" not in str(e):
            raise
        raise RecipeError(f"optim.opt {o.opt!r} is not one of timm's optimizers (timm.optim.list_optimizers(): "
                          f"{', '.join(timm.optim.list_optimizers()[:12])}, ...)") from None
    if len(train_ds) == 0:
        raise RecipeError(f"the training split of data set {recipe.data.name!r} is empty")
    batch_size = recipe.data.batch_size
    drop_last = len(train_ds) > batch_size  # full batches only (and even ones, as Mixup needs)
    batches_per_epoch = len(train_ds) // batch_size if drop_last else 1
    updates_per_epoch = math.ceil(batches_per_epoch / o.accum_steps)
    s = recipe.sched
    scheduler, _ = timm.scheduler.create_scheduler_v2(
        optimizer, sched=s.sched, num_epochs=epochs, warmup_epochs=s.warmup_epochs, warmup_lr=s.warmup_lr,
        min_lr=s.min_lr, step_on_epochs=s.step_on_epochs, updates_per_epoch=updates_per_epoch)
    ema = None
    if recipe.ema.enabled:
        ema = timm.utils.ModelEmaV3(model, decay=recipe.ema.decay, use_warmup=recipe.ema.warmup)
    scaler = torch.amp.GradScaler(device.type, enabled=recipe.train.amp == "fp16" and device.type == "cuda")
    mixup_fn, train_loss = _create_loss(recipe, num_classes)
    eval_kw = dict(amp=recipe.train.amp, channels_last=recipe.model.channels_last)
    train_model = torch.compile(model) if recipe.model.compile else model

    start_epoch, step = 0, 0
    metrics: dict[str, float] = {}
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            stored, current = state["recipe"], recipe_to_dict(recipe)
            if stored.get("sched") == current["sched"] and stored.get("train", {}).get("epochs") == epochs:
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
        start_epoch, step = int(state["epoch"]), int(state["step"])
        metrics = dict(state.get("metrics") or {})
        set_rng_state(state["rng"])
        if s.step_on_epochs:
            scheduler.step(start_epoch)
        else:
            scheduler.step_update(num_updates=step)
        log(f"resumed from {resume} after epoch {start_epoch}/{epochs} (optimizer step {step})")

    ckpt_path = output_dir / LAST_CHECKPOINT
    if state is None and ckpt_path.is_file():
        log(f"note: {output_dir} holds an earlier run's checkpoint, which this new run overwrites "
            f"(to continue that run instead: --resume auto)")
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "recipe.yaml").write_text(recipe_to_yaml(recipe))
    weights = "ema" if ema is not None else "model"
    n_params = sum(p.numel() for p in model.parameters())
    log(f"{recipe.name}: {recipe.model.name} ({n_params / 1e6:.2f} M parameters) on {recipe.data.name} "
        f"({len(train_ds)} train / {len(eval_ds)} held-out images, {num_classes} classes), {device}, "
        f"{epochs} epochs -> {output_dir}")

    def checkpoint(epoch: int) -> Path:
        return save_checkpoint(ckpt_path, {
            "epoch": epoch, "step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "ema": ema.state_dict() if ema is not None else None,
            "scaler": scaler.state_dict() if scaler.is_enabled() else None, "rng": get_rng_state(),
            "recipe": recipe_to_dict(recipe), "num_classes": num_classes, "label_names": label_names,
            "metrics": metrics,
        })

    last_epoch = epochs if stop_after is None else min(epochs, start_epoch + stop_after)
    eval_loader = torch.utils.data.DataLoader(
        eval_ds, batch_size=recipe.data.eval_batch_size, shuffle=False, num_workers=recipe.data.num_workers)
    bar = tqdm(total=(last_epoch - start_epoch) * batches_per_epoch, desc=recipe.name, unit="step",
               disable=not progress, dynamic_ncols=True,
               mininterval=0.1 if sys.stderr.isatty() else 10.0)  # a log file gets a line per 10 s, not per step
    written = None
    try:
        for epoch in range(start_epoch, last_epoch):
            t_epoch = time.perf_counter()
            seed = epoch_seed(recipe.seed, epoch)
            seed_everything(seed)
            loader = torch.utils.data.DataLoader(
                train_ds, batch_size=batch_size, drop_last=drop_last, num_workers=recipe.data.num_workers,
                sampler=torch.utils.data.RandomSampler(train_ds, generator=torch.Generator().manual_seed(seed)))
            train_model.train()
            loss_sum, loss_count = 0.0, 0
            optimizer.zero_grad(set_to_none=True)
            for i, (images, targets) in enumerate(loader):
                images = images.to(device, non_blocking=True)
                targets = targets.to(device, non_blocking=True)
                if recipe.model.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                if mixup_fn is not None:
                    images, targets = mixup_fn(images, targets)
                with _autocast(device, recipe.train.amp):
                    loss = train_loss(train_model(images), targets)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"training loss is {loss.item()} at epoch {epoch + 1}, step {step}; lower optim.lr "
                        f"(now {o.lr}) or set optim.clip_grad")
                scaler.scale(loss / o.accum_steps).backward()
                loss_sum += loss.item()
                loss_count += 1
                if (i + 1) % o.accum_steps == 0 or i + 1 == batches_per_epoch:
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
                bar.update(1)
                bar.set_postfix(epoch=f"{epoch + 1}/{epochs}", loss=f"{loss_sum / loss_count:.3f}",
                                lr=f"{optimizer.param_groups[0]['lr']:.2e}", refresh=False)
            scheduler.step(epoch + 1)

            done = epoch + 1
            if done % recipe.train.eval_every == 0 or done == last_epoch:
                metrics = evaluate(model, eval_loader, device, **eval_kw)
                line = f"top-1 {metrics['top1']:.2f} %"
                if ema is not None:
                    ema_metrics = evaluate(ema.module, eval_loader, device, **eval_kw)
                    line += f", EMA top-1 {ema_metrics['top1']:.2f} %"
                    metrics = dict(ema_metrics, model_top1=metrics["top1"])
                bar.set_postfix(epoch=f"{done}/{epochs}", loss=f"{loss_sum / max(loss_count, 1):.3f}",
                                top1=f"{metrics['top1']:.1f}")
                msg = (f"epoch {done}/{epochs}: train loss {loss_sum / max(loss_count, 1):.4f}, held-out {line} "
                       f"({time.perf_counter() - t_epoch:.1f} s)")
                if progress:
                    bar.write(msg)
                else:
                    log(msg)
            if done % recipe.train.checkpoint_every == 0 or done == last_epoch:
                written = checkpoint(done)
    finally:
        bar.close()

    finished = last_epoch == epochs
    export_dir = None
    if finished:
        if start_epoch == epochs:  # resumed a finished run: nothing trained, score what was loaded
            metrics = evaluate(ema.module if ema is not None else model, eval_loader, device, **eval_kw)
        export_dir = export_run(recipe, ema.module if ema is not None else model, output_dir / EXPORT_DIR,
                                data_config=data_config, label_names=label_names, weights=weights,
                                metrics=metrics, epochs=epochs)
    return TrainResult(output_dir=output_dir, checkpoint=written or (Path(resume) if resume else None),
                       export_dir=export_dir, epoch=last_epoch, finished=finished, weights=weights,
                       metrics=metrics, seconds=time.perf_counter() - t0)


def export_run(recipe: Recipe, model: nn.Module, export_dir: Path, *, data_config: dict[str, Any],
               label_names: list[str], weights: str, metrics: dict[str, float], epochs: int) -> Path:
    """Export `model` (the run's final weights) with the recipe and its held-out metrics in config.json."""
    from zoo.engine.export import export_model

    return export_model(
        model, export_dir, model_args=recipe_to_dict(recipe)["model"]["kwargs"],
        data_config={k: data_config[k] for k in ("input_size", "interpolation", "mean", "std", "crop_pct")},
        label_names=label_names, weights=weights,
        pretrained_cfg={"tag": recipe.name},  # not the tag of the weights the architecture's entry describes
        extra={"recipe": recipe_to_dict(recipe), "epochs": epochs,
               "held_out": {k: metrics[k] for k in ("top1", "top5", "loss", "count") if k in metrics}})


def recipe_from_checkpoint(path: str | Path) -> Recipe:
    """The recipe a training checkpoint was written with (validated against the current schema)."""
    return recipe_from_dict(load_checkpoint(path)["recipe"], f"the recipe stored in checkpoint {str(path)!r}")
