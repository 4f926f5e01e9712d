"""Bi-level routing attention (BiFormer's BRA) in plain PyTorch: the specification, the CPU path and the oracle.

``q, k``: ``(B, H, W, heads, Dqk)``, ``v``: ``(B, H, W, heads, Dv)``. With ``n_win = (Sh, Sw)`` regions per
side, the map is cut into ``Sh x Sw`` regions of ``rh x rw = ceil(H / Sh) x ceil(W / Sw)`` tokens, numbered
row-major (region ``i * Sw + j`` covers rows ``i*rh ..`` and columns ``j*rw ..``; tokens inside a region are
row-major too). Then, as in the official ``ops/bra_legacy.py``:

1. Routing (not differentiated): region descriptors ``q_r``, ``k_r`` = mean of q / k over the tokens of each
   region, over all heads' channels concatenated (the full ``heads * Dqk`` vector);
   ``logits = (q_r * scale) @ k_r^T`` (``(B, S^2, S^2)``); ``idx = torch.topk(logits, topk, dim=-1).indices``
   (``(B, S^2, topk)``, torch.topk's tie-breaks).
2. Token attention, per head: every query of region ``r`` attends to all tokens of the ``topk`` regions
   ``idx[b, r]``: ``out = softmax(scale * q k^T) v`` over those ``topk * rh * rw`` keys.

``scale`` defaults to ``(heads * Dqk) ** -0.5`` -- the FULL qk dimension, as the official code does, not the
usual ``Dqk ** -0.5`` of one head. The same scale multiplies the routing logits (no effect on the top-k set).

Maps that are not multiples of the regions: the map is padded to ``Sh*rh x Sw*rw`` and the padded positions
are masked out everywhere -- region means are over the tokens that exist, padded positions are never keys and
get no output. A region with no token at all (possible when ``Sh * (rh - 1) >= H``, e.g. 5 rows in 4 regions
of 2) has logit ``-inf`` as a key region, so it is only routed to once every non-empty region is, and adds no
keys. On divisible maps (what the model gives the op: it pads before its qkv projection as the official
``auto_pad`` does) this is exactly the official math.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ops._utils import no_autocast

__all__ = ["bilevel_routing_attention_reference", "region_geometry", "route"]


def region_geometry(h: int, w: int, n_win: tuple[int, int]) -> tuple[int, int]:
    """Region size ``(rh, rw) = (ceil(H / Sh), ceil(W / Sw))``."""
    return -(-h // n_win[0]), -(-w // n_win[1])


def _to_regions(t: torch.Tensor, n_win: tuple[int, int], region: tuple[int, int]) -> torch.Tensor:
    """(B, H, W, nh, D) -> (B, S^2, rh*rw, nh, D) in fp32, padded positions zero."""
    batch, h, w, nh, d = t.shape
    (sh, sw), (rh, rw) = n_win, region
    t = F.pad(t.float(), (0, 0, 0, 0, 0, sw * rw - w, 0, sh * rh - h))
    t = t.view(batch, sh, rh, sw, rw, nh, d).permute(0, 1, 3, 2, 4, 5, 6)
    return t.reshape(batch, sh * sw, rh * rw, nh, d)


def _valid_tokens(h: int, w: int, n_win: tuple[int, int], region: tuple[int, int], device) -> torch.Tensor:
    """(S^2, rh*rw) bool: which region positions are inside the map."""
    (sh, sw), (rh, rw) = n_win, region
    valid = F.pad(torch.ones(h, w, dtype=torch.bool, device=device), (0, sw * rw - w, 0, sh * rh - h))
    return valid.view(sh, rh, sw, rw).permute(0, 2, 1, 3).reshape(sh * sw, rh * rw)


def route(q: torch.Tensor, k: torch.Tensor, n_win: tuple[int, int], topk: int, scale: float) -> torch.Tensor:
    """The routing indices ``(B, S^2, topk)`` (int64) of step 1; no gradient flows through them.

    Both backends call this, so they attend over the same regions bit for bit.
    """
    with torch.no_grad(), no_autocast(q.device):
        _, h, w, _, _ = q.shape
        region = region_geometry(h, w, n_win)
        qr = _to_regions(q.detach(), n_win, region).flatten(3)  # (B, S^2, N, heads*Dqk)
        kr = _to_regions(k.detach(), n_win, region).flatten(3)
        if h % n_win[0] == 0 and w % n_win[1] == 0:
            # Every region is full: the official mean, reduction order included.
            q_mean, k_mean = qr.mean(2), kr.mean(2)
            empty = None
        else:
            count = _valid_tokens(h, w, n_win, region, q.device).sum(1)  # (S^2,)
            q_mean = qr.sum(2) / count.clamp_min(1)[:, None]
            k_mean = kr.sum(2) / count.clamp_min(1)[:, None]
            empty = count == 0
        logits = (q_mean * scale) @ k_mean.transpose(-1, -2)  # (B, S^2, S^2)
        if empty is not None:
            logits = logits.masked_fill(empty, float("-inf"))
        return torch.topk(logits, topk, dim=-1).indices


def bilevel_routing_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    n_win: tuple[int, int],
    topk: int,
    scale: float | None = None,
) -> torch.Tensor:
    with no_autocast(q.device):
        return _bilevel_routing_attention(q, k, v, n_win, topk, scale)


def _bilevel_routing_attention(q, k, v, n_win, topk, scale) -> torch.Tensor:
    batch, h, w, nh, dqk = q.shape
    dv = v.shape[-1]
    scale = (nh * dqk) ** -0.5 if scale is None else scale
    (sh, sw) = n_win
    region = rh, rw = region_geometry(h, w, n_win)
    n = rh * rw
    idx = route(q, k, n_win, topk, scale)  # (B, S^2, topk)

    qr, kr, vr = (_to_regions(t, n_win, region) for t in (q, k, v))  # (B, S^2, N, nh, D)
    b_idx = torch.arange(batch, device=q.device)[:, None, None]
    # The official gather: the k / v tokens of each query region's routed regions, (B, S^2, topk, N, nh, D).
    k_sel = kr[b_idx, idx].permute(0, 1, 4, 2, 3, 5).reshape(batch, sh * sw, nh, topk * n, dqk)
    v_sel = vr[b_idx, idx].permute(0, 1, 4, 2, 3, 5).reshape(batch, sh * sw, nh, topk * n, dv)
    attn = (qr.transpose(2, 3) * scale) @ k_sel.transpose(-1, -2)  # (B, S^2, nh, N, topk*N)
    if h % sh or w % sw:
        valid = _valid_tokens(h, w, n_win, region, q.device)[idx]  # (B, S^2, topk, N)
        attn = attn.masked_fill(~valid.view(batch, sh * sw, 1, 1, topk * n), float("-inf"))
    out = attn.softmax(dim=-1) @ v_sel  # (B, S^2, nh, N, Dv)
    out = out.view(batch, sh, sw, nh, rh, rw, dv).permute(0, 1, 4, 2, 5, 3, 6)
    out = out.reshape(batch, sh * rh, sw * rw, nh, dv)[:, :h, :w]
    return out.to(q.dtype)
