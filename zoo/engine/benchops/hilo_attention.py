"""``hilo_attention`` (LITv2's HiLo): Hi-Fi heads in ``s x s`` windows, Lo-Fi heads against the pooled keys.

Inputs, as the model hands them to the op (``zoo.models.litv2``): the Hi-Fi heads' packed projection
``hifi_qkv`` ``(B, H, W, 3, hifi_heads, D)``, the Lo-Fi queries ``lofi_q`` ``(B, H, W, lofi_heads, D)`` and the
Lo-Fi keys / values of the pooled map ``lofi_kv`` ``(B, h, w, 2, lofi_heads, D)`` with ``h, w = ceil(H / s),
ceil(W / s)``; gradients are taken w.r.t. all three. The output is the pair (Hi-Fi, Lo-Fi), each
``(B, H, W, heads, D)`` -- the official layer projects each with its own Linear, so nothing is concatenated here.

Candidates:

* ``official`` -- ``HiLo.hifi`` / ``HiLo.lofi`` of ziplab/LITv2 (``classification/models/attentions.py``) from
  their projections on: Hi-Fi partitions the map into ``(B, h_groups, s, w_groups, s, .)``, ``transpose(2, 3)``,
  reshapes / permutes into ``(3, B, groups, heads, s*s, D)``, ``(q @ k^T) * scale``, softmax, ``@ v``,
  ``transpose`` / ``reshape`` back; Lo-Fi reshapes / permutes q to ``(B, heads, N, D)`` and the pooled kv to
  ``(2, B, heads, M, D)``, ``(q @ k^T) * scale``, softmax, ``@ v``, ``transpose`` / ``reshape``. Scale
  ``D ** -0.5`` in both. Maps that are not multiples of ``s`` (the classification code never sees them): the
  map is zero-padded and the padded keys get ``-inf``, the op's semantics (partial windows are masked).
* ``sdpa`` -- ``F.scaled_dot_product_attention`` on the same window partition (the padding mask as a float
  ``attn_mask``, none for divisible maps), and on ``(B, heads, N, D)`` queries against the pooled keys.
* ``reference`` / ``triton`` -- :func:`ops.hilo_attention` with that backend (Hi-Fi through
  ``ops.window_attention``, Lo-Fi through ``ops.lofi_attention``).

Cost (the sum of both paths; ``s_e`` the element size, ``M = h * w`` pooled tokens, ``N = H * W``)::

    Hi-Fi: zoo.engine.flops.window_attention_cost(B, H, W, hifi_heads, D, s)
    Lo-Fi: fwd FLOPs = 4 * B * lofi_heads * N * M * D            (q k^T and P v)
           bwd FLOPs = 2.5 * fwd                                  (FlashAttention's count: q k^T recomputed)
           fwd bytes = B * lofi_heads * D * (2 N + 2 M) * s_e     (read q, k, v; write o)
           bwd bytes = B * lofi_heads * D * (4 N + 4 M) * s_e     (read q, k, v, o, dO; write dq, dk, dv)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from zoo.engine.benchops import BenchInputs, OpBench, elem_size, packed_qkv
from zoo.engine.flops import OpCost, window_attention_cost

__all__ = ["BENCH", "HiLoCase", "hilo_official", "hilo_sdpa", "lofi_attention_cost"]


def lofi_attention_cost(batch: int, tokens: int, keys: int, heads: int, head_dim: int, *, elem_size: int) -> OpCost:
    """Cost of all ``tokens`` queries against one set of ``keys`` keys per batch and head (module docstring)."""
    flops_fwd = 4 * batch * heads * tokens * keys * head_dim
    unit = batch * heads * head_dim * elem_size
    return OpCost(flops_fwd=flops_fwd, flops_bwd=flops_fwd * 5 // 2,
                  bytes_fwd=(2 * tokens + 2 * keys) * unit, bytes_bwd=(4 * tokens + 4 * keys) * unit)


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
        size = elem_size(dtype)
        h, w = self.pooled
        hifi = window_attention_cost(self.batch, self.height, self.width, self.hifi_heads, self.head_dim,
                                     self.window, elem_size=size)
        lofi = lofi_attention_cost(self.batch, self.height * self.width, h * w, self.lofi_heads, self.head_dim,
                                   elem_size=size)
        return OpCost(*(a + b for a, b in zip((hifi.flops_fwd, hifi.flops_bwd, hifi.bytes_fwd, hifi.bytes_bwd),
                                              (lofi.flops_fwd, lofi.flops_bwd, lofi.bytes_fwd, lofi.bytes_bwd))))


def _check_case(case: HiLoCase) -> str | None:
    if case.window < 2:
        return f"window must be >= 2 (window 1 is plain global attention, not HiLo), got {case.window}"
    return None


def _make_inputs(case: HiLoCase, device, dtype, grad: bool) -> BenchInputs:
    B, H, W, D, s = case.batch, case.height, case.width, case.head_dim, case.window
    h, w = case.pooled
    hifi_qkv = packed_qkv((B, H, W, 3, case.hifi_heads, D), device, dtype, grad)
    lofi_q = packed_qkv((B, H, W, case.lofi_heads, D), device, dtype, grad)
    lofi_kv = packed_qkv((B, h, w, 2, case.lofi_heads, D), device, dtype, grad)
    pad_mask = None
    if (H, W) != (h * s, w * s):  # additive -inf on the padded keys of every window: (groups, 1, 1, s*s)
        valid = F.pad(torch.ones(H, W, device=device), (0, w * s - W, 0, h * s - H))
        valid = valid.view(h, s, w, s).transpose(1, 2).reshape(h * w, 1, 1, s * s)
        pad_mask = torch.zeros_like(valid).masked_fill(valid == 0, float("-inf")).to(dtype)
    return BenchInputs(leaves=[hifi_qkv, lofi_q, lofi_kv], extra=dict(pad_mask=pad_mask))


def _hifi_partition(qkv: torch.Tensor, s: int) -> tuple[torch.Tensor, ...]:
    """(B, H, W, 3, heads, D) -> q, k, v of shape (B, groups, heads, s*s, D), as HiLo.hifi after its h_qkv."""
    B, H, W, _, nh, D = qkv.shape
    x = qkv.reshape(B, H, W, 3 * nh * D)
    hp, wp = -(-H // s) * s, -(-W // s) * s
    if (hp, wp) != (H, W):
        x = F.pad(x, (0, 0, 0, wp - W, 0, hp - H))
    hg, wg = hp // s, wp // s
    x = x.reshape(B, hg, s, wg, s, 3 * nh * D).transpose(2, 3)
    q, k, v = x.reshape(B, hg * wg, s * s, 3, nh, D).permute(3, 0, 1, 4, 2, 5)
    return q, k, v


def _hifi_reverse(x: torch.Tensor, case: HiLoCase) -> torch.Tensor:
    """(B, groups, heads, s*s, D) -> (B, H, W, heads, D), as HiLo.hifi's transpose / reshape (then the crop)."""
    B, G, nh, _, D = x.shape
    s = case.window
    hg, wg = case.pooled
    x = x.transpose(2, 3).reshape(B, hg, wg, s, s, nh * D).transpose(2, 3).reshape(B, hg * s, wg * s, nh * D)
    return x[:, :case.height, :case.width].reshape(B, case.height, case.width, nh, D)


