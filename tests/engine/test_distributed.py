"""Several processes: the sampler's sharding, and torchrun with 2 gloo processes on the CPU giving the losses,
weights and held-out metrics of one process with the same global batch (DDP and FSDP)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml
from engine_helpers import ROOT, tiny_recipe, tiny_recipe_dict

from zoo.data.sampler import GlobalBatchSampler, shard_range
from zoo.engine.checkpoint import LAST_CHECKPOINT, load_checkpoint
from zoo.engine.cli import train_main
from zoo.engine.config import RecipeError
from zoo.engine.distributed import fsdp_units
from zoo.engine.observe import read_log
from zoo.engine.setup import create_model
from zoo.engine.train import train

pytestmark = pytest.mark.usefixtures("one_thread")


def test_processes_together_see_the_single_process_batches():
    n, b, w = 103, 4, 3
    single = list(GlobalBatchSampler(n, b * w, seed=7))
    ranks = [list(GlobalBatchSampler(n, b, seed=7, rank=r, world_size=w)) for r in range(w)]
    assert all(len(r) == (n // (b * w)) * b for r in ranks)
    for k in range(n // (b * w)):  # global batch k is the union of the ranks' k-th local batches
        union = sorted(i for r in ranks for i in r[k * b:(k + 1) * b])
        assert union == sorted(single[k * b * w:(k + 1) * b * w])
    assert len(set(single)) == len(single)  # a permutation, nothing repeated


def test_sampler_position_epochs_and_repeats():
    s = GlobalBatchSampler(40, 8, seed=0)
    full = list(s)
    s.set_position(3)
    assert list(s) == full[24:] and len(s) == 16
    s.set_epoch(1)
    assert s.position == 0 and list(s) != full and sorted(s) == sorted(full)
    r = GlobalBatchSampler(40, 8, seed=0, repeats=3)
    order = list(r)
    assert len(order) == 40 and order[0] == order[1] == order[2]  # each sample 3 times in a row
    with pytest.raises(ValueError, match="fewer than one global batch of 16"):
        GlobalBatchSampler(10, 8, seed=0, world_size=2, rank=0)
    with pytest.raises(ValueError, match="rank 2 is not in"):
        GlobalBatchSampler(40, 8, seed=0, world_size=2, rank=2)


@pytest.mark.parametrize("n, world", [(91, 2), (5, 3), (2, 4), (360, 8)])
def test_eval_shards_cover_every_sample_once(n, world):
    shards = [shard_range(n, r, world) for r in range(world)]
    assert [i for s in shards for i in s] == list(range(n))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_fsdp_units_are_the_blocks():
    model = create_model(tiny_recipe(), 10)
    names = {type(m).__name__ for m in fsdp_units(model)}
    assert names == {"SpatialBlock", "ChannelBlock"}
    assert len(fsdp_units(model)) == 8  # 4 stages x 1 dual block x (spatial + channel)


def test_fsdp_without_a_process_group_is_a_clear_error(tmp_path):
    with pytest.raises(RecipeError, match="'fsdp' needs a process group: launch with torchrun"):
        train(tiny_recipe(data={"train_subset": 32}, train={"epochs": 1, "parallel": "fsdp"}), tmp_path,
              progress=False, log=None)


def _weights(path):
    return load_checkpoint(path / LAST_CHECKPOINT)["model"]


def test_torchrun_two_gloo_processes_equal_one_process(tmp_path):
    # 64 training images, global batch 16 (2 x 8 vs 1 x 16): 8 AdamW steps over 2 epochs. test_fraction
    # 0.0501 leaves 91 held-out images: an odd count, which 2 processes can only score exactly without padding.
    data = tiny_recipe_dict(data={"train_subset": 64, "test_fraction": 0.0501, "batch_size": 16},
                            train={"epochs": 2, "threads": 1})
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(data))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(ROOT / "tests" / "engine" / "dist_worker.py"), str(tmp_path / "recipe.yaml"),
         str(tmp_path / "ddp"), str(tmp_path / "fsdp")],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # meanwhile, the single-process run in this process, and its continuation for a third epoch
    one = train(tiny_recipe(**{k: data[k] for k in ("data", "train")}), tmp_path / "one", progress=False, log=None)
    assert train_main(["--resume", str(one.checkpoint), "--output", str(tmp_path / "one-resumed"),
                       "--set", "train.epochs=3", "--no-progress"]) == 0
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-6000:]
    assert one.metrics["count"] == 91
    ref_log = [r for r in read_log(one.log) if r["kind"] == "step"]
    ref_w = _weights(tmp_path / "one")
    assert len(ref_log) == 8
    for mode in ("ddp", "fsdp"):
        log = [r for r in read_log(tmp_path / mode / "log.jsonl") if r["kind"] == "step"]
        assert [r["step"] for r in log] == [r["step"] for r in ref_log]
        for a, b in zip(log, ref_log, strict=True):
            assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6), (mode, a, b)
            assert a["lr"] == b["lr"]
        w = _weights(tmp_path / mode)
        assert w.keys() == ref_w.keys()
        diff = max((w[k] - ref_w[k]).abs().max().item() for k in w)
        assert diff < 5e-5, f"{mode}: max |weight difference| {diff:.2e} to the single-process run"
        state = load_checkpoint(tmp_path / mode / LAST_CHECKPOINT)
        assert state["metrics"]["count"] == 91  # every held-out image once: nothing duplicated or dropped
        assert state["metrics"]["top1"] == pytest.approx(one.metrics["top1"])
        assert state["metrics"]["loss"] == pytest.approx(one.metrics["loss"], rel=1e-4)
        assert state["sampler"]["world_size"] == 2 and state["parallel"] == mode
        assert (tmp_path / mode / "export" / "model.safetensors").is_file()
    # both continued for a third epoch from their checkpoints (FSDP: the full optimizer state resharded)
    a, b = (load_checkpoint(tmp_path / f"{m}-resumed" / LAST_CHECKPOINT) for m in ("one", "fsdp"))
    assert a["step"] == b["step"] == 12 and a["epoch"] == b["epoch"] == 3
    diff = max((a["model"][k] - b["model"][k]).abs().max().item() for k in a["model"])
    assert diff < 5e-5, f"FSDP resumed and one process resumed differ by {diff:.2e}"
    # only rank 0 wrote files and reported
    assert out.count("held-out top-1:") == 3
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir() if not p.name.startswith(".")) == sorted(
        p.name for p in (tmp_path / "one").iterdir() if not p.name.startswith("."))


@pytest.mark.gpu
def test_torchrun_on_gpus_with_nccl(tmp_path):
    import torch

    n = min(2, torch.cuda.device_count())
    data = tiny_recipe_dict(device="cuda", data={"train_subset": 64, "batch_size": 8},
                            train={"epochs": 1, "amp": "bf16", "plot": False})
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(data))
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n),
         str(ROOT / "train.py"), "--config", str(tmp_path / "recipe.yaml"), "--output", str(tmp_path / "out"),
         "--no-progress"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert f"{n} processes (ddp)" in proc.stdout or n == 1
    assert load_checkpoint(tmp_path / "out" / LAST_CHECKPOINT)["metrics"]["count"] == 360
