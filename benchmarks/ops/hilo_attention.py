"""``hilo_attention`` (LITv2's HiLo): Hi-Fi heads in ``s x s`` windows, Lo-Fi heads against the pooled keys.

Inputs, as the model hands them to the op (``zoo.models.litv2``): the Hi-Fi heads' packed projection
``hifi_qkv`` ``(B, H, W, 3, hifi_heads, D)``, the Lo-Fi queries ``lofi_q`` ``(B, H, W, lofi_heads, D)`` and the
Lo-Fi keys / values of the pooled map ``lofi_kv`` ``(B, h, w, 2, lofi_heads, D)`` with ``h, w = ceil(H / s),
ceil(W / s)``; gradients are taken w.r.t. all three. The output is the pair (Hi-Fi, Lo-Fi), each
``(B, H, W, heads, D)`` -- the official layer projects each with its own Linear, so nothing is concatenated here.

Candidates:

* ``official`` -- :func:`ops.hilo_attention.official.hilo_attention_official` (``HiLo.hifi`` / ``HiLo.lofi``).
* ``sdpa`` -- ``F.scaled_dot_product_attention`` on the same window partition (the padding mask as a float
  ``attn_mask``, none for divisible maps), and on ``(B, heads, N, D)`` queries against the pooled keys.
* ``reference`` / ``triton`` -- :func:`ops.hilo_attention` with that backend (Hi-Fi through
  ``ops.window_attention``, Lo-Fi through ``ops.lofi_attention``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from benchmarks.harness import BenchInputs, OpBench, packed_qkv
from ops._cost import OpCost, elem_size
from ops.hilo_attention.official import (
    hifi_partition,
    hifi_reverse,
    hilo_attention_cost,
    hilo_attention_official,
    padding_mask,
)

__all__ = ["BENCH", "HiLoCase"]


@dataclass(frozen=True)
class HiLoCase:
    """HiLo on a ``height x width`` map: ``hifi_heads`` in ``window``-sided windows, ``lofi_heads`` against the
    ``ceil(H / window) x ceil(W / window)`` pooled map; every head ``head_dim`` wide."""

    batch: int
    height: int
    width: int
    hifi_heads: int
    lofi_heads: int
    head_dim: int
    window: int

    @property
    def pooled(self) -> tuple[int, int]:
        return -(-self.height // self.window), -(-self.width // self.window)

    @property
    def label(self) -> str:
        return (f"{self.batch}x{self.height}x{self.width} hi{self.hifi_heads}+lo{self.lofi_heads}x{self.head_dim} "
                f"s{self.window}")

    def cost(self, dtype: torch.dtype) -> OpCost:
        return hilo_attention_cost(self.batch, self.height, self.width, self.hifi_heads, self.lofi_heads,
                                   self.head_dim, self.window, elem_size=elem_size(dtype))


def _check_case(case: HiLoCase) -> str | None:
    if case.window < 2:
        return f"window must be >= 2 (window 1 is plain global attention, not HiLo), got {case.window}"
    return None


def _make_inputs(case: HiLoCase, device, dtype, grad: bool) -> BenchInputs:
    B, H, W, D = case.batch, case.height, case.width, case.head_dim
    h, w = case.pooled
    hifi_qkv = packed_qkv((B, H, W, 3, case.hifi_heads, D), device, dtype, grad)
    lofi_q = packed_qkv((B, H, W, case.lofi_heads, D), device, dtype, grad)
    lofi_kv = packed_qkv((B, h, w, 2, case.lofi_heads, D), device, dtype, grad)
    return BenchInputs(leaves=[hifi_qkv, lofi_q, lofi_kv])


def hilo_official(inp: BenchInputs, case: HiLoCase) -> tuple[torch.Tensor, torch.Tensor]:
    hifi_qkv, lofi_q, lofi_kv = inp.leaves
    return hilo_attention_official(*hifi_qkv.unbind(3), lofi_q, *lofi_kv.unbind(3), case.window)


def hilo_sdpa(inp: BenchInputs, case: HiLoCase) -> tuple[torch.Tensor, torch.Tensor]:
    hifi_qkv, lofi_q, lofi_kv = inp.leaves
    scale = case.head_dim ** -0.5
    q, k, v = (hifi_partition(t, case.window) for t in hifi_qkv.unbind(3))
    B, G, nh, n, D = q.shape
    mask = padding_mask(case.height, case.width, case.window, q.device, q.dtype)
    if mask is not None:
        mask = mask.expand(B, G, 1, 1, n).reshape(B * G, 1, 1, n)
    out = F.scaled_dot_product_attention(*(t.reshape(B * G, nh, n, D) for t in (q, k, v)), attn_mask=mask,
                                         scale=scale)
    hifi = hifi_reverse(out.view(B, G, nh, n, D), case.height, case.width, case.window)
    q = lofi_q.reshape(B, case.height * case.width, case.lofi_heads, D).transpose(1, 2)
    k, v = lofi_kv.reshape(B, -1, 2, case.lofi_heads, D).permute(2, 0, 3, 1, 4)
    lofi = F.scaled_dot_product_attention(q, k, v, scale=scale).transpose(1, 2).reshape(lofi_q.shape)
    return hifi, lofi


def _ours(backend: str):
    def run(inp: BenchInputs, case: HiLoCase) -> tuple[torch.Tensor, torch.Tensor]:
        import ops

        hifi_qkv, lofi_q, lofi_kv = inp.leaves
        hq, hk, hv = hifi_qkv.unbind(3)
        lk, lv = lofi_kv.unbind(3)
        return ops.hilo_attention(hq, hk, hv, lofi_q, lk, lv, case.window, backend=backend)

    return run


def _litv2_s_stage3(batch: int, img: int) -> HiLoCase:
    """LITv2-S's HiLo layers (stage 3: 384 channels, 12 heads of 32, alpha 0.9 -> 10 Lo-Fi / 2 Hi-Fi, s = 2) at
    img x img (stride 16)."""
    return HiLoCase(batch, img // 16, img // 16, 2, 10, 32, 2)


# litv2_s_224: ImageNet training, batch 64 per GPU (the official recipe: 1024 on 8 GPUs is 128; 64 keeps the
# official formulation's score tensors small enough for any GPU). litv2_s_512 / litv2_s_1024: the segmentation
# setting (Semantic FPN at 512x512, batch 2 per GPU) and a 1024x1024 crop at batch 1. Stage 4 (s = 1) is plain
# global attention, not HiLo. tiny: CPU-sized, odd head counts and head_dim, a map that is not a multiple of s.
BENCH = OpBench(
    name="hilo_attention",
    presets={
        "litv2_s_224": [_litv2_s_stage3(64, 224)],
        "litv2_s_512": [_litv2_s_stage3(2, 512)],
        "litv2_s_1024": [_litv2_s_stage3(1, 1024)],
        "tiny": [HiLoCase(2, 10, 14, 2, 3, 16, 2), HiLoCase(1, 9, 11, 1, 2, 8, 2)],
    },
    candidates={"official": hilo_official, "sdpa": hilo_sdpa, "reference": _ours("reference"),
                "triton": _ours("triton")},
    make_inputs=_make_inputs,
    case_type=HiLoCase,
    shape_fields="B,H,W,hifi_heads,lofi_heads,D,window",
    check_case=_check_case,
)
