"""Tests for `ops.overlapping_window_attention` (HAT's overlapping cross-attention, OCAB).

* the reference against an independent naive fp64 formulation (a loop over query windows gathering each key
  window's pixels one by one, zeros outside the map), with and without a bias table, on maps that are not
  multiples of the window, non-square windows and key windows larger than the map; and against the official
  OCAB formulation (``ops/overlapping_window_attention/official.py``: ``nn.Unfold`` with zero padding on the
  projected keys / values, the official table through its wrapped index);
* the Triton backend against the reference: the output and the gradients of q, k, v and the bias table, on odd
  shapes (partial windows, one head, head_dim 5 / 8 / 16 / 24 / 40, non-square windows, key windows equal to the
  query window), strided inputs (unbind views of one qkv tensor), fp32 / fp16 / bf16, every kernel path (query
  tiles smaller than the window: per-tile atomic table scatter; several window-chunk lengths), every kernel
  output NaN-prefilled (dq) or checked against the reference element by element (dk / dv, atomic sums);
* the custom ops under ``torch.compile(fullgraph=True)``, ``torch.export`` and ``torch.library.opcheck``;
* backend selection and argument errors of the public function.

Tolerances: as tests/ops/test_window_attention.py (the same kernel structure and rounding points): an element
passes when ``|actual - expected| <= atol * max|expected| + rtol * |expected|``.

    | dtype | atol   | rtol   |
    |-------|--------|--------|
    | fp32  | 1e-5   | 1e-4   |
    | fp16  | 2e-3   | 2e-3   |
    | bf16  | 1.6e-2 | 1.6e-2 |

On GPU at model sizes fp32 gets atol 1e-4 / rtol 1e-3 (longer sums, cuBLAS in the reference).
"""
from __future__ import annotations

import importlib
import math

import pytest
import torch

import ops
from ops import overlapping_window_attention
from ops._backend import ENV_BACKEND, resolve_backend
from ops.overlapping_window_attention.official import overlapping_window_attention_official, table_from_official
from ops.overlapping_window_attention.reference import overlapping_window_attention_reference
from tests.utils import assert_close

pkg = importlib.import_module("ops.overlapping_window_attention")
triton_impl = importlib.import_module("ops.overlapping_window_attention.triton")

TOL = {
    torch.float32: dict(atol=1e-5, rtol=1e-4),
    torch.float16: dict(atol=2e-3, rtol=2e-3),
    torch.bfloat16: dict(atol=1.6e-2, rtol=1.6e-2),
}
_GPU_FP32_TOL = dict(atol=1e-4, rtol=1e-3)
_FP64_TOL = dict(atol=1e-6, rtol=1e-5)

# (B, H, W, heads, head_dim, window, key_window)
SHAPES = [
    (1, 8, 8, 2, 8, (4, 4), (6, 6)),  # exact tiling, HAT's 1.5x key window
    (2, 7, 9, 1, 5, (4, 4), (8, 6)),  # partial windows, odd head_dim, non-square key window
    (1, 5, 6, 3, 16, (3, 2), (5, 4)),  # non-square windows, partial
    (1, 6, 10, 2, 24, (4, 4), (4, 4)),  # key window = query window (plain window attention)
    (1, 3, 4, 2, 40, (4, 4), (10, 10)),  # windows larger than the map: most keys are zero padding
    (1, 9, 9, 1, 8, (8, 8), (12, 12)),  # 64 queries x 144 keys: several key blocks
]


def shape_id(shape) -> str:
    b, h, w, nh, d, (wh, ww), (kh, kw) = shape
    return f"{b}x{h}x{w}x{nh}x{d}-w{wh}x{ww}-k{kh}x{kw}"


def make_inputs(batch, h, w, heads, head_dim, window, key_window, dtype=torch.float32, device="cpu", seed=0,
                bias=True):
    """qkv (B, H, W, 3, heads, D) -- q, k, v are its non-contiguous unbind(3) views -- and an fp32 bias table."""
    gen = torch.Generator().manual_seed(seed)
    qkv = torch.randn(batch, h, w, 3, heads, head_dim, generator=gen).to(device=device, dtype=dtype)
    shape = (heads, window[0] + key_window[0] - 1, window[1] + key_window[1] - 1)
    table = torch.randn(shape, generator=gen).to(device) if bias else None
    return qkv, table


