"""Pieces every op's Triton module (``ops/*/triton.py``) shares, kept here so there is one copy of each.

* :func:`dot` -- the ``tl.dot`` all kernels call, with a work-around for a bug of Triton's CPU interpreter
  (triton-lang/triton#11584: it multiplies the raw bit patterns of bf16 operands). The upcast must stay on for
  every bf16 dot that runs in the interpreter, whichever op it belongs to, so it lives in one place.
* :func:`dot_options` -- the kernels' ``UPCAST_DOT`` and ``DOT_PRECISION`` constexprs for given inputs: when the
  interpreter work-around is on, and IEEE fp32 dots (no TF32) for fp32 inputs, so that fp32 means fp32 as in
  the references.
* :func:`dot_block` -- the smallest tile dimension ``tl.dot`` accepts that holds ``n`` elements.
* :func:`sm_count` -- a CUDA device's SM count (cached: ``get_device_properties`` is not free), which the launch
  plans size their grids by.
* :func:`on_device` -- Triton launches on the *current* CUDA device, whatever device the tensors live on;
  every launch goes inside this context so that it runs on the inputs' device.
"""
from __future__ import annotations

import contextlib
import functools

import torch
import triton
import triton.language as tl

__all__ = ["dot", "dot_block", "dot_options", "on_device", "sm_count"]


@triton.jit
def dot(a, b, UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr, acc=None):
    """``tl.dot(a, b, acc)`` with fp32 accumulation; ``acc=None`` starts from zeros, as in ``tl.dot``."""
    # Triton's CPU interpreter multiplies the raw bit patterns of bf16 dot operands (triton-lang/triton#11584).
    # bf16 -> fp32 is exact, so the upcast dot computes what the GPU's bf16 dot with fp32 accumulation does.
    if UPCAST_DOT:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision=DOT_PRECISION)


def dot_options(q: torch.Tensor) -> tuple[bool, str]:
    """(UPCAST_DOT, DOT_PRECISION) for kernels reading inputs like ``q``; see :func:`dot`.

    UPCAST_DOT: bf16 inputs off CUDA, i.e. in the interpreter. DOT_PRECISION: ``"ieee"`` for fp32 inputs,
    ``"tf32"`` otherwise, where it only concerns fp32 operands a kernel forms itself (16-bit ones ignore it).
    """
    return q.dtype == torch.bfloat16 and q.device.type != "cuda", "ieee" if q.dtype == torch.float32 else "tf32"


def dot_block(n: int) -> int:
    """The smallest power of two that is at least 16 and at least ``n``: tl.dot's tile dimensions must be such."""
    return max(16, triton.next_power_of_2(n))


@functools.lru_cache(maxsize=None)
def _multi_processor_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def sm_count(device: torch.device) -> int:
    """Number of SMs of CUDA ``device`` (the current device when it carries no index)."""
    return _multi_processor_count(device.index if device.index is not None else torch.cuda.current_device())


def on_device(q: torch.Tensor) -> contextlib.AbstractContextManager:
    """Make ``q``'s CUDA device the current one for the launches inside (a no-op off CUDA)."""
    # Triton launches on the current CUDA device; q may live on another one.
    return torch.cuda.device(q.device) if q.is_cuda else contextlib.nullcontext()
