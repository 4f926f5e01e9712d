"""Rank-augmented linear attention as the official RAVLT code computes it, in the ops layout, and its cost.

Official code: qhfan/RALA ``classfication/RALA.py`` (``GateLinearAttentionNoSilu.forward`` between its ``qkvo`` /
``lepe`` convolutions and ``proj``, and the ``RoPE`` module). From q, k, v, the raw gate ``o`` and the LePE output
(the op's ``residual``) in the ops layout ``(B, N, heads, d)``: the official ``(B, heads, N, d)`` layout (einops
``b (m n d) h w -> m b n (h w) d``), ``elu + 1``, ``q.mean``, ``softmax(scale * q_mean @ k^T)``, ``k * eff * N``,
``theta_shift`` of q and k, ``z = 1 / (q @ k.mean^T + eps)``, ``kv = (k_rope^T N^-0.5) @ (v N^-0.5)``,
``q_rope @ kv * z``, back to the token layout, ``+ lepe``, ``* o``. :func:`rope_tables` builds the ``(sin, cos)``
tables as the official ``RoPE`` module does. The benchmarks' baseline and the tests' second oracle.

Cost (``T = B N heads d``, ``s`` the element size; the RoPE tables ``2 N d s``; conventions in :mod:`ops._cost`).
Counted: the products ``qbar . phi(k)``, ``KV``, ``ksum``, the normaliser and ``R phi(q) KV``; not the
element-wise work (``elu``, RoPE, softmax, epilogue)::

    fwd FLOPs = B * heads * N * (4 d^2 + 6 d)
    bwd FLOPs = 2 * fwd                           (every product has two gradients; the d x d state is kept)
    fwd bytes = 6 T s + tables                    (read q, k, v, gate, residual; write o)
    bwd bytes = 11 T s + tables                   (read q, k, v, gate, residual, dO; write dq, dk, dv, dgate,
                                                   dresidual; the pre-gate value is recomputed)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ops._cost import OpCost

__all__ = ["rala_cost", "rala_official", "rope_tables", "theta_shift"]


def rope_tables(height: int, width: int, head_dim: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sin, cos)``, each ``(H W, d)`` fp32, as RAVLT's ``RoPE`` module: ``d / 4`` frequencies
    ``10000 ** -linspace(0, 1, d / 4)``, each repeated twice; the first ``d / 2`` channels turn with the row,
    the last ``d / 2`` with the column; tokens row-major."""
    angle = 1.0 / (10000 ** torch.linspace(0, 1, head_dim // 4, device=device, dtype=torch.float32))
    angle = angle.repeat_interleave(2)
    rows = torch.arange(height, device=device, dtype=torch.float32)[:, None] * angle  # (H, d/2)
    cols = torch.arange(width, device=device, dtype=torch.float32)[:, None] * angle  # (W, d/2)
    ang = torch.cat((rows[:, None, :].expand(height, width, -1), cols[None, :, :].expand(height, width, -1)), -1)
    ang = ang.reshape(height * width, head_dim)
    return ang.sin(), ang.cos()


def theta_shift(x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    """The official ``theta_shift``: ``x * cos + rotate_every_two(x) * sin`` (interleaved channel pairs)."""
    return x * cos + torch.stack([-x[..., 1::2], x[..., ::2]], dim=-1).flatten(-2) * sin


def rala_official(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, gate: torch.Tensor | None = None,
                  residual: torch.Tensor | None = None, rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                  scale: float | None = None, eps: float = 1e-6) -> torch.Tensor:
    """RALA on ``(B, N, heads, d)`` q, k, v (module docstring): ``gate`` / ``residual`` ``(B, N, heads, d)``,
    ``rope`` ``(sin, cos)`` ``(N, d)`` tables, each optional as in the op; ``scale`` default ``d ** -0.5``."""
    n = q.shape[1]
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, heads, N, d)
    q = F.elu(q) + 1.0
    k = F.elu(k) + 1.0
    eff = scale * q.mean(dim=-2, keepdim=True) @ k.transpose(-1, -2)
    k = k * torch.softmax(eff, dim=-1).transpose(-1, -2) * n
    q_rope, k_rope = (q, k) if rope is None else (theta_shift(q, *rope), theta_shift(k, *rope))
    z = 1 / (q @ k.mean(dim=-2, keepdim=True).transpose(-2, -1) + eps)
    kv = (k_rope.transpose(-2, -1) * n ** -0.5) @ (v * n ** -0.5)
    out = (q_rope @ kv * z).transpose(1, 2)
    if residual is not None:
        out = out + residual
    return out if gate is None else out * gate


def rala_cost(batch: int, tokens: int, heads: int, head_dim: int, *, elem_size: int, rope: bool = True) -> OpCost:
    """Cost of ``ops.rala`` with a gate and a residual (module docstring)."""
    flops_fwd = batch * heads * tokens * (4 * head_dim * head_dim + 6 * head_dim)
    t = batch * tokens * heads * head_dim * elem_size
    tables = 2 * tokens * head_dim * elem_size if rope else 0
    return OpCost(flops_fwd=flops_fwd, flops_bwd=2 * flops_fwd, bytes_fwd=6 * t + tables, bytes_bwd=11 * t + tables)
