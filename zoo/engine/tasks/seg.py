"""Semantic segmentation: an mmsegmentation config (``.py``) trained and scored by mmseg's own Runner
(:mod:`zoo.engine.seg`), which owns the loop; the registry knows it so that a YAML recipe asking for it is told
what to run instead."""
from __future__ import annotations

from zoo.engine import seg
from zoo.engine.tasks.base import Task

__all__ = ["SegmentationTask"]


class SegmentationTask(Task):
    name = "seg"
    recipe = False
    recipe_help = ("Semantic segmentation trains from an mmsegmentation config (.py) through mmseg's Runner, e.g. "
                   "python train.py --config configs/seg/demo/upernet_zoo_davit_digits.py")
    train_cli = staticmethod(seg.train_cli)  # train.py --config CONFIG.py [--set KEY=VALUE ...]
    eval_cli = staticmethod(seg.eval_cli)  # eval.py --config CONFIG.py --checkpoint CKPT.pth [...]
