"""Window attention as the official Swin / DaViT code computes it, in the ops layout, and its cost.

Official code: microsoft/Swin-Transformer ``models/swin_transformer.py`` (``window_partition``, ``window_reverse``,
``WindowAttention.forward``, the ``attn_mask`` of ``SwinTransformerBlock``; the same module in dingmyu/davit
``timm/models/davit.py``). :func:`window_attention_official` starts from the projected q, k, v in the ops layout
``(B, H, W, heads, D)`` and does what the official code does from its ``qkv`` projection on: window partition
(view / permute / contiguous), ``q * scale @ k^T``, the relative-position bias gathered from Swin's
``((2wh-1)(2ww-1), heads)`` table through ``relative_position_index``, the (shifted-window) mask added per
window, softmax, ``@ v``, ``transpose`` / ``reshape`` and window reverse. It is the benchmarks' baseline and the
tests' second oracle; :func:`table_from_official` / :func:`table_to_official` convert the bias table between
Swin's layout and the op's, for the families' checkpoint converters.

Partial windows (``H`` or ``W`` not a multiple of the window): the official code pads its *input* before the
projection, so padded tokens take part in attention; the op masks them instead, so here the map is zero-padded
and the padded keys get ``-inf`` -- the op's function, which is what a baseline must compute.

Cost (``wh x ww`` windows of ``N = wh * ww`` positions; conventions in :mod:`ops._cost`; ``T = B H W heads D``
elements of one of q, k, v, ``s`` the element size)::

    fwd FLOPs = 4 * B * heads * D * sum_w n_w^2      (q k^T and P v; n_w = valid positions of window w,
                                                      = 4 * B * nW * heads * N^2 * D when the windows tile the map)
    bwd FLOPs = 2.5 * fwd
    fwd bytes = 4 T s          (read q, k, v; write o)  [+ bias table, + mask nW * N^2 * s_mask]
    bwd bytes = 8 T s          (read q, k, v, o, dO; write dq, dk, dv)  [+ bias table and its gradient, + mask]
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from ops._cost import OpCost

__all__ = [
    "relative_position_index",
    "swin_shift_mask",
    "table_from_official",
    "table_to_official",
    "window_attention_cost",
    "window_attention_official",
]


@functools.lru_cache(maxsize=16)
def relative_position_index(wh: int, ww: int, device: torch.device | None = None) -> torch.Tensor:
    """Swin's ``relative_position_index`` ``(N, N)``, built as the official code builds it (a buffer there, built
    once: cached here)."""
    coords = torch.stack(torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij")).flatten(1)  # 2, N
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()  # N, N, 2
    rel[:, :, 0] += wh - 1
    rel[:, :, 1] += ww - 1
    rel[:, :, 0] *= 2 * ww - 1
    return rel.sum(-1).to(device)


def swin_shift_mask(height: int, width: int, window: tuple[int, int], shift: tuple[int, int]) -> torch.Tensor:
    """Swin's shifted-window attention mask ``(nW, N, N)``: region ids of the rolled (padded) map, 0 within a
    region and -100 across regions (the official value, not ``-inf``)."""
    wh, ww = window
    hp, wp = -(-height // wh) * wh, -(-width // ww) * ww
    region = torch.zeros(hp, wp)
    rows = (slice(0, hp - wh), slice(hp - wh, hp - shift[0]), slice(hp - shift[0], hp))
    cols = (slice(0, wp - ww), slice(wp - ww, wp - shift[1]), slice(wp - shift[1], wp))
    for i, rs in enumerate(rows):
        for j, cs in enumerate(cols):
            region[rs, cs] = 3 * i + j
    ids = region.view(hp // wh, wh, wp // ww, ww).permute(0, 2, 1, 3).reshape(-1, wh * ww)
    return (ids[:, :, None] != ids[:, None, :]).float() * -100.0


def table_to_official(table: torch.Tensor) -> torch.Tensor:
    """The op's ``(heads, 2wh-1, 2ww-1)`` bias table as Swin's ``((2wh-1)(2ww-1), heads)`` parameter (a view)."""
    return table.reshape(table.shape[0], -1).t()


def table_from_official(table: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:
    """Swin's ``((2wh-1)(2ww-1), heads)`` table in the op's ``(heads, 2wh-1, 2ww-1)`` layout: the official index
    ``(dy + wh - 1) * (2ww - 1) + (dx + ww - 1)`` is the op table's row-major order."""
    wh, ww = window
    return table.t().reshape(table.shape[1], 2 * wh - 1, 2 * ww - 1)


