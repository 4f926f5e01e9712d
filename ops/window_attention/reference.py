"""Window attention in plain PyTorch: the specification, the CPU path and the test oracle.

``q, k, v``: ``(B, H, W, heads, D)``. The map is cut into non-overlapping ``wh x ww`` windows starting at
the top-left corner; every query attends to the keys of its own window:

    out[q] = sum_k softmax_k(scale * <q, k> + bias_table[h, yq - yk + wh - 1, xq - xk + ww - 1] + mask[w, q, k]) v[k]

When ``H`` or ``W`` is not a multiple of the window, the last row/column of windows is partial: the missing
positions are neither keys nor outputs (they are masked out, not zero tokens). Windows are numbered
row-major over the ``ceil(H / wh) x ceil(W / ww)`` grid, which is how ``mask`` (``(num_windows, wh*ww,
wh*ww)``, additive, e.g. Swin's shifted-window mask) is indexed. Positions inside a window are row-major.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ops._utils import no_autocast

__all__ = ["window_attention_reference", "relative_position_bias"]


def relative_position_bias(bias_table: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:
    """Expand a ``(heads, 2*wh-1, 2*ww-1)`` table into the ``(heads, wh*ww, wh*ww)`` bias of one window."""
    wh, ww = window
    ys = torch.arange(wh, device=bias_table.device).repeat_interleave(ww)
    xs = torch.arange(ww, device=bias_table.device).repeat(wh)
    dy = ys[:, None] - ys[None, :] + wh - 1
    dx = xs[:, None] - xs[None, :] + ww - 1
    return bias_table[:, dy, dx]


def window_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window: tuple[int, int],
    bias_table: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    with no_autocast(q.device):
        return _window_attention(q, k, v, window, bias_table, mask, scale)


def _window_attention(q, k, v, window, bias_table, mask, scale) -> torch.Tensor:
    B, H, W, nh, D = q.shape
    wh, ww = window
    scale = D ** -0.5 if scale is None else scale
    nwh, nww = -(-H // wh), -(-W // ww)
    ph, pw = nwh * wh - H, nww * ww - W
    N = wh * ww

    def to_windows(t: torch.Tensor) -> torch.Tensor:  # (B, H, W, nh, D) -> (B, nW, nh, N, D), fp32
        # no padding copy when the windows tile the map: the permuted reshape below copies anyway
        t = F.pad(t.float(), (0, 0, 0, 0, 0, pw, 0, ph)) if ph or pw else t.float()
        t = t.view(B, nwh, wh, nww, ww, nh, D).permute(0, 1, 3, 5, 2, 4, 6)
        return t.reshape(B, nwh * nww, nh, N, D)

    qw, kw, vw = to_windows(q), to_windows(k), to_windows(v)
    attn = (qw * scale) @ kw.transpose(-2, -1)  # (B, nW, nh, N, N)
    if bias_table is not None:
        attn = attn + relative_position_bias(bias_table.float(), window)[None, None]
    if mask is not None:
        attn = attn + mask.float()[None, :, None]
    if ph or pw:
        valid = F.pad(torch.ones(H, W, dtype=torch.bool, device=q.device), (0, pw, 0, ph))
        valid = valid.view(nwh, wh, nww, ww).permute(0, 2, 1, 3).reshape(1, nwh * nww, 1, 1, N)
        attn = attn.masked_fill(~valid, float("-inf"))
    out = attn.softmax(dim=-1) @ vw  # (B, nW, nh, N, D)
    out = out.view(B, nwh, nww, nh, wh, ww, D).permute(0, 1, 4, 2, 5, 3, 6)
    out = out.reshape(B, nwh * wh, nww * ww, nh, D)[:, :H, :W]
    return out.to(q.dtype)
