"""Tests for `ops.bilevel_routing_attention` (BiFormer's bi-level routing attention, BRA).

* the reference against an independent naive fp64 formulation (loops over query regions, region lists built
  from the pixels that exist, routing from those lists' means, attention over the routed regions' tokens), on
  divisible maps, maps that are not multiples of the regions, maps with empty regions, dqk != dv, one head;
  and, on divisible maps, against the official ``bra_legacy`` math (region partition -> mean -> topk ->
  ``torch.gather`` of the routed k/v -> per-head attention, scale ``qk_dim ** -0.5``:
  ``ops/bilevel_routing_attention/official.py``); routing indices against the official ones; fp32 math under
  autocast;
* the Triton backend against the reference: the output and the gradients of q, k, v on odd shapes, fp32 /
  fp16 / bf16, strided inputs, forced small blocks (several key tiles, several query blocks), with every
  kernel output NaN-prefilled;
* the custom ops under ``torch.compile(fullgraph=True)``, ``torch.export`` and ``torch.library.opcheck``;
* backend selection and argument errors of the public function.

Without a GPU the kernels run in Triton's CPU interpreter (tests/conftest.py) at small sizes; the ``gpu``
tests run them compiled at biformer_small's stage shapes.

Tolerances, Triton vs reference given the same inputs (the reference computes in fp32 and rounds once; the
kernels round P and dS to the input dtype before their dots, as FlashAttention does). ``atol`` is relative to
the tensor's largest entry (tests/utils.assert_close):

    | dtype | atol   | rtol   | why                                                                       |
    |-------|--------|--------|---------------------------------------------------------------------------|
    | fp32  | 1e-5   | 1e-4   | same fp32 math, other summation order (observed <= 7e-7)                  |
    | fp16  | 2e-3   | 2e-3   | 1 ulp = 2^-11..2^-10 relative; P, dS rounded once more (observed 9e-4)    |
    | bf16  | 1.6e-2 | 1.6e-2 | 1 ulp = 2^-8..2^-7 relative: 2-4 ulps (observed 1e-2)                     |

Both backends route with the same function (:func:`ops.bilevel_routing_attention.route`), so they attend over
the same regions; the fp64 naive formulation routes on its own (fp64 means), which agrees on these seeds.
On GPU at model sizes fp32 gets atol 1e-4 / rtol 1e-3.
"""
from __future__ import annotations

import importlib
import math
import os

import pytest
import torch

import ops
from ops import bilevel_routing_attention
from ops._backend import ENV_BACKEND, empty, resolve_backend
from ops.bilevel_routing_attention.official import bilevel_routing_attention_official, routing_official
from ops.bilevel_routing_attention.reference import (
    bilevel_routing_attention_reference,
    route,
)
from tests.utils import assert_close

pkg = importlib.import_module("ops.bilevel_routing_attention")
triton_impl = importlib.import_module("ops.bilevel_routing_attention.triton")

TOL = {
    torch.float32: dict(atol=1e-5, rtol=1e-4),
    torch.float16: dict(atol=2e-3, rtol=2e-3),
    torch.bfloat16: dict(atol=1.6e-2, rtol=1.6e-2),
}
_GPU_FP32_TOL = dict(atol=1e-4, rtol=1e-3)
_FP64_TOL = dict(atol=1e-6, rtol=1e-5)  # the reference (fp32 inside) against fp64 formulations

# (B, H, W, heads, dqk, dv, n_win, topk)
SHAPES = [
    (2, 8, 8, 2, 16, 16, 2, 2),  # divisible, 4x4 regions
    (1, 9, 11, 1, 8, 24, 3, 4),  # partial regions, one head, dv > dqk
    (2, 5, 7, 2, 16, 8, 4, 3),  # empty regions (5 rows in 4 regions of 2), dv < dqk
    (1, 12, 10, 3, 24, 40, (3, 2), 5),  # non-square n_win, 4x5 regions, dqk 24 / dv 40 (padded to 32 / 64)
    (1, 14, 14, 2, 16, 16, 7, 16),  # biformer stage 3 geometry: 2x2 regions, topk 16 of 49
    (1, 16, 16, 1, 32, 32, 2, 1),  # 64-token regions, topk 1 (stage 1 geometry, one region)
]


