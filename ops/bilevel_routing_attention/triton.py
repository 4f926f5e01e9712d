"""Bi-level routing attention (BiFormer) in Triton: fused forward and backward token-attention kernels over the
routed regions, registered as custom ops.

The routing step (region means, logits, ``torch.topk``) is small -- ``(B, S^2, S^2)`` logits -- and not
differentiated; the wrapper computes it in PyTorch with the reference's own :func:`route`, so both backends
attend over the same regions bit for bit, and passes the ``(B, S^2, topk)`` index tensor to the kernels.

Math, per batch ``b``, query region ``r`` and head ``h``, over the ``K = topk * rh * rw`` routed keys (the
tokens of regions ``idx[b, r, 0..topk)``, in that order, each row-major; semantics exactly those of
:mod:`ops.bilevel_routing_attention.reference`)::

    S  = scale * q k^T  (-inf at keys outside the map);  P = softmax(S);  out = P v;  lse = logsumexp(S)
    dv += P^T dO;  dP = dO v^T;  dS = P * (dP - delta),  delta = rowsum(dO * out);  dq = scale dS k;
    dk += scale dS^T q

Kernel design
-------------
Nothing is gathered in memory: the official code materialises ``(B, S^2, topk, rh*rw, C)`` copies of k and v;
here the kernels read the routed tokens in place. A key tile is a block of ``BLOCK_N`` consecutive indices
``j`` of the flattened routed-key axis (``j = t * rh*rw + n``: slot ``t`` of the routing, token ``n`` of that
region); each lane looks up its region ``idx[b, r, t]`` and turns ``(region, n)`` into a map pixel, read
through the strides of the ``(B, H, W, heads, D)`` tensors (q, k, v are usually views of one qkv tensor).
Flattening over the routed regions packs small regions into full tiles: BiFormer's stages (8x8 regions with
topk 1, 4x4 with topk 4, 2x2 with topk 16) all give K = 64 keys, a single 64-wide tile, instead of sixteen
16-wide tiles three quarters empty for the 2x2 regions. Pixels beyond the map are masked: never keys, never
outputs. All address arithmetic is int64.

* Forward (``bilevel_routing_attention_fwd_kernel``): one program per (b, query region, head, block of
  BLOCK_M queries); FlashAttention-style online softmax (base 2) over the key tiles; out and lse (fp32,
  natural log) written once.
* Backward (``bilevel_routing_attention_bwd_kernel``): the same programs. Each recomputes P from lse for its
  query block and every key tile, accumulates dq in registers (complete when the loop ends: written once,
  deterministic, no dq buffer), and adds its dk, dv contributions with fp32 atomics into zero-initialised fp32
  buffers (cast to the input dtype at the end). Several query regions route to the same key region, so dk and
  dv are sums over an index-dependent set of programs: atomics were chosen over inverting the index (sorting
  (query region -> key region) pairs by key region and running a key-major pass, as a deterministic
  alternative would) because a BiFormer key region is routed to by about ``topk`` query regions on average,
  so contention is low, and one launch with no sort/histogram keeps the backward simple. delta =
  rowsum(dO * out) is computed per query block from out, in fp32.

Precision: fp32 accumulation everywhere; as in FlashAttention, P and dS are rounded to the input dtype before
their dots (tensor cores), about one output ulp. fp32 inputs use IEEE fp32 dots (no TF32). dk, dv accumulate
in fp32 and are rounded once.

Determinism: out and dq are deterministic; dk and dv use fp32 atomics, so on a GPU their summation order (and
last bits) can vary from run to run.
"""
from __future__ import annotations

import dataclasses

import torch
import triton
import triton.language as tl

from ops._backend import empty
from ops._checks import check_triton_dtype
from ops._custom_op import register_fwd_bwd
from ops._plans import KernelPlan, Target, device_target, dot_options, exact_fp32, launch
from ops._triton_utils import (
    LN2, LOG2E, atomic_add_tile, dot, dot_block, load_tile, lse_offsets, on_device, online_softmax_step,
    store_tile,
)
from ops.bilevel_routing_attention.reference import region_geometry, route

