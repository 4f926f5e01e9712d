"""Window / grid attention (EMOv2's close / remote partitions) in Triton: fused forward and backward kernels,
registered as custom ops.

Math, per batch ``b``, group ``g`` of one partition and head ``h``, over the ``N = wh * ww`` positions of the
group (semantics exactly those of :mod:`ops.window_grid_attention.reference`)::

    S  = scale * q k^T   (-inf at missing keys);   P = softmax(S);   out = P v
    dv = P^T dO;   dP = dO v^T;   dS = P * (dP - delta),  delta = rowsum(P * dP);   dq = scale dS k;   dk = scale dS^T q

with ``v`` / ``dO`` of width ``Dv`` and ``q`` / ``k`` of width ``Dqk`` (they may differ).

Kernel design
-------------
Groups are addressed in-kernel: group-local index ``n = i * ww + j`` of group ``(a, c)`` is map pixel
``(a * row_a + i * row_i, c * col_c + j * col_j)`` with ``(row_a, row_i) = (wh, 1)`` for the window partition
and ``(1, nh)`` for the grid partition (``nh = ceil(H / wh)`` groups per column; columns likewise), read through
the strides of the ``(B, H, W, heads, D)`` tensors. So neither partition is ever materialised (the official
code makes six rearranged copies of q, k, v per block), q, k, v may be strided views (e.g. ``unbind`` of a
projection), and pixels beyond the map are masked: never keys, never stored.

The groups are small (EMOv2: 7x7, 8x8, 10x10 in its segmentation configs), so a group's keys are one tile
(``N <= 128``) and every row of scores is complete inside a program:

* Forward (``window_grid_attention_fwd_kernel``): one program per (b, group, head, block of BLOCK_M queries):
  S, a plain (not online) softmax and P v in registers; q, k, v read once, out written once; no log-sum-exp is
  stored, the backward recomputes the softmax from its complete rows.
* Backward (``window_grid_attention_bwd_kernel``): one program per (b, group, head): k and v stay in registers,
  the loop over query blocks recomputes S and P, forms dP, delta = rowsum(P * dP) in fp32 (out is never read,
  so 'both' needs no per-partition output), writes dq of the block and accumulates dk, dv for the whole group,
  written once at the end. No atomics: each program owns its group's tokens. Deterministic.
* ``partition='both'``: the window partition's launch writes, the grid partition's launch (next on the same
  stream) adds to what is there (ACCUMULATE): out, dq, dk, dv are each one tensor, never two partial ones.

Precision: fp32 accumulation. As in FlashAttention, the operands of every ``tl.dot`` are in the input dtype:
q k^T and dO v^T are exact products; P (for P v and P^T dO) and dS (for dq, dk) are rounded to the input dtype
first. With 'both', the window partition's result is rounded to the output dtype before the grid partition's is
added (one more rounding than the reference's single one: about one ulp of fp16/bf16). fp32 inputs use IEEE fp32
dots (no TF32). Softmax in base 2 with log2(e) folded into the scale.
"""
from __future__ import annotations

import dataclasses

import torch
import triton
import triton.language as tl

from ops._backend import empty
from ops._checks import check_triton_dtype
from ops._custom_op import register_fwd_bwd
from ops._plans import exact_fp32, KernelPlan, Target, device_target, dot_options, launch
from ops._triton_utils import dot, dot_block, load_tile, on_device, store_tile

__all__ = ["MAX_GROUP_TOKENS", "window_grid_attention_triton"]

# Runtime arguments that follow the feature map's size are not specialised by Triton (on == 1 or divisibility by 16),
# so a new image size compiles no new kernel version: the map (H, W), the grid (GH, GW) and the row / column index
# maps' coefficients (tests/ops/test_recompiles.py).
_SIZE_ARGS = ["H", "W", "GH", "GW", "row_a", "row_i", "col_c", "col_j"]

# A group's keys are one register tile (the softmax rows are complete in a program): 11 x 11 windows at most.
MAX_GROUP_TOKENS = 128


