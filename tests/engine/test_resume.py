"""Exact resume at any step: a run killed with SIGKILL at a random optimizer step and resumed from its last
checkpoint ends bitwise equal (CPU) to the uninterrupted run; damaged checkpoints are clear errors that name the
previous good one."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from engine_helpers import ROOT, tiny_recipe, tiny_recipe_dict

from zoo.engine.checkpoint import LAST_CHECKPOINT, PREVIOUS_CHECKPOINT, CheckpointError, load_checkpoint
from zoo.engine.cli import train_main
from zoo.engine.observe import read_log
from zoo.engine.train import train

pytestmark = pytest.mark.usefixtures("one_thread")

# Every source of randomness on: random-resized crops, RandAugment, random erasing, mixup / cutmix, drop path,
# EMA; a checkpoint after every optimizer step. 96 images, batch 16: 6 steps per epoch, 18 in all.
SECTIONS = dict(
    data={"train_subset": 96, "batch_size": 16, "test_fraction": 0.0501},
    model={"drop_path_rate": 0.1},
    aug={"auto_augment": "rand-m9-mstd0.5", "re_prob": 0.25, "mixup": 0.8, "cutmix": 1.0},
    ema={"enabled": True, "decay": 0.9},
    sched={"warmup_epochs": 1},
    train={"epochs": 3, "checkpoint_every_steps": 1, "eval_every": 3, "plot": False},
)
TOTAL_STEPS = 18


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _wait_for_step(log_path, step: int, proc: subprocess.Popen, timeout: float = 300) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (code {proc.returncode}) before step {step}: "
                                 f"{proc.stdout.read()[-3000:]}")
        if log_path.is_file():
            steps = [r["step"] for r in read_log(log_path) if r.get("kind") == "step"]
            if steps and steps[-1] >= step:
                return steps[-1]
        time.sleep(0.005)
    raise AssertionError(f"step {step} not reached in {timeout} s")


def test_sigkill_at_a_random_step_then_resume_is_bitwise_exact(tmp_path):
    data = tiny_recipe_dict(**SECTIONS)
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(data))
    kill_at = random.Random().randint(2, TOTAL_STEPS - 3)
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), "--config", str(tmp_path / "recipe.yaml"), "--output",
         str(tmp_path / "killed"), "--no-progress"],
        cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    try:
        reached = _wait_for_step(tmp_path / "killed" / "log.jsonl", kill_at, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    state = load_checkpoint(tmp_path / "killed" / LAST_CHECKPOINT)
    assert 1 <= state["step"] < TOTAL_STEPS, f"killed at step ~{reached} (asked {kill_at})"

    # the uninterrupted run, and the killed one continued through the command line from its own recipe
    full = train(tiny_recipe(**SECTIONS), tmp_path / "full", progress=False, log=None)
    assert train_main(["--output", str(tmp_path / "killed"), "--resume", "auto", "--no-progress"]) == 0

    assert not list((tmp_path / "killed").glob(".*.tmp"))  # a write cut by the kill leaves no debris

    a = load_checkpoint(full.checkpoint)
    b = load_checkpoint(tmp_path / "killed" / LAST_CHECKPOINT)
    where = f"killed after step {state['step']} (epoch {state['epoch']}, batch {state['batch']})"
    assert a["step"] == b["step"] == TOTAL_STEPS, where
    assert _equal(a["model"], b["model"]), where
    assert _equal(a["ema"], b["ema"]), where
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        assert all(torch.equal(sa[k], sb[k]) for k in sa), where
    assert a["scheduler"] == b["scheduler"] and a["metrics"] == b["metrics"], where
    # the resumed log reads like the uninterrupted one: each step once, the same losses
    la = [(r["step"], r["loss"], r["lr"]) for r in read_log(full.log) if r["kind"] == "step"]
    lb = [(r["step"], r["loss"], r["lr"]) for r in read_log(tmp_path / "killed" / "log.jsonl") if r["kind"] == "step"]
    assert la == lb, where

    # a damaged last checkpoint: a clear error naming the previous one, which is intact and resumable
    last, prev = tmp_path / "killed" / LAST_CHECKPOINT, tmp_path / "killed" / PREVIOUS_CHECKPOINT
    assert load_checkpoint(prev)["step"] == TOTAL_STEPS - 1
    last.write_bytes(last.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=f"truncated or corrupt.*{PREVIOUS_CHECKPOINT}.*--resume"):
        load_checkpoint(last)
    assert train_main(["--output", str(tmp_path / "killed"), "--resume", "auto", "--no-progress"]) == 2


def test_checkpoints_carry_every_state(tmp_path):
    recipe = tiny_recipe(data={"train_subset": 64, "batch_size": 16, "test_fraction": 0.0501}, ema={"enabled": True},
                         train={"epochs": 1, "checkpoint_every_steps": 3, "amp": "fp16", "plot": False})
    train(recipe, tmp_path, stop_after=1, progress=False, log=None)
    state = load_checkpoint(tmp_path / PREVIOUS_CHECKPOINT)  # the mid-epoch one, after step 3 of 4
    assert state["epoch"] == 0 and state["batch"] == 3 and state["step"] == 3
    for key in ("model", "optimizer", "scheduler", "scaler", "ema", "rng", "sampler", "epoch_loss"):
        assert state[key], key
    assert state["sampler"] == {"epoch": 0, "position": 3, "global_batch": 16, "num_samples": 64, "repeats": 1,
                                "seed": 0, "accum_steps": 1, "world_size": 1}
    assert {"python", "numpy", "torch", "cuda"} <= state["rng"].keys()
    assert state["scaler"]["scale"] > 0  # fp16: a live GradScaler


def test_resume_inside_an_epoch_needs_the_same_data_stream(tmp_path):
    recipe = tiny_recipe(data={"train_subset": 64, "batch_size": 16, "test_fraction": 0.0501},
                         train={"epochs": 1, "checkpoint_every_steps": 2, "plot": False})
    train(recipe, tmp_path, progress=False, log=None)
    mid = tmp_path / PREVIOUS_CHECKPOINT  # written after step 2 of 4
    assert load_checkpoint(mid)["batch"] == 2
    other = tiny_recipe(data={"train_subset": 64, "batch_size": 8}, train={"epochs": 1, "plot": False})
    with pytest.raises(Exception, match="written inside epoch 1.*global_batch 16 vs 8"):
        train(other, tmp_path / "other", resume=mid, progress=False, log=None)


def test_loader_workers_do_not_change_the_run(tmp_path):
    # each sample's augmentation is seeded by (seed, epoch, index): which process loads it does not matter
    sections = dict(data={"train_subset": 32, "batch_size": 16, "test_fraction": 0.0501},
                    aug={"auto_augment": "rand-m9-mstd0.5", "re_prob": 0.5}, train={"epochs": 1, "plot": False})
    runs = [train(tiny_recipe(**{**sections, "data": {**sections["data"], "num_workers": w}}), tmp_path / str(w),
                  progress=False, log=None) for w in (0, 2)]
    a, b = (load_checkpoint(r.checkpoint)["model"] for r in runs)
    assert _equal(a, b)
