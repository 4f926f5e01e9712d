"""Rank-augmented linear attention (RALA) in Triton: forward and backward kernels, registered as custom ops.

Math per batch ``b`` and head ``h`` (see :mod:`ops.rala.reference`; ``phi = elu + 1``, ``R`` the RoPE rotation,
``w`` the query-context softmax over tokens)::

    qbar = mean_i phi(q_i)                 s_j = scale qbar . phi(k_j)          w = softmax(s)
    KV   = sum_j w_j R_j phi(k_j) v_j^T    ksum = sum_j w_j phi(k_j)
    a_i  = (R_i phi(q_i))^T KV / den_i     den_i = phi(q_i) . ksum + eps
    y_i  = (a_i + r_i) * g_i               (residual r, gate g optional)

Backward, with ``da = dy * g`` and ``dan = da / den``::

    dg = dy * (a + r)       dr = da
    dKV   = sum_i R_i phi(q_i) dan_i^T                       dksum = sum_i dden_i phi(q_i),  dden_i = -dan_i . a_i
    dphi(q_i) = R_i^T (KV dan_i) + dden_i ksum + dqbar / N
    dv_j  = w_j dKV^T R_j phi(k_j)
    gw_j  = (R_j phi(k_j))^T dKV v_j + phi(k_j) . dksum      ds_j = w_j (gw_j - c),  c = <KV, dKV> + ksum . dksum
    dphi(k_j) = w_j R_j^T (dKV v_j) + w_j dksum + scale ds_j qbar
    dqbar = scale sum_j ds_j phi(k_j)
    dq = dphi(q) * elu'(q),  dk = dphi(k) * elu'(k),  elu'(x) = 1 if x > 0 else exp(x) = phi(x)

The softmax centring ``c = sum_j w_j gw_j`` is a function of the d x d states alone, so the key side needs no
extra pass. RoPE-table gradients (only when a table requires grad): ``dcos_n += phi * dR``, ``dsin_n += rot(phi)
* dR`` from both the query and the key side of token ``n``, summed over batch and heads.

Kernel design
-------------
Nothing is N x N: every pass streams (BLOCK_N, d) tiles and keeps at most a d x d fp32 state in registers.

Forward, four launches, each over (batch * heads, chunks):

1. ``rala_fwd_qsum_kernel``: per chunk of tokens, the partial sum of phi(q) (a d-vector).
2. ``rala_fwd_kv_kernel``: qbar from the partials; one pass over the chunk's k and v accumulating KV, ksum and the
   softmax normaliser with an online maximum (flash-attention style rescaling), as chunk partials.
3. ``rala_fwd_combine_kernel`` (one program per (b, h)): merges the chunk partials in a fixed order
   (deterministic) into the saved state: qbar, KV, ksum (normalised) and ``lse = max + log(sum)``.
4. ``rala_fwd_out_kernel``: the output pass, token-parallel, with residual and gate fused into the store.

Backward, four launches: ``rala_bwd_q_kernel`` (query side: dg, dr and the partial dKV / dksum; at d = 128 the
value columns are split over programs, each holding KV[:, cols] and dKV[:, cols] only), ``rala_bwd_combine_kernel``
(sums those partials once, and copies KV zero-padded to BLOCK_D x BLOCK_D), ``rala_bwd_kv_kernel`` (key side: dk,
dv and partial dqbar; the weights w are recomputed from qbar and lse), ``rala_bwd_dq_kernel`` (dq, reading the
padded KV: constant offsets, no masks). The backward has its own token tiles and chunks (:func:`launch_plan`).

Chunks (split-N): with one head and a small batch (RAVLT's stage 1 has 1 head), B * heads programs would leave
most SMs idle at N = 65536 (1024^2 input). N is cut into just enough chunks of at least ``_MIN_TILES_PER_SPLIT``
tiles to give every SM two programs; the partial states are merged by the combine kernels, read once per
program. Under the CPU interpreter there is one chunk (the tests force several).

Precision: fp32 accumulation and fp32 elementwise math for every dtype. Token tiles are upcast to fp32 and the
d x d products run as fp32 dots: IEEE for fp32 inputs (fp32 means fp32), TF32 for fp16/bf16 inputs, whose
2^-11 relative error is under their own output rounding. Arithmetic per token is O(d^2) (the d x d products)
against O(d) bytes, so the passes should be memory-bound at RAVLT's d = 64 / 96; block sizes and warp counts
(`_block_sizes`) are untuned -- no GPU measurements behind them yet.

Layout: inputs with any strides (unbind() views of a (B, N, 4, heads, d) projection), int64 addressing; d padded
to a power of two >= 16 and masked (phi of a masked element is forced to 0, not elu(0) + 1 = 1). Outputs are
contiguous in q's dtype; table gradients in the tables' dtypes.
"""
from __future__ import annotations

import dataclasses

from typing import Optional

import torch
import triton
import triton.language as tl

from ops._backend import empty
from ops._checks import check_triton_dtype
from ops._custom_op import register_fwd_bwd
from ops._plans import KernelPlan, Target, device_target, dot_options, exact_fp32, launch
from ops._triton_utils import dot, dot_block, on_device

__all__ = ["rala_triton"]

# A chunk shorter than this many tiles would spend more on its partial state than it saves.
_MIN_TILES_PER_SPLIT = 4
_PROGRAMS_PER_SM = 2


# --------------------------------------------------------------------------------------------------------
# Tile helpers.


