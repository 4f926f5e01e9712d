"""Window attention (Swin, DaViT, HAT, ...) in Triton: fused forward and backward kernels, registered as custom ops.

Math, per batch ``b``, window ``w`` and head ``h`` over the ``N = wh * ww`` row-major positions of the window
(semantics exactly those of :mod:`ops.window_attention.reference`)::

    S     = scale * q k^T + table[h, yq - yk + wh - 1, xq - xk + ww - 1] + mask[w]   (-inf at missing keys)
    P     = softmax(S);   out = P v;   lse = logsumexp(S)        (lse saved for the backward, fp32)
    dv    = P^T dO;       dP = dO v^T;   dS = P * (dP - delta),   delta = rowsum(P * dP) = rowsum(dO * out)
    dq    = scale dS k;   dk = scale dS^T q;   dtable[h, dy, dx] = sum of dS over every (b, w, query, key)
                                                                   pair at offset (dy, dx)

Kernel design
-------------
Windows are addressed in-kernel: a window-local index ``n`` is position ``(n // ww, n % ww)`` of window
``(wy, wx)``, i.e. map pixel ``(wy * wh + n // ww, wx * ww + n % ww)``, read through the strides of the
``(B, H, W, heads, D)`` tensors (q, k, v are usually ``unbind`` views of one qkv tensor, so no
window-partition copy and no contiguity is needed). Pixels beyond the map (partial windows at the right /
bottom) are masked: never loaded as keys, never stored as outputs. All address arithmetic is int64. Scores
exist only in registers; the relative-position bias is gathered from the small table by ``(dy, dx)`` (it
stays in L1/L2), the additive mask is read per window, both as ``(queries, keys)`` tiles. The mask,
(nW, N, N), is read once per (batch, head): from L2 after the first, as neighbouring programs share it.

* Forward (``window_attention_fwd_kernel``): one program per (b, window, head, block of BLOCK_M queries),
  FlashAttention-style online softmax over blocks of BLOCK_N keys, so any window size works (16 x 16 = 256
  tokens is 4 key blocks of 64). Traffic: q, k, v read once per query block (once in total for windows of
  up to 64 tokens), out and lse written once.
* Backward (``window_attention_bwd_kernel``): one program per (chunk of windows, head, block of BLOCK_N
  keys). The query tile covers the whole window (up to 256 tokens), so one pass over the window's queries
  finishes dk and dv of the key block, with P recomputed from the saved lse (no preprocessing kernel, no
  delta buffer). When one key block holds the whole window (up to 64 tokens: Swin / DaViT 7x7, 8x8), the
  tile is the whole (N, N) score matrix: delta = rowsum(P * dP) comes from it in fp32, dq is written by the
  same program, and the whole backward is one launch reading q, k, v and dO once (out is not read). Larger
  windows take delta = rowsum(dO * out) (FlashAttention's form, recomputed per key block from L2-resident
  tiles) and get dq from ``window_attention_bwd_dq_kernel``: one program per query block looping over the
  key blocks, recomputing S, P and dP (the FlashAttention-2 split: deterministic, no fp32 dq buffer, no
  atomics). Recomputing rather than storing P keeps the backward's memory O(tokens), not O(tokens * N).
* d(table): dS summed over windows is what the table needs, but binning an (N, N) tile into the
  (2wh-1) x (2ww-1) offsets is a scatter. Each backward program therefore sums dS in registers over its
  chunk of windows (a chunk is ``windows_per_program`` consecutive (b, window) pairs of one head; mask and
  partial windows only change dS's values, not where it goes), then scatters once with fp32 atomic adds into
  an fp32 (heads, 2wh-1, 2ww-1) buffer, cast to the table's dtype at the end. Chunks divide the atomic
  traffic by their length while keeping a few programs per SM (:func:`_windows_per_program`). Windows of
  more than 256 tokens (several query blocks per window) fall back to one atomic scatter per tile.

Precision: fp32 accumulation everywhere. As in FlashAttention, the operands of every ``tl.dot`` are in the
input dtype: q k^T and dO v^T are exact products; P (for P v and P^T dO) and dS (for dq, dk) are rounded to
the input dtype first, which keeps fp16/bf16 on tensor cores at a cost of about one output ulp. The softmax
statistics, delta, dS for the table gradient and all accumulators are fp32. The table gradient sums dS over
every row of every window, and a row of dS sums to 0 only with an exact delta: rowsum(P * dP) keeps it at
fp32 accuracy; rowsum(dO * out) (windows over 64 tokens) goes through the rounded output and costs it about
one ulp of the input dtype, as for dq and dk. fp32 inputs use IEEE fp32 dots (no TF32), so fp32 means fp32
as in the reference. Softmax runs in base 2 with log2(e) folded into the scale; lse is stored in natural-log
units.

Determinism: out, dq, dk, dv are deterministic. d(table) uses fp32 atomics, so on a GPU its summation order
(and last bits) can vary from run to run.
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
    LN2, LOG2E, dot, dot_block, load_tile, lse_offsets, on_device, online_softmax_step, store_tile,
)

__all__ = ["window_attention_triton"]

# The backward keeps all queries of a window in one tile up to this many tokens (16 x 16 windows, HAT).
_MAX_QUERY_TILE = 256
# A few resident programs per SM hide one program's load latency behind another's math.
_PROGRAMS_PER_SM = 4
# Longer chunks would cut parallelism for little further saving in atomics.
_MAX_WINDOWS_PER_PROGRAM = 16


# Everything that follows the feature map's size is a runtime argument, and Triton does not specialise it (on
# == 1 or divisibility by 16): the window (WH, WW) -- the whole map for ViT-style global stages and RAVLT's
# softmax stages at segmentation sizes -- the map (H, W) and the window grid. A new image size then compiles
# nothing new unless a window's token count crosses a power of two (the tiles; tests/ops/test_recompiles.py).
_MAP_SIZE_ARGS = ["H", "W", "NW", "NWW", "WH", "WW"]


@triton.jit
def _window_of(i_bw, NW, NWW):
    """(batch, window index, window row, window column) of flat window ``i_bw`` over (B, nW)."""
    i_w = i_bw % NW
    return i_bw // NW, i_w, i_w // NWW, i_w % NWW


@triton.jit
def _valid_end(wy, wx, H, W, WH, WW):
    """One past the last window-local index inside the map: later indices need no loop iteration."""
    rows = tl.minimum(H - wy * WH, WH)
    cols = tl.minimum(W - wx * WW, WW)
    return (rows - 1) * WW + cols


@triton.jit
def _positions(offs, wy, wx, H, W, WH, WW):
    """Window-local row-major indices -> (y, x) in the window, map pixel offsets (int64 rows/cols), validity."""
    y = offs // WW
    x = offs % WW
    row = wy * WH + y
    col = wx * WW + x
    valid = (offs < WH * WW) & (row < H) & (col < W)
    return y, x, row.to(tl.int64), col.to(tl.int64), valid


@triton.jit
def _scores(q, k, offs_q, yq, xq, valid_q, offs_k, yk, xk, valid_k, bias, msk,
            stride_bias_y, stride_bias_x, stride_mask_q, stride_mask_k, qk_scale,
            WH, WW, HAS_BIAS: tl.constexpr, HAS_MASK: tl.constexpr,
            UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """log2(e) * (scale q k^T + bias + mask) for a (queries, keys) tile; -inf at keys outside the map."""
    s = dot(q, tl.trans(k), UPCAST_DOT, DOT_PRECISION) * qk_scale
    both = valid_q[:, None] & valid_k[None, :]
    if HAS_BIAS:
        rel = (yq[:, None] - yk[None, :] + WH - 1) * stride_bias_y \
            + (xq[:, None] - xk[None, :] + WW - 1) * stride_bias_x
        s += tl.load(bias + rel, mask=both, other=0.0).to(tl.float32) * LOG2E
    if HAS_MASK:
        am = tl.load(msk + offs_q[:, None] * stride_mask_q + offs_k[None, :] * stride_mask_k, mask=both, other=0.0)
        s += am.to(tl.float32) * LOG2E
    return tl.where(valid_k[None, :], s, float("-inf"))


@triton.jit
def _probs_and_dp(q, k, v, do, lse2, offs_q, yq, xq, valid_q, offs_k, yk, xk, valid_k, bias, msk,
                  stride_bias_y, stride_bias_x, stride_mask_q, stride_mask_k, qk_scale,
                  WH, WW, HAS_BIAS: tl.constexpr, HAS_MASK: tl.constexpr,
                  UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """P recomputed from the forward's lse, and dP = dO v^T, for a (queries, keys) tile."""
    s = _scores(q, k, offs_q, yq, xq, valid_q, offs_k, yk, xk, valid_k, bias, msk,
                stride_bias_y, stride_bias_x, stride_mask_q, stride_mask_k, qk_scale,
                WH, WW, HAS_BIAS, HAS_MASK, UPCAST_DOT, DOT_PRECISION)
    # +inf lse at missing queries makes their probabilities exactly 0, so they add to no gradient.
    return tl.exp2(s - lse2[:, None]), dot(do, tl.trans(v), UPCAST_DOT, DOT_PRECISION)


