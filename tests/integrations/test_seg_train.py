"""Segmentation through mmseg's Runner from ``train.py`` / ``eval.py``: the digits-on-photographs data set in
ADE20K's layout read by mmseg's own ADE20KDataset, a few iterations of the demo UperNet config, a checkpoint,
mIoU from a fresh Runner equal to the last validation, and resuming that continues the iteration count."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("mmseg.models", reason="mmsegmentation is not installed (python scripts/install_seg.py)")

from PIL import Image  # noqa: E402

from zoo.data.seg_synth import SEG_DIGITS_CLASSES, make_seg_digits  # noqa: E402
from zoo.engine.cli import eval_main, train_main  # noqa: E402
from zoo.engine.seg import check_checkpoint, load_seg_config, seg_safe_globals  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "configs" / "seg" / "demo" / "upernet_zoo_davit_digits.py"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return make_seg_digits(tmp_path_factory.mktemp("seg_digits"), num_train=12, num_val=4, size=128)


def _roots(root: Path) -> list[str]:
    return [f"{loader}.dataset.data_root={root}" for loader in ("train_dataloader", "val_dataloader",
                                                                "test_dataloader")]


def _data_sets(root: Path) -> list[str]:
    return [f"--set={item}" for item in _roots(root)]


def _tiny(root: Path, iters: int, ckpt_every: int) -> list[str]:
    # random initial weights: the demo's classification-pretrained export (python train.py) is not needed here
    return [*_data_sets(root), "--set=model.backbone.init_cfg=null",
            f"--set=train_cfg.max_iters={iters}", f"--set=train_cfg.val_interval={iters}",
            f"--set=default_hooks.checkpoint.interval={ckpt_every}", "--set=default_hooks.logger.interval=1",
            "--set=train_dataloader.batch_size=2", "--set=default_hooks.checkpoint.max_keep_ckpts=-1"]


def _logged_iters(work_dir: Path, before: set[Path]) -> list[int]:
    """Iterations logged by the one run whose scalars file appeared in `work_dir` since `before`."""
    new = set(work_dir.glob("*/vis_data/scalars.json")) - before
    assert len(new) == 1, new
    rows = [json.loads(line) for line in new.pop().read_text().splitlines()]
    return [r["iter"] for r in rows if "loss" in r]


def _metrics_from(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_data_set_is_ade20k_layout_read_by_mmseg(data_root):
    from mmseg.datasets import ADE20KDataset
    from mmseg.registry import DATASETS
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    load = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations")]
    # mmseg's own ADE20K class (with its 150 class names) reads the folders ...
    ade = ADE20KDataset(data_root=str(data_root), pipeline=load,
                        data_prefix=dict(img_path="images/validation", seg_map_path="annotations/validation"))
    # ... exactly as the demo config's dataset (ADE20K's arguments, the digits' class names) does
    cfg = load_seg_config(DEMO, _roots(data_root)).val_dataloader.dataset
    cfg.pipeline = load
    ours = DATASETS.build(cfg)
    assert len(ade) == len(ours) == 4
    assert ours.metainfo["classes"] == SEG_DIGITS_CLASSES and len(ours.metainfo["palette"]) == 11
    for i in range(4):
        a, b = ade[i], ours[i]
        assert a["img_path"] == b["img_path"] and np.array_equal(a["gt_seg_map"], b["gt_seg_map"])
        assert b["img"].shape == (128, 128, 3)
        raw = np.asarray(Image.open(b["seg_map_path"]))
        seg = b["gt_seg_map"]
        # reduce_zero_label: the PNG's 0 (digit rims) is ignored, 1 (background) becomes class 0, 2 + d class 1 + d
        assert np.array_equal(seg[raw == 0], np.full((raw == 0).sum(), 255))
        assert np.array_equal(seg[raw > 0], raw[raw > 0] - 1)
        assert (seg == 0).any() and ((seg >= 1) & (seg <= 10)).any()


def test_same_seed_same_files_new_seed_new_files(tmp_path, data_root):
    again = make_seg_digits(tmp_path / "a", num_train=12, num_val=4, size=128)
    other = make_seg_digits(tmp_path / "b", num_train=12, num_val=4, size=128, seed=1)
    name = "annotations/training/seg_digits_training_00003.png"
    assert (again / name).read_bytes() == (data_root / name).read_bytes()
    assert (other / name).read_bytes() != (data_root / name).read_bytes()
    with pytest.raises(ValueError, match="num_val=0"):
        make_seg_digits(tmp_path / "c", num_val=0)


def test_overrides_are_yaml_values_merged_as_cfg_options():
    cfg = load_seg_config(DEMO, ["model.backbone.init_cfg={type: Pretrained, checkpoint: /w.safetensors}",
                                 "train_cfg.max_iters=7", "model.backbone.model_kwargs.depths=[1, 1, 2, 1]",
                                 "train_pipeline.3.cat_max_ratio=0.5", "model.backbone.norm_eval=true"])
    assert cfg.model.backbone.init_cfg == {"type": "Pretrained", "checkpoint": "/w.safetensors"}
    assert cfg.train_cfg.max_iters == 7 and cfg.train_cfg.val_interval == 3000
    assert cfg.model.backbone.model_kwargs.depths == [1, 1, 2, 1] and cfg.model.backbone.model_kwargs.window_size == 4
    assert cfg.train_pipeline[3] == {"type": "RandomCrop", "crop_size": (64, 64), "cat_max_ratio": 0.5}
    assert cfg.model.backbone.norm_eval is True


def test_bad_override_is_an_error(tmp_path, capsys):
    assert train_main(["--config", str(DEMO), "--output", str(tmp_path), "--set", "train_cfg.max_iters"]) == 2
    assert "is not of the form" in capsys.readouterr().err


def test_train_eval_resume_through_the_cli(tmp_path, data_root, capsys):
    work = tmp_path / "run"
    assert train_main(["--config", str(DEMO), "--output", str(work), *_tiny(data_root, 4, 2)]) == 0
    out = capsys.readouterr().out
    assert (work / "iter_2.pth").is_file() and (work / "iter_4.pth").is_file()
    assert (work / "last_checkpoint").read_text().strip() == str(work / "iter_4.pth")
    line = re.search(r"^validation: (.*)$", out, re.M).group(1)
    val = {k: float(v) for k, v in re.findall(r"(aAcc|mIoU|mAcc) ([0-9.]+) %", line)}
    assert val.keys() == {"aAcc", "mIoU", "mAcc"}

    # a fresh Runner with the saved weights scores the validation set exactly as the run's last validation did
    assert eval_main(["--config", str(DEMO), "--checkpoint", str(work / "iter_4.pth"), *_data_sets(data_root),
                      "--json"]) == 0
    metrics = _metrics_from(capsys.readouterr().out)
    assert 0.0 <= metrics["mIoU"] <= 100.0 and 0.0 <= metrics["aAcc"] <= 100.0
    assert metrics == pytest.approx(val, abs=0.01)

    # --resume auto continues at iteration 5 from iter_4.pth; the earlier checkpoints stay as they were
    before = set(work.glob("*/vis_data/scalars.json"))
    stamp = (work / "iter_4.pth").stat().st_mtime_ns
    assert train_main(["--config", str(DEMO), "--output", str(work), "--resume", *_tiny(data_root, 6, 2)]) == 0
    assert _logged_iters(work, before) == [5, 6]
    assert (work / "iter_4.pth").stat().st_mtime_ns == stamp
    with seg_safe_globals():
        meta = torch.load(work / "iter_6.pth", map_location="cpu", weights_only=True)["meta"]
    assert meta["iter"] == 6

    # --resume PATH into a new folder continues from that checkpoint's iteration
    other = tmp_path / "from_iter_2"
    assert train_main(["--config", str(DEMO), "--output", str(other), "--resume", str(work / "iter_2.pth"),
                       *_tiny(data_root, 3, 1)]) == 0
    assert _logged_iters(other, set()) == [3]
    capsys.readouterr()


class _Payload:
    """Stands for any class a pickle could name: not on the allowlist, so never built."""


def test_checkpoint_with_other_globals_is_refused(tmp_path, capsys, data_root):
    bad = tmp_path / "bad.pth"
    torch.save({"state_dict": {}, "meta": _Payload()}, bad)
    with pytest.raises(ValueError, match="cannot be loaded safely"):
        check_checkpoint(bad)
    assert eval_main(["--config", str(DEMO), "--checkpoint", str(bad), *_data_sets(data_root)]) == 2
    assert "cannot be loaded safely" in capsys.readouterr().err


def test_missing_data_root_names_the_fix(tmp_path, capsys):
    missing = tmp_path / "seg_digits"
    assert train_main(["--config", str(DEMO), "--output", str(tmp_path / "run"), *_data_sets(missing)]) == 2
    err = capsys.readouterr().err
    assert f"train_dataloader.dataset.data_root '{missing}' does not exist" in err
    assert f"python -m zoo.data.seg_synth {missing}" in err


def test_missing_checkpoint_is_one_line_and_debug_shows_the_traceback(tmp_path, capsys, data_root):
    from zoo.errors import UserError

    missing = tmp_path / "iter_1.pth"
    assert eval_main(["--config", str(DEMO), "--checkpoint", str(missing), *_data_sets(data_root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("eval.py: error: ") and str(missing) in err[0]
    with pytest.raises(UserError, match="does not exist"):
        eval_main(["--config", str(DEMO), "--checkpoint", str(missing), "--debug", *_data_sets(data_root)])
