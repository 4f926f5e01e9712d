"""eval.py and train.py as scripts: metrics of an export / a checkpoint, ImageFolder data, errors, bench."""
from __future__ import annotations

import importlib.util
import json
import sys
import types

import pytest
from engine_helpers import ROOT, run_script

from zoo.engine.cli import eval_main, train_main
from zoo.engine.evaluate import evaluate_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


def test_eval_script_on_an_export_reports_the_training_accuracy(trained_run):
    proc = run_script("eval.py", "--checkpoint", str(trained_run.export_dir), "--json")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(proc.stdout)
    assert metrics["count"] == 360 and metrics["weights"] == "ema" and metrics["kind"] == "export"
    assert metrics["top1"] == pytest.approx(trained_run.metrics["top1"])
    assert metrics["top5"] >= metrics["top1"]
    assert metrics["loss"] == pytest.approx(trained_run.metrics["loss"], rel=1e-4)


def test_eval_of_a_training_checkpoint_matches_its_export(trained_run):
    from_ckpt = evaluate_checkpoint(trained_run.checkpoint)
    assert from_ckpt["kind"] == "checkpoint" and from_ckpt["weights"] == "ema"
    assert from_ckpt["top1"] == pytest.approx(trained_run.metrics["top1"])
    raw = evaluate_checkpoint(trained_run.checkpoint, weights="model")
    assert raw["weights"] == "model" and raw["count"] == 360


def test_eval_on_an_image_folder(trained_run, tmp_path):
    from PIL import Image

    from zoo.data import digits_split

    images, labels = digits_split("test")
    for c in range(10):
        (tmp_path / "val" / str(c)).mkdir(parents=True)
    for i in range(40):
        Image.fromarray(images[i]).save(tmp_path / "val" / str(labels[i]) / f"{i}.png")
    m = evaluate_checkpoint(trained_run.export_dir, data_dir=tmp_path)
    assert m["count"] == 40 and 0.0 <= m["top1"] <= 100.0

    (tmp_path / "val" / "extra").mkdir()
    Image.fromarray(images[0]).save(tmp_path / "val" / "extra" / "x.png")
    with pytest.raises(ValueError, match="are not the model's labels"):
        evaluate_checkpoint(trained_run.export_dir, data_dir=tmp_path)


def test_eval_errors_are_plain_words(tmp_path, capsys):
    assert eval_main(["--checkpoint", str(tmp_path)]) == 2
    assert "expected an export folder" in capsys.readouterr().err
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"PK\x03\x04 truncated")
    assert eval_main(["--checkpoint", str(bad)]) == 2
    assert "truncated or corrupt" in capsys.readouterr().err


def test_train_help_works():
    proc = run_script("train.py", "--help")
    assert proc.returncode == 0, proc.stderr
    for flag in ("--config", "--set", "--output", "--resume"):
        assert flag in proc.stdout


def test_train_cli_reports_recipe_errors(tmp_path, capsys):
    assert train_main(["--set", "optim.lrr=0.1", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown recipe key 'optim.lrr'" in err and "valid keys in section 'optim'" in err
    assert train_main(["--resume", str(tmp_path / "missing.pth")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_eval_bench_dispatches_to_the_benchmark_module(monkeypatch):
    seen = []
    stub = types.ModuleType("benchmarks.cli")
    stub.main = lambda argv: seen.append(argv) or 7
    monkeypatch.setitem(sys.modules, "benchmarks.cli", stub)
    spec = importlib.util.spec_from_file_location("eval_script", ROOT / "eval.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["bench", "--model", "zoo_davit_tiny"]) == 7
    assert seen == [["--model", "zoo_davit_tiny"]]
