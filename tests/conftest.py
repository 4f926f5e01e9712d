"""Test-suite set-up shared by every test folder.

Without a CUDA device the Triton kernels run in Triton's CPU interpreter; ``TRITON_INTERPRET`` has to be set
before ``triton`` is first imported, which is why it happens here, at collection time. Kernel outputs are NaN-filled
(``ATTNZOO_NAN_FILL``, see :mod:`ops._backend`). Tests that need CUDA
carry the ``gpu`` marker and are skipped without it.
"""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
# Kernel outputs start as NaN, so an element a kernel fails to write shows up in every comparison.
os.environ.setdefault("ATTNZOO_NAN_FILL", "1")

HAS_CUDA = torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def device() -> torch.device:
    return torch.device("cuda" if HAS_CUDA else "cpu")
