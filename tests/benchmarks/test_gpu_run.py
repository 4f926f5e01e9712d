"""benchmarks.gpu: the plan names only existing ops, presets and models; the CPU dry run executes every section
and writes the markdown; a spent budget skips items and says so."""
import json

import pytest

from benchmarks import gpu


def test_real_plan_refers_to_existing_presets_and_models():
    items = gpu.plan(dry_run=False)
    assert {op for op, _ in items["ops"]} == set(gpu.OP_PRESETS)
    assert {m for m, _ in items["models"]} == set(gpu.MODEL_FAMILIES)
    assert {c for _, c in items["models"]} == {"bf16", "bf16_compile"}
    assert [m for m, _ in items["memory"]] == [m for m, _ in gpu.MEMORY_CHECK]


def test_plan_rejects_a_missing_preset(monkeypatch):
    monkeypatch.setitem(gpu.OP_PRESETS, "rala", ("no_such_preset",))
    with pytest.raises(ValueError, match="no_such_preset"):
        gpu.plan(dry_run=False)


def test_dry_run_executes_every_section(tmp_path):
    md, bad = gpu.run(dry_run=True, out_dir=tmp_path, log=lambda s: None)
    assert bad == []
    text = md.read_text()
    assert md.name.endswith("-cpu-dry-run.md") and "NOT results" in text
    assert "tests collected" in text  # pytest -m gpu, collected only
    for op in gpu.OP_PRESETS:
        assert f"### {op}" in text
    assert "| `emo2_1m` | bf16 | ok |" in text and "| `emo2_1m` | bf16_compile | ok |" in text
    assert "| `nat_mini` | 224 | official | ok |" in text and "| `nat_mini` | 224 | zoo | ok |" in text
    record = json.loads(md.with_suffix(".json").read_text())
    ops_rows = record["sections"]["ops"]["result"]
    assert {r["impl"] for r in ops_rows if r["status"] == "ok"} >= {"official", "reference"}
    assert all(r["status"] in ("ok", "skipped", "unchecked") for r in ops_rows)
    assert all(r["fwdbwd_ms"] is not None for r in ops_rows if r["status"] == "ok")
    assert not any(s["skipped"] for s in record["sections"].values())


def test_spent_budget_skips_and_reports(tmp_path):
    md, bad = gpu.run(dry_run=True, out_dir=tmp_path, budget_s=0.01, log=lambda s: None)
    text = md.read_text()
    assert "Skipped at a section's deadline" in text
    assert "- models: emo2_1m bf16" in text and "- ops: rala tiny" in text and "- memory: nat_mini 224 zoo" in text
    assert any("timed out" in b for b in bad)  # pytest's section was killed at its deadline
