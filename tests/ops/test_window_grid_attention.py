"""Tests for `ops.window_grid_attention` (EMOv2's close / remote window attention, values wider than keys).

* the reference against an independent naive fp64 formulation (a loop over groups gathering each group's
  pixels explicitly) for both partitions, their sum and maps that are not multiples of the window, outputs and
  gradients; and against EMOv2's own formulation (``ops/window_grid_attention/official.py``: the einops
  partitions ``(n1 h1)`` / ``(h1 n1)``, attention per partition, summed) on maps of whole windows;
* the Triton backend against the reference: the output and the gradients of q, k, v, on odd shapes (partial
  windows, a window larger than the map, one head, head widths 8 / 20 / 32 with value widths 12 / 60 / 70 / 128,
  non-square windows, 10x10 windows of 100 tokens), strided inputs, fp32 / fp16 / bf16, each partition alone
  and summed, every kernel output NaN-prefilled;
* the custom ops under ``torch.compile(fullgraph=True)`` (aot_eager here, inductor on GPU), ``torch.export`` and
  ``torch.library.opcheck``;
* backend selection and argument errors of the public function.

Without a GPU the kernels run in Triton's CPU interpreter (tests/conftest.py) at small sizes; the ``gpu`` tests
run them compiled at EMOv2's sizes.

Tolerances, Triton vs reference given the same inputs, in the form of tests/utils.assert_close (``atol``
relative to the tensor's largest entry). The reference computes each partition in fp32 and rounds once; the
kernels round P and dS to the input dtype before their dots (as FlashAttention does) and, for 'both', round the
window partition's result once before adding the grid partition's:

    | dtype | atol   | rtol   | why                                                                    |
    |-------|--------|--------|------------------------------------------------------------------------|
    | fp32  | 1e-5   | 1e-4   | same fp32 math, other summation order (observed <= 1e-6)               |
    | fp16  | 2e-3   | 2e-3   | 1 ulp = 2^-11..2^-10 relative; P, dS and the partial sum rounded once   |
    | bf16  | 1.6e-2 | 1.6e-2 | 1 ulp = 2^-8..2^-7 relative: 2-4 ulps                                   |

On GPU at model sizes (longer sums, cuBLAS in the reference) fp32 gets atol 1e-4 / rtol 1e-3.
"""
from __future__ import annotations

import importlib
import math
import os

import pytest
import torch

import ops
from ops import window_grid_attention
from ops._backend import ENV_BACKEND, empty, resolve_backend
from ops.window_grid_attention.official import window_grid_attention_official
from ops.window_grid_attention.reference import window_grid_attention_reference
from tests.utils import assert_close

pkg = importlib.import_module("ops.window_grid_attention")
triton_impl = importlib.import_module("ops.window_grid_attention.triton")

TOL = {
    torch.float32: dict(atol=1e-5, rtol=1e-4),
    torch.float16: dict(atol=2e-3, rtol=2e-3),
    torch.bfloat16: dict(atol=1.6e-2, rtol=1.6e-2),
}
_GPU_FP32_TOL = dict(atol=1e-4, rtol=1e-3)
_FP64_TOL = dict(atol=1e-6, rtol=1e-5)

# (B, H, W, heads, qk_dim, v_dim, window)
SHAPES = [
    (1, 7, 7, 1, 8, 12, (7, 7)),  # one window = one grid: both partitions identical
    (2, 9, 7, 1, 8, 12, (4, 4)),  # partial windows / grids at the right and the bottom, two images
    (1, 5, 6, 2, 20, 70, (7, 7)),  # window larger than the map (EMOv2-1M widths: heads of 20, values of 70)
    (1, 8, 12, 1, 32, 60, (4, 3)),  # non-square window, exact tiling
    (1, 14, 14, 1, 32, 128, (7, 7)),  # EMOv2-5M stage-3 widths at 224 (2x2 windows of 7x7)
    (1, 10, 13, 1, 16, 24, (10, 10)),  # 100-token windows (EMOv2's segmentation window 10), partial
]


def shape_id(shape) -> str:
    b, h, w, nh, dk, dv, (wh, ww) = shape
    return f"{b}x{h}x{w}x{nh}-qk{dk}-v{dv}-w{wh}x{ww}"