def run_with_grads(fn, qkv, table=None, d_out=None, seed=1):
    """(out, dq, dk, dv, d_table) of ``fn(q, k, v, table)``; d_table None without a table."""
    qkv = qkv.detach().clone().requires_grad_()
    leaves = [qkv]
    if table is not None:
        table = table.detach().clone().requires_grad_()
        leaves.append(table)
    out = fn(*qkv.unbind(3), table)
    if d_out is None:
        gen = torch.Generator().manual_seed(seed)
        d_out = torch.randn(out.shape, generator=gen).to(device=out.device, dtype=out.dtype)
    grads = torch.autograd.grad(out, leaves, d_out)
    return (out, *grads[0].unbind(3), grads[1] if table is not None else None)


def compare(got, want, tol, names=("out", "dq", "dk", "dv", "d_table")) -> None:
    for name, a, e in zip(names, got, want):
        if e is None:
            assert a is None, name
            continue
        assert_close(a, e, name=name, **tol)


def _fn(backend, window, key_window, scale=None):
    return lambda q, k, v, t: overlapping_window_attention(q, k, v, window, key_window, bias_table=t, scale=scale,
                                                           backend=backend)


def check_against_reference(qkv, window, key_window, table, tol, scale=None) -> None:
    compare(run_with_grads(_fn("triton", window, key_window, scale), qkv, table),
            run_with_grads(_fn("reference", window, key_window, scale), qkv, table), tol)


def naive_fp64(q, k, v, window, key_window, bias_table=None, scale=None):
    """One query window at a time in fp64: each key window pixel by pixel, zero tokens outside the map."""
    q, k, v = (t.double() for t in (q, k, v))
    batch, h, w, heads, head_dim = q.shape
    (wh, ww), (kh, kw) = window, key_window
    ph, pw = (kh - wh) // 2, (kw - ww) // 2
    scale = head_dim**-0.5 if scale is None else scale
    out = torch.zeros_like(q)
    zero = q.new_zeros(heads, head_dim)
    for b in range(batch):
        for wy in range(math.ceil(h / wh)):
            for wx in range(math.ceil(w / ww)):
                qpix = [(y, x) for y in range(wy * wh, min(h, wy * wh + wh))
                        for x in range(wx * ww, min(w, wx * ww + ww))]
                keys, vals, kpos = [], [], []
                for ky in range(kh):
                    for kx in range(kw):
                        y, x = wy * wh - ph + ky, wx * ww - pw + kx
                        inside = 0 <= y < h and 0 <= x < w
                        keys.append(k[b, y, x] if inside else zero)
                        vals.append(v[b, y, x] if inside else zero)
                        kpos.append((ky, kx))
                kt, vt = torch.stack(keys, 1), torch.stack(vals, 1)  # (heads, Nk, D)
                for y, x in qpix:
                    logits = scale * (kt @ q[b, y, x][:, :, None])[..., 0]  # (heads, Nk)
                    if bias_table is not None:
                        qy, qx = y - wy * wh, x - wx * ww
                        rows = torch.tensor([ky - qy + wh - 1 for ky, _ in kpos])
                        cols = torch.tensor([kx - qx + ww - 1 for _, kx in kpos])
                        logits = logits + bias_table.double()[:, rows, cols]
                    out[b, y, x] = (logits.softmax(-1)[:, None, :] @ vt)[:, 0]
    return out


# --------------------------------------------------------------------------------------------------------
# The reference is the spec.


REF_CASES = [
    ((2, 8, 8, 2, 8, (4, 4), (6, 6)), True),
    ((1, 7, 9, 2, 8, (4, 4), (8, 6)), True),
    ((1, 5, 6, 3, 4, (3, 2), (5, 4)), False),
    ((1, 3, 4, 1, 4, (4, 4), (10, 10)), True),
]


