"""Backend choice for every primitive in `ops`, decided in this one place.

Two backends exist:

* ``reference`` -- plain PyTorch (each op's ``reference.py``): the spec, the CPU path, the test oracle.
* ``triton``    -- fused Triton forward and backward kernels (each op's ``triton.py``).

Default: ``triton`` for CUDA tensors, ``reference`` for everything else. The ``backend=`` keyword of an op
wins over the environment variable ``ATTNZOO_BACKEND``, which wins over the default. Asking for a backend
that cannot run on the given tensors is an error, never a silent fallback: on a CPU tensor, ``triton`` runs
only under the Triton interpreter (``TRITON_INTERPRET=1``, which must be set before ``triton`` is
imported).

``ATTNZOO_NAN_FILL=1`` makes the Triton wrappers allocate their outputs and gradients filled with NaN instead
of uninitialised memory, so that a kernel that forgets to write an element fails the tests loudly.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator

import torch

from ops._checks import TRITON_DTYPES, check_same_device, check_triton_dtype

__all__ = [
    "BACKENDS", "ENV_BACKEND", "empty", "resolve_backend", "triton_available", "triton_interpret", "use_backend",
]

BACKENDS = ("reference", "triton")
ENV_BACKEND = "ATTNZOO_BACKEND"
_ENV_INTERPRET = "TRITON_INTERPRET"
_ENV_NAN_FILL = "ATTNZOO_NAN_FILL"


_TRITON_AVAILABLE = importlib.util.find_spec("triton") is not None


def triton_available() -> bool:
    """Whether the ``triton`` package can be imported at all."""
    return _TRITON_AVAILABLE


def triton_interpret() -> bool:
    """Whether Triton kernels run in the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get(_ENV_INTERPRET, "0") == "1"


def _requested(backend: str | None) -> tuple[str | None, str]:
    if backend is not None:
        return backend, "backend="
    env = os.environ.get(ENV_BACKEND, "").strip()
    if env:
        return env, f"{ENV_BACKEND}="
    return None, "default"


def resolve_backend(op: str, backend: str | None, *tensors: torch.Tensor | None) -> str:
    """Return the backend that runs `op` on `tensors`; raise if the requested one cannot run them.

    `backend` is the op's ``backend=`` keyword (``None`` means: environment variable, then default). `tensors` are
    every tensor argument of the op, the query first (``None`` for absent optional ones): the op input contract
    that is the same for every op is checked here, once, after the op's own layout checks (``ops/_checks.py``):
    one device for all of them, and on Triton a dtype of
    :data:`~ops._checks.TRITON_DTYPES` (fp64 runs on the reference backend only) and int32-indexable sizes.
    """
    present = [t for t in tensors if t is not None]
    q = present[0]
    check_same_device(op, present)
    device = q.device
    name, source = _requested(backend)
    if name is None:  # fp64 (or another dtype the kernels are not written for) takes the exact reference path
        use_triton = device.type == "cuda" and triton_available() and q.dtype in TRITON_DTYPES
        return "triton" if use_triton else "reference"
    if name not in BACKENDS:
        raise ValueError(f"{op}: unknown backend {name!r} (from {source}); expected one of {BACKENDS}")
    if name == "triton":
        if not triton_available():
            raise RuntimeError(
                f"{op}: backend 'triton' (from {source}) requested but the triton package is not installed")
        if device.type != "cuda" and not triton_interpret():
            raise RuntimeError(
                f"{op}: backend 'triton' (from {source}) needs CUDA tensors, got tensors on {device}; "
                f"set {_ENV_INTERPRET}=1 before importing triton to run the kernels in the CPU interpreter, "
                f"or use backend='reference'"
            )
        check_triton_dtype(op, q)
        largest = max(present, key=torch.Tensor.numel)
        if largest.numel() >= 2**31:
            raise ValueError(
                f"{op}: backend 'triton' indexes tensors with 32-bit offsets; a tensor of shape "
                f"{tuple(largest.shape)} has {largest.numel()} >= 2**31 elements: split the batch")
    return name


def empty(*shape: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``torch.empty`` for kernel outputs: NaN-filled under ``ATTNZOO_NAN_FILL=1`` (the tests set it)."""
    out = torch.empty(shape, device=device, dtype=dtype)
    if os.environ.get(_ENV_NAN_FILL, "0") == "1":
        out.fill_(float("nan"))
    return out


@contextlib.contextmanager
def use_backend(name: str | None) -> Iterator[None]:
    """Run the block with ``ATTNZOO_BACKEND`` set to `name` (``None``: unset, i.e. the default), then restore it.

    It sets the environment variable rather than a private switch so that there is one source of truth, which
    subprocesses (e.g. data-loader workers, torchrun children) inherit too. An unknown name is an error here,
    not at the first op call.
    """
    if name is not None and name not in BACKENDS:
        raise ValueError(f"use_backend: unknown backend {name!r}; expected one of {BACKENDS} or None")
    saved = os.environ.get(ENV_BACKEND)
    if name is None:
        os.environ.pop(ENV_BACKEND, None)
    else:
        os.environ[ENV_BACKEND] = name
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(ENV_BACKEND, None)
        else:
            os.environ[ENV_BACKEND] = saved
