"""``channel_attention`` (DaViT): a ``head_dim x head_dim`` softmax map per group, global over the tokens.

Inputs: a packed ``qkv`` ``(B, N, 3, groups, D)``; gradients w.r.t. it. Output ``(B, N, groups, D)``.

Candidates:

* ``official`` -- :func:`ops.channel_attention.official.channel_attention_official` (DaViT).
* ``sdpa`` -- ``F.scaled_dot_product_attention`` on the transposed problem: ``D`` queries of head size ``N``.
* ``reference`` / ``triton`` -- :func:`ops.channel_attention` with that backend.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from benchmarks.harness import BenchInputs, OpBench, packed_qkv
from benchmarks.ops.window_attention import DAVIT_B, DAVIT_T
from ops._cost import OpCost, elem_size
from ops.channel_attention.official import channel_attention_cost, channel_attention_official

__all__ = ["BENCH", "ChannelCase"]


@dataclass(frozen=True)
class ChannelCase:
    """``channel_attention`` on ``(batch, tokens, groups, head_dim)``."""

    batch: int
    tokens: int
    groups: int
    head_dim: int

    @property
    def label(self) -> str:
        return f"{self.batch}x{self.tokens}x{self.groups}x{self.head_dim}"

    def cost(self, dtype: torch.dtype) -> OpCost:
        return channel_attention_cost(self.batch, self.tokens, self.groups, self.head_dim, elem_size=elem_size(dtype))


def _make_inputs(case: ChannelCase, device, dtype, grad: bool) -> BenchInputs:
    qkv = packed_qkv((case.batch, case.tokens, 3, case.groups, case.head_dim), device, dtype, grad)
    return BenchInputs(leaves=[qkv])


def channel_official(inp: BenchInputs, case: ChannelCase) -> torch.Tensor:
    return channel_attention_official(*inp.leaves[0].unbind(2))


def channel_sdpa(inp: BenchInputs, case: ChannelCase) -> torch.Tensor:
    B, N, _, G, D = inp.leaves[0].shape
    q, k, v = inp.leaves[0].permute(2, 0, 3, 4, 1).unbind(0)  # (B, G, D, N): D "queries" of head size N
    out = F.scaled_dot_product_attention(k, v, q, scale=D ** -0.5)  # softmax(k^T v) q^T, (B, G, D, N)
    return out.permute(0, 3, 1, 2).reshape(B, N, G, D)


def _ours(backend: str):
    def run(inp: BenchInputs, case: ChannelCase) -> torch.Tensor:
        import ops

        q, k, v = inp.leaves[0].unbind(2)
        return ops.channel_attention(q, k, v, backend=backend)

    return run


def _davit(batch: int, img: int, dims, heads) -> list[ChannelCase]:
    """DaViT's four stages at img x img (strides 4, 8, 16, 32): (tokens, groups, head_dim)."""
    return [ChannelCase(batch, (img // 4 // 2 ** i) ** 2, h, d // h) for i, (d, h) in enumerate(zip(dims, heads))]


# davit_*: the four stages of DaViT at 224x224, batch 64 (ImageNet training per GPU). tiny: CPU-sized, odd N.
BENCH = OpBench(
    name="channel_attention",
    presets={
        "davit_t_224": _davit(64, 224, **DAVIT_T),
        "davit_b_224": _davit(64, 224, **DAVIT_B),
        "tiny": [ChannelCase(2, 49, 3, 16), ChannelCase(2, 61, 2, 24)],
    },
    candidates={"official": channel_official, "sdpa": channel_sdpa, "reference": _ours("reference"),
                "triton": _ours("triton")},
    make_inputs=_make_inputs,
    case_type=ChannelCase,
    shape_fields="B,N,groups,D",
)
