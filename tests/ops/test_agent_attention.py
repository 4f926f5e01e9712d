"""Tests for `ops.agent_attention` (Agent-DeiT / -PVT / -Swin / -CSwin) and its bias helper `agent_bias_maps`.

* the reference against an independent naive fp64 formulation (a loop over batch and heads, explicit exp-sum
  softmax), output and every gradient; `agent_bias_maps` against the official classification and segmentation
  formulas (bilinear an/na maps, separable ah/aw/ha/wa terms, Agent-DeiT's cls column/row, the downstream
  agent-grid resize), written out here from the reference facts;
* the Triton backend against the reference: the output and the gradients of q, k, v, the agents and both
  biases, on odd token counts, n_agent 4 / 9 / 49 (and past one 256-row tile: the atomic paths), head_dim 8 /
  16 / 24 / 40, N_k != N, strided inputs, fp32 / fp16 / bf16, fp32 biases with half inputs (AMP), with every
  kernel output NaN-prefilled;
* the custom ops under ``torch.compile(fullgraph=True)`` (aot_eager here; inductor in the gpu test),
  ``torch.export`` and ``torch.library.opcheck``;
* backend selection and argument errors of the public functions.

Without a GPU the kernels run in Triton's CPU interpreter (tests/conftest.py) at small sizes; the ``gpu`` tests
run them compiled at model sizes.

Tolerances, Triton vs reference given the same inputs (the reference computes both stages in fp32 and rounds
once; the kernels round P, dS -- and V_A, dV_A between the stages -- to the input dtype, as FlashAttention
does). ``atol`` is relative to the tensor's largest entry (tests/utils.assert_close):

    | dtype | atol   | rtol   | why                                                                           |
    |-------|--------|--------|-------------------------------------------------------------------------------|
    | fp32  | 1e-5   | 1e-4   | same fp32 math, other summation order (observed 8e-7)                         |
    | fp16  | 4e-3   | 4e-3   | 1 ulp = 2^-11..2^-10; P, dS, V_A, dV_A rounded once more each (obs. 9e-4)     |
    | bf16  | 3e-2   | 3e-2   | 1 ulp = 2^-8..2^-7 (3.9e-3..7.8e-3): up to 4 ulps through two stages (1.9e-2)|
"""
from __future__ import annotations

import importlib
import os

import pytest
import torch
import torch.nn.functional as F

import ops
from ops import agent_attention, agent_bias_maps
from ops._backend import ENV_BACKEND, empty
from ops.agent_attention.official import agent_attention_official, agent_bias_maps_official
from ops.agent_attention.reference import agent_attention_reference
from tests.utils import assert_close

pkg = importlib.import_module("ops.agent_attention")
triton_impl = importlib.import_module("ops.agent_attention.triton")

TOL = {
    torch.float32: dict(atol=1e-5, rtol=1e-4),
    torch.float16: dict(atol=4e-3, rtol=4e-3),
    torch.bfloat16: dict(atol=3e-2, rtol=3e-2),
}
_GPU_FP32_TOL = dict(atol=1e-4, rtol=1e-3)
_FP64_TOL = dict(atol=1e-6, rtol=1e-5)
NAMES = ("out", "dq", "dk", "dv", "d_agents", "d_agent_bias", "d_query_bias")

# (B, N, heads, head_dim, n_agent, N_k); N_k None = N.
SHAPES = [
    (1, 9, 1, 8, 4, None),  # tiny: 3x3 map, 2x2 agents
    (2, 37, 2, 16, 9, None),  # odd N, PVT-T stage-1 agent count
    (1, 197, 3, 16, 49, None),  # Agent-DeiT-T token count (cls + 14x14), 49 agents
    (2, 50, 2, 24, 49, None),  # head_dim 24 (padded to 32), Agent-Swin/PVT stage-3 agent count
    (1, 70, 1, 40, 9, 23),  # N_k != N (PVT's reduced keys), head_dim 40
    (1, 290, 2, 8, 16, None),  # stage 1: five 64-key tiles, key splits, the key-parallel backward (N > 256)
]


def shape_id(shape) -> str:
    b, n, nh, d, a, nk = shape
    return f"{b}x{n}x{nh}x{d}-a{a}" + (f"-nk{nk}" if nk else "")


