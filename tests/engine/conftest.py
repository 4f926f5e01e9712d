"""Fixtures of the engine tests (helpers in engine_helpers.py). The training / export / eval test modules use
``one_thread`` (tests/conftest.py) through ``pytestmark``."""
from __future__ import annotations

import pytest
from engine_helpers import tiny_recipe


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """Two epochs of the tiny recipe on the full digits training split, EMA on: the run the export and eval
    tests score."""
    from zoo.engine.train import train

    out = tmp_path_factory.mktemp("trained_run")
    return train(tiny_recipe(ema={"enabled": True, "decay": 0.9}), out, progress=False, log=None)
