"""Training features, each shown to do what it says: AMP, gradient accumulation, clipping, channels-last, grad
checkpointing, torch.compile, layer-wise lr decay, no weight decay on the model's names, EMA, mixup / cutmix,
RandAugment / random erasing; observability (JSONL log, curves PNG, TensorBoard, progress bar); tar shards."""
from __future__ import annotations

import json

import pytest
import torch
from engine_helpers import tiny_recipe

from zoo.data import TarShards, create_dataset
from zoo.data.shards import write_shards
from zoo.engine.checkpoint import LAST_CHECKPOINT, load_checkpoint
from zoo.engine.setup import create_model, resolve_data_config
from zoo.engine.tasks.cls import create_transforms
from zoo.engine.train import create_optimizer, train

pytestmark = pytest.mark.usefixtures("one_thread")

# 64 training images (4 steps of 16), 91 held-out images (test_fraction 0.0501), one epoch
QUICK = dict(data={"train_subset": 64, "batch_size": 16, "test_fraction": 0.0501},
             train={"epochs": 1, "plot": False})


def _run(tmp_path, name, **sections):
    merged = {k: dict(v) for k, v in QUICK.items()}
    for k, v in sections.items():
        merged[k] = {**merged.get(k, {}), **v}
    return train(tiny_recipe(**merged), tmp_path / name, progress=False, log=None)


def _weights(result):
    return load_checkpoint(result.output_dir / LAST_CHECKPOINT)["model"]


def _max_diff(a, b):
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def test_gradient_accumulation_equals_the_big_batch(tmp_path):
    big = _run(tmp_path, "big", data={"batch_size": 32})
    accum = _run(tmp_path, "accum", optim={"accum_steps": 2})  # 2 x 16 per optimizer step
    small = _run(tmp_path, "small")  # 16 per step: a different run
    assert load_checkpoint(big.checkpoint)["step"] == load_checkpoint(accum.checkpoint)["step"] == 2
    # the same samples and augmentations; float sums in another order (AdamW's first steps amplify: 5e-5 is
    # under 2 % of one step's change, lr 3e-3)
    assert _max_diff(_weights(big), _weights(accum)) < 5e-5
    assert _max_diff(_weights(big), _weights(small)) > 1e-3


def test_gradient_clipping_bounds_the_update(tmp_path):
    sgd = {"opt": "momentum", "lr": 1.0, "momentum": 0.0, "weight_decay": 0.0}
    common = dict(data={"train_subset": 16}, sched={"sched": "constant"})
    torch.manual_seed(0)
    init = create_model(tiny_recipe(), 10).state_dict()
    clipped = _weights(_run(tmp_path, "clip", optim={**sgd, "clip_grad": 1e-3}, **common))
    free = _weights(_run(tmp_path, "free", optim=sgd, **common))
    step_norm = lambda w: torch.stack([(w[k] - init[k]).norm() for k in w]).norm().item()  # noqa: E731
    assert step_norm(clipped) <= 1e-3 * 1.001  # one SGD step of lr 1 with the gradient norm clipped to 1e-3
    assert step_norm(free) > 0.1


def test_bf16_and_fp16_autocast_train(tmp_path):
    ref = _weights(_run(tmp_path, "fp32"))
    for amp in ("bf16", "fp16"):
        result = _run(tmp_path, amp, train={"amp": amp})
        state = load_checkpoint(result.checkpoint)
        assert (state["scaler"] is not None) == (amp == "fp16")  # a GradScaler only where fp16 needs one
        diff = _max_diff(ref, _weights(result))
        assert 0 < diff < 0.05, f"{amp}: {diff}"  # low precision changes the numbers, not the run


