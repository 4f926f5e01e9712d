"""benchmarks/sr_memory.py: one SR inference, whole and tiled, on a tiny HAT on the CPU."""
from __future__ import annotations

import json

import pytest

from benchmarks.sr_memory import main, measure_inference_memory

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_HAT = dict(embed_dim=12, depths=[1], num_heads=[2], window_size=4, compress_ratio=3, squeeze_factor=4, num_feat=8)


def test_inference_memory_probe_runs_tiled_and_whole():
    whole = measure_inference_memory("hat_s_x2", 24, model_kwargs=TINY_HAT)
    tiled = measure_inference_memory("hat_s_x2", 24, tile=8, overlap=4, model_kwargs=TINY_HAT)
    assert whole["out_shape"] == tiled["out_shape"] == [1, 3, 48, 48]
    assert whole["kind"] == "cpu rss" and whole["peak_rss_mib"] > 0 and tiled["tile"] == 8


def test_command_prints_one_json_record(capsys):
    assert main(["--model", "hat_s_x2", "--lr-size", "16", "--tile", "8", "--tile-overlap", "4",
                 "--kwargs", json.dumps(TINY_HAT)]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["out_shape"] == [1, 3, 32, 32] and record["overlap"] == 4 and record["device"] == "cpu"