def make_inputs(batch, n, heads, head_dim, n_agent, n_k=None, dtype=torch.float32, bias_dtype=torch.float32,
                device="cpu", seed=0, bias=(True, True)):
    """q from a fused qkv (non-contiguous unbind views, as models make them); k/v of N_k tokens; biases fp32."""
    gen = torch.Generator().manual_seed(seed)
    n_k = n if n_k is None else n_k
    q = torch.randn(batch, n, heads, head_dim, generator=gen)
    kv = torch.randn(batch, n_k, 2, heads, head_dim, generator=gen)
    agents = torch.randn(batch, n_agent, heads, head_dim, generator=gen)
    agent_bias = torch.randn(heads, n_agent, n_k, generator=gen) if bias[0] else None
    query_bias = torch.randn(heads, n, n_agent, generator=gen) if bias[1] else None
    cast = dict(device=device, dtype=dtype)
    biases = [None if t is None else t.to(device=device, dtype=bias_dtype) for t in (agent_bias, query_bias)]
    return [q.to(**cast), kv.to(**cast), agents.to(**cast), *biases]


def run_with_grads(fn, q, kv, agents, agent_bias, query_bias, d_out=None, seed=1):
    """(out, dq, dk, dv, d_agents, d_agent_bias, d_query_bias) of ``fn(q, k, v, agents, agent_bias, query_bias)``."""
    leaves = [t.detach().clone().requires_grad_() if t is not None else None
              for t in (q, kv, agents, agent_bias, query_bias)]
    q, kv, agents, agent_bias, query_bias = leaves
    k, v = kv.unbind(2)
    out = fn(q, k, v, agents, agent_bias, query_bias)
    if d_out is None:
        gen = torch.Generator().manual_seed(seed)
        d_out = torch.randn(out.shape, generator=gen).to(device=out.device, dtype=out.dtype)
    live = [t for t in leaves if t is not None]
    grads = dict(zip(map(id, live), torch.autograd.grad(out, live, d_out)))
    dq, dkv, da, dab, dqb = (grads[id(t)] if t is not None else None for t in leaves)
    return (out, dq, *dkv.unbind(2), da, dab, dqb)


def compare(got, want, tol, names=NAMES) -> None:
    for name, a, e in zip(names, got, want):
        if e is None:
            assert a is None, name
            continue
        assert_close(a, e, name=name, **tol)


def backend_fn(backend, scale=None):
    return lambda q, k, v, a, ab, qb: agent_attention(q, k, v, a, agent_bias=ab, query_bias=qb, scale=scale,
                                                      backend=backend)


def check_against_reference(inputs, tol, scale=None, d_out=None) -> None:
    compare(run_with_grads(backend_fn("triton", scale), *inputs, d_out=d_out),
            run_with_grads(backend_fn("reference", scale), *inputs, d_out=d_out), tol)


def naive_fp64(q, k, v, agents, agent_bias=None, query_bias=None, scale=None):
    """Agent attention one (batch, head) at a time in fp64, softmax written out as exp / sum."""
    q, k, v, agents = (t.double() for t in (q, k, v, agents))
    batch, n, heads, head_dim = q.shape
    scale = head_dim**-0.5 if scale is None else scale
    out = torch.zeros_like(q)
    for b in range(batch):
        for h in range(heads):
            a_, k_, v_, q_ = agents[b, :, h], k[b, :, h], v[b, :, h], q[b, :, h]
            s1 = scale * a_ @ k_.T + (0 if agent_bias is None else agent_bias[h].double())
            e1 = torch.exp(s1 - s1.max(dim=1, keepdim=True).values)
            agent_v = (e1 / e1.sum(dim=1, keepdim=True)) @ v_
            s2 = scale * q_ @ a_.T + (0 if query_bias is None else query_bias[h].double())
            e2 = torch.exp(s2 - s2.max(dim=1, keepdim=True).values)
            out[b, :, h] = (e2 / e2.sum(dim=1, keepdim=True)) @ agent_v
    return out


# --------------------------------------------------------------------------------------------------------
# The reference is the spec.


@pytest.mark.parametrize("bias", [(True, True), (False, False), (True, False)], ids=["both", "none", "agent_only"])
@pytest.mark.parametrize("shape", [SHAPES[1], SHAPES[4]], ids=shape_id)
def test_reference_matches_naive_fp64(shape, bias):
    inputs = make_inputs(*shape, bias=bias)
    d_out = torch.randn(*shape[:4], generator=torch.Generator().manual_seed(2))
    got = run_with_grads(lambda *t: agent_attention_reference(*t, scale=0.3), *inputs, d_out=d_out)
    want = run_with_grads(lambda *t: naive_fp64(*t, scale=0.3), *(None if t is None else t.double() for t in inputs),
                          d_out=d_out.double())
    compare([None if t is None else t.double() for t in got], want, _FP64_TOL)


