"""HiLo attention's Lo-Fi path in plain PyTorch: the specification, the CPU path and the test oracle.

Lo-Fi attention (LITv2): every query attends to one short, shared set of keys / values -- in HiLo the tokens of
the ``s x s`` average-pooled map, so ``M = N / s^2`` keys for ``N`` queries::

    out[b, n, h] = sum_m softmax_m(scale * <q[b, n, h], k[b, m, h]>) v[b, m, h]

``q``: ``(B, N, heads, D)``; ``k``, ``v``: ``(B, M, heads, D)``. Nothing is masked: every key is a real token.
The Hi-Fi path is plain window attention (:mod:`ops.window_attention.reference`).
"""
from __future__ import annotations

import torch

from ops._utils import no_autocast

__all__ = ["lofi_attention_reference"]


def lofi_attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None
) -> torch.Tensor:
    with no_autocast(q.device):
        scale = q.shape[-1] ** -0.5 if scale is None else scale
        qh, kh, vh = (t.float().transpose(1, 2) for t in (q, k, v))  # (B, heads, tokens, D)
        attn = (qh * scale) @ kh.transpose(-2, -1)  # (B, heads, N, M)
        out = attn.softmax(dim=-1) @ vh
        return out.transpose(1, 2).to(q.dtype)
