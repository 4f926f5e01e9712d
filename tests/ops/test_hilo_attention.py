"""Tests for `ops.hilo_attention` (LITv2's HiLo attention) and its Lo-Fi op `ops.hilo_attention.lofi_attention`.

* the Lo-Fi reference against a naive fp64 formulation (one (batch, head) at a time, explicit exp / sum);
  `hilo_attention` against the official HiLo math in fp64 (``ops/hilo_attention/official.py``: the window
  partition of ``HiLo.hifi``, the pooled-key attention of ``HiLo.lofi``), and its Hi-Fi path against
  `ops.window_attention` on maps that are not multiples of the window;
* the Lo-Fi Triton backend against the reference: the output and the gradients of q, k, v on odd shapes (one
  key, one query, head_dim 8 / 16 / 24 / 32, several query and key blocks, a global key set as LITv2's last stage
  uses), strided inputs, fp32 / fp16 / bf16, forced small blocks, with every kernel output NaN-prefilled;
  `hilo_attention` end to end (both paths, every gradient) on the Triton backend;
* the custom ops under ``torch.compile(fullgraph=True)``, ``torch.export`` and ``torch.library.opcheck``;
* the official head split, backend selection and argument errors.

Without a GPU the kernels run in Triton's CPU interpreter (tests/conftest.py) at small sizes; the ``gpu`` tests
run them compiled at model sizes.

Tolerances, Triton vs reference given the same inputs (``|actual - expected| <= atol * max|expected| + rtol *
|expected|``; the reference computes in fp32 and rounds once, the kernels round P and dS to the input dtype
before their dots, as FlashAttention does) -- the table of tests/ops/test_window_attention.py:

    | dtype | atol   | rtol   | observed (interpreter)  |
    |-------|--------|--------|-------------------------|
    | fp32  | 1e-5   | 1e-4   | <= 1e-6                 |
    | fp16  | 2e-3   | 2e-3   | <= 5e-4                 |
    | bf16  | 1.6e-2 | 1.6e-2 | <= 9e-3                 |
"""
from __future__ import annotations

import importlib
import math

import pytest
import torch

import ops
from ops import hilo_attention
from ops._backend import ENV_BACKEND
from ops.hilo_attention import hilo_head_split, lofi_attention
from ops.hilo_attention.official import hilo_attention_official
from ops.hilo_attention.reference import lofi_attention_reference
from tests.utils import assert_close

pkg = importlib.import_module("ops.hilo_attention")
triton_impl = importlib.import_module("ops.hilo_attention.triton")

TOL = {
    torch.float32: dict(atol=1e-5, rtol=1e-4),
    torch.float16: dict(atol=2e-3, rtol=2e-3),
    torch.bfloat16: dict(atol=1.6e-2, rtol=1.6e-2),
}
_GPU_FP32_TOL = dict(atol=1e-4, rtol=1e-3)
_FP64_TOL = dict(atol=1e-6, rtol=1e-5)

# (B, N queries, M keys, heads, head_dim)
SHAPES = [
    (1, 1, 2, 1, 8),  # one query
    (2, 37, 9, 3, 32),  # LITv2-like head_dim, partial blocks
    (1, 70, 20, 2, 24),  # head_dim padded to 32, two query blocks
    (2, 130, 70, 1, 16),  # several query and key blocks
    (1, 49, 49, 2, 32),  # the last stage: s = 1, keys are all tokens
]


def shape_id(shape) -> str:
    return "x".join(map(str, shape))


