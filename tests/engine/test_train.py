"""The training loop: it learns, it resumes exactly, it writes what it promises, it refuses what it cannot do."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from engine_helpers import tiny_recipe, tiny_recipe_dict
from PIL import Image

from zoo.engine.checkpoint import LAST_CHECKPOINT, load_checkpoint
from zoo.engine.cli import train_main
from zoo.engine.config import RecipeError
from zoo.engine.train import train

pytestmark = pytest.mark.usefixtures("one_thread")


def test_short_run_learns_far_above_chance(trained_run):
    assert trained_run.finished and trained_run.epoch == 2
    assert trained_run.metrics["count"] == 360  # the 20 % stratified held-out split of 1797 images
    assert trained_run.metrics["top1"] > 60.0  # chance is 10 %
    assert trained_run.weights == "ema"


def test_run_writes_checkpoint_recipe_and_export(trained_run):
    out = trained_run.output_dir
    assert trained_run.checkpoint == out / LAST_CHECKPOINT
    state = load_checkpoint(out / LAST_CHECKPOINT)
    assert {"model", "optimizer", "scheduler", "ema", "rng", "recipe", "epoch", "step"} <= state.keys()
    assert state["epoch"] == 2 and state["step"] == 2 * (1437 // 32)
    assert state["ema"] is not None and state["label_names"] == [str(i) for i in range(10)]
    assert yaml.safe_load((out / "recipe.yaml").read_text()) == state["recipe"]
    assert (trained_run.export_dir / "model.safetensors").is_file()
    assert (trained_run.export_dir / "config.json").is_file()


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_matches_an_uninterrupted_run_bitwise(tmp_path):
    # EMA and mixup on, so that every stateful piece (EMA, numpy / python / torch RNGs) takes part.
    data = tiny_recipe_dict(data={"train_subset": 160}, train={"epochs": 4}, ema={"enabled": True, "decay": 0.9},
                            aug={"mixup": 0.2, "cutmix": 0.5}, sched={"warmup_epochs": 1})
    recipe = tiny_recipe(**{k: v for k, v in data.items() if k in ("data", "train", "ema", "aug", "sched")})
    full = train(recipe, tmp_path / "full", progress=False, log=None)

    stopped = train(recipe, tmp_path / "stopped", stop_after=2, progress=False, log=None)
    assert not stopped.finished and stopped.export_dir is None
    assert load_checkpoint(stopped.checkpoint)["epoch"] == 2
    # continue through the command line, as a user would, from the recipe stored in the checkpoint
    assert train_main(["--output", str(tmp_path / "stopped"), "--resume", "auto", "--no-progress"]) == 0

    a = load_checkpoint(full.checkpoint)
    b = load_checkpoint(tmp_path / "stopped" / LAST_CHECKPOINT)
    assert a["epoch"] == b["epoch"] == 4 and a["step"] == b["step"]
    assert _states_equal(a["model"], b["model"])
    assert _states_equal(a["ema"], b["ema"])
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a["metrics"] == b["metrics"]


def test_unimplemented_task_is_a_clear_error(tmp_path):
    with pytest.raises(RecipeError, match="task 'seg' is not implemented yet; implemented tasks: cls"):
        train(tiny_recipe(task="seg"), tmp_path, progress=False, log=None)


def test_bad_model_name_and_kwargs_are_recipe_errors(tmp_path):
    with pytest.raises(RecipeError, match="model.name 'zoo_no_such_model' is not a registered .*zoo_davit_tiny"):
        train(tiny_recipe(model={"name": "zoo_no_such_model"}), tmp_path, progress=False, log=None)
    with pytest.raises(RecipeError, match="model.kwargs must not set num_classes"):
        train(tiny_recipe(model={"kwargs": {"num_classes": 3}}), tmp_path, progress=False, log=None)
    with pytest.raises(RecipeError, match="optim.opt 'adamx' is not one of timm's optimizers"):
        train(tiny_recipe(optim={"opt": "adamx"}), tmp_path, progress=False, log=None)
    assert not any(tmp_path.iterdir())  # nothing written before the recipe is known to work


def _write_image_folder(root, per_class: int = 6, classes=("0", "1", "7")):
    """A small ImageFolder tree of real digits (8x8 upscaled), train/ and val/."""
    from zoo.data import digits_split

    images, labels = digits_split("train")
    for split, offset in (("train", 0), ("val", per_class)):
        for c in classes:
            folder = root / split / f"digit_{c}"
            folder.mkdir(parents=True)
            picks = np.flatnonzero(labels == int(c))[offset:offset + per_class]
            for i in picks:
                Image.fromarray(images[i]).resize((16, 16)).save(folder / f"{i}.png")
    return root


def test_image_folder_data_set_trains(tmp_path):
    root = _write_image_folder(tmp_path / "data")
    recipe = tiny_recipe(data={"name": "folder", "root": str(root), "batch_size": 6}, train={"epochs": 1})
    result = train(recipe, tmp_path / "out", progress=False, log=None)
    assert result.finished and result.metrics["count"] == 18
    state = load_checkpoint(result.checkpoint)
    assert state["label_names"] == ["digit_0", "digit_1", "digit_7"]


def test_resume_a_finished_run_with_more_epochs(tmp_path, capsys):
    recipe = tiny_recipe(data={"train_subset": 64}, train={"epochs": 1})
    first = train(recipe, tmp_path / "run", progress=False, log=None)
    assert first.finished
    assert train_main(["--resume", str(first.checkpoint), "--set", "train.epochs=2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "resumed from" in out and "schedule differs" in out and "held-out top-1" in out
    state = load_checkpoint(first.checkpoint)  # the same folder: the checkpoint's own
    assert state["epoch"] == 2 and state["recipe"]["train"]["epochs"] == 2


@pytest.mark.gpu
def test_fp16_training_with_grad_scaler_on_cuda(tmp_path):
    assert torch.cuda.is_available()
    result = train(tiny_recipe(device="cuda", data={"train_subset": 64, "batch_size": 16},
                               train={"epochs": 1, "amp": "fp16", "plot": False}), tmp_path, progress=False, log=None)
    state = load_checkpoint(result.checkpoint)
    assert state["scaler"]["scale"] > 0 and result.metrics["count"] == 360
