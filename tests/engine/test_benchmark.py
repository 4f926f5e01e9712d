"""The benchmark harness (zoo.engine.benchmark): it runs on the CPU at tiny sizes, reports every column, checks every
candidate against the official formulation before timing (and says so loudly when one disagrees), and rejects bad
arguments with the valid choices."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from zoo.engine import benchmark
from zoo.engine.benchmark import MODEL_COLUMNS, OP_COLUMNS, PRESETS, WindowCase, main
from zoo.engine.flops import _OP_FORMULAS, bilevel_routing_attention_cost, channel_attention_cost, window_attention_cost

FAST = ["--device", "cpu", "--warmup", "0", "--iters", "1"]
ROOT = Path(__file__).resolve().parents[2]


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main([*argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _rows(path: Path, key: str) -> list[dict]:
    data = json.loads(path.read_text())
    assert {"device", "device_name", "torch", "triton", "timm", "date", "argv"} <= data["meta"].keys()
    return data[key]


@pytest.mark.parametrize("op", ["window_attention", "channel_attention"])
def test_op_tiny_preset_checks_and_reports_every_column(op, tmp_path, capsys):
    out_json = tmp_path / "r.json"
    rc, out, err = _run(capsys, "--op", op, "--preset", "tiny", *FAST, "--json", str(out_json))
    assert rc == 0, err
    rows = _rows(out_json, "ops")
    assert len(rows) == 4 * len(PRESETS[op]["tiny"])
    for row in rows:
        assert set(row) == set(OP_COLUMNS)
        if row["impl"] == "triton":  # CPU without --allow-interpret: skipped with the reason
            assert row["status"] == "skipped" and "--allow-interpret" in row["reason"]
            continue
        assert row["status"] == "ok" and row["error"] <= 1e-5, row
        for mode in ("fwd", "fwdbwd"):
            assert row[f"{mode}_ms"] > 0 and row[f"{mode}_speedup"] > 0
            assert row[f"{mode}_roofline"] is None and row[f"{mode}_mem_mib"] is None  # CPU: n/a, not invented
        assert row["flops_fwd"] > 0 and row["bytes_bwd"] > row["bytes_fwd"]
    for header in ("impl", "check (rel err)", "fwd ms", "fwd speedup", "fwd roofline", "fwd MiB", "f+b ms",
                   "f+b speedup", "f+b roofline", "f+b MiB", "floor fwd ms", "GFLOP f+b"):
        assert header in out
    assert "official" in out and "sdpa" in out and "reference" in out and "triton: skipped" in out


def test_roofline_from_given_peaks_and_markdown(capsys):
    rc, out, err = _run(capsys, "--op", "channel_attention", "--shape", "2,30,2,8", *FAST, "--dtype", "bf16",
                        "--mode", "fwd", "--peak-tflops", "1", "--peak-gbs", "10", "--markdown")
    assert rc == 0, err
    assert "| case | impl | check (rel err) |" in out
    fractions = [line.split("|")[6].strip() for line in out.splitlines() if "| 2x30x2x8 | " in line and "%" in line]
    assert fractions and all(f.endswith("%") and float(f[:-1]) > 0 for f in fractions)
    assert "command line 1 TFLOP/s, 10 GB/s" in out


def _off_by_one_percent(inp, case):
    return benchmark.window_official(inp, case) * 1.01


def _exploding(inp, case):
    raise RuntimeError("kernel exploded")


def test_a_wrong_candidate_is_reported_loudly(monkeypatch, tmp_path, capsys):
    candidates = dict(benchmark.OP_CANDIDATES["window_attention"], reference=_off_by_one_percent, sdpa=_exploding)
    monkeypatch.setitem(benchmark.OP_CANDIDATES, "window_attention", candidates)
    out_json = tmp_path / "r.json"
    rc, out, err = _run(capsys, "--op", "window_attention", "--shape", "1,7,7,2,8", *FAST,
                        "--candidates", "sdpa,reference", "--json", str(out_json))
    assert rc == 1
    assert "MISMATCH" in err and "impl=reference" in err and "kernel exploded" in err
    status = {r["impl"]: r for r in _rows(out_json, "ops")}
    assert status["official"]["status"] == "ok"
    assert status["reference"]["status"] == "MISMATCH" and status["reference"]["error"] == pytest.approx(0.01, rel=1e-3)
    assert status["reference"]["fwd_ms"] is not None  # still timed, flagged
    assert status["sdpa"]["status"] == "ERROR" and "kernel exploded" in status["sdpa"]["reason"]


def test_triton_under_the_interpreter_when_asked(tmp_path, capsys):
    # The harness's side of it (the kernels have their own tests in tests/ops): with --allow-interpret the triton
    # candidate runs, is checked against official and timed.
    if importlib.util.find_spec("ops.channel_attention.triton") is None:
        pytest.skip("ops/channel_attention/triton.py is not in this checkout")
    out_json = tmp_path / "r.json"
    rc, out, err = _run(capsys, "--op", "channel_attention", "--shape", "1,33,2,16", *FAST, "--candidates", "triton",
                        "--allow-interpret", "--json", str(out_json))
    assert rc == 0, err
    row = {r["impl"]: r for r in _rows(out_json, "ops")}["triton"]
    assert row["status"] == "ok" and row["error"] < 1e-5 and row["fwdbwd_ms"] > 0


def test_model_backends_against_a_baseline_model(tmp_path, capsys):
    out_json = tmp_path / "m.json"
    rc, out, err = _run(capsys, "--model", "zoo_davit_tiny", "--baseline-model", "davit_tiny", "--img-size", "32",
                        "--batch", "1", *FAST, "--backends", "reference", "--json", str(out_json))
    assert rc == 0, err
    rows = _rows(out_json, "models")
    assert [r["impl"] for r in rows] == ["baseline:davit_tiny", "reference"]
    for row in rows:
        assert set(row) == set(MODEL_COLUMNS)
        assert row["status"] == "ok" and row["error"] < 1e-4
        assert row["fwd_img_s"] > 0 and row["fwdbwd_img_s"] > 0 and row["fwd_peak_mib"] is None
    for header in ("fwd img/s", "f+b img/s", "fwd peak MiB", "f+b peak MiB", "f+b speedup"):
        assert header in out


@pytest.mark.parametrize("argv, message", [
    (["--op", "window_attn"], "invalid choice: 'window_attn'"),
    (["--op", "window_attention", "--preset", "davit_xl"], "valid: davit_t_224, davit_b_224, hat_ws16, tiny"),
    (["--op", "channel_attention", "--preset", "hat_ws16"], "valid: davit_t_224, davit_b_224, tiny"),
    (["--op", "window_attention", "--shape", "2,14,14,3"], "expects 5 positive sizes B,H,W,heads,D"),
    (["--op", "window_attention", "--shape", "2,14,14,3,16", "--window", "0"], "--window"),
    (["--op", "channel_attention", "--shape", "2,49,3,16", "--window", "4"], "window_attention only"),
    (["--op", "window_attention"], "give --preset"),
    (["--op", "window_attention", "--preset", "tiny", "--candidates", "flash"], "valid: official, sdpa"),
    (["--op", "window_attention", "--preset", "tiny", "--peak-tflops", "10"], "give both"),
    (["--op", "window_attention", "--preset", "tiny", "--backends", "triton"], "--model only"),
    (["--model", "zoo_davit_tiniest"], "unknown model 'zoo_davit_tiniest'; zoo models: "),
    (["--model", "zoo_davit_tiny", "--baseline-model", "nope"], "--baseline-model: unknown model 'nope'"),
    (["--model", "zoo_davit_tiny", "--backends", "cuda"], "valid: reference, triton"),
    (["--model", "zoo_davit_tiny", "--preset", "tiny"], "--op only"),
    (["--op", "window_attention", "--model", "zoo_davit_tiny"], "not allowed with argument"),
    (["--op", "window_attention", "--preset", "tiny", "--device", "tpu"], "--device"),
])
def test_bad_arguments_are_errors_naming_the_valid_values(argv, message, capsys):
    rc, _, err = _run(capsys, *argv)
    assert rc == 2
    assert message in err


def test_eval_py_bench_entry_point():
    proc = subprocess.run([sys.executable, "eval.py", "bench", "--list"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "davit_t_224: 64x56x56x3x32 w7x7" in proc.stdout and "zoo_davit_tiny" in proc.stdout


def test_cost_formulas():
    # Whole windows: 4 B nW heads N^2 D forward, 2.5x that backward; q, k, v, o (and grads) once each.
    c = window_attention_cost(64, 56, 56, 3, 32, 7, elem_size=2)
    assert c.flops_fwd == 4 * 64 * 64 * 3 * 49 ** 2 * 32 and c.flops_bwd == c.flops_fwd * 5 // 2
    t = 64 * 56 * 56 * 3 * 32 * 2
    assert (c.bytes_fwd, c.bytes_bwd) == (4 * t, 8 * t)
    # Partial windows count only valid positions: 10 = 4 + 4 + 2 rows, 5 = 4 + 1 columns.
    c = window_attention_cost(1, 10, 5, 1, 1, 4, elem_size=4)
    assert c.flops_fwd == 4 * (16 + 16 + 4) * (16 + 1)
    assert WindowCase(1, 10, 5, 1, 1, (4, 4), bias=True, mask=True).cost(torch.float32).bytes_fwd > 4 * 50 * 4
    c = channel_attention_cost(2, 49, 3, 16, elem_size=4)
    assert (c.flops_fwd, c.flops_bwd) == (4 * 2 * 3 * 49 * 256, 8 * 2 * 3 * 49 * 256)
    assert (c.bytes_fwd, c.bytes_bwd) == (4 * 2 * 49 * 3 * 16 * 4, 7 * 2 * 49 * 3 * 16 * 4)


# ---- bilevel_routing_attention ------------------------------------------------------------------------------------

BRA = "bilevel_routing_attention"


def test_bra_tiny_preset_official_and_reference_agree(tmp_path, capsys):
    out_json = tmp_path / "r.json"
    rc, out, err = _run(capsys, "--op", BRA, "--preset", "tiny", *FAST, "--json", str(out_json))
    assert rc == 0, err
    rows = _rows(out_json, "ops")
    assert len(rows) == 4 * len(PRESETS[BRA]["tiny"])
    for row in rows:
        assert set(row) == set(OP_COLUMNS)
        if row["impl"] in ("flex", "triton"):  # CPU: skipped with the reason (no flex backward, no CUDA)
            assert row["status"] == "skipped" and row["reason"], row
            continue
        assert row["status"] == "ok" and row["error"] <= 1e-5, row
        assert row["fwd_ms"] > 0 and row["fwdbwd_ms"] > 0 and row["fwdbwd_mem_mib"] is None
        assert row["flops_fwd"] > 0 and row["bytes_bwd"] > row["bytes_fwd"]
    assert "flex: skipped: FlexAttention has no backward on the CPU" in out and "triton: skipped" in out


def test_bra_flex_forward_on_cpu_when_asked(tmp_path, capsys):
    out_json = tmp_path / "r.json"
    rc, out, err = _run(capsys, "--op", BRA, "--shape", "1,8,8,2,8,2,2", *FAST, "--mode", "fwd", "--allow-interpret",
                        "--candidates", "flex,reference", "--json", str(out_json))
    assert rc == 0, err
    status = {r["impl"]: r for r in _rows(out_json, "ops")}
    assert status["flex"]["status"] == "ok" and status["flex"]["error"] < 1e-5 and status["flex"]["fwd_ms"] > 0
    rc, out, err = _run(capsys, "--op", BRA, "--shape", "1,8,8,2,8,2,2", *FAST, "--mode", "fwd", "--candidates", "flex")
    assert rc == 0 and "pass --allow-interpret with --mode fwd" in out


def test_bra_official_matches_the_op_and_the_check_sees_a_wrong_topk():
    torch.manual_seed(0)
    case = benchmark.BilevelRoutingCase(2, 12, 12, 2, 16, 3, 2)
    inp = benchmark._make_qkv_inputs(case, torch.device("cpu"), torch.float32, grad=False)
    ref = benchmark.OP_CANDIDATES[BRA]["reference"](inp, case)
    assert torch.allclose(benchmark.bra_official(inp, case), ref, atol=1e-5)
    wrong = benchmark.bra_official(inp, benchmark.BilevelRoutingCase(2, 12, 12, 2, 16, 3, 1))
    assert benchmark._rel_err(wrong, ref) > 1e-2  # the check is sensitive to the routing


def test_bra_presets_are_listed(capsys):
    rc, out, _ = _run(capsys, "--list")
    assert rc == 0
    assert "bilevel_routing_attention:" in out
    assert "biformer_s_224: 16x56x56x2x32 S7 top1; 16x28x28x4x32 S7 top4; 16x14x14x8x32 S7 top16" in out
    assert "biformer_s_512: 2x128x128x2x32 S8 top1; 2x64x64x4x32 S8 top4; 2x32x32x8x32 S8 top16" in out


@pytest.mark.parametrize("argv, message", [
    (["--shape", "1,10,10,2,8,3,2"], "multiples of n_win=3"),
    (["--shape", "1,8,8,2,8,2,5"], "topk=5 > n_win^2=4"),
    (["--shape", "1,8,8,2,8"], "7 positive sizes B,H,W,heads,D,n_win,topk"),
    (["--preset", "davit_t_224"], "valid: biformer_s_224, biformer_s_512, tiny"),
    (["--preset", "tiny", "--candidates", "sdpa"], "valid: official, flex, reference, triton"),
    (["--preset", "tiny", "--window", "4"], "window_attention only"),
])
def test_bra_bad_arguments(argv, message, capsys):
    rc, _, err = _run(capsys, "--op", BRA, *argv)
    assert rc == 2
    assert message in err


def test_bra_cost_formula_and_custom_op_formulas():
    # 4 B S^2 heads n (topk n) D forward, 2.5x backward; q, k, v, o (+ grads) once each plus the int64 index.
    c = bilevel_routing_attention_cost(16, 56, 56, 2, 32, 7, 1, elem_size=2)
    assert c.flops_fwd == 4 * 16 * 49 * 2 * 64 * 64 * 32 and c.flops_bwd == c.flops_fwd * 5 // 2
    t, index = 16 * 56 * 56 * 2 * 32 * 2, 16 * 49 * 1 * 8
    assert (c.bytes_fwd, c.bytes_bwd) == (4 * t + index, 8 * t + index)
    q, idx = (2, 8, 8, 2, 16), (2, 4, 3)
    fwd = _OP_FORMULAS["bilevel_routing_attention_fwd"](q, q, q, idx, 2, 2, 0.1, out_shape=None)
    bwd = _OP_FORMULAS["bilevel_routing_attention_bwd"](q, q, q, q, q, q[:4], idx, 2, 2, 0.1, out_shape=None)
    expected = bilevel_routing_attention_cost(2, 8, 8, 2, 16, 2, 3, elem_size=1)
    assert (fwd, bwd) == (expected.flops_fwd, expected.flops_bwd) == (4 * 2 * 4 * 2 * 16 * 48 * 16, fwd * 5 // 2)
