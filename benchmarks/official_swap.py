"""Run a zoo model on each op's *official formulation* instead of the op: same model, same weights, same input.

``with official_formulation() as calls:`` replaces, for the duration of the block, every attention op that a zoo
module looked up by name (``from ops import window_attention`` binds ``window_attention`` in the model module's
globals) with an adapter that calls the op's ``ops/<op>/official.py`` function -- the paper's code transcribed,
the op's math (see each ``official.py``). ``calls`` counts the official calls per op name, so a caller can check
that the swap took effect. On exit every name is restored, also after an exception.

The adapters only translate arguments where the official signature differs from the op's; they never change what
is computed:

- ``window_attention``: the op's ``(heads, 2wh-1, 2ww-1)`` bias table becomes Swin's ``((2wh-1)(2ww-1), heads)``
  parameter (``table_to_official``, a view).
- ``overlapping_window_attention``: square windows only (HAT), the op's table becomes the official OCAB table
  (``table_to_official``); the official ``window_partition`` needs maps that are multiples of the window.
- ``bilevel_routing_attention``: square region grids only (``n_win`` an int, as the official code), maps that are
  multiples of ``n_win`` (the official code without ``auto_pad``; BiFormer's ``pad='input'`` gives them).
- ``hilo_attention``: the op takes ``None`` for an absent path (LITv2's last stage has Lo-Fi heads only); the
  official ``HiLo`` then runs only its other path, so the adapter calls the official Lo-Fi function alone, or the
  official Hi-Fi steps (partition, masked window softmax, reverse) alone.
- ``window_grid_attention``: ``partition='both'`` only (EMOv2's ``EW_MHSA_Hybrid``), square windows.
- ``agent_attention``, ``neighborhood_attention_2d``, ``rala``, ``channel_attention``: the signatures agree.

Every adapter drops the op's ``backend`` argument (the official code has one formulation). Arguments the official
code cannot take raise a ``ValueError`` naming the value, never a silent substitute.
"""
from __future__ import annotations

import collections
import contextlib
import importlib
import pkgutil
import sys
from collections.abc import Callable, Iterator

import torch

import ops
from ops.agent_attention.official import agent_attention_official
from ops.bilevel_routing_attention.official import bilevel_routing_attention_official
from ops.channel_attention.official import channel_attention_official
from ops.hilo_attention.official import (
    hifi_partition,
    hifi_reverse,
    hilo_attention_official,
    lofi_attention_official,
    padding_mask,
)
from ops.neighborhood_attention.official import neighborhood_attention_2d_official
from ops.overlapping_window_attention.official import overlapping_window_attention_official
from ops.overlapping_window_attention.official import table_to_official as ocab_table_to_official
from ops.rala.official import rala_official
from ops.window_attention.official import table_to_official as window_table_to_official
from ops.window_attention.official import window_attention_official
from ops.window_grid_attention.official import window_grid_attention_official

__all__ = ["OFFICIAL", "official_formulation", "patch_sites"]


def _square(op: str, name: str, value) -> int:
    """``value`` as one int when it is an int or an equal pair; the official code has one size per side."""
    if isinstance(value, int):
        return value
    a, b = value
    if a != b:
        raise ValueError(f"{op} (official formulation): {name} must be square, the official code takes one int, "
                         f"got {tuple(value)}")
    return int(a)


def _window_attention(q, k, v, window, *, bias_table=None, mask=None, scale=None, backend=None):
    table = None if bias_table is None else window_table_to_official(bias_table)
    return window_attention_official(q, k, v, window, bias_table=table, mask=mask, scale=scale)


def _overlapping_window_attention(q, k, v, window, key_window, *, bias_table=None, scale=None, backend=None):
    op = "overlapping_window_attention"
    ws, wse = _square(op, "window", window), _square(op, "key_window", key_window)
    table = None if bias_table is None else ocab_table_to_official(bias_table, ws, wse)
    return overlapping_window_attention_official(q, k, v, ws, wse, bias_table=table, scale=scale)


def _bilevel_routing_attention(q, k, v, n_win, topk, *, scale=None, backend=None):
    n_win = _square("bilevel_routing_attention", "n_win", n_win)
    return bilevel_routing_attention_official(q, k, v, n_win, topk, scale=scale)


def _hifi_official(q, k, v, window: int, scale: float) -> torch.Tensor:
    """The Hi-Fi path of the official ``HiLo`` alone, from the official module's own steps."""
    H, W = q.shape[1:3]
    qw, kw, vw = (hifi_partition(t, window) for t in (q, k, v))
    attn = (qw @ kw.transpose(-2, -1)) * scale
    pad = padding_mask(H, W, window, attn.device, attn.dtype)
    if pad is not None:
        attn = attn + pad
    return hifi_reverse(attn.softmax(dim=-1) @ vw, H, W, window)


