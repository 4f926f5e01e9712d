"""Tests for `ops.window_attention` (Swin / DaViT / HAT window attention with relative bias and mask).

* the reference against an independent naive fp64 formulation (a loop over windows that gathers each
  window's pixels explicitly), with a bias table, a Swin shifted-window mask and maps that are not multiples
  of the window; and against timm's own Swin ``WindowAttention`` and ``SwinTransformerBlock``;
* the Triton backend against the reference: the output and the gradients of q, k, v and the bias table, on
  odd shapes (partial windows, one head, head_dim 8 / 16 / 24 / 32 / 40, non-square windows, windows larger
  than the map, 12x12 and 16x16 windows), strided inputs, fp32 / fp16 / bf16, every kernel path (forced
  small blocks, several window-chunk lengths), with every kernel output NaN-prefilled;
* the custom ops under ``torch.compile(fullgraph=True)``, ``torch.export`` and ``torch.library.opcheck``;
* backend selection and argument errors of the public function.

Without a GPU the kernels run in Triton's CPU interpreter (tests/conftest.py) at small sizes; the ``gpu``
tests run them compiled at model sizes. bf16 runs in the interpreter too: its ``tl.dot`` on bf16 is wrong
(raw bit patterns, triton-lang/triton#11584), which the kernels avoid by upcasting dot operands there
(exactly), so no dtype is GPU-only.

Tolerances, Triton vs reference given the same inputs (the reference computes in fp32 and rounds once to the
input dtype; the kernels round P and dS to the input dtype before their dots, as FlashAttention does). A
tensor passes when ``|actual - expected| <= atol * max|expected| + rtol * |expected|`` elementwise, i.e.
``atol`` is relative to the tensor's largest entry, so one table fits outputs and gradients of any size:

    | dtype | atol   | rtol   | why                                                                       |
    |-------|--------|--------|---------------------------------------------------------------------------|
    | fp32  | 1e-5   | 1e-4   | same fp32 math, other summation order (observed <= 1e-6)                  |
    | fp16  | 2e-3   | 2e-3   | 1 ulp = 2^-11..2^-10 relative; P, dS rounded once more (observed 4.5e-4)  |
    | bf16  | 1.6e-2 | 1.6e-2 | 1 ulp = 2^-8..2^-7 relative (3.9e-3..7.8e-3): 2-4 ulps (observed 7e-3)    |

The bias-table gradient is fp32 (the table is an fp32 parameter, as under AMP) and meets the same rows.
On GPU at model sizes (longer sums, cuBLAS in the reference) fp32 gets atol 1e-4 / rtol 1e-3.
"""
from __future__ import annotations

import importlib
import math
import os

import pytest
import torch
from timm.models.swin_transformer import SwinTransformerBlock, WindowAttention, window_partition, window_reverse

import ops
from ops import window_attention
from ops._backend import ENV_BACKEND, empty, resolve_backend
from ops.window_attention.official import swin_shift_mask
from ops.window_attention.reference import window_attention_reference
from tests.utils import assert_close

# `ops.window_attention` the attribute is the function; the modules are fetched by name.
pkg = importlib.import_module("ops.window_attention")
triton_impl = importlib.import_module("ops.window_attention.triton")

TOL = {
    torch.float32: dict(atol=1e-5, rtol=1e-4),
    torch.float16: dict(atol=2e-3, rtol=2e-3),
    torch.bfloat16: dict(atol=1.6e-2, rtol=1.6e-2),
}
_GPU_FP32_TOL = dict(atol=1e-4, rtol=1e-3)
_FP64_TOL = dict(atol=1e-6, rtol=1e-5)  # the reference (fp32 inside) against fp64 formulations

