"""Tests for `ops.neighborhood_attention_2d` (NAT / DiNAT 2-D neighborhood attention, NATTEN 0.14 semantics).

* the reference's neighbour / bias indices against NATTEN's own ``get_window_start`` / ``get_pb_start``
  (NATTEN <= 0.17's naive kernels, vectorised in ``ops/neighborhood_attention/official.py``) for every odd
  kernel 1..13, dilations 1..9 and axis lengths from k*d up, i.e. dilation groups of unequal length included;
* the reference against a naive fp64 per-pixel loop built from those formulas (tiny maps, with and without
  bias; its bands of query rows forced to one row and to the whole map; gradients of every subset of inputs), and
  against plain softmax attention + bias when the window covers the whole map;
* the Triton backend against the reference: output and the gradients of q, k, v and the bias table, odd shapes,
  k in {3, 5, 7, 11}, square and non-square kernels and dilations (incl. dilations that do not divide the map),
  strided (``unbind`` of a qkv tensor) inputs, fp32 / fp16 / bf16, every kernel output NaN-prefilled;
* the custom ops under ``torch.library.opcheck`` and ``torch.compile(fullgraph=True)``;
* argument errors of the public function; ``gpu`` tests at DiNAT-Tiny's stage shapes.

Without a GPU the kernels run in Triton's CPU interpreter (tests/conftest.py), so those shapes stay tiny.
Tolerances, Triton vs reference on the same inputs (``|a - e| <= atol * max|e| + rtol * |e|``, see
tests/utils.py; the kernels round P and dS to the input dtype before their dots, as FlashAttention does):

    | dtype | atol   | rtol   | observed (interpreter)           |
    |-------|--------|--------|----------------------------------|
    | fp32  | 1e-5   | 1e-4   | <= 7e-7 relative to max          |
    | fp16  | 2e-3   | 2e-3   | <= 6e-4                          |
    | bf16  | 1.6e-2 | 1.6e-2 | <= 9e-3                          |

The bias gradient is fp32 (an fp32 parameter, as under AMP) and meets the same rows.
"""
from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F

import ops
from ops import neighborhood_attention_2d
from ops.neighborhood_attention.official import natten_axis
from ops.neighborhood_attention.reference import neighborhood_attention_2d_reference, neighborhood_indices
from tests.utils import assert_close

triton_impl = importlib.import_module("ops.neighborhood_attention.triton")

TOL = {
    torch.float32: dict(atol=1e-5, rtol=1e-4),
    torch.float16: dict(atol=2e-3, rtol=2e-3),
    torch.bfloat16: dict(atol=1.6e-2, rtol=1.6e-2),
}
_GPU_FP32_TOL = dict(atol=1e-4, rtol=1e-3)


def naive_fp64(q, k, v, kernel, dilation, rpb=None, scale=None):
    """Per-pixel loop over (b, y, x, head) in fp64 with NATTEN's formulas."""
    B, H, W, nh, D = q.shape
    scale = D ** -0.5 if scale is None else scale
    q, k, v = q.double(), k.double(), v.double()
    keys_y, pb_y = (t.tolist() for t in natten_axis(H, kernel[0], dilation[0]))
    keys_x, pb_x = (t.tolist() for t in natten_axis(W, kernel[1], dilation[1]))
    rows = []
    for y in range(H):
        row = []
        for x in range(W):
            ks = torch.stack([k[:, a, c] for a in keys_y[y] for c in keys_x[x]], dim=1)  # (B, kh*kw, nh, D)
            vs = torch.stack([v[:, a, c] for a in keys_y[y] for c in keys_x[x]], dim=1)
            logits = torch.einsum("bnd,bjnd->bnj", q[:, y, x] * scale, ks)
            if rpb is not None:
                bias = torch.stack([rpb.double()[:, a, c] for a in pb_y[y] for c in pb_x[x]], dim=1)  # (nh, kh*kw)
                logits = logits + bias[None]
            row.append(torch.einsum("bnj,bjnd->bnd", logits.softmax(-1), vs))
        rows.append(torch.stack(row, dim=1))
    return torch.stack(rows, dim=1)


