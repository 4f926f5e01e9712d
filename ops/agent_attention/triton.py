"""Agent attention in Triton: one fused flash-style kernel per stage, forward and backward, as custom ops.

Both stages of agent attention are dense softmax attention with an additive, batch-independent bias
(semantics exactly those of :mod:`ops.agent_attention.reference`)::

    stage 1 (aggregation): queries = agents A (n_agent), keys = K, values = V (N_k),    bias agent_bias (heads, a, N_k)
    stage 2 (broadcast):   queries = Q (N),               keys = A, values = V_A (a),   bias query_bias (heads, N, a)

so one set of generic kernels over ``(B, L, heads, D)`` tensors with a ``(heads, M, N)`` bias read through its
strides runs both stages, with launch plans that differ by stage. Per (batch, head)::

    S = scale * q k^T + bias;  P = softmax(S);  out = P v;  lse = logsumexp(S)          (lse fp32, saved)
    dv = P^T dO;  dP = dO v^T;  dS = P * (dP - delta), delta = rowsum(dO * out);  dq = scale dS k;  dk = scale dS^T q
    d(bias)[h] = sum over the batch of dS

Kernel design
-------------
* Forward (``_biased_attention_fwd_kernel``): one program per (b, head, block of BLOCK_M queries, key range),
  FlashAttention's online softmax over the range's tiles of BLOCK_N keys (the shared
  :func:`ops._triton_utils.online_softmax_step`). Stage 2 has N queries and a <= 256 keys (the agents), which fit
  one key tile: one range, its loop runs once. Stage 1 has only a <= 196 queries (the agents) but N keys: when
  batch x heads x agent blocks would leave SMs idle (batch 1-2 at segmentation sizes), the keys are split into
  ranges (flash-decoding's split-K), each program writing its range's normalised output and lse in fp32, merged by
  a logsumexp-weighted sum. Nothing of size (a, N) is ever stored: only ``V_A`` (B, a, heads, D) in the input dtype
  and the two log-sum-exps, (B, heads, a) and (B, heads, N) fp32, are kept for the backward.
* Backward: stage 2 first (it produces dV_A), then stage 1, each one launch that recomputes P from the saved lse
  and takes ``delta = rowsum(dO * out)`` from its own tiles (no preprocessing kernel):
  - stage 2 (few keys), ``_biased_attention_bwd_kernel``: one program per (b, head, query block) looping over
    the agents in key tiles (one tile in the interpreter; at most 128 agents per tile on a GPU, where a 256-agent
    tile is over sm_80's shared memory in fp32 and spills); dq is complete there and stored; dk / dv (the
    agents' and V_A's gradients, a x D per image) are fp32 atomic adds when there are several query blocks.
  - stage 1 (many keys), ``_biased_attention_bwd_kv_kernel``: one program per (b, head, block of 64 keys),
    looping over the agent blocks (one for a <= 256); dk / dv of its keys are complete and stored, the agents'
    share dq is an fp32 atomic add into a (B, a, heads, D) buffer. Parallel over N, as the forward's splits.
  The bias gradient sums dS over the batch: fp32 atomic adds of each program's dS tile into a (heads, M, N)
  buffer (B programs meet at each element). The agents receive two gradients -- as stage 1's queries and as
  stage 2's keys -- summed in fp32 at the end.

Precision: fp32 accumulation everywhere. As in FlashAttention the operands of every ``tl.dot`` are in the input
dtype: P and dS are rounded to it before their dots, and V_A (stage 2's values) and dV_A (stage 1's output
gradient) are held in it, which for fp16 / bf16 costs about one ulp of the input dtype against the fp32
reference. fp32 inputs use IEEE fp32 dots (no TF32). Biases may be of another dtype than q (fp32 parameters
under AMP): they are read as fp32 and their gradients returned in their own dtype. Softmax runs in base 2 with
log2(e) folded into the scale; lse is stored in natural-log units.

Determinism: out (the split merge included), dq, dk and dv are deterministic. The agents' gradient, V_A's (an
intermediate) and both bias gradients use fp32 atomics: on a GPU their last bits can vary from run to run.
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
    LN2,
    LOG2E,
    atomic_add_tile,
    dot,
    dot_block,
    load_tile,
    on_device,
    online_softmax_step,
    store_tile,
)

__all__ = ["agent_attention_triton"]

# Runtime arguments that follow the feature map's size are not specialised by Triton (on == 1 or divisibility by 16),
# so a new image size compiles no new kernel version: the token counts (M, N: queries and keys of a stage, one of them
# the map's H * W), the forward's key ranges and the bias strides (a (heads, M, N) bias)
# (tests/ops/test_recompiles.py).
_SIZE_ARGS = ["M", "N", "SPLIT_LEN", "NUM_SPLITS", "stride_bh", "stride_bm"]

# Keys up to this many fit one tile (stage 2's agents); the backward keeps up to this many queries in one
# block (stage 1's agents), so that their dk / dv need no atomics.
_MAX_TILE = 256
# Score tiles of about this many fp32 elements: the interpreter's (and the tests') tiles; GPU plans take fewer
# (launch_plan). Untuned: no GPU measurements behind these choices yet.
_TILE_ELEMENTS = 8192
# The forward splits the keys over more programs until there are a few per SM, each range at least this many tiles.
_PROGRAMS_PER_SM = 4
_MIN_TILES_PER_SPLIT = 4


@triton.jit
def _scores(q, k, bias, offs_m, offs_n, valid_m, valid_n, stride_bm, stride_bn, qk_scale,
            HAS_BIAS: tl.constexpr, UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """log2(e) * (scale q k^T + bias) for a (queries, keys) tile; -inf at keys past the end."""
    s = dot(q, tl.trans(k), UPCAST_DOT, DOT_PRECISION) * qk_scale
    if HAS_BIAS:
        ptrs = bias + offs_m.to(tl.int64)[:, None] * stride_bm + offs_n.to(tl.int64)[None, :] * stride_bn
        s += tl.load(ptrs, mask=valid_m[:, None] & valid_n[None, :], other=0.0).to(tl.float32) * LOG2E
    return tl.where(valid_n[None, :], s, float("-inf"))


@triton.jit(do_not_specialize=_SIZE_ARGS)
def _biased_attention_fwd_kernel(
    q, k, v, bias, out, lse,
    stride_qb, stride_qm, stride_qh, stride_qd,
    stride_kb, stride_kn, stride_kh, stride_kd,
    stride_vb, stride_vn, stride_vh, stride_vd,
    stride_ob, stride_om, stride_oh, stride_od,
    stride_bh, stride_bm, stride_bn,
    qk_scale, M, N, NH, D, SPLIT_LEN, NUM_SPLITS,
    HAS_BIAS: tl.constexpr, SPLIT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """out and lse of one block of queries of one (b, head): online softmax over the key tiles of one split.

    ``SPLIT``: the keys are cut into ``NUM_SPLITS`` ranges of ``SPLIT_LEN`` (program axis 2); each program writes
    its range's normalised output and lse into fp32 partials (``out``: (B, heads, splits, M, D), ``lse``: (B,
    heads, splits, M), contiguous), which the launcher merges. Otherwise one range covers all keys and ``out`` /
    ``lse`` are the results.
    """
    pid = tl.program_id(0)
    i_h = pid % NH
    i_b = (pid // NH).to(tl.int64)
    q += i_b * stride_qb + i_h * stride_qh
    k += i_b * stride_kb + i_h * stride_kh
    v += i_b * stride_vb + i_h * stride_vh
    out += i_b * stride_ob + i_h * stride_oh
    bias += i_h * stride_bh

    offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    valid_m = offs_m < M
    zero_m = tl.zeros((BLOCK_M,), dtype=tl.int64)
    q_t = load_tile(q, offs_m.to(tl.int64), zero_m, valid_m, stride_qm, 0, stride_qd, D, BLOCK_D)
    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    zero_n = tl.zeros((BLOCK_N,), dtype=tl.int64)
    i_s = tl.program_id(2)
    n_start = i_s * SPLIT_LEN
    n_end = tl.minimum(N, n_start + SPLIT_LEN)
    for n0 in range(n_start, n_end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        valid_n = offs_n < n_end
        k_t = load_tile(k, offs_n.to(tl.int64), zero_n, valid_n, stride_kn, 0, stride_kd, D, BLOCK_D)
        v_t = load_tile(v, offs_n.to(tl.int64), zero_n, valid_n, stride_vn, 0, stride_vd, D, BLOCK_D)
        s = _scores(q_t, k_t, bias, offs_m, offs_n, valid_m, valid_n, stride_bm, stride_bn, qk_scale,
                    HAS_BIAS, UPCAST_DOT, DOT_PRECISION)
        m_i, l_i, acc = online_softmax_step(m_i, l_i, acc, s, v_t, UPCAST_DOT, DOT_PRECISION)
    row = (i_b * NH + i_h) * NUM_SPLITS + i_s  # lse: contiguous (B, heads, [splits,] M) fp32
    if SPLIT:
        part = out + (row * M) * D  # contiguous (B, heads, splits, M, D) fp32 partials
        store_tile(part, acc / l_i[:, None], offs_m.to(tl.int64), zero_m, valid_m, D, 0, 1, D, BLOCK_D)
    else:
        store_tile(out, acc / l_i[:, None], offs_m.to(tl.int64), zero_m, valid_m, stride_om, 0, stride_od, D,
                   BLOCK_D)
    tl.store(lse + row * M + offs_m, (m_i + tl.log2(l_i)) * LN2, mask=valid_m)


@triton.jit(do_not_specialize=_SIZE_ARGS)
def _biased_attention_bwd_kernel(
    q, k, v, bias, out, do, lse, dq, dk, dv, dbias,
    stride_qb, stride_qm, stride_qh, stride_qd,
    stride_kb, stride_kn, stride_kh, stride_kd,
    stride_vb, stride_vn, stride_vh, stride_vd,
    stride_ob, stride_om, stride_oh, stride_od,
    stride_dob, stride_dom, stride_doh, stride_dod,
    stride_dqb, stride_dqm, stride_dqh, stride_dqd,
    stride_dkb, stride_dkn, stride_dkh, stride_dkd,
    stride_bh, stride_bm, stride_bn,
    qk_scale, scale, M, N, NH, D,
    HAS_BIAS: tl.constexpr, BIAS_GRAD: tl.constexpr, ATOMIC_KV: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """dq of one block of queries of one (b, head), its share of dk / dv / d(bias), one pass over the key tiles.

    dk and dv share one set of strides (dk's). ``ATOMIC_KV``: dk / dv are fp32 buffers that several query blocks
    add into; otherwise this program is their only writer and stores.
    """
    pid = tl.program_id(0)
    i_h = pid % NH
    i_b = (pid // NH).to(tl.int64)
    q += i_b * stride_qb + i_h * stride_qh
    k += i_b * stride_kb + i_h * stride_kh
    v += i_b * stride_vb + i_h * stride_vh
    out += i_b * stride_ob + i_h * stride_oh
    do += i_b * stride_dob + i_h * stride_doh
    dq += i_b * stride_dqb + i_h * stride_dqh
    dk += i_b * stride_dkb + i_h * stride_dkh
    dv += i_b * stride_dkb + i_h * stride_dkh
    bias += i_h * stride_bh

    offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    valid_m = offs_m < M
    rows_m = offs_m.to(tl.int64)
    zero_m = tl.zeros((BLOCK_M,), dtype=tl.int64)
    q_t = load_tile(q, rows_m, zero_m, valid_m, stride_qm, 0, stride_qd, D, BLOCK_D)
    do_t = load_tile(do, rows_m, zero_m, valid_m, stride_dom, 0, stride_dod, D, BLOCK_D)
    o_t = load_tile(out, rows_m, zero_m, valid_m, stride_om, 0, stride_od, D, BLOCK_D)
    delta = tl.sum(do_t.to(tl.float32) * o_t.to(tl.float32), axis=1)
    # Missing query rows get lse = +inf, hence P = 0: they add nothing to dk, dv or d(bias).
    lse2 = tl.load(lse + (i_b * NH + i_h) * M + offs_m, mask=valid_m, other=float("inf")) * LOG2E
    dq_acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    zero_n = tl.zeros((BLOCK_N,), dtype=tl.int64)
    for n0 in range(0, N, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        valid_n = offs_n < N
        rows_n = offs_n.to(tl.int64)
        k_t = load_tile(k, rows_n, zero_n, valid_n, stride_kn, 0, stride_kd, D, BLOCK_D)
        v_t = load_tile(v, rows_n, zero_n, valid_n, stride_vn, 0, stride_vd, D, BLOCK_D)
        s = _scores(q_t, k_t, bias, offs_m, offs_n, valid_m, valid_n, stride_bm, stride_bn, qk_scale,
                    HAS_BIAS, UPCAST_DOT, DOT_PRECISION)
        p = tl.exp2(s - lse2[:, None])
        dp = dot(do_t, tl.trans(v_t), UPCAST_DOT, DOT_PRECISION)
        ds = p * (dp - delta[:, None])
        ds_lo = ds.to(q_t.dtype)
        dv_t = dot(tl.trans(p.to(do_t.dtype)), do_t, UPCAST_DOT, DOT_PRECISION)
        dk_t = dot(tl.trans(ds_lo), q_t, UPCAST_DOT, DOT_PRECISION) * scale
        dq_acc += dot(ds_lo, k_t, UPCAST_DOT, DOT_PRECISION)
        if ATOMIC_KV:
            atomic_add_tile(dk, dk_t, rows_n, zero_n, valid_n, stride_dkn, 0, stride_dkd, D, BLOCK_D)
            atomic_add_tile(dv, dv_t, rows_n, zero_n, valid_n, stride_dkn, 0, stride_dkd, D, BLOCK_D)
        else:
            store_tile(dk, dk_t, rows_n, zero_n, valid_n, stride_dkn, 0, stride_dkd, D, BLOCK_D)
            store_tile(dv, dv_t, rows_n, zero_n, valid_n, stride_dkn, 0, stride_dkd, D, BLOCK_D)
        if BIAS_GRAD:
            # dbias is a contiguous (heads, M, N) fp32 buffer; the batch's programs meet at every element.
            ptrs = dbias + (i_h * M + rows_m)[:, None] * N + rows_n[None, :]
            tl.atomic_add(ptrs, ds, mask=valid_m[:, None] & valid_n[None, :])
    store_tile(dq, dq_acc * scale, rows_m, zero_m, valid_m, stride_dqm, 0, stride_dqd, D, BLOCK_D)


@triton.jit(do_not_specialize=_SIZE_ARGS)
def _biased_attention_bwd_kv_kernel(
    q, k, v, bias, out, do, lse, dq, dk, dv, dbias,
    stride_qb, stride_qm, stride_qh, stride_qd,
    stride_kb, stride_kn, stride_kh, stride_kd,
    stride_vb, stride_vn, stride_vh, stride_vd,
    stride_ob, stride_om, stride_oh, stride_od,
    stride_dob, stride_dom, stride_doh, stride_dod,
    stride_dqb, stride_dqm, stride_dqh, stride_dqd,
    stride_dkb, stride_dkn, stride_dkh, stride_dkd,
    stride_bh, stride_bm, stride_bn,
    qk_scale, scale, M, N, NH, D,
    HAS_BIAS: tl.constexpr, BIAS_GRAD: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """dk and dv of one block of keys of one (b, head), its share of dq / d(bias), one pass over the query blocks.

    For stage 1 (a few agents as queries, many keys): parallel over the keys. dk / dv (one set of strides, dk's)
    are complete here and stored; dq is an fp32 buffer that every key block adds into.
    """
    pid = tl.program_id(0)
    i_h = pid % NH
    i_b = (pid // NH).to(tl.int64)
    q += i_b * stride_qb + i_h * stride_qh
    k += i_b * stride_kb + i_h * stride_kh
    v += i_b * stride_vb + i_h * stride_vh
    out += i_b * stride_ob + i_h * stride_oh
    do += i_b * stride_dob + i_h * stride_doh
    dq += i_b * stride_dqb + i_h * stride_dqh
    dk += i_b * stride_dkb + i_h * stride_dkh
    dv += i_b * stride_dkb + i_h * stride_dkh
    bias += i_h * stride_bh

    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    valid_n = offs_n < N
    rows_n = offs_n.to(tl.int64)
    zero_n = tl.zeros((BLOCK_N,), dtype=tl.int64)
    k_t = load_tile(k, rows_n, zero_n, valid_n, stride_kn, 0, stride_kd, D, BLOCK_D)
    v_t = load_tile(v, rows_n, zero_n, valid_n, stride_vn, 0, stride_vd, D, BLOCK_D)
    dk_acc = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    dv_acc = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    zero_m = tl.zeros((BLOCK_M,), dtype=tl.int64)
    for m0 in range(0, M, BLOCK_M):
        offs_m = m0 + tl.arange(0, BLOCK_M)
        valid_m = offs_m < M
        rows_m = offs_m.to(tl.int64)
        q_t = load_tile(q, rows_m, zero_m, valid_m, stride_qm, 0, stride_qd, D, BLOCK_D)
        do_t = load_tile(do, rows_m, zero_m, valid_m, stride_dom, 0, stride_dod, D, BLOCK_D)
        o_t = load_tile(out, rows_m, zero_m, valid_m, stride_om, 0, stride_od, D, BLOCK_D)
        # Recomputed by every key block from L2-resident (few-agent) tiles rather than kept in a buffer.
        delta = tl.sum(do_t.to(tl.float32) * o_t.to(tl.float32), axis=1)
        lse2 = tl.load(lse + (i_b * NH + i_h) * M + offs_m, mask=valid_m, other=float("inf")) * LOG2E
        s = _scores(q_t, k_t, bias, offs_m, offs_n, valid_m, valid_n, stride_bm, stride_bn, qk_scale,
                    HAS_BIAS, UPCAST_DOT, DOT_PRECISION)
        p = tl.exp2(s - lse2[:, None])
        dp = dot(do_t, tl.trans(v_t), UPCAST_DOT, DOT_PRECISION)
        ds = p * (dp - delta[:, None])
        ds_lo = ds.to(q_t.dtype)
        dv_acc += dot(tl.trans(p.to(do_t.dtype)), do_t, UPCAST_DOT, DOT_PRECISION)
        dk_acc += dot(tl.trans(ds_lo), q_t, UPCAST_DOT, DOT_PRECISION)
        dq_t = dot(ds_lo, k_t, UPCAST_DOT, DOT_PRECISION) * scale
        atomic_add_tile(dq, dq_t, rows_m, zero_m, valid_m, stride_dqm, 0, stride_dqd, D, BLOCK_D)
        if BIAS_GRAD:
            ptrs = dbias + (i_h * M + rows_m)[:, None] * N + rows_n[None, :]
            tl.atomic_add(ptrs, ds, mask=valid_m[:, None] & valid_n[None, :])
    store_tile(dk, dk_acc * scale, rows_n, zero_n, valid_n, stride_dkn, 0, stride_dkd, D, BLOCK_D)
    store_tile(dv, dv_acc, rows_n, zero_n, valid_n, stride_dkn, 0, stride_dkd, D, BLOCK_D)


# --------------------------------------------------------------------------------------------------------
# Launch plans.


def _fwd_blocks(m: int, n: int, tile_elements: int = _TILE_ELEMENTS, max_keys: int = _MAX_TILE
                ) -> tuple[int, int]:
    """(BLOCK_M, BLOCK_N): up to ``max_keys`` (256) keys in one tile (stage 2's agents), else 64-key tiles
    streamed."""
    block_n = min(dot_block(n), max_keys) if n <= _MAX_TILE else 64
    return min(128, dot_block(m), max(16, tile_elements // block_n)), block_n


def _num_splits(programs: int, key_tiles: int, target: Target) -> int:
    """Key ranges of the forward: enough programs to fill the GPU when (batch x heads x query blocks) does not
    (stage 1 at batch 1-2, e.g. segmentation: a few agents over 16K+ keys), with at least 4 key tiles each."""
    if target.interpret:
        # The interpreter runs programs one after another: split whatever has several tiles, so the tests
        # exercise the merge (and a short last range).
        return min(3, key_tiles)
    wanted = triton.cdiv(_PROGRAMS_PER_SM * target.sms, programs)
    return max(1, min(wanted, key_tiles // _MIN_TILES_PER_SPLIT))


def _bwd_plan(m: int, n: int, tile_elements: int = _TILE_ELEMENTS, max_keys: int = _MAX_TILE
              ) -> tuple[bool, int, int]:
    """(key_parallel, BLOCK_M, BLOCK_N) of the backward.

    Many keys (stage 1: a few agents over N tokens): parallel over 64-key blocks, all agents of a block in up to
    256-row tiles, dk / dv stored, dq (the agents' share) by fp32 atomics. Few keys (stage 2: N tokens over a
    <= 256 agents): parallel over query blocks, the agents in key tiles of at most ``max_keys``, dq stored, dk /
    dv (the agents' and V_A's gradients) by fp32 atomics when there are several query blocks.
    """
    if n > _MAX_TILE:
        block_m = min(_MAX_TILE, dot_block(m))
        return True, block_m, max(16, min(64, tile_elements // block_m))
    block_n = min(dot_block(n), max_keys)
    return False, min(128, dot_block(m), max(16, tile_elements // block_n)), block_n


def _num_warps(block_m: int, block_n: int) -> int:
    return 8 if block_m * block_n >= 4096 else 4


@dataclasses.dataclass(frozen=True)
class AgentPlan:
    """One stage's (``m`` queries over ``n`` keys) tiles and launch options: the forward's blocks and key-range
    splits, the backward's direction (``key_parallel``) and blocks; ``upcast_dot`` / ``dot_precision`` see
    :func:`ops._plans.dot_options`."""

    fwd_blocks: tuple[int, int]
    splits: int
    split_len: int
    key_parallel: bool
    bwd_blocks: tuple[int, int]
    block_d: int
    fwd: KernelPlan
    bwd: KernelPlan
    upcast_dot: bool
    dot_precision: str


def launch_plan(target: Target, dtype: torch.dtype, head_dim: int, m: int, n: int, batch_heads: int) -> AgentPlan:
    """The launch plan of one biased-attention stage: ``m`` queries over ``n`` keys for ``batch_heads``
    (batch x heads) programs' worth of rows."""
    upcast_dot, dot_precision = dot_options(dtype, target)
    exact = exact_fp32(dtype) and not target.interpret
    if target.interpret:
        tile_elements = _TILE_ELEMENTS
    else:
        # 32 x 256 score tiles spill in bf16 (and need 228-400 KB of shared memory in fp32 at three stages);
        # FMA dots (exact fp32) want smaller tiles still.
        tile_elements = 2048 if exact else 4096
    # Exact fp32: Agent-DeiT's 196 agents in one (16, 256) key tile need 132 KB of shared memory, over sm_86's
    # 99 KB; two 128-key tiles (online softmax) need 68 KB.
    block_m, block_n = _fwd_blocks(m, n, tile_elements, 128 if exact else _MAX_TILE)
    if not target.interpret and not exact and (block_m, block_n) == (32, 128):
        # 65-128 agents as keys (Agent-Swin-B's seg recipe, 9 x 9): (32, 128) tiles at 8 warps spill 36 B in fp16
        # (sm_90) and 120 B with TF32 dots; two streamed (64, 64) key tiles at 8 warps spill nothing in 16-bit.
        block_m, block_n = 64, 64
    m_blocks, key_tiles = triton.cdiv(m, block_m), triton.cdiv(n, block_n)
    splits = _num_splits(batch_heads * m_blocks, key_tiles, target)
    split_len = triton.cdiv(key_tiles, max(1, splits)) * block_n
    splits = max(1, triton.cdiv(n, split_len))
    if target.interpret:
        key_parallel, bwd_m, bwd_n = _bwd_plan(m, n, tile_elements)
    else:
        # Tiles and warps chosen by ptxas spill stores (every Agent-* model at its default size, sm_80 / sm_86 /
        # sm_90, benchmarks.compile_check). Few keys (stage 2: tokens over <= 196 agents): 16-bit and TF32 in
        # (32, 32) tiles at 4 warps spill 0 B (TF32 <= 8 B); exact fp32 in (32, 64) at 8 warps <= 28 B. The
        # earlier (64, 64) / (16, 128) tiles at 8 warps spilled 88-188 B in bf16 (and one (16, 256) tile for
        # Agent-DeiT's 196 agents needs 172 KB of shared memory in exact fp32, over sm_80's 163 KB).
        # Many keys (stage 1: agents over the tokens): at most 64 agents per tile, 32 keys per program at 8
        # warps spill 0 B in 16-bit (24-32 B at 4 warps); fp32 needs 16 keys (0 B; exact fp32 on sm_90 12-16 B),
        # 32 spill 0.2 KB. Agent-PVT-L's seg recipe (784 agents) in (256, 16) tiles needed 172 KB of shared
        # memory in exact fp32 and 275 KB in TF32 (over sm_80's 163 KB) and spilled 1.2 KB in bf16; (128, 16)
        # at 8 warps still spills 16-444 B.
        key_parallel, bwd_m, bwd_n = _bwd_plan(m, n, 2048 if n > 64 else tile_elements, max_keys=128)
        if key_parallel:
            bwd_m, bwd_n = min(64, bwd_m), 16 if dtype == torch.float32 else 32
        else:
            bwd_m, bwd_n = min(32, dot_block(m)), min(64 if exact else 32, bwd_n)
            if bwd_n <= 16 and not exact:
                # At most 16 agents (Agent-PVT-L's stage 4 at 224): (32, 16) at 4 warps spills 8 B in 16-bit
                # (sm_80), (16, 16) nothing.
                bwd_m = 16
    # The forward streams key tiles (stage 1: thousands of keys): two stages overlap the next tile's load.
    fwd_stages = 2 if key_tiles > 1 and not exact else 1
    if target.interpret:
        bwd_warps = _num_warps(bwd_m, bwd_n)
    else:
        bwd_warps = 8 if key_parallel or exact else 4
    return AgentPlan(
        (block_m, block_n), splits, split_len, key_parallel, (bwd_m, bwd_n), dot_block(head_dim),
        KernelPlan(_num_warps(block_m, block_n), fwd_stages), KernelPlan(bwd_warps, 1),
        upcast_dot, dot_precision,
    )


def _bias_args(q: torch.Tensor, bias: Optional[torch.Tensor]):
    # An absent bias is never read (HAS_BIAS False); q stands in as a valid pointer.
    return (bias, tuple(bias.stride())) if bias is not None else (q, (0, 0, 0))


def _fwd(q, k, v, bias, scale):
    """Generic biased attention over (B, L, heads, D): out (q's dtype and shape) and lse (B, heads, M) fp32."""
    batch, m, heads, head_dim = q.shape
    n = k.shape[1]
    out = empty(batch, m, heads, head_dim, device=q.device, dtype=q.dtype)
    lse = empty(batch, heads, m, device=q.device, dtype=torch.float32)
    if out.numel() == 0:
        return out, lse
    plan = launch_plan(device_target(q.device), q.dtype, head_dim, m, n, batch * heads)
    block_m, block_n = plan.fwd_blocks
    m_blocks = triton.cdiv(m, block_m)
    splits, split_len = plan.splits, plan.split_len
    if splits > 1:
        # fp32 partials of every key range, merged below (flash-decoding's split-K).
        out_part = empty(batch, heads, splits, m, head_dim, device=q.device, dtype=torch.float32)
        lse_part = empty(batch, heads, splits, m, device=q.device, dtype=torch.float32)
        dst, dst_strides, dst_lse = out_part, (0, 0, 0, 0), lse_part
    else:
        dst, dst_strides, dst_lse = out, out.stride(), lse
    bias_ptr, bias_strides = _bias_args(q, bias)
    with on_device(q):
        launch(
            _biased_attention_fwd_kernel, (batch * heads, m_blocks, splits),
            q, k, v, bias_ptr, dst, dst_lse,
            *q.stride(), *k.stride(), *v.stride(), *dst_strides, *bias_strides,
            scale * 1.4426950408889634, m, n, heads, head_dim, split_len, splits,
            HAS_BIAS=bias is not None, SPLIT=splits > 1, BLOCK_M=block_m, BLOCK_N=block_n,
            BLOCK_D=plan.block_d, UPCAST_DOT=plan.upcast_dot, DOT_PRECISION=plan.dot_precision, plan=plan.fwd,
        )
    if splits > 1:
        lse = torch.logsumexp(lse_part, dim=2)
        weights = torch.exp(lse_part - lse[:, :, None])  # (B, heads, splits, M): each range's share
        merged = (weights[..., None] * out_part).sum(dim=2)  # (B, heads, M, D)
        out.copy_(merged.transpose(1, 2))
    return out, lse


def _bwd(do, q, k, v, bias, out, lse, scale, bias_grad):
    """(dq, dk, dv, dbias) of generic biased attention; dbias fp32 (heads, M, N) (empty unless bias_grad)."""
    batch, m, heads, head_dim = q.shape
    n = k.shape[1]
    plan = launch_plan(device_target(q.device), q.dtype, head_dim, m, n, batch * heads)
    key_parallel = plan.key_parallel
    block_m, block_n = plan.bwd_blocks
    atomic_q = key_parallel
    atomic_kv = not key_parallel and triton.cdiv(m, block_m) > 1

    def buffer(length, atomic):
        if atomic:
            return torch.zeros(batch, length, heads, head_dim, device=q.device, dtype=torch.float32)
        return empty(batch, length, heads, head_dim, device=q.device, dtype=q.dtype)

    dq, dk, dv = buffer(m, atomic_q), buffer(n, atomic_kv), buffer(n, atomic_kv)
    # Zeros, not NaN: atomic adds accumulate into it.
    dbias = torch.zeros((heads, m, n) if bias_grad else (0,), device=q.device, dtype=torch.float32)
    if q.numel() and k.numel():
        bias_ptr, bias_strides = _bias_args(q, bias)
        kernel = _biased_attention_bwd_kv_kernel if key_parallel else _biased_attention_bwd_kernel
        grid = (batch * heads, triton.cdiv(n, block_n) if key_parallel else triton.cdiv(m, block_m))
        extra = {} if key_parallel else dict(ATOMIC_KV=atomic_kv)
        with on_device(q):
            launch(
                kernel, grid,
                q, k, v, bias_ptr, out, do, lse, dq, dk, dv, dbias if bias_grad else lse,
                *q.stride(), *k.stride(), *v.stride(), *out.stride(), *do.stride(), *dq.stride(), *dk.stride(),
                *bias_strides,
                scale * 1.4426950408889634, scale, m, n, heads, head_dim,
                HAS_BIAS=bias is not None, BIAS_GRAD=bias_grad,
                BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=plan.block_d,
                UPCAST_DOT=plan.upcast_dot, DOT_PRECISION=plan.dot_precision, plan=plan.bwd, **extra,
            )
    # fp32 where atomics accumulated, else q's dtype: the caller casts (after summing the agents' two shares).
    return dq, dk, dv, dbias


# --------------------------------------------------------------------------------------------------------
# Custom ops.


def _forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    agents: torch.Tensor,
    agent_bias: Optional[torch.Tensor],
    query_bias: Optional[torch.Tensor],
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``out`` (B, N, heads, D) in q's dtype; for the backward: ``agent_v`` (B, a, heads, D) in q's dtype and the
    two stages' log-sum-exps (B, heads, a) and (B, heads, N), fp32."""
    agent_v, lse_agent = _fwd(agents, k, v, agent_bias, scale)
    out, lse_query = _fwd(q, agents, agent_v, query_bias, scale)
    return out, agent_v, lse_agent, lse_query


def _forward_fake(q, k, v, agents, agent_bias, query_bias, scale):
    batch, n, heads, _ = q.shape
    n_agent = agents.shape[1]
    return (q.new_empty(q.shape), agents.new_empty(agents.shape),
            q.new_empty((batch, heads, n_agent), dtype=torch.float32),
            q.new_empty((batch, heads, n), dtype=torch.float32))


def _backward(
    do: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    agents: torch.Tensor,
    agent_bias: Optional[torch.Tensor],
    query_bias: Optional[torch.Tensor],
    out: torch.Tensor,
    agent_v: torch.Tensor,
    lse_agent: torch.Tensor,
    lse_query: torch.Tensor,
    scale: float,
    agent_bias_grad: bool,
    query_bias_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv, d_agents) in q's dtype; d(agent_bias), d(query_bias) in their dtypes (empty unless asked)."""
    agent_bias_grad = agent_bias_grad and agent_bias is not None
    query_bias_grad = query_bias_grad and query_bias is not None
    # `lse`s come from the forward op, contiguous, unless a graph transform handed back equal tensors in another
    # layout; the kernels index them as contiguous.
    lse_agent, lse_query = lse_agent.contiguous(), lse_query.contiguous()
    # Stage 2 (queries over agents): dq, the agents' gradient as keys, dV_A.
    dq, d_agents_k, d_agent_v, d_query_bias = _bwd(do, q, agents, agent_v, query_bias, out, lse_query, scale,
                                                   query_bias_grad)
    # Stage 1 (agents over keys), with dV_A as the output gradient, held in the input dtype like V_A.
    d_agents_q, dk, dv, d_agent_bias = _bwd(d_agent_v.to(q.dtype), agents, k, v, agent_bias, agent_v, lse_agent,
                                            scale, agent_bias_grad)
    d_agents = (d_agents_q.float() + d_agents_k.float()).to(q.dtype)
    return (dq.to(q.dtype), dk.to(q.dtype), dv.to(q.dtype), d_agents,
            d_agent_bias.to(agent_bias.dtype) if agent_bias_grad else d_agent_bias,
            d_query_bias.to(query_bias.dtype) if query_bias_grad else d_query_bias)


def _backward_fake(do, q, k, v, agents, agent_bias, query_bias, out, agent_v, lse_agent, lse_query, scale,
                   agent_bias_grad, query_bias_grad):
    return (q.new_empty(q.shape), q.new_empty(k.shape), q.new_empty(v.shape), q.new_empty(agents.shape),
            optional_grad_fake(q, agent_bias, agent_bias_grad), optional_grad_fake(q, query_bias, query_bias_grad))


def _backward_args(d_out, inputs, outputs, needs_grad):
    q, k, v, agents, agent_bias, query_bias, scale = inputs
    return d_out, q, k, v, agents, agent_bias, query_bias, *outputs, scale, needs_grad[4], needs_grad[5]


agent_attention_fwd, agent_attention_bwd = register_fwd_bwd(
    "agent_attention", _forward, _forward_fake, _backward, _backward_fake, _backward_args,
)


def agent_attention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    agents: torch.Tensor,
    agent_bias: Optional[torch.Tensor] = None,
    query_bias: Optional[torch.Tensor] = None,
    scale: Optional[float] = None,
) -> torch.Tensor:
    """Triton backend of :func:`ops.agent_attention.agent_attention` (shapes and dtypes checked there)."""
    check_triton_dtype("agent_attention", q)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    out, _, _, _ = agent_attention_fwd(q, k, v, agents, agent_bias, query_bias, float(scale))
    return out
