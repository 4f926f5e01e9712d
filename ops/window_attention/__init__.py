"""`window_attention`: multi-head softmax attention inside non-overlapping windows (Swin, DaViT, HAT, ...)."""
from __future__ import annotations

import torch

from ops._backend import resolve_backend
from ops._checks import SPATIAL, check_qkv, check_shape, pair
from ops.window_attention.reference import relative_position_bias, window_attention_reference

__all__ = ["window_attention", "relative_position_bias"]

_OP = "window_attention"


def _check(q, k, v, window, bias_table, mask) -> None:
    check_qkv(_OP, q, k, v, SPATIAL)
    _, H, W, nh, _ = q.shape
    wh, ww = window
    check_shape(_OP, "bias_table", bias_table, (nh, 2 * wh - 1, 2 * ww - 1), "(heads, 2*wh-1, 2*ww-1)")
    nw = (-(-H // wh)) * (-(-W // ww))
    check_shape(_OP, "mask", mask, (nw, wh * ww, wh * ww),
                f"(num_windows, wh*ww, wh*ww) for {wh}x{ww} windows over a {H}x{W} map")


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
    window = pair(_OP, "window", window)
    _check(q, k, v, window, bias_table, mask)
    if resolve_backend(_OP, backend, q, k, v, bias_table, mask) == "reference":
        return window_attention_reference(q, k, v, window, bias_table, mask, scale)
    from ops.window_attention.triton import window_attention_triton

    return window_attention_triton(q, k, v, window, bias_table, mask, scale)
