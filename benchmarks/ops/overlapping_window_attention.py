"""``overlapping_window_attention`` (HAT's OCAB): queries in non-overlapping ``ws x ws`` windows attend to the
larger ``wse x wse`` key window centred on theirs (``wse = ws + int(overlap_ratio * ws)``), keys beyond the
map being zero tokens, with a relative-position bias.

Inputs, as OCAB's ``qkv`` Linear produces them: a packed ``qkv`` ``(B, H, W, 3, heads, D)`` and the bias table in
the op's layout ``(heads, ws + wse - 1, ws + wse - 1)``; gradients w.r.t. both. Output ``(B, H, W, heads, D)``.
Maps are multiples of ``ws`` (HAT pads its input image so that every map is; the official OCAB partitions the
queries with ``window_partition``, which needs it).

Candidates:

* ``official`` -- :func:`ops.overlapping_window_attention.official.overlapping_window_attention_official`
  (``OCAB.forward`` of XPixelGroup/HAT), the op's table seen as the official ``((ws + wse - 1)^2, heads)`` one
  (``table_to_official``: a ``roll`` of its flat view, inside the timed call).
* ``sdpa`` -- ``F.scaled_dot_product_attention`` on the same windows (q partitioned, k / v zero-padded and
  ``Tensor.unfold``-ed channels-last), the bias ``(heads, ws^2, wse^2)`` as a float ``attn_mask`` broadcast over
  the windows.
* ``reference`` / ``triton`` -- :func:`ops.overlapping_window_attention` with that backend.

"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from benchmarks.harness import BenchInputs, OpBench, packed_qkv
from ops._cost import OpCost, elem_size
from ops.overlapping_window_attention.official import (
    overlapping_window_attention_cost,
    overlapping_window_attention_official,
    table_to_official,
)

__all__ = ["BENCH", "OverlappingWindowCase"]


@dataclass(frozen=True)
class OverlappingWindowCase:
    """OCAB on ``(batch, height, width, heads, head_dim)``: ``window``-sided query windows, ``key_window``-sided
    key windows, with (``bias``) or without the relative-position bias."""

    batch: int
    height: int
    width: int
    heads: int
    head_dim: int
    window: int
    key_window: int
    bias: bool = True

    @property
    def label(self) -> str:
        return (f"{self.batch}x{self.height}x{self.width}x{self.heads}x{self.head_dim} w{self.window} "
                f"kw{self.key_window}{'+bias' if self.bias else ''}")

    def cost(self, dtype: torch.dtype) -> OpCost:
        return overlapping_window_attention_cost(self.batch, self.height, self.width, self.heads, self.head_dim,
                                                 self.window, self.key_window, elem_size=elem_size(dtype),
                                                 bias=self.bias)


def _check_case(case: OverlappingWindowCase) -> str | None:
    ws, wse = case.window, case.key_window
    if wse < ws or (wse - ws) % 2:
        return f"key_window {wse} must be >= window {ws} and exceed it by an even amount (centred)"
    if case.height % ws or case.width % ws:
        return (f"H and W must be multiples of window={ws} (the official OCAB's window_partition; HAT pads its "
                f"input so that they are)")
    return None


def _make_inputs(case: OverlappingWindowCase, device, dtype, grad: bool) -> BenchInputs:
    B, H, W, nh, D = case.batch, case.height, case.width, case.heads, case.head_dim
    ws, wse = case.window, case.key_window
    qkv = packed_qkv((B, H, W, 3, nh, D), device, dtype, grad)
    leaves, table = [qkv], None
    if case.bias:
        side = ws + wse - 1
        table = (0.5 * torch.randn(nh, side, side, device=device, dtype=dtype)).requires_grad_(grad)
        leaves.append(table)
    return BenchInputs(leaves=leaves, extra=dict(table=table))


def ocab_official(inp: BenchInputs, case: OverlappingWindowCase) -> torch.Tensor:
    q, k, v = inp.leaves[0].unbind(3)
    table = None if inp.table is None else table_to_official(inp.table, case.window, case.key_window)
    return overlapping_window_attention_official(q, k, v, case.window, case.key_window, bias_table=table)


def ocab_sdpa(inp: BenchInputs, case: OverlappingWindowCase) -> torch.Tensor:
    from ops.overlapping_window_attention import overlapping_relative_position_bias

    qkv = inp.leaves[0]
    B, H, W, _, nh, D = qkv.shape
    ws, wse = case.window, case.key_window
    p = (wse - ws) // 2
    nwh, nww = H // ws, W // ws
    q, k, v = qkv.unbind(3)
    qw = q.reshape(B, nwh, ws, nww, ws, nh, D).permute(0, 1, 3, 5, 2, 4, 6).reshape(B * nwh * nww, nh, ws * ws, D)

    def key_windows(t):
        t = F.pad(t, (0, 0, 0, 0, p, p, p, p)).unfold(1, wse, ws).unfold(2, wse, ws)  # (B, nwh, nww, nh, D, wse, wse)
        return t.permute(0, 1, 2, 3, 5, 6, 4).reshape(B * nwh * nww, nh, wse * wse, D)

    mask = None
    if inp.table is not None:
        mask = overlapping_relative_position_bias(inp.table, (ws, ws), (wse, wse)).unsqueeze(0)
    out = F.scaled_dot_product_attention(qw, key_windows(k), key_windows(v), attn_mask=mask, scale=D ** -0.5)
    return out.view(B, nwh, nww, nh, ws, ws, D).permute(0, 1, 4, 2, 5, 3, 6).reshape(B, H, W, nh, D)


def _ours(backend: str):
    def run(inp: BenchInputs, case: OverlappingWindowCase) -> torch.Tensor:
        import ops

        q, k, v = inp.leaves[0].unbind(3)
        return ops.overlapping_window_attention(q, k, v, case.window, case.key_window, bias_table=inp.table,
                                                backend=backend)

    return run


def _hat(batch: int, size: int) -> OverlappingWindowCase:
    """HAT's OCAB (C 180, 6 heads of 30, window 16, overlap 0.5 -> key window 24) on a size x size map."""
    return OverlappingWindowCase(batch, size, size, 6, 30, 16, 24)


# hat_64: HAT's training patch (64x64 LR), batch 4 per GPU as in HAT's recipe. hat_256: a 256x256 LR image (1024x1024
# output at x4), batch 1. tiny: CPU sizes, non-square maps, odd heads / head_dim, a wider overlap, one case without
# the bias.
BENCH = OpBench(
    name="overlapping_window_attention",
    presets={
        "hat_64": [_hat(4, 64)],
        "hat_256": [_hat(1, 256)],
        "tiny": [OverlappingWindowCase(2, 8, 12, 3, 8, 4, 6), OverlappingWindowCase(1, 12, 6, 1, 12, 6, 10),
                 OverlappingWindowCase(1, 8, 4, 2, 8, 4, 6, bias=False)],
    },
    candidates={"official": ocab_official, "sdpa": ocab_sdpa, "reference": _ours("reference"),
                "triton": _ours("triton")},
    make_inputs=_make_inputs,
    case_type=OverlappingWindowCase,
    shape_fields="B,H,W,heads,D,window,key_window",
    check_case=_check_case,
)