def test_channels_last_and_grad_checkpointing_compute_the_same_step(tmp_path, monkeypatch):
    from zoo.models.davit import DaVit

    calls = []
    original = DaVit.set_grad_checkpointing
    monkeypatch.setattr(DaVit, "set_grad_checkpointing",
                        lambda self, enable=True: (calls.append(enable), original(self, enable))[1])
    ref = _weights(_run(tmp_path, "ref"))
    assert _max_diff(ref, _weights(_run(tmp_path, "ckpt", model={"grad_checkpointing": True}))) < 1e-6
    assert calls == [True]
    assert _max_diff(ref, _weights(_run(tmp_path, "cl", model={"channels_last": True}))) < 1e-4


@pytest.mark.slow  # inductor compiles the forward and backward on the CPU: minutes under load
def test_torch_compile_trains_like_eager(tmp_path):
    ref = _weights(_run(tmp_path, "eager"))
    assert _max_diff(ref, _weights(_run(tmp_path, "compiled", model={"compile": True}))) < 1e-4


def test_layer_wise_lr_decay_follows_group_matcher():
    import timm.scheduler

    recipe = tiny_recipe(optim={"layer_decay": 0.5})
    model = create_model(recipe, 10)
    opt = create_optimizer(recipe, model)
    scales = sorted({g["lr_scale"] for g in opt.param_groups})
    assert scales[-1] == 1.0 and len(scales) >= 5  # stem, every stage's blocks / downsample, head
    sched, _ = timm.scheduler.create_scheduler_v2(opt, sched="cosine", num_epochs=10, warmup_epochs=0,
                                                  step_on_epochs=False, updates_per_epoch=10)
    sched.step_update(5)
    lrs = {g["lr_scale"]: g["lr"] for g in opt.param_groups}
    base = lrs[1.0]
    assert all(lr == pytest.approx(base * scale) for scale, lr in lrs.items())
    named = {id(p): n for n, p in model.named_parameters()}
    stem = [g["lr_scale"] for g in opt.param_groups if any(named[id(p)].startswith("stem") for p in g["params"])]
    head = [g["lr_scale"] for g in opt.param_groups if any(named[id(p)].startswith("head") for p in g["params"])]
    assert max(stem) < min(head) == 1.0


