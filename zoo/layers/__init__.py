"""Blocks that several zoo model families share and ``timm.layers`` lacks (architecture only: the attention math
itself lives in ``ops/``)."""
from zoo.layers.agent import (
    AGENT_BIASES, AGENT_PAPER, AgentAttention, AgentAttentionBase, AgentBlock, fit_agent_checkpoint, parse_attn_type,
    per_stage_agent_grids, resize_agent_bias, resize_pos_embed,
)
from zoo.layers.attention import QKVAttention, head_dim_of
from zoo.layers.blocks import PreNormBlock, apply_nchw

__all__ = [
    'AGENT_BIASES', 'AGENT_PAPER', 'AgentAttention', 'AgentAttentionBase', 'AgentBlock', 'fit_agent_checkpoint',
    'parse_attn_type', 'per_stage_agent_grids', 'resize_agent_bias', 'resize_pos_embed', 'PreNormBlock',
    'QKVAttention', 'apply_nchw', 'head_dim_of',
]