def _lofi_heads(inp: BenchInputs, case: HiLoCase) -> tuple[torch.Tensor, ...]:
    """q (B, heads, N, D) and k, v (B, heads, M, D), as HiLo.lofi's reshape / permute after l_q and l_kv."""
    _, lofi_q, lofi_kv = inp.leaves
    B, nh, D = case.batch, case.lofi_heads, case.head_dim
    q = lofi_q.reshape(B, case.height * case.width, nh, D).permute(0, 2, 1, 3)
    k, v = lofi_kv.reshape(B, -1, 2, nh, D).permute(2, 0, 3, 1, 4)
    return q, k, v


def _lofi_out(x: torch.Tensor, case: HiLoCase) -> torch.Tensor:
    return x.transpose(1, 2).reshape(case.batch, case.height, case.width, case.lofi_heads, case.head_dim)


def hilo_official(inp: BenchInputs, case: HiLoCase) -> tuple[torch.Tensor, torch.Tensor]:
    scale = case.head_dim ** -0.5
    q, k, v = _hifi_partition(inp.leaves[0], case.window)
    attn = (q @ k.transpose(-2, -1)) * scale
    if inp.pad_mask is not None:
        attn = attn + inp.pad_mask
    hifi = _hifi_reverse(attn.softmax(dim=-1) @ v, case)
    q, k, v = _lofi_heads(inp, case)
    attn = (q @ k.transpose(-2, -1)) * scale
    lofi = _lofi_out(attn.softmax(dim=-1) @ v, case)
    return hifi, lofi


def hilo_sdpa(inp: BenchInputs, case: HiLoCase) -> tuple[torch.Tensor, torch.Tensor]:
    scale = case.head_dim ** -0.5
    q, k, v = _hifi_partition(inp.leaves[0], case.window)
    B, G, nh, n, D = q.shape
    mask = None
    if inp.pad_mask is not None:
        mask = inp.pad_mask.expand(B, G, 1, 1, n).reshape(B * G, 1, 1, n)
    out = F.scaled_dot_product_attention(*(t.reshape(B * G, nh, n, D) for t in (q, k, v)), attn_mask=mask,
                                         scale=scale)
    hifi = _hifi_reverse(out.view(B, G, nh, n, D), case)
    q, k, v = _lofi_heads(inp, case)
    lofi = _lofi_out(F.scaled_dot_product_attention(q, k, v, scale=scale), case)
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
