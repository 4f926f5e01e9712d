"""The opening that the multi-head attention modules of several families share (the attention math itself lives in
``ops/``)."""
from typing import Tuple

import torch
import torch.nn as nn

__all__ = ['QKVAttention', 'head_dim_of']


def head_dim_of(owner: str, dim: int, num_heads: int) -> int:
    """The per-head width ``dim // num_heads``; refuses a `dim` that the heads do not split evenly."""
    if dim % num_heads:
        raise ValueError(f'{owner}: dim {dim} is not a multiple of num_heads {num_heads}')
    return dim // num_heads


class QKVAttention(nn.Module):
    """``num_heads`` heads of ``head_dim``, a fused ``qkv`` Linear (dim -> 3 * dim) and the output ``proj`` Linear
    (dim -> dim), created in that order. Subclasses add their parameters after these and own ``forward``."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, device=None, dtype=None):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim_of(type(self).__name__, dim, num_heads)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias, device=device, dtype=dtype)
        self.proj = nn.Linear(dim, dim, device=device, dtype=dtype)

    def qkv_heads(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(..., dim)`` tokens -> q, k, v of shape ``(..., num_heads, head_dim)``."""
        # unpacked here, so that callers may star the result under FX tracing (a traced tensor cannot be iterated)
        q, k, v = self.qkv(x).unflatten(-1, (3, self.num_heads, self.head_dim)).unbind(-3)
        return q, k, v