@triton.jit
def _load_query_side(q, out, do, lse, i_b, i_h, row, col, valid, H, W, NH,
                     stride_qh, stride_qw, stride_qd, stride_oh, stride_ow, stride_od,
                     stride_doh, stride_dow, stride_dod, D, BLOCK_D: tl.constexpr, DELTA_FROM_OUT: tl.constexpr):
    """q, dO (in q's dtype), lse in log2 units and, if DELTA_FROM_OUT, delta = rowsum(dO * out), for a block
    of queries."""
    q_t = load_tile(q, row, col, valid, stride_qh, stride_qw, stride_qd, D, BLOCK_D)
    # dO may come in another dtype (or as a stride-0 expanded view); the dots want q's.
    do_t = load_tile(do, row, col, valid, stride_doh, stride_dow, stride_dod, D, BLOCK_D).to(q_t.dtype)
    delta = tl.zeros((row.shape[0],), dtype=tl.float32)
    if DELTA_FROM_OUT:
        o_t = load_tile(out, row, col, valid, stride_oh, stride_ow, stride_od, D, BLOCK_D)
        delta = tl.sum(do_t.to(tl.float32) * o_t.to(tl.float32), axis=1)
    lse2 = tl.load(lse + lse_offsets(i_b, i_h, row, col, H, W, NH), mask=valid, other=float("inf")) * LOG2E
    return q_t, do_t, lse2, delta


