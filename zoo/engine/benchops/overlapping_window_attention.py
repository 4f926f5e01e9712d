"""``overlapping_window_attention`` (HAT's OCAB): queries in non-overlapping ``ws x ws`` windows attend to the
larger ``wse x wse`` key window centred on theirs (``wse = ws + int(overlap_ratio * ws)``), keys beyond the
map being zero tokens, with a relative-position bias.

Inputs, as OCAB's ``qkv`` Linear produces them: a packed ``qkv`` ``(B, H, W, 3, heads, D)`` and the bias table in
the op's layout ``(heads, ws + wse - 1, ws + wse - 1)``; gradients w.r.t. both. Output ``(B, H, W, heads, D)``.
Maps are multiples of ``ws`` (HAT pads its input image so that every map is; the official OCAB partitions the
queries with ``window_partition``, which needs it).

Candidates:

* ``official`` -- ``OCAB.forward`` of XPixelGroup/HAT (``hat/archs/hat_arch.py``) between ``qkv`` and ``proj``:
  ``permute(3, 0, 4, 1, 2)``, ``window_partition`` of q, ``torch.cat`` of k and v on the channels,
  ``nn.Unfold(kernel wse, stride ws, padding (wse - ws) / 2)``, the einops
  ``b (nc ch owh oww) nw -> nc (b nw) (owh oww) ch``, per-head reshape / permute, ``q * scale @ k^T``, the bias
  gathered from the official ``((ws + wse - 1)^2, heads)`` table through the official
  ``relative_position_index_OCA`` (negative entries wrap, as in HAT), softmax, ``@ v``, ``window_reverse``. The
  official table is a fixed permutation of the op's (a free ``roll`` of its flat view: the official index maps
  the op's bias offsets one-to-one onto the table's rows).
* ``sdpa`` -- ``F.scaled_dot_product_attention`` on the same windows (q partitioned, k / v zero-padded and
  ``Tensor.unfold``-ed channels-last), the bias ``(heads, ws^2, wse^2)`` as a float ``attn_mask`` broadcast over
  the windows.
* ``reference`` / ``triton`` -- :func:`ops.overlapping_window_attention` with that backend.

Cost (``nW = H W / ws^2`` windows, ``n = ws^2`` queries and ``m = wse^2`` keys each, ``T = B H W heads D``,
``s`` the element size; the table ``heads (ws + wse - 1)^2 s``)::

    fwd FLOPs = 4 * B * nW * heads * n * m * D     (q k^T and P v)
    bwd FLOPs = 2.5 * fwd                           (FlashAttention's count: q k^T recomputed)
    fwd bytes = 4 T s + table                       (read q, k, v once -- the overlap re-reads hit the cache;
                                                     write o)
    bwd bytes = 8 T s + 2 table                     (read q, k, v, o, dO; write dq, dk, dv; table and its gradient)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from zoo.engine.benchops import BenchInputs, OpBench, elem_size, packed_qkv
from zoo.engine.flops import OpCost

__all__ = ["BENCH", "OverlappingWindowCase", "hat_rpi_oca", "ocab_official", "ocab_sdpa",
           "overlapping_window_attention_cost"]


def overlapping_window_attention_cost(batch: int, height: int, width: int, heads: int, head_dim: int, window: int,
                                      key_window: int, *, elem_size: int, bias: bool = True) -> OpCost:
    """Cost of ``ops.overlapping_window_attention`` on a map that is a multiple of ``window`` (module docstring)."""
    windows = (height // window) * (width // window)
    flops_fwd = 4 * batch * windows * heads * window ** 2 * key_window ** 2 * head_dim
    tensor = batch * height * width * heads * head_dim * elem_size
    table = heads * (window + key_window - 1) ** 2 * elem_size if bias else 0
    return OpCost(flops_fwd=flops_fwd, flops_bwd=flops_fwd * 5 // 2, bytes_fwd=4 * tensor + table,
                  bytes_bwd=8 * tensor + 2 * table)


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


def hat_rpi_oca(ws: int, wse: int, device=None) -> torch.Tensor:
    """HAT's ``relative_position_index_OCA`` ``(ws^2, wse^2)``, computed the official way (entries may be negative:
    the official gather wraps them)."""
    def coords(n: int) -> torch.Tensor:
        return torch.stack(torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")).flatten(1)  # (2, n^2)

    rel = (coords(wse)[:, None, :] - coords(ws)[:, :, None]).permute(1, 2, 0).contiguous()  # (ws^2, wse^2, 2)
    rel[:, :, 0] += ws - wse + 1
    rel[:, :, 1] += ws - wse + 1
    rel[:, :, 0] *= ws + wse - 1
    return rel.sum(-1).to(device)


def _make_inputs(case: OverlappingWindowCase, device, dtype, grad: bool) -> BenchInputs:
    B, H, W, nh, D = case.batch, case.height, case.width, case.heads, case.head_dim
    ws, wse = case.window, case.key_window
    qkv = packed_qkv((B, H, W, 3, nh, D), device, dtype, grad)
    leaves, table = [qkv], None
    if case.bias:
        side = ws + wse - 1
        table = (0.5 * torch.randn(nh, side, side, device=device, dtype=dtype)).requires_grad_(grad)
        leaves.append(table)
    return BenchInputs(leaves=leaves, extra=dict(table=table, rpi=hat_rpi_oca(ws, wse, device)))


def _official_table(table: torch.Tensor, ws: int, wse: int) -> torch.Tensor:
    """The official ``((ws + wse - 1)^2, heads)`` table holding the op's ``(heads, T, T)`` one: official row
    ``(a * T + b - (wse - 2) * (T + 1)) mod T^2`` is the op's entry ``[:, a, b]`` (offsets ``a, b``)."""
    nh, side = table.shape[0], table.shape[1]
    return table.reshape(nh, side * side).roll(-(wse - 2) * (side + 1), dims=1).t()


