"""Agent attention in plain PyTorch: the specification, the CPU path and the test oracle.

Agent attention (Han et al., "Agent Attention: On the Integration of Softmax and Linear Attention", ECCV 2024,
arXiv 2312.08874) routes ``N`` queries through ``n_agent`` agent tokens ``A`` (the model pools them from the
queries). Per batch and head, with ``scale = head_dim ** -0.5`` by default::

    V_A = softmax_over_keys(scale * A K^T + agent_bias) V          (n_agent, D)   agent aggregation
    out = softmax_over_agents(scale * Q A^T + query_bias) V_A      (N, D)         agent broadcast

``agent_bias`` is ``(heads, n_agent, N_k)``, ``query_bias`` ``(heads, N, n_agent)``: additive, batch-independent
(the model's position biases, built by :func:`agent_bias_maps`). The depthwise-conv branch of the paper is part
of the model, not of this op.

:func:`agent_bias_maps` builds both biases from the official parameters, the same math for every base model
(DeiT, PVT, Swin, CSwin), as the official classification and segmentation code compute them.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ops._utils import no_autocast

__all__ = ["agent_attention_reference", "agent_bias_maps"]


def agent_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    agents: torch.Tensor,
    agent_bias: torch.Tensor | None = None,
    query_bias: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    with no_autocast(q.device):
        return _agent_attention(q, k, v, agents, agent_bias, query_bias, scale)


def _agent_attention(q, k, v, agents, agent_bias, query_bias, scale) -> torch.Tensor:
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    # (B, L, heads, D) -> (B, heads, L, D), fp32.
    qh, kh, vh, ah = (t.float().transpose(1, 2) for t in (q, k, v, agents))
    s1 = (ah * scale) @ kh.transpose(-2, -1)  # (B, heads, n_agent, N_k)
    if agent_bias is not None:
        s1 = s1 + agent_bias.float()
    agent_v = s1.softmax(dim=-1) @ vh  # (B, heads, n_agent, D)
    s2 = (qh * scale) @ ah.transpose(-2, -1)  # (B, heads, N, n_agent)
    if query_bias is not None:
        s2 = s2 + query_bias.float()
    out = s2.softmax(dim=-1) @ agent_v  # (B, heads, N, D)
    return out.transpose(1, 2).to(q.dtype)


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear (align_corners=False) over the last two dims, skipped when the size already matches.

    At equal size the official code's interpolate is the identity, so skipping it changes nothing.
    """
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    lead = x.shape[:-2]
    out = F.interpolate(x.reshape(1, -1, *x.shape[-2:]), size=size, mode="bilinear", align_corners=False)
    return out.reshape(*lead, *size)


def _resize_agents(x: torch.Tensor, grid: tuple[int, int] | None) -> torch.Tensor:
    """(heads, a, L) -> (heads, gh*gw, L): the agent axis, seen as a sqrt(a) x sqrt(a) grid, bilinearly resized."""
    heads, a, length = x.shape
    p = math.isqrt(a)
    if grid is None or tuple(grid) == (p, p):
        return x
    x = x.permute(0, 2, 1).reshape(heads, length, p, p)
    x = F.interpolate(x, size=tuple(grid), mode="bilinear", align_corners=False)
    return x.reshape(heads, length, -1).permute(0, 2, 1)


