"""HiLo attention as the official LITv2 code computes it, in the ops layout, and its cost.

Official code: ziplab/LITv2 ``classification/models/attentions.py`` (``HiLo.hifi`` and ``HiLo.lofi``), from their
projections on (the model keeps ``h_qkv``, ``l_q``, ``l_kv`` and both output projections). Hi-Fi: the map is
partitioned into ``(B, h_groups, s, w_groups, s, .)``, ``transpose(2, 3)``, reshaped / permuted into
``(B, groups, heads, s*s, D)``, ``(q @ k^T) * scale``, softmax, ``@ v``, ``transpose`` / ``reshape`` back. Lo-Fi:
q reshaped / permuted to ``(B, heads, N, D)``, the pooled k / v to ``(B, heads, M, D)``, ``(q @ k^T) * scale``,
softmax, ``@ v``, ``transpose`` / ``reshape``. Scale ``D ** -0.5`` in both. The benchmarks' baseline and the
tests' second oracle.

Maps that are not multiples of ``s`` (the classification code never sees them): the map is zero-padded and the
padded keys get ``-inf``, the op's semantics (partial windows are masked).

Cost (the sum of both paths; conventions in :mod:`ops._cost`; ``s_e`` the element size, ``M = h * w`` pooled
tokens, ``N = H * W``)::

    Hi-Fi: ops.window_attention.official.window_attention_cost(B, H, W, hifi_heads, D, s)
    Lo-Fi: fwd FLOPs = 4 * B * lofi_heads * N * M * D            (q k^T and P v)
           bwd FLOPs = 2.5 * fwd
           fwd bytes = B * lofi_heads * D * (2 N + 2 M) * s_e     (read q, k, v; write o)
           bwd bytes = B * lofi_heads * D * (4 N + 4 M) * s_e     (read q, k, v, o, dO; write dq, dk, dv)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ops._cost import OpCost
from ops.window_attention.official import window_attention_cost

__all__ = ["hifi_partition", "hifi_reverse", "hilo_attention_cost", "hilo_attention_official", "lofi_attention_cost",
           "lofi_attention_official", "padding_mask"]


def hifi_partition(t: torch.Tensor, s: int) -> torch.Tensor:
    """``(B, H, W, heads, D)`` -> ``(B, groups, heads, s*s, D)``, as ``HiLo.hifi``'s partition and reshape."""
    B, H, W, nh, D = t.shape
    hp, wp = -(-H // s) * s, -(-W // s) * s
    x = t.reshape(B, H, W, nh * D)
    if (hp, wp) != (H, W):
        x = F.pad(x, (0, 0, 0, wp - W, 0, hp - H))
    hg, wg = hp // s, wp // s
    x = x.reshape(B, hg, s, wg, s, nh * D).transpose(2, 3)
    return x.reshape(B, hg * wg, s * s, nh, D).permute(0, 1, 3, 2, 4)


def hifi_reverse(x: torch.Tensor, height: int, width: int, s: int) -> torch.Tensor:
    """``(B, groups, heads, s*s, D)`` -> ``(B, H, W, heads, D)``, as ``HiLo.hifi``'s transpose / reshape, cropped."""
    B, _, nh, _, D = x.shape
    hg, wg = -(-height // s), -(-width // s)
    x = x.transpose(2, 3).reshape(B, hg, wg, s, s, nh * D).transpose(2, 3).reshape(B, hg * s, wg * s, nh * D)
    return x[:, :height, :width].reshape(B, height, width, nh, D)


def padding_mask(height: int, width: int, s: int, device, dtype) -> torch.Tensor | None:
    """``(groups, 1, 1, s*s)``: ``-inf`` on the keys a partial window pads; None for whole windows."""
    hg, wg = -(-height // s), -(-width // s)
    if (hg * s, wg * s) == (height, width):
        return None
    valid = F.pad(torch.ones(height, width, device=device), (0, wg * s - width, 0, hg * s - height))
    valid = valid.view(hg, s, wg, s).transpose(1, 2).reshape(hg * wg, 1, 1, s * s)
    return torch.zeros_like(valid).masked_fill(valid == 0, float("-inf")).to(dtype)


def lofi_attention_official(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                            scale: float | None = None) -> torch.Tensor:
    """``HiLo.lofi`` from its projections: ``(B, H, W, heads, D)`` queries against the ``(B, h, w, heads, D)``
    pooled keys / values; ``scale`` default ``D ** -0.5``."""
    B, H, W, nh, D = q.shape
    scale = D ** -0.5 if scale is None else scale
    q = q.reshape(B, H * W, nh, D).permute(0, 2, 1, 3)
    k, v = (t.reshape(B, -1, nh, D).permute(0, 2, 1, 3) for t in (k, v))
    attn = ((q @ k.transpose(-2, -1)) * scale).softmax(dim=-1)
    return (attn @ v).transpose(1, 2).reshape(B, H, W, nh, D)


def hilo_attention_official(hifi_q: torch.Tensor, hifi_k: torch.Tensor, hifi_v: torch.Tensor, lofi_q: torch.Tensor,
                            lofi_k: torch.Tensor, lofi_v: torch.Tensor, window: int, *,
                            scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """HiLo's two paths (module docstring): Hi-Fi heads ``(B, H, W, hifi_heads, D)`` in ``window``-sided windows,
    Lo-Fi queries ``(B, H, W, lofi_heads, D)`` against the pooled ``(B, h, w, lofi_heads, D)`` keys / values.
    Returns ``(hifi, lofi)``, each ``(B, H, W, heads, D)``; ``scale`` default ``D ** -0.5``."""
    B, H, W, _, D = hifi_q.shape
    scale = D ** -0.5 if scale is None else scale
    q, k, v = (hifi_partition(t, window) for t in (hifi_q, hifi_k, hifi_v))
    attn = (q @ k.transpose(-2, -1)) * scale
    pad_mask = padding_mask(H, W, window, q.device, attn.dtype)
    if pad_mask is not None:
        attn = attn + pad_mask
    hifi = hifi_reverse(attn.softmax(dim=-1) @ v, H, W, window)
    return hifi, lofi_attention_official(lofi_q, lofi_k, lofi_v, scale=scale)


def lofi_attention_cost(batch: int, tokens: int, keys: int, heads: int, head_dim: int, *, elem_size: int) -> OpCost:
    """Cost of all ``tokens`` queries against one set of ``keys`` keys per batch and head (module docstring)."""
    flops_fwd = 4 * batch * heads * tokens * keys * head_dim
    unit = batch * heads * head_dim * elem_size
    return OpCost(flops_fwd=flops_fwd, flops_bwd=flops_fwd * 5 // 2,
                  bytes_fwd=(2 * tokens + 2 * keys) * unit, bytes_bwd=(4 * tokens + 4 * keys) * unit)


def hilo_attention_cost(batch: int, height: int, width: int, hifi_heads: int, lofi_heads: int, head_dim: int,
                        window: int, *, elem_size: int) -> OpCost:
    """Cost of ``ops.hilo_attention``: Hi-Fi window attention plus Lo-Fi attention to the pooled map."""
    pooled = -(-height // window) * -(-width // window)
    hifi = window_attention_cost(batch, height, width, hifi_heads, head_dim, window, elem_size=elem_size)
    return hifi + lofi_attention_cost(batch, height * width, pooled, lofi_heads, head_dim, elem_size=elem_size)
