"""Tests for `ops.channel_attention` (DaViT channel group attention).

* the reference against a naive fp64 formulation written in DaViT's official order, and against timm's own
  ``ChannelAttention`` / ``ChannelAttentionV2`` modules (the Florence-2 form, by permuting the arguments);
* the Triton backend against the reference: output and the gradients of q, k and v, odd shapes, strided
  inputs, fp32 / fp16 / bf16, both kernel variants (fused and split-N), with every output NaN-prefilled;
* the custom ops under ``torch.compile(fullgraph=True)``, ``torch.export`` and ``torch.library.opcheck``.

Without a GPU the kernels run in Triton's CPU interpreter (tests/conftest.py) at small sizes; the ``gpu`` tests
run them compiled at DaViT's sizes. bf16 does run in the interpreter, but its ``tl.dot`` multiplies raw bf16
bit patterns (triton-lang/triton#11584), so there the kernels upcast bf16 dot operands to fp32 (exact; the
``UPCAST_DOT`` switch): loads, casts, masks and stores of bf16 are tested here, the bf16 tensor-core dot only
by the ``gpu`` tests.

Tolerances, Triton vs reference given the same inputs (the reference accumulates in fp32 and rounds once to
the input dtype). A tensor passes when ``|actual - expected| <= atol * max|expected| + rtol * |expected|``
elementwise, i.e. ``atol`` is relative to the tensor's largest entry, so one table fits outputs and gradients
of any magnitude:

    | dtype | atol | rtol   | why                                                                      |
    |-------|------|--------|--------------------------------------------------------------------------|
    | fp32  | 1e-5 | 1e-4   | same fp32 math, other summation order (observed <= 3e-6)                 |
    | fp16  | 2e-3 | 2e-3   | both round once to fp16: 1 ulp = 2^-10 ~ 1e-3; allow 2 (observed 1 ulp)  |
    | bf16  | 8e-3 | 1.6e-2 | both round once to bf16: 1 ulp = 2^-8 ~ 3.9e-3; allow 2 (observed 1 ulp) |

At model sizes on GPU (N up to 16384, TF32 for the token-parallel products of fp16/bf16, reference matmuls
from cuBLAS) fp32 gets atol 1e-4 / rtol 1e-3 (``_GPU_FP32_TOL``); fp16 / bf16 keep the table.
"""
from __future__ import annotations

import importlib
import os

import pytest
import torch
from timm.models.davit import ChannelAttention, ChannelAttentionV2

from ops import channel_attention
from ops._backend import empty
from ops._plans import INTERPRETER
from ops.channel_attention.reference import channel_attention_reference
from tests.utils import assert_close

# `ops.channel_attention` the attribute is the function, so the kernel module is fetched by name.
triton_impl = importlib.import_module("ops.channel_attention.triton")

TOL = {
    torch.float32: dict(atol=1e-5, rtol=1e-4),
    torch.float16: dict(atol=2e-3, rtol=2e-3),
    torch.bfloat16: dict(atol=8e-3, rtol=1.6e-2),
}
_GPU_FP32_TOL = dict(atol=1e-4, rtol=1e-3)

# (B, N, G, D): N = 1, 7, 50, 197 (ViT-style 14^2 + 1), G = 1, 3, D = 8, 24, 32 (DaViT's head_dim).
SHAPES = [
    (1, 1, 1, 8),
    (2, 7, 3, 24),
    (1, 50, 1, 32),
    (2, 197, 3, 32),
    (1, 197, 3, 8),
    (3, 50, 3, 24),
]



def make_qkv(batch, n, groups, head_dim, dtype=torch.float32, device="cpu", seed=0, std=1.0):
    """q, k, v as DaViT makes them: unbind() views of one (B, N, 3, G, D) tensor, so none is contiguous."""
    gen = torch.Generator().manual_seed(seed)
    qkv = torch.randn(batch, n, 3, groups, head_dim, generator=gen) * std
    return qkv.to(device=device, dtype=dtype).requires_grad_()