def test_no_weight_decay_on_the_names_the_model_gives():
    # a timm ViT names pos_embed / cls_token (not 1-d, so only its no_weight_decay() exempts them)
    recipe = tiny_recipe(model={"name": "vit_tiny_patch16_224", "kwargs": {
        "img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}})
    model = create_model(recipe, 10)
    assert {"pos_embed", "cls_token"} <= set(model.no_weight_decay())
    opt = create_optimizer(recipe, model)
    wd = {n: g["weight_decay"] for g in opt.param_groups for p in g["params"]
          for n, q in model.named_parameters() if q is p}
    assert wd["pos_embed"] == wd["cls_token"] == 0.0
    assert wd["blocks.0.attn.qkv.weight"] == 0.05 and wd["blocks.0.attn.qkv.bias"] == 0.0


def test_ema_weights_are_averaged_and_exported(trained_run):
    state = load_checkpoint(trained_run.checkpoint)
    ema = {k[len("module."):]: v for k, v in state["ema"].items()}
    assert ema.keys() == state["model"].keys()
    assert _max_diff(ema, state["model"]) > 1e-4  # an average, not a copy
    from safetensors.torch import load_file
    exported = load_file(trained_run.export_dir / "model.safetensors")
    assert all(torch.equal(exported[k], ema[k]) for k in exported)


def test_mixup_cutmix_randaugment_random_erasing_are_timm_s():
    from timm.data import Mixup
    from timm.data.auto_augment import RandAugment
    from timm.data.random_erasing import RandomErasing

    from zoo.engine.tasks.cls import create_loss as _create_loss

    recipe = tiny_recipe(aug={"auto_augment": "rand-m9-mstd0.5-inc1", "re_prob": 0.25, "mixup": 0.8,
                              "cutmix": 1.0})
    model = create_model(recipe, 10)
    train_tf, _ = create_transforms(recipe, resolve_data_config(recipe, model))
    kinds = [type(t) for t in train_tf.transforms]
    assert RandAugment in kinds and RandomErasing in kinds
    erasing = next(t for t in train_tf.transforms if isinstance(t, RandomErasing))
    assert erasing.probability == 0.25 and erasing.mode == "pixel"
    mixup, loss = _create_loss(recipe, 10)
    assert isinstance(mixup, Mixup) and mixup.mixup_alpha == 0.8 and mixup.cutmix_alpha == 1.0
    x, y = mixup(torch.randn(4, 3, 32, 32), torch.arange(4))
    assert y.shape == (4, 10) and torch.allclose(y.sum(1), torch.ones(4))
    assert (y > 0.02).sum() > 4  # soft targets: two classes per image


def test_jsonl_log_curves_progress_bar_and_tensorboard(tmp_path, monkeypatch, capsys):
    import zoo.engine.observe as observe

    scalars = []

    class FakeWriter:
        def add_scalar(self, tag, value, step):
            scalars.append((tag, step))

        def close(self):
            scalars.append(("closed", -1))

    monkeypatch.setattr(observe, "_tensorboard_writer", lambda folder: FakeWriter())
    result = _run(tmp_path, "obs", train={"plot": True, "tensorboard": True})
    records = [json.loads(line) for line in result.log.read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "step"]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    for r in steps:
        assert {"epoch", "loss", "lr", "img_per_s", "mem_mb", "time"} <= r.keys()
        assert r["img_per_s"] > 0 and r["mem_mb"] > 0 and r["loss"] > 0
    assert records[-1]["kind"] == "eval" and records[-1]["count"] == 91
    assert ("train/loss", 4) in scalars and ("eval/top1", 4) in scalars and scalars[-1][0] == "closed"
    pytest.importorskip("matplotlib")
    assert result.curves is not None and result.curves.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    capsys.readouterr()
    train(tiny_recipe(**QUICK), tmp_path / "bar", progress=True, log=None)
    err = capsys.readouterr().err
    assert "img_s=" in err and ("step/s" in err or "s/step" in err)  # throughput in images and steps
    assert "<00:00" in err  # tqdm's elapsed<remaining: the ETA


def test_tar_shards_hold_the_image_folder(tmp_path):
    from test_train import _write_image_folder

    root = _write_image_folder(tmp_path / "folder")
    for split in ("train", "val"):
        write_shards(create_dataset("folder", "eval", root=str(root), folder_split=split), tmp_path / "shards",
                     split, samples_per_shard=7)
    assert len(list((tmp_path / "shards").glob("train-*.tar"))) == 3  # 18 images, 7 per shard
    folder = create_dataset("folder", "eval", root=str(root), folder_split="val")
    shards = TarShards(tmp_path / "shards", "val")
    assert shards.classes == folder.classes and len(shards) == len(folder) == 18
    for i in (0, 9, 17):
        assert shards[i][1] == folder[i][1]
        assert shards[i][0].tobytes() == folder[i][0].convert("RGB").tobytes()
    recipe = tiny_recipe(data={"name": "shards", "root": str(tmp_path / "shards"), "batch_size": 6},
                         train={"epochs": 1, "plot": False})
    result = train(recipe, tmp_path / "out", progress=False, log=None)
    assert result.metrics["count"] == 18
    assert load_checkpoint(result.checkpoint)["label_names"] == ["digit_0", "digit_1", "digit_7"]
    with pytest.raises(FileNotFoundError, match="no tar shards for split 'test'"):
        TarShards(tmp_path / "shards", "test")


def test_without_matplotlib_the_run_says_so_and_writes_no_png(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    lines = []
    recipe = tiny_recipe(data={"train_subset": 16, "test_fraction": 0.0501}, train={"epochs": 1})
    result = train(recipe, tmp_path, progress=False, log=lines.append)
    assert result.curves is None and not (tmp_path / "curves.png").exists()
    assert any("matplotlib is not installed, so no curves.png" in line for line in lines)