@pytest.mark.parametrize("case", REF_CASES, ids=lambda c: shape_id(c[0]) + ("-bias" if c[1] else ""))
def test_reference_matches_naive_fp64(case):
    shape, bias = case
    batch, h, w, heads, head_dim, window, key_window = shape
    qkv, table = make_inputs(*shape, bias=bias)
    d_out = torch.randn(batch, h, w, heads, head_dim, generator=torch.Generator().manual_seed(2))
    got = run_with_grads(lambda q, k, v, t: overlapping_window_attention_reference(q, k, v, window, key_window, t),
                         qkv, table, d_out)
    want = run_with_grads(lambda q, k, v, t: naive_fp64(q, k, v, window, key_window, t), qkv.double(),
                          None if table is None else table.double(), d_out.double())
    compare([None if t is None else t.double() for t in got], want, _FP64_TOL)


def test_reference_matches_official_ocab_formulation():
    """nn.Unfold zero padding and the official wrapped index, through the table conversion."""
    ws, wse, heads, d = 4, 6, 2, 8
    gen = torch.Generator().manual_seed(3)
    q, k, v = torch.randn(3, 2, 8, 12, heads, d, generator=gen)
    table_flat = torch.randn((ws + wse - 1) ** 2, heads, generator=gen)
    want = overlapping_window_attention_official(q, k, v, ws, wse, bias_table=table_flat)
    table = table_from_official(table_flat, ws, wse)
    got = overlapping_window_attention_reference(q, k, v, (ws, ws), (wse, wse), table)
    assert_close(got, want, **TOL[torch.float32])


# --------------------------------------------------------------------------------------------------------
# Triton against the reference.


def test_nan_fill_is_on():
    import os
    assert os.environ.get("ATTNZOO_NAN_FILL") == "1"


@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_triton_matches_reference_fp32(shape):
    qkv, table = make_inputs(*shape)
    check_against_reference(qkv, shape[5], shape[6], table, TOL[torch.float32])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", [SHAPES[0], SHAPES[1]], ids=shape_id)
def test_triton_matches_reference_low_precision(shape, dtype):
    qkv, table = make_inputs(*shape, dtype=dtype)
    check_against_reference(qkv, shape[5], shape[6], table, TOL[dtype])


def test_triton_without_bias_and_custom_scale():
    shape = SHAPES[1]
    qkv, _ = make_inputs(*shape, bias=False)
    check_against_reference(qkv, shape[5], shape[6], None, TOL[torch.float32], scale=0.37)


def test_triton_small_query_tiles(monkeypatch):
    """Query tiles smaller than the window in every kernel: the per-tile table scatter and the query loops."""
    monkeypatch.setattr(triton_impl, "_bwd_blocks", lambda nq, nk: (16, 16))
    monkeypatch.setattr(triton_impl, "_fwd_blocks", lambda nq, nk: (16, 16))
    shape = (1, 7, 6, 1, 8, (6, 6), (8, 8))  # 36 queries, 64 keys: 3 query and 4 key tiles
    qkv, table = make_inputs(*shape)
    check_against_reference(qkv, shape[5], shape[6], table, TOL[torch.float32])


@pytest.mark.parametrize("per_program", [1, 4])
def test_triton_window_chunks(monkeypatch, per_program):
    monkeypatch.setattr(triton_impl, "_windows_per_program", lambda *a: per_program)
    shape = SHAPES[0]
    qkv, table = make_inputs(*(2,) + shape[1:])
    check_against_reference(qkv, shape[5], shape[6], table, TOL[torch.float32])


def test_triton_table_in_input_dtype():
    """A bf16 table (a model cast to bf16 as a whole): its gradient comes back in bf16."""
    shape = SHAPES[0]
    qkv, table = make_inputs(*shape, dtype=torch.bfloat16)
    check_against_reference(qkv, shape[5], shape[6], table.bfloat16(), TOL[torch.bfloat16])


def test_triton_grad_of_some_inputs():
    """A frozen table (no table gradient computed) and gradients to q only."""
    shape = SHAPES[0]
    qkv, table = make_inputs(*shape)
    q, k, v = (t.clone() for t in qkv.unbind(3))
    q.requires_grad_()
    outs = {}
    for backend in ("triton", "reference"):
        out = overlapping_window_attention(q, k, v, shape[5], shape[6], bias_table=table, backend=backend)
        outs[backend] = (out, torch.autograd.grad(out.square().sum(), q)[0])
    compare(outs["triton"], outs["reference"], TOL[torch.float32], names=("out", "dq"))


