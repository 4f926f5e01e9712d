"""attnzoo's attention primitives: one folder per primitive, each with a PyTorch reference and Triton kernels.

Tensor layout, the same for every op: ``(batch, *spatial, heads, head_dim)`` -- channels last, heads split
off the channel dimension. Spatial ops take ``(B, H, W, heads, head_dim)``; ops that are global over the
tokens take ``(B, N, heads, head_dim)``. This is what ``Linear(C, 3C)`` on channels-last tokens gives after a
``reshape(..., 3, heads, head_dim)``, so models split q/k/v without a transpose or copy. Outputs have the
layout and dtype of ``q``; accumulation is fp32 for fp16/bf16 inputs.

Backend choice (``reference`` / ``triton``) is documented in :mod:`ops._backend`; ``with ops.use_backend(name):``
sets it for a block. What every op shares lives once: the argument checks in :mod:`ops._checks`, the custom-op
registration (forward / backward ops, fakes, autograd) in :mod:`ops._custom_op`.
"""
from ops._backend import BACKENDS, ENV_BACKEND, use_backend
from ops.agent_attention import agent_attention, agent_bias_maps
from ops.bilevel_routing_attention import bilevel_routing_attention
from ops.channel_attention import channel_attention
from ops.hilo_attention import hilo_attention
from ops.neighborhood_attention import neighborhood_attention_2d
from ops.overlapping_window_attention import overlapping_window_attention
from ops.rala import rala
from ops.window_attention import window_attention
from ops.window_grid_attention import window_grid_attention

__all__ = [
    "BACKENDS", "ENV_BACKEND", "agent_attention", "agent_bias_maps", "bilevel_routing_attention",
    "channel_attention", "hilo_attention", "neighborhood_attention_2d", "overlapping_window_attention", "rala",
    "use_backend", "window_attention", "window_grid_attention",
]
