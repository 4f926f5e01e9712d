"""benchmarks/seg_inference.py: a CPU smoke test of the measuring code (the GPU run records the real numbers)."""
import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("mmseg.models", reason="mmsegmentation is not installed (python scripts/install_seg.py)")

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("seg_inference", ROOT / "benchmarks" / "seg_inference.py")
seg_inference = importlib.util.module_from_spec(spec)
spec.loader.exec_module(seg_inference)

DEMO = ROOT / "configs" / "seg" / "demo" / "upernet_zoo_davit_digits.py"


def test_reference_backend_whole_and_slide_on_cpu(capsys):
    rc = seg_inference.main(["--config", str(DEMO), "--device", "cpu", "--backends", "reference",
                             "--sizes", "64x96", "--modes", "whole,slide", "--steps", "1", "--warmup", "0",
                             "--amp", "fp32"])
    out = capsys.readouterr().out
    assert rc == 0
    lines = [line for line in out.splitlines() if "64x96" in line]
    assert len(lines) == 2 and "whole" in lines[0] and "slide" in lines[1]
    assert all("reference" in line and "img/s" in line for line in lines)


def test_refuses_to_record_cpu_timings(tmp_path):
    with pytest.raises(SystemExit):
        seg_inference.main(["--config", str(DEMO), "--device", "cpu", "--json", str(tmp_path / "x.json")])


def test_default_configs_one_per_backbone_family():
    configs = seg_inference.default_configs()
    families = {p.parent.name for p in configs}
    assert {"davit", "biformer", "litv2", "nat", "agent", "ravlt", "emov2"} <= families
    names = [p.name for p in configs]
    assert len(names) == len(set(names))
    assert any("dinat_mini" in n for n in names) and any("nat_mini" in n for n in names)