def make_lofi(batch, n, m, heads, head_dim, dtype=torch.float32, device="cpu", seed=0):
    """q (B, N, heads, D) and kv (B, M, 2, heads, D): k, v are its non-contiguous unbind(2) views, as a model makes
    them."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, n, heads, head_dim, generator=gen).to(device=device, dtype=dtype)
    kv = torch.randn(batch, m, 2, heads, head_dim, generator=gen).to(device=device, dtype=dtype)
    return q, kv


def lofi_with_grads(backend, q, kv, scale=None, d_out=None, seed=1):
    """(out, dq, dk, dv) of lofi_attention(q, *kv.unbind(2))."""
    q = q.detach().clone().requires_grad_()
    kv = kv.detach().clone().requires_grad_()
    out = lofi_attention(q, *kv.unbind(2), scale=scale, backend=backend)
    if d_out is None:
        gen = torch.Generator().manual_seed(seed)
        d_out = torch.randn(out.shape, generator=gen).to(device=out.device, dtype=out.dtype)
    dq, dkv = torch.autograd.grad(out, (q, kv), d_out)
    return (out, dq, *dkv.unbind(2))


def compare(got, want, tol, names=("out", "dq", "dk", "dv")) -> None:
    for name, a, e in zip(names, got, want):
        assert_close(a, e, name=name, **tol)


def naive_lofi_fp64(q, k, v, scale=None):
    q, k, v = (t.double() for t in (q, k, v))
    batch, n, heads, head_dim = q.shape
    scale = head_dim**-0.5 if scale is None else scale
    out = torch.empty_like(q)
    for b in range(batch):
        for h in range(heads):
            logits = scale * q[b, :, h] @ k[b, :, h].T
            e = torch.exp(logits - logits.max(dim=1, keepdim=True).values)
            out[b, :, h] = (e / e.sum(dim=1, keepdim=True)) @ v[b, :, h]
    return out


def official_hilo_fp64(hq, hk, hv, lq, lk, lv, ws):
    """The official HiLo attention (``ops/hilo_attention/official.py``) in fp64, Hi-Fi channels first."""
    hifi, lofi = hilo_attention_official(*(t.double() for t in (hq, hk, hv, lq, lk, lv)), ws)
    return torch.cat((hifi.flatten(3), lofi.flatten(3)), dim=-1)


def make_hilo(batch, h, w, hifi_heads, lofi_heads, head_dim, ws, dtype=torch.float32, seed=0):
    """Projected HiLo heads as a model makes them: hqkv (B, H, W, 3, hh, d), lq (B, H, W, lh, d), lkv pooled
    (B, H/ws, W/ws, 2, lh, d) (ceil: a map that is not divisible gets partial pooled windows' worth of keys)."""
    gen = torch.Generator().manual_seed(seed)
    hqkv = torch.randn(batch, h, w, 3, hifi_heads, head_dim, generator=gen).to(dtype)
    lq = torch.randn(batch, h, w, lofi_heads, head_dim, generator=gen).to(dtype)
    lkv = torch.randn(batch, -(-h // ws), -(-w // ws), 2, lofi_heads, head_dim, generator=gen).to(dtype)
    return hqkv, lq, lkv


# --------------------------------------------------------------------------------------------------------
# The reference is the spec.


@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_lofi_reference_matches_naive_fp64(shape):
    q, kv = make_lofi(*shape)
    k, v = kv.unbind(2)
    assert_close(lofi_attention_reference(q.double(), k.double(), v.double()), naive_lofi_fp64(q, k, v), **_FP64_TOL)
    assert_close(lofi_attention_reference(q, k, v, 0.7).double(), naive_lofi_fp64(q, k, v, 0.7), **_FP64_TOL)


@pytest.mark.parametrize("backend, geometry", [
    ("reference", (8, 12, 2, 2, 2)),
    ("reference", (6, 4, 1, 3, 2)),
    ("reference", (4, 6, 3, 1, 2)),
    ("reference", (4, 4, 0, 4, 1)),
    ("triton", (4, 6, 1, 3, 2)),
    ("triton", (4, 4, 0, 4, 1)),
], ids=["ref-h2l2", "ref-h1l3", "ref-h3l1", "ref-global", "triton-h1l3", "triton-global"])
def test_hilo_matches_official_math(backend, geometry):
    """Both paths against the official HiLo formulas (fp64), Hi-Fi channels first; ``ws = 1``: global attention."""
    h, w, hh, lh, ws = geometry
    hqkv, lq, lkv = make_hilo(2, h, w, max(hh, 1), lh, 16, ws)
    hifi = hqkv.unbind(3) if hh else (None, None, None)
    hifi_out, lofi_out = hilo_attention(*hifi, lq, *lkv.unbind(3), ws, backend=backend)
    if not hh:
        assert hifi_out is None
        # the official ws == 1 path: l_kv on every token, plain attention
        want = naive_lofi_fp64(lq.flatten(1, 2), *(t.flatten(1, 2) for t in lkv.unbind(3))).view(lofi_out.shape)
        assert_close(lofi_out, want.float(), **TOL[torch.float32])
        return
    got = torch.cat((hifi_out.flatten(3), lofi_out.flatten(3)), dim=-1)
    want = official_hilo_fp64(*hqkv.unbind(3), lq, *lkv.unbind(3), ws)
    assert_close(got, want.float(), **TOL[torch.float32])


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_hilo_partial_windows_are_window_attention(backend):
    """Maps that are not multiples of the window: the Hi-Fi path is exactly `ops.window_attention` (partial windows
    masked), the Lo-Fi path exactly `lofi_attention` over the given pooled map."""
    hqkv, lq, lkv = make_hilo(1, 5, 7, 2, 3, 16, 2)
    hifi_out, lofi_out = hilo_attention(*hqkv.unbind(3), lq, *lkv.unbind(3), 2, backend=backend)
    assert_close(hifi_out, ops.window_attention(*hqkv.unbind(3), 2, backend="reference"), **TOL[torch.float32])
    want = lofi_attention_reference(lq.flatten(1, 2), *(t.flatten(1, 2) for t in lkv.unbind(3)))
    assert_close(lofi_out, want.view(lofi_out.shape), **TOL[torch.float32])


def test_one_path_only():
    hqkv, lq, lkv = make_hilo(1, 4, 4, 2, 2, 8, 2)
    hifi_out, lofi_out = hilo_attention(*hqkv.unbind(3), None, None, None, 2)
    assert lofi_out is None and hifi_out.shape == (1, 4, 4, 2, 8)
    hifi_out, lofi_out = hilo_attention(None, None, None, lq, *lkv.unbind(3), 2)
    assert hifi_out is None and lofi_out.shape == (1, 4, 4, 2, 8)


@pytest.mark.parametrize("num_heads, alpha, window, expected", [
    (12, 0.9, 2, (2, 10)),  # LITv2-S / M stage 3
    (16, 0.9, 2, (2, 14)),  # LITv2-B stage 3
    (24, 0.9, 1, (0, 24)),  # stage 4: s = 1 is global attention over all heads
    (12, 0.0, 2, (12, 0)),
    (12, 0.2, 2, (10, 2)),
    (12, 0.4, 2, (8, 4)),
    (12, 0.5, 2, (6, 6)),
    (12, 0.7, 2, (4, 8)),  # int(8.4)
    (12, 1.0, 2, (0, 12)),
])
def test_head_split_is_official(num_heads, alpha, window, expected):
    """``int(heads * alpha)`` Lo-Fi heads (ziplab/LITv2 README: the alpha sweep's Lo-Fi heads 0/2/4/6/8/10/12)."""
    assert hilo_head_split(num_heads, alpha, window) == expected


# --------------------------------------------------------------------------------------------------------
# Triton against the reference.


def test_nan_fill_is_on():
    import os

    assert os.environ.get("ATTNZOO_NAN_FILL") == "1"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_lofi_triton_matches_reference(shape, dtype):
    q, kv = make_lofi(*shape, dtype=dtype)
    compare(lofi_with_grads("triton", q, kv), lofi_with_grads("reference", q, kv), TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_lofi_triton_forced_small_blocks(monkeypatch, dtype):
    """16-token tiles: many query and key blocks (the online softmax and both backward loops) at a small size."""
    monkeypatch.setattr(triton_impl, "_MAX_BLOCK", 16)
    q, kv = make_lofi(2, 45, 35, 2, 16, dtype=dtype)
    compare(lofi_with_grads("triton", q, kv), lofi_with_grads("reference", q, kv), TOL[dtype])


@pytest.mark.parametrize("m, fused", [(64, True), (65, False)])
def test_lofi_backward_paths(m, fused):
    """Up to 64 keys (one key block) the backward is one launch that never reads ``out`` (delta from the score
    tile); beyond, two launches with delta = rowsum(dO * out). Both match the reference; a NaN ``out`` shows
    which one ran."""
    q, kv = make_lofi(1, 40, m, 2, 16)
    compare(lofi_with_grads("triton", q, kv), lofi_with_grads("reference", q, kv), TOL[torch.float32])
    k, v = (t.contiguous() for t in kv.unbind(2))
    out, lse = torch.ops.attnzoo.lofi_attention_fwd(q, k, v, 0.25)
    grads = torch.ops.attnzoo.lofi_attention_bwd(torch.randn_like(q), q, k, v, torch.full_like(out, float("nan")),
                                                 lse, 0.25)
    assert all(bool(torch.isfinite(g).all()) == fused for g in grads[:2])


def test_lofi_single_key():
    """One pooled key: every query returns v and q, k get no gradient (dS = 0)."""
    q, kv = make_lofi(2, 19, 1, 2, 16)
    out, dq, dk, dv = lofi_with_grads("triton", q, kv)
    assert_close(out, kv[:, :, 1].expand_as(out), **TOL[torch.float32])
    # rounding only: P = exp(s - lse) is 1 to an ulp and delta = rowsum(dO * out) equals dP to an ulp
    assert dq.abs().max() < 1e-5 * dv.abs().max() and dk.abs().max() < 1e-5 * dv.abs().max()
    assert_close(dv, lofi_with_grads("reference", q, kv)[3], **TOL[torch.float32])


def test_lofi_triton_strided_inputs_and_scale():
    """q a transposed view, k / v unbind views of another layout, dO expanded (stride 0); a custom scale."""
    gen = torch.Generator().manual_seed(3)
    q_base = torch.randn(2, 3, 40, 16, generator=gen)  # (B, heads, N, D) -> transposed to (B, N, heads, D)
    kv = torch.randn(2, 2, 11, 3, 16, generator=gen)  # (B, 2, M, heads, D)
    d_out = torch.randn(1, 40, 3, 16, generator=gen).expand(2, -1, -1, -1)

    def run(backend):
        qb = q_base.clone().requires_grad_()
        kvb = kv.clone().requires_grad_()
        out = lofi_attention(qb.transpose(1, 2), kvb[:, 0], kvb[:, 1], scale=0.3, backend=backend)
        dq, dkv = torch.autograd.grad(out, (qb, kvb), d_out)
        return out, dq, dkv[:, 0], dkv[:, 1]

    compare(run("triton"), run("reference"), TOL[torch.float32])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_hilo_triton_end_to_end(dtype):
    """Both paths on the Triton backend (window attention and Lo-Fi kernels): outputs and every gradient."""
    hqkv, lq, lkv = make_hilo(1, 3, 5, 1, 2, 16, 2, dtype=dtype)

    def run(backend):
        leaves = [t.detach().clone().requires_grad_() for t in (hqkv, lq, lkv)]
        hifi_out, lofi_out = hilo_attention(*leaves[0].unbind(3), leaves[1], *leaves[2].unbind(3), 2,
                                            backend=backend)
        gen = torch.Generator().manual_seed(5)
        loss = sum((o.float() * torch.randn(o.shape, generator=gen)).sum() for o in (hifi_out, lofi_out))
        return (hifi_out, lofi_out, *torch.autograd.grad(loss, leaves))

    compare(run("triton"), run("reference"), TOL[dtype], names=("hifi", "lofi", "d_hqkv", "d_lq", "d_lkv"))


def test_lofi_triton_empty_batch():
    q, kv = make_lofi(0, 5, 3, 2, 8)
    out = lofi_attention(q, *kv.unbind(2), backend="triton")
    assert out.shape == q.shape


# --------------------------------------------------------------------------------------------------------
# Custom-op plumbing: compile, export, opcheck.


def _hilo_fn(backend):
    def fn(hqkv, lq, lkv):
        hifi_out, lofi_out = hilo_attention(*hqkv.unbind(3), lq, *lkv.unbind(3), 2, backend=backend)
        return torch.cat((hifi_out.flatten(3), lofi_out.flatten(3)), dim=-1)

    return fn


def test_compile_fullgraph_triton_aot_eager():
    dtype = torch.float32
    hqkv, lq, lkv = make_hilo(1, 2, 4, 1, 2, 16, 2, dtype=dtype)
    torch._dynamo.reset()
    compiled = torch.compile(_hilo_fn("triton"), backend="aot_eager", fullgraph=True)

    def run(fn):
        leaves = [t.detach().clone().requires_grad_() for t in (hqkv, lq, lkv)]
        out = fn(*leaves)
        return (out, *torch.autograd.grad(out.float().square().sum(), leaves))

    try:
        compare(run(compiled), run(_hilo_fn("reference")), TOL[dtype], names=("out", "d_hqkv", "d_lq", "d_lkv"))
    finally:
        torch._dynamo.reset()


def test_export_keeps_the_custom_op():
    hqkv, lq, lkv = make_hilo(1, 4, 6, 1, 2, 16, 2)

    class Attn(torch.nn.Module):
        def forward(self, hqkv, lq, lkv):
            return _hilo_fn("triton")(hqkv, lq, lkv)

    program = torch.export.export(Attn(), (hqkv, lq, lkv))
    code = str(program.graph_module.code)
    assert "attnzoo.lofi_attention_fwd" in code and "attnzoo.window_attention_fwd" in code
    assert_close(program.module()(hqkv, lq, lkv), _hilo_fn("reference")(hqkv, lq, lkv), **TOL[torch.float32])


def test_opcheck():
    """Schema, fake (meta) implementations, autograd registration and aliasing of both custom ops."""
    q, kv = make_lofi(1, 21, 6, 2, 8)
    k, v = (t.contiguous() for t in kv.unbind(2))
    scale = 8**-0.5
    torch.library.opcheck(
        torch.ops.attnzoo.lofi_attention_fwd.default,
        (q.clone().requires_grad_(), k.clone().requires_grad_(), v.clone().requires_grad_(), scale),
    )
    out, lse = torch.ops.attnzoo.lofi_attention_fwd(q, k, v, scale)
    torch.library.opcheck(torch.ops.attnzoo.lofi_attention_bwd.default,
                          (torch.randn_like(q), q, k, v, out, lse, scale))


# --------------------------------------------------------------------------------------------------------
# Backend selection and argument errors.


@pytest.fixture
def spy(monkeypatch):
    calls = []
    monkeypatch.setattr(pkg, "lofi_attention_reference", lambda q, *a: calls.append("reference") or q)
    monkeypatch.setattr(triton_impl, "lofi_attention_triton", lambda q, *a: calls.append("triton") or q)
    monkeypatch.delenv(ENV_BACKEND, raising=False)
    return calls


def test_backend_default_keyword_and_env(spy, monkeypatch):
    q, kv = make_lofi(1, 4, 2, 1, 8)
    k, v = kv.unbind(2)
    lofi_attention(q, k, v)  # CPU tensors: reference by default
    lofi_attention(q, k, v, backend="triton")
    monkeypatch.setenv(ENV_BACKEND, "triton")
    lofi_attention(q, k, v)
    lofi_attention(q, k, v, backend="reference")
    assert spy == ["reference", "triton", "triton", "reference"]


def test_unknown_backend_is_an_error(spy):
    q, kv = make_lofi(1, 4, 2, 1, 8)
    with pytest.raises(ValueError, match="'cuda'.*backend="):
        lofi_attention(q, *kv.unbind(2), backend="cuda")
    assert spy == []


def test_public_exports():
    assert ops.hilo_attention is hilo_attention
    assert "hilo_attention" in ops.__all__


def test_triton_rejects_float64():
    q, kv = make_lofi(1, 4, 2, 1, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="backend 'triton' supports .*float64.*backend='reference'"):
        lofi_attention(q, *kv.unbind(2), backend="triton")


def _bad_lofi():
    q = torch.randn(2, 9, 3, 8)
    k = torch.randn(2, 4, 3, 8)
    return {
        "q 5-d": ((q[None], k, k), "q must be \\(B, N, heads, head_dim\\)"),
        "k v shapes": ((q, k, k[:, :3]), "k and v must have one shape"),
        "heads": ((q, k[:, :, :2], k[:, :, :2]), "match q in batch, heads and head_dim"),
        "batch": ((q, k[:1], k[:1]), "match q in batch"),
        "no keys": ((q, k[:, :0], k[:, :0]), "key set is empty"),
        "dtype mix": ((q, k.double(), k), "floating dtype"),
    }


@pytest.mark.parametrize("case", list(_bad_lofi()), ids=str)
def test_lofi_bad_arguments(case):
    args, match = _bad_lofi()[case]
    with pytest.raises(ValueError, match=match):
        lofi_attention(*args)


def _bad_hilo():
    hq = torch.randn(2, 4, 6, 2, 8)
    lq = torch.randn(2, 4, 6, 3, 8)
    lk = torch.randn(2, 2, 3, 3, 8)
    return {
        "partial hifi": ((hq, hq, None, lq, lk, lk, 2), "all of hifi_q, hifi_k, hifi_v or none"),
        "partial lofi": ((hq, hq, hq, lq, None, lk, 2), "all of lofi_q, lofi_k, lofi_v or none"),
        "nothing": ((None,) * 6 + (2,), "neither Hi-Fi nor Lo-Fi"),
        "window": ((hq, hq, hq, lq, lk, lk, 0), "window must be a positive int, got 0"),
        "4-d": ((hq[0], hq[0], hq[0], None, None, None, 2), "\\(B, H, W, heads, head_dim\\)"),
        "hifi shapes": ((hq, hq[:, :3], hq, None, None, None, 2), "hifi_q, hifi_k, hifi_v must have one shape"),
        "lofi heads": ((None, None, None, lq, lk[..., :2, :], lk[..., :2, :], 2), "heads and head_dim"),
        "maps differ": ((hq[:, :3], hq[:, :3], hq[:, :3], lq, lk, lk, 2), "share \\(B, H, W\\) and head_dim"),
    }


@pytest.mark.parametrize("case", list(_bad_hilo()), ids=str)
def test_hilo_bad_arguments(case):
    args, match = _bad_hilo()[case]
    with pytest.raises(ValueError, match=match):
        hilo_attention(*args)


@pytest.mark.parametrize("args, match", [
    ((0, 0.5, 2), "num_heads must be a positive int, got 0"),
    ((4, 1.5, 2), "alpha must be in \\[0, 1\\], got 1.5"),
    ((4, 0.5, 0), "window must be a positive int, got 0"),
])
def test_head_split_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        hilo_head_split(*args)


# --------------------------------------------------------------------------------------------------------
# Compiled kernels at model sizes (GPU only).

# (B, N, M, heads, D): LITv2-S stage 3 at 224^2 (14x14 map, 7x7 pooled, 10 Lo-Fi heads), LITv2-B stage 4 (7x7,
# global, 32 heads), LITv2-S stage 3 at 512^2 segmentation (32x32 map, 16x16 pooled) and at 512x683 (32x42 ->
# 16x21), LITv2-S stage 3 at 1024^2 (64x64, 1024 pooled keys: many key blocks).
GPU_SHAPES = [
    (64, 196, 49, 10, 32),
    (64, 49, 49, 32, 32),
    (8, 1024, 256, 10, 32),
    (8, 1344, 336, 10, 32),
    (2, 4096, 1024, 10, 32),
]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=shape_id)
def test_gpu_model_sizes(shape, dtype):
    q, kv = make_lofi(*shape, dtype=dtype, device="cuda")
    tol = _GPU_FP32_TOL if dtype == torch.float32 else TOL[dtype]
    compare(lofi_with_grads("triton", q, kv), lofi_with_grads("reference", q, kv), tol)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_gpu_compile_inductor_triton(dtype):
    hqkv, lq, lkv = (t.cuda() for t in make_hilo(8, 14, 14, 2, 10, 32, 2, dtype=dtype))
    torch._dynamo.reset()
    compiled = torch.compile(_hilo_fn("triton"), fullgraph=True)
    try:
        assert_close(compiled(hqkv, lq, lkv), _hilo_fn("reference")(hqkv, lq, lkv), **TOL[dtype])
    finally:
        torch._dynamo.reset()


@pytest.mark.gpu
def test_gpu_default_backend_is_triton(spy):
    q, kv = make_lofi(1, 4, 2, 1, 8, device="cuda")
    lofi_attention(q, *kv.unbind(2))
    assert spy == ["triton"]


@pytest.mark.gpu
def test_gpu_matches_official_math_at_model_size():
    """LITv2-S stage 3 at 224^2 on the default (Triton) backend, against the official HiLo formulas in fp64."""
    hqkv, lq, lkv = make_hilo(16, 14, 14, 2, 10, 32, 2)
    want = official_hilo_fp64(*hqkv.unbind(3), lq, *lkv.unbind(3), 2)
    hifi_out, lofi_out = hilo_attention(*hqkv.cuda().unbind(3), lq.cuda(), *lkv.cuda().unbind(3), 2)
    got = torch.cat((hifi_out.flatten(3), lofi_out.flatten(3)), dim=-1).cpu()
    assert_close(got, want.float(), **_GPU_FP32_TOL)
    assert math.isfinite(got.abs().max().item())
