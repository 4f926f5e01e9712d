"""`window_grid_attention`: softmax attention inside contiguous windows, dilated grids, or both summed (EMOv2).

EMOv2's hybrid attention (``EW_MHSA_Hybrid``) attends over two partitions of the same map -- local ``ws x ws``
windows ("close") and ``ws x ws`` grids of pixels spaced ``H / ws`` apart ("remote", MaxViT's grid attention) --
and adds the two results. Its values are wider than its queries and keys (v has the block's expanded width),
which :func:`ops.window_attention` (one head_dim for q, k, v) cannot express; this op takes any value width.
"""
from __future__ import annotations

import torch

from ops._backend import resolve_backend
from ops._checks import SPATIAL, check_qkv, pair
from ops.window_grid_attention.reference import PARTITIONS, window_grid_attention_reference

__all__ = ["PARTITIONS", "window_grid_attention"]

_OP = "window_grid_attention"


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
    window = pair(_OP, "window", window)
    if partition not in PARTITIONS:
        raise ValueError(f"{_OP}: partition must be one of {PARTITIONS}, got {partition!r}")
    check_qkv(_OP, q, k, v, SPATIAL, v_dim="v_dim")
    if resolve_backend(_OP, backend, q, k, v) == "reference":
        return window_grid_attention_reference(q, k, v, window, partition, scale)
    from ops.window_grid_attention.triton import window_grid_attention_triton

    return window_grid_attention_triton(q, k, v, window, partition, scale)
