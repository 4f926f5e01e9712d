"""`overlapping_window_attention`: queries in non-overlapping windows attend to larger, overlapping key windows
(HAT's overlapping cross-attention block, OCAB)."""
from __future__ import annotations

import torch

from ops._backend import resolve_backend
from ops._checks import SPATIAL, check_qkv, check_shape, pair
from ops.overlapping_window_attention.reference import (
    overlapping_relative_position_bias,
    overlapping_window_attention_reference,
)

__all__ = ["overlapping_window_attention", "overlapping_relative_position_bias"]

_OP = "overlapping_window_attention"


def _windows(window, key_window) -> tuple[tuple[int, int], tuple[int, int]]:
    """(window, key_window) as (height, width) pairs; the key window must be centred on the query window."""
    window, key_window = pair(_OP, "window", window), pair(_OP, "key_window", key_window)
    for w, kw, side in zip(window, key_window, ("height", "width")):
        if kw < w or (kw - w) % 2:
            raise ValueError(
                f"{_OP}: key_window {key_window} must be at least window {window} and exceed it by an even amount "
                f"(the key window is centred on the query window) in {side}"
            )
    return window, key_window


def _check(q, k, v, window, key_window, bias_table) -> None:
    check_qkv(_OP, q, k, v, SPATIAL)
    nh = q.shape[3]
    want = (nh, window[0] + key_window[0] - 1, window[1] + key_window[1] - 1)
    check_shape(_OP, "bias_table", bias_table, want, "(heads, wh+kh-1, ww+kw-1)")


def overlapping_window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window: int | tuple[int, int],
    key_window: int | tuple[int, int],
    *,
    bias_table: torch.Tensor | None = None,
    scale: float | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Softmax attention of every query over the keys of the larger window centred on its own window.

    Args:
        q, k, v: ``(B, H, W, heads, head_dim)``, any ``H`` and ``W``. Keys outside the map are zero tokens
            (they take part, with score = bias), as in HAT's OCAB; see
            :mod:`ops.overlapping_window_attention.reference` for the exact semantics.
        window: query window ``ws`` or ``(wh, ww)``.
        key_window: key / value window ``(kh, kw)`` (or an int), centred on the query window:
            ``kh - wh`` and ``kw - ww`` even and >= 0 (HAT: 16 and 24).
        bias_table: optional relative-position bias ``(heads, wh+kh-1, ww+kw-1)``; entry
            ``[h, ky - qy + wh - 1, kx - qx + ww - 1]`` for a query at ``(qy, qx)`` in its window and a key at
            ``(ky, kx)`` in its key window. Receives a gradient.
        scale: score scale, default ``head_dim ** -0.5``.
        backend: ``'reference'`` or ``'triton'``; default from :mod:`ops._backend`.

    Returns:
        ``(B, H, W, heads, head_dim)`` in the dtype of ``q``.
    """
    window, key_window = _windows(window, key_window)
    _check(q, k, v, window, key_window, bias_table)
    if resolve_backend(_OP, backend, q, k, v, bias_table) == "reference":
        return overlapping_window_attention_reference(q, k, v, window, key_window, bias_table, scale)
    from ops.overlapping_window_attention.triton import overlapping_window_attention_triton

    return overlapping_window_attention_triton(q, k, v, window, key_window, bias_table, scale)
