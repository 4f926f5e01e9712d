"""The pieces every op shares: argument checks (`ops._checks`) and custom-op registration (`ops._custom_op`)."""
from __future__ import annotations

import re
from typing import Optional

import pytest
import torch

from ops._checks import (
    SPATIAL,
    TOKENS,
    check_floating,
    check_positive_int,
    check_qkv,
    check_shape,
    check_triton_dtype,
    pair,
)
from ops._custom_op import optional_grad_fake, register_fwd_bwd

# --------------------------------------------------------------------------------------------------------
# Checks.


@pytest.mark.parametrize("value, want", [(3, (3, 3)), ((2, 5), (2, 5)), ([4, 1], (4, 1))])
def test_pair_accepts_an_int_or_two(value, want):
    assert pair("op", "window", value) == want


@pytest.mark.parametrize("value", [0, -2, (4, 0), (4, 4, 4), 2.0, (2, 2.0), True, (True, 2), "2", None])
def test_pair_names_the_op_the_argument_and_the_value(value):
    want = rf"^my_op: window must be a positive int or \(int, int\), got {re.escape(repr(value))}$"
    with pytest.raises(ValueError, match=want):
        pair("my_op", "window", value)


@pytest.mark.parametrize("value", [0, -1, 1.0, True, None])
def test_check_positive_int(value):
    check_positive_int("op", "topk", 3)
    with pytest.raises(ValueError, match=f"^op: topk must be a positive int, got {re.escape(repr(value))}$"):
        check_positive_int("op", "topk", value)


def test_check_qkv_accepts_one_shape_and_dtype():
    q = torch.randn(2, 5, 6, 3, 8)
    check_qkv("op", q, q.clone(), q.clone(), SPATIAL)
    check_qkv("op", q[:, 0], q[:, 0], q[:, 0], TOKENS)
    check_qkv("op", q, q, torch.randn(2, 5, 6, 3, 4), SPATIAL, v_dim="v_dim")


@pytest.mark.parametrize("k, v, v_dim, match", [
    ("q4", None, None, r"op: q must be \(B, H, W, heads, head_dim\), got shape \(5, 6, 3, 8\)"),
    ((2, 5, 5, 3, 8), None, None, r"op: q, k, v must have one shape, got \(2, 5, 6, 3, 8\), \(2, 5, 5, 3, 8\)"),
    (None, (2, 5, 6, 3, 4), None, "op: q, k, v must have one shape"),
    ((2, 5, 5, 3, 8), None, "dv", r"op: k must have q's shape \(2, 5, 6, 3, 8\), got \(2, 5, 5, 3, 8\)"),
    (None, (2, 5, 6, 2, 4), "dv",
     r"op: v must be \(B, H, W, heads, dv\) with q's \(B, H, W, heads\) = \(2, 5, 6, 3\), got \(2, 5, 6, 2, 4\)"),
])
def test_check_qkv_names_the_bad_shape(k, v, v_dim, match):
    q = torch.randn(2, 5, 6, 3, 8)
    if k == "q4":
        q, k = q[0], None
    k = q if k is None else torch.randn(k)
    v = q if v is None else torch.randn(v)
    with pytest.raises(ValueError, match=match):
        check_qkv("op", q, k, v, SPATIAL, v_dim=v_dim)


def test_check_qkv_names_the_dtypes():
    q = torch.randn(2, 4, 3, 8)
    with pytest.raises(ValueError, match="op: q, k, v must share a floating dtype, got torch.float32, torch.float64"):
        check_qkv("op", q, q.double(), q, TOKENS)
    with pytest.raises(ValueError, match="floating dtype, got torch.int64, torch.int64, torch.int64"):
        check_qkv("op", q.long(), q.long(), q.long(), TOKENS)
    with pytest.raises(ValueError, match="op: q, agents must share"):
        check_floating("op", "q, agents", q, q.half())


def test_check_shape():
    check_shape("op", "bias_table", None, (3, 7, 7))  # absent optional tensors pass
    check_shape("op", "bias_table", torch.zeros(3, 7, 7), (3, 7, 7))
    with pytest.raises(ValueError, match=r"op: bias_table must be \(heads, 2\*wh-1\) = \(3, 7\), got \(3, 5\)"):
        check_shape("op", "bias_table", torch.zeros(3, 5), (3, 7), "(heads, 2*wh-1)")
    with pytest.raises(ValueError, match=r"op: query_bias must be \(3, 7\), got \(7, 3\)"):
        check_shape("op", "query_bias", torch.zeros(7, 3), (3, 7))


def test_check_triton_dtype():
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        check_triton_dtype("op", torch.zeros(1, dtype=dtype))
    with pytest.raises(ValueError, match="op: backend 'triton' supports .* got torch.float64; use backend='reference'"):
        check_triton_dtype("op", torch.zeros(1, dtype=torch.float64))


