"""The benchmark command (benchmarks.cli, ``eval.py bench``): it runs on the CPU at tiny sizes, reports every
column, checks every candidate against the official formulation before timing (and says so loudly when one
disagrees), and rejects bad arguments with the valid choices."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.cli import main
from benchmarks.harness import rel_err
from benchmarks.models import MODEL_COLUMNS
from benchmarks.ops import OP_BENCHES, OP_CANDIDATES, OP_COLUMNS, OPS, PRESETS
from benchmarks.ops import bilevel_routing_attention as bra
from benchmarks.ops.window_attention import WindowCase, window_official
from ops.bilevel_routing_attention.official import bilevel_routing_attention_cost
from ops.channel_attention.official import channel_attention_cost
from ops.window_attention.official import window_attention_cost
from zoo.engine.flops import _OP_FORMULAS

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
    return window_official(inp, case) * 1.01


def _exploding(inp, case):
    raise RuntimeError("kernel exploded")


def test_a_wrong_candidate_is_reported_loudly(monkeypatch, tmp_path, capsys):
    candidates = dict(OP_CANDIDATES["window_attention"], reference=_off_by_one_percent, sdpa=_exploding)
    monkeypatch.setitem(OP_CANDIDATES, "window_attention", candidates)
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
    case = bra.BilevelRoutingCase(2, 12, 12, 2, 16, 3, 2)
    inp = bra.BENCH.make_inputs(case, torch.device("cpu"), torch.float32, grad=False)
    ref = OP_CANDIDATES[BRA]["reference"](inp, case)
    assert torch.allclose(bra.bra_official(inp, case), ref, atol=1e-5)
    wrong = bra.bra_official(inp, bra.BilevelRoutingCase(2, 12, 12, 2, 16, 3, 1))
    assert rel_err(wrong, ref) > 1e-2  # the check is sensitive to the routing


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


# ---- every op registers the same way: one module of benchmarks/ops each ----------------------------------------------

# the ops without tests of their own above
PLUGIN_OPS = sorted(set(OPS) - {"window_attention", "channel_attention", BRA})


def test_every_op_is_registered_the_same_way():
    assert set(OPS) == {"window_attention", "channel_attention", BRA, "hilo_attention", "window_grid_attention",
                        "neighborhood_attention_2d", "agent_attention", "rala", "overlapping_window_attention"}
    for op in OPS:
        bench = OP_BENCHES[op]
        assert PRESETS[op] is bench.presets
        assert list(OP_CANDIDATES[op])[0] == "official" and "reference" in bench.candidates
        assert "triton" in bench.candidates and "tiny" in bench.presets
        for cases in bench.presets.values():
            for case in cases:
                cost = case.cost(torch.bfloat16)
                assert cost.flops_fwd > 0 and cost.flops_bwd > 0 and cost.bytes_bwd > cost.bytes_fwd > 0, case


@pytest.mark.parametrize("op", PLUGIN_OPS)
def test_plugin_op_tiny_preset_checks_against_official(op, tmp_path, capsys):
    # CPU, fwd and fwd+bwd: every runnable candidate but triton (the interpreter is too slow for a harness test;
    # the kernels have their own tests) agrees with the official formulation on the output(s) and every gradient.
    names = [c for c in OP_CANDIDATES[op] if c != "triton"]
    out_json = tmp_path / "r.json"
    rc, out, err = _run(capsys, "--op", op, "--preset", "tiny", *FAST, "--candidates", ",".join(names),
                        "--json", str(out_json))
    assert rc == 0, err
    rows = _rows(out_json, "ops")
    assert len(rows) == len(names) * len(PRESETS[op]["tiny"])
    ran = set()
    for row in rows:
        assert set(row) == set(OP_COLUMNS)
        if row["status"] == "skipped":  # a candidate that cannot run here (flex backward, optional packages)
            assert row["reason"] and row["impl"] not in ("official", "reference"), row
            continue
        if row["status"] == "unchecked":  # another function on purpose, said so
            assert row["impl"] in OP_BENCHES[op].unchecked and row["error"] is None, row
        else:
            assert row["status"] == "ok" and row["error"] <= 1e-5, row
        assert row["fwd_ms"] > 0 and row["fwdbwd_ms"] > 0 and row["fwdbwd_mem_mib"] is None
        ran.add(row["impl"])
    assert {"official", "reference"} <= ran
    if "sdpa" in names and "sdpa" not in OP_BENCHES[op].skip_reasons:
        assert "sdpa" in ran


def test_plugin_triton_candidate_under_the_interpreter(tmp_path, capsys):
    # The plugin ops' triton candidates reach the op's Triton backend (checked against official, output and every
    # gradient); the smallest of them here, the others the same way by hand (see the report of this harness).
    out_json = tmp_path / "r.json"
    rc, out, err = _run(capsys, "--op", "agent_attention", "--shape", "1,4,5,1,16,4", *FAST, "--candidates", "triton",
                        "--allow-interpret", "--json", str(out_json))
    assert rc == 0, err
    row = {r["impl"]: r for r in _rows(out_json, "ops")}["triton"]
    assert row["status"] == "ok" and row["error"] < 1e-5 and row["fwdbwd_ms"] > 0


def test_op_bench_contract():
    from benchmarks.harness import OpBench

    official = OP_CANDIDATES["hilo_attention"]["official"]
    kw = dict(make_inputs=lambda *a: None, case_type=object, shape_fields="B")
    with pytest.raises(ValueError, match="first candidate must be 'official'"):
        OpBench("x", {"tiny": []}, {"sdpa": official, "official": official}, **kw)
    with pytest.raises(ValueError, match="'tiny' preset"):
        OpBench("x", {"big": []}, {"official": official}, **kw)
    with pytest.raises(ValueError, match="cannot be unchecked"):
        OpBench("x", {"tiny": []}, {"official": official}, unchecked={"official": "no"}, **kw)


def test_plugin_op_wrong_candidate_is_flagged(monkeypatch, tmp_path, capsys):
    # A candidate with several outputs (HiLo's Hi-Fi and Lo-Fi), one of them 1% off: MISMATCH, exit status 1.
    op = "hilo_attention"
    official = OP_CANDIDATES[op]["official"]

    def lofi_off(inp, case):
        hifi, lofi = official(inp, case)
        return hifi, lofi * 1.01

    monkeypatch.setitem(OP_CANDIDATES, op, dict(OP_CANDIDATES[op], reference=lofi_off))
    out_json = tmp_path / "r.json"
    rc, out, err = _run(capsys, "--op", op, "--shape", "1,4,6,1,2,8,2", *FAST, "--candidates", "reference",
                        "--json", str(out_json))
    assert rc == 1 and "MISMATCH" in err and "impl=reference" in err
    status = {r["impl"]: r for r in _rows(out_json, "ops")}
    assert status["official"]["status"] == "ok"
    assert status["reference"]["status"] == "MISMATCH" and status["reference"]["error"] > 5e-3


def test_hilo_cost_and_shape_arguments(capsys):
    from benchmarks.ops.hilo_attention import HiLoCase
    from ops.hilo_attention.official import lofi_attention_cost

    # LITv2-S stage 3 at 224: Hi-Fi 2 heads in 2x2 windows + Lo-Fi 10 heads against the 7x7 pooled map.
    c = HiLoCase(64, 14, 14, 2, 10, 32, 2).cost(torch.bfloat16)
    hifi = window_attention_cost(64, 14, 14, 2, 32, 2, elem_size=2)
    assert c.flops_fwd == hifi.flops_fwd + 4 * 64 * 10 * 196 * 49 * 32
    lofi = lofi_attention_cost(64, 196, 49, 10, 32, elem_size=2)
    assert c.bytes_bwd == hifi.bytes_bwd + (4 * 196 + 4 * 49) * 64 * 10 * 32 * 2 == hifi.bytes_bwd + lofi.bytes_bwd
    rc, _, err = _run(capsys, "--op", "hilo_attention", "--shape", "1,8,8,1,2,8,1")
    assert rc == 2 and "window must be >= 2" in err
    rc, _, err = _run(capsys, "--op", "hilo_attention", "--shape", "1,8,8,1,2,8")
    assert rc == 2 and "B,H,W,hifi_heads,lofi_heads,D,window" in err


def test_window_grid_cost():
    from ops.window_grid_attention.official import window_grid_attention_cost

    # EMOv2-5M stage 3 at 224: 14x14, ws 7: 4 windows and 4 grids of 49 positions; q/k 32 wide, v 128.
    c = window_grid_attention_cost(128, 14, 14, 5, 32, 128, 7, elem_size=2)
    pairs = 2 * 4 * 49 ** 2
    assert (c.flops_fwd, c.flops_bwd) == (2 * 128 * 5 * (32 + 128) * pairs, 2 * 128 * 5 * (3 * 32 + 2 * 128) * pairs)
    t_qk, t_v = 128 * 196 * 5 * 32 * 2, 128 * 196 * 5 * 128 * 2
    assert (c.bytes_fwd, c.bytes_bwd) == (2 * t_qk + 2 * t_v, 4 * t_qk + 4 * t_v)
    # 9 rows, ws 4 -> 3 groups: windows of 4, 4, 1 rows; grids rows {0,3,6}, {1,4,7}, {2,5,8} = 3, 3, 3.
    c = window_grid_attention_cost(1, 9, 4, 1, 1, 1, 4, elem_size=4)
    assert c.flops_fwd == 2 * 2 * ((16 + 16 + 1) * 16 + (9 + 9 + 9) * 16)


NA = "neighborhood_attention_2d"


def test_na_flex_forward_on_cpu_and_natten_skip_reasons(monkeypatch, tmp_path, capsys):
    from benchmarks.ops import neighborhood_attention_2d as na

    out_json = tmp_path / "r.json"
    rc, out, err = _run(capsys, "--op", NA, "--shape", "1,7,8,2,8,3,2", *FAST, "--mode", "fwd", "--allow-interpret",
                        "--candidates", "flex", "--json", str(out_json))
    assert rc == 0, err
    row = {r["impl"]: r for r in _rows(out_json, "ops")}["flex"]  # block mask + rpb score_mod = official
    assert row["status"] == "ok" and row["error"] < 1e-5
    # NATTEN >= 0.20 (no rpb) is skipped on rpb cases with the reason, and runs the no-bias ones.
    monkeypatch.setattr(na, "_natten_api", lambda: "fused")
    assert "no relative-position bias" in na._case_skip("natten", na.NeighborhoodCase(1, 7, 7, 1, 8, 3, 1))
    assert na._case_skip("natten", na.NeighborhoodCase(1, 7, 7, 1, 8, 3, 1, rpb=False)) is None
    monkeypatch.setattr(na, "_natten_api", lambda: None)
    assert "not installed" in na._natten_skip(torch.device("cpu"), False)


def test_na_official_index_math_and_arguments(capsys):
    from ops.neighborhood_attention import neighborhood_indices
    from ops.neighborhood_attention.official import natten_axis, neighborhood_attention_cost

    for length, kernel, dilation in [(7, 7, 1), (9, 3, 1), (56, 7, 8), (13, 3, 3), (30, 5, 4), (11, 5, 2)]:
        for ours, natten in zip(neighborhood_indices(length, kernel, dilation), natten_axis(length, kernel, dilation)):
            assert torch.equal(ours, natten), (length, kernel, dilation)
    c = neighborhood_attention_cost(32, 56, 56, 2, 32, 7, elem_size=2)
    t = 32 * 56 * 56 * 2 * 32 * 2
    assert (c.flops_fwd, c.bytes_fwd, c.bytes_bwd) == (4 * 32 * 2 * 3136 * 49 * 32, 4 * t + 2 * 169 * 2,
                                                       8 * t + 4 * 169 * 2)
    rc, _, err = _run(capsys, "--op", NA, "--shape", "1,10,10,1,8,3,4")
    assert rc == 2 and "smaller than kernel x dilation = 12" in err
    rc, _, err = _run(capsys, "--op", NA, "--shape", "1,10,10,1,8,4,1")
    assert rc == 2 and "kernel must be odd" in err


def test_agent_cost():
    from benchmarks.ops.agent_attention import AgentCase

    # Agent-Swin-T stage 1 at 224: 3136 tokens, 3 heads of 32, 9 agents; two stages of two products each.
    c = AgentCase(64, 56, 56, 3, 32, 9).cost(torch.bfloat16)
    t, t_a, maps = 64 * 3136 * 3 * 32 * 2, 64 * 9 * 3 * 32 * 2, 2 * 3 * 9 * 3136 * 2
    assert (c.flops_fwd, c.flops_bwd) == (8 * 64 * 3 * 3136 * 9 * 32, 20 * 64 * 3 * 3136 * 9 * 32)
    assert (c.bytes_fwd, c.bytes_bwd) == (4 * t + t_a + maps, 8 * t + 2 * t_a + 2 * maps)


def test_rala_sdpa_is_marked_unchecked_and_fbla_glue(monkeypatch, tmp_path, capsys):
    import types

    from benchmarks.ops import rala

    out_json = tmp_path / "r.json"
    rc, out, err = _run(capsys, "--op", "rala", "--shape", "1,3,5,2,8", *FAST, "--candidates", "sdpa,fbla",
                        "--json", str(out_json))
    assert rc == 0, err
    status = {r["impl"]: r for r in _rows(out_json, "ops")}
    assert status["sdpa"]["status"] == "unchecked" and "NOT the same function" in status["sdpa"]["reason"]
    assert status["sdpa"]["error"] is None and status["sdpa"]["fwdbwd_ms"] > 0
    assert "unchecked" in out and "NOT the same function" in out
    assert status["fbla"]["status"] == "skipped" and "flash_bla" in status["fbla"]["reason"]

    # flash_bla's decoupled_la is a CUDA kernel; its documented math in torch checks this module's glue around it.
    def decoupled_la(q, k, q_rope, k_rope, v, scale=None, eps=1e-6):
        return (q_rope @ (k_rope.transpose(-2, -1) @ (v * scale))) / (q @ k.mean(-2, keepdim=True).transpose(-2, -1)
                                                                     + eps)

    for name in ("flash_bla", "flash_bla.ops", "flash_bla.ops.linear_attn"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "flash_bla.ops.linear_attn.decoupled",
                        types.SimpleNamespace(decoupled_la=decoupled_la))
    case = rala.RalaCase(2, 5, 7, 2, 16)
    inp = rala.BENCH.make_inputs(case, torch.device("cpu"), torch.float64, grad=False)
    assert torch.allclose(rala.rala_fbla(inp, case), rala.rala_official(inp, case), atol=1e-12)
    c = case.cost(torch.float32)
    t = 2 * 35 * 2 * 16 * 4
    assert (c.flops_fwd, c.bytes_fwd, c.bytes_bwd) == (2 * 2 * 35 * (4 * 256 + 96), 6 * t + 2 * 35 * 16 * 4,
                                                       11 * t + 2 * 35 * 16 * 4)


def test_ocab_official_bias_layout_and_arguments(capsys):
    from ops.overlapping_window_attention import overlapping_relative_position_bias
    from ops.overlapping_window_attention.official import relative_position_index_oca, table_to_official

    # HAT: ws 16, wse 24 -> a (1521, heads) table, official index in [-880, 640] (negative entries wrap); the op's
    # (heads, 39, 39) table seen through the official index gives the op's own per-window bias.
    rpi = relative_position_index_oca(16, 24)
    assert rpi.shape == (256, 576) and (rpi.min().item(), rpi.max().item()) == (-880, 640)
    table = torch.randn(6, 39, 39)
    official = table_to_official(table, 16, 24)[rpi.view(-1)].view(256, 576, 6).permute(2, 0, 1)
    assert torch.equal(official, overlapping_relative_position_bias(table, (16, 16), (24, 24)))
    rc, _, err = _run(capsys, "--op", "overlapping_window_attention", "--shape", "1,10,8,1,8,4,6")
    assert rc == 2 and "multiples of window=4" in err
    rc, _, err = _run(capsys, "--op", "overlapping_window_attention", "--shape", "1,8,8,1,8,4,5")
    assert rc == 2 and "exceed it by an even amount" in err


def test_plugin_cost_formulas_match_the_official_formulations_matmuls():
    # torch's FlopCounterMode on each official formulation (the matmuls it runs) gives the closed-form forward FLOPs
    # of the case (divisible maps: the official code computes nothing on padding there).
    from torch.utils.flop_counter import FlopCounterMode

    from benchmarks.ops.agent_attention import AgentCase
    from benchmarks.ops.hilo_attention import HiLoCase
    from benchmarks.ops.neighborhood_attention_2d import NeighborhoodCase
    from benchmarks.ops.overlapping_window_attention import OverlappingWindowCase
    from benchmarks.ops.rala import RalaCase
    from benchmarks.ops.window_grid_attention import WindowGridCase

    cases = {
        "hilo_attention": HiLoCase(2, 8, 12, 2, 3, 16, 2),
        "window_grid_attention": WindowGridCase(2, 8, 12, 2, 16, 24, 4),
        "neighborhood_attention_2d": NeighborhoodCase(1, 9, 11, 2, 8, 3, 2),
        "agent_attention": AgentCase(2, 5, 7, 2, 16, 4),
        "rala": RalaCase(2, 5, 7, 2, 16),
        "overlapping_window_attention": OverlappingWindowCase(2, 8, 12, 3, 8, 4, 6),
    }
    for op, case in cases.items():
        inp = OP_BENCHES[op].make_inputs(case, torch.device("cpu"), torch.float32, grad=False)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            OP_CANDIDATES[op]["official"](inp, case)
        expected = case.cost(torch.float32).flops_fwd
        if op == "rala":  # the official code takes the normaliser's key sum as k.mean(): not a matmul
            expected -= 2 * case.batch * case.heads * case.tokens * case.head_dim
        assert counter.get_total_flops() == expected, op