def make_inputs(batch, h, w, heads, d_qk, d_v, window=None, dtype=torch.float32, device="cpu", seed=0):
    """qk (B, H, W, 2, heads, Dqk) -- q, k are its unbind(3) views, as a 1x1 projection makes them -- and v."""
    gen = torch.Generator().manual_seed(seed)
    qk = torch.randn(batch, h, w, 2, heads, d_qk, generator=gen).to(device=device, dtype=dtype)
    v = torch.randn(batch, h, w, heads, d_v, generator=gen).to(device=device, dtype=dtype)
    return qk, v


def run_with_grads(fn, qk, v, d_out=None, seed=1):
    """(out, dq, dk, dv) of ``fn(q, k, v)`` with q, k = qk.unbind(3)."""
    qk = qk.detach().clone().requires_grad_()
    v = v.detach().clone().requires_grad_()
    out = fn(*qk.unbind(3), v)
    if d_out is None:
        gen = torch.Generator().manual_seed(seed)
        d_out = torch.randn(out.shape, generator=gen).to(device=out.device, dtype=out.dtype)
    d_qk, d_v = torch.autograd.grad(out, (qk, v), d_out)
    return (out, *d_qk.unbind(3), d_v)


def compare(got, want, tol, names=("out", "dq", "dk", "dv")) -> None:
    for name, a, e in zip(names, got, want):
        assert_close(a, e, name=name, **tol)


def check_against_reference(qk, v, window, partition, tol, scale=None, d_out=None) -> None:
    def fn(backend):
        return lambda q, k, v_: window_grid_attention(q, k, v_, window, partition=partition, scale=scale,
                                                      backend=backend)

    compare(run_with_grads(fn("triton"), qk, v, d_out), run_with_grads(fn("reference"), qk, v, d_out), tol)


def naive_fp64(q, k, v, window, partition="both", scale=None):
    """One group at a time in fp64: gather the group's pixels that exist, attend, add into the output."""
    q, k, v = (t.double() for t in (q, k, v))
    batch, h, w, heads, d_qk = q.shape
    wh, ww = window
    gh, gw = math.ceil(h / wh), math.ceil(w / ww)
    scale = d_qk**-0.5 if scale is None else scale
    out = torch.zeros(*q.shape[:-1], v.shape[-1], dtype=torch.float64)
    for part in (("window", "grid") if partition == "both" else (partition,)):
        for a in range(gh):
            for c in range(gw):
                if part == "window":
                    pix = [(a * wh + i, c * ww + j) for i in range(wh) for j in range(ww)]
                else:  # every gh-th row and gw-th column, starting at (a, c)
                    pix = [(i * gh + a, j * gw + c) for i in range(wh) for j in range(ww)]
                pix = [(y, x) for y, x in pix if y < h and x < w]
                ys, xs = torch.tensor([p[0] for p in pix]), torch.tensor([p[1] for p in pix])
                qg, kg, vg = (t[:, ys, xs].transpose(1, 2) for t in (q, k, v))  # (B, heads, n, D)
                attn = (scale * qg @ kg.transpose(-1, -2)).softmax(-1)
                out = out.index_put((torch.arange(batch)[:, None], ys[None], xs[None]),
                                    (attn @ vg).transpose(1, 2), accumulate=True)
    return out


# --------------------------------------------------------------------------------------------------------
# The reference is the spec: check it against independent formulations.


REF_CASES = {
    "window-exact": ((2, 8, 8, 2, 8, 12, (4, 4)), "window"),
    "grid-exact": ((2, 8, 12, 2, 8, 12, (4, 3)), "grid"),
    "both-exact": ((1, 8, 8, 3, 8, 4, (4, 4)), "both"),
    "both-partial": ((1, 9, 11, 2, 8, 12, (4, 4)), "both"),
    "grid-partial": ((1, 10, 13, 1, 8, 8, (3, 5)), "grid"),
    "larger-than-map": ((1, 5, 6, 2, 8, 12, (7, 7)), "both"),
}