def naive_fp64(q, k, v, scale):
    """DaViT's official ChannelAttention.forward, one (batch, group) at a time in fp64."""
    q, k, v = (t.double() for t in (q, k, v))
    batch, _, groups, _ = q.shape
    rows = []
    for b in range(batch):
        cols = []
        for g in range(groups):
            qg, kg, vg = q[b, :, g], k[b, :, g], v[b, :, g]  # (N, D): the official (B, G, N, Cg) slices
            kg = kg * scale
            attn = kg.transpose(-1, -2) @ vg
            attn = attn.exp() / attn.exp().sum(dim=-1, keepdim=True)
            cols.append((attn @ qg.transpose(-1, -2)).transpose(-1, -2))
        rows.append(torch.stack(cols, dim=1))
    return torch.stack(rows)


def run_with_grads(fn, qkv: torch.Tensor, d_out: torch.Tensor | None = None, seed: int = 1):
    """(out, dq, dk, dv) of ``fn(q, k, v)`` for q, k, v = qkv.unbind(2)."""
    qkv = qkv.detach().clone().requires_grad_()
    out = fn(*qkv.unbind(2))
    if d_out is None:
        gen = torch.Generator().manual_seed(seed)
        d_out = torch.randn(out.shape, generator=gen).to(device=out.device, dtype=out.dtype)
    (grad,) = torch.autograd.grad(out, qkv, d_out)
    return (out, *grad.unbind(2))


def check_against_reference(qkv: torch.Tensor, tol: dict, scale=None, d_out=None) -> None:
    got = run_with_grads(lambda q, k, v: channel_attention(q, k, v, scale=scale, backend="triton"), qkv, d_out)
    want = run_with_grads(lambda q, k, v: channel_attention(q, k, v, scale=scale, backend="reference"), qkv, d_out)
    for name, a, e in zip(("out", "dq", "dk", "dv"), got, want):
        assert_close(a, e, name=name, **tol)


# --------------------------------------------------------------------------------------------------------
# The reference is the spec: check it against independent formulations.


@pytest.mark.parametrize("shape", [(1, 1, 1, 8), (2, 7, 3, 24), (2, 50, 3, 32)])
def test_reference_matches_naive_fp64(shape):
    qkv = make_qkv(*shape)
    scale = shape[-1] ** -0.5
    d_out = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    got = run_with_grads(lambda q, k, v: channel_attention_reference(q, k, v), qkv, d_out)
    want = run_with_grads(lambda q, k, v: naive_fp64(q, k, v, scale), qkv.double(), d_out.double())
    for name, a, e in zip(("out", "dq", "dk", "dv"), got, want):
        assert_close(a.double(), e, atol=1e-6, rtol=1e-5, name=name)