def test_triton_empty_batch():
    qkv, table = make_inputs(*SHAPES[0])
    qkv = qkv[:0].requires_grad_()
    out = overlapping_window_attention(*qkv.unbind(3), 4, 6, bias_table=table, backend="triton")
    assert out.shape == (0, 8, 8, 2, 8)
    out.sum().backward()
    assert qkv.grad.shape == qkv.shape


# --------------------------------------------------------------------------------------------------------
# Custom-op plumbing.


def test_compile_fullgraph_triton_aot_eager():
    shape = SHAPES[1]
    qkv, table = make_inputs(*shape)
    window, key_window = shape[5], shape[6]

    def fn(qkv, t):
        q, k, v = qkv.unbind(3)
        return overlapping_window_attention(q, k, v, window, key_window, bias_table=t, backend="triton")

    torch._dynamo.reset()
    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
    try:
        got = run_with_grads(lambda q, k, v, t: compiled(torch.stack((q, k, v), 3), t), qkv, table)
    finally:
        torch._dynamo.reset()
    compare(got, run_with_grads(_fn("reference", window, key_window), qkv, table), TOL[torch.float32])


def test_export_keeps_the_custom_op():
    shape = SHAPES[0]
    qkv, table = make_inputs(*shape)

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.table = torch.nn.Parameter(table)

        def forward(self, qkv):
            q, k, v = qkv.unbind(3)
            return overlapping_window_attention(q, k, v, 4, 6, bias_table=self.table, backend="triton")

    program = torch.export.export(Block(), (qkv,))
    assert "attnzoo.overlapping_window_attention_fwd" in str(program.graph_module.code)
    want = overlapping_window_attention(*qkv.unbind(3), 4, 6, bias_table=table, backend="reference")
    assert_close(program.module()(qkv), want, **TOL[torch.float32])


def test_opcheck():
    """Schema, fake implementations, autograd registration and aliasing of both custom ops."""
    qkv, table = make_inputs(1, 3, 4, 1, 8, (2, 2), (4, 4))
    q, k, v = (t.contiguous() for t in qkv.unbind(3))
    scale = 8**-0.5
    fwd = torch.ops.attnzoo.overlapping_window_attention_fwd.default
    torch.library.opcheck(fwd, (q.requires_grad_(), k.requires_grad_(), v.requires_grad_(), 2, 2, 4, 4,
                                table.requires_grad_(), scale))
    q, k, v, table = (t.detach() for t in (q, k, v, table))
    out, lse = torch.ops.attnzoo.overlapping_window_attention_fwd(q, k, v, 2, 2, 4, 4, table, scale)
    for bias_grad in (True, False):
        torch.library.opcheck(torch.ops.attnzoo.overlapping_window_attention_bwd.default,
                              (torch.randn_like(q), q, k, v, out, lse, 2, 2, 4, 4, table, scale, bias_grad))
    torch.library.opcheck(fwd, (q, k, v, 2, 2, 4, 4, None, scale))


# --------------------------------------------------------------------------------------------------------
# Backend selection and argument errors.


@pytest.fixture
def spy(monkeypatch):
    calls = []
    monkeypatch.setattr(pkg, "overlapping_window_attention_reference", lambda q, *a: calls.append("reference") or q)
    monkeypatch.setattr(triton_impl, "overlapping_window_attention_triton", lambda q, *a: calls.append("triton") or q)
    monkeypatch.delenv(ENV_BACKEND, raising=False)
    return calls


def test_backend_default_keyword_and_env(spy, monkeypatch):
    q, k, v = make_inputs(1, 4, 4, 1, 8, (2, 2), (4, 4), bias=False)[0].unbind(3)
    overlapping_window_attention(q, k, v, 2, 4)
    overlapping_window_attention(q, k, v, 2, 4, backend="triton")
    monkeypatch.setenv(ENV_BACKEND, "triton")
    overlapping_window_attention(q, k, v, 2, 4)
    overlapping_window_attention(q, k, v, 2, 4, backend="reference")
    assert spy == ["reference", "triton", "triton", "reference"]


