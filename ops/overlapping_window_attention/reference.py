"""Overlapping window (cross-)attention in plain PyTorch: the specification, the CPU path and the test oracle.

HAT's OCAB ("overlapping cross-attention block"). ``q, k, v``: ``(B, H, W, heads, D)``. Queries are grouped
into non-overlapping ``wh x ww`` windows starting at the top-left corner (as in
:mod:`ops.window_attention`); the keys and values of window ``(wy, wx)`` are the larger ``kh x kw`` window
centred on it, i.e. the map pixels ``(wy * wh - ph + ky, wx * ww - pw + kx)`` for ``0 <= ky < kh``,
``0 <= kx < kw`` with ``ph = (kh - wh) / 2``, ``pw = (kw - ww) / 2``. Neighbouring key windows overlap by
``2 * ph`` rows / ``2 * pw`` columns::

    out[q] = sum_k softmax_k(scale * <q, k> + bias_table[h, ky - qy + wh - 1, kx - qx + ww - 1]) v[k]

with ``(qy, qx)`` the query's position inside its query window and ``(ky, kx)`` the key's inside its key
window (equivalently: the table row is the pixel offset ``y_key - y_query`` shifted by ``(wh + kh) / 2 - 1``,
so the table is ``(heads, wh + kh - 1, ww + kw - 1)``, centred on offset 0).

Key positions outside the map are **zero tokens**, not masked: ``k = 0`` and ``v = 0``, so their score is
just the bias and they still receive softmax mass. This is what the official OCAB computes (``nn.Unfold`` with
zero padding on the projected keys / values), and it holds for every key window, including those of partial
query windows when ``H`` or ``W`` is not a multiple of the query window. Queries outside the map do not exist
(no output). Windows are numbered row-major over the ``ceil(H / wh) x ceil(W / ww)`` grid.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ops._utils import no_autocast

__all__ = ["overlapping_window_attention_reference", "overlapping_relative_position_bias"]


def overlapping_relative_position_bias(
        bias_table: torch.Tensor, window: tuple[int, int], key_window: tuple[int, int]) -> torch.Tensor:
    """Expand a ``(heads, wh+kh-1, ww+kw-1)`` table into the ``(heads, wh*ww, kh*kw)`` bias of one window."""
    (wh, ww), (kh, kw) = window, key_window
    dev = bias_table.device
    qy, qx = torch.arange(wh, device=dev).repeat_interleave(ww), torch.arange(ww, device=dev).repeat(wh)
    ky, kx = torch.arange(kh, device=dev).repeat_interleave(kw), torch.arange(kw, device=dev).repeat(kh)
    return bias_table[:, ky[None, :] - qy[:, None] + wh - 1, kx[None, :] - qx[:, None] + ww - 1]


def overlapping_window_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window: tuple[int, int],
    key_window: tuple[int, int],
    bias_table: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    with no_autocast(q.device):
        return _overlapping_window_attention(q, k, v, window, key_window, bias_table, scale)


def _overlapping_window_attention(q, k, v, window, key_window, bias_table, scale) -> torch.Tensor:
    B, H, W, nh, D = q.shape
    (wh, ww), (kh, kw) = window, key_window
    ph, pw = (kh - wh) // 2, (kw - ww) // 2
    scale = D ** -0.5 if scale is None else scale
    nwh, nww = -(-H // wh), -(-W // ww)
    Hp, Wp = nwh * wh, nww * ww

    qw = F.pad(q.float(), (0, 0, 0, 0, 0, Wp - W, 0, Hp - H))
    qw = qw.view(B, nwh, wh, nww, ww, nh, D).permute(0, 1, 3, 5, 2, 4, 6).reshape(B, nwh * nww, nh, wh * ww, D)

    def key_windows(t: torch.Tensor) -> torch.Tensor:  # (B, H, W, nh, D) -> (B, nW, nh, kh*kw, D), fp32
        # zeros around the map: the keys / values outside it are zero tokens (see the module docstring)
        t = F.pad(t.float(), (0, 0, 0, 0, pw, Wp - W + pw, ph, Hp - H + ph))
        t = t.unfold(1, kh, wh).unfold(2, kw, ww)  # (B, nwh, nww, nh, D, kh, kw)
        return t.permute(0, 1, 2, 3, 5, 6, 4).reshape(B, nwh * nww, nh, kh * kw, D)

    kw_, vw = key_windows(k), key_windows(v)
    attn = (qw * scale) @ kw_.transpose(-2, -1)  # (B, nW, nh, wh*ww, kh*kw)
    if bias_table is not None:
        attn = attn + overlapping_relative_position_bias(bias_table.float(), window, key_window)[None, None]
    out = attn.softmax(dim=-1) @ vw  # (B, nW, nh, wh*ww, D)
    out = out.view(B, nwh, nww, nh, wh, ww, D).permute(0, 1, 4, 2, 5, 3, 6).reshape(B, Hp, Wp, nh, D)
    return out[:, :H, :W].to(q.dtype)
