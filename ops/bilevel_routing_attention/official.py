"""Bi-level routing attention as the official BiFormer code computes it, in the ops layout, and its cost.

Official code: rayleizhu/BiFormer ``ops/bra_legacy.py`` (``BiLevelRoutingAttention`` with its ``TopkRouting``
and ``KVGather``), without LePE and the projections. From the projected q, k, v in the ops layout
``(B, H, W, heads, D)`` (v may be wider than q / k), with the channels ``heads * D`` concatenated as the official
code holds them: region partition ``n (j h) (i w) c -> n (j i) h w c`` of q and of ``kv = cat(k, v)``, region
means of q and k, routing logits ``(q_r * scale) @ k_r^T``, ``torch.topk``, ``torch.gather`` of the routed regions'
k / v tokens on an expanded view (``(B, S^2, topk, rh*rw, Cqk + Cv)``: the topk copies the official code
materialises), per-head ``softmax((q * scale) @ k_sel^T) @ v_sel`` with the FULL qk-dim scale
``(heads * D) ** -0.5``, region reverse. Divisible maps only (``H`` and ``W`` multiples of ``n_win``), as the
official code without ``auto_pad``. The benchmarks' baseline and the tests' second oracle.

One deliberate difference: the region means and the routing logits are taken in fp32 (a no-op on fp32 inputs, as
``ops``' ``route()`` does), so that bf16 rounding of near-tied logits cannot flip a top-k choice and make a
comparison fail for a reason that is not the attention's.

Cost (``S x S`` regions of ``n = rh * rw`` tokens, ``rh, rw = ceil(H / S), ceil(W / S)``; every query attends to
the ``topk * n`` tokens of its region's routed regions; ``Dv`` = v's head size, ``= D`` unless given;
``T = B H W heads D``, ``T_v`` the same with ``Dv``; conventions in :mod:`ops._cost`)::

    fwd FLOPs = 2 * B * S^2 * heads * n * (topk * n) * (D + Dv)   (q k_sel^T and P v_sel)
    bwd FLOPs = 2.5 * fwd
    fwd bytes = 2 T s + 2 T_v s + I   (read q, k, v; write o; read the routing index, I = B * S^2 * topk * 8)
    bwd bytes = 3 T s + 5 T_v s + I   (read q, k, v, o, dO; write dq, dk, dv; read the index)

Non-divisible maps are counted on the padded region grid (what the kernels iterate over). Routing is NOT
included: region means (~2T adds) and logits ``2 * B * S^4 * heads * D`` FLOPs, top-k; it runs as plain aten ops
before the attention op (``route()``), so a FLOP counter counts it by itself. It is small next to the attention --
~1% at BiFormer's stage 1 (S 7, topk 1, n 64), but ~10% at stage 3 (S 7, topk 16, n 4): S^2 / (2 * topk * n^2).
The floor assumes the routing's extra reads of q and k (2 T s) are fused away.
"""
from __future__ import annotations

import torch

from ops._cost import OpCost

__all__ = ["bilevel_routing_attention_cost", "bilevel_routing_attention_official", "routing_official"]


def _regions(t: torch.Tensor, n_win: int) -> torch.Tensor:
    """``(B, H, W, heads, D)`` -> ``(B, S^2, rh*rw, heads*D)``: 'n (j h) (i w) c -> n (j i) (h w) c'."""
    B, H, W = t.shape[:3]
    h, w = H // n_win, W // n_win
    return t.reshape(B, n_win, h, n_win, w, -1).permute(0, 1, 3, 2, 4, 5).reshape(B, n_win * n_win, h * w, -1)


def routing_official(q: torch.Tensor, k: torch.Tensor, n_win: int, topk: int,
                     scale: float | None = None) -> torch.Tensor:
    """``TopkRouting``'s ``(B, S^2, topk)`` region indices from detached region means (in fp32, module docstring);
    ``scale`` default ``(heads * D) ** -0.5``."""
    heads, d = q.shape[-2:]
    scale = (heads * d) ** -0.5 if scale is None else scale
    q_win = _regions(q, n_win).detach().float().mean(2)
    k_win = _regions(k, n_win).detach().float().mean(2)
    logits = (q_win * scale) @ k_win.transpose(-2, -1)  # (B, S^2, S^2)
    return torch.topk(logits, k=topk, dim=-1).indices


