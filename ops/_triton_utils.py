"""Pieces every op's Triton module (``ops/*/triton.py``) shares, kept here so there is one copy of each.

* :func:`dot` -- the ``tl.dot`` all kernels call, with a work-around for a bug of Triton's CPU interpreter
  (triton-lang/triton#11584: it multiplies the raw bit patterns of bf16 operands). The upcast must stay on for
  every bf16 dot that runs in the interpreter, whichever op it belongs to, so it lives in one place.
  (Whether it is on, and the dots' input precision, are plan choices: :func:`ops._plans.dot_options`.)
* :func:`dot_block` -- the smallest tile dimension ``tl.dot`` accepts that holds ``n`` elements.
* :func:`on_device` -- Triton launches on the *current* CUDA device, whatever device the tensors live on;
  every launch goes inside this context so that it runs on the inputs' device.
* :func:`load_tile` / :func:`store_tile` / :func:`atomic_add_tile` -- a (tokens, channels) tile of a
  ``(..., H, W, ..., D)`` tensor addressed by per-token map rows and columns, masked by token validity and ``D``.
* :func:`lse_offsets` -- offsets into the contiguous ``(B, H, W, heads)`` fp32 log-sum-exp the forward kernels
  save for the backward.
* :func:`online_softmax_step` -- one key tile of the flash-attention forward recurrence (base-2 scores).
* ``LOG2E`` / ``LN2`` -- the constants that move scores and log-sum-exps between base e and base 2.
"""
from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl

__all__ = [
    "LN2", "LOG2E", "atomic_add_tile", "dot", "dot_block", "load_tile", "lse_offsets", "on_device",
    "online_softmax_step", "store_tile",
]

LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)


@triton.jit
def dot(a, b, UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr, acc=None):
    """``tl.dot(a, b, acc)`` with fp32 accumulation; ``acc=None`` starts from zeros, as in ``tl.dot``."""
    # Triton's CPU interpreter multiplies the raw bit patterns of bf16 dot operands (triton-lang/triton#11584).
    # bf16 -> fp32 is exact, so the upcast dot computes what the GPU's bf16 dot with fp32 accumulation does.
    if UPCAST_DOT:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision=DOT_PRECISION)


def dot_block(n: int) -> int:
    """The smallest power of two that is at least 16 and at least ``n``: tl.dot's tile dimensions must be such."""
    return max(16, triton.next_power_of_2(n))


def on_device(q: torch.Tensor) -> contextlib.AbstractContextManager:
    """Make ``q``'s CUDA device the current one for the launches inside (a no-op off CUDA)."""
    # Triton launches on the current CUDA device; q may live on another one.
    return torch.cuda.device(q.device) if q.is_cuda else contextlib.nullcontext()


@triton.jit
def _tile_ptrs(base, row, col, stride_h, stride_w, stride_d, BLOCK_D: tl.constexpr):
    offs_d = tl.arange(0, BLOCK_D)
    return base + (row * stride_h + col * stride_w)[:, None] + offs_d[None, :] * stride_d


@triton.jit
def load_tile(base, row, col, valid, stride_h, stride_w, stride_d, D, BLOCK_D: tl.constexpr):
    """The ``(len(row), BLOCK_D)`` tile at map positions (row, col); missing tokens and padded channels load as 0,
    so they add nothing to any dot product."""
    ptrs = _tile_ptrs(base, row, col, stride_h, stride_w, stride_d, BLOCK_D)
    return tl.load(ptrs, mask=valid[:, None] & (tl.arange(0, BLOCK_D)[None, :] < D), other=0.0)


@triton.jit
def store_tile(base, x, row, col, valid, stride_h, stride_w, stride_d, D, BLOCK_D: tl.constexpr):
    """Store ``x`` (cast to the tensor's dtype) where :func:`load_tile` would read."""
    ptrs = _tile_ptrs(base, row, col, stride_h, stride_w, stride_d, BLOCK_D)
    tl.store(ptrs, x.to(base.dtype.element_ty), mask=valid[:, None] & (tl.arange(0, BLOCK_D)[None, :] < D))


@triton.jit
def atomic_add_tile(base, x, row, col, valid, stride_h, stride_w, stride_d, D, BLOCK_D: tl.constexpr):
    """``tl.atomic_add`` of ``x`` where :func:`load_tile` would read (for gradients several programs share)."""
    ptrs = _tile_ptrs(base, row, col, stride_h, stride_w, stride_d, BLOCK_D)
    tl.atomic_add(ptrs, x, mask=valid[:, None] & (tl.arange(0, BLOCK_D)[None, :] < D))


@triton.jit
def lse_offsets(i_b, i_h, row, col, H, W, NH):
    """Offsets into a contiguous ``(B, H, W, heads)`` fp32 tensor: one value per existing query, none for padding."""
    return ((i_b.to(tl.int64) * H + row) * W + col) * NH + i_h


@triton.jit
def online_softmax_step(m_i, l_i, acc, s, v, UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """Fold one key tile into the running (row max, row sum, output accumulator) of the flash-attention forward.

    ``s``: the tile's base-2 scores (``-inf`` where a key is missing or masked); ``v``: the tile's values.
    Returns the updated ``(m_i, l_i, acc)``; the output is ``acc / l_i`` and the log-sum-exp (base e) is
    ``(m_i + log2(l_i)) * LN2`` once every tile is folded in.
    """
    m_new = tl.maximum(m_i, tl.max(s, axis=1))
    # A row whose keys so far are all -inf (a mask of -inf) has no maximum yet: subtract 0, not -inf - -inf.
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.exp2(m_i - m_safe)
    p = tl.exp2(s - m_safe[:, None])
    l_i = l_i * alpha + tl.sum(p, axis=1)
    acc = acc * alpha[:, None] + dot(p.to(v.dtype), v, UPCAST_DOT, DOT_PRECISION)
    return m_new, l_i, acc
