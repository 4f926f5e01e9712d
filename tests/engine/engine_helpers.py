"""Helpers of the engine tests: a tiny DaViT recipe on digits, running the scripts.

The tiny recipe keeps every run to seconds on two CPU cores: zoo_davit_tiny with one block per stage and
narrow stages, 32x32 inputs, one or two epochs.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from zoo.engine.config import Recipe, recipe_from_dict

ROOT = Path(__file__).resolve().parents[2]

TINY_MODEL = {
    "name": "zoo_davit_tiny",
    "kwargs": {"depths": [1, 1, 1, 1], "embed_dims": [16, 32, 64, 128], "num_heads": [1, 1, 2, 4],
               "window_size": 4, "img_size": 32},
}


def tiny_recipe_dict(**sections) -> dict:
    """A tiny digits recipe as a plain mapping; keyword arguments replace or extend its sections."""
    recipe = {
        "task": "cls", "name": "tiny", "seed": 0, "device": "cpu",
        "model": dict(TINY_MODEL),
        "data": {"name": "digits", "img_size": 32, "batch_size": 32, "eval_batch_size": 360,
                 "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic", "crop_pct": 1.0},
        "aug": {"scale": [0.6, 1.0], "ratio": [0.8, 1.25], "hflip": 0.0, "smoothing": 0.1},
        "optim": {"opt": "adamw", "lr": 3e-3, "weight_decay": 0.05},
        "sched": {"sched": "cosine", "warmup_epochs": 0, "min_lr": 1e-5},
        "train": {"epochs": 2, "threads": 1},
    }
    for section, values in sections.items():
        if isinstance(values, dict) and isinstance(recipe.get(section), dict):
            recipe[section] = {**recipe[section], **values}
        else:
            recipe[section] = values
    return recipe


def tiny_recipe(**sections) -> Recipe:
    return recipe_from_dict(tiny_recipe_dict(**sections), "the tiny test recipe")


def run_script(script: str, *args: str, cwd: Path | None = None, threads: int | None = 1):
    """Run `python SCRIPT ARGS` from the repository root (or `cwd`); returns the CompletedProcess.
    `threads`: OMP_NUM_THREADS for the child (see conftest.one_thread); None leaves torch's default."""
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd or ROOT, capture_output=True,
                          text=True, timeout=600, env=env)
