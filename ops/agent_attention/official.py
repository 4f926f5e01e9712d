"""Agent attention as the official Agent-Attention code computes it, in the ops layout, and its cost.

Official code: LeapLabTHU/Agent-Attention ``agent_transformer/models/agent_swin.py`` / ``agent_pvt.py``
(``AgentAttention.forward`` between its projections and its DWC branch) and, for the position-bias maps at another
map size, the segmentation backbone's formula (``downstream/segmentation/mmseg/models/backbones/agent_pvt.py``:
bilinear to the map, then the agent axis to the ``downstream_agent_shape`` grid).

:func:`agent_attention_official`: from q, k, v ``(B, N, heads, D)`` (k, v may have another token count, PVT's
reduced keys) and the agent tokens ``(B, a, heads, D)``: ``permute`` to ``(B, heads, ., D)``, the bias maps
materialised per sample with ``.repeat(b, 1, 1, 1)`` as the official code does, ``softmax((agents * scale) @ k^T +
agent_bias) @ v`` (agent aggregation), ``softmax((q * scale) @ agents^T + query_bias) @ agent_v`` (agent
broadcast), ``transpose`` back. Scale ``D ** -0.5`` for both softmaxes. :func:`agent_bias_maps_official`: the two
maps ``(heads, a, N)`` / ``(heads, N, a)`` from the official bias parameters. The benchmarks' baseline and the
tests' second oracle.

Cost (``T = B N heads D``, ``T_a = B a heads D``, ``s`` the element size, the bias maps ``2 heads a N s``;
conventions in :mod:`ops._cost`)::

    fwd FLOPs = 8 * B * heads * N * a * D      (agents k^T, P v; q agents^T, P agent_v)
    bwd FLOPs = 2.5 * fwd                       (per stage: scores recomputed)
    fwd bytes = (4 T + T_a) s + maps            (read q, k, v, agents, the maps; write o)
    bwd bytes = (8 T + 2 T_a) s + 2 maps        (read q, k, v, agents, o, dO, the maps; write dq, dk, dv,
                                                 dagents and the maps' gradients)

The ``(B, heads, a, D)`` agent values between the stages are not counted (``a << N``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ops._cost import OpCost

__all__ = ["agent_attention_cost", "agent_attention_official", "agent_bias_maps_official"]


def agent_attention_official(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, agents: torch.Tensor, *,
                             agent_bias: torch.Tensor | None = None, query_bias: torch.Tensor | None = None,
                             scale: float | None = None) -> torch.Tensor:
    """The official agent attention core on ``(B, N, heads, D)`` q and ``(B, N_k, heads, D)`` k, v, with agent
    tokens ``(B, a, heads, D)`` and optional maps ``agent_bias`` ``(heads, a, N_k)`` / ``query_bias``
    ``(heads, N, a)``; returns ``(B, N, heads, D)``."""
    b = q.shape[0]
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    q, k, v, agent_tokens = (t.permute(0, 2, 1, 3) for t in (q, k, v, agents))  # (B, heads, ., D)
    agent_attn = (agent_tokens * scale) @ k.transpose(-2, -1)
    if agent_bias is not None:
        agent_attn = agent_attn + agent_bias.unsqueeze(0).repeat(b, 1, 1, 1)
    agent_v = agent_attn.softmax(dim=-1) @ v
    q_attn = (q * scale) @ agent_tokens.transpose(-2, -1)
    if query_bias is not None:
        q_attn = q_attn + query_bias.unsqueeze(0).repeat(b, 1, 1, 1)
    x = q_attn.softmax(dim=-1) @ agent_v
    return x.transpose(1, 2)


def agent_bias_maps_official(an: torch.Tensor, na: torch.Tensor, ah: torch.Tensor, aw: torch.Tensor,
                             ha: torch.Tensor, wa: torch.Tensor, size: tuple[int, int],
                             agent_grid: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The official segmentation formula of the two bias maps: ``an`` / ``na`` ``(heads, a, 7, 7)`` bilinear to the
    ``size`` map plus ``ah + aw`` / ``ha + wa`` bilinear likewise, then (``agent_grid``) the agent axis resampled to
    the downstream agent grid. Returns ``(agent_bias (heads, a, N), query_bias (heads, N, a))``."""
    heads, a = an.shape[:2]
    h, w = size
    p = int(math.sqrt(a))
    b1 = F.interpolate(an, size=(h, w), mode="bilinear")
    b1 = b1 + F.interpolate((ah + aw).squeeze(0), size=(h, w), mode="bilinear")
    b2 = F.interpolate(na, size=(h, w), mode="bilinear")
    b2 = b2 + F.interpolate((ha + wa).squeeze(0).permute(0, 3, 1, 2), size=(h, w), mode="bilinear")
    out = []
    for b in (b1, b2):
        b = b.reshape(heads, p, p, h * w).permute(0, 3, 1, 2)
        if agent_grid is not None:
            b = F.interpolate(b, size=agent_grid, mode="bilinear")
        out.append(b.reshape(heads, h * w, -1))
    return out[0].transpose(1, 2), out[1]


def agent_attention_cost(batch: int, tokens: int, heads: int, head_dim: int, agents: int, *, elem_size: int,
                         bias: bool = True) -> OpCost:
    """Cost of ``ops.agent_attention`` with ``N = tokens`` queries and keys (module docstring)."""
    flops_fwd = 8 * batch * heads * tokens * agents * head_dim
    t = batch * tokens * heads * head_dim * elem_size
    t_a = batch * agents * heads * head_dim * elem_size
    maps = 2 * heads * agents * tokens * elem_size if bias else 0
    return OpCost(flops_fwd=flops_fwd, flops_bwd=flops_fwd * 5 // 2, bytes_fwd=4 * t + t_a + maps,
                  bytes_bwd=8 * t + 2 * t_a + 2 * maps)
