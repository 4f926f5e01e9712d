"""`bilevel_routing_attention`: BiFormer's bi-level routing attention (region top-k routing, then token attention
over the routed regions)."""
from __future__ import annotations

import torch

from ops._backend import resolve_backend
from ops.bilevel_routing_attention.reference import (
    bilevel_routing_attention_reference,
    region_geometry,
    route,
)

__all__ = ["bilevel_routing_attention", "region_geometry", "route"]

_OP = "bilevel_routing_attention"


def _pair(n_win: int | tuple[int, int]) -> tuple[int, int]:
    pair = (n_win, n_win) if isinstance(n_win, int) else tuple(n_win) if isinstance(n_win, (tuple, list)) else ()
    if len(pair) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in pair):
        raise ValueError(f"{_OP}: n_win (regions per side) must be a positive int or (int, int), got {n_win!r}")
    return pair


def _check(q, k, v, n_win, topk) -> None:
    if q.dim() != 5:
        raise ValueError(f"{_OP}: q must be (B, H, W, heads, dqk), got shape {tuple(q.shape)}")
    if k.shape != q.shape:
        raise ValueError(f"{_OP}: k must have q's shape {tuple(q.shape)}, got {tuple(k.shape)}")
    if v.dim() != 5 or v.shape[:4] != q.shape[:4]:
        raise ValueError(
            f"{_OP}: v must be (B, H, W, heads, dv) with q's (B, H, W, heads) = {tuple(q.shape[:4])}, "
            f"got {tuple(v.shape)}"
        )
    if not (q.dtype == k.dtype == v.dtype) or not q.is_floating_point():
        raise ValueError(f"{_OP}: q, k, v must share a floating dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not isinstance(topk, int) or isinstance(topk, bool) or topk <= 0:
        raise ValueError(f"{_OP}: topk must be a positive int, got {topk!r}")
    regions = n_win[0] * n_win[1]
    if topk > regions:
        raise ValueError(
            f"{_OP}: topk={topk} is larger than the number of regions {n_win[0]}x{n_win[1]}={regions}"
        )


def bilevel_routing_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    n_win: int | tuple[int, int],
    topk: int,
    *,
    scale: float | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Bi-level routing attention of BiFormer (the official ``ops/bra_legacy.py`` math, without LePE).

    The map is cut into ``n_win`` regions per side; each query region routes to the ``topk`` regions whose mean
    key best matches its mean query (over all heads' channels, not differentiated), then each of its queries
    attends, per head, to every token of those regions. See :mod:`ops.bilevel_routing_attention.reference` for
    the exact semantics, including maps that are not multiples of ``n_win`` (padded tokens are masked).

    Args:
        q, k: ``(B, H, W, heads, dqk)``.
        v: ``(B, H, W, heads, dv)``; ``dv`` may differ from ``dqk``.
        n_win: the number of regions per side, ``S`` or ``(Sh, Sw)`` -- not a region size. Regions are
            ``ceil(H / Sh) x ceil(W / Sw)`` tokens.
        topk: routed regions per query region, ``1 <= topk <= Sh * Sw``.
        scale: score scale. The default is ``(heads * dqk) ** -0.5``: the FULL qk dimension, as the official
            code uses (not the per-head ``dqk ** -0.5``). Pass ``dqk ** -0.5`` for the usual one.
        backend: ``'reference'`` or ``'triton'``; default from :mod:`ops._backend`.

    Returns:
        ``(B, H, W, heads, dv)`` in the dtype of ``q``.
    """
    n_win = _pair(n_win)
    _check(q, k, v, n_win, topk)
    if resolve_backend(_OP, backend, q) == "reference":
        return bilevel_routing_attention_reference(q, k, v, n_win, topk, scale)
    from ops.bilevel_routing_attention.triton import bilevel_routing_attention_triton

    return bilevel_routing_attention_triton(q, k, v, n_win, topk, scale)