@triton.jit
def _positions(offs, a, c, H, W, row_a, row_i, col_c, col_j, WW: tl.constexpr, N: tl.constexpr):
    """Group-local indices -> map rows / columns (int64) and whether the pixel exists."""
    row = a * row_a + (offs // WW) * row_i
    col = c * col_c + (offs % WW) * col_j
    valid = (offs < N) & (row < H) & (col < W)
    return row.to(tl.int64), col.to(tl.int64), valid


@triton.jit
def _group_of(pid, NH, GH, GW):
    """(batch, group row, group column, head) of flat program ``pid`` over (B, GH * GW, heads)."""
    i_h = pid % NH
    i_bg = pid // NH
    i_g = i_bg % (GH * GW)
    return i_bg // (GH * GW), i_g // GW, i_g % GW, i_h


@triton.jit
def _probs(q_t, k_t, valid_k, qk_scale, UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """Row-normalised softmax of ``scale q k^T`` (fp32), exactly 0 at missing keys."""
    s = dot(q_t, tl.trans(k_t), UPCAST_DOT, DOT_PRECISION) * qk_scale
    s = tl.where(valid_k[None, :], s, float("-inf"))
    # Every group holds at least one existing pixel (its first), so no row is all -inf.
    p = tl.exp2(s - tl.max(s, axis=1)[:, None])
    return p / tl.sum(p, axis=1)[:, None]


@triton.jit(do_not_specialize=_SIZE_ARGS)
def window_grid_attention_fwd_kernel(
    q, k, v, out,
    stride_qb, stride_qh, stride_qw, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kw, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vw, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_ow, stride_on, stride_od,
    qk_scale, H, W, NH, GH, GW, row_a, row_i, col_c, col_j, DQK, DV,
    WW: tl.constexpr, N: tl.constexpr, ACCUMULATE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DQK: tl.constexpr, BLOCK_DV: tl.constexpr,
    UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """out (or out + this partition, if ACCUMULATE) for one block of queries of one (b, group, head)."""
    i_b, a, c, i_h = _group_of(tl.program_id(0), NH, GH, GW)
    i_b64 = i_b.to(tl.int64)
    q += i_b64 * stride_qb + i_h * stride_qn
    k += i_b64 * stride_kb + i_h * stride_kn
    v += i_b64 * stride_vb + i_h * stride_vn
    out += i_b64 * stride_ob + i_h * stride_on

    offs_q = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    rowq, colq, valid_q = _positions(offs_q, a, c, H, W, row_a, row_i, col_c, col_j, WW, N)
    rowk, colk, valid_k = _positions(tl.arange(0, BLOCK_N), a, c, H, W, row_a, row_i, col_c, col_j, WW, N)
    q_t = load_tile(q, rowq, colq, valid_q, stride_qh, stride_qw, stride_qd, DQK, BLOCK_DQK)
    k_t = load_tile(k, rowk, colk, valid_k, stride_kh, stride_kw, stride_kd, DQK, BLOCK_DQK)
    v_t = load_tile(v, rowk, colk, valid_k, stride_vh, stride_vw, stride_vd, DV, BLOCK_DV)

    p = _probs(q_t, k_t, valid_k, qk_scale, UPCAST_DOT, DOT_PRECISION)
    o = dot(p.to(v_t.dtype), v_t, UPCAST_DOT, DOT_PRECISION)
    if ACCUMULATE:
        o += load_tile(out, rowq, colq, valid_q, stride_oh, stride_ow, stride_od, DV, BLOCK_DV).to(tl.float32)
    store_tile(out, o, rowq, colq, valid_q, stride_oh, stride_ow, stride_od, DV, BLOCK_DV)


@triton.jit(do_not_specialize=_SIZE_ARGS)
def window_grid_attention_bwd_kernel(
    q, k, v, do, dq, dk, dv,
    stride_qb, stride_qh, stride_qw, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kw, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vw, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_dow, stride_don, stride_dod,
    stride_gb, stride_gh, stride_gw, stride_gn, stride_gd,
    stride_gvb, stride_gvh, stride_gvw, stride_gvn, stride_gvd,
    qk_scale, scale, H, W, NH, GH, GW, row_a, row_i, col_c, col_j, DQK, DV,
    WW: tl.constexpr, N: tl.constexpr, ACCUMULATE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DQK: tl.constexpr, BLOCK_DV: tl.constexpr,
    UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """dq, dk, dv (or their sums with what is there, if ACCUMULATE) of one (b, group, head).

    ``dq`` and ``dk`` are this module's contiguous tensors of q's shape (strides ``stride_g*``), ``dv`` of v's
    shape (``stride_gv*``).
    """
    i_b, a, c, i_h = _group_of(tl.program_id(0), NH, GH, GW)
    i_b64 = i_b.to(tl.int64)
    q += i_b64 * stride_qb + i_h * stride_qn
    k += i_b64 * stride_kb + i_h * stride_kn
    v += i_b64 * stride_vb + i_h * stride_vn
    do += i_b64 * stride_dob + i_h * stride_don
    g_off = i_b64 * stride_gb + i_h * stride_gn
    dq += g_off
    dk += g_off
    dv += i_b64 * stride_gvb + i_h * stride_gvn

    rowk, colk, valid_k = _positions(tl.arange(0, BLOCK_N), a, c, H, W, row_a, row_i, col_c, col_j, WW, N)
    k_t = load_tile(k, rowk, colk, valid_k, stride_kh, stride_kw, stride_kd, DQK, BLOCK_DQK)
    v_t = load_tile(v, rowk, colk, valid_k, stride_vh, stride_vw, stride_vd, DV, BLOCK_DV)
    dk_acc = tl.zeros((BLOCK_N, BLOCK_DQK), dtype=tl.float32)
    dv_acc = tl.zeros((BLOCK_N, BLOCK_DV), dtype=tl.float32)
    for m0 in range(0, N, BLOCK_M):
        offs_q = m0 + tl.arange(0, BLOCK_M)
        rowq, colq, valid_q = _positions(offs_q, a, c, H, W, row_a, row_i, col_c, col_j, WW, N)
        q_t = load_tile(q, rowq, colq, valid_q, stride_qh, stride_qw, stride_qd, DQK, BLOCK_DQK)
        # dO may come in another dtype (or as a stride-0 expanded view); the dots want q's. Missing queries load
        # dO = 0, so their (uniform) probabilities add nothing to dv, and dS = 0 in their rows.
        do_t = load_tile(do, rowq, colq, valid_q, stride_doh, stride_dow, stride_dod, DV, BLOCK_DV).to(q_t.dtype)
        p = _probs(q_t, k_t, valid_k, qk_scale, UPCAST_DOT, DOT_PRECISION)
        dp = dot(do_t, tl.trans(v_t), UPCAST_DOT, DOT_PRECISION)
        ds = p * (dp - tl.sum(p * dp, axis=1)[:, None])
        dv_acc += dot(tl.trans(p.to(do_t.dtype)), do_t, UPCAST_DOT, DOT_PRECISION)
        ds_lo = ds.to(q_t.dtype)
        dk_acc += dot(tl.trans(ds_lo), q_t, UPCAST_DOT, DOT_PRECISION)
        dq_t = dot(ds_lo, k_t, UPCAST_DOT, DOT_PRECISION) * scale
        if ACCUMULATE:
            dq_t += load_tile(dq, rowq, colq, valid_q, stride_gh, stride_gw, stride_gd, DQK, BLOCK_DQK).to(tl.float32)
        store_tile(dq, dq_t, rowq, colq, valid_q, stride_gh, stride_gw, stride_gd, DQK, BLOCK_DQK)

    dk_acc = dk_acc * scale
    if ACCUMULATE:
        dk_acc += load_tile(dk, rowk, colk, valid_k, stride_gh, stride_gw, stride_gd, DQK, BLOCK_DQK).to(tl.float32)
        dv_acc += load_tile(dv, rowk, colk, valid_k, stride_gvh, stride_gvw, stride_gvd, DV, BLOCK_DV).to(tl.float32)
    store_tile(dk, dk_acc, rowk, colk, valid_k, stride_gh, stride_gw, stride_gd, DQK, BLOCK_DQK)
    store_tile(dv, dv_acc, rowk, colk, valid_k, stride_gvh, stride_gvw, stride_gvd, DV, BLOCK_DV)


# --------------------------------------------------------------------------------------------------------
# Launch plans.


def _launches(partition: str, h: int, w: int, wh: int, ww: int):
    """(groups per column, per row) and, per partition to run in order, (row_a, row_i, col_c, col_j, accumulate)."""
    gh, gw = triton.cdiv(h, wh), triton.cdiv(w, ww)
    plans = []
    if partition in ("window", "both"):
        plans.append((wh, 1, ww, 1))
    if partition in ("grid", "both"):
        plans.append((1, gh, 1, gw))
    return gh, gw, [(*plan, i > 0) for i, plan in enumerate(plans)]


def _blocks(n: int) -> tuple[int, int]:
    """(BLOCK_M, BLOCK_N): all of a group's keys in one tile, queries in blocks of up to 64 (32 for 128 keys,
    keeping the backward's (BLOCK_M, BLOCK_N) fp32 tiles at 4K elements)."""
    block_n = dot_block(n)
    return min(block_n, 64 if block_n <= 64 else 32), block_n


def _num_warps(block_n: int, block_dv: int) -> int:
    # The (BLOCK_N, Dv) fp32 dv accumulator of the backward is the largest live tile.
    return 8 if block_n * block_dv > 8192 else 4


@dataclasses.dataclass(frozen=True)
class GridPlan:
    """Tiles and launch options of the forward and backward kernels; ``upcast_dot`` / ``dot_precision`` see
    :func:`ops._plans.dot_options`."""

    blocks: tuple[int, int]
    block_dqk: int
    block_dv: int
    fwd: KernelPlan
    bwd: KernelPlan
    upcast_dot: bool
    dot_precision: str


def launch_plan(target: Target, dtype: torch.dtype, d_qk: int, d_v: int, n: int) -> GridPlan:
    """The launch plan for groups of ``n`` tokens with ``d_qk`` / ``d_v`` channels per head."""
    upcast_dot, dot_precision = dot_options(dtype, target)
    block_m, block_n = _blocks(n)
    if dtype == torch.float32 and not target.interpret:
        # FMA dots hold whole operand tiles in registers: EMOv2's (64, 64) tiles collapse to 32 registers with
        # 9-21 KB of spill per thread (forward and backward, sm_80); 16 queries per tile spill nothing. TF32 dots'
        # fp32 operands: the (64, 64) backward at Dv 128 spills 2.5 KB and needs 96 KB of shared memory.
        block_m = 16
    block_dv = dot_block(d_v)
    warps = _num_warps(block_n, block_dv)
    if not target.interpret and block_n * block_dv >= 8192:
        # EMOv2's (64, 64) tiles at Dv 128 spill 8-64 B per thread in the bf16 forward at 4 warps.
        warps = 8
    if exact_fp32(dtype) and not target.interpret:
        # FMA dots, the forward's whole-group key tile (EMOv2's 10 x 10 seg windows: 128 keys) at Dv 128: 8 warps
        # spill 4.1-5.4 KB per thread, 4 warps 10.7 KB, 16 warps at most 3.2 KB (ptxas, sm_80 / sm_90, every
        # EMOv2 model and recipe).
        warps = 16
    # The kernels hold a group's keys in one tile: no loop to pipeline. The backward spills at 4 warps (FMA dots,
    # exact fp32: KBs; bf16 on sm_80: 56-392 B per thread at EMOv2's (64, 64) tiles); 8 warps: bf16 0 B at Dv 64,
    # 68 B at Dv 128 (ptxas).
    bwd_warps = 8 if not target.interpret else warps
    return GridPlan((block_m, block_n), dot_block(d_qk), block_dv, KernelPlan(warps, 1),
                    KernelPlan(bwd_warps, 1), upcast_dot, dot_precision)


# --------------------------------------------------------------------------------------------------------
# Custom ops.


def _forward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, wh: int, ww: int, partition: str, scale: float,
) -> torch.Tensor:
    """``out`` (B, H, W, heads, Dv) in q's dtype."""
    batch, h, w, heads, d_qk = q.shape
    d_v = v.shape[-1]
    out = empty(batch, h, w, heads, d_v, device=q.device, dtype=q.dtype)
    if out.numel() == 0:
        return out
    gh, gw, plans = _launches(partition, h, w, wh, ww)
    n = wh * ww
    plan = launch_plan(device_target(q.device), q.dtype, d_qk, d_v, n)
    block_m, block_n = plan.blocks
    grid = (batch * gh * gw * heads, triton.cdiv(n, block_m))
    with on_device(q):
        for row_a, row_i, col_c, col_j, accumulate in plans:
            launch(
                window_grid_attention_fwd_kernel, grid,
                q, k, v, out, *q.stride(), *k.stride(), *v.stride(), *out.stride(),
                scale * 1.4426950408889634, h, w, heads, gh, gw, row_a, row_i, col_c, col_j, d_qk, d_v,
                WW=ww, N=n, ACCUMULATE=accumulate, BLOCK_M=block_m, BLOCK_N=block_n,
                BLOCK_DQK=plan.block_dqk, BLOCK_DV=plan.block_dv, UPCAST_DOT=plan.upcast_dot,
                DOT_PRECISION=plan.dot_precision, plan=plan.fwd,
            )
    return out


def _forward_fake(q, k, v, wh, ww, partition, scale):
    return q.new_empty((*q.shape[:-1], v.shape[-1]))


def _backward(
    do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, wh: int, ww: int, partition: str,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv), contiguous, in q's dtype."""
    batch, h, w, heads, d_qk = q.shape
    d_v = v.shape[-1]
    dq, dk = (empty(batch, h, w, heads, d_qk, device=q.device, dtype=q.dtype) for _ in range(2))
    dv = empty(batch, h, w, heads, d_v, device=q.device, dtype=q.dtype)
    if q.numel() == 0:
        return dq, dk, dv
    gh, gw, plans = _launches(partition, h, w, wh, ww)
    n = wh * ww
    plan = launch_plan(device_target(q.device), q.dtype, d_qk, d_v, n)
    block_m, block_n = plan.blocks
    with on_device(q):
        for row_a, row_i, col_c, col_j, accumulate in plans:
            launch(
                window_grid_attention_bwd_kernel, (batch * gh * gw * heads,),
                q, k, v, do, dq, dk, dv,
                *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dq.stride(), *dv.stride(),
                scale * 1.4426950408889634, scale, h, w, heads, gh, gw, row_a, row_i, col_c, col_j, d_qk, d_v,
                WW=ww, N=n, ACCUMULATE=accumulate, BLOCK_M=block_m, BLOCK_N=block_n,
                BLOCK_DQK=plan.block_dqk, BLOCK_DV=plan.block_dv, UPCAST_DOT=plan.upcast_dot,
                DOT_PRECISION=plan.dot_precision, plan=plan.bwd,
            )
    return dq, dk, dv


def _backward_fake(do, q, k, v, wh, ww, partition, scale):
    return q.new_empty(q.shape), q.new_empty(q.shape), q.new_empty((*q.shape[:-1], v.shape[-1]))


def _backward_args(d_out, inputs, outputs, needs_grad):
    q, k, v, wh, ww, partition, scale = inputs
    return d_out, q, k, v, wh, ww, partition, scale


window_grid_attention_fwd, window_grid_attention_bwd = register_fwd_bwd(
    "window_grid_attention", _forward, _forward_fake, _backward, _backward_fake, _backward_args, save_out=False,
)


def window_grid_attention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window: tuple[int, int],
    partition: str = "both",
    scale: float | None = None,
) -> torch.Tensor:
    """Triton backend of :func:`ops.window_grid_attention.window_grid_attention` (arguments checked there)."""
    check_triton_dtype("window_grid_attention", q)
    if window[0] * window[1] > MAX_GROUP_TOKENS:
        raise ValueError(
            f"window_grid_attention: backend 'triton' keeps a group's keys in one tile, at most {MAX_GROUP_TOKENS} "
            f"tokens; window {window[0]}x{window[1]} has {window[0] * window[1]}; use backend='reference'"
        )
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    return window_grid_attention_fwd(q, k, v, int(window[0]), int(window[1]), partition, float(scale))