@pytest.mark.parametrize("case", list(REF_CASES), ids=str)
def test_reference_matches_naive_fp64(case):
    shape, partition = REF_CASES[case]
    window = shape[-1]
    qk, v = make_inputs(*shape)
    d_out = torch.randn(*shape[:4], shape[5], generator=torch.Generator().manual_seed(2))
    got = run_with_grads(lambda q, k, v_: window_grid_attention_reference(q, k, v_, window, partition), qk, v, d_out)
    want = run_with_grads(lambda q, k, v_: naive_fp64(q, k, v_, window, partition), qk.double(), v.double(),
                          d_out.double())
    compare([t.double() for t in got], want, _FP64_TOL)


@pytest.mark.parametrize("size", [(14, 14), (16, 24), (7, 7)], ids=str)
def test_reference_matches_emo2_formulation(size):
    """The official NCHW einops formulation of the hybrid (close + remote) attention, heads of 4 and values of 6."""
    ws, heads, d_qk, d_v = (8 if size[0] % 7 else 7), 2, 4, 6
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 1, heads * d_qk, *size, generator=gen, dtype=torch.float64)
    v = torch.randn(1, heads * d_v, *size, generator=gen, dtype=torch.float64)

    def to_ops(t, d):  # (B, heads * d, H, W) -> (B, H, W, heads, d)
        return t.permute(0, 2, 3, 1).unflatten(-1, (heads, d))

    want = window_grid_attention_official(to_ops(q, d_qk), to_ops(k, d_qk), to_ops(v, d_v), ws)
    want = want.flatten(3).permute(0, 3, 1, 2)

    for backend in ("reference", "triton"):
        got = window_grid_attention(to_ops(q, d_qk).float(), to_ops(k, d_qk).float(), to_ops(v, d_v).float(), ws,
                                    backend=backend)
        assert_close(got.flatten(3).permute(0, 3, 1, 2).double(), want, **_FP64_TOL, name=backend)


def test_single_window_is_twice_global_attention():
    """When the map is one window, both partitions are the same group: the output is 2x global attention."""
    qk, v = make_inputs(1, 7, 7, 2, 8, 12)
    q, k = qk.unbind(3)
    out = window_grid_attention_reference(q, k, v, (7, 7), "both")
    glob = torch.nn.functional.scaled_dot_product_attention(
        *(t.flatten(1, 2).transpose(1, 2) for t in (q, k)), v.flatten(1, 2).transpose(1, 2))
    assert_close(out, 2 * glob.transpose(1, 2).reshape(out.shape), **_FP64_TOL)


# --------------------------------------------------------------------------------------------------------
# Triton (the interpreter here) against the reference.


def test_nan_fill_is_on():
    """The comparisons below only catch unwritten elements if kernel outputs start as NaN."""
    assert os.environ.get("ATTNZOO_NAN_FILL") == "1"
    assert torch.isnan(empty(3, device=torch.device("cpu"), dtype=torch.bfloat16)).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_triton_matches_reference(shape, dtype):
    qk, v = make_inputs(*shape, dtype=dtype)
    check_against_reference(qk, v, shape[-1], "both", TOL[dtype])


@pytest.mark.parametrize("partition", ["window", "grid"])
@pytest.mark.parametrize("shape", [SHAPES[1], SHAPES[3]], ids=shape_id)
def test_triton_single_partition(shape, partition):
    qk, v = make_inputs(*shape)
    check_against_reference(qk, v, shape[-1], partition, TOL[torch.float32])


def test_triton_strided_inputs_and_expanded_grad():
    """q, k, v as permuted views of NCHW projections (the model's layout) and a stride-0 dO."""
    heads, d_qk, d_v, size = 2, 8, 12, (6, 7)
    gen = torch.Generator().manual_seed(0)
    qk_nchw = torch.randn(1, 2 * heads * d_qk, *size, generator=gen)
    v_nchw = torch.randn(1, heads * d_v, *size, generator=gen)
    d_out = torch.randn(1, 1, 1, heads, d_v, generator=gen).expand(1, *size, heads, d_v)

    def run(backend):
        leaves = [qk_nchw.clone().requires_grad_(), v_nchw.clone().requires_grad_()]
        q, k = leaves[0].permute(0, 2, 3, 1).unflatten(-1, (2, heads, d_qk)).unbind(3)
        v = leaves[1].permute(0, 2, 3, 1).unflatten(-1, (heads, d_v))
        assert not (q.is_contiguous() or v.is_contiguous())
        out = window_grid_attention(q, k, v, 4, backend=backend)
        return (out, *torch.autograd.grad(out, leaves, d_out))

    compare(run("triton"), run("reference"), TOL[torch.float32], names=("out", "d_qk", "d_v"))