def ocab_official(inp: BenchInputs, case: OverlappingWindowCase) -> torch.Tensor:
    qkv = inp.leaves[0]
    b, h, w, _, nh, d = qkv.shape
    c = nh * d
    ws, wse = case.window, case.key_window
    qkv = qkv.reshape(b, h, w, 3, c).permute(3, 0, 4, 1, 2)  # 3, b, c, h, w
    q = qkv[0].permute(0, 2, 3, 1)
    kv = torch.cat((qkv[1], qkv[2]), dim=1)
    q_windows = q.reshape(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, ws * ws, c)
    kv_windows = F.unfold(kv, kernel_size=(wse, wse), stride=ws, padding=(wse - ws) // 2)
    # einops 'b (nc ch owh oww) nw -> nc (b nw) (owh oww) ch' + .contiguous() (einops is not a dependency)
    nw = kv_windows.shape[-1]
    kv_windows = kv_windows.view(b, 2, c, wse * wse, nw).permute(1, 0, 4, 3, 2).reshape(2, b * nw, wse * wse, c)
    k_windows, v_windows = kv_windows[0], kv_windows[1]
    b_, nq, _ = q_windows.shape
    n = k_windows.shape[1]
    q = q_windows.reshape(b_, nq, nh, d).permute(0, 2, 1, 3)
    k = k_windows.reshape(b_, n, nh, d).permute(0, 2, 1, 3)
    v = v_windows.reshape(b_, n, nh, d).permute(0, 2, 1, 3)
    attn = (q * d ** -0.5) @ k.transpose(-2, -1)
    if inp.table is not None:
        table = _official_table(inp.table, ws, wse)
        bias = table[inp.rpi.view(-1)].view(ws * ws, wse * wse, -1).permute(2, 0, 1).contiguous()
        attn = attn + bias.unsqueeze(0)
    x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b_, nq, c)
    x = x.view(b, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5).contiguous().view(b, h, w, c)
    return x.view(b, h, w, nh, d)


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
