"""Test-suite set-up shared by every test folder.

Without a CUDA device the Triton kernels run in Triton's CPU interpreter; ``TRITON_INTERPRET`` has to be set
before ``triton`` is first imported, which is why it happens here, at collection time. Kernel outputs are NaN-filled
(``ATTNZOO_NAN_FILL``, see :mod:`ops._backend`). Tests that need CUDA
carry the ``gpu`` marker and are skipped without it.

The default run spreads the tests over pytest-xdist workers (``-n auto`` in pyproject.toml; ``-n 0`` for one
process); each worker gets its share of the cores as intra-op threads, so workers do not oversubscribe them.
"""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
# Kernel outputs start as NaN, so an element a kernel fails to write shows up in every comparison.
os.environ.setdefault("ATTNZOO_NAN_FILL", "1")

HAS_CUDA = torch.cuda.is_available()

if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))


def pytest_collection_modifyitems(config, items):
    # The compile-check tier (one long subprocess) first: pytest-xdist hands out tests in this order, so the other
    # workers share out the rest while it runs instead of waiting for it at the end.
    items.sort(key=lambda item: not item.nodeid.startswith("tests/ops/test_compile.py"))
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread: the tiny models gain little from a second one, and on a shared two-core machine
    (other jobs, or pytest-xdist workers) two spinning OpenMP threads per process slow runs down manyfold."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def device() -> torch.device:
    return torch.device("cuda" if HAS_CUDA else "cpu")