def test_backward_formulas_match_autograd():
    """The closed-form backward the kernels implement, checked in fp64 against autograd of the naive form."""
    batch, n, groups, head_dim = 2, 13, 3, 8
    scale = 0.37
    qkv = make_qkv(batch, n, groups, head_dim).double()
    d_out = torch.randn(batch, n, groups, head_dim, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    _, dq_ref, dk_ref, dv_ref = run_with_grads(lambda q, k, v: naive_fp64(q, k, v, scale), qkv, d_out)

    q, k, v = qkv.detach().unbind(2)
    p = torch.einsum("bmgi,bmgj->bgij", k, v).mul(scale).softmax(-1)
    dq = torch.einsum("bngi,bgij->bngj", d_out, p)  # dq = dO P
    dp = torch.einsum("bngi,bngj->bgij", d_out, q)  # dP = dO^T q
    ds = p * (dp - (dp * p).sum(-1, keepdim=True))  # softmax backward
    dk = scale * torch.einsum("bmgj,bgij->bmgi", v, ds)  # dk = scale v dS^T
    dv = scale * torch.einsum("bmgi,bgij->bmgj", k, ds)  # dv = scale k dS
    for name, a, e in zip(("dq", "dk", "dv"), (dq, dk, dv), (dq_ref, dk_ref, dv_ref)):
        assert_close(a, e, atol=1e-12, rtol=1e-10, name=name)


def test_matches_timm_channel_attention():
    """DaViT's block (timm's copy of the official code) == qkv -> channel_attention(q, k, v) -> proj."""
    torch.manual_seed(0)
    batch, n, groups, head_dim = 2, 10, 3, 8
    module = ChannelAttention(groups * head_dim, num_heads=groups, qkv_bias=True).double().eval()
    x = torch.randn(batch, n, groups * head_dim, dtype=torch.float64)
    q, k, v = module.qkv(x).reshape(batch, n, 3, groups, head_dim).unbind(2)
    for backend in ("reference", "triton"):
        out = channel_attention(q.float(), k.float(), v.float(), backend=backend)
        assert_close(module.proj(out.double().flatten(2)), module(x), atol=1e-6, rtol=1e-5, name=backend)


def test_florence2_v2_form():
    """timm's Florence-2 ``channel_attn_v2``: q * N^-0.5, attn = softmax(q^T k), out = (attn @ v^T)^T.

    That is ``channel_attention(v, q, k, scale=N ** -0.5)``; checked against an explicit formula in timm's
    (B, G, N, D) layout and against timm's ChannelAttentionV2 module itself.
    """
    torch.manual_seed(0)
    batch, n, groups, head_dim = 2, 12, 3, 8
    qkv = make_qkv(batch, n, groups, head_dim).detach()
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # timm's layout (B, G, N, D)
    attn = ((q * n**-0.5).transpose(-1, -2) @ k).softmax(dim=-1)
    want = (attn @ v.transpose(-1, -2)).transpose(-1, -2).transpose(1, 2)  # back to (B, N, G, D)
    q, k, v = qkv.unbind(2)
    for backend in ("reference", "triton"):
        got = channel_attention(v, q, k, scale=n**-0.5, backend=backend)
        assert_close(got, want, **TOL[torch.float32], name=backend)

    module = ChannelAttentionV2(groups * head_dim, num_heads=groups).eval()
    x = torch.randn(batch, n, groups * head_dim)
    with torch.no_grad():
        q, k, v = module.qkv(x).reshape(batch, n, 3, groups, head_dim).unbind(2)
        got = module.proj(channel_attention(v, q, k, scale=n**-0.5, backend="triton").flatten(2))
        assert_close(got, module(x), **TOL[torch.float32], name="ChannelAttentionV2")


# --------------------------------------------------------------------------------------------------------
# Triton (the interpreter here) against the reference.


def test_nan_fill_is_on():
    """The comparisons below only catch unwritten elements if kernel outputs start as NaN."""
    assert os.environ.get("ATTNZOO_NAN_FILL") == "1"
    assert torch.isnan(empty(3, device=torch.device("cpu"), dtype=torch.float16)).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_triton_matches_reference(shape, dtype):
    check_against_reference(make_qkv(*shape, dtype=dtype), TOL[dtype])


@pytest.mark.parametrize("splits", [2, 3, 5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_triton_split_n_matches_reference(monkeypatch, splits, dtype):
    """The split-N kernels (partials, then reduce-and-apply), forced; on a GPU small batches pick them.

    N = 600 at head_dim 32 is 5 tiles of 128 tokens, the last one partial: 2 splits give chunks of 3 + 2
    tiles, 3 splits give 2 + 2 + 1, 5 splits one tile each.
    """
    monkeypatch.setattr(triton_impl, "_num_splits", lambda num_tiles, batch_groups, device: splits)
    assert triton_impl.launch_plan(INTERPRETER, torch.float32, 32, 600, 6).splits == splits
    check_against_reference(make_qkv(2, 600, 3, 32, dtype=dtype, std=0.5), TOL[dtype])


def test_triton_split_n_is_deterministic(monkeypatch):
    monkeypatch.setattr(triton_impl, "_num_splits", lambda num_tiles, batch_groups, device: 3)
    qkv = make_qkv(1, 300, 2, 32)
    fn = lambda q, k, v: channel_attention(q, k, v, backend="triton")  # noqa: E731
    first, second = run_with_grads(fn, qkv), run_with_grads(fn, qkv)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_triton_arbitrary_strides():
    """q, k, v and dO in unrelated layouts: transposed, a strided slice, token-major, a stride-0 gradient."""
    batch, n, groups, head_dim = 2, 33, 3, 24
    gen = torch.Generator().manual_seed(0)
    bases = (
        torch.randn(batch, groups, n, head_dim, generator=gen),
        torch.randn(batch, n, groups, 2 * head_dim, generator=gen),
        torch.randn(n, batch, groups, head_dim, generator=gen),
    )
    d_out = torch.randn(1, 1, groups, head_dim, generator=gen).expand(batch, n, groups, head_dim)

    def views(qb, kb, vb):
        return qb.transpose(1, 2), kb[..., ::2], vb.transpose(0, 1)

    assert not any(t.is_contiguous() for t in views(*bases))

    def run(backend):
        leaves = [t.clone().requires_grad_() for t in bases]
        out = channel_attention(*views(*leaves), backend=backend)
        return (out, *torch.autograd.grad(out, leaves, d_out))

    for name, a, e in zip(("out", "dq", "dk", "dv"), run("triton"), run("reference")):
        assert_close(a, e, **TOL[torch.float32], name=name)


def test_triton_default_and_custom_scale():
    qkv = make_qkv(2, 20, 3, 24)
    check_against_reference(qkv, TOL[torch.float32], scale=None)
    check_against_reference(qkv, TOL[torch.float32], scale=1.7)


def test_triton_grad_of_one_input():
    """Only k needs a gradient; the fp32 softmax P, an internal output of the forward op, never needs one."""
    q, k, v = make_qkv(1, 9, 3, 32).detach().unbind(2)

    def dk(backend):
        leaf = k.clone().requires_grad_()
        channel_attention(q, leaf, v, backend=backend).square().sum().backward()
        return leaf.grad

    assert_close(dk("triton"), dk("reference"), **TOL[torch.float32], name="dk")


# --------------------------------------------------------------------------------------------------------
# Custom-op plumbing: compile, export, opcheck.


def _model_fn(backend):
    def fn(qkv):
        q, k, v = qkv.unbind(2)
        return channel_attention(q, k, v, backend=backend).flatten(2)

    return fn


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_compile_fullgraph_triton_aot_eager(dtype):
    qkv = make_qkv(2, 50, 3, 24, dtype=dtype)
    torch._dynamo.reset()
    compiled = torch.compile(_model_fn("triton"), backend="aot_eager", fullgraph=True)
    got = run_with_grads(lambda q, k, v: compiled(torch.stack((q, k, v), 2)), qkv)
    want = run_with_grads(lambda q, k, v: _model_fn("reference")(torch.stack((q, k, v), 2)), qkv)
    for name, a, e in zip(("out", "dq", "dk", "dv"), got, want):
        assert_close(a, e, **TOL[dtype], name=name)


def test_compile_fullgraph_reference_inductor():
    qkv = make_qkv(1, 16, 2, 8)
    torch._dynamo.reset()
    compiled = torch.compile(_model_fn("reference"), fullgraph=True)
    got = run_with_grads(lambda q, k, v: compiled(torch.stack((q, k, v), 2)), qkv)
    want = run_with_grads(lambda q, k, v: _model_fn("reference")(torch.stack((q, k, v), 2)), qkv)
    for name, a, e in zip(("out", "dq", "dk", "dv"), got, want):
        assert_close(a, e, **TOL[torch.float32], name=name)


def test_export_keeps_the_custom_op():
    class Block(torch.nn.Module):
        def forward(self, qkv):
            return _model_fn("triton")(qkv)

    qkv = make_qkv(2, 7, 3, 8).detach()
    program = torch.export.export(Block(), (qkv,))
    assert "attnzoo.channel_attention_fwd" in str(program.graph_module.code)
    assert_close(program.module()(qkv), _model_fn("reference")(qkv), **TOL[torch.float32])


def test_opcheck():
    """Schema, fake (meta) implementations, autograd registration and aliasing of both custom ops."""
    q, k, v = make_qkv(2, 9, 3, 8).detach().unbind(2)
    scale = 8**-0.5
    torch.library.opcheck(
        torch.ops.attnzoo.channel_attention_fwd.default,
        (q.requires_grad_(), k.requires_grad_(), v.requires_grad_(), scale),
    )
    q, k, v = (t.detach() for t in (q, k, v))
    _, p = torch.ops.attnzoo.channel_attention_fwd(q, k, v, scale)
    torch.library.opcheck(torch.ops.attnzoo.channel_attention_bwd.default, (torch.randn_like(q), q, k, v, p, scale))


# --------------------------------------------------------------------------------------------------------
# Compiled kernels at DaViT's sizes (GPU only).


def _gpu_tol(dtype):
    return _GPU_FP32_TOL if dtype == torch.float32 else TOL[dtype]


# (B, N, G, D): stage 1 at 224^2 (split-N), segmentation stage 1 at 512^2 (split-N, 16384 tokens), stage 3
# at 224^2 with many programs (fused).
GPU_SHAPES = [(32, 3136, 3, 32), (8, 16384, 3, 32), (64, 196, 12, 32)]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_gpu_model_sizes(shape, dtype):
    batch, n, groups, head_dim = shape
    # std N^-1/4 keeps scale * k^T v of order 1 at any N, so P is not one-hot and every gradient is exercised.
    qkv = make_qkv(*shape, dtype=dtype, device="cuda", std=n**-0.25)
    check_against_reference(qkv, _gpu_tol(dtype))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_gpu_compile_inductor_triton(dtype):
    qkv = make_qkv(32, 3136, 3, 32, dtype=dtype, device="cuda", std=3136**-0.25)
    torch._dynamo.reset()
    compiled = torch.compile(_model_fn("triton"), fullgraph=True)
    got = run_with_grads(lambda q, k, v: compiled(torch.stack((q, k, v), 2)), qkv)
    want = run_with_grads(lambda q, k, v: _model_fn("reference")(torch.stack((q, k, v), 2)), qkv)
    for name, a, e in zip(("out", "dq", "dk", "dv"), got, want):
        assert_close(a, e, **_gpu_tol(dtype), name=name)


@pytest.mark.gpu
@pytest.mark.slow
def test_gpu_int64_offsets():
    """More than 2^31 elements in (B, N, 3, G, D): the last batch's addresses overflow int32 (~15 GB)."""
    batch, n, groups, head_dim = 456, 16384, 3, 32
    assert batch * n * 3 * groups * head_dim > 2**31
    qkv = make_qkv(1, n, groups, head_dim, dtype=torch.bfloat16, device="cuda", std=n**-0.25).detach()
    qkv = qkv.expand(batch, -1, -1, -1, -1).contiguous().requires_grad_()
    out = channel_attention(*qkv.unbind(2), backend="triton")
    d_out = torch.randn_like(out[-1:]).expand_as(out)
    (grad,) = torch.autograd.grad(out, qkv, d_out)
    # Batches are independent and all equal here: the reference on the last one is enough.
    want = run_with_grads(lambda q, k, v: channel_attention(q, k, v, backend="reference"), qkv[-1:], d_out[-1:])
    for name, a, e in zip(("out", "dq", "dk", "dv"), (out[-1:], *grad[-1:].unbind(2)), want):
        assert_close(a, e, **TOL[torch.bfloat16], name=name)