def shape_id(shape) -> str:
    b, h, w, nh, dqk, dv, n_win, topk = shape
    return f"{b}x{h}x{w}x{nh}-qk{dqk}-v{dv}-s{n_win}-k{topk}"


def make_inputs(batch, h, w, heads, dqk, dv, dtype=torch.float32, device="cpu", seed=0):
    """q, k, v as non-contiguous views of one (B, H, W, heads, 2*dqk + dv) tensor, as a model's qkv makes them."""
    gen = torch.Generator().manual_seed(seed)
    qkv = torch.randn(batch, h, w, heads, 2 * dqk + dv, generator=gen).to(device=device, dtype=dtype)
    return qkv


def split(qkv, dqk):
    return qkv[..., :dqk], qkv[..., dqk:2 * dqk], qkv[..., 2 * dqk:]


def run_with_grads(fn, qkv, dqk, d_out=None, seed=1):
    """(out, dq, dk, dv) of ``fn(q, k, v)``."""
    qkv = qkv.detach().clone().requires_grad_()
    out = fn(*split(qkv, dqk))
    if d_out is None:
        gen = torch.Generator().manual_seed(seed)
        d_out = torch.randn(out.shape, generator=gen).to(device=out.device, dtype=out.dtype)
    (grad,) = torch.autograd.grad(out, qkv, d_out)
    return (out, *split(grad, dqk))


def compare(got, want, tol, names=("out", "dq", "dk", "dv")) -> None:
    for name, a, e in zip(names, got, want):
        assert_close(a, e, name=name, **tol)


def check_against_reference(qkv, dqk, n_win, topk, tol, scale=None, d_out=None) -> None:
    def fn(backend):
        return lambda q, k, v: bilevel_routing_attention(q, k, v, n_win, topk, scale=scale, backend=backend)

    compare(run_with_grads(fn("triton"), qkv, dqk, d_out), run_with_grads(fn("reference"), qkv, dqk, d_out), tol)


def naive_fp64(q, k, v, n_win, topk, scale=None):
    """BRA one query region at a time in fp64, over explicit lists of the pixels each region holds."""
    q, k, v = (t.double() for t in (q, k, v))
    batch, h, w, heads, dqk = q.shape
    sh, sw = (n_win, n_win) if isinstance(n_win, int) else n_win
    rh, rw = math.ceil(h / sh), math.ceil(w / sw)
    scale = (heads * dqk) ** -0.5 if scale is None else scale
    regions = []
    for i in range(sh):
        for j in range(sw):
            pix = [(y, x) for y in range(i * rh, min(h, i * rh + rh)) for x in range(j * rw, min(w, j * rw + rw))]
            regions.append((torch.tensor([p[0] for p in pix], dtype=torch.long),
                            torch.tensor([p[1] for p in pix], dtype=torch.long)))
    out = torch.zeros(*q.shape[:-1], v.shape[-1], dtype=torch.float64)
    for b in range(batch):
        with torch.no_grad():
            zero = torch.zeros(heads * dqk, dtype=torch.float64)
            q_mean = torch.stack([q[b, ys, xs].flatten(1).mean(0) if len(ys) else zero for ys, xs in regions])
            k_mean = torch.stack([k[b, ys, xs].flatten(1).mean(0) if len(ys) else zero for ys, xs in regions])
            logits = scale * q_mean @ k_mean.t()
            logits[:, torch.tensor([len(ys) == 0 for ys, _ in regions])] = float("-inf")  # an empty region holds no key
            routed = torch.topk(logits, topk, dim=-1).indices
        for r, (ys, xs) in enumerate(regions):
            if not len(ys):
                continue
            kys = torch.cat([regions[s][0] for s in routed[r].tolist()])
            kxs = torch.cat([regions[s][1] for s in routed[r].tolist()])
            qh, kh, vh = q[b, ys, xs].transpose(0, 1), k[b, kys, kxs].transpose(0, 1), v[b, kys, kxs].transpose(0, 1)
            out[b, ys, xs] = ((scale * qh @ kh.transpose(-1, -2)).softmax(-1) @ vh).transpose(0, 1)
    return out


# --------------------------------------------------------------------------------------------------------
# The reference is the spec: check it against independent formulations.


