"""Neighborhood attention as NATTEN 0.14 computes it for NAT / DiNAT, in the ops layout, and its cost.

Official code: SHI-Labs/NATTEN ``natten/natten2d.py`` (``NeighborhoodAttention2D.forward``: ``q * scale``,
``natten2dqkrpb``, softmax, ``natten2dav``), with the window and bias index helpers ``get_window_start`` /
``get_pb_start`` of its naive kernels (``natten/src/cpp/natten_cpu_commons.h``), as SHI-Labs/Neighborhood-
Attention-Transformer ``classification/nat.py`` / ``dinat.py`` run it. From the projected q, k, v in the ops
layout ``(B, H, W, heads, D)``: NATTEN's unfused layout ``(B, heads, H, W, D)``, ``q * scale``, the logits over
every query's ``kh x kw`` (dilated) neighbourhood plus the bias gathered from ``rpb`` ``(heads, 2kh-1, 2kw-1)``,
softmax, the weighted sum of the neighbours' values, ``permute`` back. The two NATTEN kernels are written out the
naive way: the neighbourhood of every query is gathered (``k[:, :, rows, cols]``: ``kh * kw`` copies of k and v).
The benchmarks' baseline and the tests' second oracle (:func:`natten_axis` is their statement of NATTEN's index
math).

Cost (``N = H W`` queries, ``K = kh kw`` keys each; conventions in :mod:`ops._cost`; ``T = B N heads D``, ``s``
the element size)::

    fwd FLOPs = 4 * B * heads * N * K * D        (q k^T and P v over the neighbourhood)
    bwd FLOPs = 2.5 * fwd
    fwd bytes = 4 T s  [+ rpb table]              (read q, k, v; write o)
    bwd bytes = 8 T s  [+ 2 x rpb table]          (read q, k, v, o, dO; write dq, dk, dv; read rpb, write d rpb)
"""
from __future__ import annotations

import functools

import torch

from ops._cost import OpCost

__all__ = ["natten_axis", "neighborhood_attention_2d_official", "neighborhood_attention_cost"]


def natten_axis(length: int, kernel: int, dilation: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """NATTEN's ``get_window_start`` and ``get_pb_start`` for every index of one axis, vectorised:
    ``(keys, bias)``, each ``(length, kernel)``: the neighbours' indices and their rpb indices."""
    n = kernel // 2
    i = torch.arange(length, device=device)
    if dilation <= 1:
        start = (i - n).clamp_min(0) + (i + n >= length) * (length - i - n - 1)
        pb = n + (i < n) * (n - i) + (i + n >= length) * (length - i - 1 - n)
    else:
        near_start, near_end = i - n * dilation < 0, i + n * dilation >= length
        imodd = i % dilation
        a = (length // dilation) * dilation
        b = length - a
        end = torch.where(imodd < b, length - b + imodd - 2 * n * dilation, a + imodd - kernel * dilation)
        start = torch.where(near_start, imodd, torch.where(near_end, end, i - n * dilation))
        pb = torch.where(near_start, kernel - 1 - i // dilation,
                         torch.where(near_end, (length - i - 1) // dilation, torch.full_like(i, n)))
    steps = torch.arange(kernel, device=device)
    return start[:, None] + steps * dilation, pb[:, None] + steps


@functools.lru_cache(maxsize=16)
def _index_grids(height: int, width: int, kernel: tuple[int, int], dilation: tuple[int, int],
                 device: torch.device) -> tuple[torch.Tensor, ...]:
    """``(H, W, kh, kw)`` grids of every query's neighbours and of their bias entries (the kernels' index math,
    computed once per geometry as the kernels would on the fly)."""
    (kh, kw), (dh, dw) = kernel, dilation
    key_y, bias_y = natten_axis(height, kh, dh, device)
    key_x, bias_x = natten_axis(width, kw, dw, device)
    shape = (height, width, kh, kw)
    return (key_y[:, None, :, None].expand(shape), key_x[None, :, None, :].expand(shape),
            bias_y[:, None, :, None].expand(shape), bias_x[None, :, None, :].expand(shape))


def neighborhood_attention_2d_official(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                       kernel_size: int | tuple[int, int], dilation: int | tuple[int, int] = 1, *,
                                       rpb: torch.Tensor | None = None, scale: float | None = None) -> torch.Tensor:
    """NATTEN 0.14's neighbourhood attention on ``(B, H, W, heads, D)`` q, k, v (module docstring); ``rpb``
    ``(heads, 2kh-1, 2kw-1)`` or None; ``scale`` default ``D ** -0.5``."""
    kernel = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
    dilation = (dilation, dilation) if isinstance(dilation, int) else tuple(dilation)
    B, H, W, nh, D = q.shape
    kk = kernel[0] * kernel[1]
    rows, cols, bias_rows, bias_cols = _index_grids(H, W, kernel, dilation, q.device)
    q, k, v = (t.permute(0, 3, 1, 2, 4) for t in (q, k, v))  # (B, heads, H, W, D): NATTEN's unfused layout
    q = q * (D ** -0.5 if scale is None else scale)
    # natten2dqkrpb: (B, heads, H, W, kh*kw) logits over the gathered neighbours, plus the gathered bias
    k_nb = k[:, :, rows, cols].reshape(B, nh, H, W, kk, D)
    attn = (q.unsqueeze(-2) @ k_nb.transpose(-2, -1)).squeeze(-2)
    if rpb is not None:
        attn = attn + rpb[:, bias_rows, bias_cols].reshape(nh, H, W, kk)
    attn = attn.softmax(dim=-1)
    # natten2dav
    v_nb = v[:, :, rows, cols].reshape(B, nh, H, W, kk, D)
    out = (attn.unsqueeze(-2) @ v_nb).squeeze(-2)  # (B, heads, H, W, D)
    return out.permute(0, 2, 3, 1, 4)


def neighborhood_attention_cost(batch: int, height: int, width: int, heads: int, head_dim: int,
                                kernel: int | tuple[int, int], *, elem_size: int, rpb: bool = True) -> OpCost:
    """Cost of ``ops.neighborhood_attention_2d`` with a ``kh x kw`` neighbourhood (module docstring)."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    flops_fwd = 4 * batch * heads * height * width * kh * kw * head_dim
    tensor = batch * height * width * heads * head_dim * elem_size
    table = heads * (2 * kh - 1) * (2 * kw - 1) * elem_size if rpb else 0
    return OpCost(flops_fwd=flops_fwd, flops_bwd=flops_fwd * 5 // 2, bytes_fwd=4 * tensor + table,
                  bytes_bwd=8 * tensor + 2 * table)
