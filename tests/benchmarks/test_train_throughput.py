"""benchmarks/train_throughput.py: a CPU smoke test of the measuring code (every configuration but compile), and
the GPU measurement itself (fp32 eager vs bf16 / channels-last / compile) where CUDA is available."""
from __future__ import annotations

import importlib.util
import json

import pytest

from tests.engine.engine_helpers import ROOT, TINY_MODEL

pytestmark = pytest.mark.usefixtures("one_thread")


def _script():
    spec = importlib.util.spec_from_file_location("train_throughput", ROOT / "benchmarks" / "train_throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_smoke_run_writes_a_result(tmp_path, capsys):
    out = tmp_path / "r.json"
    args = ["--model", "zoo_davit_tiny", "--model-kwargs", json.dumps(TINY_MODEL["kwargs"]), "--batch", "4",
            "--img-size", "32", "--steps", "2", "--warmup", "1", "--configs", "fp32,bf16,bf16_cl", "--device", "cpu"]
    script = _script()
    with pytest.raises(SystemExit):  # CPU numbers are not results unless asked for
        script.main([*args, "--json", str(out)])
    assert "refusing to record CPU timings" in capsys.readouterr().err
    assert script.main([*args, "--json", str(out), "--allow-cpu"]) == 0
    record = json.loads(out.read_text())
    assert [r["config"] for r in record["results"]] == ["fp32", "bf16", "bf16_cl"]
    assert record["results"][0]["speedup_vs_fp32_eager"] == 1.0
    assert all(r["img_per_s"] > 0 for r in record["results"])


@pytest.mark.gpu
def test_gpu_training_step_throughput(tmp_path):
    out = tmp_path / "gpu.json"
    assert _script().main(["--model", "zoo_davit_tiny", "--batch", "64", "--steps", "10", "--json", str(out)]) == 0
    results = {r["config"]: r for r in json.loads(out.read_text())["results"]}
    assert set(results) == {"fp32", "bf16", "bf16_cl", "bf16_compile", "bf16_compile_cl"}
    assert results["bf16"]["img_per_s"] > results["fp32"]["img_per_s"]  # tensor cores

