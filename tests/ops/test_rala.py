"""Tests for `ops.rala` (rank-augmented linear attention, RAVLT).

* the reference against two independent fp64 formulations: the official ``GateLinearAttentionNoSilu`` order of
  operations (reweighted ``k' = N w phi(k)``, ``L^-1/2`` scalings, ``z``), and an explicit N x N attention matrix;
  the closed-form backward the kernels implement against fp64 autograd;
* the Triton backend against the reference: output and the gradients of q, k, v, gate, residual and both RoPE
  tables, odd N, strided inputs (views of one projection), fp32 / fp16 / bf16, every optional input on and off,
  the split-N plan, the kv / dq kernels' in-loop state reads and the query side's column split forced (the
  backward with other tiles and chunks than the forward's), every output NaN-prefilled;
* the custom ops under ``torch.compile(fullgraph=True)``, ``torch.export`` and ``torch.library.opcheck``.

Without a GPU the kernels run in Triton's CPU interpreter (tests/conftest.py) at tiny sizes; the ``gpu`` tests
run them compiled at RAVLT's sizes (stage 1 at 224^2 and at 1024^2).

Tolerances, Triton vs reference on the same inputs (both accumulate in fp32 and round once to the input dtype);
``|actual - expected| <= atol * max|expected| + rtol * |expected|`` elementwise:

    | dtype | atol | rtol   | why                                                                      |
    |-------|------|--------|--------------------------------------------------------------------------|
    | fp32  | 1e-5 | 1e-4   | same fp32 math, other summation order (observed <= 1e-6 relative)        |
    | fp16  | 2e-3 | 2e-3   | both round once to fp16: 1 ulp = 2^-10 ~ 1e-3; allow 2                   |
    | bf16  | 8e-3 | 1.6e-2 | both round once to bf16: 1 ulp = 2^-8 ~ 3.9e-3; allow 2                  |

On GPU at model sizes fp32 gets atol 1e-4 / rtol 1e-3 (reference einsums from cuBLAS; N up to 65536), and the
16-bit dtypes keep the table (the kernels' d x d products run in TF32 there, 2^-11 relative).
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import os

import pytest
import torch
import torch.nn.functional as F

from ops import rala
from ops._backend import empty
from ops._plans import GPU_TARGETS, INTERPRETER
from ops.rala.official import rala_official, rope_tables, theta_shift
from ops.rala.reference import rala_reference
from tests.utils import assert_close

triton_impl = importlib.import_module("ops.rala.triton")

TOL = {
    torch.float32: dict(atol=1e-5, rtol=1e-4),
    torch.float16: dict(atol=2e-3, rtol=2e-3),
    torch.bfloat16: dict(atol=8e-3, rtol=1.6e-2),
}
_GPU_FP32_TOL = dict(atol=1e-4, rtol=1e-3)
NAMES = ("out", "dq", "dk", "dv", "dgate", "dresidual", "dsin", "dcos")


def make_inputs(batch, n, heads, head_dim, dtype=torch.float32, device="cpu", seed=0, std=1.0):
    """(q, k, v, gate, residual): the first four unbind() views of one (B, N, 4, heads, d) projection, as RAVLT's
    qkvo conv gives them after a reshape; all leaves of their own so each gets a gradient."""
    gen = torch.Generator().manual_seed(seed)
    qkvo = (torch.randn(batch, n, 4, heads, head_dim, generator=gen) * std).to(device=device, dtype=dtype)
    residual = torch.randn(batch, n, heads, head_dim, generator=gen).to(device=device, dtype=dtype)
    return qkvo, residual


def random_tables(n, head_dim, device="cpu", seed=3):
    gen = torch.Generator().manual_seed(seed)
    ang = torch.rand(n, head_dim, generator=gen, dtype=torch.float64) * 6
    return ang.sin().float().to(device), ang.cos().float().to(device)


def run_with_grads(fn, qkvo, residual, tables, d_out=None, use_gate=True, use_residual=True, table_grad=True):
    """(out, dq, dk, dv, dgate, dresidual, dsin, dcos) of ``fn``; absent inputs give None gradients."""
    qkvo = qkvo.detach().clone().requires_grad_()
    residual = residual.detach().clone().requires_grad_() if use_residual else None
    tables = None if tables is None else tuple(t.detach().clone().requires_grad_(table_grad) for t in tables)
    q, k, v, g = qkvo.unbind(2)
    out = fn(q, k, v, g if use_gate else None, residual, tables)
    if d_out is None:
        d_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out.device, out.dtype)
    leaves = [qkvo] + ([residual] if use_residual else []) + (list(tables) if tables and table_grad else [])
    grads = list(torch.autograd.grad(out, leaves, d_out))
    dq, dk, dv, dg = grads.pop(0).unbind(2)
    dres = grads.pop(0) if use_residual else None
    dsin, dcos = (grads.pop(0), grads.pop(0)) if tables and table_grad else (None, None)
    return out, dq, dk, dv, dg if use_gate else None, dres, dsin, dcos


def _op(backend):
    return lambda q, k, v, g, r, tables: rala(q, k, v, gate=g, residual=r, rope=tables, backend=backend)


def check_against_reference(qkvo, residual, tables, tol, **kwargs):
    got = run_with_grads(_op("triton"), qkvo, residual, tables, **kwargs)
    want = run_with_grads(_op("reference"), qkvo, residual, tables, **kwargs)
    for name, a, e in zip(NAMES, got, want):
        assert (a is None) == (e is None), name
        if a is not None:
            assert_close(a, e, name=name, **tol)


# --------------------------------------------------------------------------------------------------------
# The reference is the spec: check it against independent formulations.


def naive_official_fp64(q, k, v, gate, residual, sin, cos, scale, eps):
    """The official GateLinearAttentionNoSilu.forward after the qkvo conv (``ops/rala/official.py``), in fp64."""
    return rala_official(*(t.double() for t in (q, k, v)), gate=gate.double(), residual=residual.double(),
                         rope=(sin.double(), cos.double()), scale=scale, eps=eps)


def naive_matrix_fp64(q, k, v, gate, residual, sin, cos, scale, eps):
    """The same as an explicit N x N attention matrix A[i, j] = (R_i phi q_i . R_j phi k_j) w_j / den_i."""
    q, k, v = (t.double().transpose(1, 2) for t in (q, k, v))
    sin, cos = sin.double(), cos.double()
    phi_q, phi_k = F.elu(q) + 1, F.elu(k) + 1
    w = torch.softmax(scale * phi_q.mean(2, keepdim=True) @ phi_k.transpose(-1, -2), dim=-1)  # (B, h, 1, N)
    den = (phi_q @ phi_k.transpose(-1, -2) * w).sum(-1, keepdim=True) + eps  # (B, h, N, 1)
    attn = theta_shift(phi_q, sin, cos) @ theta_shift(phi_k, sin, cos).transpose(-1, -2) * w / den
    return (attn @ v).transpose(1, 2) * gate.double() + residual.double() * gate.double()


@pytest.mark.parametrize("naive", [naive_official_fp64, naive_matrix_fp64], ids=["official", "matrix"])
@pytest.mark.parametrize("shape", [(1, 1, 2, 1, 8), (2, 3, 5, 2, 16), (1, 4, 6, 3, 32)], ids=str)
def test_reference_matches_naive_fp64(naive, shape):
    """Output and every gradient, RAVLT's own RoPE tables for an h x w map (N = 2 up)."""
    batch, h, w, heads, head_dim = shape
    n = h * w
    qkvo, residual = make_inputs(batch, n, heads, head_dim)
    tables = rope_tables(h, w, head_dim)
    d_out = torch.randn(batch, n, heads, head_dim, generator=torch.Generator().manual_seed(1))
    scale = head_dim**-0.5

    got = run_with_grads(lambda q, k, v, g, r, t: rala_reference(q, k, v, g, r, *t), qkvo, residual, tables, d_out)
    want = run_with_grads(lambda q, k, v, g, r, t: naive(q, k, v, g, r, *t, scale, 1e-6), qkvo.double(),
                          residual.double(), tuple(t.double() for t in tables), d_out.double())
    for name, a, e in zip(NAMES, got, want):
        assert_close(a.double(), e, atol=1e-6, rtol=1e-5, name=name)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_reference_phi_is_elu_plus_one(dtype):
    """The reference's kernel function ``relu(x) + exp(min(x, 0))`` is ``elu(x) + 1``: value and derivative, at 0
    (elu's derivative there is 1), +-0, far out and around 0. Values: within an ulp of 1 of ``elu(x) + 1`` (whose
    ``expm1(x) + 1`` cancels below 0) and, in fp32, within an ulp of the fp64 function (one rounding)."""
    from ops.rala.reference import _Phi

    x = torch.cat((torch.tensor([0.0, -0.0, 1e-30, -1e-30, 100.0, -100.0, -1e4, 1e4]),
                   torch.linspace(-20, 20, 4001))).to(dtype)
    got_x, want_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    got, want = _Phi.apply(got_x), F.elu(want_x) + 1
    got.sum().backward()
    want.sum().backward()
    ulp, tiny = torch.finfo(dtype).eps, torch.finfo(dtype).tiny
    assert ((got - want).abs() <= ulp * want.abs().clamp_min(1)).all()
    assert ((got_x.grad - want_x.grad).abs() <= ulp * want_x.grad + tiny).all()
    assert got_x.grad[0] == 1 and got_x.grad[1] == 1
    if dtype == torch.float32:  # against the function evaluated in fp64 (no cancellation: exp(x) below 0)
        xd = x.double()
        exact = torch.where(xd > 0, xd + 1, xd.clamp_max(0).exp())
        assert ((got.double() - exact).abs() <= ulp * exact + tiny).all()