def agent_bias_maps(
    an_bias: torch.Tensor,
    na_bias: torch.Tensor,
    ah_bias: torch.Tensor | None,
    aw_bias: torch.Tensor | None,
    ha_bias: torch.Tensor | None,
    wa_bias: torch.Tensor | None,
    size: tuple[int, int],
    *,
    agent_grid: tuple[int, int] | None = None,
    cls_agent_bias: torch.Tensor | None = None,
    cls_query_bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two additive biases of :func:`ops.agent_attention.agent_attention` from the official parameters.

    Args (official parameter shapes, ``a`` agents, ``heads`` heads, ``(h0, w0)`` the training token grid):
        an_bias, na_bias: ``(heads, a, gh, gw)`` (7 x 7 in every released model), bilinearly resized to ``size``.
        ah_bias ``(1, heads, a, h0, 1)`` + aw_bias ``(1, heads, a, 1, w0)``: separable agent->token term;
        ha_bias ``(1, heads, h0, 1, a)`` + wa_bias ``(1, heads, 1, w0, a)``: separable token->agent term.
            Their sum is bilinearly resized from ``(h0, w0)`` to ``size`` when they differ (the official
            segmentation code; an identity at the training size). ``None`` pairs are left out.
        size: ``(h, w)``, the token grid the biases are built for (``N = h * w``).
        agent_grid: ``(gh, gw)`` agents to resize the agent axis to (viewed as ``sqrt(a) x sqrt(a)``), as the
            official segmentation code does for its ``downstream_agent_shape``; ``None`` keeps ``a``.
        cls_agent_bias ``(1, heads, a, 1)``, cls_query_bias ``(1, heads, 1, a)``: Agent-DeiT's ``ac_bias`` /
            ``ca_bias``, prepended as the class token's key column / query row (the token sequence is then
            ``[cls, patches]`` and ``N = 1 + h * w``). Not resized along the agent axis; give both or neither.

    Returns:
        ``agent_bias`` ``(heads, a', N)`` and ``query_bias`` ``(heads, N, a')``, in the parameters' dtype.
    """
    h, w = size
    heads, a = an_bias.shape[:2]
    if na_bias.shape[:2] != (heads, a) or an_bias.dim() != 4 or na_bias.dim() != 4:
        raise ValueError(
            f"agent_bias_maps: an_bias and na_bias must be (heads, agents, gh, gw) with one (heads, agents), got "
            f"{tuple(an_bias.shape)} and {tuple(na_bias.shape)}"
        )
    if math.isqrt(a) ** 2 != a and agent_grid is not None:
        raise ValueError(f"agent_bias_maps: agent_grid needs a square agent count, got {a} agents")
    if (ah_bias is None) != (aw_bias is None) or (ha_bias is None) != (wa_bias is None):
        raise ValueError("agent_bias_maps: give ah_bias with aw_bias and ha_bias with wa_bias (or neither of a pair)")
    if (cls_agent_bias is None) != (cls_query_bias is None):
        raise ValueError("agent_bias_maps: give cls_agent_bias and cls_query_bias together (or neither)")
    _check_sep("ah_bias", ah_bias, (1, heads, a, None, 1))
    _check_sep("aw_bias", aw_bias, (1, heads, a, 1, None))
    _check_sep("ha_bias", ha_bias, (1, heads, None, 1, a))
    _check_sep("wa_bias", wa_bias, (1, heads, 1, None, a))

    b1 = _resize(an_bias, (h, w))  # (heads, a, h, w)
    b2 = _resize(na_bias, (h, w))
    if ah_bias is not None:
        b1 = b1 + _resize((ah_bias + aw_bias)[0], (h, w))
    if ha_bias is not None:
        b2 = b2 + _resize((ha_bias + wa_bias)[0].permute(0, 3, 1, 2), (h, w))  # (heads, a, h, w)
    agent_bias = _resize_agents(b1.reshape(heads, a, h * w), agent_grid)
    query_bias = _resize_agents(b2.reshape(heads, a, h * w), agent_grid).transpose(1, 2)
    if cls_agent_bias is not None:
        n_agent = agent_bias.shape[1]
        if tuple(cls_agent_bias.shape) != (1, heads, n_agent, 1) or tuple(cls_query_bias.shape) != (1, heads, 1,
                                                                                                      n_agent):
            raise ValueError(
                f"agent_bias_maps: cls_agent_bias must be {(1, heads, n_agent, 1)} and cls_query_bias "
                f"{(1, heads, 1, n_agent)}, got {tuple(cls_agent_bias.shape)} and {tuple(cls_query_bias.shape)}"
            )
        agent_bias = torch.cat([cls_agent_bias[0], agent_bias], dim=-1)
        query_bias = torch.cat([cls_query_bias[0], query_bias], dim=-2)
    return agent_bias, query_bias


def _check_sep(name: str, t: torch.Tensor | None, pattern: tuple) -> None:
    if t is None:
        return
    if t.dim() != len(pattern) or any(p is not None and s != p for s, p in zip(t.shape, pattern)):
        want = "(" + ", ".join("*" if p is None else str(p) for p in pattern) + ")"
        raise ValueError(f"agent_bias_maps: {name} must be {want}, got {tuple(t.shape)}")
