"""Training checkpoints: atomic writes, weights_only reads, clear errors for damaged files, RNG states."""
from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
import torch

from zoo.engine.checkpoint import (
    CHECKPOINT_FORMAT, CheckpointError, find_last_checkpoint, get_rng_state, load_checkpoint, save_checkpoint,
    set_rng_state,
)


def _state(value: float = 1.0) -> dict:
    return {"epoch": 3, "step": 30, "model": {"w": torch.full((4, 4), value)}, "recipe": {"task": "cls"},
            "rng": get_rng_state()}


def test_round_trip_with_weights_only(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "ckpt.pth", _state())
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    state = load_checkpoint(path)
    assert calls == [True]
    assert state["format"] == CHECKPOINT_FORMAT and state["epoch"] == 3
    assert torch.equal(state["model"]["w"], torch.ones(4, 4))
    assert find_last_checkpoint(tmp_path) is None  # only checkpoint-last.pth counts for --resume auto
    save_checkpoint(tmp_path / "checkpoint-last.pth", _state())
    assert find_last_checkpoint(tmp_path) == tmp_path / "checkpoint-last.pth"


def test_failed_write_leaves_the_previous_checkpoint_intact(tmp_path):
    path = save_checkpoint(tmp_path / "ckpt.pth", _state(1.0))
    before = path.read_bytes()
    bad = _state(2.0)
    bad["model"]["not_picklable"] = lambda: None
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):  # a local lambda cannot be pickled
        save_checkpoint(path, bad)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pth"]  # no temporary file left behind


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's note while parsing the garbage
@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_damaged_checkpoint_is_a_clear_error(tmp_path, damage):
    path = save_checkpoint(tmp_path / "ckpt.pth", _state())
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"\x80not a checkpoint" * 64,
                      "empty": b""}[damage])
    with pytest.raises(CheckpointError, match="cannot be read .*truncated or corrupt"):
        load_checkpoint(path)


def test_missing_and_foreign_files_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pth")
    plain = tmp_path / "plain.pth"
    torch.save({"w": torch.zeros(2)}, plain)
    with pytest.raises(CheckpointError, match="not an attnzoo training checkpoint"):
        load_checkpoint(plain)


class _Payload:
    pass


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"format": CHECKPOINT_FORMAT, "epoch": 1, "step": 1, "model": {}, "recipe": {}, "x": _Payload()},
               path)
    with pytest.raises(CheckpointError, match="_Payload.*not unpickled"):
        load_checkpoint(path)


def test_rng_states_survive_a_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path / "ckpt.pth", _state())  # captures the RNG states
    first = (random.random(), np.random.rand(), np.random.randn(), torch.rand(3))
    set_rng_state(load_checkpoint(path)["rng"])
    again = (random.random(), np.random.rand(), np.random.randn(), torch.rand(3))
    assert first[:3] == again[:3] and torch.equal(first[3], again[3])