# --------------------------------------------------------------------------------------------------------
# Registration: a toy op, out = factor * x * w (w optional), with the state (factor * x) saved for the backward
# and a mask input that gets no gradient, as the attention ops' masks and routing indices.

_SEEN = []  # what backward_args received: (out, needs_grad)


def _forward(
    x: torch.Tensor, w: Optional[torch.Tensor], mask: Optional[torch.Tensor], factor: float
) -> tuple[torch.Tensor, torch.Tensor]:
    out = x * factor if w is None else x * factor * w
    return out, x.float() * factor


def _forward_fake(x, w, mask, factor):
    return x.new_empty(x.shape), x.new_empty(x.shape, dtype=torch.float32)


def _backward(
    do: torch.Tensor, x: torch.Tensor, w: Optional[torch.Tensor], state: torch.Tensor, factor: float, w_grad: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    dx = do * factor if w is None else do * factor * w
    dw = (do * state.to(do.dtype)) if w_grad and w is not None else x.new_empty((0,), dtype=torch.float32)
    return dx, dw


def _backward_fake(do, x, w, state, factor, w_grad):
    return x.new_empty(x.shape), optional_grad_fake(x, w, w_grad)


def _backward_args(d_out, inputs, outputs, needs_grad):
    x, w, mask, factor = inputs
    out, state = outputs
    _SEEN.append((out, tuple(needs_grad)))
    return d_out, x, w, state, factor, needs_grad[1]


toy_fwd, toy_bwd = register_fwd_bwd(
    "_test_common_scale", _forward, _forward_fake, _backward, _backward_fake, _backward_args
)
toy_fwd_unsaved, _ = register_fwd_bwd(
    "_test_common_scale_unsaved", _forward, _forward_fake, _backward, _backward_fake, _backward_args, save_out=False
)


def _toy(x, w=None, mask=None, factor=1.5, op=None):
    return (op or toy_fwd)(x, w, mask, factor)[0]


def test_registers_named_custom_ops():
    assert torch.ops.attnzoo._test_common_scale_fwd.default is not None
    assert torch.ops.attnzoo._test_common_scale_bwd.default is not None
    assert str(torch.ops.attnzoo._test_common_scale_fwd.default._schema).startswith(
        "attnzoo::_test_common_scale_fwd(Tensor x, Tensor? w, Tensor? mask, float factor)")


def test_gradients_of_the_tensor_inputs_in_order():
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda x, w: _toy(x, w), (x, w))
    torch.autograd.gradcheck(lambda x: _toy(x), (x,))


def test_no_gradient_where_none_is_asked_for():
    x = torch.randn(3, 4, requires_grad=True)
    w = torch.randn(3, 4)
    mask = torch.randn(3, 4, requires_grad=True)  # past the backward's last gradient: gets none
    _SEEN.clear()
    _toy(x, w, mask).sum().backward()
    assert torch.equal(x.grad, 1.5 * w)
    assert w.grad is None and mask.grad is None
    out, needs_grad = _SEEN[-1]
    assert needs_grad == (True, False, True, False)
    assert out is not None  # save_out=True: the backward may read out


def test_save_out_false_hands_the_backward_no_out():
    x = torch.randn(3, 4, requires_grad=True)
    _SEEN.clear()
    _toy(x, op=toy_fwd_unsaved).sum().backward()
    assert _SEEN[-1][0] is None
    assert torch.equal(x.grad, torch.full_like(x, 1.5))


def test_state_outputs_get_no_gradient():
    x = torch.randn(3, 4, requires_grad=True)
    out, state = toy_fwd(x, None, None, 2.0)
    assert out.requires_grad and not state.requires_grad


def test_opcheck():
    x, w = torch.randn(3, 4, requires_grad=True), torch.randn(3, 4, requires_grad=True)
    torch.library.opcheck(toy_fwd, (x, w, None, 1.5))
    torch.library.opcheck(toy_fwd, (x, None, torch.randn(3, 4), 1.5))
    torch.library.opcheck(toy_bwd, (torch.randn(3, 4), x.detach(), w.detach(), torch.randn(3, 4), 1.5, True))


def test_compile_fullgraph_matches_eager():
    x = torch.randn(3, 4, requires_grad=True)
    w = torch.randn(3, 4, requires_grad=True)
    eager = torch.autograd.grad(_toy(x, w).square().sum(), (x, w))
    compiled = torch.compile(lambda x, w: _toy(x, w).square().sum(), fullgraph=True, backend="aot_eager")
    got = torch.autograd.grad(compiled(x, w), (x, w))
    for a, b in zip(got, eager):
        torch.testing.assert_close(a, b)
