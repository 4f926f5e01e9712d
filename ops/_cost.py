"""What an op call costs: FLOPs and the DRAM bytes a kernel cannot avoid, forward and backward.

Every ``ops/<op>/official.py`` has a ``<op>_cost`` function returning :class:`OpCost`; the benchmarks' roofline
floors and the model FLOP counter (:mod:`zoo.engine.flops`) read them. The conventions, shared by all of them:
FLOPs count multiply-adds as 2 and only the matrix products (exponentials, scaling and masking are left out, as
every FLOP counter does); bytes are the minimum a kernel must move through DRAM, every input read once and every
output written once, nothing else (no score matrix, no logsumexp, no workspace). The backward of a softmax
attention is counted as FlashAttention counts it: 2.5 x the forward (``dV``, ``dP``, ``dQ``, ``dK`` and the
recomputed ``q k^T``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["OpCost", "elem_size"]


@dataclass(frozen=True)
class OpCost:
    """FLOPs and minimal DRAM bytes of one call of an op, forward and backward."""

    flops_fwd: int
    flops_bwd: int
    bytes_fwd: int
    bytes_bwd: int

    @property
    def flops_fwdbwd(self) -> int:
        return self.flops_fwd + self.flops_bwd

    @property
    def bytes_fwdbwd(self) -> int:
        return self.bytes_fwd + self.bytes_bwd

    def __add__(self, other: OpCost) -> OpCost:
        return OpCost(self.flops_fwd + other.flops_fwd, self.flops_bwd + other.flops_bwd,
                      self.bytes_fwd + other.bytes_fwd, self.bytes_bwd + other.bytes_bwd)


def elem_size(dtype: torch.dtype) -> int:
    """Bytes per element of `dtype`."""
    return torch.empty((), dtype=dtype).element_size()
