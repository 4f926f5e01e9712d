"""Channel group attention (DaViT) in plain PyTorch: the specification, the CPU path and the test oracle.

``q, k, v``: ``(B, N, G, D)`` -- N tokens, G channel groups of D channels. Attention runs between the D
channels of a group, summed over all N tokens, with the roles exactly as in DaViT's official code:

    A[i, j]   = scale * sum_m k[m, i] * v[m, j]          (a D x D map per batch and group)
    out[n, i] = sum_j softmax_j(A[i, :]) * q[n, j]

``scale`` defaults to ``D ** -0.5``. Global over the tokens, so any N works and no padding is involved.
"""
from __future__ import annotations

import torch

from ops._utils import no_autocast

__all__ = ["channel_attention_reference"]


def channel_attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None
) -> torch.Tensor:
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    with no_autocast(q.device):
        attn = torch.einsum("bmgi,bmgj->bgij", k.float() * scale, v.float()).softmax(dim=-1)
        return torch.einsum("bgij,bngj->bngi", attn, q.float()).to(q.dtype)
