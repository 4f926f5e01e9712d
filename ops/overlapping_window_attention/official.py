"""Overlapping cross-window attention (HAT's OCAB) as the official HAT code computes it, in the ops layout, and its
cost.

Official code: XPixelGroup/HAT ``hat/archs/hat_arch.py`` (``OCAB.forward`` between ``qkv`` and ``proj``, and the
``relative_position_index_OCA`` buffer built by ``HAT.calculate_rpi_oca``). From the projected q, k, v in the
ops layout ``(B, H, W, heads, D)``: the official ``(B, C, H, W)`` channel blocks, ``window_partition`` of q,
``torch.cat`` of k and v on the channels, ``nn.Unfold(kernel wse, stride ws, padding (wse - ws) / 2)`` (keys beyond
the map are zero tokens), the einops ``b (nc ch owh oww) nw -> nc (b nw) (owh oww) ch`` (as the view / permute it
performs), per-head reshape / permute, ``q * scale @ k^T``, the bias gathered from the official
``((ws + wse - 1)^2, heads)`` table through ``relative_position_index_OCA`` (its negative entries wrap, as PyTorch
indexing does in HAT), softmax, ``@ v``, ``window_reverse``. Maps are multiples of ``ws`` (HAT pads its input
image so that every map is; ``window_partition`` needs it). The benchmarks' baseline and the tests' second oracle;
:func:`table_from_official` / :func:`table_to_official` convert the bias table between the official layout and
the op's ``(heads, ws + wse - 1, ws + wse - 1)``, for the families' checkpoint converters.

Cost (``nW = H W / ws^2`` windows, ``n = ws^2`` queries and ``m = wse^2`` keys each, ``T = B H W heads D``,
``s`` the element size; the table ``heads (ws + wse - 1)^2 s``; conventions in :mod:`ops._cost`)::

    fwd FLOPs = 4 * B * nW * heads * n * m * D     (q k^T and P v)
    bwd FLOPs = 2.5 * fwd
    fwd bytes = 4 T s + table                       (read q, k, v once -- the overlap re-reads hit the cache;
                                                     write o)
    bwd bytes = 8 T s + 2 table                     (read q, k, v, o, dO; write dq, dk, dv; table and its gradient)
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from ops._cost import OpCost

__all__ = [
    "overlapping_window_attention_cost",
    "overlapping_window_attention_official",
    "relative_position_index_oca",
    "table_from_official",
    "table_to_official",
]


@functools.lru_cache(maxsize=16)
def relative_position_index_oca(ws: int, wse: int, device: torch.device | None = None) -> torch.Tensor:
    """HAT's ``relative_position_index_OCA`` ``(ws^2, wse^2)``, computed the official way (entries may be negative:
    the official gather wraps them); a buffer there, built once: cached here."""
    def coords(n: int) -> torch.Tensor:
        return torch.stack(torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")).flatten(1)  # (2, n^2)

    rel = (coords(wse)[:, None, :] - coords(ws)[:, :, None]).permute(1, 2, 0).contiguous()  # (ws^2, wse^2, 2)
    rel[:, :, 0] += ws - wse + 1
    rel[:, :, 1] += ws - wse + 1
    rel[:, :, 0] *= ws + wse - 1
    return rel.sum(-1).to(device)


def table_from_official(table: torch.Tensor, ws: int, wse: int) -> torch.Tensor:
    """The official ``((ws + wse - 1)^2, heads)`` table in the op's ``(heads, n, n)`` layout (``n = ws + wse - 1``).

    Op entry ``[i, j]`` is the key-minus-query offset ``(i - ws + 1, j - ws + 1)``; ``relative_position_index_OCA``
    maps that offset to the official row ``(dy + ws - wse + 1) * n + (dx + ws - wse + 1)``, negative for most
    offsets and so wrapped around (PyTorch indexing) -- reproduced by the modulo.
    """
    n = ws + wse - 1
    off = torch.arange(n, device=table.device) - (ws - 1) + ws - wse + 1
    index = (off[:, None] * n + off[None, :]) % (n * n)
    return table[index.view(-1)].view(n, n, -1).permute(2, 0, 1)


def table_to_official(table: torch.Tensor, ws: int, wse: int) -> torch.Tensor:
    """The op's ``(heads, n, n)`` table as the official ``(n^2, heads)`` one, the inverse of
    :func:`table_from_official`: a ``roll`` of its flat view (official row ``(a n + b - (wse - 2)(n + 1)) mod n^2``
    holds the op's entry ``[:, a, b]``)."""
    heads, n = table.shape[0], table.shape[1]
    return table.reshape(heads, n * n).roll(-(wse - 2) * (n + 1), dims=1).t()


def overlapping_window_attention_official(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int,
                                          key_window: int, *, bias_table: torch.Tensor | None = None,
                                          scale: float | None = None) -> torch.Tensor:
    """HAT's OCAB attention on ``(B, H, W, heads, D)`` q, k, v, ``H`` and ``W`` multiples of ``window``
    (module docstring). ``bias_table``: the official ``((ws + wse - 1)^2, heads)`` parameter
    (:func:`table_to_official` turns the op's table into it); ``scale`` default ``D ** -0.5``."""
    b, h, w, nh, d = q.shape
    c = nh * d
    ws, wse = window, key_window
    if h % ws or w % ws:
        raise ValueError(f"overlapping_window_attention_official: H, W = {h}, {w} must be multiples of "
                         f"window={ws} (the official window_partition)")
    scale = d ** -0.5 if scale is None else scale
    q = q.reshape(b, h, w, c)
    kv = torch.cat((k.reshape(b, h, w, c).permute(0, 3, 1, 2), v.reshape(b, h, w, c).permute(0, 3, 1, 2)), dim=1)
    q_windows = q.reshape(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, ws * ws, c)
    kv_windows = F.unfold(kv, kernel_size=(wse, wse), stride=ws, padding=(wse - ws) // 2)
    # einops 'b (nc ch owh oww) nw -> nc (b nw) (owh oww) ch' + .contiguous()
    nw = kv_windows.shape[-1]
    kv_windows = kv_windows.view(b, 2, c, wse * wse, nw).permute(1, 0, 4, 3, 2).reshape(2, b * nw, wse * wse, c)
    k_windows, v_windows = kv_windows[0], kv_windows[1]
    b_, nq, _ = q_windows.shape
    n = k_windows.shape[1]
    q = q_windows.reshape(b_, nq, nh, d).permute(0, 2, 1, 3)
    k = k_windows.reshape(b_, n, nh, d).permute(0, 2, 1, 3)
    v = v_windows.reshape(b_, n, nh, d).permute(0, 2, 1, 3)
    attn = (q * scale) @ k.transpose(-2, -1)
    if bias_table is not None:
        index = relative_position_index_oca(ws, wse, attn.device)
        bias = bias_table[index.view(-1)].view(ws * ws, wse * wse, -1).permute(2, 0, 1).contiguous()
        attn = attn + bias.unsqueeze(0)
    x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b_, nq, c)
    x = x.view(b, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5).contiguous().view(b, h, w, c)
    return x.view(b, h, w, nh, d)


def overlapping_window_attention_cost(batch: int, height: int, width: int, heads: int, head_dim: int, window: int,
                                      key_window: int, *, elem_size: int, bias: bool = True) -> OpCost:
    """Cost of ``ops.overlapping_window_attention`` on a map that is a multiple of ``window`` (module docstring)."""
    windows = (height // window) * (width // window)
    flops_fwd = 4 * batch * windows * heads * window ** 2 * key_window ** 2 * head_dim
    tensor = batch * height * width * heads * head_dim * elem_size
    table = heads * (window + key_window - 1) ** 2 * elem_size if bias else 0
    return OpCost(flops_fwd=flops_fwd, flops_bwd=flops_fwd * 5 // 2, bytes_fwd=4 * tensor + table,
                  bytes_bwd=8 * tensor + 2 * table)
