"""HiLo's Lo-Fi attention in Triton: fused forward and backward kernels, registered as custom ops.

Math, per batch ``b`` and head ``h``, ``N`` queries against ``M`` keys (the pooled map; semantics exactly those of
:mod:`ops.hilo_attention.reference`)::

    S     = scale * q k^T          (N, M)
    P     = softmax(S);   out = P v;   lse = logsumexp(S)          (lse saved for the backward, fp32)
    dv    = P^T dO;   dP = dO v^T;   dS = P * (dP - delta),   delta = rowsum(P * dP) = rowsum(dO * out)
    dq    = scale dS k;   dk = scale dS^T q

Kernel design
-------------
The key set is short (``M = N / s^2``: 49 keys for 196 queries in LITv2-S at 224, 256 for 1024 at 512 x 512), so
the work is FlashAttention with many query blocks against few key blocks. Tokens are addressed through the
strides of the ``(B, tokens, heads, D)`` tensors (k and v are usually ``unbind`` views of one kv tensor: no
copy, no contiguity needed); all address arithmetic is int64.

* Forward (``lofi_attention_fwd_kernel``): one program per (b, block of BLOCK_M queries, head), online softmax
  over blocks of BLOCK_N keys (base 2, log2(e) folded into the scale). The scores never leave registers; q is
  read once, k and v once per query block (from L2: the whole key set of a head is a few KB), out and lse
  written once.
* Backward, one launch when the key set fits one key block (``M <= 64``: LITv2 at 224^2, both HiLo stages):
  ``lofi_attention_bwd_dkdv_kernel`` runs one program per (b, head), loops over the query blocks and, since the
  score tile holds every key, gets delta = rowsum(P * dP) in fp32 from it and writes each block's complete dq in
  the same iteration, while dk and dv accumulate in registers: q, k, v and dO read once, out not at all.
* Backward, two launches otherwise (the FlashAttention-2 split; segmentation sizes, 256+ pooled keys):
  ``lofi_attention_bwd_dq_kernel`` -- one program per (b, query block, head) loops over the key blocks,
  recomputes P from the saved lse and writes dq; it also computes ``delta = rowsum(dO * out)`` once per query
  and stores it (fp32, (B, N, heads)). Then ``lofi_attention_bwd_dkdv_kernel`` -- one program per (b, key
  block, head) loops over all query blocks and accumulates dk and dv of its keys in registers.
  Both forms are deterministic (no atomics, no fp32 gradient buffers). Recomputing P rather than storing it
  keeps the memory O(N + M), not O(N M).

Precision: fp32 accumulation everywhere. As in FlashAttention, the operands of every ``tl.dot`` are in the input
dtype: q k^T and dO v^T are exact products; P (for P v and P^T dO) and dS (for dq, dk) are rounded to the input
dtype first, which keeps fp16/bf16 on tensor cores at a cost of about one output ulp. Softmax statistics, delta
and all accumulators are fp32. fp32 inputs use IEEE fp32 dots (no TF32), so fp32 means fp32 as in the
reference.
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
from ops._triton_utils import LN2, LOG2E, dot, dot_block, load_tile, on_device, online_softmax_step, \
    store_tile

__all__ = ["lofi_attention_triton"]

# Runtime arguments that follow the feature map's size are not specialised by Triton (on == 1 or divisibility by 16),
# so a new image size compiles no new kernel version: the token counts (N queries = the map's H * W, M pooled keys)
# and block counts (tests/ops/test_recompiles.py).
_SIZE_ARGS = ["N", "M", "NQB", "NKB"]

_MAX_BLOCK = 64


@triton.jit
def _program_ids(NBLK, NH):
    """(batch, token block, head) of this program; heads vary fastest, so neighbouring programs share a token's
    cache lines."""
    pid = tl.program_id(0)
    rest = pid // NH
    return rest // NBLK, rest % NBLK, pid % NH


@triton.jit
def _tokens(i_blk, n_tokens, BLOCK: tl.constexpr):
    offs = i_blk * BLOCK + tl.arange(0, BLOCK)
    return offs.to(tl.int64), offs < n_tokens


@triton.jit
def _lse_ptrs(base, i_b, i_h, rows, N, NH):
    """Offsets into a contiguous (B, N, heads) fp32 tensor (lse, delta)."""
    return base + (i_b.to(tl.int64) * N + rows) * NH + i_h


@triton.jit(do_not_specialize=_SIZE_ARGS)
def lofi_attention_fwd_kernel(
    q, k, v, out, lse,
    stride_qb, stride_qn, stride_qh, stride_qd,
    stride_kb, stride_kn, stride_kh, stride_kd,
    stride_vb, stride_vn, stride_vh, stride_vd,
    stride_ob, stride_on, stride_oh, stride_od,
    qk_scale, N, M, NH, NQB, D,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """out and lse for one block of queries of one (b, head)."""
    i_b, i_qb, i_h = _program_ids(NQB, NH)
    i_b64 = i_b.to(tl.int64)
    q += i_b64 * stride_qb + i_h * stride_qh
    k += i_b64 * stride_kb + i_h * stride_kh
    v += i_b64 * stride_vb + i_h * stride_vh
    out += i_b64 * stride_ob + i_h * stride_oh

    rows, valid_q = _tokens(i_qb, N, BLOCK_M)
    q_t = load_tile(q, rows, 0, valid_q, stride_qn, 0, stride_qd, D, BLOCK_D)

    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    for start in range(0, M, BLOCK_N):
        cols, valid_k = _tokens(start // BLOCK_N, M, BLOCK_N)
        k_t = load_tile(k, cols, 0, valid_k, stride_kn, 0, stride_kd, D, BLOCK_D)
        v_t = load_tile(v, cols, 0, valid_k, stride_vn, 0, stride_vd, D, BLOCK_D)
        s = dot(q_t, tl.trans(k_t), UPCAST_DOT, DOT_PRECISION) * qk_scale
        s = tl.where(valid_k[None, :], s, float("-inf"))
        m_i, l_i, acc = online_softmax_step(m_i, l_i, acc, s, v_t, UPCAST_DOT, DOT_PRECISION)

    # M >= 1 real key, so every row has a finite maximum and l_i >= 1.
    store_tile(out, acc / l_i[:, None], rows, 0, valid_q, stride_on, 0, stride_od, D, BLOCK_D)
    tl.store(_lse_ptrs(lse, i_b, i_h, rows, N, NH), (m_i + tl.log2(l_i)) * LN2, mask=valid_q)


@triton.jit(do_not_specialize=_SIZE_ARGS)
def lofi_attention_bwd_dq_kernel(
    q, k, v, out, do, lse, delta, dq,
    stride_qb, stride_qn, stride_qh, stride_qd,
    stride_kb, stride_kn, stride_kh, stride_kd,
    stride_vb, stride_vn, stride_vh, stride_vd,
    stride_ob, stride_on, stride_oh, stride_od,
    stride_dob, stride_don, stride_doh, stride_dod,
    stride_dqb, stride_dqn, stride_dqh, stride_dqd,
    qk_scale, scale, N, M, NH, NQB, D,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """dq, and delta = rowsum(dO * out) for the dk / dv launch, for one block of queries of one (b, head)."""
    i_b, i_qb, i_h = _program_ids(NQB, NH)
    i_b64 = i_b.to(tl.int64)
    q += i_b64 * stride_qb + i_h * stride_qh
    k += i_b64 * stride_kb + i_h * stride_kh
    v += i_b64 * stride_vb + i_h * stride_vh
    out += i_b64 * stride_ob + i_h * stride_oh
    do += i_b64 * stride_dob + i_h * stride_doh
    dq += i_b64 * stride_dqb + i_h * stride_dqh

    rows, valid_q = _tokens(i_qb, N, BLOCK_M)
    q_t = load_tile(q, rows, 0, valid_q, stride_qn, 0, stride_qd, D, BLOCK_D)
    # dO may come in another dtype (or as a stride-0 expanded view); the dots want q's.
    do_t = load_tile(do, rows, 0, valid_q, stride_don, 0, stride_dod, D, BLOCK_D).to(q_t.dtype)
    o_t = load_tile(out, rows, 0, valid_q, stride_on, 0, stride_od, D, BLOCK_D)
    delta_i = tl.sum(do_t.to(tl.float32) * o_t.to(tl.float32), axis=1)
    tl.store(_lse_ptrs(delta, i_b, i_h, rows, N, NH), delta_i, mask=valid_q)
    # +inf at missing queries: their probabilities are exactly 0.
    lse2 = tl.load(_lse_ptrs(lse, i_b, i_h, rows, N, NH), mask=valid_q, other=float("inf")) * LOG2E

    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    for start in range(0, M, BLOCK_N):
        cols, valid_k = _tokens(start // BLOCK_N, M, BLOCK_N)
        k_t = load_tile(k, cols, 0, valid_k, stride_kn, 0, stride_kd, D, BLOCK_D)
        v_t = load_tile(v, cols, 0, valid_k, stride_vn, 0, stride_vd, D, BLOCK_D)
        s = dot(q_t, tl.trans(k_t), UPCAST_DOT, DOT_PRECISION) * qk_scale
        p = tl.where(valid_k[None, :], tl.exp2(s - lse2[:, None]), 0.0)
        dp = dot(do_t, tl.trans(v_t), UPCAST_DOT, DOT_PRECISION)
        ds = p * (dp - delta_i[:, None])
        acc = dot(ds.to(q_t.dtype), k_t, UPCAST_DOT, DOT_PRECISION, acc)
    store_tile(dq, acc * scale, rows, 0, valid_q, stride_dqn, 0, stride_dqd, D, BLOCK_D)


@triton.jit(do_not_specialize=_SIZE_ARGS)
def lofi_attention_bwd_dkdv_kernel(
    q, k, v, do, lse, delta, dk, dv, dq,
    stride_qb, stride_qn, stride_qh, stride_qd,
    stride_kb, stride_kn, stride_kh, stride_kd,
    stride_vb, stride_vn, stride_vh, stride_vd,
    stride_dob, stride_don, stride_doh, stride_dod,
    stride_dkb, stride_dkn, stride_dkh, stride_dkd,
    stride_dqb, stride_dqn, stride_dqh, stride_dqd,
    qk_scale, scale, N, M, NH, NKB, D,
    FUSE_DQ: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """dk and dv (dk's strides) for one block of keys of one (b, head), looping over every query block.

    FUSE_DQ (the block holds every key): delta = rowsum(P * dP) comes from the whole score tile and dq of each
    query block is complete in the same iteration, so this one launch is the whole backward.
    """
    i_b, i_kb, i_h = _program_ids(NKB, NH)
    i_b64 = i_b.to(tl.int64)
    q += i_b64 * stride_qb + i_h * stride_qh
    k += i_b64 * stride_kb + i_h * stride_kh
    v += i_b64 * stride_vb + i_h * stride_vh
    do += i_b64 * stride_dob + i_h * stride_doh
    dk += i_b64 * stride_dkb + i_h * stride_dkh
    dv += i_b64 * stride_dkb + i_h * stride_dkh
    dq += i_b64 * stride_dqb + i_h * stride_dqh

    cols, valid_k = _tokens(i_kb, M, BLOCK_N)
    k_t = load_tile(k, cols, 0, valid_k, stride_kn, 0, stride_kd, D, BLOCK_D)
    v_t = load_tile(v, cols, 0, valid_k, stride_vn, 0, stride_vd, D, BLOCK_D)

    dk_acc = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    dv_acc = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    for start in range(0, N, BLOCK_M):
        rows, valid_q = _tokens(start // BLOCK_M, N, BLOCK_M)
        q_t = load_tile(q, rows, 0, valid_q, stride_qn, 0, stride_qd, D, BLOCK_D)
        do_t = load_tile(do, rows, 0, valid_q, stride_don, 0, stride_dod, D, BLOCK_D).to(q_t.dtype)
        lse2 = tl.load(_lse_ptrs(lse, i_b, i_h, rows, N, NH), mask=valid_q, other=float("inf")) * LOG2E
        s = dot(q_t, tl.trans(k_t), UPCAST_DOT, DOT_PRECISION) * qk_scale
        p = tl.where(valid_k[None, :], tl.exp2(s - lse2[:, None]), 0.0)
        dv_acc = dot(tl.trans(p.to(q_t.dtype)), do_t, UPCAST_DOT, DOT_PRECISION, dv_acc)
        dp = dot(do_t, tl.trans(v_t), UPCAST_DOT, DOT_PRECISION)
        if FUSE_DQ:
            delta_i = tl.sum(p * dp, axis=1)
        else:
            delta_i = tl.load(_lse_ptrs(delta, i_b, i_h, rows, N, NH), mask=valid_q, other=0.0)
        ds = (p * (dp - delta_i[:, None])).to(q_t.dtype)
        dk_acc = dot(tl.trans(ds), q_t, UPCAST_DOT, DOT_PRECISION, dk_acc)
        if FUSE_DQ:
            dq_t = dot(ds, k_t, UPCAST_DOT, DOT_PRECISION) * scale
            store_tile(dq, dq_t, rows, 0, valid_q, stride_dqn, 0, stride_dqd, D, BLOCK_D)
    store_tile(dk, dk_acc * scale, cols, 0, valid_k, stride_dkn, 0, stride_dkd, D, BLOCK_D)
    store_tile(dv, dv_acc, cols, 0, valid_k, stride_dkn, 0, stride_dkd, D, BLOCK_D)


def _block(n: int) -> int:
    # Untuned: 64 x 64 tiles with head_dim 32 keep a few fp32 tiles in registers at 4 warps.
    return min(_MAX_BLOCK, dot_block(n))


@dataclasses.dataclass(frozen=True)
class LofiPlan:
    """Tiles and launch options of the forward and the two backward kernels; ``upcast_dot`` /
    ``dot_precision`` see :func:`ops._plans.dot_options`."""

    blocks: tuple[int, int]
    block_d: int
    fwd: KernelPlan
    bwd_dq: KernelPlan
    bwd_dkdv: KernelPlan
    upcast_dot: bool
    dot_precision: str


def launch_plan(target: Target, dtype: torch.dtype, head_dim: int, n: int, m: int) -> LofiPlan:
    """The launch plan for ``n`` queries over ``m`` (pooled) keys."""
    upcast_dot, dot_precision = dot_options(dtype, target)
    # The forward and dq kernels stream the pooled keys, the dk / dv kernel the queries: two stages overlap the
    # next tile's load (one for FMA dots, whose tiles already fill the registers).
    exact = exact_fp32(dtype)
    stages = 1 if exact else 2
    # FMA dots (exact fp32) at 4 warps: the fused dk / dv backward collapses to 32 registers with 15 KB of spill
    # per thread, the forward spills 264 B (LITv2-B, sm_80); at 8 warps 8 B and 0.
    kp = KernelPlan(8 if exact and not target.interpret else 4, stages)
    return LofiPlan((_block(n), _block(m)), dot_block(head_dim), kp, kp, kp, upcast_dot, dot_precision)


# --------------------------------------------------------------------------------------------------------
# Custom ops.


def _forward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``out`` (B, N, heads, D) in q's dtype and ``lse`` (B, N, heads) fp32 (natural log) for the backward."""
    batch, n, heads, head_dim = q.shape
    m = k.shape[1]
    out = empty(batch, n, heads, head_dim, device=q.device, dtype=q.dtype)
    lse = empty(batch, n, heads, device=q.device, dtype=torch.float32)
    if q.numel() == 0:
        return out, lse
    plan = launch_plan(device_target(q.device), q.dtype, head_dim, n, m)
    block_m, block_n = plan.blocks
    nqb = triton.cdiv(n, block_m)
    with on_device(q):
        launch(
            lofi_attention_fwd_kernel, (batch * nqb * heads,),
            q, k, v, out, lse,
            *q.stride(), *k.stride(), *v.stride(), *out.stride(),
            scale * 1.4426950408889634, n, m, heads, nqb, head_dim,
            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=plan.block_d,
            UPCAST_DOT=plan.upcast_dot, DOT_PRECISION=plan.dot_precision, plan=plan.fwd,
        )
    return out, lse


def _forward_fake(q, k, v, scale):
    return q.new_empty(q.shape), q.new_empty(q.shape[:-1], dtype=torch.float32)


def _backward(
    do: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv), contiguous, in q's dtype."""
    batch, n, heads, head_dim = q.shape
    m = k.shape[1]
    dq = empty(batch, n, heads, head_dim, device=q.device, dtype=q.dtype)
    dk, dv = (empty(batch, m, heads, head_dim, device=q.device, dtype=q.dtype) for _ in range(2))
    if q.numel() == 0:
        return dq, dk, dv
    # `lse` is addressed as contiguous (B, N, heads); it comes from the forward op, contiguous, unless a graph
    # transform handed back an equal tensor in another layout.
    lse = lse.contiguous()
    plan = launch_plan(device_target(q.device), q.dtype, head_dim, n, m)
    block_m, block_n = plan.blocks
    nqb, nkb = triton.cdiv(n, block_m), triton.cdiv(m, block_n)
    fuse_dq = nkb == 1
    # delta is only a buffer between the two launches of the unfused backward
    delta = lse if fuse_dq else empty(batch, n, heads, device=q.device, dtype=torch.float32)
    common = dict(
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=plan.block_d,
        UPCAST_DOT=plan.upcast_dot, DOT_PRECISION=plan.dot_precision,
    )
    qk_scale = scale * 1.4426950408889634
    with on_device(q):
        if not fuse_dq:
            launch(
                lofi_attention_bwd_dq_kernel, (batch * nqb * heads,),
                q, k, v, out, do, lse, delta, dq,
                *q.stride(), *k.stride(), *v.stride(), *out.stride(), *do.stride(), *dq.stride(),
                qk_scale, scale, n, m, heads, nqb, head_dim, plan=plan.bwd_dq, **common,
            )
        launch(
            lofi_attention_bwd_dkdv_kernel, (batch * nkb * heads,),
            q, k, v, do, lse, delta, dk, dv, dq,
            *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dk.stride(), *dq.stride(),
            qk_scale, scale, n, m, heads, nkb, head_dim, FUSE_DQ=fuse_dq, plan=plan.bwd_dkdv, **common,
        )
    return dq, dk, dv


def _backward_fake(do, q, k, v, out, lse, scale):
    return q.new_empty(q.shape), k.new_empty(k.shape), k.new_empty(k.shape)


def _backward_args(d_out, inputs, outputs, needs_grad):
    q, k, v, scale = inputs
    return d_out, q, k, v, *outputs, scale


lofi_attention_fwd, lofi_attention_bwd = register_fwd_bwd(
    "lofi_attention", _forward, _forward_fake, _backward, _backward_fake, _backward_args,
)


def lofi_attention_triton(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: Optional[float] = None
) -> torch.Tensor:
    """Triton backend of :func:`ops.hilo_attention.lofi_attention` (shapes and dtypes checked there)."""
    check_triton_dtype("lofi_attention", q)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    out, _ = lofi_attention_fwd(q, k, v, float(scale))
    return out