@triton.jit
def _scatter_bias_grad(dbias, ds, offs_q, offs_k, i_h, WH, WW):
    # dS is exactly 0 at missing queries and keys; only indices outside the window must be kept out.
    rel = ((offs_q // WW)[:, None] - (offs_k // WW)[None, :] + WH - 1) * (2 * WW - 1) \
        + ((offs_q % WW)[:, None] - (offs_k % WW)[None, :] + WW - 1)
    inside = (offs_q[:, None] < WH * WW) & (offs_k[None, :] < WH * WW)
    tl.atomic_add(dbias + i_h * (2 * WH - 1) * (2 * WW - 1) + rel, ds, mask=inside)


@triton.jit(do_not_specialize=_MAP_SIZE_ARGS)
def window_attention_fwd_kernel(
    q, k, v, bias, msk, out, lse,
    stride_qb, stride_qh, stride_qw, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kw, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vw, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_ow, stride_on, stride_od,
    stride_bias_n, stride_bias_y, stride_bias_x,
    stride_mask_w, stride_mask_q, stride_mask_k,
    qk_scale, H, W, NH, NW, NWW, D,
    WH, WW, HAS_BIAS: tl.constexpr, HAS_MASK: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """out and lse for one block of queries of one (b, window, head)."""
    # Heads vary fastest over the grid: a token's heads share cache lines, so neighbouring programs share them.
    pid = tl.program_id(0)
    i_h = pid % NH
    i_b, i_w, wy, wx = _window_of(pid // NH, NW, NWW)
    n_end = _valid_end(wy, wx, H, W, WH, WW)

    i_b64 = i_b.to(tl.int64)
    q += i_b64 * stride_qb + i_h * stride_qn
    k += i_b64 * stride_kb + i_h * stride_kn
    v += i_b64 * stride_vb + i_h * stride_vn
    out += i_b64 * stride_ob + i_h * stride_on
    bias += i_h * stride_bias_n
    msk += i_w.to(tl.int64) * stride_mask_w

    offs_q = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    yq, xq, rowq, colq, valid_q = _positions(offs_q, wy, wx, H, W, WH, WW)
    q_t = load_tile(q, rowq, colq, valid_q, stride_qh, stride_qw, stride_qd, D, BLOCK_D)

    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    for n0 in range(0, n_end, BLOCK_N):
        offs_k = n0 + tl.arange(0, BLOCK_N)
        yk, xk, rowk, colk, valid_k = _positions(offs_k, wy, wx, H, W, WH, WW)
        k_t = load_tile(k, rowk, colk, valid_k, stride_kh, stride_kw, stride_kd, D, BLOCK_D)
        v_t = load_tile(v, rowk, colk, valid_k, stride_vh, stride_vw, stride_vd, D, BLOCK_D)
        s = _scores(q_t, k_t, offs_q, yq, xq, valid_q, offs_k, yk, xk, valid_k, bias, msk,
                    stride_bias_y, stride_bias_x, stride_mask_q, stride_mask_k, qk_scale,
                    WH, WW, HAS_BIAS, HAS_MASK, UPCAST_DOT, DOT_PRECISION)
        m_i, l_i, acc = online_softmax_step(m_i, l_i, acc, s, v_t, UPCAST_DOT, DOT_PRECISION)

    store_tile(out, acc / l_i[:, None], rowq, colq, valid_q, stride_oh, stride_ow, stride_od, D, BLOCK_D)
    tl.store(lse + lse_offsets(i_b, i_h, rowq, colq, H, W, NH), (m_i + tl.log2(l_i)) * LN2, mask=valid_q)


@triton.jit(do_not_specialize=_MAP_SIZE_ARGS)
def window_attention_bwd_kernel(
    q, k, v, out, do, lse, bias, msk, dq, dk, dv, dbias,
    stride_qb, stride_qh, stride_qw, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kw, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vw, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_dow, stride_don, stride_dod,
    stride_ob, stride_oh, stride_ow, stride_on, stride_od,
    stride_bias_n, stride_bias_y, stride_bias_x,
    stride_mask_w, stride_mask_q, stride_mask_k,
    qk_scale, scale, H, W, NH, NW, NWW, D, num_windows, windows_per_program,
    WH, WW, HAS_BIAS: tl.constexpr, HAS_MASK: tl.constexpr,
    BIAS_GRAD: tl.constexpr, FUSE_DQ: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """dk, dv of one key block (and dq if FUSE_DQ) for each window of a chunk of one head; d(table) of the chunk.

    ``out``, ``dq``, ``dk``, ``dv`` are this module's own contiguous tensors and share the ``stride_o*`` strides.
    """
    pid = tl.program_id(0)
    i_h = pid % NH
    bw_start = (pid // NH) * windows_per_program
    bw_end = tl.minimum(bw_start + windows_per_program, num_windows)
    offs_k = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    bias += i_h * stride_bias_n
    # dS summed over the chunk's windows; used when a single query block covers the window (BLOCK_M >= N).
    ds_acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)

    for i_bw in range(bw_start, bw_end):
        i_b, i_w, wy, wx = _window_of(i_bw, NW, NWW)
        n_end = _valid_end(wy, wx, H, W, WH, WW)
        i_b64 = i_b.to(tl.int64)
        q_b = q + i_b64 * stride_qb + i_h * stride_qn
        k_b = k + i_b64 * stride_kb + i_h * stride_kn
        v_b = v + i_b64 * stride_vb + i_h * stride_vn
        do_b = do + i_b64 * stride_dob + i_h * stride_don
        o_off = i_b64 * stride_ob + i_h * stride_on
        msk_w = msk + i_w.to(tl.int64) * stride_mask_w

        yk, xk, rowk, colk, valid_k = _positions(offs_k, wy, wx, H, W, WH, WW)
        k_t = load_tile(k_b, rowk, colk, valid_k, stride_kh, stride_kw, stride_kd, D, BLOCK_D)
        v_t = load_tile(v_b, rowk, colk, valid_k, stride_vh, stride_vw, stride_vd, D, BLOCK_D)
        dk_acc = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
        dv_acc = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
        for m0 in range(0, n_end, BLOCK_M):
            offs_q = m0 + tl.arange(0, BLOCK_M)
            yq, xq, rowq, colq, valid_q = _positions(offs_q, wy, wx, H, W, WH, WW)
            q_t, do_t, lse2, delta = _load_query_side(
                q_b, out + o_off, do_b, lse, i_b, i_h, rowq, colq, valid_q, H, W, NH,
                stride_qh, stride_qw, stride_qd, stride_oh, stride_ow, stride_od,
                stride_doh, stride_dow, stride_dod, D, BLOCK_D, not FUSE_DQ)
            p, dp = _probs_and_dp(q_t, k_t, v_t, do_t, lse2, offs_q, yq, xq, valid_q, offs_k, yk, xk, valid_k,
                                  bias, msk_w, stride_bias_y, stride_bias_x, stride_mask_q, stride_mask_k,
                                  qk_scale, WH, WW, HAS_BIAS, HAS_MASK, UPCAST_DOT, DOT_PRECISION)
            if FUSE_DQ:
                # The tile holds every key of these queries: delta is the softmax backward's own rowsum(P * dP),
                # in fp32, rather than rowsum(dO * out) through the rounded output (and out is never read).
                delta = tl.sum(p * dp, axis=1)
            ds = p * (dp - delta[:, None])
            dv_acc += dot(tl.trans(p.to(do_t.dtype)), do_t, UPCAST_DOT, DOT_PRECISION)
            ds_lo = ds.to(q_t.dtype)
            dk_acc += dot(tl.trans(ds_lo), q_t, UPCAST_DOT, DOT_PRECISION)
            if FUSE_DQ:
                # One key block holds every key of the window, so this is the whole of dq for these queries.
                dq_t = dot(ds_lo, k_t, UPCAST_DOT, DOT_PRECISION) * scale
                store_tile(dq + o_off, dq_t, rowq, colq, valid_q, stride_oh, stride_ow, stride_od, D, BLOCK_D)
            if BIAS_GRAD:
                if BLOCK_M >= WH * WW:
                    ds_acc += ds
                else:
                    _scatter_bias_grad(dbias, ds, offs_q, offs_k, i_h, WH, WW)
        store_tile(dk + o_off, dk_acc * scale, rowk, colk, valid_k, stride_oh, stride_ow, stride_od, D, BLOCK_D)
        store_tile(dv + o_off, dv_acc, rowk, colk, valid_k, stride_oh, stride_ow, stride_od, D, BLOCK_D)

    if BIAS_GRAD:
        if BLOCK_M >= WH * WW:
            _scatter_bias_grad(dbias, ds_acc, tl.arange(0, BLOCK_M), offs_k, i_h, WH, WW)


@triton.jit(do_not_specialize=_MAP_SIZE_ARGS)
def window_attention_bwd_dq_kernel(
    q, k, v, out, do, lse, bias, msk, dq,
    stride_qb, stride_qh, stride_qw, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kw, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vw, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_dow, stride_don, stride_dod,
    stride_ob, stride_oh, stride_ow, stride_on, stride_od,
    stride_bias_n, stride_bias_y, stride_bias_x,
    stride_mask_w, stride_mask_q, stride_mask_k,
    qk_scale, scale, H, W, NH, NW, NWW, D,
    WH, WW, HAS_BIAS: tl.constexpr, HAS_MASK: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """dq of one block of queries of one (b, window, head), for windows wider than one backward key block."""
    pid = tl.program_id(0)
    i_h = pid % NH
    i_b, i_w, wy, wx = _window_of(pid // NH, NW, NWW)
    n_end = _valid_end(wy, wx, H, W, WH, WW)
    i_b64 = i_b.to(tl.int64)
    q += i_b64 * stride_qb + i_h * stride_qn
    k += i_b64 * stride_kb + i_h * stride_kn
    v += i_b64 * stride_vb + i_h * stride_vn
    do += i_b64 * stride_dob + i_h * stride_don
    o_off = i_b64 * stride_ob + i_h * stride_on
    bias += i_h * stride_bias_n
    msk += i_w.to(tl.int64) * stride_mask_w

    offs_q = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    yq, xq, rowq, colq, valid_q = _positions(offs_q, wy, wx, H, W, WH, WW)
    q_t, do_t, lse2, delta = _load_query_side(
        q, out + o_off, do, lse, i_b, i_h, rowq, colq, valid_q, H, W, NH,
        stride_qh, stride_qw, stride_qd, stride_oh, stride_ow, stride_od,
        stride_doh, stride_dow, stride_dod, D, BLOCK_D, True)
    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    for n0 in range(0, n_end, BLOCK_N):
        offs_k = n0 + tl.arange(0, BLOCK_N)
        yk, xk, rowk, colk, valid_k = _positions(offs_k, wy, wx, H, W, WH, WW)
        k_t = load_tile(k, rowk, colk, valid_k, stride_kh, stride_kw, stride_kd, D, BLOCK_D)
        v_t = load_tile(v, rowk, colk, valid_k, stride_vh, stride_vw, stride_vd, D, BLOCK_D)
        p, dp = _probs_and_dp(q_t, k_t, v_t, do_t, lse2, offs_q, yq, xq, valid_q, offs_k, yk, xk, valid_k,
                              bias, msk, stride_bias_y, stride_bias_x, stride_mask_q, stride_mask_k, qk_scale,
                              WH, WW, HAS_BIAS, HAS_MASK, UPCAST_DOT, DOT_PRECISION)
        acc += dot((p * (dp - delta[:, None])).to(q_t.dtype), k_t, UPCAST_DOT, DOT_PRECISION)
    store_tile(dq + o_off, acc * scale, rowq, colq, valid_q, stride_oh, stride_ow, stride_od, D, BLOCK_D)


# --------------------------------------------------------------------------------------------------------
# Launch plans.


def _fwd_blocks(n: int) -> tuple[int, int]:
    """(BLOCK_M, BLOCK_N) of the forward and the dq kernel: a 7x7 or 8x8 window is a single 64x64 tile."""
    block = min(64, dot_block(n))
    return block, block


def _bwd_blocks(n: int) -> tuple[int, int]:
    """(BLOCK_M, BLOCK_N) of the backward: all queries of the window (up to 256), keys to fill ~4K-element tiles."""
    block_m = min(_MAX_QUERY_TILE, dot_block(n))
    return block_m, min(block_m, max(16, 4096 // block_m))


def _windows_per_program(num_windows: int, heads: int, key_blocks: int, target: Target) -> int:
    """Length of the backward's window chunks: as long as possible while every SM still gets a few programs."""
    if target.interpret:
        # The interpreter runs programs one after another; a length that rarely divides the window count
        # exercises the loop and a short last chunk.
        return 3
    per_program = (num_windows * heads * key_blocks) // (_PROGRAMS_PER_SM * target.sms)
    return max(1, min(_MAX_WINDOWS_PER_PROGRAM, per_program))


def _geometry(q: torch.Tensor, wh: int, ww: int) -> tuple[int, int, int]:
    """(windows per image, windows per row, tokens per window)."""
    _, h, w, _, _ = q.shape
    nww = triton.cdiv(w, ww)
    return triton.cdiv(h, wh) * nww, nww, wh * ww


def _bias_mask_args(q: torch.Tensor, bias_table: Optional[torch.Tensor], mask: Optional[torch.Tensor]):
    # An absent bias or mask is never read (HAS_BIAS / HAS_MASK are False); q stands in as a valid pointer.
    bias_ptr, bias_strides = (bias_table, bias_table.stride()) if bias_table is not None else (q, (0, 0, 0))
    mask_ptr, mask_strides = (mask, mask.stride()) if mask is not None else (q, (0, 0, 0))
    return bias_ptr, mask_ptr, (*bias_strides, *mask_strides)


def _num_warps(block_m: int, block_n: int) -> int:
    # The backward's whole-window tiles (256 queries) keep several fp32 (256, 16) tiles live: 8 warps hold them
    # in registers without spilling.
    return 8 if block_m * block_n > 4096 or block_m >= 256 else 4


@dataclasses.dataclass(frozen=True)
class WindowPlan:
    """Tiles and launch options of the three kernels; ``upcast_dot`` / ``dot_precision`` see
    :func:`ops._plans.dot_options`."""

    fwd_blocks: tuple[int, int]
    bwd_blocks: tuple[int, int]
    dq_blocks: tuple[int, int]
    block_d: int
    windows_per_program: int
    fwd: KernelPlan
    bwd: KernelPlan
    dq: KernelPlan
    upcast_dot: bool
    dot_precision: str


def launch_plan(target: Target, dtype: torch.dtype, head_dim: int, n: int, num_windows: int, heads: int,
                bias_grad: bool) -> WindowPlan:
    """The launch plan for ``n``-token windows (``num_windows`` of them over the batch) of ``heads`` heads."""
    upcast_dot, dot_precision = dot_options(dtype, target)
    fwd_blocks, bwd_blocks = _fwd_blocks(n), _bwd_blocks(n)
    exact = exact_fp32(dtype) and not target.interpret
    if exact:
        # FMA dots hold whole operand tiles in registers: the backward's (256, 16) whole-window tiles spill (and
        # their three pipeline stages need 262-426 KB of shared memory); 64 queries per tile do not.
        bwd_blocks = (min(64, bwd_blocks[0]), 16)
    dq_blocks = fwd_blocks
    if dtype == torch.float32 and not exact and not target.interpret and n > 32 and head_dim > 32 \
            and target.smem < 128 * 1024:
        # TF32 dots, fp32 operands: the fused one-tile backward of a 7 x 7 / 8 x 8 window at head_dim 64 needs
        # 112 KB of shared memory, over sm_86's 99 KB: two 32-key tiles and the separate dq kernel instead.
        bwd_blocks = (64, 32)
        dq_blocks = (64, 32)
    if not exact and not target.interpret and n > 64:
        # Tensor-core dots (bf16 / fp16 / TF32), ptxas on sm_80, bf16: the backward's (256, 16) whole-window tiles
        # at 8 warps spill 124-156 B per thread (1 KB with HAT's bias gradient), (128, 32) at 4 warps 316-380 B;
        # (128, 32) at 8 warps spill nothing, (64, 32) nothing with a bias gradient either (HAT). The dq kernel's
        # (64, 64) tiles spill 16-176 B at HAT's 16 x 16 windows, (64, 32) none. (Windows of up to 64 tokens keep
        # the fused one-tile backward, spill-free at 8 warps.)
        bwd_blocks = (64 if bias_grad else 128, 32)
        dq_blocks = (64, 32)
    key_blocks = triton.cdiv(n, bwd_blocks[1])
    per_program = _windows_per_program(num_windows, heads, key_blocks, target) if bias_grad else 1
    # Software pipelining only pays where a loop streams several key tiles (the forward over windows of more than
    # 64 tokens, bf16 / fp16 / TF32); the backward's loops are over one to four query tiles.
    fwd_stages = 2 if n > fwd_blocks[1] and not exact else 1
    # The backward keeps several fp32 score-sized tiles live: 8 warps on every GPU (4 spill, see above).
    bwd_warps = 8 if not target.interpret else _num_warps(*bwd_blocks)
    # The forward's (64, 64) tiles with a bias table spill 116-236 B per thread at 4 warps in bf16 (the window's
    # runtime sizes cost registers; sm_80 / sm_86 / sm_90), none at 8.
    fwd_warps = 8 if not target.interpret and fwd_blocks[0] * fwd_blocks[1] >= 4096 else _num_warps(*fwd_blocks)
    # Exact fp32: the dq kernel's (64, 64) FMA-dot tiles spill 0.8-1.2 KB per thread at 4 warps, 0 at 8.
    dq_warps = 8 if exact else _num_warps(*dq_blocks)
    if dot_block(head_dim) >= 128 and not target.interpret:
        # head_dim 65-128 (BiFormer-B / STL's whole-map stage 4, head_dim 96): the tiles above were chosen at
        # head_dim <= 64 and double their operands here. Exact fp32: (64, 64) forward / dq tiles spill 9.8 /
        # 17 KB (sm_80); TF32: the fused 7 x 7 backward needs 229 KB of shared memory, the (128, 32) one of a
        # 16 x 16 window 295 KB (sm_80 has 163 KB). Measured instead (ptxas, sm_80 / sm_86 / sm_90, every
        # BiFormer-B / STL size): 16-bit and TF32 forward / dq (16, 64), backward (32, 16), 4 warps: 0 B;
        # exact fp32 forward (32, 64), backward (64, 16), dq (16, 64), 8 warps: 0 / <= 40 / <= 200 B.
        if exact:
            fwd_blocks, bwd_blocks, dq_blocks, fwd_warps, bwd_warps, dq_warps = (32, 64), (64, 16), (16, 64), 8, 8, 8
        else:
            fwd_blocks, bwd_blocks, dq_blocks, fwd_warps, bwd_warps, dq_warps = (16, 64), (32, 16), (16, 64), 4, 4, 4
        fwd_stages = 2 if n > fwd_blocks[1] and not exact else 1
        per_program = _windows_per_program(num_windows, heads, triton.cdiv(n, bwd_blocks[1]), target) \
            if bias_grad else 1
    return WindowPlan(
        fwd_blocks, bwd_blocks, dq_blocks, dot_block(head_dim), per_program,
        KernelPlan(fwd_warps, fwd_stages), KernelPlan(bwd_warps, 1), KernelPlan(dq_warps, fwd_stages),
        upcast_dot, dot_precision,
    )


# --------------------------------------------------------------------------------------------------------
# Custom ops.


def _forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    wh: int,
    ww: int,
    bias_table: Optional[torch.Tensor],
    mask: Optional[torch.Tensor],
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``out`` (B, H, W, heads, D) in q's dtype and ``lse`` (B, H, W, heads) fp32 (natural log) for the backward."""
    batch, h, w, heads, head_dim = q.shape
    out = empty(batch, h, w, heads, head_dim, device=q.device, dtype=q.dtype)
    lse = empty(batch, h, w, heads, device=q.device, dtype=torch.float32)
    if q.numel() == 0:
        return out, lse
    nw, nww, n = _geometry(q, wh, ww)
    plan = launch_plan(device_target(q.device), q.dtype, head_dim, n, batch * nw, heads, False)
    block_m, block_n = plan.fwd_blocks
    bias_ptr, mask_ptr, bm_strides = _bias_mask_args(q, bias_table, mask)
    grid = (batch * nw * heads, triton.cdiv(n, block_m))
    with on_device(q):
        launch(
            window_attention_fwd_kernel, grid,
            q, k, v, bias_ptr, mask_ptr, out, lse,
            *q.stride(), *k.stride(), *v.stride(), *out.stride(), *bm_strides,
            scale * 1.4426950408889634, h, w, heads, nw, nww, head_dim,
            WH=wh, WW=ww, HAS_BIAS=bias_table is not None, HAS_MASK=mask is not None,
            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=plan.block_d,
            UPCAST_DOT=plan.upcast_dot, DOT_PRECISION=plan.dot_precision, plan=plan.fwd,
        )
    return out, lse


def _forward_fake(q, k, v, wh, ww, bias_table, mask, scale):
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
    bias_table: Optional[torch.Tensor],
    mask: Optional[torch.Tensor],
    scale: float,
    bias_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv) contiguous in q's dtype, and d(bias_table) in its dtype (an empty tensor unless bias_grad)."""
    batch, h, w, heads, head_dim = q.shape
    dq, dk, dv = (empty(batch, h, w, heads, head_dim, device=q.device, dtype=q.dtype) for _ in range(3))
    bias_grad = bias_grad and bias_table is not None
    # Zeros, not NaN: atomic adds accumulate into it, and table entries no window uses get no gradient.
    dbias = torch.zeros(bias_table.shape if bias_grad else (0,), device=q.device, dtype=torch.float32)
    if q.numel() == 0:
        return dq, dk, dv, dbias.to(bias_table.dtype) if bias_grad else dbias
    # The kernels address out, dq, dk and dv with one set of strides (dq's). `out` and `lse` come from the
    # forward op, contiguous, unless a graph transform handed back equal tensors in another layout.
    out, lse = out.contiguous(), lse.contiguous()
    nw, nww, n = _geometry(q, wh, ww)
    num_windows = batch * nw
    plan = launch_plan(device_target(q.device), q.dtype, head_dim, n, num_windows, heads, bias_grad)
    block_m, block_n = plan.bwd_blocks
    key_blocks = triton.cdiv(n, block_n)
    fuse_dq = key_blocks == 1
    per_program = plan.windows_per_program
    bias_ptr, mask_ptr, bm_strides = _bias_mask_args(q, bias_table, mask)
    qkv_strides = (*q.stride(), *k.stride(), *v.stride(), *do.stride(), *dq.stride())
    common = dict(
        WH=wh, WW=ww, HAS_BIAS=bias_table is not None, HAS_MASK=mask is not None, BLOCK_D=plan.block_d,
        UPCAST_DOT=plan.upcast_dot, DOT_PRECISION=plan.dot_precision,
    )
    grid = (triton.cdiv(num_windows, per_program) * heads, key_blocks)
    with on_device(q):
        launch(
            window_attention_bwd_kernel, grid,
            q, k, v, out, do, lse, bias_ptr, mask_ptr, dq, dk, dv, dbias if bias_grad else lse,
            *qkv_strides, *bm_strides,
            scale * 1.4426950408889634, scale, h, w, heads, nw, nww, head_dim, num_windows, per_program,
            BIAS_GRAD=bias_grad, FUSE_DQ=fuse_dq, BLOCK_M=block_m, BLOCK_N=block_n, plan=plan.bwd, **common,
        )
        if not fuse_dq:
            dq_m, dq_n = plan.dq_blocks
            launch(
                window_attention_bwd_dq_kernel, (num_windows * heads, triton.cdiv(n, dq_m)),
                q, k, v, out, do, lse, bias_ptr, mask_ptr, dq,
                *qkv_strides, *bm_strides,
                scale * 1.4426950408889634, scale, h, w, heads, nw, nww, head_dim,
                BLOCK_M=dq_m, BLOCK_N=dq_n, plan=plan.dq, **common,
            )
    return dq, dk, dv, dbias.to(bias_table.dtype) if bias_grad else dbias


def _backward_fake(do, q, k, v, out, lse, wh, ww, bias_table, mask, scale, bias_grad):
    dq, dk, dv = (q.new_empty(q.shape) for _ in range(3))
    return dq, dk, dv, optional_grad_fake(q, bias_table, bias_grad)


def _backward_args(d_out, inputs, outputs, needs_grad):
    q, k, v, wh, ww, bias_table, mask, scale = inputs
    # The mask is a constant of the model (Swin's shifted-window mask): it gets no gradient by design.
    return d_out, q, k, v, *outputs, wh, ww, bias_table, mask, scale, needs_grad[5]


window_attention_fwd, window_attention_bwd = register_fwd_bwd(
    "window_attention", _forward, _forward_fake, _backward, _backward_fake, _backward_args,
)


def window_attention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window: tuple[int, int],
    bias_table: Optional[torch.Tensor] = None,
    mask: Optional[torch.Tensor] = None,
    scale: Optional[float] = None,
) -> torch.Tensor:
    """Triton backend of :func:`ops.window_attention.window_attention` (shapes and dtypes checked there)."""
    check_triton_dtype("window_attention", q)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    out, _ = window_attention_fwd(q, k, v, int(window[0]), int(window[1]), bias_table, mask, float(scale))
    return out
