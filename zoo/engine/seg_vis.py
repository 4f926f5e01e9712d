"""Pictures of a segmentation model's predictions: image | ground truth | prediction, one row per image.

Written by ``train.py`` after a run's last validation and by ``eval.py --config`` after scoring
(:mod:`zoo.engine.seg`), so that what the metrics summarise can be looked at. Drawn with matplotlib's Agg canvas
(no display, no global backend change); classes in the data set's palette, ignored pixels (255) in grey, and a
legend of the classes below the grid.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["IGNORE_COLOUR", "colourise", "predict_images", "save_prediction_grid"]

IGNORE_COLOUR = (128, 128, 128)


def colourise(label: np.ndarray, palette: Sequence[Sequence[int]], ignore_index: int = 255) -> np.ndarray:
    """An (H, W) class map as (H, W, 3) uint8 colours; `ignore_index` grey. A value that is neither a class nor
    `ignore_index` is an error."""
    label = np.asarray(label)
    lut = np.zeros((256, 3), np.uint8)
    lut[:] = IGNORE_COLOUR
    if len(palette) > 255:
        raise ValueError(f"colourise: {len(palette)} palette entries; at most 255 classes are drawn")
    lut[:len(palette)] = np.asarray(palette, np.uint8).reshape(len(palette), 3)
    bad = (label != ignore_index) & ((label < 0) | (label >= len(palette)))
    if bad.any():
        raise ValueError(f"colourise: label value {int(label[bad][0])} is neither a class (0..{len(palette) - 1}) "
                         f"nor ignore_index={ignore_index}")
    return lut[np.where(label == ignore_index, 255, label).astype(np.int64)]


def predict_images(model, dataset, indices: Sequence[int]) -> list[dict[str, Any]]:
    """Run `model` (an mmseg segmentor, possibly wrapped in DDP) on the items `indices` of `dataset` (an mmseg
    data set with its test pipeline): per item ``{'name', 'image' (H, W, 3 RGB uint8), 'gt' (H, W) or None,
    'pred' (H, W)}`` at the original image size. The model's train / eval mode is restored afterwards."""
    import torch
    from mmengine.dataset import pseudo_collate
    from PIL import Image

    module = getattr(model, "module", model)
    was_training = module.training
    module.eval()
    out = []
    try:
        for i in indices:
            item = dataset[i]
            with torch.no_grad():
                sample = module.test_step(pseudo_collate([item]))[0]
            pred = sample.pred_sem_seg.data[0].cpu().numpy().astype(np.int64)
            image = np.asarray(Image.open(sample.img_path).convert("RGB"))
            gt = None
            if "gt_sem_seg" in sample:
                gt = sample.gt_sem_seg.data[0].cpu().numpy().astype(np.int64)
                if gt.shape != pred.shape:  # a test pipeline that resized the labels: back to the image's size
                    gt = np.asarray(Image.fromarray(gt.astype(np.uint8)).resize(pred.shape[::-1],
                                                                                Image.Resampling.NEAREST))
            if image.shape[:2] != pred.shape:
                image = np.asarray(Image.fromarray(image).resize(pred.shape[::-1], Image.Resampling.BILINEAR))
            out.append(dict(name=Path(sample.img_path).name, image=image, gt=gt, pred=pred))
    finally:
        module.train(was_training)
    return out


def save_prediction_grid(model, dataset, path: str | Path, num_images: int = 4,
                         title: str | None = None) -> Path:
    """Draw the first `num_images` items of `dataset` (image | ground truth | prediction per row) with `model`'s
    predictions into the PNG `path` (its folder is created) and return the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    if not isinstance(num_images, int) or num_images < 1:
        raise ValueError(f"save_prediction_grid: num_images={num_images!r}, expected an integer >= 1")
    if len(dataset) == 0:
        raise ValueError("save_prediction_grid: the data set is empty")
    classes = list(dataset.metainfo.get("classes") or [])
    palette = dataset.metainfo.get("palette")
    if not classes or palette is None or len(palette) < len(classes):
        raise ValueError(f"save_prediction_grid: the data set's metainfo needs classes and a palette of as many "
                         f"colours (classes: {len(classes)}, palette: {None if palette is None else len(palette)})")
    rows = predict_images(model, dataset, range(min(num_images, len(dataset))))
    legend_in = 0.55  # inches below the grid for the legend's two rows
    height = len(rows) * 2.2 + legend_in + (0.3 if title else 0.0)
    fig = Figure(figsize=(3 * 2.2, height), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), 3, squeeze=False)
    for r, row in enumerate(rows):
        panels = (row["image"], None if row["gt"] is None else colourise(row["gt"], palette),
                  colourise(row["pred"], palette))
        for c, (panel, name) in enumerate(zip(panels, ("image", "ground truth", "prediction"))):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if panel is None:
                ax.text(0.5, 0.5, "no labels", ha="center", va="center", transform=ax.transAxes)
            else:
                ax.imshow(panel, interpolation="nearest")
            if r == 0:
                ax.set_title(name, fontsize=9)
        axes[r][0].set_ylabel(row["name"], fontsize=6)
    handles = [Patch(facecolor=np.asarray(palette[k]) / 255.0, label=str(name)) for k, name in enumerate(classes)]
    handles.append(Patch(facecolor=np.asarray(IGNORE_COLOUR) / 255.0, label="ignored"))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, legend_in / height, 1, 1 - (0.3 / height if title else 0.0)), h_pad=0.3, w_pad=0.3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
