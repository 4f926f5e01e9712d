"""`bilevel_routing_attention`: BiFormer's bi-level routing attention (region top-k routing, then token attention
over the routed regions)."""
from __future__ import annotations

import torch

from ops._backend import resolve_backend
from ops._checks import check_positive_int, check_qkv, pair
from ops.bilevel_routing_attention.reference import (
    bilevel_routing_attention_reference,
    region_geometry,
    route,
)

__all__ = ["bilevel_routing_attention", "region_geometry", "route"]

_OP = "bilevel_routing_attention"


def _check(q, k, v, n_win, topk) -> None:
    check_qkv(_OP, q, k, v, ("B", "H", "W", "heads", "dqk"), v_dim="dv")
    check_positive_int(_OP, "topk", topk)
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
    n_win = pair(_OP, "n_win (regions per side)", n_win)
    _check(q, k, v, n_win, topk)
    if resolve_backend(_OP, backend, q, k, v) == "reference":
        return bilevel_routing_attention_reference(q, k, v, n_win, topk, scale)
    from ops.bilevel_routing_attention.triton import bilevel_routing_attention_triton

    return bilevel_routing_attention_triton(q, k, v, n_win, topk, scale)
