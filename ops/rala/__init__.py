"""`rala`: rank-augmented linear attention (RAVLT, "Breaking the Low-Rank Dilemma of Linear Attention").

The op boundary: everything between the model's ``qkvo`` projection and its output projection that is attention
math -- the kernel function ``elu + 1``, the query-context softmax that reweights keys/values, 2-D RoPE on the
numerator, the linear-attention product with its normaliser, and the output rank augmentation ``(attn + lepe) *
gate``. The projections and the LePE depthwise convolution stay in the model (they are convolutions); the op takes
their results as the optional ``residual`` and ``gate`` so that the element-wise epilogue runs in the kernel's
output pass instead of two more passes over memory.
"""
from __future__ import annotations

import torch

from ops._backend import resolve_backend
from ops._checks import TOKENS, check_qkv
from ops.rala.reference import rala_reference

__all__ = ["rala"]


def _check(q, k, v, gate, residual, rope) -> None:
    check_qkv("rala", q, k, v, TOKENS)
    for name, t in (("gate", gate), ("residual", residual)):
        if t is None:
            continue
        if t.shape != q.shape or t.dtype != q.dtype:
            raise ValueError(
                f"rala: {name} must have q's shape {tuple(q.shape)} and dtype {q.dtype}, got {tuple(t.shape)} {t.dtype}"
            )
    if rope is None:
        return
    if not isinstance(rope, (tuple, list)) or len(rope) != 2:
        raise ValueError(f"rala: rope must be a (sin, cos) pair of tensors, got {type(rope).__name__}")
    n, head_dim = q.shape[1], q.shape[3]
    if head_dim % 2:
        raise ValueError(f"rala: RoPE rotates channel pairs, so head_dim must be even, got {head_dim}")
    for name, t in zip(("sin", "cos"), rope):
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != (n, head_dim) or not t.is_floating_point():
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"rala: rope {name} must be a floating (N, head_dim) = {(n, head_dim)} table, got {shape}")
        if t.device != q.device:
            raise ValueError(f"rala: rope {name} is on {t.device}, q on {q.device}")


def rala(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    gate: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
    rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    scale: float | None = None,
    eps: float = 1e-6,
    backend: str | None = None,
) -> torch.Tensor:
    """Rank-augmented linear attention over all ``N`` tokens, exactly the official RAVLT computation.

    Args:
        q, k, v: ``(B, N, heads, head_dim)``, raw projections (the kernel function ``elu + 1`` is applied here to
            ``q`` and ``k``), any ``N``; tokens in the order the RoPE tables use (row-major for an image).
        gate: optional ``(B, N, heads, head_dim)``, multiplies the output (RAVLT's raw ``o`` projection).
        residual: optional ``(B, N, heads, head_dim)``, added before the gate (RAVLT's LePE branch).
        rope: optional ``(sin, cos)`` tables ``(N, head_dim)``, shared by batch and heads, applied to the numerator
            features as ``x * cos + rot(x) * sin`` (pairs ``(2c, 2c+1)``); any floating dtype; they receive
            gradients like every other input.
        scale: temperature of the query-context softmax over keys, default ``head_dim ** -0.5``.
        eps: added to the normaliser, default 1e-6 (official).
        backend: ``'reference'`` or ``'triton'``; default from :mod:`ops._backend`.

    Returns:
        ``(B, N, heads, head_dim)`` in q's dtype; the formula is in :mod:`ops.rala.reference`.
    """
    _check(q, k, v, gate, residual, rope)
    sin, cos = rope if rope is not None else (None, None)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if resolve_backend("rala", backend, q, k, v, gate, residual, *(rope or ())) == "reference":
        return rala_reference(q, k, v, gate, residual, sin, cos, scale, eps)
    from ops.rala.triton import rala_triton

    return rala_triton(q, k, v, gate, residual, sin, cos, scale, eps)