# (B, H, W, heads, head_dim, window)
SHAPES = [
    (1, 7, 7, 1, 8, (7, 7)),  # one window, one head
    (2, 9, 11, 3, 16, (4, 4)),  # partial windows at the right and the bottom
    (1, 5, 6, 2, 24, (7, 7)),  # window larger than the map
    (2, 8, 12, 2, 32, (4, 6)),  # non-square window, exact tiling
    (1, 10, 13, 3, 40, (3, 5)),  # non-square and partial, head_dim 40 (padded to 64)
    (2, 14, 14, 2, 32, (7, 7)),  # Swin / DaViT window
    (1, 12, 11, 2, 16, (12, 12)),  # 144 tokens: several key blocks, the separate dq kernel
    (1, 15, 15, 1, 32, (16, 16)),  # HAT's 256-token window, larger than the map
]


def shape_id(shape) -> str:
    b, h, w, nh, d, (wh, ww) = shape
    return f"{b}x{h}x{w}x{nh}x{d}-w{wh}x{ww}"


def num_windows(h: int, w: int, window: tuple[int, int]) -> int:
    return math.ceil(h / window[0]) * math.ceil(w / window[1])



def make_inputs(batch, h, w, heads, head_dim, window, dtype=torch.float32, device="cpu", seed=0,
                bias=True, mask=True, std=1.0):
    """qkv (B, H, W, 3, heads, D) -- q, k, v are its non-contiguous unbind(3) views, as a model makes them --,
    an fp32 bias table and a random additive mask (random values catch index mix-ups a 0/-100 mask hides)."""
    gen = torch.Generator().manual_seed(seed)
    qkv = (torch.randn(batch, h, w, 3, heads, head_dim, generator=gen) * std).to(device=device, dtype=dtype)
    table = torch.randn(heads, 2 * window[0] - 1, 2 * window[1] - 1, generator=gen).to(device) if bias else None
    n = window[0] * window[1]
    am = (2 * torch.randn(num_windows(h, w, window), n, n, generator=gen)).to(device) if mask else None
    return qkv, table, am


def run_with_grads(fn, qkv, table=None, d_out=None, seed=1):
    """(out, dq, dk, dv, d_table) of ``fn(q, k, v, table)``, q, k, v = qkv.unbind(3); d_table None without a table."""
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


def check_against_reference(qkv, window, table, mask, tol, scale=None, d_out=None) -> None:
    def fn(backend):
        return lambda q, k, v, t: window_attention(q, k, v, window, bias_table=t, mask=mask, scale=scale,
                                                   backend=backend)

    compare(run_with_grads(fn("triton"), qkv, table, d_out), run_with_grads(fn("reference"), qkv, table, d_out), tol)


def naive_fp64(q, k, v, window, bias_table=None, mask=None, scale=None):
    """Window attention one window at a time in fp64: gather the window's pixels that exist, attend, scatter."""
    q, k, v = (t.double() for t in (q, k, v))
    batch, h, w, heads, head_dim = q.shape
    wh, ww = window
    scale = head_dim**-0.5 if scale is None else scale
    grid_w = math.ceil(w / ww)
    out = torch.zeros_like(q)
    for b in range(batch):
        for wy in range(math.ceil(h / wh)):
            for wx in range(grid_w):
                rows = range(wy * wh, min(h, wy * wh + wh))
                cols = range(wx * ww, min(w, wx * ww + ww))
                ys = torch.tensor([y for y in rows for _ in cols])
                xs = torch.tensor([x for _ in rows for x in cols])
                ly, lx = ys - wy * wh, xs - wx * ww  # position inside the window
                local = ly * ww + lx  # row-major index inside the window (the mask's index)
                qw, kw, vw = q[b, ys, xs].transpose(0, 1), k[b, ys, xs].transpose(0, 1), v[b, ys, xs].transpose(0, 1)
                logits = scale * qw @ kw.transpose(-1, -2)  # (heads, n, n)
                if bias_table is not None:
                    dy = ly[:, None] - ly[None, :] + wh - 1
                    dx = lx[:, None] - lx[None, :] + ww - 1
                    logits = logits + bias_table.double()[:, dy, dx]
                if mask is not None:
                    logits = logits + mask.double()[wy * grid_w + wx][local[:, None], local[None, :]]
                out[b, ys, xs] = (logits.softmax(-1) @ vw).transpose(0, 1)
    return out