def test_triton_custom_scale():
    shape = SHAPES[2]
    qk, v = make_inputs(*shape)
    check_against_reference(qk, v, shape[-1], "both", TOL[torch.float32], scale=1.7)


def test_triton_empty_batch():
    qk, v = make_inputs(0, 5, 6, 2, 8, 12)
    out, dq, dk, dv = run_with_grads(
        lambda q, k, v_: window_grid_attention(q, k, v_, 4, backend="triton"), qk, v)
    assert out.shape == (0, 5, 6, 2, 12) and dq.shape == (0, 5, 6, 2, 8) and dv.shape == out.shape


# --------------------------------------------------------------------------------------------------------
# Custom-op plumbing: compile, export, opcheck.


def _fn(backend, window):
    def fn(qk, v):
        q, k = qk.unbind(3)
        return window_grid_attention(q, k, v, window, backend=backend).flatten(3)

    return fn


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_compile_fullgraph_triton_aot_eager(dtype):
    shape = (1, 5, 7, 1, 8, 12, (4, 4))
    qk, v = make_inputs(*shape, dtype=dtype)
    torch._dynamo.reset()
    compiled = torch.compile(_fn("triton", shape[-1]), backend="aot_eager", fullgraph=True)
    got = run_with_grads(lambda q, k, v_: compiled(torch.stack((q, k), 3), v_), qk, v)
    want = run_with_grads(lambda q, k, v_: _fn("reference", shape[-1])(torch.stack((q, k), 3), v_), qk, v)
    compare(got, want, TOL[dtype])


def test_export_keeps_the_custom_op():
    qk, v = make_inputs(1, 6, 7, 1, 8, 12)

    class Attn(torch.nn.Module):
        def forward(self, qk, v):
            q, k = qk.unbind(3)
            return window_grid_attention(q, k, v, 4, backend="triton")

    program = torch.export.export(Attn(), (qk, v))
    assert "attnzoo.window_grid_attention_fwd" in str(program.graph_module.code)
    want = window_grid_attention(*qk.unbind(3), v, 4, backend="reference")
    assert_close(program.module()(qk, v), want, **TOL[torch.float32])


def test_opcheck():
    """Schema, fake (meta) implementations, autograd registration and aliasing of both custom ops."""
    qk, v = make_inputs(1, 6, 7, 1, 8, 12)
    q, k = (t.contiguous() for t in qk.unbind(3))
    scale = 8**-0.5
    torch.library.opcheck(
        torch.ops.attnzoo.window_grid_attention_fwd.default,
        (q.clone().requires_grad_(), k.clone().requires_grad_(), v.clone().requires_grad_(), 4, 4, "both", scale),
    )
    torch.library.opcheck(torch.ops.attnzoo.window_grid_attention_bwd.default,
                          (torch.randn_like(v), q, k, v, 4, 4, "both", scale))


# --------------------------------------------------------------------------------------------------------
# Backend selection and argument errors.


@pytest.fixture
def spy(monkeypatch):
    """Replace both backends with recorders; returns the list of backends called."""
    calls = []
    monkeypatch.setattr(pkg, "window_grid_attention_reference", lambda q, *a: calls.append("reference") or q)
    monkeypatch.setattr(triton_impl, "window_grid_attention_triton", lambda q, *a: calls.append("triton") or q)
    monkeypatch.delenv(ENV_BACKEND, raising=False)
    return calls


def _small():
    qk, v = make_inputs(1, 4, 4, 1, 8, 4)
    return (*qk.unbind(3), v)


def test_backend_default_keyword_and_env(spy, monkeypatch):
    q, k, v = _small()
    window_grid_attention(q, k, v, 2)  # CPU tensors: reference by default
    window_grid_attention(q, k, v, 2, backend="triton")
    monkeypatch.setenv(ENV_BACKEND, "triton")
    window_grid_attention(q, k, v, 2)
    window_grid_attention(q, k, v, 2, backend="reference")  # the keyword wins over the environment
    assert spy == ["reference", "triton", "triton", "reference"]


