"""``window_attention`` (DaViT, Swin-style families, HAT): softmax attention inside non-overlapping windows, with an
optional relative-position bias table and a Swin shifted-window mask.

Inputs: a packed ``qkv`` ``(B, H, W, 3, heads, D)``, the bias table in the op's layout ``(heads, 2wh-1, 2ww-1)``
(``bias`` cases) and Swin's shifted-window mask (``mask`` cases, a constant); gradients w.r.t. ``qkv`` and the
table. Output ``(B, H, W, heads, D)``. Partial windows (``H`` or ``W`` not a multiple of the window): the op masks
the missing positions, so ``official`` / ``sdpa`` pad with zeros and mask the padded keys with ``-inf`` to compute
the same function (DaViT pads before its qkv projection, so in the model the op only ever sees whole windows).

Candidates:

* ``official`` -- :func:`ops.window_attention.official.window_attention_official` (Swin / DaViT), the table viewed
  as Swin's ``((2wh-1)(2ww-1), heads)`` parameter.
* ``sdpa`` -- ``F.scaled_dot_product_attention`` on the same partition, bias, shift mask and padding folded into
  one float ``attn_mask``.
* ``reference`` / ``triton`` -- :func:`ops.window_attention` with that backend.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from benchmarks.harness import BenchInputs, OpBench, packed_qkv
from ops._cost import OpCost, elem_size
from ops.window_attention.official import (
    swin_shift_mask,
    table_to_official,
    window_attention_cost,
    window_attention_official,
)

__all__ = ["BENCH", "WindowCase"]


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
        return window_attention_cost(self.batch, self.height, self.width, self.heads, self.head_dim, self.window,
                                     elem_size=elem_size(dtype), bias=self.bias, mask=self.mask)


def parse_window(value: str) -> tuple[int, int]:
    try:
        parts = [int(s) for s in value.lower().replace("x", ",").split(",")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) <= 0:
        raise ValueError(f"--window: expected a positive size like 7 or 8x16, got {value!r}")
    return parts[0], parts[1]


def _shape_case(dims: list[int], args) -> WindowCase:
    return WindowCase(*dims, window=parse_window(args.window), bias=args.bias, mask=args.mask)


def _make_inputs(case: WindowCase, device, dtype, grad: bool) -> BenchInputs:
    B, H, W, nh, D = case.batch, case.height, case.width, case.heads, case.head_dim
    wh, ww = case.window
    qkv = packed_qkv((B, H, W, 3, nh, D), device, dtype, grad)
    leaves, table, mask = [qkv], None, None
    if case.bias:
        table = torch.randn(nh, 2 * wh - 1, 2 * ww - 1, device=device, dtype=dtype).requires_grad_(grad)
        leaves.append(table)
    if case.mask:  # Swin's odd blocks: a shift of half a window
        mask = swin_shift_mask(H, W, (wh, ww), (wh // 2, ww // 2)).to(device=device, dtype=dtype)
    return BenchInputs(leaves=leaves, extra=dict(table=table, mask=mask))


def window_official(inp: BenchInputs, case: WindowCase) -> torch.Tensor:
    q, k, v = inp.leaves[0].unbind(3)
    table = None if inp.table is None else table_to_official(inp.table)
    return window_attention_official(q, k, v, case.window, bias_table=table, mask=inp.mask)


def _partition(t: torch.Tensor, window: Sequence[int]) -> torch.Tensor:
    """(B, H, W, heads, D) -> zero-padded windows (B*nW, heads, N, D)."""
    B, H, W, nh, D = t.shape
    wh, ww = window
    ph, pw = (-H) % wh, (-W) % ww
    t = F.pad(t, (0, 0, 0, 0, 0, pw, 0, ph))
    t = t.view(B, (H + ph) // wh, wh, (W + pw) // ww, ww, nh, D).permute(0, 1, 3, 5, 2, 4, 6)
    return t.reshape(-1, nh, wh * ww, D)


def window_sdpa(inp: BenchInputs, case: WindowCase) -> torch.Tensor:
    from ops.window_attention import relative_position_bias

    B, H, W, nh, D = case.batch, case.height, case.width, case.heads, case.head_dim
    wh, ww = case.window
    hp, wp = -(-H // wh) * wh, -(-W // ww) * ww
    q, k, v = (_partition(t, case.window) for t in inp.leaves[0].unbind(3))
    n, nw = wh * ww, (hp // wh) * (wp // ww)
    attn_mask = None
    if inp.table is not None:
        attn_mask = relative_position_bias(inp.table, case.window).unsqueeze(0)  # (1, heads, N, N)
    extra = inp.mask
    if (hp, wp) != (H, W):
        valid = F.pad(torch.ones(H, W, device=q.device), (0, wp - W, 0, hp - H))
        valid = valid.view(hp // wh, wh, wp // ww, ww).permute(0, 2, 1, 3).reshape(nw, 1, n)
        pad = torch.zeros(nw, n, n, device=q.device).masked_fill(valid == 0, float("-inf")).to(q.dtype)
        extra = pad if extra is None else extra + pad
    if extra is not None:
        m = extra.unsqueeze(1) if attn_mask is None else extra.unsqueeze(1) + attn_mask  # (nW, 1 | heads, N, N)
        attn_mask = m.expand(B, nw, m.shape[1], n, n).reshape(B * nw, m.shape[1], n, n)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=D ** -0.5)
    out = out.view(B, hp // wh, wp // ww, nh, wh, ww, D).permute(0, 1, 4, 2, 5, 3, 6)
    return out.reshape(B, hp, wp, nh, D)[:, :H, :W]


def _ours(backend: str):
    def run(inp: BenchInputs, case: WindowCase) -> torch.Tensor:
        import ops

        q, k, v = inp.leaves[0].unbind(3)
        return ops.window_attention(q, k, v, case.window, bias_table=inp.table, mask=inp.mask, backend=backend)

    return run


def _davit_stages(img: int, dims: Sequence[int], heads: Sequence[int]) -> list[tuple[int, int, int]]:
    """(map size, heads, head_dim) of DaViT's four stages at img x img (strides 4, 8, 16, 32)."""
    return [(img // 4 // 2 ** i, h, d // h) for i, (d, h) in enumerate(zip(dims, heads))]


DAVIT_T = dict(dims=(96, 192, 384, 768), heads=(3, 6, 12, 24))
DAVIT_B = dict(dims=(128, 256, 512, 1024), heads=(4, 8, 16, 32))


def _davit(batch: int, img: int, dims, heads, window: int = 7) -> list[WindowCase]:
    return [WindowCase(batch, s, s, h, d, (window, window)) for s, h, d in _davit_stages(img, dims, heads)]


# davit_*: the four stages of DaViT at 224x224, batch 64 (ImageNet training per GPU). hat_ws16: HAT's attention
# (C = 180, 6 heads of 30, 16x16 windows, relative-position bias) on a 64x64 training patch, batch 4 per GPU as in
# HAT's recipe; the second case adds the shifted-window mask of the odd blocks. tiny: CPU-sized, with a partial
# window row / column and an odd head_dim.
BENCH = OpBench(
    name="window_attention",
    presets={
        "davit_t_224": _davit(64, 224, **DAVIT_T),
        "davit_b_224": _davit(64, 224, **DAVIT_B),
        "hat_ws16": [
            WindowCase(4, 64, 64, 6, 30, (16, 16), bias=True),
            WindowCase(4, 64, 64, 6, 30, (16, 16), bias=True, mask=True),
        ],
        "tiny": [
            WindowCase(2, 14, 14, 3, 16, (7, 7)),
            WindowCase(2, 10, 13, 2, 24, (4, 4), bias=True, mask=True),
        ],
    },
    candidates={"official": window_official, "sdpa": window_sdpa, "reference": _ours("reference"),
                "triton": _ours("triton")},
    make_inputs=_make_inputs,
    case_type=WindowCase,
    shape_fields="B,H,W,heads,D",
    shape_case=_shape_case,
)
