"""`window_attention`: multi-head softmax attention inside non-overlapping windows (Swin, DaViT, HAT, ...)."""
from __future__ import annotations

import torch

from ops._backend import resolve_backend
from ops.window_attention.reference import relative_position_bias, window_attention_reference

__all__ = ["window_attention", "relative_position_bias"]


def _pair(window: int | tuple[int, int]) -> tuple[int, int]:
    pair = (window, window) if isinstance(window, int) else tuple(window)
    if len(pair) != 2 or not all(isinstance(w, int) and w > 0 for w in pair):
        raise ValueError(f"window_attention: window must be a positive int or (int, int), got {window!r}")
    return pair


def _check(q, k, v, window, bias_table, mask) -> None:
    if q.dim() != 5:
        raise ValueError(f"window_attention: q must be (B, H, W, heads, head_dim), got shape {tuple(q.shape)}")
    if k.shape != q.shape or v.shape != q.shape:
        raise ValueError(
            f"window_attention: q, k, v must have one shape, got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if not (q.dtype == k.dtype == v.dtype) or not q.is_floating_point():
        raise ValueError(f"window_attention: q, k, v must share a floating dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    _, H, W, nh, _ = q.shape
    wh, ww = window
    if bias_table is not None and tuple(bias_table.shape) != (nh, 2 * wh - 1, 2 * ww - 1):
        raise ValueError(
            f"window_attention: bias_table must be (heads, 2*wh-1, 2*ww-1) = {(nh, 2 * wh - 1, 2 * ww - 1)}, "
            f"got {tuple(bias_table.shape)}"
        )
    if mask is not None:
        nw = (-(-H // wh)) * (-(-W // ww))
        if tuple(mask.shape) != (nw, wh * ww, wh * ww):
            raise ValueError(
                f"window_attention: mask must be (num_windows, wh*ww, wh*ww) = {(nw, wh * ww, wh * ww)} for a "
                f"{H}x{W} map and {wh}x{ww} windows, got {tuple(mask.shape)}"
            )


def window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window: int | tuple[int, int],
    *,
    bias_table: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    scale: float | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Softmax attention of every query over the keys of its own ``wh x ww`` window.

    Args:
        q, k, v: ``(B, H, W, heads, head_dim)``, any ``H`` and ``W`` (partial windows at the right/bottom are
            masked, see :mod:`ops.window_attention.reference` for the exact semantics).
        window: ``ws`` or ``(wh, ww)``.
        bias_table: optional relative-position bias, ``(heads, 2*wh-1, 2*ww-1)``; entry ``[h, dy+wh-1,
            dx+ww-1]`` is added for a query ``(dy, dx)`` below/right of its key. Receives a gradient.
        mask: optional additive mask ``(num_windows, wh*ww, wh*ww)`` over the row-major window grid.
        scale: score scale, default ``head_dim ** -0.5``.
        backend: ``'reference'`` or ``'triton'``; default from :mod:`ops._backend`.

    Returns:
        ``(B, H, W, heads, head_dim)`` in the dtype of ``q``.
    """
    window = _pair(window)
    _check(q, k, v, window, bias_table, mask)
    if resolve_backend("window_attention", backend, q) == "reference":
        return window_attention_reference(q, k, v, window, bias_table, mask, scale)
    from ops.window_attention.triton import window_attention_triton

    return window_attention_triton(q, k, v, window, bias_table, mask, scale)
