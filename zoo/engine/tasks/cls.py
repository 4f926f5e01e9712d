"""Image classification: digits / ImageFolder / tar-shard data with timm's transforms, mixup / cutmix and
smoothed cross-entropy, top-1 / top-5 / loss on the held-out split (:func:`evaluate`)."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo.data import DATASETS, create_dataset
from zoo.data.sampler import SeededSamples
from zoo.engine.distributed import all_reduce_max, all_reduce_sum
from zoo.engine.schema import Recipe, RecipeError
from zoo.engine.setup import autocast, resolve_data_config
from zoo.engine.tasks.base import Need, Task
from zoo.errors import InputError

__all__ = ["ClassificationTask", "create_loss", "create_transforms", "evaluate"]


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


def create_loss(recipe: Recipe, num_classes: int):
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


def _set_transform(dataset, transform) -> None:
    while isinstance(dataset, (torch.utils.data.Subset, SeededSamples)):
        dataset = dataset.dataset
    dataset.transform = transform


@torch.no_grad()
def evaluate(
        model: nn.Module,
        loader,
        device: torch.device | str = "cpu",
        *,
        amp: str | None = None,
        channels_last: bool = False,
        progress: bool = False,
        env=None,
        collective_forward: bool = False,
) -> dict[str, float]:
    """``{'top1', 'top5', 'loss', 'count'}`` of `model` over `loader` (accuracies in percent; top-5 is top-k
    with k = min(5, classes); loss is plain cross-entropy).

    Several processes (`env`, a :class:`zoo.engine.distributed.DistEnv`): each process passes a loader over its
    own disjoint part of the data set (:func:`zoo.data.sampler.shard_range`); the counts are summed over
    processes, so the metrics are exactly those of the whole set. `collective_forward` (FSDP: every forward
    gathers parameters from all processes): processes with fewer batches repeat their last batch, uncounted, so
    that all run the same number of forwards."""
    from tqdm.auto import tqdm

    device = torch.device(device)
    was_training = model.training
    model.eval()
    correct1 = correct5 = 0
    loss_sum = 0.0
    count = 0
    n_batches = len(loader)
    if collective_forward and env is not None and env.distributed:
        n_batches = all_reduce_max(n_batches, env, device)
    try:
        last = None
        batches = iter(tqdm(loader, desc="eval", leave=False, disable=not progress))
        for b in range(n_batches):
            counted = True
            try:
                images, targets = last = next(batches)
            except StopIteration:
                if last is None:
                    raise ValueError("evaluation under FSDP needs at least one sample per process") from None
                (images, targets), counted = last, False
            images = images.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast(device, amp):
                logits = model(images)
            if not counted:
                continue
            logits = logits.float()
            loss_sum += F.cross_entropy(logits, targets, reduction="sum").item()
            k = min(5, logits.shape[-1])
            top = logits.topk(k, dim=-1).indices
            hit = top.eq(targets[:, None])
            correct1 += hit[:, 0].sum().item()
            correct5 += hit.any(dim=-1).sum().item()
            count += targets.numel()
    finally:
        model.train(was_training)
    if env is not None and env.distributed:
        correct1, correct5, loss_sum, count = all_reduce_sum([correct1, correct5, loss_sum, count], env, device)
        correct1, correct5, count = int(correct1), int(correct5), int(count)
    if count == 0:
        raise InputError("evaluation data set is empty")
    return {"top1": 100.0 * correct1 / count, "top5": 100.0 * correct5 / count, "loss": loss_sum / count,
            "count": count}


class ClassificationTask(Task):
    name = "cls"
    metric = "top1"
    held_out = ("top1", "top5", "loss", "count")

    def check_recipe(self, recipe: Recipe, need: Need) -> None:
        need(recipe.data.name in DATASETS, "data.name", f"not an SR data set when task is {recipe.task!r}",
             recipe.data.name)
        need(recipe.sr.iters_per_epoch is None, "sr.iters_per_epoch", "null unless task is 'sr'",
             recipe.sr.iters_per_epoch)

    def datasets(self, recipe: Recipe, global_batch: int):
        d = recipe.data
        common = dict(root=d.root, test_fraction=d.test_fraction, seed=d.split_seed, img_size=d.img_size,
                      labels=d.digits_labels, skip_corrupt=d.skip_corrupt)
        train_ds = create_dataset(d.name, "train", folder_split=d.train_split, subset=d.train_subset, **common)
        eval_ds = create_dataset(d.name, "eval", folder_split=d.val_split, **common)
        if list(train_ds.classes) != list(eval_ds.classes):
            raise RecipeError(
                f"the training and evaluation splits of data set {d.name!r} have different classes "
                f"({len(train_ds.classes)} vs {len(eval_ds.classes)}); they must list the same class folders")
        return train_ds, eval_ds

    def data_config(self, recipe: Recipe, model: nn.Module) -> dict[str, Any]:
        return resolve_data_config(recipe, model)

    def set_transforms(self, recipe: Recipe, data_config: dict[str, Any], train_ds, eval_ds) -> None:
        train_tf, eval_tf = create_transforms(recipe, data_config)
        _set_transform(train_ds, train_tf)
        _set_transform(eval_ds, eval_tf)

    def loss(self, recipe: Recipe, num_classes: int):
        return create_loss(recipe, num_classes)

    def evaluate(self, model, loader, device, recipe, *, env, collective_forward):
        return evaluate(model, loader, device, amp=recipe.train.amp, channels_last=recipe.model.channels_last,
                        env=env, collective_forward=collective_forward)

    def describe(self, recipe: Recipe, train_ds, eval_ds) -> str:
        return f"{len(train_ds)} train / {len(eval_ds)} held-out images, {len(train_ds.classes)} classes"

    def metric_line(self, metrics: dict[str, float]) -> str:
        return f"top-1 {metrics['top1']:.2f} %"

    def summary(self, recipe: Recipe, metrics: dict[str, float], weights: str, seconds: float) -> str:
        m = metrics
        return (f"held-out top-1: {m['top1']:.2f} % (top-5 {m['top5']:.2f} %, loss {m['loss']:.4f}) on "
                f"{m['count']} images never trained on, {weights}, {seconds:.0f} s")
