"""Overlapping window attention (HAT's OCAB) in Triton: fused forward and backward kernels, registered as custom ops.

Math, per batch ``b``, window ``w`` and head ``h``, over the ``Nq = wh * ww`` queries of the window and the
``Nk = kh * kw`` keys of its key window (semantics exactly those of
:mod:`ops.overlapping_window_attention.reference`; keys outside the map are zero tokens, not masked)::

    S     = scale * q k^T + table[h, ky - qy + wh - 1, kx - qx + ww - 1]      (Nq, Nk)
    P     = softmax(S);   out = P v;   lse = logsumexp(S)        (lse saved for the backward, fp32)
    dv    = P^T dO;       dP = dO v^T;   dS = P * (dP - delta),   delta = rowsum(dO * out)
    dq    = scale dS k;   dk = scale dS^T q   (summed over every window whose key window holds the key)
    dtable[h, i, j] = sum of dS over every (b, w, query, key) pair at table entry (i, j)

Kernel design
-------------
Windows are addressed in-kernel, as in :mod:`ops.window_attention.triton`: a query-window index ``n`` is pixel
``(wy * wh + n // ww, wx * ww + n % ww)``, a key-window index ``n`` is pixel
``(wy * wh - ph + n // kw, wx * ww - pw + n % kw)`` with ``ph = (kh - wh) / 2``, ``pw = (kw - ww) / 2``, read
through the strides of the ``(B, H, W, heads, D)`` tensors (usually ``unbind`` views of one qkv tensor): no
``nn.Unfold`` copy of the keys and values (2.25 x their size for HAT's 16 / 24 windows) is ever made. Key
pixels outside the map load as zeros and still take part (score = bias); key-window indices beyond ``Nk``
(block padding) are -inf. Address arithmetic is int64.

* Forward (``overlapping_window_attention_fwd_kernel``): one program per (b, window, head, block of BLOCK_M
  queries), FlashAttention-style online softmax over blocks of BLOCK_N keys of the key window (HAT: 256
  queries x 576 keys = 4 x 9 tiles of 64 x 64).
* Backward, dk / dv (``overlapping_window_attention_bwd_dkdv_kernel``): one program per (chunk of windows,
  head, block of BLOCK_N keys); the query tile covers the whole window (up to 256 tokens), so one pass finishes
  the key block's dk and dv for that window, with P recomputed from the saved lse and delta = rowsum(dO * out)
  recomputed per tile (no preprocessing kernel). A key pixel belongs to up to four key windows (HAT: the
  8-pixel overlaps), so dk and dv are added with fp32 atomics into fp32 buffers, cast to the input dtype at
  the end. d(table) is summed over the chunk's windows in registers (its index depends only on the
  window-local positions) and scattered once per program with fp32 atomics.
* Backward, dq (``overlapping_window_attention_bwd_dq_kernel``): one program per (b, window, head, query
  block) looping over the key blocks (the FlashAttention-2 split: no atomics, deterministic).

Precision: fp32 accumulation everywhere; as in FlashAttention the operands of every ``tl.dot`` are in the input
dtype (P and dS are rounded to it first). fp32 inputs use IEEE fp32 dots (no TF32).

Determinism: out and dq are deterministic; dk, dv (up to four addends per pixel) and d(table) use fp32 atomics,
so on a GPU their last bits can vary from run to run.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch
import triton
import triton.language as tl

from ops._backend import empty
from ops._checks import check_triton_dtype
from ops._custom_op import optional_grad_fake, register_fwd_bwd
from ops._plans import KernelPlan, Target, device_target, dot_options, exact_fp32, launch
from ops._triton_utils import (
    LN2, LOG2E, atomic_add_tile, dot, dot_block, load_tile, lse_offsets, on_device, online_softmax_step, store_tile,
)

__all__ = ["overlapping_window_attention_triton"]

# The dk / dv kernel keeps all queries of a window in one tile up to this many (HAT's 16 x 16 windows).
_MAX_QUERY_TILE = 256
_PROGRAMS_PER_SM = 4
_MAX_WINDOWS_PER_PROGRAM = 16


@triton.jit
def _window_of(i_bw, NW, NWW):
    """(batch, window row, window column) of flat window ``i_bw`` over (B, nW)."""
    i_w = i_bw % NW
    return i_bw // NW, i_w // NWW, i_w % NWW


@triton.jit
def _query_positions(offs, wy, wx, H, W, WH: tl.constexpr, WW: tl.constexpr):
    """Query-window indices -> (y, x) in the window, map rows / cols (int64), whether the query exists."""
    y = offs // WW
    x = offs % WW
    row = wy * WH + y
    col = wx * WW + x
    valid = (offs < WH * WW) & (row < H) & (col < W)
    return y, x, row.to(tl.int64), col.to(tl.int64), valid


@triton.jit
def _key_positions(offs, wy, wx, H, W, WH: tl.constexpr, WW: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr):
    """Key-window indices -> (y, x) in the key window, map rows / cols (int64), in the key window, inside the map."""
    y = offs // KW
    x = offs % KW
    row = wy * WH - (KH - WH) // 2 + y
    col = wx * WW - (KW - WW) // 2 + x
    in_win = offs < KH * KW
    in_map = in_win & (row >= 0) & (row < H) & (col >= 0) & (col < W)
    return y, x, row.to(tl.int64), col.to(tl.int64), in_win, in_map


@triton.jit
def _scores(q, k, yq, xq, valid_q, yk, xk, in_win, bias, stride_bias_y, stride_bias_x, qk_scale,
            WH: tl.constexpr, WW: tl.constexpr, HAS_BIAS: tl.constexpr,
            UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """log2(e) * (scale q k^T + bias) for a (queries, keys) tile; -inf beyond the key window (block padding only:
    keys outside the map are zero tokens, k = 0, and keep their bias)."""
    s = dot(q, tl.trans(k), UPCAST_DOT, DOT_PRECISION) * qk_scale
    if HAS_BIAS:
        rel = (yk[None, :] - yq[:, None] + WH - 1) * stride_bias_y \
            + (xk[None, :] - xq[:, None] + WW - 1) * stride_bias_x
        s += tl.load(bias + rel, mask=valid_q[:, None] & in_win[None, :], other=0.0).to(tl.float32) * LOG2E
    return tl.where(in_win[None, :], s, float("-inf"))


@triton.jit
def _query_side(q, out, do, lse, i_b, i_h, row, col, valid, H, W, NH,
                stride_qh, stride_qw, stride_qd, stride_oh, stride_ow, stride_od,
                stride_doh, stride_dow, stride_dod, D, BLOCK_D: tl.constexpr):
    """q, dO (in q's dtype), lse in log2 units and delta = rowsum(dO * out) (fp32) for a block of queries."""
    q_t = load_tile(q, row, col, valid, stride_qh, stride_qw, stride_qd, D, BLOCK_D)
    do_t = load_tile(do, row, col, valid, stride_doh, stride_dow, stride_dod, D, BLOCK_D)
    o_t = load_tile(out, row, col, valid, stride_oh, stride_ow, stride_od, D, BLOCK_D)
    delta = tl.sum(do_t.to(tl.float32) * o_t.to(tl.float32), axis=1)
    # +inf at missing queries makes their probabilities exactly 0, so they add to no gradient.
    lse2 = tl.load(lse + lse_offsets(i_b, i_h, row, col, H, W, NH), mask=valid, other=float("inf")) * LOG2E
    return q_t, do_t.to(q_t.dtype), lse2, delta


@triton.jit
def _scatter_bias_grad(dbias, ds, offs_q, offs_k, i_h, WH: tl.constexpr, WW: tl.constexpr,
                       KH: tl.constexpr, KW: tl.constexpr):
    # dS is exactly 0 at missing queries and beyond the key window; only indices outside the windows are kept out.
    rel = ((offs_k // KW)[None, :] - (offs_q // WW)[:, None] + WH - 1) * (WW + KW - 1) \
        + ((offs_k % KW)[None, :] - (offs_q % WW)[:, None] + WW - 1)
    inside = (offs_q[:, None] < WH * WW) & (offs_k[None, :] < KH * KW)
    tl.atomic_add(dbias + i_h * (WH + KH - 1) * (WW + KW - 1) + rel, ds, mask=inside)


@triton.jit
def overlapping_window_attention_fwd_kernel(
    q, k, v, bias, out, lse,
    stride_qb, stride_qh, stride_qw, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kw, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vw, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_ow, stride_on, stride_od,
    stride_bias_n, stride_bias_y, stride_bias_x,
    qk_scale, H, W, NH, NW, NWW, D,
    WH: tl.constexpr, WW: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """out and lse for one block of queries of one (b, window, head)."""
    pid = tl.program_id(0)
    i_h = pid % NH
    i_b, wy, wx = _window_of(pid // NH, NW, NWW)
    i_b64 = i_b.to(tl.int64)
    q += i_b64 * stride_qb + i_h * stride_qn
    k += i_b64 * stride_kb + i_h * stride_kn
    v += i_b64 * stride_vb + i_h * stride_vn
    out += i_b64 * stride_ob + i_h * stride_on
    bias += i_h * stride_bias_n

    offs_q = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    yq, xq, rowq, colq, valid_q = _query_positions(offs_q, wy, wx, H, W, WH, WW)
    q_t = load_tile(q, rowq, colq, valid_q, stride_qh, stride_qw, stride_qd, D, BLOCK_D)

    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    for n0 in range(0, KH * KW, BLOCK_N):
        offs_k = n0 + tl.arange(0, BLOCK_N)
        yk, xk, rowk, colk, in_win, in_map = _key_positions(offs_k, wy, wx, H, W, WH, WW, KH, KW)
        k_t = load_tile(k, rowk, colk, in_map, stride_kh, stride_kw, stride_kd, D, BLOCK_D)
        v_t = load_tile(v, rowk, colk, in_map, stride_vh, stride_vw, stride_vd, D, BLOCK_D)
        s = _scores(q_t, k_t, yq, xq, valid_q, yk, xk, in_win, bias, stride_bias_y, stride_bias_x, qk_scale,
                    WH, WW, HAS_BIAS, UPCAST_DOT, DOT_PRECISION)
        m_i, l_i, acc = online_softmax_step(m_i, l_i, acc, s, v_t, UPCAST_DOT, DOT_PRECISION)

    store_tile(out, acc / l_i[:, None], rowq, colq, valid_q, stride_oh, stride_ow, stride_od, D, BLOCK_D)
    tl.store(lse + lse_offsets(i_b, i_h, rowq, colq, H, W, NH), (m_i + tl.log2(l_i)) * LN2, mask=valid_q)


@triton.jit
def overlapping_window_attention_bwd_dkdv_kernel(
    q, k, v, out, do, lse, bias, dk, dv, dbias,
    stride_qb, stride_qh, stride_qw, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kw, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vw, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_dow, stride_don, stride_dod,
    stride_ob, stride_oh, stride_ow, stride_on, stride_od,
    stride_bias_n, stride_bias_y, stride_bias_x,
    qk_scale, scale, H, W, NH, NW, NWW, D, num_windows, windows_per_program,
    WH: tl.constexpr, WW: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr, HAS_BIAS: tl.constexpr,
    BIAS_GRAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """dk, dv of one key block for each window of a chunk of one head (atomically added: key windows overlap);
    d(table) of the chunk. dk, dv, out share strides (contiguous (B, H, W, heads, D))."""
    pid = tl.program_id(0)
    i_h = pid % NH
    bw_start = (pid // NH) * windows_per_program
    bw_end = tl.minimum(bw_start + windows_per_program, num_windows)
    bias += i_h * stride_bias_n
    offs_k = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    # dS summed over the chunk's windows; used when one query block covers the window (BLOCK_M >= Nq).
    ds_acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)

    for i_bw in range(bw_start, bw_end):
        i_b, wy, wx = _window_of(i_bw, NW, NWW)
        i_b64 = i_b.to(tl.int64)
        q_b = q + i_b64 * stride_qb + i_h * stride_qn
        k_b = k + i_b64 * stride_kb + i_h * stride_kn
        v_b = v + i_b64 * stride_vb + i_h * stride_vn
        do_b = do + i_b64 * stride_dob + i_h * stride_don
        o_off = i_b64 * stride_ob + i_h * stride_on

        yk, xk, rowk, colk, in_win, in_map = _key_positions(offs_k, wy, wx, H, W, WH, WW, KH, KW)
        k_t = load_tile(k_b, rowk, colk, in_map, stride_kh, stride_kw, stride_kd, D, BLOCK_D)
        v_t = load_tile(v_b, rowk, colk, in_map, stride_vh, stride_vw, stride_vd, D, BLOCK_D)
        dk_acc = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
        dv_acc = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
        for m0 in range(0, WH * WW, BLOCK_M):
            offs_q = m0 + tl.arange(0, BLOCK_M)
            yq, xq, rowq, colq, valid_q = _query_positions(offs_q, wy, wx, H, W, WH, WW)
            q_t, do_t, lse2, delta = _query_side(
                q_b, out + o_off, do_b, lse, i_b, i_h, rowq, colq, valid_q, H, W, NH,
                stride_qh, stride_qw, stride_qd, stride_oh, stride_ow, stride_od,
                stride_doh, stride_dow, stride_dod, D, BLOCK_D)
            s = _scores(q_t, k_t, yq, xq, valid_q, yk, xk, in_win, bias, stride_bias_y, stride_bias_x, qk_scale,
                        WH, WW, HAS_BIAS, UPCAST_DOT, DOT_PRECISION)
            p = tl.exp2(s - lse2[:, None])
            dp = dot(do_t, tl.trans(v_t), UPCAST_DOT, DOT_PRECISION)
            ds = p * (dp - delta[:, None])
            dv_acc += dot(tl.trans(p.to(do_t.dtype)), do_t, UPCAST_DOT, DOT_PRECISION)
            dk_acc += dot(tl.trans(ds.to(q_t.dtype)), q_t, UPCAST_DOT, DOT_PRECISION)
            if BIAS_GRAD:
                if BLOCK_M >= WH * WW:
                    ds_acc += ds
                else:
                    _scatter_bias_grad(dbias, ds, offs_q, offs_k, i_h, WH, WW, KH, KW)
        # Keys outside the map are constants (zero padding): nothing is stored for them.
        atomic_add_tile(dk + o_off, dk_acc * scale, rowk, colk, in_map, stride_oh, stride_ow, stride_od, D, BLOCK_D)
        atomic_add_tile(dv + o_off, dv_acc, rowk, colk, in_map, stride_oh, stride_ow, stride_od, D, BLOCK_D)

    if BIAS_GRAD:
        if BLOCK_M >= WH * WW:
            _scatter_bias_grad(dbias, ds_acc, tl.arange(0, BLOCK_M), offs_k, i_h, WH, WW, KH, KW)


@triton.jit
def overlapping_window_attention_bwd_dq_kernel(
    q, k, v, out, do, lse, bias, dq,
    stride_qb, stride_qh, stride_qw, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kw, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vw, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_dow, stride_don, stride_dod,
    stride_ob, stride_oh, stride_ow, stride_on, stride_od,
    stride_bias_n, stride_bias_y, stride_bias_x,
    qk_scale, scale, H, W, NH, NW, NWW, D,
    WH: tl.constexpr, WW: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """dq of one block of queries of one (b, window, head). dq and out share strides."""
    pid = tl.program_id(0)
    i_h = pid % NH
    i_b, wy, wx = _window_of(pid // NH, NW, NWW)
    i_b64 = i_b.to(tl.int64)
    q += i_b64 * stride_qb + i_h * stride_qn
    k += i_b64 * stride_kb + i_h * stride_kn
    v += i_b64 * stride_vb + i_h * stride_vn
    do += i_b64 * stride_dob + i_h * stride_don
    o_off = i_b64 * stride_ob + i_h * stride_on
    bias += i_h * stride_bias_n

    offs_q = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    yq, xq, rowq, colq, valid_q = _query_positions(offs_q, wy, wx, H, W, WH, WW)
    q_t, do_t, lse2, delta = _query_side(
        q, out + o_off, do, lse, i_b, i_h, rowq, colq, valid_q, H, W, NH,
        stride_qh, stride_qw, stride_qd, stride_oh, stride_ow, stride_od,
        stride_doh, stride_dow, stride_dod, D, BLOCK_D)
    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    for n0 in range(0, KH * KW, BLOCK_N):
        offs_k = n0 + tl.arange(0, BLOCK_N)
        yk, xk, rowk, colk, in_win, in_map = _key_positions(offs_k, wy, wx, H, W, WH, WW, KH, KW)
        k_t = load_tile(k, rowk, colk, in_map, stride_kh, stride_kw, stride_kd, D, BLOCK_D)
        v_t = load_tile(v, rowk, colk, in_map, stride_vh, stride_vw, stride_vd, D, BLOCK_D)
        s = _scores(q_t, k_t, yq, xq, valid_q, yk, xk, in_win, bias, stride_bias_y, stride_bias_x, qk_scale,
                    WH, WW, HAS_BIAS, UPCAST_DOT, DOT_PRECISION)
        p = tl.exp2(s - lse2[:, None])
        dp = dot(do_t, tl.trans(v_t), UPCAST_DOT, DOT_PRECISION)
        acc += dot((p * (dp - delta[:, None])).to(q_t.dtype), k_t, UPCAST_DOT, DOT_PRECISION)
    store_tile(dq + o_off, acc * scale, rowq, colq, valid_q, stride_oh, stride_ow, stride_od, D, BLOCK_D)


# --------------------------------------------------------------------------------------------------------
# Launch plans.


def _fwd_blocks(nq: int, nk: int) -> tuple[int, int]:
    """(BLOCK_M, BLOCK_N) of the forward and the dq kernel: 64 x 64 tiles at most."""
    return min(64, dot_block(nq)), min(64, dot_block(nk))


def _bwd_blocks(nq: int, nk: int) -> tuple[int, int]:
    """(BLOCK_M, BLOCK_N) of the dk / dv kernel: all queries of the window (up to 256), keys to ~4K-element tiles."""
    block_m = min(_MAX_QUERY_TILE, dot_block(nq))
    return block_m, min(dot_block(nk), max(16, 4096 // block_m))


def _windows_per_program(num_windows: int, heads: int, key_blocks: int, target: Target) -> int:
    """Length of the dk / dv kernel's window chunks: as long as possible while every SM still gets a few programs."""
    if target.interpret:
        # The interpreter runs programs one after another; a length that rarely divides the window count
        # exercises the loop and a short last chunk.
        return 3
    per_program = (num_windows * heads * key_blocks) // (_PROGRAMS_PER_SM * target.sms)
    return max(1, min(_MAX_WINDOWS_PER_PROGRAM, per_program))


def _num_warps(block_m: int, block_n: int) -> int:
    # The same rule as window_attention's.
    return 8 if block_m * block_n > 4096 or block_m >= 256 else 4


@dataclasses.dataclass(frozen=True)
class OverlappingWindowPlan:
    """Tiles and launch options of the three kernels; ``upcast_dot`` / ``dot_precision`` see
    :func:`ops._plans.dot_options`."""

    fwd_blocks: tuple[int, int]
    dkdv_blocks: tuple[int, int]
    dq_blocks: tuple[int, int]
    block_d: int
    windows_per_program: int
    fwd: KernelPlan
    dkdv: KernelPlan
    dq: KernelPlan
    upcast_dot: bool
    dot_precision: str


def launch_plan(target: Target, dtype: torch.dtype, head_dim: int, nq: int, nk: int, num_windows: int,
                heads: int) -> OverlappingWindowPlan:
    """The launch plan for ``nq``-query windows over ``nk``-key windows (``num_windows`` over the batch)."""
    upcast_dot, dot_precision = dot_options(dtype, target)
    fwd_blocks, dkdv_blocks = _fwd_blocks(nq, nk), _bwd_blocks(nq, nk)
    exact = exact_fp32(dtype) and not target.interpret
    if exact:
        # As window_attention's: FMA dots keep 64 queries per dk / dv tile, not the whole window.
        dkdv_blocks = (min(64, dkdv_blocks[0]), dkdv_blocks[1])
    elif not target.interpret:
        # HAT's OCAB (256 queries, 576 keys), bf16, ptxas on sm_80: (256, 16) tiles at 8 warps spill 752 B per
        # thread, (128, 16) 16 B, (128, 32) and (64, 32) none.
        dkdv_blocks = (min(128, dkdv_blocks[0]), min(dot_block(nk), 32))
    per_program = _windows_per_program(num_windows, heads, triton.cdiv(nk, dkdv_blocks[1]), target)
    # The forward and dq kernels stream the key window (576 keys for HAT's OCAB); the dk / dv loop is short.
    stream_stages = 1 if exact else 2
    # (64, 64) forward tiles spill 16-40 B per thread at 4 warps in bf16 (sm_80, sm_90), none at 8.
    stream_warps = 8 if not target.interpret and fwd_blocks[0] * fwd_blocks[1] >= 4096 else _num_warps(*fwd_blocks)
    return OverlappingWindowPlan(
        fwd_blocks, dkdv_blocks, fwd_blocks, dot_block(head_dim), per_program,
        KernelPlan(stream_warps, stream_stages), KernelPlan(8 if not target.interpret else 4, 1),
        KernelPlan(stream_warps, stream_stages), upcast_dot, dot_precision,
    )


def _bias_args(q: torch.Tensor, bias_table: Optional[torch.Tensor]):
    # An absent table is never read (HAS_BIAS is False); q stands in as a valid pointer.
    return (bias_table, bias_table.stride()) if bias_table is not None else (q, (0, 0, 0))


# --------------------------------------------------------------------------------------------------------
# Custom ops.


def _forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    wh: int,
    ww: int,
    kh: int,
    kw: int,
    bias_table: Optional[torch.Tensor],
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``out`` (B, H, W, heads, D) in q's dtype and ``lse`` (B, H, W, heads) fp32 (natural log) for the backward."""
    batch, h, w, heads, head_dim = q.shape
    out = empty(batch, h, w, heads, head_dim, device=q.device, dtype=q.dtype)
    lse = empty(batch, h, w, heads, device=q.device, dtype=torch.float32)
    if q.numel() == 0:
        return out, lse
    nww = triton.cdiv(w, ww)
    nw = triton.cdiv(h, wh) * nww
    plan = launch_plan(device_target(q.device), q.dtype, head_dim, wh * ww, kh * kw, batch * nw, heads)
    block_m, block_n = plan.fwd_blocks
    bias_ptr, bias_strides = _bias_args(q, bias_table)
    grid = (batch * nw * heads, triton.cdiv(wh * ww, block_m))
    with on_device(q):
        launch(
            overlapping_window_attention_fwd_kernel, grid,
            q, k, v, bias_ptr, out, lse,
            *q.stride(), *k.stride(), *v.stride(), *out.stride(), *bias_strides,
            scale * 1.4426950408889634, h, w, heads, nw, nww, head_dim,
            WH=wh, WW=ww, KH=kh, KW=kw, HAS_BIAS=bias_table is not None,
            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=plan.block_d,
            UPCAST_DOT=plan.upcast_dot, DOT_PRECISION=plan.dot_precision, plan=plan.fwd,
        )
    return out, lse


def _forward_fake(q, k, v, wh, ww, kh, kw, bias_table, scale):
    return q.new_empty(q.shape), q.new_empty(q.shape[:-1], dtype=torch.float32)


def _backward(
    do: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    wh: int,
    ww: int,
    kh: int,
    kw: int,
    bias_table: Optional[torch.Tensor],
    scale: float,
    bias_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv) contiguous in q's dtype, and d(bias_table) in its dtype (an empty tensor unless bias_grad)."""
    batch, h, w, heads, head_dim = q.shape
    dq = empty(batch, h, w, heads, head_dim, device=q.device, dtype=q.dtype)
    # Zeros, not NaN: atomic adds accumulate into these (fp32, cast at the end).
    dk32, dv32 = (torch.zeros(batch, h, w, heads, head_dim, device=q.device, dtype=torch.float32) for _ in range(2))
    bias_grad = bias_grad and bias_table is not None
    dbias = torch.zeros(bias_table.shape if bias_grad else (0,), device=q.device, dtype=torch.float32)
    if q.numel() == 0:
        return dq, dk32.to(q.dtype), dv32.to(q.dtype), dbias.to(bias_table.dtype) if bias_grad else dbias
    # The kernels address out, dq, dk and dv with one set of strides (dq's): out and lse come from the forward op,
    # contiguous, unless a graph transform handed back equal tensors in another layout.
    out, lse = out.contiguous(), lse.contiguous()
    nww = triton.cdiv(w, ww)
    nw = triton.cdiv(h, wh) * nww
    num_windows = batch * nw
    nq, nk = wh * ww, kh * kw
    plan = launch_plan(device_target(q.device), q.dtype, head_dim, nq, nk, num_windows, heads)
    bias_ptr, bias_strides = _bias_args(q, bias_table)
    strides = (*q.stride(), *k.stride(), *v.stride(), *do.stride(), *dq.stride(), *bias_strides)
    common = dict(WH=wh, WW=ww, KH=kh, KW=kw, HAS_BIAS=bias_table is not None, BLOCK_D=plan.block_d,
                  UPCAST_DOT=plan.upcast_dot, DOT_PRECISION=plan.dot_precision)
    block_m, block_n = plan.dkdv_blocks
    key_blocks = triton.cdiv(nk, block_n)
    per_program = plan.windows_per_program
    with on_device(q):
        launch(
            overlapping_window_attention_bwd_dkdv_kernel, (triton.cdiv(num_windows, per_program) * heads, key_blocks),
            q, k, v, out, do, lse, bias_ptr, dk32, dv32, dbias if bias_grad else lse, *strides,
            scale * 1.4426950408889634, scale, h, w, heads, nw, nww, head_dim, num_windows, per_program,
            BIAS_GRAD=bias_grad, BLOCK_M=block_m, BLOCK_N=block_n, plan=plan.dkdv, **common,
        )
        dq_m, dq_n = plan.dq_blocks
        launch(
            overlapping_window_attention_bwd_dq_kernel, (num_windows * heads, triton.cdiv(nq, dq_m)),
            q, k, v, out, do, lse, bias_ptr, dq, *strides,
            scale * 1.4426950408889634, scale, h, w, heads, nw, nww, head_dim,
            BLOCK_M=dq_m, BLOCK_N=dq_n, plan=plan.dq, **common,
        )
    return dq, dk32.to(q.dtype), dv32.to(q.dtype), dbias.to(bias_table.dtype) if bias_grad else dbias


def _backward_fake(do, q, k, v, out, lse, wh, ww, kh, kw, bias_table, scale, bias_grad):
    dq, dk, dv = (q.new_empty(q.shape) for _ in range(3))
    return dq, dk, dv, optional_grad_fake(q, bias_table, bias_grad)


def _backward_args(d_out, inputs, outputs, needs_grad):
    q, k, v, wh, ww, kh, kw, bias_table, scale = inputs
    return d_out, q, k, v, *outputs, wh, ww, kh, kw, bias_table, scale, needs_grad[7]


overlapping_window_attention_fwd, overlapping_window_attention_bwd = register_fwd_bwd(
    "overlapping_window_attention", _forward, _forward_fake, _backward, _backward_fake, _backward_args,
)


def overlapping_window_attention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window: tuple[int, int],
    key_window: tuple[int, int],
    bias_table: Optional[torch.Tensor] = None,
    scale: Optional[float] = None,
) -> torch.Tensor:
    """Triton backend of :func:`ops.overlapping_window_attention.overlapping_window_attention` (checked there)."""
    check_triton_dtype("overlapping_window_attention", q)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    out, _ = overlapping_window_attention_fwd(q, k, v, int(window[0]), int(window[1]), int(key_window[0]),
                                              int(key_window[1]), bias_table, float(scale))
    return out