__all__ = ["bilevel_routing_attention_triton"]

# Everything that follows the feature map's size is a runtime argument, and Triton does not specialise it (on
# == 1 or divisibility by 16): the region size (RH, RW) -- the whole map in BiFormer's last stage, H / n_win
# at segmentation sizes -- the map (H, W) and the region grid (R, SW). A new image size then compiles nothing
# new: the kernels' versions depend only on the tiles, which depend on a region's token count rounded up to a
# power of two (tests/ops/test_recompiles.py).
_MAP_SIZE_ARGS = ["H", "W", "R", "SW", "RH", "RW"]



@triton.jit
def _program(NH, R, SW):
    """(batch, query region, its row, its column, head) of this program."""
    pid = tl.program_id(0)
    i_h = pid % NH
    i_br = pid // NH
    i_r = i_br % R
    return i_br // R, i_r, i_r // SW, i_r % SW, i_h


@triton.jit
def _query_positions(offs, ry, rx, H, W, RH, RW):
    """Region-local row-major indices of region (ry, rx) -> map rows, columns (int64) and validity."""
    row = ry * RH + offs // RW
    col = rx * RW + offs % RW
    valid = (offs < RH * RW) & (row < H) & (col < W)
    return row.to(tl.int64), col.to(tl.int64), valid