def bilevel_routing_attention_official(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_win: int, topk: int,
                                       *, scale: float | None = None) -> torch.Tensor:
    """BiFormer's BRA on ``(B, H, W, heads, D)`` q, k and ``(B, H, W, heads, Dv)`` v, ``H`` and ``W`` multiples
    of ``n_win``; ``scale`` default ``(heads * D) ** -0.5`` (module docstring)."""
    B, H, W, nh, D = q.shape
    dv = v.shape[-1]
    if H % n_win or W % n_win:
        raise ValueError(f"bilevel_routing_attention_official: H, W = {H}, {W} must be multiples of n_win={n_win} "
                         f"(the official code without auto_pad)")
    S, C, Cv = n_win, nh * D, nh * dv
    h, w = H // S, W // S
    scale = C ** -0.5 if scale is None else scale  # qk_dim ** -0.5: the full qk dim, as the official code
    q_pix = _regions(q, S)
    kv_pix = _regions(torch.cat((k.flatten(3), v.flatten(3)), dim=-1), S)
    r_idx = routing_official(q, k, S, topk, scale)
    # KVGather: torch.gather on an expanded view -> (B, S^2, topk, h*w, C + Cv)
    n, p2, w2, c_kv = kv_pix.shape
    topk_kv = torch.gather(kv_pix.view(n, 1, p2, w2, c_kv).expand(-1, p2, -1, -1, -1), dim=2,
                           index=r_idx.view(n, p2, topk, 1, 1).expand(-1, -1, -1, w2, c_kv))
    k_sel, v_sel = topk_kv.split([C, Cv], dim=-1)
    # 'n p2 k w2 (m c) -> (n p2) m c (k w2)' and '... -> (n p2) m (k w2) c'
    k_sel = k_sel.reshape(n * p2, topk, w2, nh, D).permute(0, 3, 4, 1, 2).reshape(n * p2, nh, D, topk * w2)
    v_sel = v_sel.reshape(n * p2, topk, w2, nh, dv).permute(0, 3, 1, 2, 4).reshape(n * p2, nh, topk * w2, dv)
    q_pix = q_pix.reshape(n * p2, w2, nh, D).transpose(1, 2)  # 'n p2 w2 (m c) -> (n p2) m w2 c'
    attn = ((q_pix * scale) @ k_sel).softmax(dim=-1)
    out = attn @ v_sel  # (B*S^2, heads, h*w, Dv)
    # '(n j i) m (h w) c -> n (j h) (i w) (m c)'
    out = out.view(B, S, S, nh, h, w, dv).permute(0, 1, 4, 2, 5, 3, 6)
    return out.reshape(B, H, W, nh, dv)


def bilevel_routing_attention_cost(
    batch: int,
    height: int,
    width: int,
    heads: int,
    head_dim: int,
    n_win: int | tuple[int, int],
    topk: int,
    *,
    elem_size: int,
    v_dim: int | None = None,
    index_elem_size: int = 8,
) -> OpCost:
    """Cost of ``ops.bilevel_routing_attention`` (module docstring; routing not included)."""
    sh, sw = (n_win, n_win) if isinstance(n_win, int) else n_win
    dv = head_dim if v_dim is None else v_dim
    n = -(-height // sh) * -(-width // sw)
    flops_fwd = 2 * batch * sh * sw * heads * n * (topk * n) * (head_dim + dv)
    tokens = batch * height * width * heads
    t, t_v = tokens * head_dim * elem_size, tokens * dv * elem_size
    index = batch * sh * sw * topk * index_elem_size
    return OpCost(
        flops_fwd=flops_fwd,
        flops_bwd=flops_fwd * 5 // 2,
        bytes_fwd=2 * t + 2 * t_v + index,
        bytes_bwd=3 * t + 5 * t_v + index,
    )