@triton.jit
def _tile(n0, n_end, D, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    # int64: B * N * 4 * C passes 2^31 elements at segmentation resolutions.
    offs_n = (n0 + tl.arange(0, BLOCK_N)).to(tl.int64)
    offs_d = tl.arange(0, BLOCK_D)
    valid = offs_n < n_end
    return offs_n, offs_d, valid, valid[:, None] & (offs_d[None, :] < D)


@triton.jit
def _load(ptr, offs_n, offs_d, mask, stride_n, stride_d):
    return tl.load(ptr + offs_n[:, None] * stride_n + offs_d[None, :] * stride_d, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _store(ptr, x, offs_n, offs_d, mask, stride_n, stride_d):
    tl.store(ptr + offs_n[:, None] * stride_n + offs_d[None, :] * stride_d, x.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def _phi(x, mask):
    """elu(x) + 1 (= exp(x) for x <= 0), 0 outside the mask."""
    return tl.where(mask, tl.where(x > 0, x + 1.0, tl.exp(tl.minimum(x, 0.0))), 0.0)


@triton.jit
def _rot(x, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """(x[2c], x[2c+1]) -> (-x[2c+1], x[2c]) along the channels."""
    even, odd = tl.split(tl.reshape(x, (BLOCK_N, BLOCK_D // 2, 2)))
    return tl.reshape(tl.join(-odd, even), (BLOCK_N, BLOCK_D))


@triton.jit
def _rope(x, sin, cos, HAS_ROPE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    if HAS_ROPE:
        x = x * cos + _rot(x, BLOCK_N, BLOCK_D) * sin
    return x


@triton.jit
def _rope_t(y, sin, cos, HAS_ROPE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """R^T y = y * cos - rot(y * sin) (rot is antisymmetric)."""
    if HAS_ROPE:
        y = y * cos - _rot(y * sin, BLOCK_N, BLOCK_D)
    return y


@triton.jit
def _load_tables(sin_ptr, cos_ptr, offs_n, offs_d, mask, stride_tn, stride_td, HAS_ROPE: tl.constexpr):
    # Without tables the values are never read (_rope / _rope_t are the identity then).
    sin = 0.0
    cos = 1.0
    if HAS_ROPE:
        sin = _load(sin_ptr, offs_n, offs_d, mask, stride_tn, stride_td)
        cos = _load(cos_ptr, offs_n, offs_d, mask, stride_tn, stride_td)
    return sin, cos


@triton.jit
def _chunk_bounds(i_s, N, TILES_PER_SPLIT, BLOCK_N: tl.constexpr):
    n_start = i_s * TILES_PER_SPLIT * BLOCK_N
    return n_start, tl.minimum(n_start + TILES_PER_SPLIT * BLOCK_N, N)


@triton.jit
def _vec_ptrs(ptr, D, BLOCK_D: tl.constexpr):
    offs = tl.arange(0, BLOCK_D)
    return ptr + offs, offs < D


@triton.jit
def _mat_ptrs(ptr, D, row_stride, BLOCK_D: tl.constexpr):
    offs = tl.arange(0, BLOCK_D)
    return ptr + offs[:, None] * row_stride + offs[None, :], (offs[:, None] < D) & (offs[None, :] < D)


@triton.jit
def _sum_vec_partials(ws, i_bh, num_splits, BLOCK_D: tl.constexpr):
    offs = tl.arange(0, BLOCK_D)
    acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    # Fixed order: results do not depend on which chunk finished first.
    for s in range(num_splits):
        acc += tl.load(ws + (i_bh * num_splits + s) * BLOCK_D + offs)
    return acc


# --------------------------------------------------------------------------------------------------------
# Forward.


@triton.jit
def rala_fwd_qsum_kernel(
    q, ws_q,
    stride_qb, stride_qn, stride_qh, stride_qd,
    N, NH, D, TILES_PER_SPLIT,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """Partial sum over one chunk of phi(q), (BLOCK_D,) fp32."""
    i_bh, i_s = tl.program_id(0).to(tl.int64), tl.program_id(1)
    q += (i_bh // NH) * stride_qb + (i_bh % NH) * stride_qh
    n_start, n_end = _chunk_bounds(i_s, N, TILES_PER_SPLIT, BLOCK_N)
    acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for n0 in range(n_start, n_end, BLOCK_N):
        offs_n, offs_d, _, mask = _tile(n0, n_end, D, BLOCK_N, BLOCK_D)
        acc += tl.sum(_phi(_load(q, offs_n, offs_d, mask, stride_qn, stride_qd), mask), axis=0)
    tl.store(ws_q + (i_bh * tl.num_programs(1) + i_s) * BLOCK_D + tl.arange(0, BLOCK_D), acc)


@triton.jit
def rala_fwd_kv_kernel(
    k, v, sin, cos, ws_q, ws_kv, ws_ks, ws_mz,
    stride_kb, stride_kn, stride_kh, stride_kd,
    stride_vb, stride_vn, stride_vh, stride_vd,
    stride_tn, stride_td,
    scale, N, NH, D, TILES_PER_SPLIT,
    HAS_ROPE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, UPCAST_DOT: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """One chunk's unnormalised KV, ksum, softmax max and sum, relative to the chunk's own maximum."""
    i_bh, i_s = tl.program_id(0).to(tl.int64), tl.program_id(1)
    num_splits = tl.num_programs(1)
    i_b, i_h = i_bh // NH, i_bh % NH
    k += i_b * stride_kb + i_h * stride_kh
    v += i_b * stride_vb + i_h * stride_vh
    qbar = _sum_vec_partials(ws_q, i_bh, num_splits, BLOCK_D) / N

    m = tl.max(tl.full((BLOCK_N,), float("-inf"), tl.float32), axis=0)
    z = tl.sum(tl.zeros((BLOCK_N,), tl.float32), axis=0)
    ks = tl.zeros((BLOCK_D,), dtype=tl.float32)
    kv = tl.zeros((BLOCK_D, BLOCK_D), dtype=tl.float32)
    n_start, n_end = _chunk_bounds(i_s, N, TILES_PER_SPLIT, BLOCK_N)
    for n0 in range(n_start, n_end, BLOCK_N):
        offs_n, offs_d, valid, mask = _tile(n0, n_end, D, BLOCK_N, BLOCK_D)
        phk = _phi(_load(k, offs_n, offs_d, mask, stride_kn, stride_kd), mask)
        s = tl.where(valid, tl.sum(phk * qbar[None, :], axis=1) * scale, float("-inf"))
        # Every tile holds a valid token, so m_new is finite and alpha = exp(-inf) = 0 on the first tile.
        m_new = tl.maximum(m, tl.max(s, axis=0))
        alpha = tl.exp(m - m_new)
        p = tl.exp(s - m_new)
        sin_t, cos_t = _load_tables(sin, cos, offs_n, offs_d, mask, stride_tn, stride_td, HAS_ROPE)
        rk = _rope(phk, sin_t, cos_t, HAS_ROPE, BLOCK_N, BLOCK_D) * p[:, None]
        vt = _load(v, offs_n, offs_d, mask, stride_vn, stride_vd)
        kv = dot(tl.trans(rk), vt, UPCAST_DOT, DOT_PRECISION, acc=kv * alpha)
        ks = ks * alpha + tl.sum(phk * p[:, None], axis=0)
        z = z * alpha + tl.sum(p, axis=0)
        m = m_new

    i_ws = i_bh * num_splits + i_s
    offs = tl.arange(0, BLOCK_D)
    tl.store(ws_kv + i_ws * BLOCK_D * BLOCK_D + offs[:, None] * BLOCK_D + offs[None, :], kv)
    tl.store(ws_ks + i_ws * BLOCK_D + offs, ks)
    tl.store(ws_mz + i_ws * 2, m)
    tl.store(ws_mz + i_ws * 2 + 1, z)


@triton.jit
def rala_fwd_combine_kernel(
    ws_q, ws_kv, ws_ks, ws_mz, qbar_out, kv_out, ks_out, lse_out,
    N, D, num_splits,
    BLOCK_D: tl.constexpr,
):
    """Merges the chunk partials of one (b, h) into the normalised state the output pass and backward read."""
    i_bh = tl.program_id(0).to(tl.int64)
    m = tl.load(ws_mz + i_bh * num_splits * 2)
    for s in range(1, num_splits):
        m = tl.maximum(m, tl.load(ws_mz + (i_bh * num_splits + s) * 2))
    offs = tl.arange(0, BLOCK_D)
    z = m * 0.0
    ks = tl.zeros((BLOCK_D,), dtype=tl.float32)
    kv = tl.zeros((BLOCK_D, BLOCK_D), dtype=tl.float32)
    for s in range(num_splits):
        i_ws = i_bh * num_splits + s
        e = tl.exp(tl.load(ws_mz + i_ws * 2) - m)
        z += tl.load(ws_mz + i_ws * 2 + 1) * e
        ks += tl.load(ws_ks + i_ws * BLOCK_D + offs) * e
        kv += tl.load(ws_kv + i_ws * BLOCK_D * BLOCK_D + offs[:, None] * BLOCK_D + offs[None, :]) * e
    qbar = _sum_vec_partials(ws_q, i_bh, num_splits, BLOCK_D) / N
    ptrs, vmask = _vec_ptrs(qbar_out + i_bh * D, D, BLOCK_D)
    tl.store(ptrs, qbar, mask=vmask)
    ptrs, vmask = _vec_ptrs(ks_out + i_bh * D, D, BLOCK_D)
    tl.store(ptrs, ks / z, mask=vmask)
    ptrs, mmask = _mat_ptrs(kv_out + i_bh * D * D, D, D, BLOCK_D)
    tl.store(ptrs, kv / z, mask=mmask)
    tl.store(lse_out + i_bh, m + tl.log(z))


@triton.jit
def _load_state(kv_ptr, ks_ptr, i_bh, D, BLOCK_D: tl.constexpr):
    # Padded rows / columns load as 0 and so stay out of every product.
    ptrs, mmask = _mat_ptrs(kv_ptr + i_bh * D * D, D, D, BLOCK_D)
    kv = tl.load(ptrs, mask=mmask, other=0.0)
    ptrs, vmask = _vec_ptrs(ks_ptr + i_bh * D, D, BLOCK_D)
    return kv, tl.load(ptrs, mask=vmask, other=0.0)


@triton.jit
def _attend(q, sin, cos, kv, ks, offs_n, offs_d, mask, stride_qn, stride_qd, stride_tn, stride_td, eps,
            HAS_ROPE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """(phi(q), tables, den, a) of one query tile."""
    qt = _load(q, offs_n, offs_d, mask, stride_qn, stride_qd)
    phq = _phi(qt, mask)
    sin_t, cos_t = _load_tables(sin, cos, offs_n, offs_d, mask, stride_tn, stride_td, HAS_ROPE)
    rq = _rope(phq, sin_t, cos_t, HAS_ROPE, BLOCK_N, BLOCK_D)
    den = tl.sum(phq * ks[None, :], axis=1) + eps
    a = tl.dot(rq, kv, input_precision=DOT_PRECISION) / den[:, None]
    return qt, phq, rq, sin_t, cos_t, den, a


@triton.jit
def rala_fwd_out_kernel(
    q, gate, res, sin, cos, kv_state, ks_state, out,
    stride_qb, stride_qn, stride_qh, stride_qd,
    stride_gb, stride_gn, stride_gh, stride_gd,
    stride_rb, stride_rn, stride_rh, stride_rd,
    stride_ob, stride_on, stride_oh, stride_od,
    stride_tn, stride_td,
    eps, N, NH, D, TILES_PER_SPLIT,
    HAS_GATE: tl.constexpr, HAS_RES: tl.constexpr, HAS_ROPE: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    i_bh, i_s = tl.program_id(0).to(tl.int64), tl.program_id(1)
    i_b, i_h = i_bh // NH, i_bh % NH
    q += i_b * stride_qb + i_h * stride_qh
    gate += i_b * stride_gb + i_h * stride_gh
    res += i_b * stride_rb + i_h * stride_rh
    out += i_b * stride_ob + i_h * stride_oh
    kv, ks = _load_state(kv_state, ks_state, i_bh, D, BLOCK_D)
    n_start, n_end = _chunk_bounds(i_s, N, TILES_PER_SPLIT, BLOCK_N)
    for n0 in range(n_start, n_end, BLOCK_N):
        offs_n, offs_d, _, mask = _tile(n0, n_end, D, BLOCK_N, BLOCK_D)
        _, _, _, _, _, _, y = _attend(q, sin, cos, kv, ks, offs_n, offs_d, mask, stride_qn, stride_qd,
                                      stride_tn, stride_td, eps, HAS_ROPE, BLOCK_N, BLOCK_D, DOT_PRECISION)
        if HAS_RES:
            y += _load(res, offs_n, offs_d, mask, stride_rn, stride_rd)
        if HAS_GATE:
            y *= _load(gate, offs_n, offs_d, mask, stride_gn, stride_gd)
        _store(out, y, offs_n, offs_d, mask, stride_on, stride_od)


# --------------------------------------------------------------------------------------------------------
# Backward.


@triton.jit
def _gate_grads(do, gate, offs_n, offs_d, mask, stride_don, stride_dod, stride_gn, stride_gd, HAS_GATE: tl.constexpr):
    """(dy, g * dy): dy and the gradient of the pre-gate sum."""
    dy = _load(do, offs_n, offs_d, mask, stride_don, stride_dod)
    if HAS_GATE:
        return dy, dy * _load(gate, offs_n, offs_d, mask, stride_gn, stride_gd)
    return dy, dy


@triton.jit
def rala_bwd_q_kernel(
    do, q, gate, res, sin, cos, kv_state, ks_state, dgate, dres, ws_dkv, ws_dks,
    stride_dob, stride_don, stride_doh, stride_dod,
    stride_qb, stride_qn, stride_qh, stride_qd,
    stride_gb, stride_gn, stride_gh, stride_gd,
    stride_rb, stride_rn, stride_rh, stride_rd,
    stride_xb, stride_xn, stride_xh, stride_xd,
    stride_tn, stride_td,
    eps, N, NH, D, TILES_PER_SPLIT, COL_SPLITS,
    HAS_GATE: tl.constexpr, HAS_RES: tl.constexpr, HAS_ROPE: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_C: tl.constexpr, UPCAST_DOT: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """Query side of one chunk and one block of ``BLOCK_C`` value columns: dgate, dres (strides ``stride_x*``,
    contiguous like q) of those columns, the chunk's partial dKV[:, cols] and the partial dksum_c = sum_i
    dden_{i,c} phi(q_i), dden_{i,c} = -sum_{cols} dan * a (dden is a sum over the columns, so the column blocks'
    partials add up to dksum; the combine kernel sums them in a fixed order).

    Column blocks (``COL_SPLITS`` of them cover D; see :func:`launch_plan`): a[:, cols] = R phi(q) KV[:, cols] /
    den needs the whole q tile (loaded anyway for den = phi(q) . ksum) but only KV's columns, so a program holds
    KV[:, cols] and dKV[:, cols] instead of the whole d x d of both. The block index is the fastest-varying part
    of grid axis 0: the blocks of one chunk run side by side and read its q / table tiles from L2."""
    i_bc, i_s = tl.program_id(0).to(tl.int64), tl.program_id(1)
    i_bh, i_c = i_bc // COL_SPLITS, i_bc % COL_SPLITS
    i_b, i_h = i_bh // NH, i_bh % NH
    do += i_b * stride_dob + i_h * stride_doh
    q += i_b * stride_qb + i_h * stride_qh
    gate += i_b * stride_gb + i_h * stride_gh
    res += i_b * stride_rb + i_h * stride_rh
    dgate += i_b * stride_xb + i_h * stride_xh
    dres += i_b * stride_xb + i_h * stride_xh
    offs = tl.arange(0, BLOCK_D)
    offs_c = i_c * BLOCK_C + tl.arange(0, BLOCK_C)
    # KV[:, cols]; padded rows / columns load as 0 and so stay out of every product.
    kv = tl.load(kv_state + i_bh * D * D + offs[:, None] * D + offs_c[None, :],
                 mask=(offs[:, None] < D) & (offs_c[None, :] < D), other=0.0)
    ptrs, vmask = _vec_ptrs(ks_state + i_bh * D, D, BLOCK_D)
    ks = tl.load(ptrs, mask=vmask, other=0.0)
    dkv = tl.zeros((BLOCK_D, BLOCK_C), dtype=tl.float32)
    dks = tl.zeros((BLOCK_D,), dtype=tl.float32)
    n_start, n_end = _chunk_bounds(i_s, N, TILES_PER_SPLIT, BLOCK_N)
    for n0 in range(n_start, n_end, BLOCK_N):
        offs_n, offs_d, valid, mask = _tile(n0, n_end, D, BLOCK_N, BLOCK_D)
        _, phq, rq, _, _, den, a = _attend(q, sin, cos, kv, ks, offs_n, offs_d, mask, stride_qn, stride_qd,
                                           stride_tn, stride_td, eps, HAS_ROPE, BLOCK_N, BLOCK_D, DOT_PRECISION)
        cmask = valid[:, None] & (offs_c[None, :] < D)
        dy, da = _gate_grads(do, gate, offs_n, offs_c, cmask, stride_don, stride_dod, stride_gn, stride_gd, HAS_GATE)
        if HAS_GATE:
            pre = a
            if HAS_RES:
                pre += _load(res, offs_n, offs_c, cmask, stride_rn, stride_rd)
            _store(dgate, dy * pre, offs_n, offs_c, cmask, stride_xn, stride_xd)
        if HAS_RES:
            _store(dres, da, offs_n, offs_c, cmask, stride_xn, stride_xd)
        # Everything that links the dKV dot to the rest of the loop passes a transpose: its operands (R phi(q)^T,
        # (dan^T)^T) and dksum's update. Triton (3.x, AccelerateMatmul's warpsPerTileV2) gives dots linked through
        # other ops ("chained") one warp layout, the first one's: here dKV's (BLOCK_D, BLOCK_C), warps stacked
        # along M, which makes every warp of the (BLOCK_N, BLOCK_C) dot computing a work on the same rows with the
        # whole KV[:, cols] as its operand (bf16, sm_80: 255 registers at d = 128 with 64 columns and at d = 64
        # with 32 tokens). Transposes end the slice of linked ops, so each dot gets its own layout: 177 and 172.
        dan_t = tl.trans(da) / den[None, :]
        dkv = dot(tl.trans(rq), tl.trans(dan_t), UPCAST_DOT, DOT_PRECISION, acc=dkv)
        dden = -tl.sum(da * a, axis=1) / den
        dks += tl.sum(tl.trans(dden[:, None] * phq), axis=1)
    i_ws = i_bh * tl.num_programs(1) + i_s
    # COL_SPLITS * BLOCK_C <= BLOCK_D (powers of two, COL_SPLITS = cdiv(D, BLOCK_C)): no mask.
    tl.store(ws_dkv + i_ws * BLOCK_D * BLOCK_D + offs[:, None] * BLOCK_D + offs_c[None, :], dkv)
    tl.store(ws_dks + (i_ws * COL_SPLITS + i_c) * BLOCK_D + offs, dks)


@triton.jit
def rala_bwd_combine_kernel(ws_dkv, ws_dks, kv_state, dkv_out, dks_out, kv_out, D, num_splits, col_splits,
                            BLOCK_D: tl.constexpr):
    """Sums the chunk partials of dKV and the chunk x column-block partials of dksum of one (b, h) in a fixed
    order, and copies KV; all three padded to BLOCK_D with zeros (dKV's rows and columns from D on are 0 whatever
    the partials hold there: the column blocks need not cover them). The padded copies have constexpr strides
    and need no masks: the kv / dq kernels read them inside their token loops."""
    i_bh = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK_D)
    mat = offs[:, None] * BLOCK_D + offs[None, :]
    mmask = (offs[:, None] < D) & (offs[None, :] < D)
    kv = tl.load(kv_state + i_bh * D * D + offs[:, None] * D + offs[None, :], mask=mmask, other=0.0)
    tl.store(kv_out + i_bh * BLOCK_D * BLOCK_D + mat, kv)
    dkv = tl.zeros((BLOCK_D, BLOCK_D), dtype=tl.float32)
    for s in range(num_splits):
        dkv += tl.load(ws_dkv + (i_bh * num_splits + s) * BLOCK_D * BLOCK_D + mat, mask=mmask, other=0.0)
    tl.store(dkv_out + i_bh * BLOCK_D * BLOCK_D + mat, dkv)
    tl.store(dks_out + i_bh * BLOCK_D + offs, _sum_vec_partials(ws_dks, i_bh, num_splits * col_splits, BLOCK_D))


@triton.jit
def rala_bwd_kv_kernel(
    k, v, sin, cos, qbar_state, kv_state, ks_state, lse_state, dkv_sum, dks_sum, dk, dv, ws_dqbar, dsin, dcos,
    stride_kb, stride_kn, stride_kh, stride_kd,
    stride_vb, stride_vn, stride_vh, stride_vd,
    stride_xb, stride_xn, stride_xh, stride_xd,
    stride_tn, stride_td,
    scale, N, NH, D, TILES_PER_SPLIT,
    HAS_ROPE: tl.constexpr, ROPE_GRAD: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
    STATE_IN_LOOP: tl.constexpr,
):
    """Key side: dk, dv (strides ``stride_x*``), the chunk's partial dqbar and the key-side table gradients.

    ``STATE_IN_LOOP``: read dKV inside the token loop, right before each dot, instead of keeping it live over the
    loop: the dots' operand copies in shared memory then no longer live at the same time (a 128 x 128 fp32
    state is 64 KB per copy; see :func:`launch_plan`)."""
    i_bh, i_s = tl.program_id(0).to(tl.int64), tl.program_id(1)
    i_b, i_h = i_bh // NH, i_bh % NH
    k += i_b * stride_kb + i_h * stride_kh
    v += i_b * stride_vb + i_h * stride_vh
    dk += i_b * stride_xb + i_h * stride_xh
    dv += i_b * stride_xb + i_h * stride_xh
    offs = tl.arange(0, BLOCK_D)
    kv, ks = _load_state(kv_state, ks_state, i_bh, D, BLOCK_D)
    ptrs, vmask = _vec_ptrs(qbar_state + i_bh * D, D, BLOCK_D)
    qbar = tl.load(ptrs, mask=vmask, other=0.0)
    lse = tl.load(lse_state + i_bh)
    dkv_ptrs = dkv_sum + i_bh * BLOCK_D * BLOCK_D + offs[:, None] * BLOCK_D + offs[None, :]
    dkv = tl.load(dkv_ptrs)
    dks = tl.load(dks_sum + i_bh * BLOCK_D + offs)
    # sum_j w_j gw_j, the softmax-backward centring, from the states alone.
    centre = tl.sum(tl.sum(kv * dkv, axis=1), axis=0) + tl.sum(ks * dks, axis=0)
    dqbar = tl.zeros((BLOCK_D,), dtype=tl.float32)
    n_start, n_end = _chunk_bounds(i_s, N, TILES_PER_SPLIT, BLOCK_N)
    for n0 in range(n_start, n_end, BLOCK_N):
        offs_n, offs_d, valid, mask = _tile(n0, n_end, D, BLOCK_N, BLOCK_D)
        kt = _load(k, offs_n, offs_d, mask, stride_kn, stride_kd)
        phk = _phi(kt, mask)
        sin_t, cos_t = _load_tables(sin, cos, offs_n, offs_d, mask, stride_tn, stride_td, HAS_ROPE)
        rk = _rope(phk, sin_t, cos_t, HAS_ROPE, BLOCK_N, BLOCK_D)
        w = tl.where(valid, tl.exp(tl.sum(phk * qbar[None, :], axis=1) * scale - lse), 0.0)
        vt = _load(v, offs_n, offs_d, mask, stride_vn, stride_vd)
        dkv_t = dkv
        if STATE_IN_LOOP:
            dkv_t = tl.load(dkv_ptrs)
        dkv_v = dot(vt, tl.trans(dkv_t), UPCAST_DOT, DOT_PRECISION)  # (dKV v_j)^T per row
        gw = tl.sum(rk * dkv_v, axis=1) + tl.sum(phk * dks[None, :], axis=1)
        ds = w * (gw - centre) * scale
        drk = w[:, None] * dkv_v
        dphk = _rope_t(drk, sin_t, cos_t, HAS_ROPE, BLOCK_N, BLOCK_D) + w[:, None] * dks[None, :] \
            + ds[:, None] * qbar[None, :]
        _store(dk, dphk * tl.where(kt > 0, 1.0, phk), offs_n, offs_d, mask, stride_xn, stride_xd)
        if STATE_IN_LOOP:
            dkv_t = tl.load(dkv_ptrs)
        dvt = w[:, None] * dot(rk, dkv_t, UPCAST_DOT, DOT_PRECISION)
        _store(dv, dvt, offs_n, offs_d, mask, stride_xn, stride_xd)
        dqbar += tl.sum(ds[:, None] * phk, axis=0)
        if ROPE_GRAD:
            # Per-(b, h) rows of the table gradients (B * heads, N, D) fp32; the query side adds to them.
            tab = i_bh * N * D + offs_n[:, None] * D + offs_d[None, :]
            tl.store(dcos + tab, phk * drk, mask=mask)
            tl.store(dsin + tab, _rot(phk, BLOCK_N, BLOCK_D) * drk, mask=mask)
    tl.store(ws_dqbar + (i_bh * tl.num_programs(1) + i_s) * BLOCK_D + offs, dqbar)


@triton.jit
def rala_bwd_dq_kernel(
    do, q, gate, sin, cos, kv_pad, ks_state, ws_dqbar, dq, dsin, dcos,
    stride_dob, stride_don, stride_doh, stride_dod,
    stride_qb, stride_qn, stride_qh, stride_qd,
    stride_gb, stride_gn, stride_gh, stride_gd,
    stride_xb, stride_xn, stride_xh, stride_xd,
    stride_tn, stride_td,
    eps, N, NH, D, TILES_PER_SPLIT,
    HAS_GATE: tl.constexpr, HAS_ROPE: tl.constexpr, ROPE_GRAD: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, DOT_PRECISION: tl.constexpr, STATE_IN_LOOP: tl.constexpr,
):
    """dq (strides ``stride_x*``) and the query-side table gradients, added to the key side's. KV is read from
    the combine kernel's zero-padded copy ``kv_pad`` (BLOCK_D x BLOCK_D per (b, h)): constant offsets, no masks.
    ``STATE_IN_LOOP``: as in :func:`rala_bwd_kv_kernel`, for KV."""
    i_bh, i_s = tl.program_id(0).to(tl.int64), tl.program_id(1)
    i_b, i_h = i_bh // NH, i_bh % NH
    do += i_b * stride_dob + i_h * stride_doh
    q += i_b * stride_qb + i_h * stride_qh
    gate += i_b * stride_gb + i_h * stride_gh
    dq += i_b * stride_xb + i_h * stride_xh
    offs = tl.arange(0, BLOCK_D)
    kv_pad += i_bh * BLOCK_D * BLOCK_D
    kv_ptrs = kv_pad + offs[:, None] * BLOCK_D + offs[None, :]
    kv = tl.load(kv_ptrs)
    ptrs, vmask = _vec_ptrs(ks_state + i_bh * D, D, BLOCK_D)
    ks = tl.load(ptrs, mask=vmask, other=0.0)
    dqbar = _sum_vec_partials(ws_dqbar, i_bh, tl.num_programs(1), BLOCK_D) / N
    n_start, n_end = _chunk_bounds(i_s, N, TILES_PER_SPLIT, BLOCK_N)
    for n0 in range(n_start, n_end, BLOCK_N):
        offs_n, offs_d, _, mask = _tile(n0, n_end, D, BLOCK_N, BLOCK_D)
        kv_t = kv
        if STATE_IN_LOOP:
            kv_t = tl.load(kv_ptrs)
        qt, phq, _, sin_t, cos_t, den, a = _attend(q, sin, cos, kv_t, ks, offs_n, offs_d, mask, stride_qn,
                                                   stride_qd, stride_tn, stride_td, eps, HAS_ROPE, BLOCK_N, BLOCK_D,
                                                   DOT_PRECISION)
        _, da = _gate_grads(do, gate, offs_n, offs_d, mask, stride_don, stride_dod, stride_gn, stride_gd, HAS_GATE)
        dan = da / den[:, None]
        if STATE_IN_LOOP:
            # KV^T read as such (a transposed view of the load above would be the same load, merged with it).
            kv_tt = tl.load(kv_pad + offs[None, :] * BLOCK_D + offs[:, None])
        else:
            kv_tt = tl.trans(kv)
        drq = tl.dot(dan, kv_tt, input_precision=DOT_PRECISION)
        dden = -tl.sum(dan * a, axis=1)
        dphq = _rope_t(drq, sin_t, cos_t, HAS_ROPE, BLOCK_N, BLOCK_D) + dden[:, None] * ks[None, :] + dqbar[None, :]
        _store(dq, dphq * tl.where(qt > 0, 1.0, phq), offs_n, offs_d, mask, stride_xn, stride_xd)
        if ROPE_GRAD:
            tab = i_bh * N * D + offs_n[:, None] * D + offs_d[None, :]
            tl.store(dcos + tab, tl.load(dcos + tab, mask=mask) + phq * drq, mask=mask)
            tl.store(dsin + tab, tl.load(dsin + tab, mask=mask) + _rot(phq, BLOCK_N, BLOCK_D) * drq, mask=mask)


# --------------------------------------------------------------------------------------------------------
# Launch plan.


def _block_sizes(head_dim: int) -> tuple[int, int, int]:
    """(BLOCK_N, BLOCK_D, num_warps): about 4K elements per token tile; 8 warps hold a 128 x 128 fp32 state."""
    block_d = dot_block(head_dim)
    return max(16, min(64, 4096 // block_d)), block_d, 8 if block_d >= 128 else 4


def _num_splits(num_tiles: int, batch_heads: int, target: Target) -> int:
    """How many chunks N is cut into; see the module docstring."""
    if target.interpret:
        return 1
    wanted = _PROGRAMS_PER_SM * target.sms
    if batch_heads >= wanted:
        return 1
    return max(1, min(triton.cdiv(wanted, batch_heads), num_tiles // _MIN_TILES_PER_SPLIT))


@dataclasses.dataclass(frozen=True)
class RalaPlan:
    """Chunks of N (``splits`` of ``tiles_per_split`` tiles of ``block_n`` tokens; no chunk is empty), the
    channel tile and one :class:`KernelPlan` per kernel (by kernel name without ``rala_`` / ``_kernel``);
    ``upcast_dot`` / ``dot_precision`` see :func:`ops._plans.dot_options`; ``state_in_loop``: the backward kv / dq
    kernels read their d x d state inside the token loop (``STATE_IN_LOOP``); ``block_c`` / ``col_splits``: the
    query-side backward covers the value columns in ``col_splits`` blocks of ``block_c`` (``BLOCK_C``), one program
    each (``col_splits = cdiv(head_dim, block_c)``; 1 and ``block_d``: no split)."""

    splits: int
    tiles_per_split: int
    block_n: int
    block_d: int
    kernels: dict
    upcast_dot: bool
    dot_precision: str
    state_in_loop: bool = False
    block_c: int = 0
    col_splits: int = 1


_KERNELS = ("fwd_qsum", "fwd_kv", "fwd_combine", "fwd_out", "bwd_q", "bwd_combine", "bwd_kv", "bwd_dq")


def launch_plan(target: Target, dtype: torch.dtype, head_dim: int, n: int, batch_heads: int,
                backward: bool = False) -> RalaPlan:
    """The launch plan for ``n`` tokens of ``batch_heads`` (batch x heads) independent heads; ``backward``: the
    backward's (its chunks need not be the forward's: the state between them is combined)."""
    upcast_dot, dot_precision = dot_options(dtype, target)
    block_n, block_d, num_warps = _block_sizes(head_dim)
    if not target.interpret:
        # The backward q / kv / dq kernels spill at 4 warps from head_dim 64 on, even in bf16.
        num_warps = 8
    exact = exact_fp32(dtype) and not target.interpret
    if (exact or block_d >= 128) and not target.interpret:
        # FMA dots: a (BLOCK_N, 128) token tile against the 128 x 128 state spills at 32 tokens; 16 hold.
        # Tensor-core dots at d = 128 (RAVLT-B / L, head_dim 96): the backward's ten-odd live (32, 128) fp32
        # tiles next to the state spill 0.2-1 KB; (16, 128) tiles do not.
        block_n = 16
    elif backward and block_d == 64 and not target.interpret:
        # d = 64 (RAVLT-T / S), tensor-core dots: at 64 tokens the kv / dq kernels spill 280-365 B per thread
        # (bf16 / fp16, sm_80 / sm_86), 390-570 B with TF32 inputs; at 32 tokens the backward kernels use 165-185
        # registers, 130-175 with TF32, and spill nothing (sm_80 / sm_86 / sm_90; STATE_IN_LOOP at 32 tokens:
        # 180-215). The forward keeps 64 (no spill).
        block_n = 32
    num_tiles = max(1, triton.cdiv(n, block_n))
    splits = max(1, min(_num_splits(num_tiles, batch_heads, target), num_tiles))
    tiles_per_split = triton.cdiv(num_tiles, splits)
    # One stage: the token loops' loads are small next to the (D, D) state; three stages of the backward kv / dq
    # kernels at head_dim 96 (padded to 128) need 244-256 KB of shared memory, over any GPU's limit.
    kernels = {name: KernelPlan(num_warps, 1) for name in _KERNELS}
    block_c = block_d
    if block_d >= 128 and not target.interpret:
        # The query-side backward keeps KV[:, cols] and accumulates dKV[:, cols] (fp32) next to its token tiles:
        # the whole 128 x 128 of both spilled 570-750 B (bf16 / fp16, sm_80 / sm_86; 0.8 KB with FMA dots at 16
        # warps). Tensor-core dots, 64 columns: 170-180 registers, no spill (the whole state: 255, no spill -- no
        # margin). FMA dots, 32 columns (3 blocks cover head_dim 96 without padding): 160-170, no spill (64: 255).
        block_c = 32 if exact else 64
    if block_d >= 128 and exact:
        # FMA dots at d = 128: the dq kernel spills 20-40 B at 8 warps (sm_80 / sm_90), nothing at 16. (The kv
        # kernel: 0-20 B at 8 warps, 0-16 B at 16.)
        kernels["bwd_dq"] = KernelPlan(16, 1)
    elif block_d == 64 and exact:
        # FMA dots at d = 64: the kv kernel spills 8 B on sm_90 at 8 warps (4 warps: 12 B with table gradients),
        # nothing at 16 (64-72 registers), with or without table gradients.
        kernels["bwd_kv"] = KernelPlan(16, 1)
    # The backward kv / dq kernels' two dots read the d x d fp32 state in two layouts: two shared-memory copies
    # (2 x 64 KB at d = 128) plus the token tiles' (155 KB for RAVLT-B in bf16, sm_80). Where that is over the
    # target's limit (sm_86 / sm_89: 99 KB) the state is read inside the loop, one copy at a time (an extra
    # L2 read of the state per token tile).
    state_bytes = block_d * block_d * 4
    state_in_loop = not target.interpret and not exact and 2 * state_bytes + 2 * block_n * block_d * 4 > target.smem
    return RalaPlan(triton.cdiv(num_tiles, tiles_per_split), tiles_per_split, block_n, block_d, kernels,
                    upcast_dot, dot_precision, state_in_loop, block_c, triton.cdiv(head_dim, block_c))


def _opt(t: Optional[torch.Tensor], q: torch.Tensor, ndim: int):
    # An absent tensor is never read (its HAS_* flag is False); q stands in as a valid pointer.
    return (t, t.stride()) if t is not None else (q, (0,) * ndim)


# --------------------------------------------------------------------------------------------------------
# Custom ops.


def _forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gate: Optional[torch.Tensor],
    residual: Optional[torch.Tensor],
    sin: Optional[torch.Tensor],
    cos: Optional[torch.Tensor],
    scale: float,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``out`` (B, N, heads, D) in q's dtype and the fp32 state for the backward: qbar (B, heads, D),
    KV (B, heads, D, D), ksum (B, heads, D), lse (B, heads)."""
    batch, n, heads, head_dim = q.shape
    dev = q.device
    out = empty(batch, n, heads, head_dim, device=dev, dtype=q.dtype)
    qbar = empty(batch, heads, head_dim, device=dev, dtype=torch.float32)
    kv = empty(batch, heads, head_dim, head_dim, device=dev, dtype=torch.float32)
    ks = empty(batch, heads, head_dim, device=dev, dtype=torch.float32)
    lse = empty(batch, heads, device=dev, dtype=torch.float32)
    if batch * heads * n == 0 or head_dim == 0:
        return out, qbar, kv, ks, lse
    bh = batch * heads
    plan = launch_plan(device_target(q.device), q.dtype, head_dim, n, bh)
    splits, tps, block_n, block_d = plan.splits, plan.tiles_per_split, plan.block_n, plan.block_d
    kp = plan.kernels
    ws_q = empty(bh, splits, block_d, device=dev, dtype=torch.float32)
    ws_kv = empty(bh, splits, block_d, block_d, device=dev, dtype=torch.float32)
    ws_ks = empty(bh, splits, block_d, device=dev, dtype=torch.float32)
    ws_mz = empty(bh, splits, 2, device=dev, dtype=torch.float32)
    gate_p, gate_s = _opt(gate, q, 4)
    res_p, res_s = _opt(residual, q, 4)
    sin_p, tab_s = _opt(sin, q, 2)
    cos_p, _ = _opt(cos, q, 2)
    upcast_dot, dot_precision = plan.upcast_dot, plan.dot_precision
    grid = (bh, splits)
    common = dict(BLOCK_N=block_n, BLOCK_D=block_d)
    with on_device(q):
        launch(rala_fwd_qsum_kernel, grid, q, ws_q, *q.stride(), n, heads, head_dim, tps, plan=kp["fwd_qsum"],
               **common)
        launch(
            rala_fwd_kv_kernel, grid,
            k, v, sin_p, cos_p, ws_q, ws_kv, ws_ks, ws_mz, *k.stride(), *v.stride(), *tab_s,
            scale, n, heads, head_dim, tps,
            HAS_ROPE=sin is not None, UPCAST_DOT=upcast_dot, DOT_PRECISION=dot_precision, plan=kp["fwd_kv"],
            **common,
        )
        launch(
            rala_fwd_combine_kernel, (bh,),
            ws_q, ws_kv, ws_ks, ws_mz, qbar, kv, ks, lse, n, head_dim, splits, BLOCK_D=block_d,
            plan=kp["fwd_combine"],
        )
        launch(
            rala_fwd_out_kernel, grid,
            q, gate_p, res_p, sin_p, cos_p, kv, ks, out,
            *q.stride(), *gate_s, *res_s, *out.stride(), *tab_s,
            eps, n, heads, head_dim, tps,
            HAS_GATE=gate is not None, HAS_RES=residual is not None, HAS_ROPE=sin is not None,
            DOT_PRECISION=dot_precision, plan=kp["fwd_out"], **common,
        )
    return out, qbar, kv, ks, lse


def _forward_fake(q, k, v, gate, residual, sin, cos, scale, eps):
    batch, n, heads, head_dim = q.shape
    f32 = dict(dtype=torch.float32)
    return (
        q.new_empty(q.shape),
        q.new_empty(batch, heads, head_dim, **f32),
        q.new_empty(batch, heads, head_dim, head_dim, **f32),
        q.new_empty(batch, heads, head_dim, **f32),
        q.new_empty(batch, heads, **f32),
    )


def _backward(
    do: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gate: Optional[torch.Tensor],
    residual: Optional[torch.Tensor],
    sin: Optional[torch.Tensor],
    cos: Optional[torch.Tensor],
    qbar: torch.Tensor,
    kv: torch.Tensor,
    ks: torch.Tensor,
    lse: torch.Tensor,
    scale: float,
    eps: float,
    rope_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv, dgate, dresidual, dsin, dcos): the first five contiguous in q's dtype, the table gradients in
    the tables' dtypes; an absent gate / residual, or tables without ``rope_grad``, get an empty (0,) tensor."""
    batch, n, heads, head_dim = q.shape
    dev = q.device
    dq, dk, dv = (empty(batch, n, heads, head_dim, device=dev, dtype=q.dtype) for _ in range(3))
    # Outputs may not alias each other: every absent gradient is its own empty tensor.
    none = lambda: q.new_empty((0,))  # noqa: E731
    dgate = empty(batch, n, heads, head_dim, device=dev, dtype=q.dtype) if gate is not None else none()
    dres = empty(batch, n, heads, head_dim, device=dev, dtype=q.dtype) if residual is not None else none()
    rope_grad = rope_grad and sin is not None
    bh = batch * heads
    if rope_grad:
        dsin_rows = empty(bh, n, head_dim, device=dev, dtype=torch.float32)
        dcos_rows = empty(bh, n, head_dim, device=dev, dtype=torch.float32)
    if bh * n == 0 or head_dim == 0:
        if rope_grad:
            return dq, dk, dv, dgate, dres, torch.zeros_like(sin), torch.zeros_like(cos)
        return dq, dk, dv, dgate, dres, none(), none()
    # The kernels read the states with contiguous strides; a graph transform may hand back equal tensors in
    # another layout.
    qbar, kv, ks, lse = qbar.contiguous(), kv.contiguous(), ks.contiguous(), lse.contiguous()
    plan = launch_plan(device_target(q.device), q.dtype, head_dim, n, bh, backward=True)
    splits, tps, block_n, block_d = plan.splits, plan.tiles_per_split, plan.block_n, plan.block_d
    kp = plan.kernels
    ws_dkv = empty(bh, splits, block_d, block_d, device=dev, dtype=torch.float32)
    ws_dks = empty(bh, splits * plan.col_splits, block_d, device=dev, dtype=torch.float32)
    dkv_sum = empty(bh, block_d, block_d, device=dev, dtype=torch.float32)
    dks_sum = empty(bh, block_d, device=dev, dtype=torch.float32)
    kv_pad = empty(bh, block_d, block_d, device=dev, dtype=torch.float32)
    ws_dqbar = empty(bh, splits, block_d, device=dev, dtype=torch.float32)
    gate_p, gate_s = _opt(gate, q, 4)
    res_p, res_s = _opt(residual, q, 4)
    sin_p, tab_s = _opt(sin, q, 2)
    cos_p, _ = _opt(cos, q, 2)
    dsin_p, dcos_p = (dsin_rows, dcos_rows) if rope_grad else (ws_dks, ws_dks)  # unwritten without ROPE_GRAD
    dgate_p = dgate if gate is not None else dq  # unwritten without a gate / residual
    dres_p = dres if residual is not None else dq
    upcast_dot, dot_precision = plan.upcast_dot, plan.dot_precision
    grid = (bh, splits)
    flags = dict(HAS_ROPE=sin is not None, BLOCK_N=block_n, BLOCK_D=block_d)
    with on_device(q):
        launch(
            rala_bwd_q_kernel, (bh * plan.col_splits, splits),
            do, q, gate_p, res_p, sin_p, cos_p, kv, ks, dgate_p, dres_p, ws_dkv, ws_dks,
            *do.stride(), *q.stride(), *gate_s, *res_s, *dq.stride(), *tab_s,
            eps, n, heads, head_dim, tps, plan.col_splits,
            HAS_GATE=gate is not None, HAS_RES=residual is not None, BLOCK_C=plan.block_c, UPCAST_DOT=upcast_dot,
            DOT_PRECISION=dot_precision, plan=kp["bwd_q"], **flags,
        )
        launch(rala_bwd_combine_kernel, (bh,), ws_dkv, ws_dks, kv, dkv_sum, dks_sum, kv_pad, head_dim, splits,
               plan.col_splits, BLOCK_D=block_d, plan=kp["bwd_combine"])
        launch(
            rala_bwd_kv_kernel, grid,
            k, v, sin_p, cos_p, qbar, kv, ks, lse, dkv_sum, dks_sum, dk, dv, ws_dqbar, dsin_p, dcos_p,
            *k.stride(), *v.stride(), *dk.stride(), *tab_s,
            scale, n, heads, head_dim, tps,
            ROPE_GRAD=rope_grad, UPCAST_DOT=upcast_dot, DOT_PRECISION=dot_precision, STATE_IN_LOOP=plan.state_in_loop,
            plan=kp["bwd_kv"], **flags,
        )
        launch(
            rala_bwd_dq_kernel, grid,
            do, q, gate_p, sin_p, cos_p, kv_pad, ks, ws_dqbar, dq, dsin_p, dcos_p,
            *do.stride(), *q.stride(), *gate_s, *dq.stride(), *tab_s,
            eps, n, heads, head_dim, tps,
            HAS_GATE=gate is not None, ROPE_GRAD=rope_grad, DOT_PRECISION=dot_precision,
            STATE_IN_LOOP=plan.state_in_loop, plan=kp["bwd_dq"], **flags,
        )
    if rope_grad:
        return dq, dk, dv, dgate, dres, dsin_rows.sum(0).to(sin.dtype), dcos_rows.sum(0).to(cos.dtype)
    return dq, dk, dv, dgate, dres, none(), none()


def _backward_fake(do, q, k, v, gate, residual, sin, cos, qbar, kv, ks, lse, scale, eps, rope_grad):
    none = lambda: q.new_empty((0,))  # noqa: E731
    dgate = q.new_empty(q.shape) if gate is not None else none()
    dres = q.new_empty(q.shape) if residual is not None else none()
    if rope_grad and sin is not None:
        return q.new_empty(q.shape), q.new_empty(q.shape), q.new_empty(q.shape), dgate, dres, \
            sin.new_empty(sin.shape), cos.new_empty(cos.shape)
    return q.new_empty(q.shape), q.new_empty(q.shape), q.new_empty(q.shape), dgate, dres, none(), none()


def _backward_args(d_out, inputs, outputs, needs_grad):
    q, k, v, gate, residual, sin, cos, scale, eps = inputs
    _, qbar, kv, ks, lse = outputs
    rope_grad = needs_grad[5] or needs_grad[6]
    return d_out, q, k, v, gate, residual, sin, cos, qbar, kv, ks, lse, scale, eps, rope_grad


rala_fwd, rala_bwd = register_fwd_bwd(
    "rala", _forward, _forward_fake, _backward, _backward_fake, _backward_args, save_out=False,
)


def rala_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gate: Optional[torch.Tensor] = None,
    residual: Optional[torch.Tensor] = None,
    sin: Optional[torch.Tensor] = None,
    cos: Optional[torch.Tensor] = None,
    scale: Optional[float] = None,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Triton backend of :func:`ops.rala.rala` (shapes and dtypes checked there)."""
    check_triton_dtype("rala", q)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    out, *_ = rala_fwd(q, k, v, gate, residual, sin, cos, float(scale), float(eps))
    return out