def test_triton_on_cpu_needs_the_interpreter(spy, monkeypatch):
    q, k, v = make_inputs(1, 4, 4, 1, 8, (2, 2), (4, 4), bias=False)[0].unbind(3)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setenv(ENV_BACKEND, "triton")
    with pytest.raises(RuntimeError, match=f"overlapping_window_attention.*{ENV_BACKEND}=.*TRITON_INTERPRET=1"):
        overlapping_window_attention(q, k, v, 2, 4)
    assert resolve_backend("overlapping_window_attention", "reference", q) == "reference"
    assert spy == []


def test_public_exports():
    assert ops.overlapping_window_attention is overlapping_window_attention
    assert "overlapping_window_attention" in ops.__all__


def test_triton_rejects_float64():
    q, k, v = make_inputs(1, 4, 4, 1, 8, (2, 2), (4, 4), bias=False)[0].double().unbind(3)
    with pytest.raises(ValueError, match="backend 'triton' supports .*float64.*backend='reference'"):
        overlapping_window_attention(q, k, v, 2, 4, backend="triton")


def _bad_calls():
    q = torch.randn(2, 9, 10, 3, 8)
    return {
        "q 4-d": ((q[0], q[0], q[0], 4, 6), {}, "must be \\(B, H, W, heads, head_dim\\)"),
        "k shape": ((q, q[:, :8], q, 4, 6), {}, "one shape"),
        "dtype mix": ((q, q.double(), q, 4, 6), {}, "floating dtype"),
        "window 0": ((q, q, q, 0, 6), {}, "window must be"),
        "key window 3-d": ((q, q, q, 4, (6, 6, 6)), {}, "key_window must be .*\\(6, 6, 6\\)"),
        "key window smaller": ((q, q, q, 4, 2), {}, "key_window \\(2, 2\\) must be at least window \\(4, 4\\)"),
        "key window odd excess": ((q, q, q, 4, (6, 7)), {}, "even amount .* in width"),
        "table shape": ((q, q, q, 4, 6), dict(bias_table=torch.zeros(3, 9, 8)), "bias_table must be .*\\(3, 9, 9\\)"),
    }


@pytest.mark.parametrize("case", list(_bad_calls()), ids=str)
@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_bad_arguments_are_value_errors(case, backend):
    args, kwargs, match = _bad_calls()[case]
    with pytest.raises(ValueError, match=match):
        overlapping_window_attention(*args, backend=backend, **kwargs)


# --------------------------------------------------------------------------------------------------------
# Compiled kernels at model sizes (GPU only).

# HAT: 16 x 16 query windows, 24 x 24 key windows, 6 heads of 30 (HAT / HAT-L) or 24 (HAT-S), a 64 x 64 training
# patch and a 100 x 75 map (partial windows); a batch large enough for several window chunks per program.
GPU_SHAPES = [
    (8, 64, 64, 6, 30, (16, 16), (24, 24)),
    (2, 100, 75, 6, 24, (16, 16), (24, 24)),
    (32, 64, 64, 6, 30, (16, 16), (24, 24)),
]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=shape_id)
def test_gpu_model_sizes(shape, dtype):
    qkv, table = make_inputs(*shape, dtype=dtype, device="cuda")
    tol = _GPU_FP32_TOL if dtype == torch.float32 else TOL[dtype]
    check_against_reference(qkv, shape[5], shape[6], table, tol)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16], ids=str)
def test_gpu_compile_inductor_triton(dtype):
    shape = GPU_SHAPES[0]
    qkv, table = make_inputs(*shape, dtype=dtype, device="cuda")
    window, key_window = shape[5], shape[6]
    torch._dynamo.reset()
    compiled = torch.compile(_fn("triton", window, key_window), fullgraph=True)
    compare(run_with_grads(compiled, qkv, table), run_with_grads(_fn("reference", window, key_window), qkv, table),
            TOL[dtype])


@pytest.mark.gpu
def test_gpu_default_backend_is_triton(monkeypatch):
    monkeypatch.delenv(ENV_BACKEND, raising=False)
    assert resolve_backend("overlapping_window_attention", None, torch.empty(1, device="cuda")) == "triton"
