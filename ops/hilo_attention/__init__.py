"""`hilo_attention`: LITv2's HiLo attention -- Hi-Fi heads attend inside ``s x s`` windows, Lo-Fi heads attend
from every query to the keys / values of the ``s x s`` average-pooled map.

Paper: "Fast Vision Transformers with HiLo Attention" (Pan, Cai, Zhuang, NeurIPS 2022), arXiv 2205.13213;
official code https://github.com/ziplab/LITv2 (``HiLo`` in ``classification/models/attentions.py``).

The op boundary: the model keeps every Linear (``h_qkv``, ``l_q``, ``l_kv``, ``h_proj``, ``l_proj``) and the
average pooling of its input (pooling precedes ``l_kv`` officially, so it is part of the projection, not of the
attention); the op receives the projected heads and does both attentions:

* Hi-Fi: :func:`ops.window_attention` with ``s x s`` windows (no bias, no mask);
* Lo-Fi: :func:`lofi_attention`, all queries against the short pooled key set (its own fused Triton kernels,
  custom ops ``attnzoo::lofi_attention_fwd`` / ``attnzoo::lofi_attention_bwd``).

Both use the official scale ``head_dim ** -0.5``. :func:`hilo_head_split` is the official split of the heads by
``alpha``.

Maps that are not multiples of ``s``: the op takes any ``H x W``; a partial window at the right / bottom is
masked by the window-attention op (its missing positions are not keys), and the Lo-Fi keys are whatever pooled
map the caller passes. The official dense-prediction code instead zero-pads the *normed input* to multiples of
``s`` before both branches (so padded positions are keys whose k / v equal the projection bias, and the pooled
windows at the border average zeros in) and crops afterwards; a model reproduces that exactly by padding its
input before the projections and handing the op the padded (divisible) map, as ``zoo.models.litv2`` does.
"""
from __future__ import annotations

from typing import Optional

import torch

from ops._backend import resolve_backend
from ops._checks import (
    SPATIAL, TOKENS, check_floating, check_positive_int, check_rank, check_same_device, check_same_shape,
)
from ops.hilo_attention.reference import lofi_attention_reference
from ops.window_attention import window_attention

__all__ = ["hilo_attention", "hilo_head_split", "lofi_attention"]


def hilo_head_split(num_heads: int, alpha: float, window: int) -> tuple[int, int]:
    """(Hi-Fi heads, Lo-Fi heads) of a HiLo layer, as the official code splits them.

    Lo-Fi gets ``int(num_heads * alpha)`` heads and Hi-Fi the rest; ``window == 1`` makes every head Lo-Fi without
    pooling (plain global attention), whatever ``alpha``.
    """
    check_positive_int("hilo_head_split", "num_heads", num_heads)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"hilo_head_split: alpha must be in [0, 1], got {alpha!r}")
    check_positive_int("hilo_head_split", "window", window)
    if window == 1:
        return 0, num_heads
    lofi = int(num_heads * alpha)
    return num_heads - lofi, lofi


def lofi_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scale: float | None = None, backend: str | None = None
) -> torch.Tensor:
    """Softmax attention of every query over one short shared key set (HiLo's Lo-Fi path, PVT-style attention).

    Args:
        q: ``(B, N, heads, head_dim)``, any ``N``.
        k, v: ``(B, M, heads, head_dim)``, any ``M >= 1`` (the pooled tokens).
        scale: score scale, default ``head_dim ** -0.5``.
        backend: ``'reference'`` or ``'triton'``; default from :mod:`ops._backend`.

    Returns:
        ``(B, N, heads, head_dim)`` in the dtype of ``q``.
    """
    op = "lofi_attention"
    check_rank(op, "q", q, TOKENS)
    check_rank(op, "k", k, ("B", "M", "heads", "head_dim"))
    check_same_shape(op, "k and v", k, v)
    if k.shape[0] != q.shape[0] or k.shape[2:] != q.shape[2:]:
        raise ValueError(
            f"{op}: k, v must match q in batch, heads and head_dim, got q {tuple(q.shape)} and k {tuple(k.shape)}"
        )
    if k.shape[1] == 0:
        raise ValueError(f"{op}: the key set is empty (k has shape {tuple(k.shape)}); expected at least one key")
    check_floating(op, "q, k, v", q, k, v)
    if resolve_backend(op, backend, q, k, v) == "reference":
        return lofi_attention_reference(q, k, v, scale)
    from ops.hilo_attention.triton import lofi_attention_triton

    return lofi_attention_triton(q, k, v, scale)


