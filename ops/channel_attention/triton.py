"""Channel group attention (DaViT) in Triton: fused forward and backward kernels, registered as custom ops.

Math, per batch ``b`` and group ``g`` (roles exactly as in :mod:`ops.channel_attention.reference`)::

    A   = scale * k^T v                      D x D, a sum over all N tokens
    P   = softmax(A, dim=-1)
    out = q P^T                              out[n, i] = sum_j P[i, j] q[n, j]

    dq  = dO P
    dP  = dO^T q                             D x D, a sum over all N tokens
    dS  = P * (dP - rowsum(dP * P))          softmax backward
    dk  = scale * v dS^T,   dv = scale * k dS

Kernel design
-------------
Both directions have one shape: a reduction over all N tokens into a D x D fp32 matrix (``k^T v`` forward,
``dO^T q`` backward), then a token-parallel product of every token with a D x D matrix (``q P^T`` forward,
``v dS^T`` and ``k dS`` backward). The D x D matrix lives in registers (32 x 32 fp32 = 4 KB); it is never
a tensor that a separate PyTorch op or pass reads back.

* Fused, one launch: one program per (b, g) streams its N tokens twice (k, v; then q). Every input is read
  once and every output written once -- the memory floor -- but only B * G programs run. DaViT's first stage
  has G = 3, so segmentation at 512^2 (B = 8, N = 16384) would put 24 programs on 132 SMs, each streaming
  16384 tokens alone.
* Split-N, two launches: N is cut into S chunks of whole tiles. Launch 1 (``*_partial_kernel``) writes each
  chunk's partial D x D sum to an fp32 workspace ``(B * G, S, D, D)``; launch 2 runs one program per
  (b, g, chunk) that adds the S partials in a fixed order (deterministic, unlike atomics), redoes the D x D
  softmax (D^2 exponentials, negligible) and applies it to its own chunk. The extra traffic is S^2 partials
  of 4 KB per (b, g), read from L2, small against the N * D token traffic as long as chunks hold at least
  ``_MIN_TILES_PER_SPLIT`` tiles.
* Choice (:func:`_num_splits`): S = 1 (fused) when B * G already gives every SM two programs, otherwise just
  enough chunks to do so. Under the CPU interpreter programs run one after another, so S = 1 there.
* The backward pass folds ``dq = dO P`` into the pass that reduces ``dP = dO^T q``, since both read dO:
  4 reads and 3 writes of (N, D) per (b, g), again the floor.
* Saved for backward: q, k, v and the fp32 softmax P (B, G, D, D). P costs 4 KB per (b, g) -- below 1 % of
  q alone at N = 3136 -- whereas recomputing it would be another full pass over k and v (2 N D reads).

Precision: fp32 accumulation throughout. fp16/bf16: the two reductions feed their (N, D) tiles to ``tl.dot``
in the input dtype (exact products, tensor cores); the token-parallel products take the tile upcast to fp32
(exact) against the fp32 D x D matrix (P or dS) in TF32, so P and dS lose 2^-11 relative, well under the
output's own rounding -- rounding them to the input dtype, as FlashAttention does with its probabilities,
would cost a few output ulps in bf16 and could overflow fp16 for dS. fp32: every dot in IEEE fp32 (no TF32),
so fp32 means fp32 as in the reference. All products stay memory-bound: 2 D^2 FLOPs per token and matrix.

Layout: q, k, v, dO with any strides (they are unbind() views of a (B, N, 3, G, D) tensor), int64 address
arithmetic. head_dim is padded to a power of two (at least 16, ``tl.dot``'s minimum) and masked; padded
columns of A are -inf so they get zero probability. Outputs are contiguous (B, N, G, D) in q's dtype.
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
from ops._triton_utils import dot, dot_block, on_device

__all__ = ["channel_attention_triton"]

# Runtime arguments that follow the feature map's size are not specialised by Triton (on == 1 or divisibility by 16),
# so a new image size compiles no new kernel version: the token count (N = the map's H * W) and the tiles per split
# (tests/ops/test_recompiles.py).
_SIZE_ARGS = ["N", "TILES_PER_SPLIT"]

# A chunk shorter than this many tiles would spend more on re-reading the S partials than it saves.
_MIN_TILES_PER_SPLIT = 4
# Two resident programs per SM hide the latency of one program's loads behind the other's math.
_PROGRAMS_PER_SM = 2


@triton.jit
def _apply(x, m, DOT_PRECISION: tl.constexpr):
    return tl.dot(x.to(tl.float32), m, input_precision=DOT_PRECISION)


@triton.jit
def _tile_offsets(n0, n_end, D, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    # int64: B * N * 3 * C passes 2^31 elements for large batches at segmentation resolutions.
    offs_n = (n0 + tl.arange(0, BLOCK_N)).to(tl.int64)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (offs_n[:, None] < n_end) & (offs_d[None, :] < D)
    return offs_n, offs_d, mask


@triton.jit
def _reduce_xty(x, y, stride_xn, stride_xd, stride_yn, stride_yd, n_start, n_end, D,
                BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, UPCAST_DOT: tl.constexpr,
                DOT_PRECISION: tl.constexpr):
    """sum over tokens n in [n_start, n_end) of x[n, i] * y[n, j], fp32 (BLOCK_D, BLOCK_D)."""
    acc = tl.zeros((BLOCK_D, BLOCK_D), dtype=tl.float32)
    for n0 in range(n_start, n_end, BLOCK_N):
        offs_n, offs_d, mask = _tile_offsets(n0, n_end, D, BLOCK_N, BLOCK_D)
        # Masked tokens and padded channels load as 0 and so add nothing to the sum.
        xt = tl.load(x + offs_n[:, None] * stride_xn + offs_d[None, :] * stride_xd, mask=mask, other=0.0)
        yt = tl.load(y + offs_n[:, None] * stride_yn + offs_d[None, :] * stride_yd, mask=mask, other=0.0)
        acc = dot(tl.trans(xt), yt, UPCAST_DOT, DOT_PRECISION, acc=acc)
    return acc


@triton.jit
def _reduce_dp_store_dq(do, q, dq, prob, stride_don, stride_dod, stride_qn, stride_qd, stride_dqn, stride_dqd,
                        n_start, n_end, D, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                        UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """dP = sum_n dO[n, :]^T q[n, :] over [n_start, n_end), writing dq = dO P for those tokens on the way."""
    acc = tl.zeros((BLOCK_D, BLOCK_D), dtype=tl.float32)
    for n0 in range(n_start, n_end, BLOCK_N):
        offs_n, offs_d, mask = _tile_offsets(n0, n_end, D, BLOCK_N, BLOCK_D)
        qt = tl.load(q + offs_n[:, None] * stride_qn + offs_d[None, :] * stride_qd, mask=mask, other=0.0)
        # dO may arrive in another dtype (or as an expanded, stride-0 view); the dot needs q's.
        do_t = tl.load(do + offs_n[:, None] * stride_don + offs_d[None, :] * stride_dod, mask=mask, other=0.0)
        do_t = do_t.to(qt.dtype)
        acc = dot(tl.trans(do_t), qt, UPCAST_DOT, DOT_PRECISION, acc=acc)
        dqt = _apply(do_t, prob, DOT_PRECISION)
        tl.store(dq + offs_n[:, None] * stride_dqn + offs_d[None, :] * stride_dqd, dqt.to(dq.dtype.element_ty),
                 mask=mask)
    return acc


@triton.jit
def _chunk_bounds(i_s, N, TILES_PER_SPLIT, BLOCK_N: tl.constexpr):
    n_start = i_s * TILES_PER_SPLIT * BLOCK_N
    return n_start, tl.minimum(n_start + TILES_PER_SPLIT * BLOCK_N, N)


@triton.jit
def _load_dd(ptr, D, BLOCK_D: tl.constexpr):
    offs = tl.arange(0, BLOCK_D)
    # Padded rows / columns read as 0, which keeps them out of every product and row sum below.
    return tl.load(ptr + offs[:, None] * D + offs[None, :], mask=(offs[:, None] < D) & (offs[None, :] < D), other=0.0)


@triton.jit
def _sum_partials(ws, i_bg, num_splits, BLOCK_D: tl.constexpr):
    offs = tl.arange(0, BLOCK_D)
    ptrs = ws + i_bg * num_splits * BLOCK_D * BLOCK_D + offs[:, None] * BLOCK_D + offs[None, :]
    acc = tl.zeros((BLOCK_D, BLOCK_D), dtype=tl.float32)
    # Fixed summation order: the result does not depend on which chunk finished first.
    for s in range(num_splits):
        acc += tl.load(ptrs + s * BLOCK_D * BLOCK_D)
    return acc


@triton.jit
def _store_partial(ws, acc, i_bg, i_s, num_splits, BLOCK_D: tl.constexpr):
    offs = tl.arange(0, BLOCK_D)
    tl.store(ws + (i_bg * num_splits + i_s) * BLOCK_D * BLOCK_D + offs[:, None] * BLOCK_D + offs[None, :], acc)


@triton.jit(do_not_specialize=_SIZE_ARGS)
def channel_attention_fwd_partial_kernel(
    k, v, ws,
    stride_kb, stride_kn, stride_kg, stride_kd,
    stride_vb, stride_vn, stride_vg, stride_vd,
    N, G, D, TILES_PER_SPLIT,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, UPCAST_DOT: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """Split-N launch 1: the partial k^T v of one (b, g, chunk)."""
    i_bg, i_s = tl.program_id(0).to(tl.int64), tl.program_id(1)
    i_b, i_g = i_bg // G, i_bg % G
    n_start, n_end = _chunk_bounds(i_s, N, TILES_PER_SPLIT, BLOCK_N)
    acc = _reduce_xty(k + i_b * stride_kb + i_g * stride_kg, v + i_b * stride_vb + i_g * stride_vg,
                      stride_kn, stride_kd, stride_vn, stride_vd, n_start, n_end, D, BLOCK_N, BLOCK_D, UPCAST_DOT,
                      DOT_PRECISION)
    _store_partial(ws, acc, i_bg, i_s, tl.num_programs(1), BLOCK_D)


@triton.jit(do_not_specialize=_SIZE_ARGS)
def channel_attention_fwd_kernel(
    q, k, v, ws, out, p,
    stride_qb, stride_qn, stride_qg, stride_qd,
    stride_kb, stride_kn, stride_kg, stride_kd,
    stride_vb, stride_vn, stride_vg, stride_vd,
    stride_ob, stride_on, stride_og, stride_od,
    scale, N, G, D, TILES_PER_SPLIT,
    SPLIT: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, UPCAST_DOT: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """out = q softmax(scale k^T v)^T for one (b, g) (fused) or one (b, g, chunk) (split, after the partials)."""
    i_bg, i_s = tl.program_id(0).to(tl.int64), tl.program_id(1)
    i_b, i_g = i_bg // G, i_bg % G
    if SPLIT:
        a = _sum_partials(ws, i_bg, tl.num_programs(1), BLOCK_D)
    else:
        a = _reduce_xty(k + i_b * stride_kb + i_g * stride_kg, v + i_b * stride_vb + i_g * stride_vg,
                        stride_kn, stride_kd, stride_vn, stride_vd, 0, N, D, BLOCK_N, BLOCK_D, UPCAST_DOT,
                        DOT_PRECISION)
    offs_d = tl.arange(0, BLOCK_D)
    # Softmax in base 2 with log2(e) folded into the scale: one multiply for the matrix instead of exp's.
    a = a * (scale * 1.4426950408889634)
    a = tl.where(offs_d[None, :] < D, a, float("-inf"))
    prob = tl.exp2(a - tl.max(a, axis=1)[:, None])
    prob = prob / tl.sum(prob, axis=1)[:, None]
    if i_s == 0:
        tl.store(p + i_bg * D * D + offs_d[:, None] * D + offs_d[None, :], prob,
                 mask=(offs_d[:, None] < D) & (offs_d[None, :] < D))

    q += i_b * stride_qb + i_g * stride_qg
    out += i_b * stride_ob + i_g * stride_og
    p_t = tl.trans(prob)
    n_start, n_end = _chunk_bounds(i_s, N, TILES_PER_SPLIT, BLOCK_N)
    for n0 in range(n_start, n_end, BLOCK_N):
        offs_n, offs_d, mask = _tile_offsets(n0, n_end, D, BLOCK_N, BLOCK_D)
        qt = tl.load(q + offs_n[:, None] * stride_qn + offs_d[None, :] * stride_qd, mask=mask, other=0.0)
        ot = _apply(qt, p_t, DOT_PRECISION)
        tl.store(out + offs_n[:, None] * stride_on + offs_d[None, :] * stride_od, ot.to(out.dtype.element_ty),
                 mask=mask)


@triton.jit(do_not_specialize=_SIZE_ARGS)
def channel_attention_bwd_partial_kernel(
    do, q, p, ws, dq,
    stride_dob, stride_don, stride_dog, stride_dod,
    stride_qb, stride_qn, stride_qg, stride_qd,
    stride_dqb, stride_dqn, stride_dqg, stride_dqd,
    N, G, D, TILES_PER_SPLIT,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, UPCAST_DOT: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """Split-N launch 1: the partial dO^T q of one (b, g, chunk), and dq = dO P of its tokens."""
    i_bg, i_s = tl.program_id(0).to(tl.int64), tl.program_id(1)
    i_b, i_g = i_bg // G, i_bg % G
    prob = _load_dd(p + i_bg * D * D, D, BLOCK_D)
    n_start, n_end = _chunk_bounds(i_s, N, TILES_PER_SPLIT, BLOCK_N)
    acc = _reduce_dp_store_dq(do + i_b * stride_dob + i_g * stride_dog, q + i_b * stride_qb + i_g * stride_qg,
                              dq + i_b * stride_dqb + i_g * stride_dqg, prob,
                              stride_don, stride_dod, stride_qn, stride_qd, stride_dqn, stride_dqd,
                              n_start, n_end, D, BLOCK_N, BLOCK_D, UPCAST_DOT, DOT_PRECISION)
    _store_partial(ws, acc, i_bg, i_s, tl.num_programs(1), BLOCK_D)


@triton.jit(do_not_specialize=_SIZE_ARGS)
def channel_attention_bwd_kernel(
    do, q, k, v, p, ws, dq, dk, dv,
    stride_dob, stride_don, stride_dog, stride_dod,
    stride_qb, stride_qn, stride_qg, stride_qd,
    stride_kb, stride_kn, stride_kg, stride_kd,
    stride_vb, stride_vn, stride_vg, stride_vd,
    stride_dqb, stride_dqn, stride_dqg, stride_dqd,
    stride_dkb, stride_dkn, stride_dkg, stride_dkd,
    stride_dvb, stride_dvn, stride_dvg, stride_dvd,
    scale, N, G, D, TILES_PER_SPLIT,
    SPLIT: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, UPCAST_DOT: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """dk, dv (and, fused, dq) for one (b, g) (fused) or one (b, g, chunk) (split, after the partials)."""
    i_bg, i_s = tl.program_id(0).to(tl.int64), tl.program_id(1)
    i_b, i_g = i_bg // G, i_bg % G
    prob = _load_dd(p + i_bg * D * D, D, BLOCK_D)
    if SPLIT:
        dp = _sum_partials(ws, i_bg, tl.num_programs(1), BLOCK_D)
    else:
        dp = _reduce_dp_store_dq(do + i_b * stride_dob + i_g * stride_dog, q + i_b * stride_qb + i_g * stride_qg,
                                 dq + i_b * stride_dqb + i_g * stride_dqg, prob,
                                 stride_don, stride_dod, stride_qn, stride_qd, stride_dqn, stride_dqd,
                                 0, N, D, BLOCK_N, BLOCK_D, UPCAST_DOT, DOT_PRECISION)
    # Softmax backward; the scale of A is folded in here, once for the D x D matrix.
    ds = prob * (dp - tl.sum(dp * prob, axis=1)[:, None]) * scale
    ds_t = tl.trans(ds)

    k += i_b * stride_kb + i_g * stride_kg
    v += i_b * stride_vb + i_g * stride_vg
    dk += i_b * stride_dkb + i_g * stride_dkg
    dv += i_b * stride_dvb + i_g * stride_dvg
    n_start, n_end = _chunk_bounds(i_s, N, TILES_PER_SPLIT, BLOCK_N)
    for n0 in range(n_start, n_end, BLOCK_N):
        offs_n, offs_d, mask = _tile_offsets(n0, n_end, D, BLOCK_N, BLOCK_D)
        kt = tl.load(k + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd, mask=mask, other=0.0)
        vt = tl.load(v + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd, mask=mask, other=0.0)
        dkt = _apply(vt, ds_t, DOT_PRECISION)
        dvt = _apply(kt, ds, DOT_PRECISION)
        tl.store(dk + offs_n[:, None] * stride_dkn + offs_d[None, :] * stride_dkd, dkt.to(dk.dtype.element_ty),
                 mask=mask)
        tl.store(dv + offs_n[:, None] * stride_dvn + offs_d[None, :] * stride_dvd, dvt.to(dv.dtype.element_ty),
                 mask=mask)


def _block_sizes(head_dim: int) -> tuple[int, int]:
    block_d = dot_block(head_dim)
    # About 4K elements per (BLOCK_N, BLOCK_D) tile: 128 tokens at DaViT's head_dim 32, fewer for wider heads.
    block_n = max(16, min(128, 4096 // block_d))
    return block_n, block_d


def _num_splits(num_tiles: int, batch_groups: int, target: Target) -> int:
    """How many chunks N is cut into (1 = the fused single-launch kernels); see the module docstring."""
    if target.interpret:
        return 1
    wanted = _PROGRAMS_PER_SM * target.sms
    if batch_groups >= wanted:
        return 1
    return max(1, min(triton.cdiv(wanted, batch_groups), num_tiles // _MIN_TILES_PER_SPLIT))


@dataclasses.dataclass(frozen=True)
class ChannelPlan:
    """Chunks of N (``splits`` of ``tiles_per_split`` tiles of ``block_n`` tokens; no chunk is empty), the
    channel tile and launch options of the four kernels; ``upcast_dot`` / ``dot_precision`` see
    :func:`ops._plans.dot_options`."""

    splits: int
    tiles_per_split: int
    block_n: int
    block_d: int
    fwd_partial: KernelPlan
    fwd: KernelPlan
    bwd_partial: KernelPlan
    bwd: KernelPlan
    upcast_dot: bool
    dot_precision: str


def launch_plan(target: Target, dtype: torch.dtype, head_dim: int, n: int, batch_groups: int) -> ChannelPlan:
    """The launch plan for ``n`` tokens of ``batch_groups`` (batch x groups) independent groups."""
    upcast_dot, dot_precision = dot_options(dtype, target)
    block_n, block_d = _block_sizes(head_dim)
    num_tiles = max(1, triton.cdiv(n, block_n))
    splits = max(1, min(_num_splits(num_tiles, batch_groups, target), num_tiles))
    tiles_per_split = triton.cdiv(num_tiles, splits)
    # The kernels stream token tiles against a (D, D) matrix: two stages overlap the next tile's load.
    exact = exact_fp32(dtype)
    stages = 1 if exact else 2
    kp = KernelPlan(4, stages)
    # FMA dots (exact fp32): the backward's (128, 32) token tiles spill 64-72 B per thread at 4 warps (DaViT-B,
    # sm_80), none at 8.
    bwd = KernelPlan(8, stages) if exact and not target.interpret else kp
    return ChannelPlan(triton.cdiv(num_tiles, tiles_per_split), tiles_per_split, block_n, block_d, kp, kp, kp, bwd,
                       upcast_dot, dot_precision)


def _forward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns ``out`` (B, N, G, D) in q's dtype and the softmax ``P`` (B, G, D, D) fp32 for the backward."""
    batch, n, groups, head_dim = q.shape
    out = empty(batch, n, groups, head_dim, device=q.device, dtype=q.dtype)
    p = empty(batch, groups, head_dim, head_dim, device=q.device, dtype=torch.float32)
    if batch * groups == 0 or head_dim == 0:
        return out, p
    plan = launch_plan(device_target(q.device), q.dtype, head_dim, n, batch * groups)
    ws = p  # unread by the fused kernel; any pointer will do
    if plan.splits > 1:
        ws = empty(batch * groups, plan.splits, plan.block_d, plan.block_d, device=q.device, dtype=torch.float32)
    with on_device(q):
        _launch_fwd(q, k, v, ws, out, p, scale, plan)
    return out, p