def test_unknown_backend_and_no_silent_fallback(spy, monkeypatch):
    q, k, v = _small()
    with pytest.raises(ValueError, match="'cuda'.*backend="):
        window_grid_attention(q, k, v, 2, backend="cuda")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="window_grid_attention.*TRITON_INTERPRET=1"):
        window_grid_attention(q, k, v, 2, backend="triton")
    assert resolve_backend("window_grid_attention", "reference", q) == "reference"
    assert spy == []


def test_public_exports():
    assert ops.window_grid_attention is window_grid_attention
    assert "window_grid_attention" in ops.__all__


def _bad_calls():
    q = torch.randn(2, 9, 10, 3, 8)
    v = torch.randn(2, 9, 10, 3, 5)
    return {
        "q 4-d": ((q[0], q[0], v[0], 4), {}, "must be \\(B, H, W, heads, head_dim\\)"),
        "k shape": ((q, q[:, :8], v, 4), {}, "k must have q's shape"),
        "v heads": ((q, q, v[..., :2, :], 4), {}, "v must be .*\\(2, 9, 10, 3\\)"),
        "dtype mix": ((q, q, v.double(), 4), {}, "floating dtype"),
        "integer": ((q.long(), q.long(), v.long(), 4), {}, "floating dtype"),
        "window 0": ((q, q, v, 0), {}, "window must be"),
        "window 3-d": ((q, q, v, (4, 4, 4)), {}, "window must be .*\\(4, 4, 4\\)"),
        "partition": ((q, q, v, 4), dict(partition="remote"), "partition must be one of .*'remote'"),
    }


@pytest.mark.parametrize("case", list(_bad_calls()), ids=str)
@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_bad_arguments_are_value_errors(case, backend):
    args, kwargs, match = _bad_calls()[case]
    with pytest.raises(ValueError, match=match):
        window_grid_attention(*args, backend=backend, **kwargs)


def test_triton_limits_are_value_errors():
    q, k, v = _small()
    with pytest.raises(ValueError, match="backend 'triton' supports .*float64.*backend='reference'"):
        window_grid_attention(q.double(), k.double(), v.double(), 2, backend="triton")
    with pytest.raises(ValueError, match="at most 128 tokens; window 12x12 has 144"):
        window_grid_attention(q, k, v, 12, backend="triton")
    window_grid_attention(q, k, v, 12, backend="reference")  # the reference takes any window


# --------------------------------------------------------------------------------------------------------
# Compiled kernels at model sizes (GPU only).


def _gpu_tol(dtype):
    return _GPU_FP32_TOL if dtype == torch.float32 else TOL[dtype]


# EMOv2 attention maps: 5M stage 3 at 224 (batch 64, 14x14, 5 heads, qk 32, v 128), 1M stage 4 at 224 (7x7 =
# one window, 9 heads, qk 20, v 70), 5M stage 3 at 512 with window 8 (32x32), 20M stage 3 at 512x683 with the
# segmentation window 10 (32x43: partial windows and grids).
GPU_SHAPES = [
    (64, 14, 14, 5, 32, 128, (7, 7)),
    (64, 7, 7, 9, 20, 70, (7, 7)),
    (8, 32, 32, 5, 32, 128, (8, 8)),
    (2, 32, 43, 10, 32, 128, (10, 10)),
]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=shape_id)
def test_gpu_model_sizes(shape, dtype):
    qk, v = make_inputs(*shape, dtype=dtype, device="cuda")
    check_against_reference(qk, v, shape[-1], "both", _gpu_tol(dtype))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_gpu_compile_inductor_triton(dtype):
    shape = GPU_SHAPES[0]
    qk, v = make_inputs(*shape, dtype=dtype, device="cuda")
    torch._dynamo.reset()
    compiled = torch.compile(_fn("triton", shape[-1]), fullgraph=True)
    compare(run_with_grads(lambda q, k, v_: compiled(torch.stack((q, k), 3), v_), qk, v),
            run_with_grads(lambda q, k, v_: _fn("reference", shape[-1])(torch.stack((q, k), 3), v_), qk, v),
            TOL[dtype])


@pytest.mark.gpu
def test_gpu_default_backend_is_triton(monkeypatch):
    monkeypatch.delenv(ENV_BACKEND, raising=False)
    assert resolve_backend("window_grid_attention", None, torch.empty(1, device="cuda")) == "triton"