def hilo_attention(
    hifi_q: Optional[torch.Tensor],
    hifi_k: Optional[torch.Tensor],
    hifi_v: Optional[torch.Tensor],
    lofi_q: Optional[torch.Tensor],
    lofi_k: Optional[torch.Tensor],
    lofi_v: Optional[torch.Tensor],
    window: int,
    *,
    scale: float | None = None,
    backend: str | None = None,
) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """HiLo attention: Hi-Fi heads in ``window x window`` windows, Lo-Fi heads to the pooled keys / values.

    Args:
        hifi_q, hifi_k, hifi_v: Hi-Fi heads, ``(B, H, W, hifi_heads, head_dim)``; all ``None`` when the layer has
            no Hi-Fi heads (``alpha == 1`` or ``window == 1``).
        lofi_q: Lo-Fi queries, ``(B, H, W, lofi_heads, head_dim)``, one per token.
        lofi_k, lofi_v: Lo-Fi keys / values of the pooled map, ``(B, h, w, lofi_heads, head_dim)`` (``h x w`` is
            ``H / window x W / window`` in HiLo, the map itself when ``window == 1``); all three Lo-Fi tensors
            ``None`` when the layer has no Lo-Fi heads (``alpha == 0``).
        window: ``s``, the Hi-Fi window side.
        scale: score scale of both paths, default ``head_dim ** -0.5`` (official).
        backend: ``'reference'`` or ``'triton'`` for both paths; default from :mod:`ops._backend`.

    Returns:
        ``(hifi_out, lofi_out)``: ``(B, H, W, hifi_heads, head_dim)`` and ``(B, H, W, lofi_heads, head_dim)`` in
        the dtype of the queries, ``None`` for an absent path. The official layer projects each with its own
        Linear and concatenates Hi-Fi channels first.
    """
    op = "hilo_attention"
    hifi = (hifi_q, hifi_k, hifi_v)
    lofi = (lofi_q, lofi_k, lofi_v)
    if any(t is None for t in hifi) != all(t is None for t in hifi):
        raise ValueError(f"{op}: pass all of hifi_q, hifi_k, hifi_v or none of them")
    if any(t is None for t in lofi) != all(t is None for t in lofi):
        raise ValueError(f"{op}: pass all of lofi_q, lofi_k, lofi_v or none of them")
    has_hifi, has_lofi = hifi_q is not None, lofi_q is not None
    if not (has_hifi or has_lofi):
        raise ValueError(f"{op}: neither Hi-Fi nor Lo-Fi tensors were given")
    check_positive_int(op, "window", window)
    names = ("hifi_q", "hifi_k", "hifi_v", "lofi_q", "lofi_k", "lofi_v")
    present = {name: t for name, t in zip(names, (*hifi, *lofi)) if t is not None}
    for name, t in present.items():
        check_rank(op, name, t, SPATIAL)
    check_floating(op, ", ".join(present), *present.values())
    check_same_device(op, list(present.values()))
    if has_hifi:
        check_same_shape(op, "hifi_q, hifi_k, hifi_v", *hifi)
    if has_lofi:
        check_same_shape(op, "lofi_k and lofi_v", lofi_k, lofi_v)
        if lofi_k.shape[0] != lofi_q.shape[0] or lofi_k.shape[3:] != lofi_q.shape[3:]:
            raise ValueError(
                f"{op}: lofi_k, lofi_v must match lofi_q in batch, heads and head_dim, got lofi_q "
                f"{tuple(lofi_q.shape)} and lofi_k {tuple(lofi_k.shape)}"
            )
    if has_hifi and has_lofi:
        hq, lq = hifi_q.shape, lofi_q.shape
        if hq[:3] != lq[:3] or hq[4] != lq[4]:
            raise ValueError(
                f"{op}: Hi-Fi and Lo-Fi queries must share (B, H, W) and head_dim, got hifi_q {tuple(hq)} and "
                f"lofi_q {tuple(lq)}"
            )

    hifi_out = lofi_out = None
    if has_hifi:
        hifi_out = window_attention(hifi_q, hifi_k, hifi_v, window, scale=scale, backend=backend)
    if has_lofi:
        B, H, W, nh, D = lofi_q.shape
        lofi_out = lofi_attention(
            lofi_q.reshape(B, H * W, nh, D),
            lofi_k.flatten(1, 2),
            lofi_v.flatten(1, 2),
            scale=scale,
            backend=backend,
        ).view(B, H, W, nh, D)
    return hifi_out, lofi_out
