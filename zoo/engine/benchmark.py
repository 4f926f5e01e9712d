"""Speed and memory benchmarks of the attention ops and of whole models (``python eval.py bench ...``).

    python eval.py bench --op window_attention --preset davit_t_224 --dtype bf16
    python eval.py bench --op window_attention --shape 64,56,56,3,32 --window 7 --bias
    python eval.py bench --op channel_attention --shape 64,3136,3,32
    python eval.py bench --op bilevel_routing_attention --preset biformer_s_224 --dtype bf16
    python eval.py bench --model zoo_davit_tiny --batch 64 --dtype bf16 --backends reference,triton \\
        --baseline-model davit_tiny --channels-last --compile
    python eval.py bench ... --json benchmarks/results/NAME.json --markdown

(``python -m zoo.engine.benchmark`` takes the same arguments.)

Op benchmarks
-------------
Every case runs, in one process and on the same inputs, the op computed:

* ``official`` -- the way the official DaViT / Swin / HAT code computes it, written out in this file as an
  independent formulation (the baseline of the check and of the speedups). Window attention: window partition
  (view / permute / contiguous), ``q * scale @ k^T``, the relative-position bias gathered through Swin's
  ``relative_position_index``, the (shifted-window) mask added per window, softmax, ``@ v``, ``transpose`` /
  ``reshape`` and window reverse. Channel attention: ``k * scale``, ``k^T @ v``, softmax, ``(attn @ q^T)^T``.
  Bi-level routing attention (BiFormer's ``ops/bra_legacy.py``, without LePE / projections): region partition
  of the projected map, region means of q and k, routing logits ``(q_r * scale) @ k_r^T``, ``torch.topk``,
  ``torch.gather`` of the routed regions' k / v tokens on an expanded view (``(B, S^2, topk, rh*rw, 2C)``: the
  topk copies the official code materialises), per-head ``softmax((q * scale) @ k_sel^T) @ v_sel`` with the
  FULL-qk-dim scale ``(heads * D) ** -0.5``, region reverse. Divisible maps only (``H`` and ``W`` multiples of
  ``n_win``), as the official code without ``auto_pad``; the region means and routing logits are taken in fp32
  (as ``ops``' ``route()``), so that bf16 rounding of near-tied logits cannot flip a top-k choice and fail the
  check for a reason that is not the attention's.
* ``sdpa`` -- ``torch.nn.functional.scaled_dot_product_attention`` on the same partition, bias and masks
  folded into one float ``attn_mask`` (channel attention: SDPA on the transposed problem, ``D`` queries of
  head size ``N``). Not offered for bi-level routing attention (it would need a dense ``L x L`` mask).
* ``flex`` (bi-level routing attention) -- ``torch.nn.attention.flex_attention`` over the whole map, with a
  ``create_block_mask`` built from the routing indices of ``ops``' ``route()``: query token ``i`` may attend
  to key token ``j`` iff ``j``'s region is among the ``topk`` regions of ``i``'s region. Tokens are permuted
  to region-major order (``(B, H, W, heads, D) -> (B, heads, S^2 * rh*rw, D)``, token ``r * rh*rw + y * rw +
  x`` = row ``y``, column ``x`` of region ``r``, regions row-major), so that the mask's blocks never cut a
  region (with 128-token blocks: 128 / (rh*rw) whole regions per block, or rh*rw / 128 blocks per region), and
  the output is permuted back. Routing, mask building and both permutations are inside the timed call. CUDA:
  ``torch.compile(flex_attention)`` (eager flex is an unfused reference); the CPU has no FlexAttention backward,
  so it is skipped there (``--mode fwd --allow-interpret`` runs its eager forward, to check the harness).
* ``reference`` / ``triton`` -- ``ops.window_attention`` / ``ops.channel_attention`` /
  ``ops.bilevel_routing_attention`` with that ``backend=``.
  ``triton`` needs CUDA; on the CPU it is skipped (Triton's interpreter is orders of magnitude too slow to
  time) unless ``--allow-interpret``.

The other ops (``hilo_attention``, ``window_grid_attention``, ``neighborhood_attention_2d``, ``agent_attention``,
``rala``, ``overlapping_window_attention``) are benchmarked by one module each in :mod:`zoo.engine.benchops`
(its case, closed-form cost, presets, inputs and candidates -- ``official`` written out there, the best general
alternative, ``reference`` / ``triton`` -- are documented in that module), merged into the tables below
(``OP_BENCHES``). Such a module may add: candidates with their own skip reasons (optional packages such as
``natten`` / ``flash_bla``), per-case skips, candidates with several outputs (checked output by output), and
candidates marked ``unchecked`` -- a different function kept as a timing reference point (e.g. softmax attention
next to a linear attention), compared on shapes only and shown as ``unchecked`` with the reason.

Inputs are laid out as a model produces them: one packed ``qkv`` tensor (``(B, H, W, 3, heads, D)`` /
``(B, N, 3, G, D)``) whose ``unbind`` gives q, k, v, and gradients are taken with respect to it (and the bias
table), so every candidate pays for its own layout changes. Partial windows (``H`` or ``W`` not a multiple of
the window): the ops mask the missing positions, so ``official`` / ``sdpa`` pad with zeros and mask the padded
keys with ``-inf`` to compute the same function (DaViT pads before its qkv projection, so in the model the op
only ever sees whole windows).

Before anything is timed, every candidate's output and gradients are compared with ``official``: the error is
``||x - x_official|| / ||x_official||`` (worst of output and gradients), checked against a per-dtype
tolerance. A mismatch or an error is printed loudly, marked in the table and JSON, and makes the exit status 1
(timings are still reported, flagged).

Measured per candidate: ``fwd`` (under ``torch.no_grad``) and ``fwd+bwd`` (forward, then
``torch.autograd.grad`` of a fixed random output gradient), the median over ``--iters`` runs after ``--warmup``
runs; speedup = official's median / the candidate's. GPU: CUDA events around each run, L2 flushed before each
(a 256 MB buffer zeroed outside the timed region), so that small problems are not timed out of L2 against an
HBM roofline. CPU: ``time.perf_counter``. Memory (GPU only): ``torch.cuda.max_memory_allocated`` during one run
minus the memory allocated before it, i.e. what the candidate needs above its inputs (outputs, saved tensors,
gradients, workspace). The CPU has no allocator statistics, so memory is reported as n/a there rather than
guessed.

Roofline: ``floor = max(FLOPs / peak FLOP rate, bytes / bandwidth)`` with the FLOP and byte formulas of
:mod:`zoo.engine.flops` (``fwd+bwd`` floor = fwd floor + bwd floor) and the device's peak rates from
:data:`DEVICE_PEAKS` (dense tensor-core rate for bf16 / fp16, the non-tensor rate for fp32, which is what IEEE
fp32 kernels get); the reported fraction is ``floor / measured``. ``--peak-tflops`` / ``--peak-gbs`` override
the table; on the CPU, or a GPU not in the table, the roofline is n/a unless both are given.

Model benchmarks
----------------
Models are built only through ``timm.create_model`` (after ``import zoo``); every backend in ``--backends``
runs the same weights (``ATTNZOO_BACKEND`` set while it is built, compiled and run). ``--baseline-model`` adds a
model of the same architecture and state-dict layout (e.g. timm's ``davit_tiny`` for ``zoo_davit_tiny``),
loaded with the same weights; it is the numerical baseline when given, otherwise the first backend is.
``fwd``: eval mode, ``torch.no_grad``. ``fwd+bwd``: train mode, forward, ``loss = mean(output^2)`` in fp32,
backward (no optimizer step). ``--dtype bf16/fp16`` runs under ``torch.autocast`` (weights stay fp32, as in
mixed-precision training). Reported: median step time, images/s, peak memory (GPU:
``torch.cuda.max_memory_allocated`` during one step, weights and inputs included), speedup against the first row
(the baseline model when given, else the first backend).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import platform
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from ops import use_backend
from zoo.engine.benchops import OpBench, discover
from zoo.engine.flops import OpCost, bilevel_routing_attention_cost, channel_attention_cost, window_attention_cost

__all__ = [
    "DEVICE_PEAKS",
    "MODEL_COLUMNS",
    "OP_CANDIDATES",
    "OP_COLUMNS",
    "OPS",
    "PRESETS",
    "BilevelRoutingCase",
    "ChannelCase",
    "WindowCase",
    "main",
]

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Relative L2 error (output and every gradient) above which a candidate does not compute the baseline's function.
# bf16 / fp16: the official formulation itself rounds the scores and probabilities to the input dtype.
OP_TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 3e-2}
MODEL_TOLERANCE = {torch.float32: 1e-3, torch.float16: 3e-2, torch.bfloat16: 6e-2}
_L2_FLUSH_BYTES = 256 * 1024 * 1024  # well above any GPU's L2 (H100: 50 MB)


# --------------------------------------------------------------------------------------------------------------
# Device peaks
# --------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DevicePeak:
    """Datasheet peaks of one GPU: dense TFLOP/s per dtype and DRAM bandwidth in GB/s."""

    name: str
    match: tuple[str, ...]  # lower-case substrings that must all occur in torch.cuda.get_device_name()
    tflops: dict[str, float]
    gbs: float


# NVIDIA datasheets, dense (no sparsity). fp32 is the non-tensor-core rate; tf32 is listed for reference.
# Order matters: the first entry whose substrings all match wins.
DEVICE_PEAKS: tuple[DevicePeak, ...] = (
    DevicePeak("H200", ("h200",), dict(bf16=989.0, fp16=989.0, tf32=495.0, fp32=67.0), 4800.0),
    DevicePeak("H100 PCIe", ("h100", "pcie"), dict(bf16=756.0, fp16=756.0, tf32=378.0, fp32=51.0), 2000.0),
    DevicePeak("H100 SXM", ("h100",), dict(bf16=989.0, fp16=989.0, tf32=495.0, fp32=67.0), 3350.0),
    DevicePeak("A100 80GB", ("a100", "80gb"), dict(bf16=312.0, fp16=312.0, tf32=156.0, fp32=19.5), 2039.0),
    DevicePeak("A100 40GB", ("a100",), dict(bf16=312.0, fp16=312.0, tf32=156.0, fp32=19.5), 1555.0),
)


def device_peak(device_name: str) -> DevicePeak | None:
    name = device_name.lower()
    return next((p for p in DEVICE_PEAKS if all(m in name for m in p.match)), None)


@dataclass(frozen=True)
class Roofline:
    tflops: float | None
    gbs: float | None
    source: str

    @property
    def known(self) -> bool:
        return self.tflops is not None and self.gbs is not None

    def floor_ms(self, flops: int, nbytes: int) -> float | None:
        if not self.known:
            return None
        return max(flops / (self.tflops * 1e12), nbytes / (self.gbs * 1e9)) * 1e3


def _roofline(device: torch.device, dtype_name: str, peak_tflops: float | None, peak_gbs: float | None) -> Roofline:
    peak = device_peak(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    tflops = peak_tflops if peak_tflops is not None else (peak.tflops[dtype_name] if peak else None)
    gbs = peak_gbs if peak_gbs is not None else (peak.gbs if peak else None)
    given = [s for s, v in (("--peak-tflops", peak_tflops), ("--peak-gbs", peak_gbs)) if v is not None]
    if tflops is None or gbs is None:
        what = "the CPU" if device.type == "cpu" else f"{torch.cuda.get_device_name(device)!r} (not in DEVICE_PEAKS)"
        source = f"n/a: no peak rates for {what}; pass --peak-tflops and --peak-gbs"
        return Roofline(None, None, source)
    source = f"{peak.name} datasheet ({dtype_name})" if peak else "command line"
    if given and peak:
        source += f", overridden by {' and '.join(given)}"
    return Roofline(tflops, gbs, source)


# --------------------------------------------------------------------------------------------------------------
# Cases and presets
# --------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WindowCase:
    """``window_attention`` on ``(batch, height, width, heads, head_dim)``; `mask`: a Swin shifted-window mask."""

    batch: int
    height: int
    width: int
    heads: int
    head_dim: int
    window: tuple[int, int] = (7, 7)
    bias: bool = False
    mask: bool = False

    @property
    def label(self) -> str:
        wh, ww = self.window
        flags = "".join(("+bias" if self.bias else "", "+mask" if self.mask else ""))
        return f"{self.batch}x{self.height}x{self.width}x{self.heads}x{self.head_dim} w{wh}x{ww}{flags}"

    def cost(self, dtype: torch.dtype) -> OpCost:
        size = torch.empty((), dtype=dtype).element_size()
        return window_attention_cost(self.batch, self.height, self.width, self.heads, self.head_dim, self.window,
                                     elem_size=size, bias=self.bias, mask=self.mask)


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
        size = torch.empty((), dtype=dtype).element_size()
        return channel_attention_cost(self.batch, self.tokens, self.groups, self.head_dim, elem_size=size)


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
        size = torch.empty((), dtype=dtype).element_size()
        return bilevel_routing_attention_cost(self.batch, self.height, self.width, self.heads, self.head_dim,
                                              self.n_win, self.topk, elem_size=size)


def _davit_stages(img: int, dims: Sequence[int], heads: Sequence[int]) -> list[tuple[int, int, int]]:
    """(map size, heads, head_dim) of DaViT's four stages at img x img (strides 4, 8, 16, 32)."""
    return [(img // 4 // 2 ** i, h, d // h) for i, (d, h) in enumerate(zip(dims, heads))]


def _davit_window(batch: int, img: int, dims, heads, window: int = 7) -> list[WindowCase]:
    return [WindowCase(batch, s, s, h, d, (window, window)) for s, h, d in _davit_stages(img, dims, heads)]


def _davit_channel(batch: int, img: int, dims, heads) -> list[ChannelCase]:
    return [ChannelCase(batch, s * s, h, d) for s, h, d in _davit_stages(img, dims, heads)]


_DAVIT_T = dict(dims=(96, 192, 384, 768), heads=(3, 6, 12, 24))
_DAVIT_B = dict(dims=(128, 256, 512, 1024), heads=(4, 8, 16, 32))


def _biformer_s(batch: int, img: int, n_win: int) -> list[BilevelRoutingCase]:
    """BiFormer-S's BRA stages 1-3 (dims 64 / 128 / 256, heads = dim / 32, topk 1 / 4 / 16; stage 4 is global
    attention, not BRA) at img x img (strides 4, 8, 16)."""
    return [BilevelRoutingCase(batch, img // 4 // 2 ** i, img // 4 // 2 ** i, dim // 32, 32, n_win, topk)
            for i, (dim, topk) in enumerate(zip((64, 128, 256), (1, 4, 16)))]

# Named shape sets. davit_*: the four stages of DaViT at 224x224, batch 64 (ImageNet training per GPU).
# hat_ws16: HAT's attention (C = 180, 6 heads of 30, 16x16 windows, relative-position bias) on a 64x64 training
# patch, batch 4 per GPU as in HAT's recipe; the second case adds the shifted-window mask of the odd blocks.
# tiny: CPU-sized, with a partial window row / column and an odd head_dim.
# biformer_s_224: BiFormer-S's BRA stages at 224x224 (n_win 7), batch 16 -- a per-GPU micro-batch, not the batch
# of the official ImageNet recipe, chosen so that the whole preset (the official formulation's gathered k / v,
# topk copies: (16, 49, 16, 4, 2C) = 51 MB in bf16 at stage 3, plus autograd's saved tensors) runs quickly even
# on small GPUs; the per-call cost scales linearly in the batch. biformer_s_512: the same stages in BiFormer's 512x512 segmentation setting (n_win 8),
# batch 2 per GPU as in mmseg's 512x512 schedules. tiny (BRA): divisible maps (the official code's domain), topk 1
# to all regions, non-square regions.
PRESETS: dict[str, dict[str, list]] = {
    "window_attention": {
        "davit_t_224": _davit_window(64, 224, **_DAVIT_T),
        "davit_b_224": _davit_window(64, 224, **_DAVIT_B),
        "hat_ws16": [
            WindowCase(4, 64, 64, 6, 30, (16, 16), bias=True),
            WindowCase(4, 64, 64, 6, 30, (16, 16), bias=True, mask=True),
        ],
        "tiny": [
            WindowCase(2, 14, 14, 3, 16, (7, 7)),
            WindowCase(2, 10, 13, 2, 24, (4, 4), bias=True, mask=True),
        ],
    },
    "channel_attention": {
        "davit_t_224": _davit_channel(64, 224, **_DAVIT_T),
        "davit_b_224": _davit_channel(64, 224, **_DAVIT_B),
        "tiny": [ChannelCase(2, 49, 3, 16), ChannelCase(2, 61, 2, 24)],
    },
    "bilevel_routing_attention": {
        "biformer_s_224": _biformer_s(16, 224, 7),
        "biformer_s_512": _biformer_s(2, 512, 8),
        "tiny": [
            BilevelRoutingCase(2, 12, 12, 2, 16, 3, 2),
            BilevelRoutingCase(1, 8, 16, 3, 8, 2, 4),
        ],
    },
}


# --------------------------------------------------------------------------------------------------------------
# The candidates: official formulations, SDPA, ours
# --------------------------------------------------------------------------------------------------------------

@dataclass
class OpInputs:
    """Leaves (gradients are taken w.r.t. them) and constant masks of one case."""

    qkv: torch.Tensor                      # (B, H, W, 3, heads, D) or (B, N, 3, G, D)
    bias_table: torch.Tensor | None = None  # ours: (heads, 2wh-1, 2ww-1)
    mask: torch.Tensor | None = None        # ours: (nW, N, N) additive, in q's dtype
    official_mask: torch.Tensor | None = None  # mask + -inf on padded keys, for official / sdpa
    swin_index: torch.Tensor | None = None      # Swin's relative_position_index (a buffer there, built once)
    leaves: list[torch.Tensor] = field(default_factory=list)


def _swin_relative_position_index(wh: int, ww: int, device: torch.device) -> torch.Tensor:
    """Swin's ``relative_position_index`` (N, N), as the official code builds it."""
    coords = torch.stack(torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij")).flatten(1)  # 2, N
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()  # N, N, 2
    rel[:, :, 0] += wh - 1
    rel[:, :, 1] += ww - 1
    rel[:, :, 0] *= 2 * ww - 1
    return rel.sum(-1).to(device)


def _swin_shift_mask(hp: int, wp: int, wh: int, ww: int, device: torch.device) -> torch.Tensor:
    """Swin's shifted-window attention mask (nW, N, N) of 0 / -100 for a shift of half a window."""
    sh, sw = wh // 2, ww // 2
    img = torch.zeros(hp, wp)
    cnt = 0
    for hs in (slice(0, -wh), slice(-wh, -sh), slice(-sh, None)):
        for ws in (slice(0, -ww), slice(-ww, -sw), slice(-sw, None)):
            img[hs, ws] = cnt
            cnt += 1
    win = img.view(hp // wh, wh, wp // ww, ww).permute(0, 2, 1, 3).reshape(-1, wh * ww)
    diff = win[:, None, :] - win[:, :, None]
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0).to(device)


def _window_grid(case: WindowCase) -> tuple[int, int, int, int]:
    wh, ww = case.window
    hp, wp = -(-case.height // wh) * wh, -(-case.width // ww) * ww
    return hp, wp, (hp // wh) * (wp // ww), wh * ww


def _make_window_inputs(case: WindowCase, device, dtype, grad: bool) -> OpInputs:
    B, H, W, nh, D = case.batch, case.height, case.width, case.heads, case.head_dim
    wh, ww = case.window
    hp, wp, nw, n = _window_grid(case)
    qkv = torch.randn(B, H, W, 3, nh, D, device=device, dtype=dtype).requires_grad_(grad)
    inp = OpInputs(qkv=qkv, leaves=[qkv])
    if case.bias:
        inp.bias_table = (torch.randn(nh, 2 * wh - 1, 2 * ww - 1, device=device, dtype=dtype)).requires_grad_(grad)
        inp.leaves.append(inp.bias_table)
        inp.swin_index = _swin_relative_position_index(wh, ww, device)
    if case.mask:
        inp.mask = _swin_shift_mask(hp, wp, wh, ww, device).to(dtype)
    if (hp, wp) != (H, W):
        valid = F.pad(torch.ones(H, W, device=device), (0, wp - W, 0, hp - H))
        valid = valid.view(hp // wh, wh, wp // ww, ww).permute(0, 2, 1, 3).reshape(nw, 1, n)
        pad = torch.zeros(nw, n, n, device=device).masked_fill(valid == 0, float("-inf")).to(dtype)
        inp.official_mask = pad if inp.mask is None else inp.mask + pad
    else:
        inp.official_mask = inp.mask
    return inp


def _partition_qkv(qkv: torch.Tensor, window: tuple[int, int]) -> tuple[torch.Tensor, ...]:
    """Official order: window_partition of the (padded) projected map, then reshape / permute into q, k, v."""
    B, H, W, _, nh, D = qkv.shape
    wh, ww = window
    ph, pw = (-H) % wh, (-W) % ww
    x = qkv.reshape(B, H, W, 3 * nh * D)
    if ph or pw:
        x = F.pad(x, (0, 0, 0, pw, 0, ph))
    hp, wp = H + ph, W + pw
    x = x.view(B, hp // wh, wh, wp // ww, ww, -1).permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, wh * ww, 3 * nh * D)
    q, k, v = x.reshape(x.shape[0], wh * ww, 3, nh, D).permute(2, 0, 3, 1, 4).unbind(0)
    return q, k, v


def _window_reverse(x: torch.Tensor, B: int, H: int, W: int, window: tuple[int, int]) -> torch.Tensor:
    """(B*nW, heads, N, D) -> (B, H, W, heads, D) as the official code: transpose, reshape, window_reverse, crop."""
    bw, nh, n, D = x.shape
    wh, ww = window
    hp, wp = -(-H // wh) * wh, -(-W // ww) * ww
    x = x.transpose(1, 2).reshape(bw, n, nh * D)
    x = x.view(B, hp // wh, wp // ww, wh, ww, -1).permute(0, 1, 3, 2, 4, 5).contiguous().view(B, hp, wp, -1)
    return x[:, :H, :W].reshape(B, H, W, nh, D)


def _swin_bias(inp: OpInputs) -> torch.Tensor:
    """(heads, N, N) bias gathered from the table laid out as Swin's ((2wh-1)*(2ww-1), heads) parameter."""
    nh = inp.bias_table.shape[0]
    n = inp.swin_index.shape[0]
    table = inp.bias_table.reshape(nh, -1).t()  # Swin's relative_position_bias_table, a view of ours
    return table[inp.swin_index.view(-1)].view(n, n, nh).permute(2, 0, 1).contiguous()


def window_official(inp: OpInputs, case: WindowCase) -> torch.Tensor:
    B, H, W = case.batch, case.height, case.width
    D = case.head_dim
    q, k, v = _partition_qkv(inp.qkv, case.window)
    q = q * D ** -0.5
    attn = q @ k.transpose(-2, -1)
    if inp.bias_table is not None:
        attn = attn + _swin_bias(inp).unsqueeze(0)
    if inp.official_mask is not None:
        nw, n = inp.official_mask.shape[0], inp.official_mask.shape[1]
        attn = attn.view(-1, nw, case.heads, n, n) + inp.official_mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, case.heads, n, n)
    attn = attn.softmax(dim=-1)
    return _window_reverse(attn @ v, B, H, W, case.window)


def window_sdpa(inp: OpInputs, case: WindowCase) -> torch.Tensor:
    q, k, v = _partition_qkv(inp.qkv, case.window)
    attn_mask = None
    if inp.bias_table is not None:
        attn_mask = _swin_bias(inp).unsqueeze(0)  # (1, heads, N, N), broadcast
    if inp.official_mask is not None:
        m = inp.official_mask.unsqueeze(1)  # (nW, 1, N, N)
        m = m if attn_mask is None else m + attn_mask
        nw, n = m.shape[0], m.shape[-1]
        attn_mask = m.expand(case.batch, nw, m.shape[1], n, n).reshape(case.batch * nw, m.shape[1], n, n)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=case.head_dim ** -0.5)
    return _window_reverse(out, case.batch, case.height, case.width, case.window)


def _window_ours(backend: str) -> Callable[[OpInputs, WindowCase], torch.Tensor]:
    def run(inp: OpInputs, case: WindowCase) -> torch.Tensor:
        import ops

        q, k, v = inp.qkv.unbind(3)
        return ops.window_attention(q, k, v, case.window, bias_table=inp.bias_table, mask=inp.mask, backend=backend)

    return run


def _make_channel_inputs(case: ChannelCase, device, dtype, grad: bool) -> OpInputs:
    qkv = torch.randn(case.batch, case.tokens, 3, case.groups, case.head_dim, device=device, dtype=dtype)
    qkv.requires_grad_(grad)
    return OpInputs(qkv=qkv, leaves=[qkv])


def channel_official(inp: OpInputs, case: ChannelCase) -> torch.Tensor:
    B, N, _, G, D = inp.qkv.shape
    q, k, v = inp.qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, G, N, D) each, as the official reshape / permute
    k = k * D ** -0.5
    attention = (k.transpose(-1, -2) @ v).softmax(dim=-1)
    x = (attention @ q.transpose(-1, -2)).transpose(-1, -2)
    return x.transpose(1, 2).reshape(B, N, G, D)


def channel_sdpa(inp: OpInputs, case: ChannelCase) -> torch.Tensor:
    B, N, _, G, D = inp.qkv.shape
    q, k, v = inp.qkv.permute(2, 0, 3, 4, 1).unbind(0)  # (B, G, D, N): D "queries" of head size N
    out = F.scaled_dot_product_attention(k, v, q, scale=D ** -0.5)  # softmax(k^T v) q^T, (B, G, D, N)
    return out.permute(0, 3, 1, 2).reshape(B, N, G, D)


def _channel_ours(backend: str) -> Callable[[OpInputs, ChannelCase], torch.Tensor]:
    def run(inp: OpInputs, case: ChannelCase) -> torch.Tensor:
        import ops

        q, k, v = inp.qkv.unbind(2)
        return ops.channel_attention(q, k, v, backend=backend)

    return run


def _make_qkv_inputs(case, device, dtype, grad: bool) -> OpInputs:
    """A packed ``(B, H, W, 3, heads, D)`` qkv, nothing else (bilevel routing attention)."""
    qkv = torch.randn(case.batch, case.height, case.width, 3, case.heads, case.head_dim, device=device, dtype=dtype)
    qkv.requires_grad_(grad)
    return OpInputs(qkv=qkv, leaves=[qkv])


def bra_official(inp: OpInputs, case: BilevelRoutingCase) -> torch.Tensor:
    """BiFormer's ``BiLevelRoutingAttention`` (``ops/bra_legacy.py``) from its qkv output on, divisible maps."""
    B, H, W, _, nh, D = inp.qkv.shape
    S, topk, C = case.n_win, case.topk, nh * D
    h, w = H // S, W // S
    scale = C ** -0.5  # qk_dim ** -0.5: the full qk dim, as the official code
    # region partition: 'n (j h) (i w) c -> n (j i) h w c'
    x = inp.qkv.reshape(B, S, h, S, w, 3 * C).permute(0, 1, 3, 2, 4, 5).reshape(B, S * S, h, w, 3 * C)
    q, kv = x[..., :C], x[..., C:]
    q_pix = q.reshape(B, S * S, h * w, C)
    kv_pix = kv.reshape(B, S * S, h * w, 2 * C)
    # router (detached, diff_routing=False); means and logits in fp32, see the module docstring
    q_win, k_win = q.detach().float().mean([2, 3]), kv[..., :C].detach().float().mean([2, 3])
    logits = (q_win * scale) @ k_win.transpose(-2, -1)  # (B, S^2, S^2)
    topk_logit, r_idx = torch.topk(logits, k=topk, dim=-1)
    r_weight = topk_logit.softmax(dim=-1)  # noqa: F841  (computed by the official router, unused: mul_weight='none')
    # KVGather: torch.gather on an expanded view -> (B, S^2, topk, h*w, 2C)
    n, p2, w2, c_kv = kv_pix.shape
    topk_kv = torch.gather(kv_pix.view(n, 1, p2, w2, c_kv).expand(-1, p2, -1, -1, -1), dim=2,
                           index=r_idx.view(n, p2, topk, 1, 1).expand(-1, -1, -1, w2, c_kv))
    k_sel, v_sel = topk_kv.split([C, C], dim=-1)
    # 'n p2 k w2 (m c) -> (n p2) m c (k w2)' and '... -> (n p2) m (k w2) c'
    k_sel = k_sel.reshape(n * p2, topk, w2, nh, D).permute(0, 3, 4, 1, 2).reshape(n * p2, nh, D, topk * w2)
    v_sel = v_sel.reshape(n * p2, topk, w2, nh, D).permute(0, 3, 1, 2, 4).reshape(n * p2, nh, topk * w2, D)
    q_pix = q_pix.reshape(n * p2, w2, nh, D).transpose(1, 2)  # 'n p2 w2 (m c) -> (n p2) m w2 c'
    attn = ((q_pix * scale) @ k_sel).softmax(dim=-1)
    out = attn @ v_sel  # (B*S^2, heads, h*w, D)
    # '(n j i) m (h w) c -> n (j h) (i w) (m c)'
    out = out.view(B, S, S, nh, h, w, D).permute(0, 1, 4, 2, 5, 3, 6)
    return out.reshape(B, H, W, nh, D)


_FLEX_COMPILED: Callable | None = None


def bra_flex(inp: OpInputs, case: BilevelRoutingCase) -> torch.Tensor:
    """FlexAttention over the region-major token order with a block mask from the routing (module docstring)."""
    global _FLEX_COMPILED
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    from ops.bilevel_routing_attention import route

    B, H, W, _, nh, D = inp.qkv.shape
    S, topk = case.n_win, case.topk
    h, w = H // S, W // S
    n, length = h * w, H * W
    scale = (nh * D) ** -0.5
    q, k, v = inp.qkv.unbind(3)
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


def _bra_ours(backend: str) -> Callable[[OpInputs, BilevelRoutingCase], torch.Tensor]:
    def run(inp: OpInputs, case: BilevelRoutingCase) -> torch.Tensor:
        import ops

        q, k, v = inp.qkv.unbind(3)
        return ops.bilevel_routing_attention(q, k, v, case.n_win, case.topk, backend=backend)

    return run


# Per op: candidate name -> fn(inputs, case) -> output. `official` is the baseline and always runs first.
OP_CANDIDATES: dict[str, dict[str, Callable]] = {
    "window_attention": {
        "official": window_official,
        "sdpa": window_sdpa,
        "reference": _window_ours("reference"),
        "triton": _window_ours("triton"),
    },
    "channel_attention": {
        "official": channel_official,
        "sdpa": channel_sdpa,
        "reference": _channel_ours("reference"),
        "triton": _channel_ours("triton"),
    },
    "bilevel_routing_attention": {
        "official": bra_official,
        "flex": bra_flex,
        "reference": _bra_ours("reference"),
        "triton": _bra_ours("triton"),
    },
}
_MAKE_INPUTS = {"window_attention": _make_window_inputs, "channel_attention": _make_channel_inputs,
                "bilevel_routing_attention": _make_qkv_inputs}
_SHAPE_FIELDS = {"window_attention": "B,H,W,heads,D", "channel_attention": "B,N,groups,D",
                 "bilevel_routing_attention": "B,H,W,heads,D,n_win,topk"}
_CASE_TYPES = {"window_attention": WindowCase, "channel_attention": ChannelCase,
               "bilevel_routing_attention": BilevelRoutingCase}

# The ops benchmarked by the modules of zoo/engine/benchops (one per op), merged into the tables above.
OP_BENCHES: dict[str, OpBench] = discover()
for _name, _bench in OP_BENCHES.items():
    if _name in PRESETS:
        raise ValueError(f"zoo/engine/benchops defines {_name!r}, which benchmark.py already has")
    PRESETS[_name] = _bench.presets
    OP_CANDIDATES[_name] = _bench.candidates
    _MAKE_INPUTS[_name] = _bench.make_inputs
    _SHAPE_FIELDS[_name] = _bench.shape_fields
    _CASE_TYPES[_name] = _bench.case_type
OPS = tuple(PRESETS)


# --------------------------------------------------------------------------------------------------------------
# Timing and memory
# --------------------------------------------------------------------------------------------------------------

class _Timer:
    def __init__(self, device: torch.device, warmup: int, iters: int, flush_l2: bool):
        self.device, self.warmup, self.iters = device, warmup, iters
        self.cuda = device.type == "cuda"
        self.flush = torch.empty(_L2_FLUSH_BYTES, dtype=torch.uint8, device=device) if self.cuda and flush_l2 else None

    def median_ms(self, fn: Callable[[], Any]) -> float:
        for _ in range(self.warmup):
            fn()
        times = []
        if self.cuda:
            torch.cuda.synchronize(self.device)
            events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                      for _ in range(self.iters)]
            for start, end in events:
                if self.flush is not None:
                    self.flush.zero_()
                start.record()
                fn()
                end.record()
            torch.cuda.synchronize(self.device)
            times = [start.elapsed_time(end) for start, end in events]
        else:
            for _ in range(self.iters):
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)

    def peak_mib(self, fn: Callable[[], Any], absolute: bool = False) -> float | None:
        """Peak allocated memory during one `fn()`, above what was allocated before it (or absolute), in MiB."""
        if not self.cuda:
            return None
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        before = 0 if absolute else torch.cuda.memory_allocated(self.device)
        out = fn()
        torch.cuda.synchronize(self.device)
        peak = torch.cuda.max_memory_allocated(self.device) - before
        del out
        return peak / 2 ** 20


def _rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    x, ref = x.detach().double(), ref.detach().double()
    if x.shape != ref.shape:
        return math.inf
    denom = ref.norm().item()
    err = (x - ref).norm().item()
    return err / denom if denom > 0 else err


# --------------------------------------------------------------------------------------------------------------
# Op benchmark
# --------------------------------------------------------------------------------------------------------------

OP_COLUMNS = (
    "op", "case", "dtype", "impl", "status", "error", "reason",
    "fwd_ms", "fwd_speedup", "fwd_roofline", "fwd_mem_mib",
    "fwdbwd_ms", "fwdbwd_speedup", "fwdbwd_roofline", "fwdbwd_mem_mib",
    "flops_fwd", "flops_bwd", "bytes_fwd", "bytes_bwd", "floor_fwd_ms", "floor_fwdbwd_ms",
)


def _triton_skip_reason(device: torch.device, allow_interpret: bool, modes: Sequence[str] = ()) -> str | None:
    from ops._backend import triton_available, triton_interpret

    if not triton_available():
        return "the triton package is not installed"
    if device.type == "cuda":
        return None
    if not allow_interpret:
        return ("needs CUDA; on the CPU it would run in Triton's interpreter, far too slow to time "
                "(pass --allow-interpret to run it anyway)")
    if not triton_interpret():
        # Triton reads the switch when it is imported, which may already have happened (torch imports it for
        # inductor / FlexAttention), so setting it from here is not reliable: ask for it up front.
        return "--allow-interpret needs TRITON_INTERPRET=1 set in the environment before the command starts"
    return None


def _flex_skip_reason(device: torch.device, allow_interpret: bool, modes: Sequence[str] = ()) -> str | None:
    try:
        import torch.nn.attention.flex_attention  # noqa: F401
    except ImportError:
        return f"torch {torch.__version__} has no torch.nn.attention.flex_attention"
    if device.type == "cuda":
        return None
    if "fwdbwd" in modes:
        return "FlexAttention has no backward on the CPU (NotImplementedError); it needs CUDA"
    if not allow_interpret:
        return ("needs CUDA; on the CPU only its eager, unfused forward runs (pass --allow-interpret with --mode fwd "
                "to run it anyway)")
    return None


# Candidates that cannot run everywhere: name -> fn(device, allow_interpret, modes) -> reason to skip, or None.
_SKIP_REASONS: dict[str, Callable[..., str | None]] = {"triton": _triton_skip_reason, "flex": _flex_skip_reason}


def _outputs(out) -> tuple[torch.Tensor, ...]:
    """A candidate's output: one tensor, or a tuple of them (ops with several outputs)."""
    return (out,) if isinstance(out, torch.Tensor) else tuple(out)


def _op_step(fn, inp: OpInputs, case, grad_out: torch.Tensor | None):
    """One run: forward (no_grad) when grad_out is None, else forward + gradients of the leaves."""
    if grad_out is None:
        with torch.no_grad():
            return fn(inp, case)
    out = fn(inp, case)
    return torch.autograd.grad(out, inp.leaves, grad_out)


def bench_op(op: str, cases: Sequence, *, device: torch.device, dtype: torch.dtype, candidates: Sequence[str],
             modes: Sequence[str], warmup: int, iters: int, roofline: Roofline, allow_interpret: bool = False,
             compile: bool = False, flush_l2: bool = True, seed: int = 0, log=print) -> list[dict[str, Any]]:
    """Check, then time every candidate of `op` on every case; one result dict (OP_COLUMNS) per pair."""
    impls = OP_CANDIDATES[op]
    names = ["official"] + [c for c in candidates if c != "official"]
    plugin = OP_BENCHES.get(op)
    skip_fns = {**_SKIP_REASONS, **(plugin.skip_reasons if plugin else {})}
    skip = {n: skip_fns[n](device, allow_interpret, modes) for n in names if n in skip_fns}
    unchecked = plugin.unchecked if plugin else {}
    timer = _Timer(device, warmup, iters, flush_l2)
    tol = (plugin.tolerance or OP_TOLERANCE)[dtype] if plugin else OP_TOLERANCE[dtype]
    dtype_name = next(k for k, v in DTYPES.items() if v == dtype)
    rows = []
    for case in cases:
        cost = case.cost(dtype)
        floor_fwd = roofline.floor_ms(cost.flops_fwd, cost.bytes_fwd)
        floor_fb = roofline.floor_ms(cost.flops_fwdbwd, cost.bytes_fwdbwd)
        torch.manual_seed(seed)
        inp = _MAKE_INPUTS[op](case, device, dtype, grad="fwdbwd" in modes)
        fns = {name: impls[name] for name in names}
        if compile:
            fns = {name: torch.compile(fn) for name, fn in fns.items()}
        ref = None
        grad_out = None
        official_ms: dict[str, float] = {}
        for name in names:
            row = dict.fromkeys(OP_COLUMNS)
            row.update(op=op, case=case.label, dtype=dtype_name, impl=name, status="ok",
                       flops_fwd=cost.flops_fwd, flops_bwd=cost.flops_bwd, bytes_fwd=cost.bytes_fwd,
                       bytes_bwd=cost.bytes_bwd, floor_fwd_ms=floor_fwd, floor_fwdbwd_ms=floor_fb)
            rows.append(row)
            if skip.get(name):
                row.update(status="skipped", reason=skip[name])
                continue
            if plugin and plugin.case_skip and (reason := plugin.case_skip(name, case)):
                row.update(status="skipped", reason=reason)
                continue
            if name != "official" and ref is None:
                row.update(status="skipped", reason="the official baseline failed: nothing to check against")
                continue
            fn = fns[name]
            try:
                # Check before timing: output and every gradient against the official formulation.
                with torch.enable_grad():
                    out = fn(inp, case)
                    grads = ()
                    if "fwdbwd" in modes:
                        if grad_out is None:
                            grad_out = (torch.randn_like(out) if isinstance(out, torch.Tensor)
                                        else tuple(torch.randn_like(o) for o in out))
                        grads = torch.autograd.grad(out, inp.leaves, grad_out)
                results = [o.detach() for o in _outputs(out)] + list(grads)
                if ref is None:
                    ref = results
                    row["error"] = 0.0
                elif name in unchecked:
                    # another function on purpose (a reference point): only the shapes can be compared
                    shapes, want = [tuple(x.shape) for x in results], [tuple(r.shape) for r in ref]
                    if shapes != want:
                        raise ValueError(f"output / gradient shapes {shapes} differ from official's {want}")
                    row.update(status="unchecked", reason=unchecked[name])
                else:
                    row["error"] = max(_rel_err(x, r) for x, r in zip(results, ref))
                    if not row["error"] <= tol:
                        row["status"] = "MISMATCH"
                        row["reason"] = f"relative error {row['error']:.3g} > tolerance {tol:g} against official"
                        log(f"!!! MISMATCH: {op} {case.label} {dtype_name} impl={name}: {row['reason']} "
                            f"(timings below are flagged)", file=sys.stderr)
                del out, grads, results
                for mode in modes:
                    g = grad_out if mode == "fwdbwd" else None
                    ms = timer.median_ms(lambda: _op_step(fn, inp, case, g))
                    row[f"{mode}_ms"] = ms
                    row[f"{mode}_mem_mib"] = timer.peak_mib(lambda: _op_step(fn, inp, case, g))
                    floor = floor_fwd if mode == "fwd" else floor_fb
                    row[f"{mode}_roofline"] = floor / ms if floor is not None else None
                    if name == "official":
                        official_ms[mode] = ms
                    if mode in official_ms:
                        row[f"{mode}_speedup"] = official_ms[mode] / ms
            except Exception as e:  # one broken candidate must not hide the others' numbers
                row.update(status="ERROR", reason=f"{type(e).__name__}: {e}".splitlines()[0][:300])
                log(f"!!! ERROR: {op} {case.label} {dtype_name} impl={name}: {row['reason']}", file=sys.stderr)
        del inp, ref, grad_out
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


# --------------------------------------------------------------------------------------------------------------
# Model benchmark
# --------------------------------------------------------------------------------------------------------------

MODEL_COLUMNS = (
    "model", "impl", "img_size", "batch", "dtype", "channels_last", "compile", "status", "error", "reason",
    "fwd_ms", "fwd_img_s", "fwd_speedup", "fwd_peak_mib", "fwdbwd_ms", "fwdbwd_img_s", "fwdbwd_speedup",
    "fwdbwd_peak_mib",
)


def bench_model(name: str, *, backends: Sequence[str], baseline_model: str | None, img_size: int | None,
                batch: int, device: torch.device, dtype: torch.dtype, channels_last: bool, compile: bool,
                modes: Sequence[str], warmup: int, iters: int, allow_interpret: bool = False, seed: int = 0,
                log=print) -> list[dict[str, Any]]:
    """Time `name` (built through timm.create_model) on every backend, plus the optional baseline model."""
    import timm

    import zoo  # noqa: F401  (registers the zoo's models)

    dtype_name = next(k for k, v in DTYPES.items() if v == dtype)
    timer = _Timer(device, warmup, iters, flush_l2=False)
    tol = MODEL_TOLERANCE[dtype]

    def autocast():
        return torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()

    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    torch.manual_seed(seed)
    with use_backend("reference"):
        first = timm.create_model(name, pretrained=False)
    state = first.state_dict()
    size = img_size or first.pretrained_cfg["input_size"][-1]
    in_chans = first.pretrained_cfg["input_size"][0]
    del first
    x = torch.randn(batch, in_chans, size, size, device=device).contiguous(memory_format=memory_format)

    runs: list[tuple[str, str, str | None]] = []  # (label, model name, backend)
    if baseline_model:
        runs.append((f"baseline:{baseline_model}", baseline_model, None))
    runs += [(b, name, b) for b in backends]
    rows, ref = [], None
    first_ms: dict[str, float] = {}  # per mode, the first run's time: speedups are relative to it
    for label, model_name, backend in runs:
        row = dict.fromkeys(MODEL_COLUMNS)
        row.update(model=name, impl=label, img_size=size, batch=batch, dtype=dtype_name, channels_last=channels_last,
                   compile=compile, status="ok")
        rows.append(row)
        if backend == "triton" and (reason := _triton_skip_reason(device, allow_interpret)):
            row.update(status="skipped", reason=reason)
            continue
        try:
            with use_backend(backend):
                model = timm.create_model(model_name, pretrained=False)
                try:
                    model.load_state_dict(state)
                except RuntimeError as e:
                    raise ValueError(f"--baseline-model {model_name!r} does not take {name!r}'s state dict "
                                     f"({str(e).splitlines()[0]})") from None
                model = model.to(device=device, memory_format=memory_format)
                if compile:
                    torch._dynamo.reset()  # the backend is read at trace time: no graph reuse across backends
                run = torch.compile(model) if compile else model

                def fwd():
                    with torch.no_grad(), autocast():
                        return run(x)

                def fwdbwd():
                    with autocast():
                        out = run(x)
                    loss = out.float().square().mean()
                    loss.backward()
                    model.zero_grad(set_to_none=True)
                    return loss.detach()

                model.eval()
                out = fwd().float()
                if ref is None:
                    ref, row["error"] = out, 0.0
                else:
                    row["error"] = _rel_err(out, ref)
                    if not row["error"] <= tol:
                        row["status"] = "MISMATCH"
                        row["reason"] = f"relative error of the logits {row['error']:.3g} > tolerance {tol:g}"
                        log(f"!!! MISMATCH: {name} {label}: {row['reason']}", file=sys.stderr)
                del out
                for mode in modes:
                    model.train(mode == "fwdbwd")
                    step = fwd if mode == "fwd" else fwdbwd
                    ms = timer.median_ms(step)
                    row[f"{mode}_ms"] = ms
                    row[f"{mode}_img_s"] = batch / ms * 1e3
                    first_ms.setdefault(mode, ms)
                    row[f"{mode}_speedup"] = first_ms[mode] / ms
                    row[f"{mode}_peak_mib"] = timer.peak_mib(step, absolute=True)
            del model, run
        except Exception as e:
            row.update(status="ERROR", reason=f"{type(e).__name__}: {e}".splitlines()[0][:300])
            log(f"!!! ERROR: {name} {label}: {row['reason']}", file=sys.stderr)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


# --------------------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------------------

def _fmt(value: Any, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "ms":
        return f"{value:.4f}" if value < 1 else f"{value:.2f}"
    if kind == "x":
        return f"{value:.2f}x"
    if kind == "pct":  # small fractions (CPU, loaded machines) keep two significant digits instead of "0.0%"
        return f"{100 * value:.1f}%" if value >= 0.01 else f"{100 * value:.2g}%"
    if kind == "mib":
        return f"{value:.1f}"
    if kind == "rate":
        return f"{value:.0f}" if value >= 100 else f"{value:.3g}"
    if kind == "g":
        return f"{value:.3g}"
    return str(value)


def _table(header: Sequence[str], body: Sequence[Sequence[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in body]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(header)]
    fmt = lambda r: "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([fmt(header), "  ".join("-" * w for w in widths), *map(fmt, body)])


def _measured_cell(row: dict[str, Any], key: str, mode: str, kind: str) -> str:
    """A derived value of a timed mode: 'n/a' when it was timed but the value cannot be had (CPU memory, unknown
    peak rates), '-' when the mode did not run."""
    if row[key] is None:
        return "n/a" if row[f"{mode}_ms"] is not None else "-"
    return _fmt(row[key], kind)


def _check_cell(row: dict[str, Any]) -> str:
    if row["status"] in ("skipped", "ERROR", "unchecked"):
        return row["status"]
    err = "" if row["error"] is None else f" {row['error']:.1e}"
    return f"{row['status']}{err}"


def format_op_rows(rows: list[dict[str, Any]], markdown: bool = False) -> str:
    cases: dict[str, dict[str, Any]] = {}
    for r in rows:
        cases.setdefault(r["case"], r)
    case_table = _table(
        ["case", "dtype", "GFLOP fwd", "MB fwd", "floor fwd ms", "GFLOP f+b", "MB f+b", "floor f+b ms"],
        [[c, r["dtype"], _fmt(r["flops_fwd"] / 1e9, "g"), _fmt(r["bytes_fwd"] / 1e6, "g"),
          _fmt(r["floor_fwd_ms"], "ms") if r["floor_fwd_ms"] is not None else "n/a",
          _fmt((r["flops_fwd"] + r["flops_bwd"]) / 1e9, "g"), _fmt((r["bytes_fwd"] + r["bytes_bwd"]) / 1e6, "g"),
          _fmt(r["floor_fwdbwd_ms"], "ms") if r["floor_fwdbwd_ms"] is not None else "n/a"]
         for c, r in cases.items()],
        markdown,
    )
    result_table = _table(
        ["case", "impl", "check (rel err)", "fwd ms", "fwd speedup", "fwd roofline", "fwd MiB",
         "f+b ms", "f+b speedup", "f+b roofline", "f+b MiB"],
        [[r["case"], r["impl"], _check_cell(r)]
         + [cell for mode in ("fwd", "fwdbwd") for cell in (
             _fmt(r[f"{mode}_ms"], "ms"), _fmt(r[f"{mode}_speedup"], "x"),
             _measured_cell(r, f"{mode}_roofline", mode, "pct"), _measured_cell(r, f"{mode}_mem_mib", mode, "mib"))]
         for r in rows],
        markdown,
    )
    notes = sorted({f"{r['impl']}: {r['status']}: {r['reason']}" for r in rows if r["reason"]})
    return "\n".join([case_table, "", result_table, *([""] + notes if notes else [])])


def format_model_rows(rows: list[dict[str, Any]], markdown: bool = False) -> str:
    table = _table(
        ["model", "impl", "check (rel err)", "batch", "img", "dtype", "fwd ms", "fwd img/s", "fwd speedup",
         "fwd peak MiB", "f+b ms", "f+b img/s", "f+b speedup", "f+b peak MiB"],
        [[r["model"], r["impl"], _check_cell(r), str(r["batch"]), str(r["img_size"]), r["dtype"]]
         + [cell for mode in ("fwd", "fwdbwd") for cell in (
             _fmt(r[f"{mode}_ms"], "ms"), _fmt(r[f"{mode}_img_s"], "rate"), _fmt(r[f"{mode}_speedup"], "x"),
             _measured_cell(r, f"{mode}_peak_mib", mode, "mib"))]
         for r in rows],
        markdown,
    )
    notes = sorted({f"{r['impl']}: {r['status']}: {r['reason']}" for r in rows if r["reason"]})
    return "\n".join([table, *([""] + notes if notes else [])])


def environment(device: torch.device) -> dict[str, Any]:
    """What a committed result needs to be read later: device, versions, date, commit."""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    import timm

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return dict(
        device=str(device),
        device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "cpu"),
        cpu_threads=torch.get_num_threads(),
        torch=torch.__version__,
        cuda=torch.version.cuda,
        triton=triton_version,
        timm=timm.__version__,
        python=platform.python_version(),
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        git_commit=commit,
    )


# --------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------

_EPILOG = """\
presets (--preset, per op):
{presets}
examples:
  python eval.py bench --op window_attention --preset davit_t_224 --dtype bf16
  python eval.py bench --op window_attention --shape 8,64,64,6,30 --window 16 --bias --mask
  python eval.py bench --op channel_attention --preset tiny --device cpu --dtype fp32
  python eval.py bench --op bilevel_routing_attention --shape 16,56,56,2,32,7,1 --dtype bf16
  python eval.py bench --op hilo_attention --preset litv2_s_224 --dtype bf16
  python eval.py bench --model zoo_davit_tiny --batch 64 --dtype bf16 --backends reference,triton \\
      --baseline-model davit_tiny --json benchmarks/results/davit_tiny_h100.json
exit status: 0 all good; 1 a candidate mismatched the baseline or failed; 2 bad arguments.
"""


_CPU_MEMORY_NOTE = "; memory: n/a on the CPU (no allocator statistics)"


class _ArgError(ValueError):
    pass


def _parser() -> argparse.ArgumentParser:
    presets = "\n".join(f"  {op}: {', '.join(p)}" for op, p in PRESETS.items())
    p = argparse.ArgumentParser(
        prog="eval.py bench", formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_EPILOG.format(presets=presets),
        description="Time attention ops against their official formulation and SDPA, or whole models per backend: "
                    "median time, peak memory, fraction of the roofline floor. See zoo/engine/benchmark.py.")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--op", choices=OPS, help="benchmark one op")
    what.add_argument("--model", metavar="NAME", help="benchmark a model (any timm name, zoo models included)")
    what.add_argument("--list", action="store_true", help="list the ops, presets and zoo models, then exit")

    o = p.add_argument_group("ops")
    o.add_argument("--preset", action="append", default=[], metavar="NAME", help="named shape set (repeatable)")
    o.add_argument("--shape", action="append", default=[], metavar="DIMS",
                   help="window_attention: B,H,W,heads,D; channel_attention: B,N,groups,D; "
                        "bilevel_routing_attention: B,H,W,heads,D,n_win,topk; --list shows every op's "
                        "(repeatable)")
    o.add_argument("--window", default="7", metavar="WS|WHxWW", help="window of --shape cases (default 7)")
    o.add_argument("--bias", action="store_true", help="--shape cases get a relative-position bias table")
    o.add_argument("--mask", action="store_true", help="--shape cases get a Swin shifted-window mask")
    o.add_argument("--candidates", default=None,
                   help="comma list from official,sdpa,reference,triton (bilevel_routing_attention: official,flex,"
                        "reference,triton; --list shows every op's); default all; official always runs: it is the "
                        "baseline")
    o.add_argument("--peak-tflops", type=float, metavar="TF/S", help="peak FLOP rate for the roofline")
    o.add_argument("--peak-gbs", type=float, metavar="GB/S", help="peak memory bandwidth for the roofline")
    o.add_argument("--no-flush-l2", action="store_true", help="GPU: do not flush L2 between timed runs")

    m = p.add_argument_group("models")
    m.add_argument("--backends", default=None, help="comma list of ops backends (default: reference, plus "
                                                    "triton where it can run)")
    m.add_argument("--baseline-model", metavar="NAME",
                   help="a model with the same state-dict layout, timed and used as the numerical baseline")
    m.add_argument("--img-size", type=int, help="input size (default: the model's pretrained_cfg input_size)")
    m.add_argument("--batch", type=int, default=64, help="batch size (default 64)")
    m.add_argument("--channels-last", action="store_true", help="channels-last model and input")

    c = p.add_argument_group("common")
    c.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    c.add_argument("--dtype", choices=tuple(DTYPES), default=None,
                   help="ops: input dtype; models: autocast dtype (fp32: none). Default bf16 on CUDA, fp32 on CPU")
    c.add_argument("--mode", choices=("fwd", "fwdbwd", "both"), default="both", help="what to time (default both)")
    c.add_argument("--warmup", type=int, default=None, help="untimed runs first (default 10 on CUDA, 1 on CPU)")
    c.add_argument("--iters", type=int, default=None, help="timed runs, median reported (default 50 CUDA, 5 CPU)")
    c.add_argument("--compile", action="store_true", help="torch.compile every candidate / model")
    c.add_argument("--allow-interpret", action="store_true",
                   help="CPU: run the triton backend in Triton's interpreter, and FlexAttention's eager forward "
                        "(with --mode fwd) (very slow; for checking the harness)")
    c.add_argument("--threads", type=int, metavar="N",
                   help="CPU: torch.set_num_threads(N) (on a loaded machine, 1 gives far steadier timings)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--json", metavar="OUT", help="write the results, with device and versions, to this JSON file")
    c.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    return p


def _split(value: str, valid: Sequence[str], what: str) -> list[str]:
    items = [s.strip() for s in value.split(",") if s.strip()]
    bad = [s for s in items if s not in valid]
    if bad or not items:
        raise _ArgError(f"{what}: unknown {bad or value!r}; valid: {', '.join(valid)}")
    return items


def _parse_window(value: str) -> tuple[int, int]:
    try:
        parts = [int(s) for s in value.lower().replace("x", ",").split(",")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) <= 0:
        raise _ArgError(f"--window: expected a positive size like 7 or 8x16, got {value!r}")
    return parts[0], parts[1]


def _parse_cases(args) -> list:
    op = args.op
    cases = []
    for name in args.preset:
        if name not in PRESETS[op]:
            raise _ArgError(f"--preset: unknown preset {name!r} for {op}; valid: {', '.join(PRESETS[op])}")
        cases += PRESETS[op][name]
    fields = _SHAPE_FIELDS[op]
    for spec in args.shape:
        try:
            dims = [int(s) for s in spec.split(",")]
        except ValueError:
            dims = []
        if len(dims) != len(fields.split(",")) or min(dims) <= 0:
            raise _ArgError(f"--shape: {op} expects {len(fields.split(','))} positive sizes {fields}, got {spec!r}")
        if op == "window_attention":
            cases.append(WindowCase(*dims, window=_parse_window(args.window), bias=args.bias, mask=args.mask))
        else:
            cases.append(_CASE_TYPES[op](*dims))
        if op in OP_BENCHES and OP_BENCHES[op].check_case and (problem := OP_BENCHES[op].check_case(cases[-1])):
            raise _ArgError(f"--shape {spec}: {problem}")
        if op == "bilevel_routing_attention":
            _, h, w, _, _, s, topk = dims
            if h % s or w % s:
                raise _ArgError(f"--shape {spec}: H and W must be multiples of n_win={s} (the official formulation, "
                                f"the baseline, handles divisible maps only)")
            if topk > s * s:
                raise _ArgError(f"--shape {spec}: topk={topk} > n_win^2={s * s} regions")
    if op != "window_attention" and (args.bias or args.mask or args.window != "7"):
        raise _ArgError(f"--window / --bias / --mask apply to window_attention only, not {op}")
    if not cases:
        raise _ArgError(f"--op {op}: give --preset (one of {', '.join(PRESETS[op])}) and/or --shape {fields}")
    return cases


def _device(value: str | None) -> torch.device:
    if value is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(value)
    except RuntimeError:
        raise _ArgError(f"--device: expected cuda, cuda:N or cpu, got {value!r}") from None
    if device.type not in ("cuda", "cpu"):
        raise _ArgError(f"--device: expected cuda, cuda:N or cpu, got {value!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise _ArgError("--device cuda: CUDA is not available here; use --device cpu")
    return device


def _model_names() -> list[str]:
    import zoo

    return zoo.list_models()


def _check_model_name(name: str, option: str) -> None:
    import timm

    import zoo  # noqa: F401

    if name not in timm.list_models():
        raise _ArgError(f"{option}: unknown model {name!r}; zoo models: {', '.join(_model_names())} "
                        f"(any name from timm.list_models() works too)")


def main(argv: list[str] | None = None) -> int:
    """``python eval.py bench ARGS``; returns the exit status (0 ok, 1 mismatch / failure, 2 bad arguments)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse already printed usage / help
        return int(e.code or 0)
    try:
        if args.list:
            for op, presets in PRESETS.items():
                print(f"{op}:  (--shape {_SHAPE_FIELDS[op]}; candidates {', '.join(OP_CANDIDATES[op])})")
                for pname, cases in presets.items():
                    print(f"  {pname}: {'; '.join(c.label for c in cases)}")
            print(f"models: {', '.join(_model_names())}")
            return 0
        device = _device(args.device)
        dtype = DTYPES[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
        dtype_name = next(k for k, v in DTYPES.items() if v == dtype)
        cuda = device.type == "cuda"
        warmup = args.warmup if args.warmup is not None else (10 if cuda else 1)
        iters = args.iters if args.iters is not None else (50 if cuda else 5)
        if warmup < 0 or iters < 1:
            raise _ArgError(f"--warmup must be >= 0 and --iters >= 1, got {warmup} and {iters}")
        modes = ("fwd", "fwdbwd") if args.mode == "both" else (args.mode,)
        if args.threads is not None:
            if args.threads < 1:
                raise _ArgError(f"--threads must be >= 1, got {args.threads}")
            torch.set_num_threads(args.threads)
        if cuda:
            torch.cuda.set_device(device)
        meta = dict(environment(device), argv=list(argv) if argv is not None else sys.argv[1:],
                    dtype=dtype_name, warmup=warmup, iters=iters, modes=list(modes), compile=args.compile)
        if args.op:
            if args.backends or args.baseline_model or args.channels_last or args.img_size:
                raise _ArgError("--backends / --baseline-model / --img-size / --channels-last apply to --model only")
            cases = _parse_cases(args)
            valid = tuple(OP_CANDIDATES[args.op])
            candidates = _split(args.candidates or ",".join(valid), valid, "--candidates")
            if (args.peak_tflops is None) != (args.peak_gbs is None) and device_peak(
                    torch.cuda.get_device_name(device) if cuda else "") is None:
                raise _ArgError("--peak-tflops and --peak-gbs: give both (no datasheet peaks for this device)")
            roof = _roofline(device, dtype_name, args.peak_tflops, args.peak_gbs)
            meta.update(op=args.op, roofline=dict(tflops=roof.tflops, gbs=roof.gbs, source=roof.source))
            print(f"{args.op} on {meta['device_name']} ({device}), {dtype_name}, median of {iters} after {warmup} "
                  f"warmup; roofline: {roof.source}" + (f" {roof.tflops:g} TFLOP/s, {roof.gbs:g} GB/s"
                                                        if roof.known else "") + _CPU_MEMORY_NOTE * (not cuda))
            rows = bench_op(args.op, cases, device=device, dtype=dtype, candidates=candidates, modes=modes,
                            warmup=warmup, iters=iters, roofline=roof, allow_interpret=args.allow_interpret,
                            compile=args.compile, flush_l2=not args.no_flush_l2, seed=args.seed)
            print(format_op_rows(rows, args.markdown))
            result = dict(meta=meta, ops=rows)
        else:
            from ops import BACKENDS

            if args.preset or args.shape or args.peak_tflops or args.peak_gbs:
                raise _ArgError("--preset / --shape / --peak-tflops / --peak-gbs apply to --op only")
            _check_model_name(args.model, "--model")
            if args.baseline_model:
                _check_model_name(args.baseline_model, "--baseline-model")
            if args.batch < 1 or (args.img_size is not None and args.img_size < 1):
                raise _ArgError(f"--batch and --img-size must be positive, got {args.batch} and {args.img_size}")
            default = "reference,triton" if cuda else "reference"
            backends = _split(args.backends or default, BACKENDS, "--backends")
            print(f"{args.model} on {meta['device_name']} ({device}), {dtype_name}"
                  f"{' autocast' if dtype != torch.float32 else ''}, median of {iters} after {warmup} warmup"
                  + _CPU_MEMORY_NOTE * (not cuda))
            rows = bench_model(args.model, backends=backends, baseline_model=args.baseline_model,
                               img_size=args.img_size, batch=args.batch, device=device, dtype=dtype,
                               channels_last=args.channels_last, compile=args.compile, modes=modes, warmup=warmup,
                               iters=iters, allow_interpret=args.allow_interpret, seed=args.seed)
            print(format_model_rows(rows, args.markdown))
            result = dict(meta=meta, models=rows)
    except _ArgError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}")
    bad = [r for r in rows if r["status"] in ("MISMATCH", "ERROR")]
    if bad:
        print(f"!!! {len(bad)} candidate(s) failed the check or errored: "
              f"{', '.join(sorted({r['impl'] + ' ' + r['status'] for r in bad}))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