def _bias_params(heads, a, h0, w0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    shapes = [(heads, a, 7, 7), (heads, a, 7, 7), (1, heads, a, h0, 1), (1, heads, a, 1, w0), (1, heads, h0, 1, a),
              (1, heads, 1, w0, a)]
    return [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]


def test_bias_maps_classification_formula():
    """At the training grid: the official classification code's (an/na bilinear + ah+aw / ha+wa reshaped)."""
    heads, a, h, w = 3, 9, 14, 14
    an, na, ah, aw, ha, wa = _bias_params(heads, a, h, w)
    agent_bias, query_bias = agent_bias_maps(an, na, ah, aw, ha, wa, (h, w))
    want1 = F.interpolate(an, size=(h, w), mode="bilinear").reshape(heads, a, -1) + (ah + aw).reshape(heads, a, -1)
    want2 = F.interpolate(na, size=(h, w), mode="bilinear").reshape(heads, a, -1).transpose(1, 2) \
        + (ha + wa).reshape(heads, -1, a)
    assert_close(agent_bias, want1, **_FP64_TOL, name="agent_bias")
    assert_close(query_bias, want2, **_FP64_TOL, name="query_bias")
    both = agent_bias_maps_official(an, na, ah, aw, ha, wa, (h, w))
    assert_close(agent_bias, both[0], **_FP64_TOL, name="agent_bias (seg formula at the training grid)")


@pytest.mark.parametrize("size, grid", [((20, 11), None), ((9, 16), (5, 5)), ((7, 7), (2, 4))])
def test_bias_maps_segmentation_formula(size, grid):
    """Another map size (and a downstream agent grid): the official segmentation backbone's formula."""
    heads, a = 2, 16
    params = _bias_params(heads, a, 12, 10)
    got = agent_bias_maps(*params, size, agent_grid=grid)
    want = agent_bias_maps_official(*params, size, grid)
    n_agent = a if grid is None else grid[0] * grid[1]
    assert got[0].shape == (heads, n_agent, size[0] * size[1]) and got[1].shape == (heads, size[0] * size[1], n_agent)
    for name, g, e in zip(("agent_bias", "query_bias"), got, want):
        assert_close(g, e, **_FP64_TOL, name=name)


def test_bias_maps_cls_and_optional_terms():
    """Agent-DeiT's ac_bias / ca_bias become the first key column / query row; ah/aw and ha/wa are optional."""
    heads, a, h, w = 2, 4, 5, 5
    an, na, ah, aw, ha, wa = _bias_params(heads, a, h, w)
    ac = torch.randn(1, heads, a, 1, dtype=torch.float64)
    ca = torch.randn(1, heads, 1, a, dtype=torch.float64)
    full = agent_bias_maps(an, na, ah, aw, ha, wa, (h, w))
    agent_bias, query_bias = agent_bias_maps(an, na, ah, aw, ha, wa, (h, w), cls_agent_bias=ac, cls_query_bias=ca)
    assert agent_bias.shape == (heads, a, 1 + h * w) and query_bias.shape == (heads, 1 + h * w, a)
    assert torch.equal(agent_bias[:, :, 0], ac[0, :, :, 0]) and torch.equal(agent_bias[:, :, 1:], full[0])
    assert torch.equal(query_bias[:, 0], ca[0, :, 0]) and torch.equal(query_bias[:, 1:], full[1])
    bare = agent_bias_maps(an, na, None, None, None, None, (h, w))
    assert torch.equal(bare[0], F.interpolate(an, size=(h, w), mode="bilinear").reshape(heads, a, -1))


def test_bias_maps_gradients_reach_every_parameter():
    params = [t.float().requires_grad_() for t in _bias_params(2, 9, 6, 6)]
    cls = [torch.randn(1, 2, 9, 1, requires_grad=True), torch.randn(1, 2, 1, 9, requires_grad=True)]
    agent_bias, query_bias = agent_bias_maps(*params, (8, 8), cls_agent_bias=cls[0], cls_query_bias=cls[1])
    (agent_bias.square().sum() + query_bias.square().sum()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params + cls)


def test_bias_maps_errors():
    an, na, ah, aw, ha, wa = _bias_params(2, 9, 6, 6)
    with pytest.raises(ValueError, match="an_bias and na_bias"):
        agent_bias_maps(an, na[:1], ah, aw, ha, wa, (6, 6))
    with pytest.raises(ValueError, match=r"ah_bias must be \(1, 2, 9, \*, 1\)"):
        agent_bias_maps(an, na, ah[:, :, :4], aw, ha, wa, (6, 6))
    with pytest.raises(ValueError, match="ah_bias with aw_bias"):
        agent_bias_maps(an, na, ah, None, ha, wa, (6, 6))
    with pytest.raises(ValueError, match="together"):
        agent_bias_maps(an, na, ah, aw, ha, wa, (6, 6), cls_agent_bias=torch.zeros(1, 2, 9, 1))
    with pytest.raises(ValueError, match=r"cls_agent_bias must be \(1, 2, 9, 1\)"):
        agent_bias_maps(an, na, ah, aw, ha, wa, (6, 6), cls_agent_bias=torch.zeros(1, 2, 4, 1),
                        cls_query_bias=torch.zeros(1, 2, 1, 4))


def test_matches_official_attention_formula_with_deit_cls():
    """The op + bias maps == the official Agent-DeiT attention core (``ops/agent_attention/official.py``; pooled
    patch queries, the cls bias column / row written here) in fp64."""
    torch.manual_seed(0)
    b, heads, d, a, side = 2, 2, 8, 9, 6
    n = 1 + side * side
    c = heads * d
    an, na, ah, aw, ha, wa = _bias_params(heads, a, side, side)
    ac, ca = torch.randn(1, heads, a, 1, dtype=torch.float64), torch.randn(1, heads, 1, a, dtype=torch.float64)
    q, k, v = torch.randn(3, b, n, c, dtype=torch.float64).unbind(0)
    pooled = F.adaptive_avg_pool2d(q[:, 1:].reshape(b, side, side, c).permute(0, 3, 1, 2), 3)
    agents = pooled.reshape(b, c, a).permute(0, 2, 1)
    scale = d**-0.5
    pb = F.interpolate(an, size=(side, side), mode="bilinear").reshape(1, heads, a, -1) \
        + (ah + aw).reshape(1, heads, a, -1)
    pb = torch.cat([ac, pb], dim=-1)
    qb = F.interpolate(na, size=(side, side), mode="bilinear").reshape(1, heads, a, -1).permute(0, 1, 3, 2) \
        + (ha + wa).reshape(1, heads, -1, a)
    qb = torch.cat([ca, qb], dim=-2)
    qs, ks, vs, As = (t.reshape(b, -1, heads, d) for t in (q, k, v, agents))
    want = agent_attention_official(qs, ks, vs, As, agent_bias=pb[0], query_bias=qb[0], scale=scale)
    biases = agent_bias_maps(an, na, ah, aw, ha, wa, (side, side), cls_agent_bias=ac, cls_query_bias=ca)
    for backend, tol in (("reference", _FP64_TOL), ("triton", TOL[torch.float32])):
        cast = (lambda t: t) if backend == "reference" else (lambda t: t.float())  # noqa: E731
        out = agent_attention(cast(qs), cast(ks), cast(vs), cast(As), agent_bias=cast(biases[0]),
                              query_bias=cast(biases[1]), backend=backend)
        assert_close(out.double(), want, **tol, name=backend)


# --------------------------------------------------------------------------------------------------------
# Triton (the interpreter here) against the reference.


def test_nan_fill_is_on():
    assert os.environ.get("ATTNZOO_NAN_FILL") == "1"
    assert torch.isnan(empty(3, device=torch.device("cpu"), dtype=torch.bfloat16)).all()


@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_triton_matches_reference_fp32(shape):
    check_against_reference(make_inputs(*shape), TOL[torch.float32])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", [SHAPES[0], SHAPES[1], SHAPES[4]], ids=shape_id)
def test_triton_matches_reference_half(shape, dtype):
    """Half inputs with fp32 biases (AMP: the bias parameters stay fp32)."""
    check_against_reference(make_inputs(*shape, dtype=dtype), TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_triton_biases_in_input_dtype(dtype):
    """Half biases (no AMP) get their gradients in their own dtype."""
    check_against_reference(make_inputs(*SHAPES[1], dtype=dtype, bias_dtype=dtype), TOL[dtype])


@pytest.mark.parametrize("bias", [(False, False), (True, False), (False, True)], ids=["none", "agent", "query"])
def test_triton_optional_biases(bias):
    check_against_reference(make_inputs(*SHAPES[1], bias=bias), TOL[torch.float32])


def test_triton_more_agents_than_one_tile():
    """300 agents: stage 1 has two agent blocks, stage 2 two key tiles (online softmax) and the key-parallel
    backward (over 256 keys), stage 1 the query-parallel one (21 keys) with dk / dv by atomics."""
    check_against_reference(make_inputs(1, 21, 1, 8, 300), TOL[torch.float32])


@pytest.mark.parametrize("key_parallel", [True, False], ids=["key_parallel", "query_parallel"])
def test_triton_forced_small_blocks(monkeypatch, key_parallel):
    """16 x 16 tiles everywhere, both stages' backward on one plan: several query blocks and key tiles in both
    stages and both directions, every atomic path (dq, dk / dv, biases) and the forward's key splits."""
    monkeypatch.setattr(triton_impl, "_fwd_blocks", lambda m, n, *_: (16, 16))
    monkeypatch.setattr(triton_impl, "_bwd_plan", lambda m, n, *_: (key_parallel, 16, 16))
    check_against_reference(make_inputs(2, 45, 2, 16, 25), TOL[torch.float32])


@pytest.mark.parametrize("splits", [1, 2, 5, 100])
def test_triton_forward_key_splits(monkeypatch, splits):
    """Stage 1's keys in any number of ranges (merged by logsumexp weights), 16-key tiles: 61 keys are 4 tiles, so
    5 and 100 ranges clamp to one tile each, 2 leaves a short last range."""
    monkeypatch.setattr(triton_impl, "_fwd_blocks", lambda m, n, *_: (16, 16))
    monkeypatch.setattr(triton_impl, "_num_splits", lambda programs, tiles, device: min(splits, tiles))
    check_against_reference(make_inputs(1, 61, 2, 8, 9), TOL[torch.float32])


def test_triton_strided_inputs():
    """q, k, v, agents, biases and dO in unrelated layouts: permuted copies, strided slices, a transposed bias
    (as agent_bias_maps returns query_bias), a stride-0 gradient."""
    batch, n, heads, head_dim, a = 2, 33, 2, 16, 9
    gen = torch.Generator().manual_seed(0)
    bases = (
        torch.randn(batch, heads, n, head_dim, generator=gen),
        torch.randn(batch, n, heads, 2 * head_dim, generator=gen),
        torch.randn(n, batch, heads, head_dim, generator=gen),
        torch.randn(batch, heads, head_dim, a, generator=gen),
        torch.randn(heads, n, a, generator=gen),
        torch.randn(heads, a, n, generator=gen),
    )
    d_out = torch.randn(1, 1, heads, head_dim, generator=gen).expand(batch, n, heads, head_dim)

    def views(qb, kb, vb, ab, abias, qbias):
        return (qb.transpose(1, 2), kb[..., ::2], vb.transpose(0, 1), ab.permute(0, 3, 1, 2),
                abias.transpose(1, 2), qbias.transpose(1, 2))

    assert not any(t.is_contiguous() for t in views(*bases))

    def run(backend):
        leaves = [t.clone().requires_grad_() for t in bases]
        q, k, v, agents, agent_bias, query_bias = views(*leaves)
        out = agent_attention(q, k, v, agents, agent_bias=agent_bias, query_bias=query_bias, backend=backend)
        return (out, *torch.autograd.grad(out, leaves, d_out))

    compare(run("triton"), run("reference"), TOL[torch.float32])


def test_triton_custom_scale():
    check_against_reference(make_inputs(*SHAPES[0]), TOL[torch.float32], scale=1.7)


def test_triton_grad_of_some_inputs():
    """Only the query bias, then only k need a gradient: the backward op skips the bias gradients it needs not."""
    q, kv, agents, agent_bias, query_bias = make_inputs(*SHAPES[1])
    k, v = kv.unbind(2)

    def d_query_bias(backend):
        leaf = query_bias.clone().requires_grad_()
        agent_attention(q, k, v, agents, agent_bias=agent_bias, query_bias=leaf, backend=backend).square().sum() \
            .backward()
        return leaf.grad

    def d_k(backend):
        leaf = k.clone().requires_grad_()
        agent_attention(q, leaf, v, agents, agent_bias=agent_bias, query_bias=query_bias, backend=backend) \
            .square().sum().backward()
        return leaf.grad

    assert_close(d_query_bias("triton"), d_query_bias("reference"), **TOL[torch.float32], name="d_query_bias")
    assert_close(d_k("triton"), d_k("reference"), **TOL[torch.float32], name="dk")


def test_triton_empty_batch():
    got = run_with_grads(backend_fn("triton"), *make_inputs(0, 9, 2, 8, 4))
    assert got[0].shape == (0, 9, 2, 8) and got[1].shape == got[0].shape and got[4].shape == (0, 4, 2, 8)
    assert torch.equal(got[5], torch.zeros(2, 4, 9)) and torch.equal(got[6], torch.zeros(2, 9, 4))


# --------------------------------------------------------------------------------------------------------
# Custom-op plumbing: compile, export, opcheck.


def _model_fn(backend):
    def fn(q, kv, agents, agent_bias, query_bias):
        k, v = kv.unbind(2)
        return agent_attention(q, k, v, agents, agent_bias=agent_bias, query_bias=query_bias,
                               backend=backend).flatten(2)

    return fn


@pytest.mark.parametrize("backend, compile_backend", [("triton", "aot_eager"), ("reference", "aot_eager")])
def test_compile_fullgraph(backend, compile_backend):
    inputs = make_inputs(*SHAPES[0])
    torch._dynamo.reset()
    compiled = torch.compile(_model_fn(backend), backend=compile_backend, fullgraph=True)
    got = run_with_grads(lambda q, k, v, a, ab, qb: compiled(q, torch.stack((k, v), 2), a, ab, qb), *inputs)
    want = run_with_grads(lambda q, k, v, a, ab, qb: _model_fn("reference")(q, torch.stack((k, v), 2), a, ab, qb),
                          *inputs)
    compare(got, want, TOL[torch.float32])


def test_export_keeps_the_custom_op():
    q, kv, agents, agent_bias, query_bias = make_inputs(*SHAPES[0])

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.agent_bias = torch.nn.Parameter(agent_bias)
            self.query_bias = torch.nn.Parameter(query_bias)

        def forward(self, q, kv, agents):
            k, v = kv.unbind(2)
            return agent_attention(q, k, v, agents, agent_bias=self.agent_bias, query_bias=self.query_bias,
                                   backend="triton")

    program = torch.export.export(Block(), (q, kv, agents))
    assert "attnzoo.agent_attention_fwd" in str(program.graph_module.code)
    want = agent_attention(q, *kv.unbind(2), agents, agent_bias=agent_bias, query_bias=query_bias,
                           backend="reference")
    assert_close(program.module()(q, kv, agents), want, **TOL[torch.float32])


def test_opcheck():
    """Schema, fake implementations, autograd registration and aliasing of both custom ops."""
    q, kv, agents, agent_bias, query_bias = make_inputs(1, 10, 2, 8, 4)
    k, v = (t.contiguous() for t in kv.unbind(2))
    scale = 8**-0.5
    leaves = [t.clone().requires_grad_() for t in (q, k, v, agents, agent_bias, query_bias)]
    torch.library.opcheck(torch.ops.attnzoo.agent_attention_fwd.default, (*leaves, scale))
    out, agent_v, lse_a, lse_q = torch.ops.attnzoo.agent_attention_fwd(q, k, v, agents, agent_bias, query_bias, scale)
    for flags in ((True, True), (False, True), (False, False)):
        torch.library.opcheck(torch.ops.attnzoo.agent_attention_bwd.default,
                              (torch.randn_like(q), q, k, v, agents, agent_bias, query_bias, out, agent_v, lse_a,
                               lse_q, scale, *flags))
    torch.library.opcheck(torch.ops.attnzoo.agent_attention_fwd.default, (q, k, v, agents, None, None, scale))


# --------------------------------------------------------------------------------------------------------
# Backend selection and argument errors.


def test_public_exports():
    assert ops.agent_attention is agent_attention and ops.agent_bias_maps is agent_bias_maps
    assert {"agent_attention", "agent_bias_maps"} <= set(ops.__all__)


def test_backend_default_keyword_and_env(monkeypatch):
    calls = []
    monkeypatch.setattr(pkg, "agent_attention_reference", lambda q, *a: calls.append("reference") or q)
    monkeypatch.setattr(triton_impl, "agent_attention_triton", lambda q, *a: calls.append("triton") or q)
    monkeypatch.delenv(ENV_BACKEND, raising=False)
    q, kv, agents, _, _ = make_inputs(1, 4, 1, 8, 4)
    k, v = kv.unbind(2)
    agent_attention(q, k, v, agents)
    agent_attention(q, k, v, agents, backend="triton")
    monkeypatch.setenv(ENV_BACKEND, "triton")
    agent_attention(q, k, v, agents)
    agent_attention(q, k, v, agents, backend="reference")
    assert calls == ["reference", "triton", "triton", "reference"]
    with pytest.raises(ValueError, match="'cuda'.*backend="):
        agent_attention(q, k, v, agents, backend="cuda")


def test_triton_rejects_float64():
    q, kv, agents, _, _ = make_inputs(1, 4, 1, 8, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="backend 'triton' supports .*float64.*backend='reference'"):
        agent_attention(q, *kv.unbind(2), agents, backend="triton")


def _bad_calls():
    q = torch.randn(2, 10, 3, 8)
    a = torch.randn(2, 4, 3, 8)
    return {
        "q 3-d": ((q[0], q[0], q[0], a), {}, r"q must be \(B, N, heads, head_dim\)"),
        "k heads": ((q, q[:, :, :2], q[:, :, :2], a), {}, "k must be"),
        "k empty": ((q, q[:, :0], q[:, :0], a), {}, "at least one token"),
        "v shape": ((q, q, q[:, :5], a), {}, "v must have k's shape"),
        "agents heads": ((q, q, q, a[:, :, :1]), {}, "agents must be"),
        "no agents": ((q, q, q, a[:, :0]), {}, "n_agent >= 1"),
        "dtype mix": ((q, q.double(), q.double(), a), {}, "floating dtype"),
        "integer": ((q.long(), q.long(), q.long(), a.long()), {}, "floating dtype"),
        "agent_bias": ((q, q, q, a), dict(agent_bias=torch.zeros(3, 10, 4)), r"agent_bias must be \(3, 4, 10\)"),
        "query_bias": ((q, q, q, a), dict(query_bias=torch.zeros(3, 4, 10)), r"query_bias must be \(3, 10, 4\)"),
        "int bias": ((q, q, q, a), dict(query_bias=torch.zeros(3, 10, 4, dtype=torch.long)), "floating point"),
    }


@pytest.mark.parametrize("case", list(_bad_calls()), ids=str)
@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_bad_arguments_are_value_errors(case, backend):
    args, kwargs, match = _bad_calls()[case]
    with pytest.raises(ValueError, match=match):
        agent_attention(*args, backend=backend, **kwargs)


# --------------------------------------------------------------------------------------------------------
# Compiled kernels at model sizes (GPU only).

# (B, N, heads, D, n_agent, N_k): Agent-PVT-T stage 1 (56x56, 9 agents), Agent-DeiT-S (197 tokens, 49 agents),
# Agent-Swin-T stage 3 (14x14, 49), Agent-Swin at 512^2 segmentation stage 1 (128x128, 81 downstream agents),
# Agent-PVT segmentation stage 3 at 512^2 (32x32, 784 agents: the atomic paths).
GPU_SHAPES = [
    (32, 3136, 1, 64, 9, None),
    (32, 197, 6, 64, 49, None),
    (32, 196, 12, 32, 49, None),
    (2, 16384, 3, 32, 81, None),
    (2, 1024, 5, 64, 784, None),
]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=shape_id)
def test_gpu_model_sizes(shape, dtype):
    inputs = make_inputs(*shape, dtype=dtype, device="cuda")
    tol = _GPU_FP32_TOL if dtype == torch.float32 else TOL[dtype]
    check_against_reference(inputs, tol)


@pytest.mark.gpu
def test_gpu_compile_inductor_triton():
    inputs = make_inputs(*GPU_SHAPES[1], dtype=torch.bfloat16, device="cuda")
    torch._dynamo.reset()
    compiled = torch.compile(_model_fn("triton"), fullgraph=True)
    got = run_with_grads(lambda q, k, v, a, ab, qb: compiled(q, torch.stack((k, v), 2), a, ab, qb), *inputs)
    want = run_with_grads(lambda q, k, v, a, ab, qb: _model_fn("reference")(q, torch.stack((k, v), 2), a, ab, qb),
                          *inputs)
    compare(got, want, TOL[torch.bfloat16])