def make_inputs(B, H, W, nh, D, kernel, dtype=torch.float32, device="cpu", seed=0, strided=True):
    """q, k, v as ``unbind`` views of one (B, H, W, 3, heads, D) tensor (what the models pass), and a table."""
    g = torch.Generator().manual_seed(seed)
    qkv = torch.randn(B, H, W, 3, nh, D, generator=g).to(device=device, dtype=dtype)
    q, k, v = qkv.unbind(3) if strided else (t.contiguous() for t in qkv.unbind(3))
    rpb = (torch.randn(nh, 2 * kernel[0] - 1, 2 * kernel[1] - 1, generator=g) * 0.5).to(device)
    return q, k, v, rpb


def _pair(x):
    return (x, x) if isinstance(x, int) else tuple(x)


# --------------------------------------------------------------------------------------------------------
# The reference.


@pytest.mark.parametrize("kernel", [1, 3, 5, 7, 9, 11, 13])
def test_indices_match_natten_formulas(kernel):
    for dilation in range(1, 10):
        for length in range(kernel * dilation, kernel * dilation + 2 * dilation + 4):
            keys, bias = neighborhood_indices(length, kernel, dilation)
            exp_keys, exp_bias = natten_axis(length, kernel, dilation)
            for i in range(length):
                assert keys[i].tolist() == exp_keys[i].tolist(), (length, kernel, dilation, i)
                assert bias[i].tolist() == exp_bias[i].tolist(), (length, kernel, dilation, i)


@pytest.mark.parametrize("case", [
    # (B, H, W, heads, D, kernel, dilation, bias)
    (1, 7, 9, 2, 8, 3, 1, True),
    (2, 8, 7, 1, 4, 3, 2, True),  # 7 = 3 * 2 + 1: groups of 4 and 3 columns
    (1, 11, 10, 2, 6, 5, (2, 2), True),  # 11 = 5*2 + 1
    (1, 9, 13, 1, 5, (3, 5), (3, 2), False),  # non-square kernel and dilation, no bias
    (1, 7, 7, 2, 8, 7, 1, True),  # window = map
])
def test_reference_matches_naive_fp64(case):
    B, H, W, nh, D, kernel, dilation, bias = case
    kernel, dilation = _pair(kernel), _pair(dilation)
    q, k, v, rpb = make_inputs(B, H, W, nh, D, kernel, dtype=torch.float64)
    rpb = rpb.double() if bias else None
    out = neighborhood_attention_2d(q, k, v, kernel, dilation, rpb=rpb, backend="reference")
    expected = naive_fp64(q, k, v, kernel, dilation, rpb)
    assert_close(out, expected, atol=1e-6, rtol=1e-5, name="out")  # the reference computes in fp32


def test_reference_whole_map_window_is_global_attention():
    """k = map size: every query sees every key, bias[key - query + k - 1]; plain softmax attention + bias."""
    B, H, W, nh, D = 2, 5, 7, 3, 8
    q, k, v, rpb = make_inputs(B, H, W, nh, D, (H, W))
    out = neighborhood_attention_2d(q, k, v, (H, W), rpb=rpb, backend="reference")
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    bias = rpb[:, ys[None, :] - ys[:, None] + H - 1, xs[None, :] - xs[:, None] + W - 1]  # (nh, query, key)
    flat = lambda t: t.reshape(B, H * W, nh, D).transpose(1, 2)  # noqa: E731
    expected = F.scaled_dot_product_attention(flat(q), flat(k), flat(v), attn_mask=bias[None])
    assert_close(out, expected.transpose(1, 2).reshape(B, H, W, nh, D), **TOL[torch.float32], name="out")