# --------------------------------------------------------------------------------------------------------
# The reference is the spec: check it against independent formulations.


REF_CASES = {
    "plain": dict(shape=(2, 8, 8, 2, 8, (4, 4)), bias=False, mask=None),
    "bias": dict(shape=(2, 8, 12, 3, 8, (4, 6)), bias=True, mask=None),
    "partial": dict(shape=(1, 9, 11, 2, 16, (4, 4)), bias=True, mask="random"),
    "larger_than_map": dict(shape=(1, 5, 6, 2, 8, (7, 7)), bias=True, mask="random"),
    "swin_shift": dict(shape=(2, 14, 14, 2, 8, (7, 7)), bias=True, mask="swin"),
    "swin_shift_partial": dict(shape=(1, 10, 13, 3, 8, (4, 4)), bias=True, mask="swin"),
}


@pytest.mark.parametrize("case", list(REF_CASES), ids=str)
def test_reference_matches_naive_fp64(case):
    cfg = REF_CASES[case]
    batch, h, w, heads, head_dim, window = cfg["shape"]
    qkv, table, mask = make_inputs(*cfg["shape"], bias=cfg["bias"], mask=cfg["mask"] == "random")
    if cfg["mask"] == "swin":
        # Swin's shifted windows: the map is rolled by -window/2, windows straddling the wrap are masked.
        shift = (window[0] // 2, window[1] // 2)
        qkv = torch.roll(qkv, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        mask = swin_shift_mask(h, w, window, shift)
    d_out = torch.randn(batch, h, w, heads, head_dim, generator=torch.Generator().manual_seed(2))
    got = run_with_grads(lambda q, k, v, t: window_attention_reference(q, k, v, window, t, mask), qkv, table, d_out)
    want = run_with_grads(lambda q, k, v, t: naive_fp64(q, k, v, window, t, mask), qkv.double(),
                          None if table is None else table.double(), d_out.double())
    got = [None if t is None else t.double() for t in got]
    compare(got, want, _FP64_TOL)


def test_swin_mask_matches_timm():
    """The official shifted-window mask (ops/window_attention/official.py) is Swin's (timm's SwinTransformerBlock
    builds the official one)."""
    for size, window in (((14, 14), 7), ((10, 13), 4)):
        block = SwinTransformerBlock(16, size, num_heads=2, window_size=window, shift_size=window // 2)
        want = block.get_attn_mask()
        got = swin_shift_mask(*size, (window, window), (window // 2, window // 2))
        assert torch.equal(got, want)


def test_reference_matches_timm_window_attention():
    """timm's WindowAttention (the official Swin code) on partitioned windows == qkv -> window_attention -> proj.

    timm stores the table as ((2wh-1)(2ww-1), heads); ours is its transpose reshaped, passed as a strided view.
    """
    torch.manual_seed(0)
    batch, h, w, heads, head_dim, window = 2, 8, 12, 3, 8, (4, 6)
    dim = heads * head_dim
    module = WindowAttention(dim, num_heads=heads, window_size=window).double().eval()
    module.fused_attn = False
    torch.nn.init.normal_(module.relative_position_bias_table)
    x = torch.randn(batch, h, w, dim, dtype=torch.float64)
    mask = swin_shift_mask(h, w, window, (2, 3)).double()
    want = window_reverse(module(window_partition(x, window).flatten(1, 2), mask=mask).view(-1, *window, dim),
                          window, h, w)
    table = module.relative_position_bias_table.t().reshape(heads, 2 * window[0] - 1, 2 * window[1] - 1)
    q, k, v = module.qkv(x).view(batch, h, w, 3, heads, head_dim).unbind(3)
    for backend in ("reference", "triton"):
        out = window_attention(q.float(), k.float(), v.float(), window, bias_table=table.float(), mask=mask.float(),
                               scale=module.scale, backend=backend)
        assert_close(module.proj(out.double().flatten(3)), want, **_FP64_TOL, name=backend)


def test_reference_matches_timm_shifted_swin_block():
    """A whole shifted Swin attention step (roll, partition, masked window attention, merge, roll back)."""
    torch.manual_seed(0)
    size, heads, head_dim, ws = (14, 14), 2, 8, 7
    block = SwinTransformerBlock(heads * head_dim, size, num_heads=heads, window_size=ws, shift_size=3).double().eval()
    block.attn.fused_attn = False
    torch.nn.init.normal_(block.attn.relative_position_bias_table)
    x = torch.randn(2, *size, heads * head_dim, dtype=torch.float64)
    want = block._attn(x)

    attn = block.attn
    shifted = torch.roll(x, shifts=(-3, -3), dims=(1, 2))
    q, k, v = attn.qkv(shifted).view(2, *size, 3, heads, head_dim).unbind(3)
    table = attn.relative_position_bias_table.t().reshape(heads, 2 * ws - 1, 2 * ws - 1)
    for backend in ("reference", "triton"):
        out = window_attention(q.float(), k.float(), v.float(), ws, bias_table=table.float(),
                               mask=block.attn_mask.float(), backend=backend)
        got = torch.roll(attn.proj(out.double().flatten(3)), shifts=(3, 3), dims=(1, 2))
        assert_close(got, want, **_FP64_TOL, name=backend)


# --------------------------------------------------------------------------------------------------------
# Triton (the interpreter here) against the reference.


def test_nan_fill_is_on():
    """The comparisons below only catch unwritten elements if kernel outputs start as NaN."""
    assert os.environ.get("ATTNZOO_NAN_FILL") == "1"
    assert torch.isnan(empty(3, device=torch.device("cpu"), dtype=torch.bfloat16)).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_triton_matches_reference(shape, dtype):
    qkv, table, mask = make_inputs(*shape, dtype=dtype)
    check_against_reference(qkv, shape[-1], table, mask, TOL[dtype])


@pytest.mark.parametrize("bias, mask", [(False, False), (True, False), (False, True)], ids=["none", "bias", "mask"])
@pytest.mark.parametrize("shape", [SHAPES[1], SHAPES[6]], ids=shape_id)
def test_triton_optional_bias_and_mask(shape, bias, mask):
    qkv, table, am = make_inputs(*shape, bias=bias, mask=mask)
    check_against_reference(qkv, shape[-1], table, am, TOL[torch.float32])


# (fwd BLOCK_M, BLOCK_N), (bwd BLOCK_M, BLOCK_N) for a 49-token window: several key blocks in the forward's
# online softmax; in the backward several query blocks (per-tile table atomics), several key blocks (the dq
# kernel) or both.
FORCED_BLOCKS = {
    "fwd16-bwd16x16": ((16, 16), (16, 16)),
    "fwd16x32-bwd64x16": ((16, 32), (64, 16)),
    "fwd32x16-bwd16x64": ((32, 16), (16, 64)),
}


@pytest.mark.parametrize(
    "blocks, dtype",
    [(name, torch.float32) for name in FORCED_BLOCKS] + [("fwd16x32-bwd64x16", torch.bfloat16)],
    ids=lambda x: str(x),
)
def test_triton_forced_small_blocks(monkeypatch, blocks, dtype):
    fwd, bwd = FORCED_BLOCKS[blocks]
    monkeypatch.setattr(triton_impl, "_fwd_blocks", lambda n: fwd)
    monkeypatch.setattr(triton_impl, "_bwd_blocks", lambda n: bwd)
    shape = (1, 9, 12, 2, 24, (7, 7))  # 2 x 2 windows of 49 tokens, three of them partial
    qkv, table, mask = make_inputs(*shape, dtype=dtype)
    check_against_reference(qkv, shape[-1], table, mask, TOL[dtype])


@pytest.mark.parametrize("per_program", [1, 2, 5, 100])
def test_triton_window_chunks(monkeypatch, per_program):
    """The backward's chunks of windows (summed dS, one table scatter per chunk), of any length: 12 windows."""
    monkeypatch.setattr(triton_impl, "_windows_per_program", lambda *args: per_program)
    shape = (3, 8, 9, 2, 16, (4, 5))
    qkv, table, mask = make_inputs(*shape)
    check_against_reference(qkv, shape[-1], table, mask, TOL[torch.float32])


def test_triton_minus_inf_mask(monkeypatch):
    """-inf in the mask, covering a row's whole first key block (forced 16-key blocks): the online softmax must
    not subtract -inf from -inf. Every row keeps finite keys, so the result is finite."""
    shape = (1, 7, 7, 2, 16, (7, 7))
    qkv, table, _ = make_inputs(*shape)
    mask = torch.zeros(1, 49, 49)
    mask[0, :20, :16] = float("-inf")
    mask[0, 30:, 40:] = float("-inf")
    check_against_reference(qkv, shape[-1], table, mask, TOL[torch.float32])
    monkeypatch.setattr(triton_impl, "_fwd_blocks", lambda n: (16, 16))
    monkeypatch.setattr(triton_impl, "_bwd_blocks", lambda n: (64, 16))
    check_against_reference(qkv, shape[-1], table, mask, TOL[torch.float32])


def test_triton_strided_inputs():
    """q, k, v, dO, table and mask in unrelated layouts: a permuted copy, a strided slice, a stride-0 gradient,
    timm's transposed table layout and a mask expanded over windows."""
    batch, h, w, heads, head_dim, window = 2, 9, 10, 3, 16, (4, 4)
    gen = torch.Generator().manual_seed(0)
    bases = (
        torch.randn(batch, heads, h, w, head_dim, generator=gen),
        torch.randn(batch, h, w, heads, 2 * head_dim, generator=gen),
        torch.randn(w, batch, h, heads, head_dim, generator=gen),
        torch.randn((2 * window[0] - 1) * (2 * window[1] - 1), heads, generator=gen),  # timm's table layout
    )
    n = window[0] * window[1]
    mask = torch.randn(1, n, n, generator=gen).expand(num_windows(h, w, window), n, n)
    d_out = torch.randn(1, 1, 1, heads, head_dim, generator=gen).expand(batch, h, w, heads, head_dim)

    def views(qb, kb, vb, tb):
        return (qb.permute(0, 2, 3, 1, 4), kb[..., ::2], vb.permute(1, 2, 0, 3, 4),
                tb.t().reshape(heads, 2 * window[0] - 1, 2 * window[1] - 1))

    assert not any(t.is_contiguous() for t in views(*bases))

    def run(backend):
        leaves = [t.clone().requires_grad_() for t in bases]
        q, k, v, table = views(*leaves)
        out = window_attention(q, k, v, window, bias_table=table, mask=mask, backend=backend)
        return (out, *torch.autograd.grad(out, leaves, d_out))

    compare(run("triton"), run("reference"), TOL[torch.float32], names=("out", "dq", "dk", "dv", "d_table"))


def test_triton_default_and_custom_scale():
    shape = (1, 9, 11, 2, 24, (4, 4))
    qkv, table, mask = make_inputs(*shape)
    check_against_reference(qkv, shape[-1], table, mask, TOL[torch.float32], scale=None)
    check_against_reference(qkv, shape[-1], table, mask, TOL[torch.float32], scale=1.7)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_triton_table_in_input_dtype(dtype):
    """A half-precision table (no AMP) gets its gradient in its own dtype."""
    shape = (2, 8, 8, 2, 16, (4, 4))
    qkv, table, mask = make_inputs(*shape, dtype=dtype)
    check_against_reference(qkv, shape[-1], table.to(dtype), mask.to(dtype), TOL[dtype])


def test_triton_grad_of_some_inputs():
    """Only the table needs a gradient, then only k: the backward op skips the table when it needs none."""
    shape = (1, 9, 11, 2, 16, (4, 4))
    qkv, table, mask = make_inputs(*shape)
    q, k, v = qkv.unbind(3)

    def d_table(backend):
        leaf = table.clone().requires_grad_()
        window_attention(q, k, v, shape[-1], bias_table=leaf, mask=mask, backend=backend).square().sum().backward()
        return leaf.grad

    def d_k(backend):
        leaf = k.clone().requires_grad_()
        window_attention(q, leaf, v, shape[-1], bias_table=table, mask=mask, backend=backend).square().sum().backward()
        return leaf.grad

    assert_close(d_table("triton"), d_table("reference"), **TOL[torch.float32], name="d_table")
    assert_close(d_k("triton"), d_k("reference"), **TOL[torch.float32], name="dk")


def test_triton_empty_batch():
    qkv, table, mask = make_inputs(0, 5, 6, 2, 8, (4, 4))
    out, dq, dk, dv, d_table = run_with_grads(
        lambda q, k, v, t: window_attention(q, k, v, 4, bias_table=t, mask=mask, backend="triton"), qkv, table)
    assert out.shape == (0, 5, 6, 2, 8) and dq.shape == out.shape
    assert torch.equal(d_table, torch.zeros_like(table))


# --------------------------------------------------------------------------------------------------------
# Custom-op plumbing: compile, export, opcheck.


def _model_fn(backend, window, mask):
    def fn(qkv, table):
        q, k, v = qkv.unbind(3)
        return window_attention(q, k, v, window, bias_table=table, mask=mask, backend=backend).flatten(3)

    return fn


def _compiled_vs_eager(backend, compile_backend, shape, dtype) -> None:
    qkv, table, mask = make_inputs(*shape, dtype=dtype)
    window = shape[-1]
    torch._dynamo.reset()
    compiled = torch.compile(_model_fn(backend, window, mask), backend=compile_backend, fullgraph=True)
    got = run_with_grads(lambda q, k, v, t: compiled(torch.stack((q, k, v), 3), t), qkv, table)
    want = run_with_grads(lambda q, k, v, t: _model_fn("reference", window, mask)(torch.stack((q, k, v), 3), t),
                          qkv, table)
    compare(got, want, TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_compile_fullgraph_triton_aot_eager(dtype):
    _compiled_vs_eager("triton", "aot_eager", (2, 9, 11, 2, 16, (4, 4)), dtype)


def test_compile_fullgraph_reference_inductor():
    _compiled_vs_eager("reference", "inductor", (1, 6, 7, 2, 8, (4, 4)), torch.float32)


def test_export_keeps_the_custom_op():
    shape = (2, 9, 11, 2, 8, (4, 4))
    qkv, table, mask = make_inputs(*shape)

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.table = torch.nn.Parameter(table)
            self.register_buffer("mask", mask)

        def forward(self, qkv):
            q, k, v = qkv.unbind(3)
            return window_attention(q, k, v, shape[-1], bias_table=self.table, mask=self.mask, backend="triton")

    program = torch.export.export(Block(), (qkv,))
    assert "attnzoo.window_attention_fwd" in str(program.graph_module.code)
    want = window_attention(*qkv.unbind(3), shape[-1], bias_table=table, mask=mask, backend="reference")
    assert_close(program.module()(qkv), want, **TOL[torch.float32])


def test_opcheck():
    """Schema, fake (meta) implementations, autograd registration and aliasing of both custom ops."""
    shape = (1, 6, 7, 2, 8, (4, 4))
    qkv, table, mask = make_inputs(*shape)
    q, k, v = (t.contiguous() for t in qkv.unbind(3))
    scale = 8**-0.5
    torch.library.opcheck(
        torch.ops.attnzoo.window_attention_fwd.default,
        (q.requires_grad_(), k.requires_grad_(), v.requires_grad_(), 4, 4, table.requires_grad_(), mask, scale),
    )
    q, k, v, table = (t.detach() for t in (q, k, v, table))
    out, lse = torch.ops.attnzoo.window_attention_fwd(q, k, v, 4, 4, table, mask, scale)
    for bias_grad in (True, False):
        torch.library.opcheck(torch.ops.attnzoo.window_attention_bwd.default,
                              (torch.randn_like(q), q, k, v, out, lse, 4, 4, table, mask, scale, bias_grad))
    torch.library.opcheck(torch.ops.attnzoo.window_attention_fwd.default, (q, k, v, 4, 4, None, None, scale))


# --------------------------------------------------------------------------------------------------------
# Backend selection and argument errors.


@pytest.fixture
def spy(monkeypatch):
    """Replace both backends with recorders; returns the list of backends called."""
    calls = []
    monkeypatch.setattr(pkg, "window_attention_reference", lambda q, *a: calls.append("reference") or q)
    monkeypatch.setattr(triton_impl, "window_attention_triton", lambda q, *a: calls.append("triton") or q)
    monkeypatch.delenv(ENV_BACKEND, raising=False)
    return calls


def _small():
    qkv, _, _ = make_inputs(1, 4, 4, 1, 8, (2, 2), bias=False, mask=False)
    return qkv.unbind(3)


def test_backend_default_keyword_and_env(spy, monkeypatch):
    q, k, v = _small()
    window_attention(q, k, v, 2)  # CPU tensors: reference by default
    window_attention(q, k, v, 2, backend="triton")
    monkeypatch.setenv(ENV_BACKEND, "triton")
    window_attention(q, k, v, 2)
    window_attention(q, k, v, 2, backend="reference")  # the keyword wins over the environment
    assert spy == ["reference", "triton", "triton", "reference"]


def test_unknown_backend_is_an_error(spy, monkeypatch):
    q, k, v = _small()
    with pytest.raises(ValueError, match="'cuda'.*backend="):
        window_attention(q, k, v, 2, backend="cuda")
    monkeypatch.setenv(ENV_BACKEND, "tritonn")
    with pytest.raises(ValueError, match=f"'tritonn'.*{ENV_BACKEND}"):
        window_attention(q, k, v, 2)
    assert spy == []


def test_triton_on_cpu_needs_the_interpreter(spy, monkeypatch):
    """No silent fallback: triton on CPU tensors without TRITON_INTERPRET=1 is a RuntimeError saying what to do."""
    q, k, v = _small()
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1.*backend='reference'"):
        resolve_backend("window_attention", "triton", q)
    monkeypatch.setenv(ENV_BACKEND, "triton")
    with pytest.raises(RuntimeError, match=f"window_attention.*{ENV_BACKEND}=.*cpu"):
        window_attention(q, k, v, 2)
    assert resolve_backend("window_attention", "reference", q) == "reference"
    assert spy == []


def test_public_exports():
    assert ops.window_attention is window_attention
    assert "window_attention" in ops.__all__


def test_triton_rejects_float64():
    q, k, v = (t.double() for t in _small())
    with pytest.raises(ValueError, match="backend 'triton' supports .*float64.*backend='reference'"):
        window_attention(q, k, v, 2, backend="triton")


def _bad_calls():
    q = torch.randn(2, 9, 10, 3, 8)
    nw = 3 * 3  # ceil(9 / 4) * ceil(10 / 4)
    return {
        "q 4-d": ((q[0], q[0], q[0], 4), {}, "must be \\(B, H, W, heads, head_dim\\)"),
        "k shape": ((q, q[:, :8], q, 4), {}, "one shape"),
        "dtype mix": ((q, q.double(), q, 4), {}, "floating dtype"),
        "integer": ((q.long(), q.long(), q.long(), 4), {}, "floating dtype"),
        "window 0": ((q, q, q, 0), {}, "window must be"),
        "window negative": ((q, q, q, (4, -2)), {}, "window must be"),
        "window 3-d": ((q, q, q, (4, 4, 4)), {}, "window must be .*\\(4, 4, 4\\)"),
        "table shape": ((q, q, q, 4), dict(bias_table=torch.zeros(3, 7, 6)), "bias_table must be .*\\(3, 7, 7\\)"),
        "table heads": ((q, q, q, (4, 2)), dict(bias_table=torch.zeros(2, 7, 3)), "\\(3, 7, 3\\)"),
        "mask windows": ((q, q, q, 4), dict(mask=torch.zeros(nw - 1, 16, 16)), "mask must be .*\\(9, 16, 16\\)"),
        "mask size": ((q, q, q, (4, 5)), dict(mask=torch.zeros(6, 16, 16)), "\\(6, 20, 20\\)"),
    }


@pytest.mark.parametrize("case", list(_bad_calls()), ids=str)
@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_bad_arguments_are_value_errors(case, backend):
    args, kwargs, match = _bad_calls()[case]
    with pytest.raises(ValueError, match=match):
        window_attention(*args, backend=backend, **kwargs)


# --------------------------------------------------------------------------------------------------------
# Compiled kernels at model sizes (GPU only).


def _gpu_tol(dtype):
    return _GPU_FP32_TOL if dtype == torch.float32 else TOL[dtype]


def _gpu_case(shape, dtype, shifted, compiled):
    batch, h, w, heads, head_dim, window = shape
    qkv, table, _ = make_inputs(*shape, dtype=dtype, device="cuda")
    mask = swin_shift_mask(h, w, window, (window[0] // 2, window[1] // 2)).cuda() if shifted else None
    fn = _model_fn("triton", window, mask)
    if compiled:
        torch._dynamo.reset()
        fn = torch.compile(fn, fullgraph=True)
    got = run_with_grads(lambda q, k, v, t: fn(torch.stack((q, k, v), 3), t), qkv, table)
    want = run_with_grads(lambda q, k, v, t: _model_fn("reference", window, mask)(torch.stack((q, k, v), 3), t),
                          qkv, table)
    compare(got, want, _gpu_tol(dtype))


# (B, H, W, heads, D, window): Swin-T stage 1 at 224^2, Swin-T stage 3 (many programs, 2x2 windows), HAT-S
# (embed 180 / 6 heads = head_dim 30, 16x16 windows) on a 64x64 training patch and on a 100x75 image (partial
# windows), Swin at 512^2 segmentation (128x128 map, partial 7x7 windows).
GPU_SHAPES = [
    (32, 56, 56, 3, 32, (7, 7)),
    (32, 14, 14, 12, 32, (7, 7)),
    (8, 64, 64, 6, 30, (16, 16)),
    (2, 100, 75, 6, 30, (16, 16)),
    (4, 128, 128, 3, 32, (7, 7)),
]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=shape_id)
def test_gpu_model_sizes(shape, dtype):
    _gpu_case(shape, dtype, shifted=True, compiled=False)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", [GPU_SHAPES[0], GPU_SHAPES[2]], ids=shape_id)
def test_gpu_compile_inductor_triton(shape, dtype):
    _gpu_case(shape, dtype, shifted=True, compiled=True)


@pytest.mark.gpu
def test_gpu_default_backend_is_triton(monkeypatch):
    monkeypatch.delenv(ENV_BACKEND, raising=False)
    assert resolve_backend("window_attention", None, torch.empty(1, device="cuda")) == "triton"


@pytest.mark.gpu
@pytest.mark.slow
def test_gpu_int64_offsets():
    """More than 2^31 elements in (B, H, W, 3, heads, D): the last batches' addresses overflow int32 (~13 GB)."""
    batch, h, w, heads, head_dim, window = 600, 112, 112, 3, 32, (7, 7)
    assert batch * h * w * 3 * heads * head_dim > 2**31
    qkv, table, _ = make_inputs(1, h, w, heads, head_dim, window, dtype=torch.bfloat16, device="cuda")
    qkv = qkv.expand(batch, -1, -1, -1, -1, -1).contiguous().requires_grad_()
    table = table.requires_grad_()
    out = window_attention(*qkv.unbind(3), window, bias_table=table, backend="triton")
    d_out = torch.randn_like(out[-1:]).expand_as(out)
    grad, _ = torch.autograd.grad(out, (qkv, table), d_out)
    # Batches are independent and all equal here: the reference on the last one is enough.
    want = run_with_grads(lambda q, k, v, t: window_attention(q, k, v, window, bias_table=t, backend="reference"),
                          qkv[-1:], table.detach(), d_out[-1:])
    compare((out[-1:], *grad[-1:].unbind(3)), want[:4], TOL[torch.bfloat16])
