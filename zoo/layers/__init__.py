"""Blocks that several zoo model families share and ``timm.layers`` lacks (architecture only: the attention math
itself lives in ``ops/``)."""
from zoo.layers.agent import (
    AGENT_BIASES, AgentAttention, AgentAttentionBase, AgentBlock, parse_attn_type, resize_agent_bias, resize_pos_embed,
    unwrap_checkpoint,
)

__all__ = [
    'AGENT_BIASES', 'AgentAttention', 'AgentAttentionBase', 'AgentBlock', 'parse_attn_type', 'resize_agent_bias',
    'resize_pos_embed', 'unwrap_checkpoint',
]
