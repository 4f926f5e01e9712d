"""Window + grid attention as the official EMOv2 code computes it, in the ops layout, and its cost.

Official code: zhangzjn/EMOv2 ``model/lib_emo/emo2.py`` (``EW_MHSA_Hybrid.forward``), from its ``qk`` / ``v``
convolutions on. The official code is NCHW: the ops-layout inputs become its ``(B, C, H, W)`` tensors (q and k
concatenated on the channels as the ``qk`` convolution gives them; v a free view), then what the module does:
``F.pad`` to multiples of ``ws``, the einops partitions ``b c (h1 n1) (w1 n2) -> (b n1 n2) c h1 w1`` (remote, the
dilated grid) and ``b c (n1 h1) (n2 w1) -> (b n1 n2) c h1 w1`` (close, the windows) with ``.contiguous()``
(written as the view / permute / reshape einops performs), ``b (qk heads dim_head) h w -> qk b heads (h w)
dim_head``, ``(q @ k^T) * scale``, softmax, ``@ v`` per partition, the inverse rearranges, the sum, the crop. The
benchmarks' baseline and the tests' second oracle.

Maps that are not multiples of ``ws``: the official module zero-pads its *input* (padded positions become keys
with k = the conv bias); the op masks them instead, so here the padded keys get ``-inf`` -- the op's function.

Cost (conventions in :mod:`ops._cost`; ``s_e`` the element size; per partition, ``sum_g n_g^2`` over its groups
of ``n_g`` valid positions -- for whole windows ``B * G * N^2`` with ``G = H W / N`` groups of ``N = ws^2``;
``T_qk = B H W heads D``, ``T_v = B H W heads Dv``)::

    fwd FLOPs = 2 * B * heads * (D + Dv) * (sum_window n^2 + sum_grid n^2)     (q k^T and P v, both partitions)
    bwd FLOPs = 2 * B * heads * (3 D + 2 Dv) * (sum_window n^2 + sum_grid n^2)  (q k^T recomputed, dV, dP, dQ,
                                                                                 dK: FlashAttention's count)
    fwd bytes = (2 T_qk + 2 T_v) * s_e      (read q, k, v; write o -- both partitions in one pass)
    bwd bytes = (4 T_qk + 4 T_v) * s_e      (read q, k, v, o, dO; write dq, dk, dv)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ops._cost import OpCost

__all__ = ["window_grid_attention_cost", "window_grid_attention_official"]


def _partition(x: torch.Tensor, n1: int, n2: int, s: int, grid: bool) -> torch.Tensor:
    """einops ``b c (h1 n1) (w1 n2) -> (b n1 n2) c h1 w1`` (grid, remote) or ``b c (n1 h1) (n2 w1) -> ...``
    (window, close) followed by ``.contiguous()``."""
    b, c = x.shape[:2]
    if grid:
        x = x.reshape(b, c, s, n1, s, n2).permute(0, 3, 5, 1, 2, 4)
    else:
        x = x.reshape(b, c, n1, s, n2, s).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b * n1 * n2, c, s, s)


def _unpartition(x: torch.Tensor, n1: int, n2: int, grid: bool) -> torch.Tensor:
    """The inverse rearranges ``(b n1 n2) c h1 w1 -> b c (h1 n1) (w1 n2)`` / ``-> b c (n1 h1) (n2 w1)``."""
    _, c, s, _ = x.shape
    x = x.reshape(-1, n1, n2, c, s, s)
    x = x.permute(0, 3, 4, 1, 5, 2) if grid else x.permute(0, 3, 1, 4, 2, 5)
    return x.reshape(-1, c, n1 * s, n2 * s)


def _padding_mask(height: int, width: int, s: int, grid: bool, batch: int, device, dtype) -> torch.Tensor | None:
    """``(B * G, 1, 1, s*s)``: ``-inf`` on the padded keys of every group of one partition; None for whole maps."""
    hp, wp = -(-height // s) * s, -(-width // s) * s
    if (hp, wp) == (height, width):
        return None
    valid = F.pad(torch.ones(1, 1, height, width, device=device), (0, wp - width, 0, hp - height))
    valid = _partition(valid, hp // s, wp // s, s, grid).reshape(-1, 1, 1, s * s)
    return torch.zeros_like(valid).masked_fill(valid == 0, float("-inf")).to(dtype).repeat(batch, 1, 1, 1)


def window_grid_attention_official(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int, *,
                                   scale: float | None = None) -> torch.Tensor:
    """``EW_MHSA_Hybrid``'s attention on ``(B, H, W, heads, D)`` q, k and ``(B, H, W, heads, Dv)`` v: the window
    and the grid partition of ``window x window`` groups, summed (module docstring); ``scale`` default
    ``D ** -0.5``."""
    B, H, W, nh, D = q.shape
    Dv = v.shape[-1]
    s = window
    scale = D ** -0.5 if scale is None else scale
    # the official module's NCHW tensors: qk as its convolution gives it (q channels, then k), v a free view
    qk = torch.cat((q.reshape(B, H, W, nh * D), k.reshape(B, H, W, nh * D)), dim=-1).permute(0, 3, 1, 2)
    v = v.reshape(B, H, W, nh * Dv).permute(0, 3, 1, 2)
    pad_r, pad_b = (s - W % s) % s, (s - H % s) % s
    if pad_r or pad_b:
        qk, v = F.pad(qk, (0, pad_r, 0, pad_b)), F.pad(v, (0, pad_r, 0, pad_b))
    n1, n2 = (H + pad_b) // s, (W + pad_r) // s
    out = 0
    for grid in (True, False):  # remote, close
        qk_p = _partition(qk, n1, n2, s, grid)
        # 'b (qk heads dim_head) h w -> qk b heads (h w) dim_head'
        qk_p = qk_p.reshape(-1, 2, nh, D, s * s).permute(1, 0, 2, 4, 3).contiguous()
        attn = (qk_p[0] @ qk_p[1].transpose(-2, -1)) * scale
        mask = _padding_mask(H, W, s, grid, B, attn.device, attn.dtype)
        if mask is not None:
            attn = attn + mask
        attn = attn.softmax(dim=-1)
        # 'b (heads dim_head) h w -> b heads (h w) dim_head'
        v_p = _partition(v, n1, n2, s, grid).reshape(-1, nh, Dv, s * s).transpose(-2, -1).contiguous()
        # 'b heads (h w) dim_head -> b (heads dim_head) h w'
        x = (attn @ v_p).transpose(-2, -1).reshape(-1, nh * Dv, s, s)
        out = out + _unpartition(x, n1, n2, grid)
    if pad_r or pad_b:
        out = out[:, :, :H, :W].contiguous()
    return out.permute(0, 2, 3, 1).reshape(B, H, W, nh, Dv)


def _valid_sq(length: int, window: int, grid: bool) -> int:
    """sum over the groups along one axis of (valid positions)^2."""
    groups = -(-length // window)
    if grid:  # group a holds positions i * groups + a, i < window
        counts = [sum(1 for i in range(window) if i * groups + a < length) for a in range(groups)]
    else:
        counts = [min(window, length - a * window) for a in range(groups)]
    return sum(c * c for c in counts)


def window_grid_attention_cost(batch: int, height: int, width: int, heads: int, head_dim: int, v_dim: int,
                               window: int, *, elem_size: int) -> OpCost:
    """Cost of ``ops.window_grid_attention(..., partition='both')`` (module docstring)."""
    pairs = sum(_valid_sq(height, window, g) * _valid_sq(width, window, g) for g in (False, True))
    t_qk = batch * height * width * heads * head_dim * elem_size
    t_v = batch * height * width * heads * v_dim * elem_size
    return OpCost(
        flops_fwd=2 * batch * heads * (head_dim + v_dim) * pairs,
        flops_bwd=2 * batch * heads * (3 * head_dim + 2 * v_dim) * pairs,
        bytes_fwd=2 * t_qk + 2 * t_v,
        bytes_bwd=4 * t_qk + 4 * t_v,
    )
