"""Super-resolution (``task: sr``): paired or bicubic-degraded data (:mod:`zoo.data.sr`), BasicSR's L1 pixel loss,
PSNR / SSIM on the Y channel of whole held-out images (:mod:`zoo.engine.sr`), bicubic upscaling as the baseline."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from zoo.data.sr import SRPairs, skimage_photos
from zoo.engine.schema import Recipe, RecipeError
from zoo.engine.setup import model_data_config
from zoo.engine.sr import Bicubic, evaluate_sr
from zoo.engine.tasks.base import Need, Task

__all__ = ["SR_DATASETS", "SuperResolutionTask"]

SR_DATASETS = ("sr_folder", "sr_skimage")


class SuperResolutionTask(Task):
    name = "sr"
    metric = "psnr"
    held_out = ("count", "psnr", "ssim")
    classes = False

    def check_recipe(self, recipe: Recipe, need: Need) -> None:
        sr, name = recipe.sr, recipe.data.name
        need(name in SR_DATASETS, "data.name", f"one of {', '.join(SR_DATASETS)} when task is 'sr'", name)
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
            need(bool(sr.train_hr), "sr.train_hr", "the HR training folder when data.name is 'sr_folder'",
                 sr.train_hr)
            need(bool(sr.val_hr), "sr.val_hr", "the HR validation folder when data.name is 'sr_folder'", sr.val_hr)
        else:
            need(bool(sr.skimage_train), "sr.skimage_train", "at least one scikit-image photograph",
                 sr.skimage_train)
            need(bool(sr.skimage_val), "sr.skimage_val", "at least one scikit-image photograph", sr.skimage_val)
            overlap = sorted(set(sr.skimage_train) & set(sr.skimage_val))
            need(not overlap, "sr.skimage_val", "photographs not in sr.skimage_train", overlap)
        need(recipe.train.parallel == "ddp", "train.parallel", "'ddp' when task is 'sr'", recipe.train.parallel)
        need(recipe.aug.mixup == 0 and recipe.aug.cutmix == 0, "aug.mixup / aug.cutmix", "0 when task is 'sr'",
             (recipe.aug.mixup, recipe.aug.cutmix))

    def datasets(self, recipe: Recipe, global_batch: int):
        """:class:`zoo.data.sr.SRPairs`; with ``sr.iters_per_epoch`` the training set holds ``iters_per_epoch x
        global_batch`` items (cycling through the images)."""
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
            eval_ds = SRPairs(sr.scale, hr_dir=path(sr.val_hr), lr_dir=path(sr.val_lr),
                              filename_tmpl=sr.filename_tmpl)
        except FileNotFoundError as e:
            raise RecipeError(f"super-resolution data of recipe {recipe.name!r}: {e} (sr.train_hr / sr.train_lr / "
                              f"sr.val_hr / sr.val_lr, relative to data.root when it is set)") from None
        return train_ds, eval_ds

    def data_config(self, recipe: Recipe, model: nn.Module) -> dict[str, Any]:
        """The LR training patch as input size, the model's mean / std."""
        lr_patch = recipe.sr.gt_size // recipe.sr.scale
        upscale = getattr(model, "upscale", None)
        if upscale is not None and upscale != recipe.sr.scale:
            raise RecipeError(f"model {recipe.model.name!r} upscales x{upscale}, but sr.scale is {recipe.sr.scale}")
        return model_data_config(model, input_size=(3, lr_patch, lr_patch), crop_pct=1.0)

    def loss(self, recipe: Recipe, num_classes: int):
        return None, nn.L1Loss()  # mean L1, BasicSR's pixel loss

    def eval_batch_size(self, recipe: Recipe) -> int:
        return 1  # whole images of different sizes

    def evaluate(self, model, loader, device, recipe, *, env, collective_forward):
        return evaluate_sr(model, loader, device, scale=recipe.sr.scale, tile=recipe.sr.val_tile,
                           overlap=recipe.sr.val_tile_overlap, env=env, amp=recipe.train.amp)

    def baseline(self, recipe: Recipe, loader, device, env) -> str:
        base = evaluate_sr(Bicubic(recipe.sr.scale), loader, device, scale=recipe.sr.scale, env=env)
        return f"bicubic upscaling of the held-out images: {self.metric_line(base)}"

    def describe(self, recipe: Recipe, train_ds, eval_ds) -> str:
        return (f"x{recipe.sr.scale} super-resolution, {len(train_ds.items)} train images ({len(train_ds)} "
                f"{recipe.sr.gt_size}px crops per epoch) / {len(eval_ds)} held-out images")

    def metric_line(self, metrics: dict[str, float]) -> str:
        return f"PSNR {metrics['psnr']:.2f} dB / SSIM {metrics['ssim']:.4f} (Y)"

    def export_extra(self, recipe: Recipe) -> dict[str, Any]:
        return {"scale": recipe.sr.scale}

    def summary(self, recipe: Recipe, metrics: dict[str, float], weights: str, seconds: float) -> str:
        m, scale = metrics, recipe.sr.scale
        return (f"held-out PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.4f} (Y channel, border {scale}) on "
                f"{m['count']} images never trained on, x{scale}, {weights}, {seconds:.0f} s")

    def eval_hint(self, recipe: Recipe) -> str:
        return "" if recipe.data.name == "sr_skimage" else " --data-dir HR_FOLDER"
