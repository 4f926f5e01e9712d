"""The embedded default, end to end: `python train.py` reaches >= 95 % held-out top-1 in under 5 minutes on a
two-core CPU. Slow tier (`pytest -m slow`); CI runs `python train.py` itself separately."""
from __future__ import annotations

import json
import re
import time

import pytest
from engine_helpers import run_script


@pytest.mark.slow
def test_default_recipe_reaches_95_percent_in_under_5_minutes(tmp_path):
    start = time.perf_counter()
    proc = run_script("train.py", "--output", str(tmp_path / "run"), "--no-progress", threads=None)
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-4000:]
    top1 = float(re.search(r"held-out top-1: ([\d.]+) %", proc.stdout).group(1))
    assert top1 >= 95.0, proc.stdout
    assert seconds < 300, f"the default run took {seconds:.0f} s"
    export = tmp_path / "run" / "export"
    assert json.loads((export / "config.json").read_text())["attnzoo"]["held_out"]["top1"] == pytest.approx(top1,
                                                                                                          abs=0.01)
    proc = run_script("eval.py", "--checkpoint", str(export), "--json")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert json.loads(proc.stdout)["top1"] == pytest.approx(top1, abs=0.01)
