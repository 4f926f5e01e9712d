"""FLOPs and bytes: closed-form costs of the attention ops, and counted FLOPs / parameters of whole models.

Op costs (the roofline floors of :mod:`zoo.engine.benchmark`)
-------------------------------------------------------------
FLOPs count multiply-adds as 2 and only the matrix products; exponentials, scaling and masking are left out,
as every FLOP counter does. Bytes are the minimum a kernel must move through DRAM: every input read once,
every output written once, nothing else (no score matrix, no logsumexp, no workspace). ``s`` is the element
size of the dtype; ``T = B * H * W * heads * D`` (or ``B * N * G * D``) is the element count of one of q, k, v.

``window_attention`` (``(B, H, W, heads, D)``, ``wh x ww`` windows of ``N = wh * ww`` positions)::

    fwd FLOPs = 4 * B * heads * D * sum_w n_w^2      (q k^T and P v; n_w = valid positions of window w,
                                                      = 4 * B * nW * heads * N^2 * D when the windows tile the map)
    bwd FLOPs = 2.5 * fwd                             (dV = P^T dO, dP = dO V^T, dQ = dS K, dK = dS^T Q, and
                                                      q k^T recomputed: FlashAttention's count)
    fwd bytes = 4 T s          (read q, k, v; write o)  [+ bias table, + mask nW * N^2 * s_mask]
    bwd bytes = 8 T s          (read q, k, v, o, dO; write dq, dk, dv)  [+ bias table and its gradient, + mask]

``channel_attention`` (``(B, N, G, D)``, a ``D x D`` map per batch and group)::

    fwd FLOPs = 4 * B * G * N * D^2                   (k^T v and q P^T)
    bwd FLOPs = 8 * B * G * N * D^2 = 2 * fwd         (dq = dO P, dP = dO^T q, dk = v dS^T, dv = k dS; P is saved,
                                                      D x D per group, so nothing is recomputed)
    fwd bytes = 4 T s          (read q, k, v; write o)
    bwd bytes = 7 T s          (read q, k, v, dO; write dq, dk, dv -- o is not needed)

``bilevel_routing_attention`` (``(B, H, W, heads, D)``, ``S x S`` regions of ``n = rh * rw`` tokens,
``rh, rw = ceil(H / S), ceil(W / S)``; every query attends to the ``topk * n`` tokens of its region's routed
regions; ``Dv`` = v's head size, ``= D`` unless given)::

    fwd FLOPs = 2 * B * S^2 * heads * n * (topk * n) * (D + Dv)
              = 4 * B * S^2 * heads * n * (topk * n) * D          (q k_sel^T and P v_sel, D = Dv)
    bwd FLOPs = 2.5 * fwd                                         (as window attention, FlashAttention's count)
    fwd bytes = 2 T s + 2 T_v s + I   (read q, k, v; write o; read the routing index, I = B * S^2 * topk * 8)
    bwd bytes = 3 T s + 5 T_v s + I   (read q, k, v, o, dO; write dq, dk, dv; read the index)

    (T = B * H * W * heads * D, T_v the same with Dv.) Non-divisible maps are counted on the padded region grid
    (what the kernels iterate over). Routing is NOT included: region means (~2T adds) and logits
    ``2 * B * S^4 * heads * D`` FLOPs, top-k; it runs as plain aten ops before the attention op (``route()``), so
    a FLOP counter counts it by itself. It is small next to the attention -- ~1% at BiFormer's stage 1 (S 7,
    topk 1, n 64), but ~10% at stage 3 (S 7, topk 16, n 4): S^2 / (2 * topk * n^2). The floor assumes the routing's
    extra reads of q and k (2 T s) are fused away.

The costs of the ops benchmarked through :mod:`zoo.engine.benchops` (HiLo, window / grid, neighborhood, agent,
RALA, overlapping-window attention) are written, with their formulas, in each op's module there.

Model counts
------------
:func:`model_stats` builds a model through ``timm.create_model`` on the meta device (no memory, no time even
for billion-parameter models) and counts parameters and the FLOPs of one forward with
``torch.utils.flop_counter.FlopCounterMode``. The counter sees aten ops only: a custom op is a black box to
it. Attention therefore runs on the ``reference`` backend while counting (plain PyTorch, whose ``bmm`` /
``einsum`` the counter sees), the attnzoo custom ops that exist get the formulas above as custom mappings,
and an attnzoo op reached without a formula is an error rather than zero FLOPs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from ops import use_backend

__all__ = [
    "OpCost",
    "bilevel_routing_attention_cost",
    "window_attention_cost",
    "channel_attention_cost",
    "count_flops",
    "model_stats",
]

_OP_NAMESPACE = "attnzoo"


@dataclass(frozen=True)
class OpCost:
    """FLOPs and minimal DRAM bytes of one call of an op, forward and backward."""

    flops_fwd: int
    flops_bwd: int
    bytes_fwd: int
    bytes_bwd: int

    @property
    def flops_fwdbwd(self) -> int:
        return self.flops_fwd + self.flops_bwd

    @property
    def bytes_fwdbwd(self) -> int:
        return self.bytes_fwd + self.bytes_bwd


def _window_sizes(length: int, window: int) -> list[int]:
    """Valid extents of the windows along one axis (the last one partial when `window` does not divide)."""
    full, rest = divmod(length, window)
    return [window] * full + ([rest] if rest else [])


def window_attention_cost(
    batch: int,
    height: int,
    width: int,
    heads: int,
    head_dim: int,
    window: int | tuple[int, int],
    *,
    elem_size: int,
    bias: bool = False,
    mask: bool = False,
    mask_elem_size: int | None = None,
) -> OpCost:
    """Cost of ``ops.window_attention`` on ``(batch, height, width, heads, head_dim)`` (formulas: module docstring)."""
    wh, ww = (window, window) if isinstance(window, int) else window
    # sum over windows of n_w^2, with n_w = h_i * w_j: the sum factorises over the two axes
    sum_n2 = sum(h * h for h in _window_sizes(height, wh)) * sum(w * w for w in _window_sizes(width, ww))
    flops_fwd = 4 * batch * heads * head_dim * sum_n2
    tensor = batch * height * width * heads * head_dim * elem_size
    extra_fwd = extra_bwd = 0
    if bias:
        table = heads * (2 * wh - 1) * (2 * ww - 1) * elem_size
        extra_fwd += table
        extra_bwd += 2 * table  # read again, gradient written
    if mask:
        n_windows = -(-height // wh) * -(-width // ww)
        m = n_windows * (wh * ww) ** 2 * (mask_elem_size or elem_size)
        extra_fwd += m
        extra_bwd += m
    return OpCost(
        flops_fwd=flops_fwd,
        flops_bwd=flops_fwd * 5 // 2,
        bytes_fwd=4 * tensor + extra_fwd,
        bytes_bwd=8 * tensor + extra_bwd,
    )


def channel_attention_cost(batch: int, tokens: int, groups: int, head_dim: int, *, elem_size: int) -> OpCost:
    """Cost of ``ops.channel_attention`` on ``(batch, tokens, groups, head_dim)`` (formulas: module docstring)."""
    flops_fwd = 4 * batch * groups * tokens * head_dim * head_dim
    tensor = batch * tokens * groups * head_dim * elem_size
    return OpCost(flops_fwd=flops_fwd, flops_bwd=2 * flops_fwd, bytes_fwd=4 * tensor, bytes_bwd=7 * tensor)


def bilevel_routing_attention_cost(
    batch: int,
    height: int,
    width: int,
    heads: int,
    head_dim: int,
    n_win: int | tuple[int, int],
    topk: int,
    *,
    elem_size: int,
    v_dim: int | None = None,
    index_elem_size: int = 8,
) -> OpCost:
    """Cost of ``ops.bilevel_routing_attention`` (formulas: module docstring; routing not included)."""
    sh, sw = (n_win, n_win) if isinstance(n_win, int) else n_win
    dv = head_dim if v_dim is None else v_dim
    n = -(-height // sh) * -(-width // sw)
    flops_fwd = 2 * batch * sh * sw * heads * n * (topk * n) * (head_dim + dv)
    tokens = batch * height * width * heads
    t, t_v = tokens * head_dim * elem_size, tokens * dv * elem_size
    index = batch * sh * sw * topk * index_elem_size
    return OpCost(
        flops_fwd=flops_fwd,
        flops_bwd=flops_fwd * 5 // 2,
        bytes_fwd=2 * t + 2 * t_v + index,
        bytes_bwd=3 * t + 5 * t_v + index,
    )


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