@pytest.mark.parametrize("shape", SHAPES[:5], ids=shape_id)
def test_reference_matches_naive_fp64(shape):
    batch, h, w, heads, dqk, dv, n_win, topk = shape
    qkv = make_inputs(batch, h, w, heads, dqk, dv)
    d_out = torch.randn(batch, h, w, heads, dv, generator=torch.Generator().manual_seed(2))
    got = run_with_grads(lambda q, k, v: bilevel_routing_attention_reference(
        q, k, v, (n_win, n_win) if isinstance(n_win, int) else n_win, topk), qkv, dqk, d_out)
    want = run_with_grads(lambda q, k, v: naive_fp64(q, k, v, n_win, topk), qkv.double(), dqk, d_out.double())
    compare([t.double() for t in got], want, _FP64_TOL)


def test_reference_custom_scale_matches_naive_fp64():
    qkv = make_inputs(1, 9, 11, 2, 8, 8)
    got = bilevel_routing_attention(*split(qkv, 8), 3, 3, scale=8 ** -0.5)
    assert_close(got.double(), naive_fp64(*split(qkv.double(), 8), 3, 3, scale=8 ** -0.5), **_FP64_TOL)


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("case", [(2, 8, 8, 2, 2, 2), (1, 12, 12, 3, 3, 4), (1, 14, 14, 2, 7, 16)], ids=str)
def test_matches_official_transcription(case, backend):
    """Divisible maps: the op on (B, H, W, heads, head_dim) views == the official math on (B, H, W, C) maps."""
    batch, h, w, heads, s, topk = case
    gen = torch.Generator().manual_seed(3)
    c_qk, c_v = heads * 16, heads * 8
    x = torch.randn(batch, h, w, 2 * c_qk + c_v, generator=gen)
    d_out = torch.randn(batch, h, w, c_v, generator=gen)

    def ours(x):
        q, k, v = x.split([c_qk, c_qk, c_v], -1)
        return bilevel_routing_attention(q.unflatten(-1, (heads, 16)), k.unflatten(-1, (heads, 16)),
                                         v.unflatten(-1, (heads, 8)), s, topk, backend=backend).flatten(3)

    def theirs(x):
        q, k, v = x.split([c_qk, c_qk, c_v], -1)
        return bilevel_routing_attention_official(q.unflatten(-1, (heads, 16)), k.unflatten(-1, (heads, 16)),
                                                  v.unflatten(-1, (heads, 8)), s, topk).flatten(3)

    results = []
    for fn in (ours, theirs):
        leaf = x.clone().requires_grad_()
        out = fn(leaf)
        results.append((out, *torch.autograd.grad(out, leaf, d_out)))
    compare(results[0], results[1], TOL[torch.float32], names=("out", "d_qkv"))


def test_routing_matches_official_indices():
    """route() picks the official index sets (order included) on divisible maps, from detached q, k."""
    gen = torch.Generator().manual_seed(4)
    q, k = torch.randn(2, 2, 14, 14, 4, 8, generator=gen).unbind(0)
    idx = route(q.requires_grad_(), k, (7, 7), 4, (4 * 8) ** -0.5)
    assert idx.shape == (2, 49, 4) and idx.dtype == torch.int64 and not idx.requires_grad
    want = routing_official(q, k, 7, 4, 32 ** -0.5)
    assert torch.equal(idx, want)


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_autocast_does_not_change_the_math(backend):
    """Under CPU autocast (bf16) fp32 inputs still give the fp32 result, in fp32: routing and attention are
    explicit fp32 math, not autocast's."""
    q, k, v = split(make_inputs(1, 9, 11, 2, 8, 16), 8)
    want = bilevel_routing_attention(q, k, v, 3, 2, backend=backend)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = bilevel_routing_attention(q, k, v, 3, 2, backend=backend)
    assert got.dtype == torch.float32
    assert_close(got, want, **TOL[torch.float32])


# --------------------------------------------------------------------------------------------------------
# Triton (the interpreter here) against the reference.


def test_nan_fill_is_on():
    """The comparisons below only catch unwritten elements if kernel outputs start as NaN."""
    assert os.environ.get("ATTNZOO_NAN_FILL") == "1"
    assert torch.isnan(empty(3, device=torch.device("cpu"), dtype=torch.bfloat16)).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_triton_matches_reference(shape, dtype):
    batch, h, w, heads, dqk, dv, n_win, topk = shape
    qkv = make_inputs(batch, h, w, heads, dqk, dv, dtype=dtype)
    check_against_reference(qkv, dqk, n_win, topk, TOL[dtype])


