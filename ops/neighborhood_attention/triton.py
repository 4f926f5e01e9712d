"""2-D neighborhood attention (NAT / DiNAT) in Triton: fused forward and backward kernels, registered as custom ops.

Math, per batch ``b`` and head ``h`` (semantics exactly those of :mod:`ops.neighborhood_attention.reference`;
``N(q)`` is the ``kh x kw`` neighbourhood of query ``q``, ``rel(q, j)`` its bias index)::

    S[q, j] = scale <q, k_j> + rpb[h, rel(q, j)]   for j in N(q), -inf elsewhere
    P = softmax(S);   out = P v;   lse = logsumexp(S)               (lse saved for the backward, fp32)
    dS = P * (dO v^T - delta),   delta = rowsum(dO * out)
    dq = scale dS k;   dk = scale dS^T q;   dv = P^T dO;   drpb[h, r] = sum of dS over every (b, q, j) with rel = r

Kernel design
-------------
Dilation splits each axis into interleaved groups that never interact, so every program works inside one
(row group, column group) pair, in group-local coordinates: local ``(y, x)`` is map pixel ``(y * dh + gy,
x * dw + gx)``, read through the strides of the ``(B, H, W, heads, D)`` tensors (q, k, v are usually ``unbind``
views of one qkv tensor: no copy, no contiguity needed). Window starts are clamped (``clamp(y - kh // 2, 0,
Lg - kh)``), hence non-decreasing along each axis, so a tile of ``TH x TW`` consecutive queries attends only to
keys in a ``(TH + kh - 1) x (TW + kw - 1)`` region (less at the borders), and a tile of keys is attended by the
queries of a similar region (NATTEN's inverse neighbourhood, computed from the same clamp). Scores exist only in
registers: FlashAttention's online softmax over blocks of that region, with each (query, key) pair outside the
query's own window masked to -inf -- dense ``tl.dot`` tiles on tensor cores rather than a gather per
neighbour, at the price of computing ~``(TH + kh - 1)(TW + kw - 1) / (kh kw)`` times the necessary products
(4x for 8x8 tiles and 7x7 windows). The bias is gathered from the small table by relative index (L1/L2).

* Forward (``neighborhood_attention_2d_fwd_kernel``): one program per (b, head, dilation group, query tile);
  writes out and lse (fp32, (B, H, W, heads)).
* Backward, FlashAttention-2's split (deterministic dq / dk / dv, no atomics for them, no fp32 dq buffer):
  ``neighborhood_attention_2d_bwd_dq_kernel`` -- per (4 x 8) query tile, as the forward: delta = rowsum(dO * out)
  (stored for the second kernel), P recomputed from lse, dq, and the bias gradient;
  ``neighborhood_attention_2d_bwd_dkdv_kernel`` -- per key tile, looping over the region of queries that can
  see it: dk and dv.
* d(rpb): dS binned by relative index, reduced per dq program before it leaves registers. The dq kernel walks
  its key region in TH x TW rectangles of keys, so within one (query tile, key block) pair the relative row
  index depends only on (query row, key row) and the column index only on (query column, key column): dS
  permuted to rows (qa, a) x columns (qb, b) is binned by two small one-hot dots (``_bias_grad_partial``) into
  a (2kh-1, 2kw-1) fp32 partial per program. Each program stores its partial (no atomics); the wrapper sums
  them over batch and programs (a fixed-order torch reduction) and casts to the table's dtype. Before this,
  one fp32 atomic per in-window (query, key) pair: B * heads * H * W * kh * kw of them (39 M onto 338
  addresses for a DiNAT-T stage-1 layer at batch 128); now no atomic and B * heads * programs partials of
  169 fp32 for that layer: 25088 (17 MB, dilation 1: 14 x 7 tiles) or 32768 (22 MB, dilation 8: 64 groups of
  2 x 1 tiles), plain stores, a transient buffer next to the 51 MB of its bf16 q.
* Compiles: kernel size, tiles and dtypes are compile-time constants; the map size, dilation and tile counts
  are runtime arguments excluded from Triton's integer specialisation (``_MAP_ARGS``), so new image sizes and
  dilations reuse the compiled kernels (``tests/ops/test_na_recompiles.py`` counts them).

Precision: fp32 accumulation everywhere; dot operands in the input dtype (P and dS rounded to it before their
dots, as in FlashAttention); fp32 inputs use IEEE fp32 dots unless torch allows TF32. The bias gradient bins
fp32 dS with a TF32 one-hot dot (each dS rounded once to 10 mantissa bits, no coarser than its rounding to
fp16 / bf16 for dq and dk; emulated at the GPU test shapes: <= 4.6e-4 of max|d(rpb)|) and sums the binned
values with an IEEE one (FMA: they are sums, rounding them again would double the error); IEEE for both under
exact fp32. All-IEEE binning fits without spills too, but costs ~3.8 k more FMA per query for 7 x 7 windows
(an estimated +50 % of the dq loop's CUDA-core work; not measured on a GPU). Softmax in base 2 with log2(e)
folded into the scale; lse stored in natural-log units.

Determinism: out, dq, dk, dv and d(rpb) are deterministic (no atomics).
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
from ops._triton_utils import LN2, LOG2E, dot, dot_block, load_tile, on_device, online_softmax_step, \
    store_tile

__all__ = ["neighborhood_attention_2d_triton"]

# 8 x 8 = 64 queries (or keys) per tile: one tensor-core tile, and a 14 x 14 key region for 7 x 7 windows.
_TILE = (8, 8)
_BLOCK_N = 64
# The dq kernel's query tile (and key block): 4 x 8 = 32 queries. Its 32 x 32 score tiles and bias binning fit 4
# warps without spills in every dtype on sm_80 / sm_90 (8 x 8 tiles at 8 warps spill 12-204 B: 255 registers), and
# the thinner tile wastes fewer key blocks: 6 blocks of 32 keys per 7 x 7 region (10 x 14) instead of 4 of 64
# (14 x 14, padded to 16 x 16), 192 instead of 256 (query, key) pairs per query; 384 instead of 576 for 11 x 11.
_DQ_TILE = (4, 8)
# The kernels' map-size and dilation arguments: not specialised (Triton would compile a new kernel version when one
# becomes 1 or a multiple of 16), so a new image size or dilation reuses the compiled kernels.
_MAP_ARGS = ("H", "W", "TILES_Y", "TILES_X", "DH", "DW")


@triton.jit
def _start(i, Lg, K: tl.constexpr):
    """Group-local window start of group-local index ``i``: centred, shifted inward at the borders."""
    return tl.minimum(tl.maximum(i - K // 2, 0), Lg - K)


@triton.jit
def _decode(pid, H, W, TILES_Y, TILES_X, DH, DW):
    """(gy, gx, group lengths Lgy, Lgx, tile row, tile column) of program ``pid`` along grid axis 1."""
    tx = pid % TILES_X
    pid = pid // TILES_X
    ty = pid % TILES_Y
    pid = pid // TILES_Y
    gx = pid % DW
    gy = pid // DW
    return gy, gx, (H - gy + DH - 1) // DH, (W - gx + DW - 1) // DW, ty, tx


@triton.jit
def _tile_positions(ty, tx, gy, gx, Lgy, Lgx, DH, DW, TH: tl.constexpr, TW: tl.constexpr):
    """Group-local (y, x), map rows / cols (int64) and validity of the TH x TW tile (ty, tx)."""
    offs = tl.arange(0, TH * TW)
    y = ty * TH + offs // TW
    x = tx * TW + offs % TW
    valid = (y < Lgy) & (x < Lgx)
    return y, x, (y * DH + gy).to(tl.int64), (x * DW + gx).to(tl.int64), valid


@triton.jit
def _query_region(ty, tx, Lgy, Lgx, TH: tl.constexpr, TW: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr):
    """Key region (first row, first col, rows, cols) that the queries of tile (ty, tx) attend to."""
    y0 = ty * TH
    x0 = tx * TW
    y1 = tl.minimum(y0 + TH, Lgy) - 1
    x1 = tl.minimum(x0 + TW, Lgx) - 1
    ry0 = _start(y0, Lgy, KH)
    rx0 = _start(x0, Lgx, KW)
    return ry0, rx0, _start(y1, Lgy, KH) + KH - ry0, _start(x1, Lgx, KW) + KW - rx0


@triton.jit
def _inverse_bounds(j0, j1, Lg, K: tl.constexpr):
    """[lo, hi] of the group-local queries whose windows hold any key in [j0, j1] (windows are monotone)."""
    lo = tl.where(j0 < K, 0, j0 - K // 2)
    hi = tl.where(j1 >= Lg - K, Lg - 1, j1 + K // 2)
    return lo, hi


@triton.jit
def _region_positions(n, r0y, r0x, RW, n_valid, gy, gx, DH, DW):
    """Group-local (y, x), map rows / cols (int64) and validity of flattened region indices ``n``."""
    y = r0y + n // RW
    x = r0x + n % RW
    valid = n < n_valid
    return y, x, (y * DH + gy).to(tl.int64), (x * DW + gx).to(tl.int64), valid


@triton.jit
def _scores(q_t, k_t, qy, qx, valid_q, ky, kx, valid_k, Lgy, Lgx, rpb, stride_ry, stride_rx, qk_scale,
            KH: tl.constexpr, KW: tl.constexpr, HAS_RPB: tl.constexpr,
            UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """Base-2 scores of a (queries, keys) tile, -inf outside each query's window; and the in-window mask.

    Missing queries get no keys at all (a row of -inf): their bias indices could point outside the table."""
    sy = _start(qy, Lgy, KH)
    sx = _start(qx, Lgx, KW)
    in_win = (ky[None, :] >= sy[:, None]) & (ky[None, :] < sy[:, None] + KH) \
        & (kx[None, :] >= sx[:, None]) & (kx[None, :] < sx[:, None] + KW) & valid_k[None, :] & valid_q[:, None]
    s = dot(q_t, tl.trans(k_t), UPCAST_DOT, DOT_PRECISION) * qk_scale
    if HAS_RPB:
        rel = (ky[None, :] - qy[:, None] + KH - 1) * stride_ry + (kx[None, :] - qx[:, None] + KW - 1) * stride_rx
        s += tl.load(rpb + rel, mask=in_win, other=0.0).to(tl.float32) * LOG2E
    return tl.where(in_win, s, float("-inf")), in_win


@triton.jit(do_not_specialize=_MAP_ARGS)
def neighborhood_attention_2d_fwd_kernel(
    q, k, v, rpb, out, lse,
    stride_qb, stride_qh, stride_qw, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kw, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vw, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_ow, stride_on, stride_od,
    stride_rn, stride_ry, stride_rx,
    qk_scale, H, W, NH, D, TILES_Y, TILES_X, DH, DW,
    KH: tl.constexpr, KW: tl.constexpr, HAS_RPB: tl.constexpr,
    TH: tl.constexpr, TW: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """out and lse of one TH x TW tile of queries of one (b, head, dilation group)."""
    i_bh = tl.program_id(1)
    i_b = (i_bh // NH).to(tl.int64)
    i_h = i_bh % NH
    gy, gx, Lgy, Lgx, ty, tx = _decode(tl.program_id(0), H, W, TILES_Y, TILES_X, DH, DW)
    q += i_b * stride_qb + i_h * stride_qn
    k += i_b * stride_kb + i_h * stride_kn
    v += i_b * stride_vb + i_h * stride_vn
    out += i_b * stride_ob + i_h * stride_on
    rpb += i_h * stride_rn

    qy, qx, rowq, colq, valid_q = _tile_positions(ty, tx, gy, gx, Lgy, Lgx, DH, DW, TH, TW)
    q_t = load_tile(q, rowq, colq, valid_q, stride_qh, stride_qw, stride_qd, D, BLOCK_D)
    r0y, r0x, RH, RW = _query_region(ty, tx, Lgy, Lgx, TH, TW, KH, KW)
    # tiles past the end of a shorter dilation group have nothing to do
    n_keys = tl.where((ty * TH < Lgy) & (tx * TW < Lgx), RH * RW, 0)

    m_i = tl.full((TH * TW,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((TH * TW,), dtype=tl.float32)
    acc = tl.zeros((TH * TW, BLOCK_D), dtype=tl.float32)
    for n0 in range(0, n_keys, BLOCK_N):
        ky, kx, rowk, colk, valid_k = _region_positions(n0 + tl.arange(0, BLOCK_N), r0y, r0x, RW, n_keys,
                                                        gy, gx, DH, DW)
        k_t = load_tile(k, rowk, colk, valid_k, stride_kh, stride_kw, stride_kd, D, BLOCK_D)
        v_t = load_tile(v, rowk, colk, valid_k, stride_vh, stride_vw, stride_vd, D, BLOCK_D)
        s, _ = _scores(q_t, k_t, qy, qx, valid_q, ky, kx, valid_k, Lgy, Lgx, rpb, stride_ry, stride_rx, qk_scale,
                       KH, KW, HAS_RPB, UPCAST_DOT, DOT_PRECISION)
        m_i, l_i, acc = online_softmax_step(m_i, l_i, acc, s, v_t, UPCAST_DOT, DOT_PRECISION)

    # missing queries have no keys (l = 0) and are not stored: divide them by 1, not 0
    l_i = tl.where(valid_q, l_i, 1.0)
    store_tile(out, acc / l_i[:, None], rowq, colq, valid_q, stride_oh, stride_ow, stride_od, D, BLOCK_D)
    lse_off = ((i_b * H + rowq) * W + colq) * NH + i_h
    tl.store(lse + lse_off, (m_i + tl.log2(l_i)) * LN2, mask=valid_q)


@triton.jit
def _bias_grad_partial(ds, in_win, acc, by0, bx0, TH: tl.constexpr, TW: tl.constexpr,
                       BLOCK_RY: tl.constexpr, BLOCK_RX: tl.constexpr, RPB_PRECISION: tl.constexpr):
    """``acc`` plus dS of one (query tile, key block) pair binned by relative index, as two one-hot dots.

    Queries ``(qa, qb)`` of the TH x TW tile and keys ``(a, b)`` of the TH x TW key block have relative index
    ``(by0 + a - qa, bx0 + b - qb)`` in the (2kh-1) x (2kw-1) table: the row offset depends on (qa, a) only and
    the column offset on (qb, b) only. So dS, viewed as (qa, qb, a, b) and permuted to rows (qa, a) and columns
    (qb, b), is binned by columns with one dot against the one-hot ``[bx0 + b - qb == rx]`` and then by rows with
    one against ``[by0 + a - qa == ry]``; out-of-window pairs are zeroed first."""
    ds = tl.where(in_win, ds, 0.0)
    ds = tl.reshape(tl.permute(tl.reshape(ds, (TH, TW, TH, TW)), (0, 2, 1, 3)), (TH * TH, TW * TW))
    i_x = tl.arange(0, TW * TW)
    hot_x = ((bx0 + i_x % TW - i_x // TW)[:, None] == tl.arange(0, BLOCK_RX)[None, :]).to(tl.float32)
    i_y = tl.arange(0, TH * TH)
    hot_y = ((by0 + i_y % TH - i_y // TH)[:, None] == tl.arange(0, BLOCK_RY)[None, :]).to(tl.float32)
    binned_x = tl.dot(ds, hot_x, input_precision=RPB_PRECISION)  # (rows (qa, a), rx)
    # binned_x holds sums of dS: exact fp32 (FMA) for this small dot, so dS is rounded at most once (above)
    return tl.dot(tl.trans(hot_y), binned_x, acc, input_precision="ieee")


@triton.jit(do_not_specialize=_MAP_ARGS)
def neighborhood_attention_2d_bwd_dq_kernel(
    q, k, v, out, do, lse, delta, rpb, dq, drpb,
    stride_qb, stride_qh, stride_qw, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kw, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vw, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_dow, stride_don, stride_dod,
    stride_ob, stride_oh, stride_ow, stride_on, stride_od,
    stride_rn, stride_ry, stride_rx,
    qk_scale, scale, H, W, NH, D, TILES_Y, TILES_X, DH, DW,
    KH: tl.constexpr, KW: tl.constexpr, HAS_RPB: tl.constexpr,
    RPB_GRAD: tl.constexpr, TH: tl.constexpr, TW: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_RY: tl.constexpr, BLOCK_RX: tl.constexpr, RPB_PRECISION: tl.constexpr,
    UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """delta, dq and the bias-gradient partial of one TH x TW tile of queries of one (b, head, dilation group).

    The key region is walked in TH x TW blocks of keys (rectangles of the map, so that each block's relative
    indices are a function of (row pair, column pair): :func:`_bias_grad_partial`). The program's bias-gradient
    partial, a (2kh-1, 2kw-1) table, is stored (not added) at ``drpb[(b * NH + head) * programs + program]``.
    ``out``, ``dq`` (and ``delta``, ``lse``: contiguous (B, H, W, heads)) share dq's strides."""
    i_bh = tl.program_id(1)
    i_b = (i_bh // NH).to(tl.int64)
    i_h = i_bh % NH
    gy, gx, Lgy, Lgx, ty, tx = _decode(tl.program_id(0), H, W, TILES_Y, TILES_X, DH, DW)
    q += i_b * stride_qb + i_h * stride_qn
    k += i_b * stride_kb + i_h * stride_kn
    v += i_b * stride_vb + i_h * stride_vn
    do += i_b * stride_dob + i_h * stride_don
    o_off = i_b * stride_ob + i_h * stride_on
    rpb += i_h * stride_rn

    qy, qx, rowq, colq, valid_q = _tile_positions(ty, tx, gy, gx, Lgy, Lgx, DH, DW, TH, TW)
    q_t = load_tile(q, rowq, colq, valid_q, stride_qh, stride_qw, stride_qd, D, BLOCK_D)
    # dO may come in another dtype (or as a stride-0 expanded view); the dots want q's
    do_t = load_tile(do, rowq, colq, valid_q, stride_doh, stride_dow, stride_dod, D, BLOCK_D).to(q_t.dtype)
    o_t = load_tile(out + o_off, rowq, colq, valid_q, stride_oh, stride_ow, stride_od, D, BLOCK_D)
    dlt = tl.sum(do_t.to(tl.float32) * o_t.to(tl.float32), axis=1)
    lse_off = ((i_b * H + rowq) * W + colq) * NH + i_h
    tl.store(delta + lse_off, dlt, mask=valid_q)
    lse2 = tl.load(lse + lse_off, mask=valid_q, other=float("inf")) * LOG2E

    r0y, r0x, RH, RW = _query_region(ty, tx, Lgy, Lgx, TH, TW, KH, KW)
    # tiles past the end of a shorter dilation group have nothing to do
    blocks_x = (RW + TW - 1) // TW
    n_blocks = tl.where((ty * TH < Lgy) & (tx * TW < Lgx), (RH + TH - 1) // TH * blocks_x, 0)
    offs = tl.arange(0, TH * TW)
    acc = tl.zeros((TH * TW, BLOCK_D), dtype=tl.float32)
    drpb_acc = tl.zeros((BLOCK_RY, BLOCK_RX), dtype=tl.float32)
    for i_blk in range(0, n_blocks):
        oy = (i_blk // blocks_x) * TH
        ox = (i_blk % blocks_x) * TW
        ky = r0y + oy + offs // TW
        kx = r0x + ox + offs % TW
        valid_k = (ky < r0y + RH) & (kx < r0x + RW)
        rowk = (ky * DH + gy).to(tl.int64)
        colk = (kx * DW + gx).to(tl.int64)
        k_t = load_tile(k, rowk, colk, valid_k, stride_kh, stride_kw, stride_kd, D, BLOCK_D)
        v_t = load_tile(v, rowk, colk, valid_k, stride_vh, stride_vw, stride_vd, D, BLOCK_D)
        s, in_win = _scores(q_t, k_t, qy, qx, valid_q, ky, kx, valid_k, Lgy, Lgx, rpb, stride_ry, stride_rx, qk_scale,
                            KH, KW, HAS_RPB, UPCAST_DOT, DOT_PRECISION)
        # +inf lse at missing queries makes their probabilities exactly 0
        p = tl.exp2(s - lse2[:, None])
        dp = dot(do_t, tl.trans(v_t), UPCAST_DOT, DOT_PRECISION)
        ds = p * (dp - dlt[:, None])
        acc += dot(ds.to(q_t.dtype), k_t, UPCAST_DOT, DOT_PRECISION)
        if RPB_GRAD:
            drpb_acc = _bias_grad_partial(ds, in_win, drpb_acc, r0y + oy - ty * TH + KH - 1,
                                          r0x + ox - tx * TW + KW - 1, TH, TW, BLOCK_RY, BLOCK_RX, RPB_PRECISION)
    store_tile(dq + o_off, acc * scale, rowq, colq, valid_q, stride_oh, stride_ow, stride_od, D, BLOCK_D)
    if RPB_GRAD:
        # every program stores its whole table (zeros where it had no work): the partials need no initialisation
        ry = tl.arange(0, BLOCK_RY)
        rx = tl.arange(0, BLOCK_RX)
        part = drpb + (i_bh.to(tl.int64) * tl.num_programs(0) + tl.program_id(0)) * (2 * KH - 1) * (2 * KW - 1)
        tl.store(part + ry[:, None] * (2 * KW - 1) + rx[None, :], drpb_acc,
                 mask=(ry[:, None] < 2 * KH - 1) & (rx[None, :] < 2 * KW - 1))


@triton.jit(do_not_specialize=_MAP_ARGS)
def neighborhood_attention_2d_bwd_dkdv_kernel(
    q, k, v, do, lse, delta, rpb, dk, dv,
    stride_qb, stride_qh, stride_qw, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kw, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vw, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_dow, stride_don, stride_dod,
    stride_ob, stride_oh, stride_ow, stride_on, stride_od,
    stride_rn, stride_ry, stride_rx,
    qk_scale, scale, H, W, NH, D, TILES_Y, TILES_X, DH, DW,
    KH: tl.constexpr, KW: tl.constexpr, HAS_RPB: tl.constexpr,
    TH: tl.constexpr, TW: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
    UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """dk and dv of one TH x TW tile of keys of one (b, head, dilation group): a loop over the queries whose
    windows hold any of them."""
    i_bh = tl.program_id(1)
    i_b = (i_bh // NH).to(tl.int64)
    i_h = i_bh % NH
    gy, gx, Lgy, Lgx, ty, tx = _decode(tl.program_id(0), H, W, TILES_Y, TILES_X, DH, DW)
    q += i_b * stride_qb + i_h * stride_qn
    k += i_b * stride_kb + i_h * stride_kn
    v += i_b * stride_vb + i_h * stride_vn
    do += i_b * stride_dob + i_h * stride_don
    o_off = i_b * stride_ob + i_h * stride_on
    rpb += i_h * stride_rn

    ky, kx, rowk, colk, valid_k = _tile_positions(ty, tx, gy, gx, Lgy, Lgx, DH, DW, TH, TW)
    k_t = load_tile(k, rowk, colk, valid_k, stride_kh, stride_kw, stride_kd, D, BLOCK_D)
    v_t = load_tile(v, rowk, colk, valid_k, stride_vh, stride_vw, stride_vd, D, BLOCK_D)
    lo_y, hi_y = _inverse_bounds(ty * TH, tl.minimum(ty * TH + TH, Lgy) - 1, Lgy, KH)
    lo_x, hi_x = _inverse_bounds(tx * TW, tl.minimum(tx * TW + TW, Lgx) - 1, Lgx, KW)
    QW = hi_x - lo_x + 1
    n_queries = tl.where((ty * TH < Lgy) & (tx * TW < Lgx), (hi_y - lo_y + 1) * QW, 0)

    dk_acc = tl.zeros((TH * TW, BLOCK_D), dtype=tl.float32)
    dv_acc = tl.zeros((TH * TW, BLOCK_D), dtype=tl.float32)
    for m0 in range(0, n_queries, BLOCK_M):
        qy, qx, rowq, colq, valid_q = _region_positions(m0 + tl.arange(0, BLOCK_M), lo_y, lo_x, QW, n_queries,
                                                        gy, gx, DH, DW)
        q_t = load_tile(q, rowq, colq, valid_q, stride_qh, stride_qw, stride_qd, D, BLOCK_D)
        do_t = load_tile(do, rowq, colq, valid_q, stride_doh, stride_dow, stride_dod, D, BLOCK_D).to(q_t.dtype)
        lse_off = ((i_b * H + rowq) * W + colq) * NH + i_h
        lse2 = tl.load(lse + lse_off, mask=valid_q, other=float("inf")) * LOG2E
        dlt = tl.load(delta + lse_off, mask=valid_q, other=0.0)
        s, _ = _scores(q_t, k_t, qy, qx, valid_q, ky, kx, valid_k, Lgy, Lgx, rpb, stride_ry, stride_rx, qk_scale,
                       KH, KW, HAS_RPB, UPCAST_DOT, DOT_PRECISION)
        p = tl.exp2(s - lse2[:, None])
        dp = dot(do_t, tl.trans(v_t), UPCAST_DOT, DOT_PRECISION)
        ds = p * (dp - dlt[:, None])
        dv_acc += dot(tl.trans(p.to(do_t.dtype)), do_t, UPCAST_DOT, DOT_PRECISION)
        dk_acc += dot(tl.trans(ds.to(q_t.dtype)), q_t, UPCAST_DOT, DOT_PRECISION)
    store_tile(dk + o_off, dk_acc * scale, rowk, colk, valid_k, stride_oh, stride_ow, stride_od, D, BLOCK_D)
    store_tile(dv + o_off, dv_acc, rowk, colk, valid_k, stride_oh, stride_ow, stride_od, D, BLOCK_D)


# --------------------------------------------------------------------------------------------------------
# Launch plans.


def _grid(q: torch.Tensor, dh: int, dw: int, tile: tuple[int, int]) -> tuple[tuple[int, int], int, int]:
    """Grid (groups * tiles, B * heads) and the tiles per group along y / x (of the longest group). The tiles go on
    the first axis, whose size limit (2^31 - 1) is far above the others' (65535)."""
    batch, h, w, heads, _ = q.shape
    tiles_y = triton.cdiv(triton.cdiv(h, dh), tile[0])
    tiles_x = triton.cdiv(triton.cdiv(w, dw), tile[1])
    return (dh * dw * tiles_y * tiles_x, batch * heads), tiles_y, tiles_x


@dataclasses.dataclass(frozen=True)
class NeighborhoodPlan:
    """Query tile (``tile``: rows x columns of the map; ``dq_tile`` for the dq kernel, whose key blocks have the
    same shape), key tile length, channel tile and launch options of the forward and the two backward
    kernels; ``upcast_dot`` / ``dot_precision`` see :func:`ops._plans.dot_options`; ``rpb_precision``: input
    precision of the fp32 one-hot dots that bin dS for the bias gradient."""

    tile: tuple[int, int]
    dq_tile: tuple[int, int]
    block_n: int
    block_d: int
    fwd: KernelPlan
    bwd_dq: KernelPlan
    bwd_dkdv: KernelPlan
    upcast_dot: bool
    dot_precision: str
    rpb_precision: str


def launch_plan(target: Target, dtype: torch.dtype, head_dim: int) -> NeighborhoodPlan:
    """The launch plan for a head dimension of ``head_dim``."""
    upcast_dot, dot_precision = dot_options(dtype, target)
    # Chosen by the compile check (ptxas -v, sm_80 and sm_90, every NAT / DiNAT model and recipe size; head_dim 32,
    # 7 x 7 and 11 x 11 kernels): zero spills in fp16 / bf16 / TF32 and exact fp32 with these plans.
    # Forward: 8 warps (4 spill in bf16); it streams the query tile's key region (four 64-key tiles for 7 x 7).
    # dq: 4 x 8 tiles at 4 warps (see _DQ_TILE). dk / dv: 4 warps for 16-bit inputs, 8 for fp32 (TF32 or FMA
    # dots: 4 warps spill 16 B in TF32 on sm_90). One pipeline stage but in the 16-bit / TF32 forward.
    exact = exact_fp32(dtype)
    # The bias-gradient binning's first dot multiplies fp32 dS by exact 0 / 1: TF32 rounds dS to 10 mantissa bits
    # (what the dq / dk dots do to it, or finer; 3xTF32 would keep ~fp32 but spills 28-232 B); exact fp32 keeps
    # IEEE dots. Its second dot is always IEEE (_bias_grad_partial).
    rpb_precision = "ieee" if dot_precision == "ieee" else "tf32"
    return NeighborhoodPlan(
        _TILE, _DQ_TILE, _BLOCK_N, dot_block(head_dim), KernelPlan(8, 1 if exact else 2), KernelPlan(4, 1),
        KernelPlan(8 if dtype == torch.float32 else 4, 1), upcast_dot, dot_precision, rpb_precision,
    )


def _rpb_args(q: torch.Tensor, rpb: Optional[torch.Tensor]):
    # An absent table is never read (HAS_RPB is False); q stands in as a valid pointer.
    return (rpb, rpb.stride()) if rpb is not None else (q, (0, 0, 0))


# --------------------------------------------------------------------------------------------------------
# Custom ops.


def _forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kh: int,
    kw: int,
    dh: int,
    dw: int,
    rpb: Optional[torch.Tensor],
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``out`` (B, H, W, heads, D) in q's dtype and ``lse`` (B, H, W, heads) fp32 (natural log) for the backward."""
    batch, h, w, heads, head_dim = q.shape
    out = empty(batch, h, w, heads, head_dim, device=q.device, dtype=q.dtype)
    lse = empty(batch, h, w, heads, device=q.device, dtype=torch.float32)
    if q.numel() == 0:
        return out, lse
    plan = launch_plan(device_target(q.device), q.dtype, head_dim)
    grid, tiles_y, tiles_x = _grid(q, dh, dw, plan.tile)
    rpb_ptr, rpb_strides = _rpb_args(q, rpb)
    with on_device(q):
        launch(
            neighborhood_attention_2d_fwd_kernel, grid,
            q, k, v, rpb_ptr, out, lse,
            *q.stride(), *k.stride(), *v.stride(), *out.stride(), *rpb_strides,
            scale * 1.4426950408889634, h, w, heads, head_dim, tiles_y, tiles_x, dh, dw,
            KH=kh, KW=kw, HAS_RPB=rpb is not None, TH=plan.tile[0], TW=plan.tile[1],
            BLOCK_N=plan.block_n, BLOCK_D=plan.block_d, UPCAST_DOT=plan.upcast_dot,
            DOT_PRECISION=plan.dot_precision, plan=plan.fwd,
        )
    return out, lse


def _forward_fake(q, k, v, kh, kw, dh, dw, rpb, scale):
    return q.new_empty(q.shape), q.new_empty(q.shape[:-1], dtype=torch.float32)


def _backward(
    do: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    kh: int,
    kw: int,
    dh: int,
    dw: int,
    rpb: Optional[torch.Tensor],
    scale: float,
    rpb_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv) contiguous in q's dtype, and d(rpb) in its dtype (an empty tensor unless rpb_grad)."""
    batch, h, w, heads, head_dim = q.shape
    dq, dk, dv = (empty(batch, h, w, heads, head_dim, device=q.device, dtype=q.dtype) for _ in range(3))
    rpb_grad = rpb_grad and rpb is not None
    if q.numel() == 0:
        drpb = torch.zeros(rpb.shape if rpb_grad else (0,), device=q.device, dtype=torch.float32)
        return dq, dk, dv, drpb.to(rpb.dtype) if rpb_grad else drpb
    # The kernels address out, dq, dk and dv with one set of strides (dq's); out and lse come from the forward
    # op, contiguous, unless a graph transform handed back equal tensors in another layout.
    out, lse = out.contiguous(), lse.contiguous()
    delta = empty(batch, h, w, heads, device=q.device, dtype=torch.float32)
    plan = launch_plan(device_target(q.device), q.dtype, head_dim)
    grid, tiles_y, tiles_x = _grid(q, dh, dw, plan.tile)
    dq_grid, dq_tiles_y, dq_tiles_x = _grid(q, dh, dw, plan.dq_tile)
    # One fp32 (2kh-1, 2kw-1) bias-gradient partial per dq program, every one written by its program (no atomics),
    # summed here over batch and programs in a fixed order: a deterministic d(rpb).
    partials = empty(batch, heads, dq_grid[0], 2 * kh - 1, 2 * kw - 1, device=q.device, dtype=torch.float32) \
        if rpb_grad else lse
    rpb_ptr, rpb_strides = _rpb_args(q, rpb)
    strides = (*q.stride(), *k.stride(), *v.stride(), *do.stride(), *dq.stride(), *rpb_strides)
    common = dict(
        KH=kh, KW=kw, HAS_RPB=rpb is not None, BLOCK_D=plan.block_d, UPCAST_DOT=plan.upcast_dot,
        DOT_PRECISION=plan.dot_precision,
    )
    args = (scale * 1.4426950408889634, scale, h, w, heads, head_dim)
    with on_device(q):
        launch(
            neighborhood_attention_2d_bwd_dq_kernel, dq_grid,
            q, k, v, out, do, lse, delta, rpb_ptr, dq, partials, *strides, *args, dq_tiles_y, dq_tiles_x, dh, dw,
            RPB_GRAD=rpb_grad, TH=plan.dq_tile[0], TW=plan.dq_tile[1], BLOCK_RY=dot_block(2 * kh - 1),
            BLOCK_RX=dot_block(2 * kw - 1), RPB_PRECISION=plan.rpb_precision, plan=plan.bwd_dq, **common,
        )
        launch(
            neighborhood_attention_2d_bwd_dkdv_kernel, grid,
            q, k, v, do, lse, delta, rpb_ptr, dk, dv, *strides, *args, tiles_y, tiles_x, dh, dw,
            TH=plan.tile[0], TW=plan.tile[1], BLOCK_M=plan.block_n, plan=plan.bwd_dkdv, **common,
        )
    if not rpb_grad:
        return dq, dk, dv, torch.zeros((0,), device=q.device, dtype=torch.float32)
    return dq, dk, dv, partials.sum(dim=(0, 2)).to(rpb.dtype)


def _backward_fake(do, q, k, v, out, lse, kh, kw, dh, dw, rpb, scale, rpb_grad):
    return q.new_empty(q.shape), q.new_empty(q.shape), q.new_empty(q.shape), optional_grad_fake(q, rpb, rpb_grad)


def _backward_args(d_out, inputs, outputs, needs_grad):
    q, k, v, kh, kw, dh, dw, rpb, scale = inputs
    return d_out, q, k, v, *outputs, kh, kw, dh, dw, rpb, scale, needs_grad[7]


neighborhood_attention_2d_fwd, neighborhood_attention_2d_bwd = register_fwd_bwd(
    "neighborhood_attention_2d", _forward, _forward_fake, _backward, _backward_fake, _backward_args,
)


def neighborhood_attention_2d_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kernel_size: tuple[int, int],
    dilation: tuple[int, int],
    rpb: Optional[torch.Tensor] = None,
    scale: Optional[float] = None,
) -> torch.Tensor:
    """Triton backend of :func:`ops.neighborhood_attention.neighborhood_attention_2d` (shapes checked there)."""
    check_triton_dtype("neighborhood_attention_2d", q)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    out, _ = neighborhood_attention_2d_fwd(
        q, k, v, int(kernel_size[0]), int(kernel_size[1]), int(dilation[0]), int(dilation[1]), rpb, float(scale))
    return out
