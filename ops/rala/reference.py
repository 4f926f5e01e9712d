"""Rank-augmented linear attention (RALA, RAVLT) in plain PyTorch: the specification, the CPU path and the oracle.

Per batch and head, with ``N`` tokens of ``d`` channels (``q, k, v``: ``(B, N, heads, d)``)::

    phi(x)  = elu(x) + 1                                 the kernel function (positive features)
    qbar    = mean_i phi(q_i)                            global query context
    w_j     = softmax_j(scale * qbar . phi(k_j))         KV-buffer rank augmentation: token weights, sum 1
    KV      = sum_j w_j R_j phi(k_j) v_j^T               d x d state, one pass over the tokens
    ksum    = sum_j w_j phi(k_j)                         normaliser state (un-rotated)
    attn_i  = (R_i phi(q_i))^T KV / (phi(q_i) . ksum + eps)
    out_i   = (attn_i + residual_i) * gate_i             output rank augmentation (gate and residual optional)

``R_i`` rotates the channel pairs ``(2c, 2c+1)`` of token ``i`` by the RoPE tables: ``R x = x * cos + rot(x) * sin``
with ``rot(x)[2c] = -x[2c+1]``, ``rot(x)[2c+1] = x[2c]``; without tables ``R`` is the identity. The numerator uses
rotated features, the normaliser does not -- exactly what the official ``GateLinearAttentionNoSilu`` computes:
there ``k' = N w_j phi(k_j)``, ``KV = (1/N) sum_j R_j k'_j v_j^T`` and the normaliser is ``phi(q_i) . mean_j k'_j``.
``scale`` defaults to ``d ** -0.5``; ``eps`` to the official 1e-6.

Nothing here is ``N x N``: two reductions over the tokens (``qbar``; then ``w``, ``KV`` and ``ksum``) and a
token-parallel product. Gradients come from autograd.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ops._utils import no_autocast

__all__ = ["rala_reference", "rotate_pairs"]


def rotate_pairs(x: torch.Tensor) -> torch.Tensor:
    """``rot(x)``: ``(x[2c], x[2c+1]) -> (-x[2c+1], x[2c])`` on the last dimension."""
    return torch.stack((-x[..., 1::2], x[..., 0::2]), dim=-1).flatten(-2)


def _apply_rope(x: torch.Tensor, sin: torch.Tensor | None, cos: torch.Tensor | None) -> torch.Tensor:
    if sin is None:
        return x
    # tables (N, d) broadcast over batch and heads of x (B, N, heads, d)
    return x * cos[:, None, :] + rotate_pairs(x) * sin[:, None, :]


def rala_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gate: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
    sin: torch.Tensor | None = None,
    cos: torch.Tensor | None = None,
    scale: float | None = None,
    eps: float = 1e-6,
) -> torch.Tensor:
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    acc = torch.promote_types(q.dtype, torch.float32)  # fp32 accumulation; fp64 stays fp64
    with no_autocast(q.device):
        sin = None if sin is None else sin.to(acc)
        cos = None if cos is None else cos.to(acc)
        phi_q = F.elu(q.to(acc)) + 1.0
        phi_k = F.elu(k.to(acc)) + 1.0
        qbar = phi_q.mean(dim=1)  # (B, heads, d)
        w = torch.einsum("bhc,bnhc->bnh", qbar * scale, phi_k).softmax(dim=1)  # (B, N, heads)
        kv = torch.einsum("bnh,bnhc,bnhe->bhce", w, _apply_rope(phi_k, sin, cos), v.to(acc))
        ksum = torch.einsum("bnh,bnhc->bhc", w, phi_k)
        den = torch.einsum("bnhc,bhc->bnh", phi_q, ksum) + eps
        out = torch.einsum("bnhc,bhce->bnhe", _apply_rope(phi_q, sin, cos), kv) / den[..., None]
        if residual is not None:
            out = out + residual.to(acc)
        if gate is not None:
            out = out * gate.to(acc)
        return out.to(q.dtype)