def test_reference_without_options_is_plain_rala():
    """No gate, residual or tables: out = phi(q)^T KV / den with identity rotation."""
    qkvo, _ = make_inputs(2, 9, 2, 8)
    q, k, v, _ = qkvo.double().unbind(2)
    ones, zeros = torch.ones(9, 8, dtype=torch.float64), torch.zeros(9, 8, dtype=torch.float64)
    want = naive_official_fp64(q, k, v, torch.ones_like(q), torch.zeros_like(q), zeros, ones, 0.7, 1e-6)
    assert_close(rala(q, k, v, scale=0.7, backend="reference"), want, atol=1e-12, rtol=1e-10)


def test_backward_formulas_match_autograd():
    """The closed-form backward of ops/rala/triton.py's docstring, in fp64, against autograd of the naive form."""
    batch, n, heads, head_dim = 2, 11, 2, 8
    scale, eps = 0.41, 1e-6
    qkvo, residual = make_inputs(batch, n, heads, head_dim)
    qkvo, residual = qkvo.double(), residual.double()
    sin, cos = (t.double() for t in random_tables(n, head_dim))
    d_out = torch.randn(batch, n, heads, head_dim, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    want = run_with_grads(lambda q, k, v, g, r, t: naive_official_fp64(q, k, v, g, r, *t, scale, eps),
                          qkvo, residual, (sin, cos), d_out)[1:]

    q, k, v, g = qkvo.unbind(2)
    rot = lambda x: torch.stack((-x[..., 1::2], x[..., 0::2]), -1).flatten(-2)  # noqa: E731
    rope = lambda x: x * cos[:, None] + rot(x) * sin[:, None]  # noqa: E731
    rope_t = lambda y: y * cos[:, None] - rot(y * sin[:, None])  # noqa: E731
    phq, phk = F.elu(q) + 1, F.elu(k) + 1
    qbar = phq.mean(1)
    w = torch.einsum("bhc,bnhc->bnh", qbar * scale, phk).softmax(1)
    kv = torch.einsum("bnh,bnhc,bnhe->bhce", w, rope(phk), v)
    ks = torch.einsum("bnh,bnhc->bhc", w, phk)
    den = torch.einsum("bnhc,bhc->bnh", phq, ks) + eps
    a = torch.einsum("bnhc,bhce->bnhe", rope(phq), kv) / den[..., None]
    da = d_out * g
    dg, dres = d_out * (a + residual), da
    dan = da / den[..., None]
    dkv = torch.einsum("bnhc,bnhe->bhce", rope(phq), dan)
    dden = -(dan * a).sum(-1)
    dks = torch.einsum("bnh,bnhc->bhc", dden, phq)
    dkv_v = torch.einsum("bhce,bnhe->bnhc", dkv, v)
    centre = (kv * dkv).sum((-1, -2)) + (ks * dks).sum(-1)
    ds = w * ((rope(phk) * dkv_v).sum(-1) + torch.einsum("bnhc,bhc->bnh", phk, dks) - centre[:, None]) * scale
    drk = w[..., None] * dkv_v
    dphk = rope_t(drk) + w[..., None] * dks[:, None] + ds[..., None] * qbar[:, None]
    dv = w[..., None] * torch.einsum("bnhc,bhce->bnhe", rope(phk), dkv)
    dqbar = torch.einsum("bnh,bnhc->bhc", ds, phk)
    drq = torch.einsum("bnhe,bhce->bnhc", dan, kv)
    dphq = rope_t(drq) + dden[..., None] * ks[:, None] + dqbar[:, None] / n
    dq = dphq * torch.where(q > 0, 1.0, phq)
    dk = dphk * torch.where(k > 0, 1.0, phk)
    dcos = (phk * drk + phq * drq).sum((0, 2))
    dsin = (rot(phk) * drk + rot(phq) * drq).sum((0, 2))
    for name, x, e in zip(NAMES[1:], (dq, dk, dv, dg, dres, dsin, dcos), want):
        assert_close(x, e, atol=1e-12, rtol=1e-9, name=name)


# --------------------------------------------------------------------------------------------------------
# Triton (the interpreter here) against the reference.


def test_nan_fill_is_on():
    """The comparisons below only catch unwritten elements if kernel outputs start as NaN."""
    assert os.environ.get("ATTNZOO_NAN_FILL") == "1"
    assert torch.isnan(empty(3, device=torch.device("cpu"), dtype=torch.float16)).all()


# (B, N, heads, d): one token; odd N in one tile at an odd head_dim pair count (d = 24 -> BLOCK_D 32);
# two tiles at RAVLT's head_dim 64 (BLOCK_N 64, N = 70); RAVLT-B/L's head_dim 96 (padded to BLOCK_D 128,
# BLOCK_N 32: N = 45 is two tiles).
SHAPES = [(1, 1, 1, 16), (2, 37, 2, 24), (1, 70, 1, 64), (1, 45, 1, 96)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_triton_matches_reference(shape, dtype):
    if shape in (SHAPES[0], SHAPES[3]) and dtype == torch.float16:
        pytest.skip("fp16 is covered by the other shapes (interpreter time)")
    qkvo, residual = make_inputs(*shape, dtype=dtype)
    check_against_reference(qkvo, residual, random_tables(shape[1], shape[3]), TOL[dtype])


@pytest.mark.parametrize(
    "use_gate,use_residual,rope,table_grad",
    [(False, False, False, False), (True, False, True, False), (False, True, False, False)],
    ids=["plain", "gate-rope-nograd", "residual"],
)
def test_triton_optional_inputs(use_gate, use_residual, rope, table_grad):
    qkvo, residual = make_inputs(2, 21, 2, 16, seed=4)
    tables = random_tables(21, 16) if rope else None
    check_against_reference(qkvo, residual, tables, TOL[torch.float32], use_gate=use_gate,
                            use_residual=use_residual, table_grad=table_grad)


def test_triton_large_logits():
    """A peaked token softmax (large q, k: scale * qbar . phi(k) in the hundreds) stays finite and exact."""
    qkvo, residual = make_inputs(1, 40, 1, 32, std=6.0, seed=5)
    check_against_reference(qkvo, residual, random_tables(40, 32), dict(atol=1e-5, rtol=1e-3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_triton_split_n_matches_reference(monkeypatch, dtype):
    """The chunked plan, forced: N = 300 at d = 16 is 5 tiles of 64 (the last partial); 3 splits give chunks
    of 2 + 2 + 1 tiles, merged by the combine kernels."""
    monkeypatch.setattr(triton_impl, "_num_splits", lambda num_tiles, batch_heads, device: 3)
    plan = triton_impl.launch_plan(INTERPRETER, torch.float32, 16, 300, 2)
    assert (plan.splits, plan.tiles_per_split) == (3, 2)
    qkvo, residual = make_inputs(1, 300, 2, 16, dtype=dtype, seed=6)
    check_against_reference(qkvo, residual, random_tables(300, 16), TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_triton_state_in_loop_matches_reference(monkeypatch, dtype):
    """The backward kv / dq kernels reading their d x d state inside the token loop (the plan at d = 128 on
    99 KB GPUs), forced in the interpreter, with table gradients (their stores sit between the state's reads)."""
    plan_fn = triton_impl.launch_plan
    monkeypatch.setattr(triton_impl, "launch_plan",
                        lambda *args, **kwargs: dataclasses.replace(plan_fn(*args, **kwargs), state_in_loop=True))
    qkvo, residual = make_inputs(2, 37, 2, 24, dtype=dtype, seed=7)
    check_against_reference(qkvo, residual, random_tables(37, 24), TOL[dtype], table_grad=True)


def _forced_backward_plan(monkeypatch, block_c, block_n=None, splits=None):
    """The backward's plan with value columns in blocks of ``block_c`` (and, given ``block_n`` / ``splits``,
    other token tiles and chunks than the forward's); the forward keeps the interpreter plan."""
    plan_fn = triton_impl.launch_plan

    def plan(target, dtype, head_dim, n, batch_heads, backward=False):
        p = plan_fn(target, dtype, head_dim, n, batch_heads, backward)
        if not backward:
            return p
        changes = dict(block_c=block_c, col_splits=-(-head_dim // block_c))
        if block_n is not None:
            tiles = -(-n // block_n)
            tps = -(-tiles // splits)
            changes.update(block_n=block_n, tiles_per_split=tps, splits=-(-tiles // tps))
        return dataclasses.replace(p, **changes)

    monkeypatch.setattr(triton_impl, "launch_plan", plan)
    return plan


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize(
    "shape,block_c,block_n,splits",
    [((2, 37, 2, 24), 16, None, None), ((1, 70, 2, 40), 16, 16, 3)],
    ids=["d24-2cols", "d40-3cols-3chunks"],
)
def test_triton_column_split_matches_reference(monkeypatch, dtype, shape, block_c, block_n, splits):
    """The query-side backward with its value columns split over programs (the GPU plan at d = 128), forced:
    head_dim 24 (BLOCK_D 32) in 2 blocks of 16, the second half padding; head_dim 40 (BLOCK_D 64) in 3 blocks of
    16 (columns 48-63 are in no block: the combine kernel must zero dKV there, whatever the NaN-prefilled
    workspace holds) with the backward in 16-token tiles and 3 chunks (5 tiles: 2 + 2 + 1) while the forward
    runs one chunk of 64-token tiles; the dksum partials are chunks x column blocks. Gate, residual and table
    gradients on (the column blocks write dgate / dres; the dq kernel adds to the key side's table rows)."""
    plan = _forced_backward_plan(monkeypatch, block_c, block_n, splits)
    batch, n, heads, head_dim = shape
    bwd = plan(INTERPRETER, dtype, head_dim, n, batch * heads, True)
    assert bwd.col_splits == (2 if head_dim == 24 else 3) and bwd.block_c == block_c
    if block_n is not None:
        assert (bwd.block_n, bwd.splits, bwd.tiles_per_split) == (16, 3, 2)
        assert plan(INTERPRETER, dtype, head_dim, n, batch * heads).splits == 1
    qkvo, residual = make_inputs(*shape, dtype=dtype, seed=8)
    check_against_reference(qkvo, residual, random_tables(n, head_dim), TOL[dtype], table_grad=True)


def test_column_split_and_backward_tiles_by_target():
    """GPU plans: at d = 128 (RAVLT-B / L's head_dim 96) the query-side backward splits the value columns, into
    2 blocks of 64 with tensor-core dots (bf16, fp16, fp32 with TF32) and 3 blocks of 32 with FMA dots (exact
    fp32), on every target; d <= 64 (RAVLT-T / S) and the interpreter keep the whole state. The backward at d = 64
    takes 32-token tiles (16 with FMA dots), the forward 64; d = 128 takes 16 in both."""
    saved = torch.get_float32_matmul_precision()
    try:
        for setting in ("highest", "high"):
            torch.set_float32_matmul_precision(setting)
            for arch in (80, 86, 89, 90):
                target = GPU_TARGETS[arch]
                for dtype in (torch.bfloat16, torch.float16, torch.float32):
                    exact = dtype == torch.float32 and setting == "highest"
                    bwd = triton_impl.launch_plan(target, dtype, 96, 3136, 8, backward=True)
                    assert (bwd.block_c, bwd.col_splits, bwd.block_n) == ((32, 3, 16) if exact else (64, 2, 16))
                    assert bwd.kernels["bwd_q"].num_warps == 8
                    fwd = triton_impl.launch_plan(target, dtype, 96, 3136, 8)
                    assert fwd.block_n == 16
                    for head_dim in (64, 32):
                        bwd = triton_impl.launch_plan(target, dtype, head_dim, 3136, 8, backward=True)
                        assert (bwd.block_c, bwd.col_splits) == (bwd.block_d, 1), (arch, dtype, head_dim)
                    bwd = triton_impl.launch_plan(target, dtype, 64, 3136, 8, backward=True)
                    fwd = triton_impl.launch_plan(target, dtype, 64, 3136, 8)
                    assert (fwd.block_n, bwd.block_n) == ((16, 16) if exact else (64, 32)), (arch, dtype)
        for dtype in (torch.bfloat16, torch.float32):
            for head_dim in (96, 64):
                plan = triton_impl.launch_plan(INTERPRETER, dtype, head_dim, 3136, 8, backward=True)
                assert (plan.block_c, plan.col_splits) == (plan.block_d, 1)
                assert plan.block_n == triton_impl.launch_plan(INTERPRETER, dtype, head_dim, 3136, 8).block_n
    finally:
        torch.set_float32_matmul_precision(saved)


def test_state_in_loop_only_where_two_state_copies_do_not_fit():
    """RAVLT-B's head_dim 96 (d = 128) in bf16: the state stays live over the loop on sm_80 (163 KB) and sm_90,
    it is re-read inside the loop on sm_86 / sm_89 (99 KB); d = 64 fits everywhere; the interpreter never."""
    plan = functools.partial(triton_impl.launch_plan, backward=True)
    for arch, expected in ((80, False), (86, True), (89, True), (90, False)):
        assert plan(GPU_TARGETS[arch], torch.bfloat16, 96, 3136, 8).state_in_loop == expected
        assert not plan(GPU_TARGETS[arch], torch.bfloat16, 64, 3136, 8).state_in_loop
    assert not plan(INTERPRETER, torch.bfloat16, 96, 3136, 8).state_in_loop


def test_triton_arbitrary_strides():
    """Inputs in unrelated layouts (transposed, strided slice, token-major) and a stride-0 output gradient."""
    batch, n, heads, head_dim = 2, 13, 2, 16
    gen = torch.Generator().manual_seed(0)
    bases = (
        torch.randn(batch, heads, n, head_dim, generator=gen),
        torch.randn(batch, n, heads, 2 * head_dim, generator=gen),
        torch.randn(n, batch, heads, head_dim, generator=gen),
        torch.randn(batch, n, heads, 2 * head_dim, generator=gen),
        torch.randn(n, 2 * head_dim, generator=gen, dtype=torch.float64),
    )
    d_out = torch.randn(1, 1, heads, head_dim, generator=gen).expand(batch, n, heads, head_dim)

    def run(backend):
        leaves = [t.clone().requires_grad_() for t in bases]
        qb, kb, vb, gb, ang = leaves
        q, k, v, gate = qb.transpose(1, 2), kb[..., ::2], vb.transpose(0, 1), gb[..., 1::2]
        sin, cos = ang.sin().float()[:, ::2], ang.cos().float()[:, 1::2]  # strided fp32 tables, an fp64 leaf
        assert not any(t.is_contiguous() for t in (q, k, v, sin, cos))
        out = rala(q, k, v, gate=gate, rope=(sin, cos), backend=backend)
        return (out, *torch.autograd.grad(out, leaves, d_out))

    for name, a, e in zip(("out", "dq", "dk", "dv", "dgate", "dangles"), run("triton"), run("reference")):
        assert_close(a, e, **TOL[torch.float32], name=name)


def test_errors_name_the_bad_value():
    q = torch.randn(1, 6, 2, 8)
    with pytest.raises(ValueError, match=r"\(B, N, heads, head_dim\)"):
        rala(q[0], q[0], q[0])
    with pytest.raises(ValueError, match="one shape"):
        rala(q, q, q[:, :5])
    with pytest.raises(ValueError, match="gate must have"):
        rala(q, q, q, gate=q.half())
    with pytest.raises(ValueError, match=r"\(N, head_dim\) = \(6, 8\)"):
        rala(q, q, q, rope=(torch.ones(5, 8), torch.ones(5, 8)))
    with pytest.raises(ValueError, match="head_dim must be even, got 7"):
        rala(q[..., :7], q[..., :7], q[..., :7], rope=(torch.ones(6, 7), torch.ones(6, 7)))
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        rala(q, q, q, backend="cuda")


# --------------------------------------------------------------------------------------------------------
# Custom-op plumbing: compile, export, opcheck.


def test_compile_fullgraph_triton_aot_eager():
    qkvo, residual = make_inputs(1, 10, 2, 16, dtype=torch.bfloat16)
    tables = random_tables(10, 16)

    def fn(backend):
        op = _op(backend)
        return lambda q, k, v, g, r, t: op(q * 1.0, k, v, g, r, t).relu()  # ops around it, in one graph

    torch._dynamo.reset()
    compiled = torch.compile(fn("triton"), backend="aot_eager", fullgraph=True)
    got = run_with_grads(compiled, qkvo, residual, tables)
    want = run_with_grads(fn("reference"), qkvo, residual, tables)
    for name, a, e in zip(NAMES, got, want):
        assert_close(a, e, **TOL[torch.bfloat16], name=name)


def test_export_keeps_the_custom_op():
    class Block(torch.nn.Module):
        def forward(self, qkvo, sin, cos):
            q, k, v, g = qkvo.unbind(2)
            return rala(q, k, v, gate=g, rope=(sin, cos), backend="triton")

    qkvo, _ = make_inputs(1, 7, 1, 16)
    sin, cos = random_tables(7, 16)
    program = torch.export.export(Block(), (qkvo, sin, cos))
    assert "attnzoo.rala_fwd" in str(program.graph_module.code)
    q, k, v, g = qkvo.unbind(2)
    assert_close(program.module()(qkvo, sin, cos), rala(q, k, v, gate=g, rope=(sin, cos), backend="reference"),
                 **TOL[torch.float32])


def test_opcheck():
    """Schema, fake (meta) implementations and autograd registration of both custom ops."""
    qkvo, residual = make_inputs(1, 5, 1, 16)
    q, k, v, g = (t.contiguous() for t in qkvo.unbind(2))
    sin, cos = random_tables(5, 16)
    utils = ("test_schema", "test_autograd_registration", "test_faketensor")
    args = (q.requires_grad_(), k.requires_grad_(), v, g, residual, sin.requires_grad_(), cos, 0.25, 1e-6)
    torch.library.opcheck(torch.ops.attnzoo.rala_fwd.default, args, test_utils=utils)
    _, *state = torch.ops.attnzoo.rala_fwd(*(t.detach() for t in args[:7]), 0.25, 1e-6)
    bwd_args = (torch.randn_like(q), q.detach(), k.detach(), v, g, residual, sin.detach(), cos, *state, 0.25, 1e-6)
    torch.library.opcheck(torch.ops.attnzoo.rala_bwd.default, (*bwd_args, True), test_utils=utils)
    torch.library.opcheck(torch.ops.attnzoo.rala_bwd.default, (*bwd_args[:4], None, None, None, None,
                                                               *bwd_args[8:], False), test_utils=utils)


# --------------------------------------------------------------------------------------------------------
# Compiled kernels at RAVLT's sizes (GPU only).


def _gpu_tol(dtype):
    return _GPU_FP32_TOL if dtype == torch.float32 else TOL[dtype]


# (B, h, w, heads, d): RAVLT-T/S stage 1 and 2 at 224^2 (d 64), RAVLT-B/L stage 1 at 224^2 (d 96 -> BLOCK_D
# 128), segmentation stage 1 at 512^2, feature extraction stage 1 at 1024^2 (N = 65536, one head).
GPU_SHAPES = [(64, 56, 56, 1, 64), (64, 28, 28, 2, 64), (32, 56, 56, 1, 96), (8, 128, 128, 1, 64),
              (2, 256, 256, 1, 96)]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_gpu_model_sizes(shape, dtype):
    batch, h, w, heads, head_dim = shape
    qkvo, residual = make_inputs(batch, h * w, heads, head_dim, dtype=dtype, device="cuda")
    tables = tuple(t.cuda() for t in rope_tables(h, w, head_dim))
    check_against_reference(qkvo, residual, tables, _gpu_tol(dtype), table_grad=False)


@pytest.mark.gpu
def test_gpu_compile_inductor_triton():
    qkvo, residual = make_inputs(16, 3136, 1, 64, dtype=torch.bfloat16, device="cuda")
    tables = tuple(t.cuda() for t in rope_tables(56, 56, 64))
    torch._dynamo.reset()
    compiled = torch.compile(_op("triton"), fullgraph=True)
    got = run_with_grads(compiled, qkvo, residual, tables, table_grad=False)
    want = run_with_grads(_op("reference"), qkvo, residual, tables, table_grad=False)
    for name, a, e in zip(NAMES, got, want):
        if a is not None:
            assert_close(a, e, **TOL[torch.bfloat16], name=name)
