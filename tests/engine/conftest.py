"""Fixtures of the engine tests (helpers in engine_helpers.py). The training / export / eval test modules use
``one_thread`` through ``pytestmark``; the benchmark tests beside them do not."""
from __future__ import annotations

import pytest
import torch
from engine_helpers import tiny_recipe


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread: the tiny models gain little from a second one, and on a shared two-core machine
    (other jobs, or pytest-xdist workers) two spinning OpenMP threads per process slow runs down manyfold."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """Two epochs of the tiny recipe on the full digits training split, EMA on: the run the export and eval
    tests score."""
    from zoo.engine.train import train

    out = tmp_path_factory.mktemp("trained_run")
    return train(tiny_recipe(ema={"enabled": True, "decay": 0.9}), out, progress=False, log=None)
