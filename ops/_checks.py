"""Argument checks every op's public function (``ops/<op>/__init__.py``) and Triton backend share.

One copy of each check, so that every op words its errors alike: the op's name first, then the bad value and
what was expected (``window_attention: window must be a positive int or (int, int), got (4, 0)``). Layouts are
tuples of dimension names, e.g. :data:`SPATIAL`; an error prints them as ``(B, H, W, heads, head_dim)``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = [
    "SPATIAL", "TOKENS", "TRITON_DTYPES", "check_floating", "check_positive_int", "check_qkv", "check_rank",
    "check_same_device", "check_same_shape", "check_shape", "check_triton_dtype", "pair",
]

# The two layouts of ops/__init__.py: spatial ops, and ops global over the tokens.
SPATIAL = ("B", "H", "W", "heads", "head_dim")
TOKENS = ("B", "N", "heads", "head_dim")
# The Triton kernels' fp32 accumulators and dot precisions are written for these (fp64 would need its own).
TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _is_positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _layout(names: Sequence[str]) -> str:
    return f"({', '.join(names)})"


def pair(op: str, name: str, value: int | Sequence[int]) -> tuple[int, int]:
    """``value`` as ``(height, width)``: a positive int stands for both sides."""
    sides = (value, value) if isinstance(value, int) else tuple(value) if isinstance(value, (tuple, list)) else ()
    if len(sides) != 2 or not all(_is_positive_int(s) for s in sides):
        raise ValueError(f"{op}: {name} must be a positive int or (int, int), got {value!r}")
    return sides


def check_positive_int(op: str, name: str, value: int) -> None:
    if not _is_positive_int(value):
        raise ValueError(f"{op}: {name} must be a positive int, got {value!r}")


def check_rank(op: str, name: str, t: torch.Tensor, layout: Sequence[str]) -> None:
    """``t`` has one dimension per name of ``layout``."""
    if t.dim() != len(layout):
        raise ValueError(f"{op}: {name} must be {_layout(layout)}, got shape {tuple(t.shape)}")


def check_same_shape(op: str, names: str, *tensors: torch.Tensor) -> None:
    shapes = [tuple(t.shape) for t in tensors]
    if len(set(shapes)) != 1:
        raise ValueError(f"{op}: {names} must have one shape, got {', '.join(map(str, shapes))}")


def check_same_device(op: str, tensors: Sequence[torch.Tensor]) -> None:
    """All of an op's tensor arguments live on one device (kernels read them through one device's pointers)."""
    devices = {str(t.device) for t in tensors}
    if len(devices) > 1:
        raise ValueError(f"{op}: all tensor arguments must be on one device, got {', '.join(sorted(devices))}")


def check_floating(op: str, names: str, *tensors: torch.Tensor) -> None:
    """The tensors share one floating-point dtype (the op computes in it and returns it)."""
    if len({t.dtype for t in tensors}) != 1 or not tensors[0].is_floating_point():
        raise ValueError(f"{op}: {names} must share a floating dtype, got {', '.join(str(t.dtype) for t in tensors)}")


def check_qkv(
    op: str,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layout: Sequence[str],
    *,
    v_dim: str | None = None,
) -> None:
    """q, k, v in ``layout`` with one shape and one floating dtype.

    ``v_dim``: the name of v's last dimension where it may differ from q's (values wider or narrower than
    queries / keys); the other dimensions must still be q's.
    """
    check_rank(op, "q", q, layout)
    if v_dim is None:
        check_same_shape(op, "q, k, v", q, k, v)
    else:
        if k.shape != q.shape:
            raise ValueError(f"{op}: k must have q's shape {tuple(q.shape)}, got {tuple(k.shape)}")
        if v.dim() != q.dim() or v.shape[:-1] != q.shape[:-1]:
            raise ValueError(
                f"{op}: v must be {_layout((*layout[:-1], v_dim))} with q's {_layout(layout[:-1])} = "
                f"{tuple(q.shape[:-1])}, got {tuple(v.shape)}"
            )
    check_floating(op, "q, k, v", q, k, v)


def check_shape(
    op: str, name: str, t: torch.Tensor | None, want: tuple[int, ...], formula: str | None = None
) -> None:
    """An optional tensor (bias table, mask) has shape ``want``; ``formula`` says how ``want`` follows from the
    other arguments, e.g. ``(heads, 2*wh-1, 2*ww-1)``."""
    if t is not None and tuple(t.shape) != tuple(want):
        expected = f"{formula} = {tuple(want)}" if formula else f"{tuple(want)}"
        raise ValueError(f"{op}: {name} must be {expected}, got {tuple(t.shape)}")


def check_triton_dtype(op: str, q: torch.Tensor) -> None:
    """The Triton backend takes :data:`TRITON_DTYPES` only; the reference takes any floating dtype."""
    if q.dtype not in TRITON_DTYPES:
        raise ValueError(
            f"{op}: backend 'triton' supports {', '.join(map(str, TRITON_DTYPES))} inputs, got {q.dtype}; "
            f"use backend='reference'"
        )
