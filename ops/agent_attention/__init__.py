"""`agent_attention`: queries -> a few agent tokens -> keys/values (Agent-DeiT / -PVT / -Swin / -CSwin)."""
from __future__ import annotations

import torch

from ops._backend import resolve_backend
from ops._checks import TOKENS, check_floating, check_rank, check_shape
from ops.agent_attention.reference import agent_attention_reference, agent_bias_maps

__all__ = ["agent_attention", "agent_bias_maps"]

_OP = "agent_attention"


def _check(q, k, v, agents, agent_bias, query_bias) -> None:
    check_rank(_OP, "q", q, TOKENS)
    batch, n, heads, head_dim = q.shape
    if k.dim() != 4 or k.shape[0] != batch or k.shape[2:] != q.shape[2:]:
        raise ValueError(
            f"{_OP}: k must be (B, N_k, heads, head_dim) with q's B, heads, head_dim = {(batch, heads, head_dim)}, "
            f"got {tuple(k.shape)}"
        )
    if k.shape[1] == 0:
        raise ValueError(f"{_OP}: k and v need at least one token (N_k >= 1), got {tuple(k.shape)}")
    if v.shape != k.shape:
        raise ValueError(f"{_OP}: v must have k's shape {tuple(k.shape)}, got {tuple(v.shape)}")
    if agents.dim() != 4 or agents.shape[0] != batch or agents.shape[2:] != q.shape[2:] or agents.shape[1] == 0:
        raise ValueError(
            f"{_OP}: agents must be (B, n_agent, heads, head_dim) with q's B, heads, head_dim = "
            f"{(batch, heads, head_dim)} and n_agent >= 1, got {tuple(agents.shape)}"
        )
    check_floating(_OP, "q, k, v, agents", q, k, v, agents)
    n_agent, n_k = agents.shape[1], k.shape[1]
    for name, bias, want in (("agent_bias", agent_bias, (heads, n_agent, n_k)),
                             ("query_bias", query_bias, (heads, n, n_agent))):
        check_shape(_OP, name, bias, want)
        if bias is not None and not bias.is_floating_point():
            raise ValueError(f"{_OP}: {name} must be floating point, got {bias.dtype}")


def agent_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    agents: torch.Tensor,
    *,
    agent_bias: torch.Tensor | None = None,
    query_bias: torch.Tensor | None = None,
    scale: float | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Agent attention: agents aggregate the keys/values, then every query attends to the agents.

    Per batch and head (see :mod:`ops.agent_attention.reference` for the exact semantics)::

        V_A = softmax_keys(scale * agents k^T + agent_bias) v
        out = softmax_agents(scale * q agents^T + query_bias) V_A

    Args:
        q: ``(B, N, heads, head_dim)``.
        k, v: ``(B, N_k, heads, head_dim)`` (``N_k = N`` in every released model).
        agents: ``(B, n_agent, heads, head_dim)``, e.g. the model's average-pooled q.
        agent_bias: optional ``(heads, n_agent, N_k)`` added before the softmax over the keys.
        query_bias: optional ``(heads, N, n_agent)`` added before the softmax over the agents. Both biases
            receive gradients; :func:`agent_bias_maps` builds them from the official parameters.
        scale: score scale, default ``head_dim ** -0.5`` (the official code's, for both stages).
        backend: ``'reference'`` or ``'triton'``; default from :mod:`ops._backend`.

    Returns:
        ``(B, N, heads, head_dim)`` in the dtype of ``q``.
    """
    _check(q, k, v, agents, agent_bias, query_bias)
    if resolve_backend(_OP, backend, q, k, v, agents, agent_bias, query_bias) == "reference":
        return agent_attention_reference(q, k, v, agents, agent_bias, query_bias, scale)
    from ops.agent_attention.triton import agent_attention_triton

    return agent_attention_triton(q, k, v, agents, agent_bias, query_bias, scale)
