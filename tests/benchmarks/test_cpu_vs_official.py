"""benchmarks.cpu_vs_official: the pairing of the timings, one tiny model and op case end to end, the CLI."""
from __future__ import annotations

import json

import pytest
import torch

from benchmarks import cpu_vs_official as cvo
from benchmarks.memory import FAMILIES
from benchmarks.ops import OP_BENCHES


def test_time_pair_warms_up_then_alternates_the_order():
    calls = []
    off, zoo, off_min, zoo_min = cvo.time_pair(lambda: calls.append("o"), lambda: calls.append("z"), warmup=2,
                                               repeats=4)
    assert "".join(calls) == "ozoz" + "oz" + "zo" + "oz" + "zo"
    assert 0 <= off_min <= off and 0 <= zoo_min <= zoo


@pytest.mark.parametrize("warmup,repeats", [(0, 0), (-1, 3)])
def test_time_pair_rejects_bad_counts(warmup, repeats):
    with pytest.raises(ValueError, match=f"repeats={repeats}, warmup={warmup}"):
        cvo.time_pair(lambda: None, lambda: None, warmup=warmup, repeats=repeats)
    with pytest.raises(ValueError, match="clock must be one of .* got 'sundial'"):
        cvo.time_pair(lambda: None, lambda: None, warmup=0, repeats=1, clock="sundial")


def test_cpu_clock_does_not_count_sleep():
    """process_time: a side that sleeps (waits, as for a core held by others) costs no CPU time."""
    import time

    off, zoo, _, _ = cvo.time_pair(lambda: time.sleep(0.05), lambda: sum(range(200000)), warmup=0, repeats=1,
                                   clock="cpu")
    assert off < 20 < 50 and zoo > 0


def test_every_op_has_a_paper_preset():
    assert set(cvo.OP_PRESETS) == set(OP_BENCHES)
    for op, preset in cvo.OP_PRESETS.items():
        assert OP_BENCHES[op].presets[preset], (op, preset)


def test_op_case_official_against_reference():
    bench = OP_BENCHES["neighborhood_attention_2d"]
    case = bench.presets["tiny"][1]  # dilation 3 over a 13 x 10 map
    rows = cvo.bench_op_case(bench, case, modes=cvo.MODES, warmup=0, repeats=1, log=lambda *_: None)
    assert [r.mode for r in rows] == list(cvo.MODES)
    for r in rows:
        assert r.kind == "op" and r.case == case.label
        assert r.official_ms > 0 and r.zoo_ms > 0 and r.ratio == r.official_ms / r.zoo_ms
        assert r.official_best_ms == r.official_ms and r.zoo_best_ms == r.zoo_ms  # one round: min = median
        assert r.rel_err < 1e-5


def test_tiny_model_run_and_tables(tmp_path):
    """One small model, one repeat, both modes, through main(): JSON and markdown written, the same function."""
    threads = torch.get_num_threads()
    out_json, out_md = tmp_path / "run.json", tmp_path / "run.md"
    assert cvo.main(["--families", "nat_mini", "--ops", "none", "--side", "64", "--repeats", "1", "--warmup", "0",
                     "--threads", "1", "--clock", "cpu", "--json", str(out_json), "--markdown", str(out_md)]) == 0
    assert torch.get_num_threads() == threads  # restored
    record = json.loads(out_json.read_text())
    assert record["settings"]["threads"] == 1 and record["settings"]["repeats"] == 1
    assert record["settings"]["clock"] == "cpu"
    rows = record["rows"]
    assert [(r["name"], r["mode"]) for r in rows] == [("NAT", "fwd"), ("NAT", "fwdbwd")]
    for r in rows:
        assert r["case"] == "nat_mini 1x64x64"
        assert r["rel_err"] < 1e-4  # official formulation and zoo reference compute the same model
        assert r["ratio"] == pytest.approx(r["official_ms"] / r["zoo_ms"])
    table = out_md.read_text()
    assert "| NAT | nat_mini 1x64x64 |" in table and table.count("**") == 4 and "CPU time of the process" in table


def test_families_by_label_or_model_and_all_once():
    by_name = {f.label: f for f in FAMILIES} | {f.model: f for f in FAMILIES}
    assert cvo._select("families", "all", by_name) == list(FAMILIES)
    assert cvo._select("families", "NAT,ravlt_t", by_name) == [by_name["NAT"], by_name["RAVLT"]]
    assert cvo._select("families", "none", by_name) == []


@pytest.mark.parametrize("argv,match", [
    (["--families", "NoSuchNet"], r"unknown families \['NoSuchNet'\]"),
    (["--ops", "no_such_op"], r"unknown ops \['no_such_op'\]"),
])
def test_unknown_names_are_errors(argv, match):
    with pytest.raises(SystemExit, match=match):
        cvo.main(argv)


@pytest.mark.parametrize("argv", [["--repeats", "0"], ["--modes", "fwd,sideways"], ["--warmup", "-1"],
                                  ["--clock", "sundial"]])
def test_bad_numbers_and_modes_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cvo.main(["--families", "none", "--ops", "none", *argv])
    assert exc.value.code == 2
    assert argv[0] in capsys.readouterr().err
