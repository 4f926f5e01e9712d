"""Channel group attention as the official DaViT code computes it, in the ops layout, and its cost.

Official code: dingmyu/davit ``timm/models/davit.py`` (``ChannelAttention.forward``; timm's
``timm.models.davit.ChannelAttention`` is the same). From the projected q, k, v in the ops layout
``(B, N, groups, D)``: the official ``reshape / permute`` to ``(B, groups, N, D)``, ``k * scale``,
``softmax(k^T @ v)``, ``(attention @ q^T)^T``, ``transpose`` / ``reshape`` back. The benchmarks' baseline.

Cost (``(B, N, G, D)``, a ``D x D`` map per batch and group; conventions in :mod:`ops._cost`; ``T = B N G D``,
``s`` the element size)::

    fwd FLOPs = 4 * B * G * N * D^2                   (k^T v and q P^T)
    bwd FLOPs = 8 * B * G * N * D^2 = 2 * fwd         (dq = dO P, dP = dO^T q, dk = v dS^T, dv = k dS; P is saved,
                                                      D x D per group, so nothing is recomputed)
    fwd bytes = 4 T s          (read q, k, v; write o)
    bwd bytes = 7 T s          (read q, k, v, dO; write dq, dk, dv -- o is not needed)
"""
from __future__ import annotations

import torch

from ops._cost import OpCost

__all__ = ["channel_attention_cost", "channel_attention_official"]


def channel_attention_official(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                               scale: float | None = None) -> torch.Tensor:
    """DaViT's channel attention on ``(B, N, groups, D)`` q, k, v; ``scale`` default ``D ** -0.5``."""
    B, N, G, D = q.shape
    q, k, v = (t.permute(0, 2, 1, 3) for t in (q, k, v))  # (B, G, N, D), as the official reshape / permute
    k = k * (D ** -0.5 if scale is None else scale)
    attention = (k.transpose(-1, -2) @ v).softmax(dim=-1)
    x = (attention @ q.transpose(-1, -2)).transpose(-1, -2)
    return x.transpose(1, 2).reshape(B, N, G, D)


def channel_attention_cost(batch: int, tokens: int, groups: int, head_dim: int, *, elem_size: int) -> OpCost:
    """Cost of ``ops.channel_attention`` on ``(batch, tokens, groups, head_dim)`` (module docstring)."""
    flops_fwd = 4 * batch * groups * tokens * head_dim * head_dim
    tensor = batch * tokens * groups * head_dim * elem_size
    return OpCost(flops_fwd=flops_fwd, flops_bwd=2 * flops_fwd, bytes_fwd=4 * tensor, bytes_bwd=7 * tensor)
