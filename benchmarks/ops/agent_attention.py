"""``agent_attention`` (Agent-Swin / -PVT / -DeiT / -CSwin): ``N`` queries -> ``a`` agent tokens -> keys / values.

Inputs, as the models hand them to the op: a packed ``qkv`` ``(B, N, 3, heads, D)``, the agent tokens
``(B, a, heads, D)`` (the models pool them from q), and the two position-bias maps the models build from their
parameters (``ops.agent_bias_maps``): ``agent_bias`` ``(heads, a, N)`` and ``query_bias`` ``(heads, N, a)``.
Gradients w.r.t. all four. Output ``(B, N, heads, D)``.

Candidates:

* ``official`` -- :func:`ops.agent_attention.official.agent_attention_official` (``AgentAttention.forward`` of
  the Swin / PVT classification code, the bias maps materialised per sample as the official code does).
* ``sdpa`` -- the two stages as two ``F.scaled_dot_product_attention`` calls with the bias maps as float
  ``attn_mask`` (broadcast over the batch, not materialised): agents attend to k / v, then q attends to
  (agents, agent_v).
* ``reference`` / ``triton`` -- :func:`ops.agent_attention` with that backend.

"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from benchmarks.harness import BenchInputs, OpBench, packed_qkv
from ops._cost import OpCost, elem_size
from ops.agent_attention.official import agent_attention_cost, agent_attention_official

__all__ = ["BENCH", "AgentCase"]


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
    q, k, v = inp.leaves[0].unbind(2)
    return agent_attention_official(q, k, v, inp.agents, agent_bias=inp.agent_bias, query_bias=inp.query_bias)


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