@pytest.mark.parametrize("seed", range(4))
def test_triton_random_shapes(seed):
    gen = torch.Generator().manual_seed(100 + seed)

    def rand(lo, hi):
        return int(torch.randint(lo, hi + 1, (1,), generator=gen))

    h, w = rand(3, 16), rand(3, 16)
    n_win = (rand(1, min(h, 4)), rand(1, min(w, 4)))
    topk = rand(1, n_win[0] * n_win[1])
    dqk, dv = rand(1, 5) * 8, rand(1, 5) * 8
    qkv = make_inputs(rand(1, 2), h, w, rand(1, 3), dqk, dv, seed=seed)
    check_against_reference(qkv, dqk, n_win, topk, TOL[torch.float32])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_triton_forced_small_blocks(monkeypatch, dtype):
    """16 x 16 tiles on 4x5-token regions routed 5 at a time: two query blocks, several key tiles that straddle
    routed regions, the online softmax across them, and padded keys inside tiles."""
    monkeypatch.setattr(triton_impl, "_blocks", lambda n_queries, n_keys: (16, 16))
    qkv = make_inputs(1, 12, 10, 2, 16, 24, dtype=dtype)
    check_against_reference(qkv, 16, (3, 2), 5, TOL[dtype])


def test_triton_strided_inputs():
    """q, k, v and dO in unrelated layouts: a permuted copy, a strided slice, a stride-0 gradient."""
    batch, h, w, heads, d, n_win, topk = 2, 9, 10, 3, 16, 3, 3
    gen = torch.Generator().manual_seed(0)
    bases = (
        torch.randn(batch, heads, h, w, d, generator=gen),
        torch.randn(batch, h, w, heads, 2 * d, generator=gen),
        torch.randn(w, batch, h, heads, d, generator=gen),
    )
    d_out = torch.randn(1, 1, 1, heads, d, generator=gen).expand(batch, h, w, heads, d)

    def views(qb, kb, vb):
        return qb.permute(0, 2, 3, 1, 4), kb[..., ::2], vb.permute(1, 2, 0, 3, 4)

    assert not any(t.is_contiguous() for t in views(*bases))

    def run(backend):
        leaves = [t.clone().requires_grad_() for t in bases]
        out = bilevel_routing_attention(*views(*leaves), n_win, topk, backend=backend)
        return (out, *torch.autograd.grad(out, leaves, d_out))

    compare(run("triton"), run("reference"), TOL[torch.float32])


def test_triton_custom_scale():
    qkv = make_inputs(1, 9, 11, 2, 24, 16)
    check_against_reference(qkv, 24, 3, 4, TOL[torch.float32], scale=1.7)


