"""The training loop of every recipe task (classification, super-resolution), built from timm's factories; what
differs between tasks (data sets, loss, held-out metrics, log lines, export extras) is the task object's
(:mod:`zoo.engine.tasks`), the shared set-up is :mod:`zoo.engine.setup`.

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
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.data.sampler import GlobalBatchSampler, SeededSamples, derive_seed, shard_range
from zoo.engine.checkpoint import (
    LAST_CHECKPOINT, PREVIOUS_CHECKPOINT, CheckpointError, get_rng_state, load_checkpoint, save_checkpoint,
    set_rng_state,
)
from zoo.engine.config import Recipe, RecipeError, recipe_to_dict, recipe_to_yaml
from zoo.engine.distributed import DistEnv, all_reduce_sum, init_distributed, shutdown, wrap_model
from zoo.engine.export import export_model, unwrap_model
from zoo.engine.observe import CURVES_NAME, RunLog, memory_mb, plot_curves
from zoo.engine.setup import autocast, create_model, load_init_weights, resolve_device, seed_everything
from zoo.engine.tasks import get_task
from zoo.errors import DivergedError

__all__ = ["TrainResult", "create_optimizer", "export_run", "train"]

EXPORT_DIR = "export"


@dataclass
class TrainResult:
    output_dir: Path
    checkpoint: Path | None  # the last training checkpoint written
    export_dir: Path | None  # None when the run stopped before its last epoch
    epoch: int  # epochs completed
    finished: bool
    weights: str  # 'model' or 'ema': the weights evaluated in `metrics` and exported
    metrics: dict[str, float] = field(default_factory=dict)  # the task's held-out metrics of those weights
    seconds: float = 0.0
    log: Path | None = None  # log.jsonl (rank 0)
    curves: Path | None = None  # curves.png, when matplotlib is installed


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
    task = get_task(recipe.task)
    train_ds, eval_ds = task.datasets(recipe, recipe.data.batch_size * env.world_size * recipe.optim.accum_steps)
    label_names = [str(c) for c in train_ds.classes]
    num_classes = len(label_names)

    seed_everything(recipe.seed)  # the same initial weights on every process
    model = create_model(recipe, num_classes)
    data_config = task.data_config(recipe, model)
    task.set_transforms(recipe, data_config, train_ds, eval_ds)
    if recipe.model.init_checkpoint and state is None:
        loaded = load_init_weights(model, recipe.model.init_checkpoint, recipe.model.init_strict)
        log(f"initial weights from {recipe.model.init_checkpoint}{loaded.describe()}")
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
    mixup_fn, train_loss = task.loss(recipe, num_classes)
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
    log(f"{recipe.name}: {recipe.model.name} ({n_params / 1e6:.2f} M parameters) on {recipe.data.name} "
        f"({task.describe(recipe, train_ds, eval_ds)}), {device}{procs}, {epochs} epochs -> {output_dir}")

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
        return task.evaluate(net, eval_loader, device, recipe, env=env, collective_forward=fsdp)

    last_epoch = epochs if stop_after is None else min(epochs, start_epoch + stop_after)
    eval_part = torch.utils.data.Subset(eval_ds, shard_range(len(eval_ds), env.rank, world))
    eval_loader = torch.utils.data.DataLoader(
        eval_part, batch_size=task.eval_batch_size(recipe), shuffle=False, num_workers=recipe.data.num_workers)
    baseline = task.baseline(recipe, eval_loader, device, env) if state is None else None
    if baseline:
        log(baseline)
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
                    with autocast(device, recipe.train.amp):
                        loss = train_loss(train_model(images), targets)
                    loss_value = loss.item()
                    if not math.isfinite(loss_value):
                        raise DivergedError(
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
                key = task.metric
                metrics = run_eval(model)
                line = task.metric_line(metrics)
                if ema is not None:
                    ema_metrics = run_eval(ema.module)
                    line += ", EMA " + task.metric_line(ema_metrics)
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
    task = get_task(recipe.task)
    return export_model(
        model, export_dir, model_args=recipe_to_dict(recipe)["model"]["kwargs"],
        data_config={k: data_config[k] for k in ("input_size", "interpolation", "mean", "std", "crop_pct")},
        label_names=label_names, weights=weights,
        pretrained_cfg={"tag": recipe.name},  # not the tag of the weights the architecture's entry describes
        extra={"recipe": recipe_to_dict(recipe), "epochs": epochs, "task": recipe.task, **task.export_extra(recipe),
               "held_out": {k: metrics[k] for k in task.held_out if k in metrics}})
