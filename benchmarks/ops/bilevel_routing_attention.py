"""``bilevel_routing_attention`` (BiFormer): region-level top-k routing, then token attention over the routed regions.

Inputs: a packed ``qkv`` ``(B, H, W, 3, heads, D)``; gradients w.r.t. it. Output ``(B, H, W, heads, D)``.
Divisible maps only (``H`` and ``W`` multiples of ``n_win``): the official formulation, the baseline, handles no
others.

Candidates:

* ``official`` -- :func:`ops.bilevel_routing_attention.official.bilevel_routing_attention_official` (BiFormer's
  ``bra_legacy``, the routed k / v gathered as the official code does).
* ``flex`` -- ``torch.nn.attention.flex_attention`` over the whole map, with a ``create_block_mask`` built from the
  routing indices of ``ops``' ``route()``: query token ``i`` may attend to key token ``j`` iff ``j``'s region is
  among the ``topk`` regions of ``i``'s region. Tokens are permuted to region-major order (``(B, H, W, heads, D)
  -> (B, heads, S^2 * rh*rw, D)``, token ``r * rh*rw + y * rw + x`` = row ``y``, column ``x`` of region ``r``,
  regions row-major), so that the mask's blocks never cut a region (with 128-token blocks: 128 / (rh*rw) whole
  regions per block, or rh*rw / 128 blocks per region), and the output is permuted back. Routing, mask building
  and both permutations are inside the timed call. CUDA: ``torch.compile(flex_attention)`` (eager flex is an
  unfused reference); the CPU has no FlexAttention backward, so it is skipped there (``--mode fwd
  --allow-interpret`` runs its eager forward, to check the harness). No ``sdpa``: it would need a dense ``L x L``
  mask.
* ``reference`` / ``triton`` -- :func:`ops.bilevel_routing_attention` with that backend.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import torch

from benchmarks.harness import BenchInputs, OpBench, packed_qkv
from ops._cost import OpCost, elem_size
from ops.bilevel_routing_attention.official import bilevel_routing_attention_cost, bilevel_routing_attention_official

__all__ = ["BENCH", "BilevelRoutingCase"]


@dataclass(frozen=True)
class BilevelRoutingCase:
    """``bilevel_routing_attention`` on ``(batch, height, width, heads, head_dim)``, ``n_win`` regions per side,
    ``topk`` routed regions per query region (q, k and v share ``head_dim``)."""

    batch: int
    height: int
    width: int
    heads: int
    head_dim: int
    n_win: int
    topk: int

    @property
    def label(self) -> str:
        return f"{self.batch}x{self.height}x{self.width}x{self.heads}x{self.head_dim} S{self.n_win} top{self.topk}"

    def cost(self, dtype: torch.dtype) -> OpCost:
        return bilevel_routing_attention_cost(self.batch, self.height, self.width, self.heads, self.head_dim,
                                              self.n_win, self.topk, elem_size=elem_size(dtype))


def _check_case(case: BilevelRoutingCase) -> str | None:
    s = case.n_win
    if case.height % s or case.width % s:
        return (f"H and W must be multiples of n_win={s} (the official formulation, the baseline, handles divisible "
                f"maps only)")
    if case.topk > s * s:
        return f"topk={case.topk} > n_win^2={s * s} regions"
    return None


def _make_inputs(case: BilevelRoutingCase, device, dtype, grad: bool) -> BenchInputs:
    qkv = packed_qkv((case.batch, case.height, case.width, 3, case.heads, case.head_dim), device, dtype, grad)
    return BenchInputs(leaves=[qkv])


def bra_official(inp: BenchInputs, case: BilevelRoutingCase) -> torch.Tensor:
    return bilevel_routing_attention_official(*inp.leaves[0].unbind(3), case.n_win, case.topk)


_FLEX_COMPILED: Callable | None = None


def bra_flex(inp: BenchInputs, case: BilevelRoutingCase) -> torch.Tensor:
    """FlexAttention over the region-major token order with a block mask from the routing (module docstring)."""
    global _FLEX_COMPILED
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    from ops.bilevel_routing_attention import route

    B, H, W, _, nh, D = inp.leaves[0].shape
    S, topk = case.n_win, case.topk
    h, w = H // S, W // S
    n, length = h * w, H * W
    scale = (nh * D) ** -0.5
    q, k, v = inp.leaves[0].unbind(3)
    idx = route(q, k, (S, S), topk, scale)  # (B, S^2, topk), the regions every backend attends over
    routed = torch.zeros(B, S * S, S * S, dtype=torch.bool, device=q.device).scatter_(2, idx, True)

    def mask_mod(b, hd, q_idx, kv_idx):
        return routed[b, q_idx // n, kv_idx // n]

    cuda = q.device.type == "cuda"
    block_mask = create_block_mask(mask_mod, B, None, length, length, device=q.device, _compile=cuda)

    def region_major(t):  # (B, H, W, heads, D) -> (B, heads, S^2 * h*w, D)
        return t.reshape(B, S, h, S, w, nh, D).permute(0, 5, 1, 3, 2, 4, 6).reshape(B, nh, length, D)

    if cuda and _FLEX_COMPILED is None:
        _FLEX_COMPILED = torch.compile(flex_attention, dynamic=False)
    attend = _FLEX_COMPILED if cuda else flex_attention
    with warnings.catch_warnings():  # CPU: eager flex warns that it is unfused, which the skip reason already says
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        out = attend(region_major(q), region_major(k), region_major(v), block_mask=block_mask, scale=scale)
    out = out.view(B, nh, S, S, h, w, D).permute(0, 2, 4, 3, 5, 1, 6)
    return out.reshape(B, H, W, nh, D)


def _ours(backend: str):
    def run(inp: BenchInputs, case: BilevelRoutingCase) -> torch.Tensor:
        import ops

        q, k, v = inp.leaves[0].unbind(3)
        return ops.bilevel_routing_attention(q, k, v, case.n_win, case.topk, backend=backend)

    return run


def _biformer_s(batch: int, img: int, n_win: int) -> list[BilevelRoutingCase]:
    """BiFormer-S's BRA stages 1-3 (dims 64 / 128 / 256, heads = dim / 32, topk 1 / 4 / 16; stage 4 is global
    attention, not BRA) at img x img (strides 4, 8, 16)."""
    return [BilevelRoutingCase(batch, img // 4 // 2 ** i, img // 4 // 2 ** i, dim // 32, 32, n_win, topk)
            for i, (dim, topk) in enumerate(zip((64, 128, 256), (1, 4, 16)))]


# biformer_s_224: BiFormer-S's BRA stages at 224x224 (n_win 7), batch 16 -- a per-GPU micro-batch, not the batch
# of the official ImageNet recipe, chosen so that the whole preset (the official formulation's gathered k / v,
# topk copies: (16, 49, 16, 4, 2C) = 51 MB in bf16 at stage 3, plus autograd's saved tensors) runs quickly even
# on small GPUs; the per-call cost scales linearly in the batch. biformer_s_512: the same stages in BiFormer's
# 512x512 segmentation setting (n_win 8), batch 2 per GPU as in mmseg's 512x512 schedules. tiny: divisible maps
# (the official code's domain), topk 1 to all regions, non-square regions.
BENCH = OpBench(
    name="bilevel_routing_attention",
    presets={
        "biformer_s_224": _biformer_s(16, 224, 7),
        "biformer_s_512": _biformer_s(2, 512, 8),
        "tiny": [
            BilevelRoutingCase(2, 12, 12, 2, 16, 3, 2),
            BilevelRoutingCase(1, 8, 16, 3, 8, 2, 4),
        ],
    },
    candidates={"official": bra_official, "flex": bra_flex, "reference": _ours("reference"),
                "triton": _ours("triton")},
    make_inputs=_make_inputs,
    case_type=BilevelRoutingCase,
    shape_fields="B,H,W,heads,D,n_win,topk",
    check_case=_check_case,
)
