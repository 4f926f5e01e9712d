"""``agent_attention`` (Agent-Swin / -PVT / -DeiT / -CSwin): ``N`` queries -> ``a`` agent tokens -> keys / values.

Inputs, as the models hand them to the op: a packed ``qkv`` ``(B, N, 3, heads, D)``, the agent tokens
``(B, a, heads, D)`` (the models pool them from q), and the two position-bias maps the models build from their
parameters (``ops.agent_bias_maps``): ``agent_bias`` ``(heads, a, N)`` and ``query_bias`` ``(heads, N, a)``.
Gradients w.r.t. all four. Output ``(B, N, heads, D)``.

Candidates:

* ``official`` -- ``AgentAttention.forward`` of LeapLabTHU/Agent-Attention (Swin / PVT classification code)
  between its projections and its DWC branch: ``permute`` to ``(B, heads, N, D)``, the biases materialised
  per sample with ``.repeat(b, 1, 1, 1)`` as the official code does, ``softmax((agents * scale) @ k^T +
  agent_bias) @ v`` (agent aggregation), ``softmax((q * scale) @ agents^T + query_bias) @ agent_v`` (agent
  broadcast), ``transpose`` back. Scale ``D ** -0.5`` for both softmaxes.
* ``sdpa`` -- the two stages as two ``F.scaled_dot_product_attention`` calls with the bias maps as float
  ``attn_mask`` (broadcast over the batch, not materialised): agents attend to k / v, then q attends to
  (agents, agent_v).
* ``reference`` / ``triton`` -- :func:`ops.agent_attention` with that backend.

Cost (``T = B N heads D``, ``T_a = B a heads D``, ``s`` the element size; the bias maps ``2 heads a N s``)::

    fwd FLOPs = 8 * B * heads * N * a * D      (agents k^T, P v; q agents^T, P agent_v)
    bwd FLOPs = 2.5 * fwd                       (FlashAttention's count per stage: scores recomputed)
    fwd bytes = (4 T + T_a) s + maps            (read q, k, v, agents, the maps; write o)
    bwd bytes = (8 T + 2 T_a) s + 2 maps        (read q, k, v, agents, o, dO, the maps; write dq, dk, dv,
                                                 dagents and the maps' gradients)

The ``(B, heads, a, D)`` agent values between the stages are not counted (``a << N``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from zoo.engine.benchops import BenchInputs, OpBench, elem_size, packed_qkv
from zoo.engine.flops import OpCost

__all__ = ["BENCH", "AgentCase", "agent_attention_cost", "agent_official", "agent_sdpa"]


def agent_attention_cost(batch: int, tokens: int, heads: int, head_dim: int, agents: int, *, elem_size: int,
                         bias: bool = True) -> OpCost:
    """Cost of ``ops.agent_attention`` with ``N = tokens`` queries and keys (module docstring)."""
    flops_fwd = 8 * batch * heads * tokens * agents * head_dim
    t = batch * tokens * heads * head_dim * elem_size
    t_a = batch * agents * heads * head_dim * elem_size
    maps = 2 * heads * agents * tokens * elem_size if bias else 0
    return OpCost(flops_fwd=flops_fwd, flops_bwd=flops_fwd * 5 // 2, bytes_fwd=4 * t + t_a + maps,
                  bytes_bwd=8 * t + 2 * t_a + 2 * maps)


@dataclass(frozen=True)
class AgentCase:
    """Agent attention over a ``height x width`` token map (``N = H W``), ``agents`` agent tokens, with
    (``bias``) or without the two position-bias maps."""

    batch: int
    height: int
    width: int
    heads: int
    head_dim: int
    agents: int
    bias: bool = True

    @property
    def tokens(self) -> int:
        return self.height * self.width

    @property
    def label(self) -> str:
        return (f"{self.batch}x{self.height}x{self.width}x{self.heads}x{self.head_dim} a{self.agents}"
                f"{'+bias' if self.bias else ''}")

    def cost(self, dtype: torch.dtype) -> OpCost:
        return agent_attention_cost(self.batch, self.tokens, self.heads, self.head_dim, self.agents,
                                    elem_size=elem_size(dtype), bias=self.bias)


def _make_inputs(case: AgentCase, device, dtype, grad: bool) -> BenchInputs:
    B, N, nh, D, a = case.batch, case.tokens, case.heads, case.head_dim, case.agents
    qkv = packed_qkv((B, N, 3, nh, D), device, dtype, grad)
    agents = packed_qkv((B, a, nh, D), device, dtype, grad)
    leaves = [qkv, agents]
    agent_bias = query_bias = None
    if case.bias:
        agent_bias = (0.5 * torch.randn(nh, a, N, device=device, dtype=dtype)).requires_grad_(grad)
        query_bias = (0.5 * torch.randn(nh, N, a, device=device, dtype=dtype)).requires_grad_(grad)
        leaves += [agent_bias, query_bias]
    return BenchInputs(leaves=leaves, extra=dict(agents=agents, agent_bias=agent_bias, query_bias=query_bias))


def agent_official(inp: BenchInputs, case: AgentCase) -> torch.Tensor:
    qkv = inp.leaves[0]
    b = qkv.shape[0]
    scale = case.head_dim ** -0.5
    q, k, v = qkv.permute(2, 0, 3, 1, 4)  # (B, heads, N, D) each
    agent_tokens = inp.agents.permute(0, 2, 1, 3)  # (B, heads, a, D)
    agent_attn = (agent_tokens * scale) @ k.transpose(-2, -1)
    if inp.agent_bias is not None:
        agent_attn = agent_attn + inp.agent_bias.unsqueeze(0).repeat(b, 1, 1, 1)
    agent_v = agent_attn.softmax(dim=-1) @ v
    q_attn = (q * scale) @ agent_tokens.transpose(-2, -1)
    if inp.query_bias is not None:
        q_attn = q_attn + inp.query_bias.unsqueeze(0).repeat(b, 1, 1, 1)
    x = q_attn.softmax(dim=-1) @ agent_v
    return x.transpose(1, 2)  # (B, N, heads, D)


def agent_sdpa(inp: BenchInputs, case: AgentCase) -> torch.Tensor:
    q, k, v = inp.leaves[0].permute(2, 0, 3, 1, 4)
    agents = inp.agents.permute(0, 2, 1, 3)
    scale = case.head_dim ** -0.5
    mask1 = inp.agent_bias.unsqueeze(0) if inp.agent_bias is not None else None
    mask2 = inp.query_bias.unsqueeze(0) if inp.query_bias is not None else None
    agent_v = F.scaled_dot_product_attention(agents, k, v, attn_mask=mask1, scale=scale)
    return F.scaled_dot_product_attention(q, agents, agent_v, attn_mask=mask2, scale=scale).transpose(1, 2)


def _ours(backend: str):
    def run(inp: BenchInputs, case: AgentCase) -> torch.Tensor:
        import ops

        q, k, v = inp.leaves[0].unbind(2)
        return ops.agent_attention(q, k, v, inp.agents, agent_bias=inp.agent_bias, query_bias=inp.query_bias,
                                   backend=backend)

    return run


def _stages(batch: int, img: int, dims, heads, agents=(9, 16, 49)) -> list[AgentCase]:
    """Agent stages 1-3 (strides 4, 8, 16) at img x img: attention is global over the stage's map in Agent-Swin
    (window 56 >= every map) and Agent-PVT (agent sr 1)."""
    return [AgentCase(batch, img // 4 // 2 ** i, img // 4 // 2 ** i, h, d // h, a)
            for i, (d, h, a) in enumerate(zip(dims, heads, agents))]


_SWIN_T = dict(dims=(96, 192, 384), heads=(3, 6, 12))  # head_dim 32
_PVT_T = dict(dims=(64, 128, 320), heads=(1, 2, 5))  # head_dim 64

# agent_swin_t_224 / agent_pvt_t_224: stages 1-3 at 224 (agents 9 / 16 / 49), batch 64 per GPU (the official
# default is 128; 64 keeps the official formulation's per-sample bias copies modest). agent_swin_t_scaling: Agent-
# Swin-T's stage 1 (3 heads of 32, 9 agents) at 224, 384, 512, 768 and 1024 (3136 .. 65536 tokens), batch 4: the
# cost grows linearly in N. tiny: CPU sizes, odd maps, a = 4 and 9, one case without the bias maps.
BENCH = OpBench(
    name="agent_attention",
    presets={
        "agent_swin_t_224": _stages(64, 224, **_SWIN_T),
        "agent_pvt_t_224": _stages(64, 224, **_PVT_T),
        "agent_swin_t_scaling": [AgentCase(4, s // 4, s // 4, 3, 32, 9) for s in (224, 384, 512, 768, 1024)],
        "tiny": [AgentCase(2, 5, 7, 2, 16, 4), AgentCase(1, 9, 11, 3, 8, 9), AgentCase(2, 6, 5, 1, 8, 4, bias=False)],
    },
    candidates={"official": agent_official, "sdpa": agent_sdpa, "reference": _ours("reference"),
                "triton": _ours("triton")},
    make_inputs=_make_inputs,
    case_type=AgentCase,
    shape_fields="B,H,W,heads,D,agents",
)