@triton.jit
def _key_positions(offs, idx_row, stride_it, n_keys, SW, H, W, RH, RW):
    """Flat routed-key indices j = t * RH*RW + n -> map rows, columns (int64) and validity."""
    inside = offs < n_keys
    region = tl.load(idx_row + (offs // (RH * RW)) * stride_it, mask=inside, other=0)
    n = offs % (RH * RW)
    row = (region // SW) * RH + n // RW
    col = (region % SW) * RW + n % RW
    valid = inside & (row < H) & (col < W)
    return row.to(tl.int64), col.to(tl.int64), valid


@triton.jit(do_not_specialize=_MAP_SIZE_ARGS)
def bilevel_routing_attention_fwd_kernel(
    q, k, v, idx, out, lse,
    stride_qb, stride_qh, stride_qw, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kw, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vw, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_ow, stride_on, stride_od,
    stride_ib, stride_ir, stride_it,
    qk_scale, H, W, NH, R, SW, TOPK, DQK, DV, RH, RW,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DQK: tl.constexpr, BLOCK_DV: tl.constexpr,
    UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """out and lse for one block of queries of one (b, query region, head)."""
    # Heads vary fastest over the grid: a token's heads share cache lines, so neighbouring programs share them.
    i_b, i_r, ry, rx, i_h = _program(NH, R, SW)
    i_b64 = i_b.to(tl.int64)
    q += i_b64 * stride_qb + i_h * stride_qn
    k += i_b64 * stride_kb + i_h * stride_kn
    v += i_b64 * stride_vb + i_h * stride_vn
    out += i_b64 * stride_ob + i_h * stride_on
    idx_row = idx + i_b64 * stride_ib + i_r * stride_ir
    n_keys = TOPK * (RH * RW)

    offs_q = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    rowq, colq, valid_q = _query_positions(offs_q, ry, rx, H, W, RH, RW)
    q_t = load_tile(q, rowq, colq, valid_q, stride_qh, stride_qw, stride_qd, DQK, BLOCK_DQK)

    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_DV), dtype=tl.float32)
    for j0 in range(0, n_keys, BLOCK_N):
        offs_k = j0 + tl.arange(0, BLOCK_N)
        rowk, colk, valid_k = _key_positions(offs_k, idx_row, stride_it, n_keys, SW, H, W, RH, RW)
        k_t = load_tile(k, rowk, colk, valid_k, stride_kh, stride_kw, stride_kd, DQK, BLOCK_DQK)
        v_t = load_tile(v, rowk, colk, valid_k, stride_vh, stride_vw, stride_vd, DV, BLOCK_DV)
        s = dot(q_t, tl.trans(k_t), UPCAST_DOT, DOT_PRECISION) * qk_scale
        s = tl.where(valid_k[None, :], s, float("-inf"))
        m_i, l_i, acc = online_softmax_step(m_i, l_i, acc, s, v_t, UPCAST_DOT, DOT_PRECISION)

    store_tile(out, acc / l_i[:, None], rowq, colq, valid_q, stride_oh, stride_ow, stride_od, DV, BLOCK_DV)
    tl.store(lse + lse_offsets(i_b, i_h, rowq, colq, H, W, NH), (m_i + tl.log2(l_i)) * LN2, mask=valid_q)


@triton.jit(do_not_specialize=_MAP_SIZE_ARGS)
def bilevel_routing_attention_bwd_kernel(
    q, k, v, out, do, lse, idx, dq, dk, dv,
    stride_qb, stride_qh, stride_qw, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kw, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vw, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_ow, stride_on, stride_od,
    stride_dob, stride_doh, stride_dow, stride_don, stride_dod,
    stride_dqb, stride_dqh, stride_dqw, stride_dqn, stride_dqd,
    stride_dkb, stride_dkh, stride_dkw, stride_dkn, stride_dkd,
    stride_dvb, stride_dvh, stride_dvw, stride_dvn, stride_dvd,
    stride_ib, stride_ir, stride_it,
    qk_scale, scale, H, W, NH, R, SW, TOPK, DQK, DV, RH, RW,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DQK: tl.constexpr, BLOCK_DV: tl.constexpr,
    UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """dq of one block of queries of one (b, query region, head); its dk, dv contributions added atomically."""
    i_b, i_r, ry, rx, i_h = _program(NH, R, SW)
    i_b64 = i_b.to(tl.int64)
    q += i_b64 * stride_qb + i_h * stride_qn
    k += i_b64 * stride_kb + i_h * stride_kn
    v += i_b64 * stride_vb + i_h * stride_vn
    out += i_b64 * stride_ob + i_h * stride_on
    do += i_b64 * stride_dob + i_h * stride_don
    dq += i_b64 * stride_dqb + i_h * stride_dqn
    dk += i_b64 * stride_dkb + i_h * stride_dkn
    dv += i_b64 * stride_dvb + i_h * stride_dvn
    idx_row = idx + i_b64 * stride_ib + i_r * stride_ir
    n_keys = TOPK * (RH * RW)

    offs_q = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    rowq, colq, valid_q = _query_positions(offs_q, ry, rx, H, W, RH, RW)
    q_t = load_tile(q, rowq, colq, valid_q, stride_qh, stride_qw, stride_qd, DQK, BLOCK_DQK)
    # dO may come in another dtype (or as a stride-0 expanded view); the dots want q's.
    do_t = load_tile(do, rowq, colq, valid_q, stride_doh, stride_dow, stride_dod, DV, BLOCK_DV).to(q_t.dtype)
    o_t = load_tile(out, rowq, colq, valid_q, stride_oh, stride_ow, stride_od, DV, BLOCK_DV)
    delta = tl.sum(do_t.to(tl.float32) * o_t.to(tl.float32), axis=1)
    # +inf lse at missing queries makes their probabilities exactly 0, so they add to no gradient.
    lse2 = tl.load(lse + lse_offsets(i_b, i_h, rowq, colq, H, W, NH), mask=valid_q, other=float("inf")) * LOG2E

    dq_acc = tl.zeros((BLOCK_M, BLOCK_DQK), dtype=tl.float32)
    for j0 in range(0, n_keys, BLOCK_N):
        offs_k = j0 + tl.arange(0, BLOCK_N)
        rowk, colk, valid_k = _key_positions(offs_k, idx_row, stride_it, n_keys, SW, H, W, RH, RW)
        k_t = load_tile(k, rowk, colk, valid_k, stride_kh, stride_kw, stride_kd, DQK, BLOCK_DQK)
        v_t = load_tile(v, rowk, colk, valid_k, stride_vh, stride_vw, stride_vd, DV, BLOCK_DV)
        s = dot(q_t, tl.trans(k_t), UPCAST_DOT, DOT_PRECISION) * qk_scale
        s = tl.where(valid_k[None, :], s, float("-inf"))
        p = tl.exp2(s - lse2[:, None])
        dp = dot(do_t, tl.trans(v_t), UPCAST_DOT, DOT_PRECISION)
        ds = (p * (dp - delta[:, None])).to(q_t.dtype)
        dq_acc += dot(ds, k_t, UPCAST_DOT, DOT_PRECISION)
        dv_t = dot(tl.trans(p.to(do_t.dtype)), do_t, UPCAST_DOT, DOT_PRECISION)
        dk_t = dot(tl.trans(ds), q_t, UPCAST_DOT, DOT_PRECISION) * scale
        # The routed regions of one query region are distinct, so a tile's keys are distinct pixels.
        atomic_add_tile(dv, dv_t, rowk, colk, valid_k, stride_dvh, stride_dvw, stride_dvd, DV, BLOCK_DV)
        atomic_add_tile(dk, dk_t, rowk, colk, valid_k, stride_dkh, stride_dkw, stride_dkd, DQK, BLOCK_DQK)
    store_tile(dq, dq_acc * scale, rowq, colq, valid_q, stride_dqh, stride_dqw, stride_dqd, DQK, BLOCK_DQK)


# --------------------------------------------------------------------------------------------------------
# Launch plan.


def _blocks(n_queries: int, n_keys: int) -> tuple[int, int]:
    """(BLOCK_M, BLOCK_N): a region's queries and its routed keys, up to 64 x 64 (all BiFormer stages: one tile).

    Untuned -- no GPU measurements behind this choice yet.
    """
    return min(64, dot_block(n_queries)), min(64, dot_block(n_keys))


@dataclasses.dataclass(frozen=True)
class RoutingPlan:
    """Tiles and launch options of the forward and backward kernels; ``upcast_dot`` / ``dot_precision`` see
    :func:`ops._plans.dot_options`."""

    blocks: tuple[int, int]
    block_dqk: int
    block_dv: int
    fwd: KernelPlan
    bwd: KernelPlan
    upcast_dot: bool
    dot_precision: str


def launch_plan(target: Target, dtype: torch.dtype, d_qk: int, d_v: int, n_queries: int, n_keys: int) -> RoutingPlan:
    """The launch plan for regions of ``n_queries`` tokens attending to ``n_keys`` routed tokens."""
    upcast_dot, dot_precision = dot_options(dtype, target)
    # The kernels loop over the routed regions' key tiles (topk of them): two stages overlap the next tile's load.
    exact = exact_fp32(dtype)
    stages = 1 if exact else 2
    # 4 warps spill: with FMA dots (exact fp32) the backward's (64, 64) tiles 1.2-2 KB per thread, the forward
    # 116-152 B (BiFormer-B, sm_80); in bf16 the backward 180-490 B (the region's runtime sizes cost registers);
    # 8 warps spill 0-16 B.
    warps = 8 if not target.interpret else 4
    return RoutingPlan(_blocks(n_queries, n_keys), dot_block(d_qk), dot_block(d_v), KernelPlan(warps, stages),
                       KernelPlan(warps, 1), upcast_dot, dot_precision)


def _launch_args(q, v, idx, sh, sw):
    batch, h, w, heads, dqk = q.shape
    rh, rw = region_geometry(h, w, (sh, sw))
    topk = idx.shape[-1]
    plan = launch_plan(device_target(q.device), q.dtype, dqk, v.shape[-1], rh * rw, topk * rh * rw)
    block_m, block_n = plan.blocks
    grid = (batch * sh * sw * heads, triton.cdiv(rh * rw, block_m))
    shape_args = (h, w, heads, sh * sw, sw, topk, dqk, v.shape[-1], rh, rw)
    meta = dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_DQK=plan.block_dqk,
                BLOCK_DV=plan.block_dv, UPCAST_DOT=plan.upcast_dot, DOT_PRECISION=plan.dot_precision)
    return grid, shape_args, meta, plan


# --------------------------------------------------------------------------------------------------------
# Custom ops.


def _forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    idx: torch.Tensor,
    sh: int,
    sw: int,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``out`` (B, H, W, heads, dv) in q's dtype and ``lse`` (B, H, W, heads) fp32 (natural log) for the backward.

    ``idx``: the ``(B, sh*sw, topk)`` routing indices of :func:`route`.
    """
    batch, h, w, heads, _ = q.shape
    out = empty(batch, h, w, heads, v.shape[-1], device=q.device, dtype=q.dtype)
    lse = empty(batch, h, w, heads, device=q.device, dtype=torch.float32)
    if q.numel() == 0 or out.numel() == 0:
        return out, lse
    grid, shape_args, meta, plan = _launch_args(q, v, idx, sh, sw)
    with on_device(q):
        launch(
            bilevel_routing_attention_fwd_kernel, grid,
            q, k, v, idx, out, lse,
            *q.stride(), *k.stride(), *v.stride(), *out.stride(), *idx.stride(),
            scale * 1.4426950408889634, *shape_args, plan=plan.fwd, **meta,
        )
    return out, lse


def _forward_fake(q, k, v, idx, sh, sw, scale):
    return q.new_empty((*q.shape[:-1], v.shape[-1])), q.new_empty(q.shape[:-1], dtype=torch.float32)


def _backward(
    do: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    idx: torch.Tensor,
    sh: int,
    sw: int,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv), contiguous, in q's dtype."""
    dq = empty(*q.shape, device=q.device, dtype=q.dtype)
    # Zeros, not NaN: atomic adds accumulate into them, and tokens no query region routes to get no gradient.
    dk = torch.zeros(k.shape, device=q.device, dtype=torch.float32)
    dv = torch.zeros(v.shape, device=q.device, dtype=torch.float32)
    if q.numel() == 0 or v.numel() == 0:
        return dq.zero_(), dk.to(q.dtype), dv.to(q.dtype)
    lse = lse.contiguous()  # the kernel indexes lse as contiguous (B, H, W, heads)
    grid, shape_args, meta, plan = _launch_args(q, v, idx, sh, sw)
    with on_device(q):
        launch(
            bilevel_routing_attention_bwd_kernel, grid,
            q, k, v, out, do, lse, idx, dq, dk, dv,
            *q.stride(), *k.stride(), *v.stride(), *out.stride(), *do.stride(),
            *dq.stride(), *dk.stride(), *dv.stride(), *idx.stride(),
            scale * 1.4426950408889634, scale, *shape_args, plan=plan.bwd, **meta,
        )
    return dq, dk.to(q.dtype), dv.to(q.dtype)


def _backward_fake(do, q, k, v, out, lse, idx, sh, sw, scale):
    return q.new_empty(q.shape), q.new_empty(k.shape), q.new_empty(v.shape)


def _backward_args(d_out, inputs, outputs, needs_grad):
    q, k, v, idx, sh, sw, scale = inputs
    return d_out, q, k, v, *outputs, idx, sh, sw, scale


bilevel_routing_attention_fwd, bilevel_routing_attention_bwd = register_fwd_bwd(
    "bilevel_routing_attention", _forward, _forward_fake, _backward, _backward_fake, _backward_args,
)


def bilevel_routing_attention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    n_win: tuple[int, int],
    topk: int,
    scale: float | None = None,
) -> torch.Tensor:
    """Triton backend of :func:`ops.bilevel_routing_attention.bilevel_routing_attention` (arguments checked
    there)."""
    check_triton_dtype("bilevel_routing_attention", q)
    scale = (q.shape[-2] * q.shape[-1]) ** -0.5 if scale is None else scale
    idx = route(q, k, n_win, topk, scale)
    out, _ = bilevel_routing_attention_fwd(q, k, v, idx, int(n_win[0]), int(n_win[1]), float(scale))
    return out