def _window_partition(t: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:
    """``window_partition`` of a (padded) ``(B, Hp, Wp, heads, D)`` map -> ``(B*nW, heads, N, D)``, as the official
    code's partition followed by its ``reshape(B_, N, 3, heads, D).permute(...)`` of the projection."""
    B, hp, wp, nh, D = t.shape
    wh, ww = window
    x = t.reshape(B, hp // wh, wh, wp // ww, ww, nh * D).permute(0, 1, 3, 2, 4, 5).contiguous()
    return x.view(-1, wh * ww, nh, D).permute(0, 2, 1, 3)


def _window_reverse(x: torch.Tensor, batch: int, height: int, width: int, window: tuple[int, int]) -> torch.Tensor:
    """``(B*nW, heads, N, D)`` -> ``(B, H, W, heads, D)``: transpose, reshape, ``window_reverse``, crop."""
    bw, nh, n, D = x.shape
    wh, ww = window
    hp, wp = -(-height // wh) * wh, -(-width // ww) * ww
    x = x.transpose(1, 2).reshape(bw, n, nh * D)
    x = x.view(batch, hp // wh, wp // ww, wh, ww, -1).permute(0, 1, 3, 2, 4, 5).contiguous().view(batch, hp, wp, -1)
    return x[:, :height, :width].reshape(batch, height, width, nh, D)


def _padding_mask(height: int, width: int, window: tuple[int, int], device, dtype) -> torch.Tensor:
    """``(nW, 1, N)``: ``-inf`` on the keys a partial window pads, 0 elsewhere."""
    wh, ww = window
    hp, wp = -(-height // wh) * wh, -(-width // ww) * ww
    valid = F.pad(torch.ones(height, width, device=device), (0, wp - width, 0, hp - height))
    valid = valid.view(hp // wh, wh, wp // ww, ww).permute(0, 2, 1, 3).reshape(-1, 1, wh * ww)
    return torch.zeros_like(valid).masked_fill(valid == 0, float("-inf")).to(dtype)


def window_attention_official(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window: int | tuple[int, int],
    *,
    bias_table: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Swin's window attention on ``(B, H, W, heads, D)`` q, k, v (module docstring); the op's function.

    ``bias_table``: Swin's ``((2wh-1)(2ww-1), heads)`` parameter (:func:`table_to_official` views the op's table
    so); ``mask``: additive ``(nW, N, N)`` over the row-major window grid, as the op's; ``scale`` default
    ``D ** -0.5``.
    """
    wh, ww = (window, window) if isinstance(window, int) else tuple(window)
    B, H, W, nh, D = q.shape
    scale = D ** -0.5 if scale is None else scale
    ph, pw = (-H) % wh, (-W) % ww
    q, k, v = (_window_partition(F.pad(t, (0, 0, 0, 0, 0, pw, 0, ph)) if ph or pw else t, (wh, ww))
               for t in (q, k, v))
    n = wh * ww
    attn = (q * scale) @ k.transpose(-2, -1)
    if bias_table is not None:
        index = relative_position_index(wh, ww, q.device)
        bias = bias_table[index.view(-1)].view(n, n, -1).permute(2, 0, 1).contiguous()
        attn = attn + bias.unsqueeze(0)
    if ph or pw:
        pad = _padding_mask(H, W, (wh, ww), q.device, attn.dtype)
        mask = pad if mask is None else mask + pad
    if mask is not None:
        nw = mask.shape[0]
        attn = attn.view(-1, nw, nh, n, n) + mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, nh, n, n)
    attn = attn.softmax(dim=-1)
    return _window_reverse(attn @ v, B, H, W, (wh, ww))


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
    """Cost of ``ops.window_attention`` on ``(batch, height, width, heads, head_dim)`` (module docstring)."""
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
