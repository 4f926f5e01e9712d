"""FLOPs and parameters of whole models, counted (the model table's numbers).

:func:`model_stats` builds a model through ``timm.create_model`` on the meta device (no memory, no time even
for billion-parameter models) and counts parameters and the FLOPs of one forward with
``torch.utils.flop_counter.FlopCounterMode``. The counter sees aten ops only: a custom op is a black box to
it. Attention therefore runs on the ``reference`` backend while counting (plain PyTorch, whose ``bmm`` /
``einsum`` the counter sees), the attnzoo custom ops that exist get their closed-form costs (each op's
``ops/<op>/official.py``) as custom mappings, and an attnzoo op reached without a formula is an error rather than
zero FLOPs.
"""
from __future__ import annotations

from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from ops import use_backend
from ops.bilevel_routing_attention.official import bilevel_routing_attention_cost
from ops.channel_attention.official import channel_attention_cost
from ops.window_attention.official import window_attention_cost

__all__ = ["count_flops", "model_stats"]

_OP_NAMESPACE = "attnzoo"


# FlopCounterMode formulas for the attnzoo custom ops (ops/<op>/triton.py), keyed by op name. They receive the op's
# arguments in schema order, tensors replaced by their shapes, and `out_shape`. The first argument has q's shape (q,
# or dO in a backward op); window ops take the window as the first two int arguments (wh, ww).
def _window_from_args(args: tuple) -> tuple[int, int]:
    ints = [a for a in args if isinstance(a, int) and not isinstance(a, bool)]
    if len(ints) < 2:
        raise ValueError(f"window_attention FLOP formula: no (wh, ww) among the op's arguments {args!r}")
    return ints[0], ints[1]


def _window_attention_flops(backward: bool):
    def formula(q_shape, *args: Any, out_shape=None, **kwargs: Any) -> int:
        b, h, w, nh, d = q_shape
        cost = window_attention_cost(b, h, w, nh, d, _window_from_args(args), elem_size=1)
        return cost.flops_bwd if backward else cost.flops_fwd

    return formula


def _channel_attention_flops(backward: bool):
    def formula(q_shape, *args: Any, out_shape=None, **kwargs: Any) -> int:
        b, n, g, d = q_shape
        cost = channel_attention_cost(b, n, g, d, elem_size=1)
        return cost.flops_bwd if backward else cost.flops_fwd

    return formula


def _bilevel_routing_attention_flops(backward: bool):
    # fwd (q, k, v, idx, sh, sw, scale); bwd (dO, q, k, v, out, lse, idx, sh, sw, scale): idx is (B, S^2, topk).
    def formula(first_shape, *args: Any, out_shape=None, **kwargs: Any) -> int:
        q_shape, v_shape = (args[0], args[2]) if backward else (first_shape, args[1])
        idx_shape = args[5] if backward else args[2]
        sh, sw = (args[6], args[7]) if backward else (args[3], args[4])
        b, h, w, nh, d = q_shape
        cost = bilevel_routing_attention_cost(b, h, w, nh, d, (sh, sw), idx_shape[-1], elem_size=1,
                                              v_dim=v_shape[-1])
        return cost.flops_bwd if backward else cost.flops_fwd

    return formula


_OP_FORMULAS = {
    "bilevel_routing_attention_fwd": _bilevel_routing_attention_flops(backward=False),
    "bilevel_routing_attention_bwd": _bilevel_routing_attention_flops(backward=True),
    "channel_attention_fwd": _channel_attention_flops(backward=False),
    "channel_attention_bwd": _channel_attention_flops(backward=True),
    "window_attention_fwd": _window_attention_flops(backward=False),
    "window_attention_bwd": _window_attention_flops(backward=True),
}


def _custom_mapping() -> dict[Any, Any]:
    """Formulas for the attnzoo ops registered so far (they register when their backend module is imported)."""
    namespace = getattr(torch.ops, _OP_NAMESPACE)
    mapping = {}
    for name, formula in _OP_FORMULAS.items():
        if hasattr(namespace, name):  # hasattr on an op namespace looks the op up without creating it
            mapping[getattr(namespace, name)] = formula
    return mapping


class _UncountedOps(TorchDispatchMode):
    """Records the attnzoo ops that run without a FLOP formula (FlopCounterMode would count them as 0)."""

    def __init__(self, known: set[str]):
        super().__init__()
        self.known = known
        self.missed: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == _OP_NAMESPACE and func._overloadpacket.__name__ not in self.known:
            self.missed.add(str(func))
        return func(*args, **(kwargs or {}))


def count_flops(fn, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
    """FLOPs of ``fn(*args, **kwargs)`` with attention on the reference backend; (total, per aten/custom op).

    Raises ``RuntimeError`` when an attnzoo custom op ran that has no formula here (it would count as 0).
    """
    mapping = _custom_mapping()
    recorder = _UncountedOps({packet.__name__ for packet in mapping})
    with use_backend("reference"), FlopCounterMode(display=False, custom_mapping=mapping) as counter, recorder:
        fn(*args, **kwargs)
    if recorder.missed:
        raise RuntimeError(
            f"count_flops: attnzoo ops {sorted(recorder.missed)} ran without a FLOP formula and would count as 0; "
            f"add one to zoo.engine.flops._OP_FORMULAS"
        )
    per_op = {str(k): v for k, v in counter.get_flop_counts().get("Global", {}).items()}
    return counter.get_total_flops(), per_op


def model_stats(name: str, input_size: tuple[int, int, int] | None = None, **model_kwargs: Any) -> dict[str, Any]:
    """Parameters and forward FLOPs (batch 1) of a timm-registered model, built and run on the meta device.

    Returns ``dict(params, flops, macs, input_size, per_op)``; ``input_size`` defaults to the model's
    ``pretrained_cfg['input_size']``. ``import zoo`` first for zoo models.
    """
    import timm

    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False, **model_kwargs)
    model.eval()
    input_size = tuple(input_size or model.pretrained_cfg["input_size"])
    params = sum(p.numel() for p in model.parameters())
    x = torch.empty(1, *input_size, device="meta")
    with torch.no_grad():
        flops, per_op = count_flops(model, x)
    return dict(params=params, flops=flops, macs=flops / 2, input_size=input_size, per_op=per_op)
