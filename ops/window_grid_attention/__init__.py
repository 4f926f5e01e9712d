"""`window_grid_attention`: softmax attention inside contiguous windows, dilated grids, or both summed (EMOv2).

EMOv2's hybrid attention (``EW_MHSA_Hybrid``) attends over two partitions of the same map -- local ``ws x ws``
windows ("close") and ``ws x ws`` grids of pixels spaced ``H / ws`` apart ("remote", MaxViT's grid attention) --
and adds the two results. Its values are wider than its queries and keys (v has the block's expanded width),
which :func:`ops.window_attention` (one head_dim for q, k, v) cannot express; this op takes any value width.
"""
from __future__ import annotations

import torch

from ops._backend import resolve_backend
from ops.window_grid_attention.reference import PARTITIONS, window_grid_attention_reference

__all__ = ["PARTITIONS", "window_grid_attention"]


def _pair(window: int | tuple[int, int]) -> tuple[int, int]:
    pair = (window, window) if isinstance(window, int) else tuple(window)
    if len(pair) != 2 or not all(isinstance(w, int) and w > 0 for w in pair):
        raise ValueError(f"window_grid_attention: window must be a positive int or (int, int), got {window!r}")
    return pair


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, partition: str) -> None:
    if partition not in PARTITIONS:
        raise ValueError(f"window_grid_attention: partition must be one of {PARTITIONS}, got {partition!r}")
    if q.dim() != 5:
        raise ValueError(
            f"window_grid_attention: q must be (B, H, W, heads, head_dim), got shape {tuple(q.shape)}")
    if k.shape != q.shape:
        raise ValueError(f"window_grid_attention: k must have q's shape {tuple(q.shape)}, got {tuple(k.shape)}")
    if v.dim() != 5 or v.shape[:-1] != q.shape[:-1]:
        raise ValueError(
            f"window_grid_attention: v must be (B, H, W, heads, v_dim) with (B, H, W, heads) = {tuple(q.shape[:-1])} "
            f"as q, got {tuple(v.shape)}"
        )
    if not (q.dtype == k.dtype == v.dtype) or not q.is_floating_point():
        raise ValueError(
            f"window_grid_attention: q, k, v must share a floating dtype, got {q.dtype}, {k.dtype}, {v.dtype}")


def window_grid_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window: int | tuple[int, int],
    *,
    partition: str = "both",
    scale: float | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Softmax attention of every query over the keys of its own window, its own grid, or both (summed).

    Args:
        q, k: ``(B, H, W, heads, head_dim)``; v: ``(B, H, W, heads, v_dim)``, any ``v_dim``. Any ``H``, ``W``:
            positions beyond the last whole window are masked (see :mod:`ops.window_grid_attention.reference`
            for the exact semantics).
        window: ``ws`` or ``(wh, ww)``: the size of a window, and of a grid (``wh x ww`` pixels spaced
            ``ceil(H / wh)`` rows and ``ceil(W / ww)`` columns apart).
        partition: ``'window'`` (contiguous windows), ``'grid'`` (dilated grids) or ``'both'`` (their sum).
        scale: score scale, default ``head_dim ** -0.5``.
        backend: ``'reference'`` or ``'triton'``; default from :mod:`ops._backend`. The Triton kernels take
            windows of up to 128 tokens.

    Returns:
        ``(B, H, W, heads, v_dim)`` in the dtype of ``q``.
    """
    window = _pair(window)
    _check(q, k, v, partition)
    if resolve_backend("window_grid_attention", backend, q) == "reference":
        return window_grid_attention_reference(q, k, v, window, partition, scale)
    from ops.window_grid_attention.triton import window_grid_attention_triton

    return window_grid_attention_triton(q, k, v, window, partition, scale)
