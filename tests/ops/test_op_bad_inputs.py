"""The input contract every op shares (ops/_backend.py: resolve_backend): one device for all tensor arguments,
fp64 on the reference backend only, int32-indexable sizes on Triton. Each op's own layout checks are tested in its
test module; here every op meets the shared ones, asserting the exact error type and that the message names the
offending value."""
from __future__ import annotations

import pytest
import torch

import ops

B, H, W, NH, D = 1, 8, 8, 2, 8


def _spatial(dtype=torch.float32, device="cpu"):
    return [torch.randn(B, H, W, NH, D, dtype=dtype, device=device) for _ in range(3)]


def _tokens(dtype=torch.float32, device="cpu"):
    return [torch.randn(B, H * W, NH, D, dtype=dtype, device=device) for _ in range(3)]


# every public op, called on q, k, v (+ what it needs); `make` builds (q, k, v) as spatial or token tensors
OPS = {
    "window_attention": (_spatial, lambda q, k, v, **kw: ops.window_attention(q, k, v, 4, **kw)),
    "window_grid_attention": (_spatial, lambda q, k, v, **kw: ops.window_grid_attention(q, k, v, 4, **kw)),
    "overlapping_window_attention": (
        _spatial, lambda q, k, v, **kw: ops.overlapping_window_attention(q, k, v, 4, 6, **kw)),
    "neighborhood_attention_2d": (_spatial, lambda q, k, v, **kw: ops.neighborhood_attention_2d(q, k, v, 3, 1, **kw)),
    "bilevel_routing_attention": (_spatial, lambda q, k, v, **kw: ops.bilevel_routing_attention(q, k, v, 2, 2, **kw)),
    "hilo_attention": (_spatial, lambda q, k, v, **kw: ops.hilo_attention(q, k, v, None, None, None, 2, **kw)[0]),
    "channel_attention": (_tokens, lambda q, k, v, **kw: ops.channel_attention(q, k, v, **kw)),
    "rala": (_tokens, lambda q, k, v, **kw: ops.rala(q, k, v, **kw)),
    "agent_attention": (_tokens, lambda q, k, v, **kw: ops.agent_attention(q, k, v, q[:, :4].clone(), **kw)),
}


@pytest.mark.parametrize("name", OPS)
def test_tensors_on_two_devices_are_refused(name):
    make, call = OPS[name]
    q, k, v = make()
    with pytest.raises(ValueError, match=r"all tensor arguments must be on one device, got cpu, meta"):
        call(q, k.to("meta"), v)


@pytest.mark.parametrize("name", OPS)
def test_fp64_runs_on_the_reference_and_is_refused_by_triton(name):
    make, call = OPS[name]
    q, k, v = make(torch.float64)
    want = call(q, k, v, backend="reference")
    assert want.dtype == torch.float64 and torch.isfinite(want).all()
    assert torch.equal(call(q, k, v), want)  # the default backend takes the reference path for fp64
    with pytest.raises(ValueError, match=r"backend 'triton' supports .* got torch.float64; use backend='reference'"):
        call(q, k, v, backend="triton")


@pytest.mark.parametrize("dtype", [torch.int32, torch.bool])
def test_integer_inputs_are_refused(dtype):
    q, k, v = (t.to(dtype) for t in _spatial())
    with pytest.raises(ValueError, match=rf"must share a floating dtype, got {dtype}"):
        ops.window_attention(q, k, v, 4)


def test_triton_refuses_sizes_past_int32_offsets():
    # meta tensors: the check fires before any memory or kernel is touched
    q = torch.empty(2, 2**12, 2**12, 2, 64, device="meta")
    with pytest.raises(ValueError, match=r"32-bit offsets; a tensor of shape \(2, 4096, 4096, 2, 64\) has 4294967296"):
        ops.window_attention(q, q, q, 8, backend="triton")


def test_bad_backend_name_is_named():
    q, k, v = _spatial()
    with pytest.raises(ValueError, match=r"unknown backend 'gpu'"):
        ops.window_attention(q, k, v, 4, backend="gpu")
