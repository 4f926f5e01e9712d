"""Window and grid attention in plain PyTorch: the specification, the CPU path and the test oracle.

``q, k``: ``(B, H, W, heads, Dqk)``; ``v``: ``(B, H, W, heads, Dv)`` -- the value width may differ from the
query/key width (EMOv2 projects v to the block's expanded width, q and k to ``dim_head``). With a ``wh x ww``
window, ``nh = ceil(H / wh)`` and ``nw = ceil(W / ww)``, the map is cut into ``nh x nw`` groups of ``wh x ww``
positions two ways:

* ``'window'`` (EMOv2's "close" partition, Swin's windows): group ``(a, b)`` holds the contiguous pixels
  ``(a * wh + i, b * ww + j)``;
* ``'grid'`` (EMOv2's "remote" partition, MaxViT's grid): group ``(a, b)`` holds the dilated pixels
  ``(i * nh + a, j * nw + b)``, i.e. every ``nh``-th row and ``nw``-th column starting at ``(a, b)``;

for ``0 <= i < wh``, ``0 <= j < ww``. Every query attends to the keys of its own group::

    out[q] = sum_k softmax_k(scale * <q, k>) v[k]

and ``partition='both'`` returns the sum of the two (EMOv2's hybrid attention: close + remote, no projection).
When ``H`` or ``W`` is not a multiple of the window, positions beyond the map are neither keys nor outputs (they
are masked out, not zero tokens); every position still belongs to exactly one group of each partition. On maps
that are multiples of the window this is exactly the official EMOv2 ``(n1 h1) (n2 w1)`` / ``(h1 n1) (w1 n2)``
partitions with ``n1 = H / wh``, ``n2 = W / ww``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ops._utils import no_autocast

__all__ = ["PARTITIONS", "window_grid_attention_reference"]

PARTITIONS = ("window", "grid", "both")


def window_grid_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window: tuple[int, int],
    partition: str = "both",
    scale: float | None = None,
) -> torch.Tensor:
    with no_autocast(q.device):
        return _window_grid_attention(q, k, v, window, partition, scale)


def _attend(q, k, v, window, grid: bool, scale: float) -> torch.Tensor:
    """One partition, fp32: (B, H, W, heads, Dv) with padded positions cropped off."""
    B, H, W, nh, _ = q.shape
    wh, ww = window
    gh, gw = -(-H // wh), -(-W // ww)  # groups per column / row
    ph, pw = gh * wh - H, gw * ww - W
    N = wh * ww

    def to_groups(t: torch.Tensor) -> torch.Tensor:  # (b, H, W, n, D) -> (b, G, n, N, D)
        t = F.pad(t.float(), (0, 0, 0, 0, 0, pw, 0, ph))
        b, _, _, n, D = t.shape
        if grid:  # row i * gh + a: (i, a) with a fastest
            t = t.view(b, wh, gh, ww, gw, n, D).permute(0, 2, 4, 5, 1, 3, 6)
        else:  # row a * wh + i: (a, i) with i fastest
            t = t.view(b, gh, wh, gw, ww, n, D).permute(0, 1, 3, 5, 2, 4, 6)
        return t.reshape(b, gh * gw, n, N, D)

    attn = (to_groups(q) * scale) @ to_groups(k).transpose(-2, -1)  # (B, G, nh, N, N)
    if ph or pw:
        valid = to_groups(torch.ones(1, H, W, 1, 1, device=q.device))[..., 0]  # (1, G, 1, N): 0 at padding
        attn = attn.masked_fill(valid[:, :, :, None, :] == 0, float("-inf"))
    out = attn.softmax(dim=-1) @ to_groups(v)  # (B, G, nh, N, Dv)
    Dv = out.shape[-1]
    if grid:
        out = out.view(B, gh, gw, nh, wh, ww, Dv).permute(0, 4, 1, 5, 2, 3, 6)
    else:
        out = out.view(B, gh, gw, nh, wh, ww, Dv).permute(0, 1, 4, 2, 5, 3, 6)
    return out.reshape(B, gh * wh, gw * ww, nh, Dv)[:, :H, :W]


def _window_grid_attention(q, k, v, window, partition, scale) -> torch.Tensor:
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    out = None
    if partition in ("window", "both"):
        out = _attend(q, k, v, window, False, scale)
    if partition in ("grid", "both"):
        grid_out = _attend(q, k, v, window, True, scale)
        out = grid_out if out is None else out + grid_out
    return out.to(q.dtype)