def _launch_fwd(q, k, v, ws, out, p, scale, plan):
    batch, n, groups, head_dim = q.shape
    grid = (batch * groups, plan.splits)
    blocks = dict(BLOCK_N=plan.block_n, BLOCK_D=plan.block_d, UPCAST_DOT=plan.upcast_dot,
                  DOT_PRECISION=plan.dot_precision)
    if plan.splits > 1:
        launch(
            channel_attention_fwd_partial_kernel, grid,
            k, v, ws, *k.stride(), *v.stride(), n, groups, head_dim, plan.tiles_per_split,
            plan=plan.fwd_partial, **blocks,
        )
    launch(
        channel_attention_fwd_kernel, grid,
        q, k, v, ws, out, p, *q.stride(), *k.stride(), *v.stride(), *out.stride(),
        scale, n, groups, head_dim, plan.tiles_per_split, SPLIT=plan.splits > 1, plan=plan.fwd, **blocks,
    )


def _forward_fake(q, k, v, scale):
    batch, n, groups, head_dim = q.shape
    return q.new_empty(batch, n, groups, head_dim), q.new_empty(batch, groups, head_dim, head_dim, dtype=torch.float32)


def _backward(
    do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients (dq, dk, dv), contiguous (B, N, G, D) in q's dtype, from dO and the forward's softmax ``p``."""
    batch, n, groups, head_dim = q.shape
    dq, dk, dv = (empty(batch, n, groups, head_dim, device=q.device, dtype=q.dtype) for _ in range(3))
    if batch * groups * n == 0 or head_dim == 0:
        return dq, dk, dv
    plan = launch_plan(device_target(q.device), q.dtype, head_dim, n, batch * groups)
    ws = p  # unread by the fused kernel; any pointer will do
    if plan.splits > 1:
        ws = empty(batch * groups, plan.splits, plan.block_d, plan.block_d, device=q.device, dtype=torch.float32)
    with on_device(q):
        _launch_bwd(do, q, k, v, p, ws, dq, dk, dv, scale, plan)
    return dq, dk, dv


def _launch_bwd(do, q, k, v, p, ws, dq, dk, dv, scale, plan):
    batch, n, groups, head_dim = q.shape
    grid = (batch * groups, plan.splits)
    blocks = dict(BLOCK_N=plan.block_n, BLOCK_D=plan.block_d, UPCAST_DOT=plan.upcast_dot,
                  DOT_PRECISION=plan.dot_precision)
    if plan.splits > 1:
        launch(
            channel_attention_bwd_partial_kernel, grid,
            do, q, p, ws, dq, *do.stride(), *q.stride(), *dq.stride(), n, groups, head_dim, plan.tiles_per_split,
            plan=plan.bwd_partial, **blocks,
        )
    launch(
        channel_attention_bwd_kernel, grid,
        do, q, k, v, p, ws, dq, dk, dv,
        *do.stride(), *q.stride(), *k.stride(), *v.stride(), *dq.stride(), *dk.stride(), *dv.stride(),
        scale, n, groups, head_dim, plan.tiles_per_split, SPLIT=plan.splits > 1, plan=plan.bwd, **blocks,
    )


def _backward_fake(do, q, k, v, p, scale):
    return q.new_empty(q.shape), q.new_empty(q.shape), q.new_empty(q.shape)


def _backward_args(d_out, inputs, outputs, needs_grad):
    q, k, v, scale = inputs
    _, p = outputs
    return d_out, q, k, v, p, scale


channel_attention_fwd, channel_attention_bwd = register_fwd_bwd(
    "channel_attention", _forward, _forward_fake, _backward, _backward_fake, _backward_args, save_out=False,
)


def channel_attention_triton(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None
) -> torch.Tensor:
    """Triton backend of :func:`ops.channel_attention.channel_attention` (shapes and dtypes checked there)."""
    check_triton_dtype("channel_attention", q)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    out, _ = channel_attention_fwd(q, k, v, float(scale))
    return out
