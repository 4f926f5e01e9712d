"""Custom-op registration every op's Triton backend (``ops/<op>/triton.py``) shares.

:func:`register_fwd_bwd` turns an op's forward and backward functions into the two ``torch.library`` custom ops
``attnzoo::<op>_fwd`` and ``attnzoo::<op>_bwd``, each with its fake (meta) implementation, so that
``torch.compile(fullgraph=True)`` and ``torch.export`` trace through them without running a kernel, and makes the
forward differentiable through the backward op. Registration at import time, once per op.

The conventions every op follows:

* The forward returns ``out`` or ``(out, *state)``. The state (log-sum-exps, softmax statistics, ...) exists for
  the backward only: it is saved for it and gets no gradient.
* The backward returns the gradients of the forward's tensor inputs (``None`` counts as a tensor input: an absent
  optional tensor), in their order. Inputs past the last gradient it returns (masks, routing indices) get none;
  so does every input autograd does not ask for.
* An op's ``backward_args(d_out, inputs, outputs, needs_grad)`` builds the backward's arguments from the gradient
  of ``out``, the forward's inputs and outputs, and ``needs_grad[i]``: whether input ``i`` wants a gradient (the
  backward skips gradients of optional inputs nobody asked for).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["NAMESPACE", "optional_grad_fake", "register_fwd_bwd"]

NAMESPACE = "attnzoo"


def _is_tensor_input(x: Any) -> bool:
    # None is an absent Optional[Tensor]: the custom ops take no other argument that can be None.
    return x is None or isinstance(x, torch.Tensor)


def optional_grad_fake(q: torch.Tensor, t: torch.Tensor | None, wanted: bool) -> torch.Tensor:
    """Fake of the gradient a backward op returns for an optional input ``t`` (a bias table): like ``t`` when it
    exists and is wanted, else the empty fp32 ``(0,)`` placeholder (a custom op cannot return ``None``)."""
    if wanted and t is not None:
        return t.new_empty(t.shape)
    return q.new_empty((0,), dtype=torch.float32)


def register_fwd_bwd(
    name: str,
    forward: Callable,
    forward_fake: Callable,
    backward: Callable,
    backward_fake: Callable,
    backward_args: Callable,
    *,
    save_out: bool = True,
) -> tuple[Any, Any]:
    """Register ``attnzoo::<name>_fwd`` and ``attnzoo::<name>_bwd`` with their fakes and the forward's autograd.

    ``forward`` and ``backward`` must carry type annotations: ``torch.library`` reads the ops' schemas from them.
    ``save_out=False`` when the backward does not read ``out`` (it reaches ``backward_args`` as ``None``): saving
    it would keep the output alive after its consumers are done with it.

    Returns the two custom ops ``(fwd, bwd)``.
    """
    fwd = torch.library.custom_op(f"{NAMESPACE}::{name}_fwd", forward, mutates_args=())
    bwd = torch.library.custom_op(f"{NAMESPACE}::{name}_bwd", backward, mutates_args=())
    fwd.register_fake(forward_fake)
    bwd.register_fake(backward_fake)

    def setup_context(ctx, inputs, output):
        outputs = output if isinstance(output, tuple) else (output,)
        ctx.mark_non_differentiable(*outputs[1:])
        ctx.tensor_slots = [i for i, x in enumerate(inputs) if _is_tensor_input(x)]
        # Non-tensor arguments (window sizes, scale, flags) stay on ctx; the tensors go through save_for_backward.
        ctx.constant_inputs = [None if _is_tensor_input(x) else x for x in inputs]
        ctx.save_for_backward(*(inputs[i] for i in ctx.tensor_slots), outputs[0] if save_out else None, *outputs[1:])

    def backward_fn(ctx, d_out, *_d_state):
        saved = ctx.saved_tensors
        inputs = list(ctx.constant_inputs)
        for i, t in zip(ctx.tensor_slots, saved):
            inputs[i] = t
        outputs = saved[len(ctx.tensor_slots):]
        needs_grad = ctx.needs_input_grad
        grads = iter(bwd(*backward_args(d_out, inputs, outputs, needs_grad)))
        result = [None] * len(inputs)
        for i in ctx.tensor_slots:
            grad = next(grads, None)
            result[i] = grad if needs_grad[i] else None
        return tuple(result)

    fwd.register_autograd(backward_fn, setup_context=setup_context)
    return fwd, bwd