def test_reference_gradients_match_naive_fp64():
    """The reference's autograd gradients (q, k, v, table) against those of the fp64 per-pixel loop."""
    q, k, v, rpb = make_inputs(1, 7, 6, 2, 4, (3, 3), dtype=torch.float64, strided=False)
    rpb = rpb.double()
    grad = torch.randn(q.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    results = []
    for fn in (lambda *a: neighborhood_attention_2d_reference(*a[:3], (3, 3), (2, 1), a[3]),
               lambda *a: naive_fp64(*a[:3], (3, 3), (2, 1), a[3])):
        leaves = [t.detach().requires_grad_() for t in (q, k, v, rpb)]
        results.append(torch.autograd.grad(fn(*leaves), leaves, grad))
    for name, a, e in zip(("dq", "dk", "dv", "drpb"), *results):
        assert_close(a, e, atol=1e-6, rtol=1e-5, name=name)


@pytest.mark.parametrize("band_bytes", [1, 1 << 30], ids=["band_per_row", "one_band"])
def test_reference_bands_and_partial_gradients(monkeypatch, band_bytes):
    """The reference walks the map in bands of query rows with a written-out backward: one row per band and the
    whole map in one band give the fp64 loop's output and gradients, for every subset of inputs needing one."""
    ref_module = importlib.import_module("ops.neighborhood_attention.reference")
    monkeypatch.setattr(ref_module, "BAND_BYTES", band_bytes)
    kernel, dilation = (3, 5), (2, 1)
    q, k, v, rpb = make_inputs(2, 9, 7, 2, 4, kernel, dtype=torch.float64)
    rpb = rpb.double()
    grad = torch.randn(q.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    for wanted in ((0, 1, 2, 3), (0,), (1, 3), (2,), (3,)):
        results = []
        for fn in (neighborhood_attention_2d_reference, naive_fp64):
            leaves = [t.detach().requires_grad_(i in wanted) for i, t in enumerate((q, k, v, rpb))]
            out = fn(*leaves[:3], kernel, dilation, leaves[3])
            results.append((out, *torch.autograd.grad(out, [leaves[i] for i in wanted], grad)))
        names = ("out",) + tuple(("dq", "dk", "dv", "drpb")[i] for i in wanted)
        for name, a, e in zip(names, *results):
            assert_close(a, e, atol=1e-12, rtol=1e-10, name=f"{name} (grads of {wanted})")


def test_reference_half_precision_computes_in_fp32():
    """fp16 / bf16 inputs: fp32 math, one rounding at the end (the fp32 result rounded)."""
    q, k, v, rpb = make_inputs(1, 8, 9, 2, 8, (3, 3))
    for dtype in (torch.float16, torch.bfloat16):
        args = [t.to(dtype) for t in (q, k, v)]
        out = neighborhood_attention_2d_reference(*args, (3, 3), (2, 1), rpb)
        expected = neighborhood_attention_2d_reference(*(t.float() for t in args), (3, 3), (2, 1), rpb)
        assert out.dtype == dtype
        assert torch.equal(out, expected.to(dtype))


# --------------------------------------------------------------------------------------------------------
# Triton against the reference.


def _check_triton(B, H, W, nh, D, kernel, dilation, dtype, bias=True, strided=True, seed=0, tol=None):
    kernel, dilation = _pair(kernel), _pair(dilation)
    q, k, v, rpb = make_inputs(B, H, W, nh, D, kernel, dtype=dtype, strided=strided, seed=seed)
    rpb = rpb if bias else None
    g = torch.Generator().manual_seed(seed + 1)
    grad = torch.randn(B, H, W, nh, D, generator=g).to(dtype)
    results = {}
    for backend in ("triton", "reference"):
        leaves = [t.detach().requires_grad_() for t in (q, k, v)] + ([rpb.detach().requires_grad_()] if bias else [])
        out = neighborhood_attention_2d(*leaves[:3], kernel, dilation, rpb=leaves[3] if bias else None,
                                        backend=backend)
        results[backend] = (out, *torch.autograd.grad(out, leaves, grad))
    tol = tol or TOL[dtype]
    for name, a, e in zip(("out", "dq", "dk", "dv", "drpb"), results["triton"], results["reference"]):
        assert_close(a, e, **tol, name=name)


@pytest.mark.parametrize("case", [
    # (B, H, W, heads, D, kernel, dilation)
    (1, 9, 10, 2, 16, 3, 1),  # odd map, two query tiles per axis
    (2, 7, 7, 1, 32, 7, 1),  # window = map (NAT's last stage)
    (1, 11, 15, 1, 8, 5, (2, 3)),  # non-dividing dilations: groups of 6/5 rows and 5 columns
    (1, 17, 9, 1, 24, 3, (5, 1)),  # 17 = 3*5 + 2: rows in groups of 4 and 3, head_dim padded to 32
    (1, 10, 12, 1, 16, (3, 5), (3, 2)),  # non-square kernel, 10 = 3*3 + 1
    # 7 x 7 (NAT / DiNAT): 14 x 14 key regions, 2 x 2 key blocks of 8 x 8 in the dq kernel's bias binning
    (1, 20, 19, 2, 16, 7, (1, 2)),
    # 11 x 11 (DiNAT-L 11x11) with a 5-wide kernel axis: 21-row bias table (32-row bins), groups of 12 / 11 rows
    (1, 23, 13, 1, 8, (11, 5), (2, 1)),
])
def test_triton_matches_reference(case):
    _check_triton(*case, dtype=torch.float32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_triton_half_precision(dtype):
    _check_triton(1, 13, 9, 1, 16, 3, (4, 2), dtype=dtype)


def test_triton_without_bias_and_contiguous():
    _check_triton(1, 9, 8, 2, 16, 5, 1, torch.float32, bias=False, strided=False)


def test_triton_reads_no_bias_outside_the_table():
    """The table is a view inside NaN-filled memory: a kernel that gathers bias for a missing query (whose relative
    index can fall outside the table) gets NaN and fails; the gradient is checked on the view."""
    nh, (kh, kw) = 1, (3, 3)
    q, k, v, table = make_inputs(1, 11, 9, nh, 16, (kh, kw))
    poisoned = torch.full((nh, 6 * kh, 6 * kw), float("nan"))
    rpb = poisoned[:, 2 * kh:4 * kh - 1, 2 * kw:4 * kw - 1]
    rpb.copy_(table)
    leaves = [t.detach().requires_grad_() for t in (q, k, v)]
    rpb.requires_grad_()
    grad = torch.randn(q.shape, generator=torch.Generator().manual_seed(5))
    out = neighborhood_attention_2d(*leaves, (kh, kw), (3, 2), rpb=rpb, backend="triton")
    got = (out, *torch.autograd.grad(out, [*leaves, rpb], grad))
    leaves = [t.detach().requires_grad_() for t in (q, k, v, table)]
    out = neighborhood_attention_2d(*leaves[:3], (kh, kw), (3, 2), rpb=leaves[3], backend="reference")
    expected = (out, *torch.autograd.grad(out, leaves, grad))
    for name, a, e in zip(("out", "dq", "dk", "dv", "drpb"), got, expected):
        assert_close(a, e, **TOL[torch.float32], name=name)


def test_triton_grad_of_some_inputs():
    """rpb without grad (frozen), only q needing one."""
    q, k, v, rpb = make_inputs(1, 8, 9, 1, 16, (3, 3))
    q = q.detach().requires_grad_()
    out_t = neighborhood_attention_2d(q, k, v, 3, 2, rpb=rpb, backend="triton")
    (dq_t,) = torch.autograd.grad(out_t.square().sum(), q)
    out_r = neighborhood_attention_2d(q, k, v, 3, 2, rpb=rpb, backend="reference")
    (dq_r,) = torch.autograd.grad(out_r.square().sum(), q)
    assert_close(dq_t, dq_r, **TOL[torch.float32], name="dq")


def test_opcheck():
    """Schema, fake implementations, autograd registration of both custom ops."""
    q, k, v, rpb = make_inputs(1, 5, 6, 1, 8, (3, 3), strided=False)
    scale = 8 ** -0.5
    torch.library.opcheck(
        torch.ops.attnzoo.neighborhood_attention_2d_fwd.default,
        (q.requires_grad_(), k.requires_grad_(), v.requires_grad_(), 3, 3, 1, 2, rpb.requires_grad_(), scale),
    )
    q, k, v, rpb = (t.detach() for t in (q, k, v, rpb))
    out, lse = torch.ops.attnzoo.neighborhood_attention_2d_fwd(q, k, v, 3, 3, 1, 2, rpb, scale)
    torch.library.opcheck(torch.ops.attnzoo.neighborhood_attention_2d_bwd.default,
                          (torch.randn_like(q), q, k, v, out, lse, 3, 3, 1, 2, rpb, scale, True))


@pytest.mark.parametrize("backend", ["triton", "reference"])
def test_compile_fullgraph(backend):
    q, k, v, rpb = make_inputs(1, 6, 7, 1, 8, (3, 3))

    def fn(q, k, v, rpb):
        return neighborhood_attention_2d(q, k, v, 3, (2, 1), rpb=rpb, backend=backend) * 2

    torch._dynamo.reset()
    try:
        compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
        leaves = [t.detach().requires_grad_() for t in (q, k, v, rpb)]
        out = compiled(*leaves)
        grads = torch.autograd.grad(out.sum(), leaves)
        leaves_e = [t.detach().requires_grad_() for t in (q, k, v, rpb)]
        out_e = fn(*leaves_e)
        grads_e = torch.autograd.grad(out_e.sum(), leaves_e)
    finally:
        torch._dynamo.reset()
    assert_close(out, out_e, **TOL[torch.float32], name="out")
    for a, e in zip(grads, grads_e):
        assert_close(a, e, **TOL[torch.float32], name="grad")


# --------------------------------------------------------------------------------------------------------
# Arguments.


def test_public_export():
    assert ops.neighborhood_attention_2d is neighborhood_attention_2d
    assert "neighborhood_attention_2d" in ops.__all__


@pytest.mark.parametrize("case,match", [
    (dict(shape=(1, 13, 14, 1, 8), kernel=7, dilation=2), r"13x14 is smaller than kernel_size x dilation = 14x14"),
    (dict(shape=(1, 8, 8, 1, 8), kernel=4, dilation=1), r"kernel_size must be odd"),
    (dict(shape=(1, 8, 8, 1, 8), kernel=3, dilation=0), r"dilation must be a positive int"),
    (dict(shape=(1, 8, 8, 2, 8), kernel=3, dilation=1, rpb=(1, 5, 5)), r"rpb must be \(heads, 2\*kh-1, 2\*kw-1\)"),
    (dict(shape=(8, 8, 2, 8), kernel=3, dilation=1), r"must be \(B, H, W, heads, head_dim\)"),
])
@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_bad_arguments_are_value_errors(case, match, backend):
    q = torch.randn(case["shape"])
    rpb = torch.randn(case["rpb"]) if "rpb" in case else None
    with pytest.raises(ValueError, match=match):
        neighborhood_attention_2d(q, q, q, case["kernel"], case["dilation"], rpb=rpb, backend=backend)


def test_triton_rejects_float64():
    q = torch.randn(1, 5, 5, 1, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="backend 'triton' supports"):
        neighborhood_attention_2d(q, q, q, 3, backend="triton")


# --------------------------------------------------------------------------------------------------------
# GPU: model sizes, compiled kernels.

# DiNAT-Tiny at 224 (stage maps 56, 28, 14, 7; heads 2, 4, 8, 16; head_dim 32) and a 1024 stage-1 map.
GPU_CASES = [
    (2, 56, 56, 2, 32, 7, 8),
    (2, 28, 28, 4, 32, 7, 4),
    (2, 14, 14, 8, 32, 7, 2),
    (2, 7, 7, 16, 32, 7, 1),
    (1, 57, 61, 2, 32, 7, 3),
    (1, 96, 96, 6, 32, 11, 8),
]


@pytest.mark.gpu
@pytest.mark.parametrize("case", GPU_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_gpu_model_sizes(case, dtype):
    B, H, W, nh, D, kernel, dilation = case
    kernel, dilation = _pair(kernel), _pair(dilation)
    q, k, v, rpb = make_inputs(B, H, W, nh, D, kernel, dtype=dtype, device="cuda")
    grad = torch.randn(B, H, W, nh, D, device="cuda", dtype=dtype)
    res = {}
    for backend in ("triton", "reference"):
        leaves = [t.detach().requires_grad_() for t in (q, k, v, rpb)]
        out = neighborhood_attention_2d(*leaves[:3], kernel, dilation, rpb=leaves[3], backend=backend)
        res[backend] = (out, *torch.autograd.grad(out, leaves, grad))
    tol = _GPU_FP32_TOL if dtype == torch.float32 else TOL[dtype]
    for name, a, e in zip(("out", "dq", "dk", "dv", "drpb"), res["triton"], res["reference"]):
        assert_close(a, e, **tol, name=name)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_bias_gradient_is_deterministic(dtype):
    """d(rpb) is summed from per-program partials without atomics: two backward passes agree bit for bit."""
    q, k, v, rpb = make_inputs(4, 56, 56, 2, 32, (7, 7), dtype=dtype, device="cuda")
    grad = torch.randn(q.shape, device="cuda", dtype=dtype)
    grads = []
    for _ in range(2):
        leaves = [t.detach().requires_grad_() for t in (q, k, v, rpb)]
        out = neighborhood_attention_2d(*leaves[:3], 7, 8, rpb=leaves[3], backend="triton")
        grads.append(torch.autograd.grad(out, leaves, grad))
    for a, b in zip(*grads):
        assert torch.equal(a, b)


@pytest.mark.gpu
def test_gpu_default_backend_is_triton(monkeypatch):
    calls = []
    real = triton_impl.neighborhood_attention_2d_triton
    monkeypatch.setattr(triton_impl, "neighborhood_attention_2d_triton", lambda *a: calls.append(1) or real(*a))
    q = torch.randn(1, 8, 8, 1, 16, device="cuda")
    neighborhood_attention_2d(q, q, q, 3)
    assert calls