def _hilo_attention(hifi_q, hifi_k, hifi_v, lofi_q, lofi_k, lofi_v, window, *, scale=None, backend=None):
    has_hifi, has_lofi = hifi_q is not None, lofi_q is not None
    if not has_hifi and not has_lofi:
        raise ValueError("hilo_attention (official formulation): both paths are None, there is nothing to attend")
    if has_hifi and has_lofi:
        return hilo_attention_official(hifi_q, hifi_k, hifi_v, lofi_q, lofi_k, lofi_v, window, scale=scale)
    if has_lofi:
        return None, lofi_attention_official(lofi_q, lofi_k, lofi_v, scale=scale)
    scale = hifi_q.shape[-1] ** -0.5 if scale is None else scale
    return _hifi_official(hifi_q, hifi_k, hifi_v, window, scale), None


def _window_grid_attention(q, k, v, window, *, partition="both", scale=None, backend=None):
    if partition != "both":
        raise ValueError(f"window_grid_attention (official formulation): the official EW_MHSA_Hybrid sums both "
                         f"partitions; partition={partition!r} has no official formulation")
    return window_grid_attention_official(q, k, v, _square("window_grid_attention", "window", window), scale=scale)


def _neighborhood_attention_2d(q, k, v, kernel_size, dilation=1, *, rpb=None, scale=None, backend=None):
    return neighborhood_attention_2d_official(q, k, v, kernel_size, dilation, rpb=rpb, scale=scale)


def _agent_attention(q, k, v, agents, *, agent_bias=None, query_bias=None, scale=None, backend=None):
    return agent_attention_official(q, k, v, agents, agent_bias=agent_bias, query_bias=query_bias, scale=scale)


def _rala(q, k, v, *, gate=None, residual=None, rope=None, scale=None, eps=1e-6, backend=None):
    return rala_official(q, k, v, gate=gate, residual=residual, rope=rope, scale=scale, eps=eps)


def _channel_attention(q, k, v, *, scale=None, backend=None):
    return channel_attention_official(q, k, v, scale=scale)


# op name -> (the op function as ``ops`` exports it, the adapter onto its official formulation)
OFFICIAL: dict[str, tuple[Callable, Callable]] = {
    "agent_attention": (ops.agent_attention, _agent_attention),
    "bilevel_routing_attention": (ops.bilevel_routing_attention, _bilevel_routing_attention),
    "channel_attention": (ops.channel_attention, _channel_attention),
    "hilo_attention": (ops.hilo_attention, _hilo_attention),
    "neighborhood_attention_2d": (ops.neighborhood_attention_2d, _neighborhood_attention_2d),
    "overlapping_window_attention": (ops.overlapping_window_attention, _overlapping_window_attention),
    "rala": (ops.rala, _rala),
    "window_attention": (ops.window_attention, _window_attention),
    "window_grid_attention": (ops.window_grid_attention, _window_grid_attention),
}


def _import_zoo() -> None:
    """Import every module of the ``zoo`` package that can hold a model's op lookups (models and layers)."""
    import zoo.layers
    import zoo.models

    for package in (zoo.models, zoo.layers):
        for info in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package.__name__}.{info.name}")


def patch_sites() -> list[tuple[object, str, str]]:
    """``(module, attribute, op name)`` for every global of a ``zoo`` module bound to one of the ops."""
    _import_zoo()
    by_id = {id(fn): name for name, (fn, _) in OFFICIAL.items()}
    sites = []
    for mod_name, module in sorted(sys.modules.items()):
        if module is None or not (mod_name == "zoo" or mod_name.startswith("zoo.")):
            continue
        for attr, value in list(vars(module).items()):
            if callable(value) and id(value) in by_id:
                sites.append((module, attr, by_id[id(value)]))
    return sites


@contextlib.contextmanager
def official_formulation(only: tuple[str, ...] | None = None) -> Iterator[collections.Counter]:
    """Within the block, zoo models call each op's official formulation (module docstring).

    Args:
        only: op names to swap (keys of :data:`OFFICIAL`); default all.

    Yields:
        A ``Counter`` of official calls per op name, updated as the block runs.
    """
    names = tuple(OFFICIAL) if only is None else tuple(only)
    unknown = [n for n in names if n not in OFFICIAL]
    if unknown:
        raise ValueError(f"official_formulation: unknown op names {unknown}; known: {sorted(OFFICIAL)}")
    calls: collections.Counter = collections.Counter()

    def counted(name: str, adapter: Callable) -> Callable:
        def call(*args, **kwargs):
            calls[name] += 1
            return adapter(*args, **kwargs)

        call.__name__ = f"{name}_official_swap"
        call.__wrapped__ = adapter
        return call

    wrappers = {name: counted(name, OFFICIAL[name][1]) for name in names}
    sites = [s for s in patch_sites() if s[2] in wrappers]
    if not sites:
        raise RuntimeError(f"official_formulation: no zoo module binds any of {list(names)}; nothing to swap")
    saved = [(module, attr, getattr(module, attr)) for module, attr, _ in sites]
    try:
        for module, attr, name in sites:
            setattr(module, attr, wrappers[name])
        yield calls
    finally:
        for module, attr, original in saved:
            setattr(module, attr, original)
