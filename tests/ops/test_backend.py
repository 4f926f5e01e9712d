"""`ops.use_backend`: sets the backend for a block and restores what was there."""
import os

import pytest
import torch

import ops
from ops._backend import resolve_backend


def test_use_backend_sets_and_restores(monkeypatch):
    monkeypatch.setenv(ops.ENV_BACKEND, "reference")
    x = torch.zeros(1)
    with ops.use_backend("triton"):
        assert resolve_backend("op", None, x) == "triton"  # the interpreter is on in the tests
        with ops.use_backend(None):
            assert ops.ENV_BACKEND not in os.environ
        assert os.environ[ops.ENV_BACKEND] == "triton"
    assert os.environ[ops.ENV_BACKEND] == "reference"


def test_use_backend_restores_after_an_error(monkeypatch):
    monkeypatch.delenv(ops.ENV_BACKEND, raising=False)
    with pytest.raises(KeyError), ops.use_backend("reference"):
        raise KeyError
    assert ops.ENV_BACKEND not in os.environ


def test_use_backend_rejects_unknown_names():
    with pytest.raises(ValueError, match="'cuda'.*reference"):
        with ops.use_backend("cuda"):
            pass