def test_triton_grad_of_some_inputs():
    """Only v needs a gradient; tokens no region routes to (topk 1 of 9) get an exact zero dk / dv."""
    qkv = make_inputs(1, 9, 9, 2, 8, 8)
    q, k, v = split(qkv, 8)

    def grads(backend):
        kk, vv = k.clone().requires_grad_(), v.clone().requires_grad_()
        bilevel_routing_attention(q, kk, vv, 3, 1, backend=backend).square().sum().backward()
        return kk.grad, vv.grad

    got, want = grads("triton"), grads("reference")
    compare(got, want, TOL[torch.float32], names=("dk", "dv"))
    idx = route(q, k, (3, 3), 1, 16 ** -0.5)
    unrouted = sorted(set(range(9)) - set(idx.flatten().tolist()))
    assert unrouted, "seed should leave some region unrouted"
    for r in unrouted:
        assert (got[1][0, 3 * (r // 3):3 * (r // 3) + 3, 3 * (r % 3):3 * (r % 3) + 3] == 0).all()


def test_triton_empty_batch():
    qkv = make_inputs(0, 5, 6, 2, 8, 8)
    out, dq, dk, dv = run_with_grads(lambda q, k, v: bilevel_routing_attention(q, k, v, 2, 2, backend="triton"),
                                     qkv, 8)
    assert out.shape == (0, 5, 6, 2, 8) and dq.shape == dk.shape == dv.shape == (0, 5, 6, 2, 8)


# --------------------------------------------------------------------------------------------------------
# Custom-op plumbing: compile, export, opcheck.


def _compiled_vs_eager(backend, compile_backend, shape, dtype) -> None:
    batch, h, w, heads, dqk, dv, n_win, topk = shape
    qkv = make_inputs(batch, h, w, heads, dqk, dv, dtype=dtype)

    def fn(backend):
        return lambda q, k, v: bilevel_routing_attention(q, k, v, n_win, topk, backend=backend)

    torch._dynamo.reset()
    compiled = torch.compile(fn(backend), backend=compile_backend, fullgraph=True)
    compare(run_with_grads(compiled, qkv, dqk), run_with_grads(fn("reference"), qkv, dqk), TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_compile_fullgraph_triton_aot_eager(dtype):
    _compiled_vs_eager("triton", "aot_eager", (2, 9, 11, 2, 16, 8, 3, 2), dtype)


def test_compile_fullgraph_reference():
    _compiled_vs_eager("reference", "aot_eager", (1, 9, 11, 2, 8, 16, 3, 2), torch.float32)


def test_export_keeps_the_custom_op():
    qkv = make_inputs(2, 9, 11, 2, 8, 16)

    class Block(torch.nn.Module):
        def forward(self, qkv):
            return bilevel_routing_attention(*split(qkv, 8), 3, 2, backend="triton")

    program = torch.export.export(Block(), (qkv,))
    assert "attnzoo.bilevel_routing_attention_fwd" in str(program.graph_module.code)
    want = bilevel_routing_attention(*split(qkv, 8), 3, 2, backend="reference")
    assert_close(program.module()(qkv), want, **TOL[torch.float32])


def test_opcheck():
    """Schema, fake (meta) implementations, autograd registration and aliasing of both custom ops."""
    qkv = make_inputs(1, 6, 7, 2, 8, 16)
    q, k, v = (t.contiguous() for t in split(qkv, 8))
    scale = 16 ** -0.5
    idx = route(q, k, (2, 2), 2, scale)
    torch.library.opcheck(torch.ops.attnzoo.bilevel_routing_attention_fwd.default,
                          (q.requires_grad_(), k.requires_grad_(), v.requires_grad_(), idx, 2, 2, scale))
    q, k, v = (t.detach() for t in (q, k, v))
    out, lse = torch.ops.attnzoo.bilevel_routing_attention_fwd(q, k, v, idx, 2, 2, scale)
    torch.library.opcheck(torch.ops.attnzoo.bilevel_routing_attention_bwd.default,
                          (torch.randn_like(out), q, k, v, out, lse, idx, 2, 2, scale))


# --------------------------------------------------------------------------------------------------------
# Backend selection and argument errors.


@pytest.fixture
def spy(monkeypatch):
    """Replace both backends with recorders; returns the list of backends called."""
    calls = []
    monkeypatch.setattr(pkg, "bilevel_routing_attention_reference", lambda q, *a: calls.append("reference") or q)
    monkeypatch.setattr(triton_impl, "bilevel_routing_attention_triton", lambda q, *a: calls.append("triton") or q)
    monkeypatch.delenv(ENV_BACKEND, raising=False)
    return calls


def _small():
    return split(make_inputs(1, 4, 4, 1, 8, 8), 8)


def test_backend_default_keyword_and_env(spy, monkeypatch):
    q, k, v = _small()
    bilevel_routing_attention(q, k, v, 2, 1)  # CPU tensors: reference by default
    bilevel_routing_attention(q, k, v, 2, 1, backend="triton")
    monkeypatch.setenv(ENV_BACKEND, "triton")
    bilevel_routing_attention(q, k, v, 2, 1)
    bilevel_routing_attention(q, k, v, 2, 1, backend="reference")  # the keyword wins over the environment
    assert spy == ["reference", "triton", "triton", "reference"]


def test_unknown_backend_is_an_error(spy, monkeypatch):
    q, k, v = _small()
    with pytest.raises(ValueError, match="'cuda'.*backend="):
        bilevel_routing_attention(q, k, v, 2, 1, backend="cuda")
    monkeypatch.setenv(ENV_BACKEND, "tritonn")
    with pytest.raises(ValueError, match=f"'tritonn'.*{ENV_BACKEND}"):
        bilevel_routing_attention(q, k, v, 2, 1)
    assert spy == []


def test_triton_on_cpu_needs_the_interpreter(spy, monkeypatch):
    """No silent fallback: triton on CPU tensors without TRITON_INTERPRET=1 is a RuntimeError saying what to do."""
    q, k, v = _small()
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setenv(ENV_BACKEND, "triton")
    with pytest.raises(RuntimeError, match=f"bilevel_routing_attention.*{ENV_BACKEND}=.*cpu.*TRITON_INTERPRET=1"):
        bilevel_routing_attention(q, k, v, 2, 1)
    assert resolve_backend("bilevel_routing_attention", "reference", q) == "reference"
    assert spy == []


def test_public_exports():
    assert ops.bilevel_routing_attention is bilevel_routing_attention
    assert "bilevel_routing_attention" in ops.__all__


def test_triton_rejects_float64():
    q, k, v = (t.double() for t in _small())
    with pytest.raises(ValueError, match="backend 'triton' supports .*float64.*backend='reference'"):
        bilevel_routing_attention(q, k, v, 2, 1, backend="triton")


def _bad_calls():
    q = torch.randn(2, 9, 10, 3, 8)
    return {
        "q 4-d": ((q[0], q[0], q[0], 3, 1), "q must be \\(B, H, W, heads, dqk\\)"),
        "k shape": ((q, q[:, :8], q, 3, 1), "k must have q's shape"),
        "v heads": ((q, q, q[..., :2, :], 3, 1), "v must be .*\\(2, 9, 10, 3\\)"),
        "dtype mix": ((q, q.double(), q, 3, 1), "floating dtype"),
        "integer": ((q.long(), q.long(), q.long(), 3, 1), "floating dtype"),
        "n_win 0": ((q, q, q, 0, 1), "n_win .*must be"),
        "n_win 3-d": ((q, q, q, (2, 2, 2), 1), "n_win .*\\(2, 2, 2\\)"),
        "n_win float": ((q, q, q, 2.0, 1), "n_win"),
        "topk 0": ((q, q, q, 3, 0), "topk must be a positive int, got 0"),
        "topk float": ((q, q, q, 3, 1.0), "topk must be a positive int"),
        "topk too large": ((q, q, q, (3, 2), 7), "topk=7 .* regions 3x2=6"),
    }


@pytest.mark.parametrize("case", list(_bad_calls()), ids=str)
@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_bad_arguments_are_value_errors(case, backend):
    args, match = _bad_calls()[case]
    with pytest.raises(ValueError, match=match):
        bilevel_routing_attention(*args, backend=backend)


# --------------------------------------------------------------------------------------------------------
# Compiled kernels at model sizes (GPU only).

# biformer_small at 224^2, stages 1-3: (B, H, W, heads, dqk, dv, n_win, topk); and a 512^2 segmentation
# stage-1 map (128x128, regions of 19x19 tokens with 7 regions: non-divisible).
GPU_SHAPES = [
    (16, 56, 56, 2, 32, 32, 7, 1),
    (16, 28, 28, 4, 32, 32, 7, 4),
    (16, 14, 14, 8, 32, 32, 7, 16),
    (2, 128, 128, 2, 32, 32, 7, 1),
]


def _gpu_tol(dtype):
    return _GPU_FP32_TOL if dtype == torch.float32 else TOL[dtype]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=shape_id)
def test_gpu_model_sizes(shape, dtype):
    batch, h, w, heads, dqk, dv, n_win, topk = shape
    qkv = make_inputs(batch, h, w, heads, dqk, dv, dtype=dtype, device="cuda")
    check_against_reference(qkv, dqk, n_win, topk, _gpu_tol(dtype))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", GPU_SHAPES[:3], ids=shape_id)
def test_gpu_compile_inductor_triton(shape, dtype):
    batch, h, w, heads, dqk, dv, n_win, topk = shape
    qkv = make_inputs(batch, h, w, heads, dqk, dv, dtype=dtype, device="cuda")

    def fn(backend):
        return lambda q, k, v: bilevel_routing_attention(q, k, v, n_win, topk, backend=backend)

    torch._dynamo.reset()
    compiled = torch.compile(fn("triton"), fullgraph=True)
    compare(run_with_grads(compiled, qkv, dqk), run_with_grads(fn("reference"), qkv, dqk), _gpu_tol(dtype))


@pytest.mark.gpu
def test_gpu_default_backend_is_triton(monkeypatch):
    monkeypatch.delenv(ENV_BACKEND, raising=False)
    assert resolve_backend("bilevel_routing_attention", None, torch.empty(1, device="cuda")) == "triton"
