"""`channel_attention`: DaViT's channel group attention (a head_dim x head_dim map per group, global over tokens)."""
from __future__ import annotations

import torch

from ops._backend import resolve_backend
from ops._checks import check_qkv
from ops.channel_attention.reference import channel_attention_reference

__all__ = ["channel_attention"]


def channel_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scale: float | None = None, backend: str | None = None
) -> torch.Tensor:
    """Channel group attention, exactly DaViT's official order of roles.

    Args:
        q, k, v: ``(B, N, groups, head_dim)``, any ``N``.
        scale: scale of ``k^T v``, default ``head_dim ** -0.5`` (DaViT); timm's Florence-2 variant uses other
            roles and ``N ** -0.5``, expressible by permuting the arguments and passing ``scale``.
        backend: ``'reference'`` or ``'triton'``; default from :mod:`ops._backend`.

    Returns:
        ``(B, N, groups, head_dim)``: ``out[n, i] = sum_j softmax_j(scale * sum_m k[m, i] v[m, j]) q[n, j]``.
    """
    check_qkv("channel_attention", q, k, v, ("B", "N", "groups", "head_dim"))
    if resolve_backend("channel_attention", backend, q, k, v) == "reference":
        return channel_attention_reference(q, k, v, scale)
    from ops.channel_attention.triton import channel_attention_triton

    return channel_attention_triton(q, k, v, scale)
