""" Agent attention blocks shared by the Agent-Attention families (Agent-PVT, Agent-DeiT, Agent-Swin, Agent-CSWin)

Paper: `Agent Attention: On the Integration of Softmax and Linear Attention` - https://arxiv.org/abs/2312.08874
(ECCV 2024). Official code: https://github.com/LeapLabTHU/Agent-Attention (no license declared; this is a
reimplementation).

Agent attention over an ``H x W`` token map: ``n_agent`` agent tokens are the adaptive average pool of the
(unscaled) queries to a ``sqrt(n_agent)`` square grid (or the ``agent_grid`` of the official segmentation
backbones); they aggregate the keys/values (softmax over the tokens), then every query reads the agents (softmax
over the agents), both with learned position biases; the families add a depth-wise 3x3 conv of V. The math runs
through ``ops.agent_attention`` / ``ops.agent_bias_maps``; this module holds the official parameters and the
plumbing around the op.

* `AgentAttentionBase`: validation, the official bias parameters (``an/na/ah/aw/ha/wa_bias``, plus Agent-DeiT's
  class-token ``ac/ca_bias``) and `AgentAttentionBase.attend` on projected q, k, v tokens. Subclasses own the
  projections and the depth-wise conv, so every family keeps its official parameter names.
* `AgentAttention`: projections (one ``qkv`` Linear, or PVT's ``q`` + ``kv``), ``dwc``, ``proj``; on a
  ``(B, H, W, C)`` map, or on ``[prefix, patches]`` tokens (Agent-DeiT's class token) with the grid given.
* `AgentBlock`: the pre-norm agent-attention + MLP block of Agent-PVT / Agent-DeiT / Agent-Swin.
* What the families' constructors and checkpoint filters share: `parse_attn_type` for the official ``attn_type``
  layout strings, `per_stage_agent_grids`, `resize_agent_bias`, `resize_pos_embed` and `fit_agent_checkpoint` (the
  official ``load_pretrained``'s resizing), `AGENT_PAPER` (the pretrained-cfg fields of the paper) and
  `agent_weights` (those of an official checkpoint).

FX: the ops and the shape-dependent steps are leaves of ``torch.fx`` traces (see `_FX_LEAVES`), so every family
traces.
"""
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Mlp, register_notrace_function, trunc_normal_

from ops import agent_attention, agent_bias_maps
from zoo.layers.attention import head_dim_of
from zoo.layers.blocks import PreNormBlock, apply_nchw
from zoo.weights import official_weights

__all__ = [
    'AGENT_BIASES', 'AGENT_PAPER', 'AgentAttention', 'AgentAttentionBase', 'AgentBlock', 'agent_weights',
    'fit_agent_checkpoint', 'parse_attn_type', 'per_stage_agent_grids', 'resize_agent_bias', 'resize_pos_embed',
]

# The official position-bias parameters of every agent-attention module, in the official registration order.
AGENT_BIASES = ('an_bias', 'na_bias', 'ah_bias', 'aw_bias', 'ha_bias', 'wa_bias')
# The token axis of each separable bias (sized by the training grid).
_BIAS_TOKEN_AXIS = {'ah_bias': 3, 'aw_bias': 4, 'ha_bias': 2, 'wa_bias': 3}

# The pretrained-cfg fields every Agent-Attention family shares.
AGENT_PAPER = dict(
    license='unknown',  # LeapLabTHU/Agent-Attention declares no license
    paper_ids='arXiv:2312.08874',
    paper_name='Agent Attention: On the Integration of Softmax and Linear Attention',
    origin_url='https://github.com/LeapLabTHU/Agent-Attention',
)
# What the official trainer saves (LeapLabTHU/Agent-Attention agent_transformer/utils.py, Swin's save_checkpoint;
# unverified).
_AGENT_CONTAINER = "{'model': state_dict, 'optimizer', 'lr_scheduler', 'max_accuracy', 'epoch', 'config': yacs CfgNode}"


def agent_weights(share_id: str, variant: str) -> Dict[str, Any]:
    """The pretrained-cfg fields of an official Agent-* ImageNet-1k checkpoint on Tsinghua Cloud (the
    LeapLabTHU/Agent-Attention agent_transformer README's links; its Google Drive copies are the same files). A
    share link serves its file with ``?dl=1`` and names no file, so the download is cached as ``<variant>.pth``."""
    return official_weights(f'https://cloud.tsinghua.edu.cn/f/{share_id}/?dl=1', file_name=f'{variant}.pth',
                            container=_AGENT_CONTAINER)



def patch_query_map(q: torch.Tensor, grid: Tuple[int, int], num_prefix_tokens: int, owner: str) -> torch.Tensor:
    """The patch tokens of ``(B, prefix + H*W, C)`` queries as a ``(B, C, H, W)`` map."""
    B, N, C = q.shape
    H, W = grid
    if N != num_prefix_tokens + H * W:
        raise ValueError(f'{owner}: {N} tokens do not match grid {H}x{W} with {num_prefix_tokens} prefix token(s)')
    return q[:, num_prefix_tokens:].reshape(B, H, W, C).permute(0, 3, 1, 2)


def flatten_map(x: torch.Tensor, owner: str) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """A ``(B, H, W, C)`` map as ``(B, H*W, C)`` tokens, and its grid ``(H, W)``."""
    if x.ndim != 4:
        raise ValueError(
            f'{owner}: expected a (B, H, W, C) map; a (B, N, C) token input needs grid=(H, W), got shape '
            f'{tuple(x.shape)}')
    B, H, W, C = x.shape
    return x.reshape(B, H * W, C), (H, W)


# FX leaves called from this module. timm's notrace registry only reaches the globals of a module whose forward FX
# calls, and `AgentAttentionBase.attend` also runs inside other files' modules (Agent-CSWin's branches), so the
# names are wrapped here for every trace.
_FX_LEAVES = ('agent_attention', 'agent_bias_maps', 'flatten_map', 'patch_query_map')
for _name in _FX_LEAVES:
    torch.fx.wrap(_name)


class AgentAttentionBase(nn.Module):
    """Agent position biases and the agent attention on projected tokens; subclasses add projections / conv.

    A subclass calls ``super().__init__(...)``, registers its own modules, then `_create_biases` (the official
    registration order: projections and conv before the biases).

    Args:
        dim: Channels.
        num_heads: Heads.
        agent_num: Agents, a perfect square (pooled on a ``sqrt(agent_num)`` square grid).
        bias_grid: The training token grid ``(h0, w0)``: the size of the separable ``ah/aw/ha/wa`` biases.
        agent_grid: Optional agent grid to pool to instead (the official segmentation backbones'
            ``downstream_agent_shape``); the biases' agent axis is resized to it.
        num_prefix_tokens: 0, or 1 for a class token in front of the patch tokens (Agent-DeiT: it takes part as a
            key / query with its own ``ac_bias`` / ``ca_bias``, and is not pooled into the agents).
    """

    def __init__(
            self,
            dim: int,
            num_heads: int,
            agent_num: int = 49,
            bias_grid: Tuple[int, int] = (7, 7),
            agent_grid: Optional[Tuple[int, int]] = None,
            num_prefix_tokens: int = 0,
    ):
        super().__init__()
        name = type(self).__name__
        head_dim = head_dim_of(name, dim, num_heads)
        side = math.isqrt(agent_num) if agent_num > 0 else 0
        if side < 1 or side * side != agent_num:
            raise ValueError(f'{name}: agent_num must be a perfect square, got {agent_num}')
        if num_prefix_tokens not in (0, 1):
            raise ValueError(f'{name}: num_prefix_tokens must be 0 or 1, got {num_prefix_tokens}')
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.scale = self.head_dim ** -0.5
        self.agent_num = agent_num
        self.pool_size = (side, side)
        self.agent_grid = None if agent_grid is None or tuple(agent_grid) == self.pool_size else tuple(agent_grid)
        self.bias_grid = tuple(bias_grid)
        self.num_prefix_tokens = num_prefix_tokens

    def _create_biases(self, device=None, dtype=None) -> None:
        """The official bias parameters, truncated-normal (std .02) in the official order."""
        dd = dict(device=device, dtype=dtype)
        heads, a = self.num_heads, self.agent_num
        h0, w0 = self.bias_grid
        self.an_bias = nn.Parameter(torch.zeros(heads, a, 7, 7, **dd))
        self.na_bias = nn.Parameter(torch.zeros(heads, a, 7, 7, **dd))
        self.ah_bias = nn.Parameter(torch.zeros(1, heads, a, h0, 1, **dd))
        self.aw_bias = nn.Parameter(torch.zeros(1, heads, a, 1, w0, **dd))
        self.ha_bias = nn.Parameter(torch.zeros(1, heads, h0, 1, a, **dd))
        self.wa_bias = nn.Parameter(torch.zeros(1, heads, 1, w0, a, **dd))
        names = AGENT_BIASES
        if self.num_prefix_tokens:
            self.ac_bias = nn.Parameter(torch.zeros(1, heads, a, 1, **dd))
            self.ca_bias = nn.Parameter(torch.zeros(1, heads, 1, a, **dd))
            names = names + ('ac_bias', 'ca_bias')
        for n in names:
            trunc_normal_(getattr(self, n), std=.02)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
        """Agent attention of projected ``(B, N, C)`` tokens (``N = num_prefix_tokens + H * W``, patches row-major
        over ``grid = (H, W)``) -> ``(B, N, C)``, without the depth-wise conv and output projection."""
        B, N, C = q.shape
        patch_q = patch_query_map(q, grid, self.num_prefix_tokens, type(self).__name__)
        agents = F.adaptive_avg_pool2d(patch_q, self.agent_grid or self.pool_size).flatten(2).transpose(1, 2)
        agents = agents.reshape(B, -1, self.num_heads, self.head_dim)
        cls = dict(cls_agent_bias=self.ac_bias, cls_query_bias=self.ca_bias) if self.num_prefix_tokens else {}
        agent_bias, query_bias = agent_bias_maps(
            *(getattr(self, n) for n in AGENT_BIASES), grid, agent_grid=self.agent_grid, **cls)
        split = lambda t: t.reshape(B, N, self.num_heads, self.head_dim)  # noqa: E731
        out = agent_attention(
            split(q), split(k), split(v), agents, agent_bias=agent_bias, query_bias=query_bias, scale=self.scale)
        return out.reshape(B, N, C)


class AgentAttention(AgentAttentionBase):
    """Agent attention with its projections, the depth-wise 3x3 conv of V (``dwc``) and the output ``proj``.

    Parameter names are the official ones: ``qkv`` (Agent-Swin / Agent-DeiT) or ``q`` + ``kv`` (Agent-PVT,
    ``fused_qkv=False``), ``proj``, ``dwc``, the biases of `AgentAttentionBase`.

    Args:
        dim, num_heads, agent_num, bias_grid, agent_grid, num_prefix_tokens: see `AgentAttentionBase`.
        qkv_bias: Bias of the q / k / v projections.
        proj_drop: Dropout after the output projection.
        fused_qkv: One ``qkv`` Linear (True) or separate ``q`` and ``kv`` Linears (False).
    """

    def __init__(
            self,
            dim: int,
            num_heads: int,
            agent_num: int = 49,
            bias_grid: Tuple[int, int] = (7, 7),
            agent_grid: Optional[Tuple[int, int]] = None,
            qkv_bias: bool = True,
            proj_drop: float = 0.,
            fused_qkv: bool = True,
            num_prefix_tokens: int = 0,
            device=None,
            dtype=None,
    ):
        super().__init__(dim, num_heads, agent_num, bias_grid, agent_grid, num_prefix_tokens)
        dd = dict(device=device, dtype=dtype)
        self.fused_qkv = fused_qkv
        if fused_qkv:
            self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias, **dd)
        else:
            self.q = nn.Linear(dim, dim, bias=qkv_bias, **dd)
            self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias, **dd)
        self.proj = nn.Linear(dim, dim, **dd)
        self.proj_drop = nn.Dropout(proj_drop)
        self.dwc = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim, **dd)
        self._create_biases(**dd)

    def forward(self, x: torch.Tensor, grid: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        """``(B, H, W, C)`` map -> map; or ``(B, prefix + H*W, C)`` tokens with ``grid=(H, W)`` -> tokens (the
        prefix tokens get no depth-wise conv term)."""
        spatial = grid is None
        if spatial:
            x, grid = flatten_map(x, type(self).__name__)
        H, W = grid
        B, N, C = x.shape
        if self.fused_qkv:
            q, k, v = self.qkv(x).reshape(B, N, 3, C).unbind(2)
        else:
            q = self.q(x)
            k, v = self.kv(x).reshape(B, N, 2, C).unbind(2)
        out = self.attend(q, k, v, (H, W))
        P = self.num_prefix_tokens
        dwc = apply_nchw(self.dwc, v[:, P:].reshape(B, H, W, C))
        if spatial:
            out = out.reshape(B, H, W, C) + dwc
        elif P:
            out = torch.cat([out[:, :P], out[:, P:] + dwc.reshape(B, H * W, C)], dim=1)
        else:
            out = out + dwc.reshape(B, H * W, C)
        return self.proj_drop(self.proj(out))


class AgentBlock(PreNormBlock):
    """Pre-norm agent-attention and MLP residuals: ``x += attn(norm1(x)); x += mlp(norm2(x))``.

    Takes what `AgentAttention` takes (a ``(B, H, W, C)`` map, or tokens with ``grid``); parameter names
    ``norm1`` / ``attn`` / ``norm2`` / ``mlp`` (the official and timm's).

    Args:
        dim, num_heads, agent_num, bias_grid, agent_grid, qkv_bias, proj_drop, fused_qkv, num_prefix_tokens: see
            `AgentAttention` (``proj_drop`` is also the MLP's dropout).
        mlp_ratio: MLP hidden width / channels.
        drop_path: Stochastic depth of both residual branches.
        act_layer: MLP activation.
        norm_layer: Norm before the attention and the MLP.
    """

    def __init__(
            self,
            dim: int,
            num_heads: int,
            agent_num: int = 49,
            bias_grid: Tuple[int, int] = (7, 7),
            agent_grid: Optional[Tuple[int, int]] = None,
            mlp_ratio: float = 4.,
            qkv_bias: bool = True,
            proj_drop: float = 0.,
            drop_path: float = 0.,
            act_layer: Callable[..., nn.Module] = nn.GELU,
            norm_layer: Callable[..., nn.Module] = nn.LayerNorm,
            fused_qkv: bool = True,
            num_prefix_tokens: int = 0,
            device=None,
            dtype=None,
    ):
        dd = dict(device=device, dtype=dtype)
        attn = AgentAttention(
            dim, num_heads, agent_num, bias_grid, agent_grid, qkv_bias=qkv_bias, proj_drop=proj_drop,
            fused_qkv=fused_qkv, num_prefix_tokens=num_prefix_tokens, **dd)
        mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=proj_drop, **dd)
        super().__init__(dim, attn, mlp, drop_path=drop_path, norm_layer=norm_layer, **dd)

    def forward(self, x: torch.Tensor, grid: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        return super().forward(x, grid)


def parse_attn_type(attn_type: str, depths: Sequence[int]) -> List[str]:
    """The official layout string -> one string of 'A' / 'B' per stage.

    One letter per stage, 'A' (agent) or 'B' (the base model's attention), or 'M' for a mixed stage whose first
    `n` blocks are A and the rest B, `n` being the number that ends the string (``'AAMB2'``).
    """
    num_stages = len(depths)
    head, tail = attn_type[:num_stages], attn_type[num_stages:]
    if len(head) != num_stages or any(c not in 'ABM' for c in head) or (tail and not tail.isdigit()):
        raise ValueError(
            f"attn_type {attn_type!r}: expected one of 'A', 'B', 'M' per stage ({num_stages} stages), then the "
            f"number of A-blocks of the 'M' stages if any, e.g. 'AAMB2'")
    if ('M' in head) != bool(tail):
        raise ValueError(f"attn_type {attn_type!r}: a number must follow exactly when some stage is 'M'")
    n_mixed = int(tail) if tail else 0
    return [
        c * d if c != 'M' else 'A' * min(n_mixed, d) + 'B' * max(d - n_mixed, 0)
        for c, d in zip(head, depths)
    ]


def per_stage_agent_grids(
        agent_grids: Optional[Sequence[Optional[Tuple[int, int]]]],
        num_stages: int,
        owner: str,
) -> Tuple[Optional[Tuple[int, int]], ...]:
    """One agent grid (or None: the ``sqrt(agent_num)`` square) per stage."""
    if agent_grids is None:
        return (None,) * num_stages
    agent_grids = tuple(agent_grids)
    if len(agent_grids) != num_stages:
        raise ValueError(f'{owner}: agent_grids {agent_grids} must have {num_stages} entries (one per stage)')
    return agent_grids


def resize_agent_bias(bias: torch.Tensor, name: str, shape: Sequence[int]) -> torch.Tensor:
    """Linearly resize an official ``ah/aw/ha/wa`` bias along its token axis to `shape`, as the official
    ``load_pretrained`` does when the training grid changes (e.g. a 224 checkpoint into a 256 model).

    Returns `bias` itself when it already has `shape`; any other axis that differs is an error.
    """
    if name not in _BIAS_TOKEN_AXIS:
        raise ValueError(f'resize_agent_bias: name must be one of {tuple(_BIAS_TOKEN_AXIS)}, got {name!r}')
    axis = _BIAS_TOKEN_AXIS[name]
    shape = tuple(shape)
    if tuple(bias.shape) == shape:
        return bias
    others = lambda t: [n for i, n in enumerate(t) if i != axis]  # noqa: E731
    if bias.dim() != 5 or len(shape) != 5 or others(bias.shape) != others(shape):
        raise ValueError(f'resize_agent_bias: {name} of shape {tuple(bias.shape)} cannot be resized to {shape}')
    moved = bias.movedim(axis, -1)
    out = F.interpolate(
        moved.reshape(1, -1, moved.shape[-1]).float(), size=shape[axis], mode='linear', align_corners=False)
    return out.reshape(*moved.shape[:-1], shape[axis]).movedim(-1, axis).to(bias.dtype)


@register_notrace_function
def resize_pos_embed(
        pos: torch.Tensor,
        size: Tuple[int, int],
        num_prefix_tokens: int = 0,
        old_size: Optional[Tuple[int, int]] = None,
) -> torch.Tensor:
    """Bicubically resize a (1, prefix + h*w, C) position embedding from its ``old_size`` grid (default: square)
    to ``size``, as the official ``load_pretrained`` does (prefix tokens, e.g. DeiT's cls, are kept)."""
    prefix, grid = pos[:, :num_prefix_tokens], pos[:, num_prefix_tokens:]
    if old_size is None:
        side = int(round(grid.shape[1] ** 0.5))
        old_size = (side, side)
    if tuple(old_size) == tuple(size):
        return pos
    if old_size[0] * old_size[1] != grid.shape[1]:
        raise ValueError(
            f'resize_pos_embed: {grid.shape[1]} grid tokens do not form the {old_size[0]}x{old_size[1]} grid')
    grid = grid.reshape(1, *old_size, -1).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=size, mode='bicubic', align_corners=False).permute(0, 2, 3, 1).flatten(1, 2)
    return torch.cat([prefix, grid.to(pos.dtype)], dim=1)


def fit_agent_checkpoint(
        state_dict: Dict[str, Any],
        model: nn.Module,
        resize_other: Optional[Callable[[str, torch.Tensor, torch.Size], torch.Tensor]] = None,
) -> Dict[str, Any]:
    """Fit a checkpoint in the model's naming to `model`'s shapes, as the official ``load_pretrained`` does.

    Every ``ah/aw/ha/wa`` bias whose training grid differs from the model's is linearly resized
    (`resize_agent_bias`); any other tensor whose shape differs goes through ``resize_other(key, tensor, shape)``
    when given (the families' position embeddings / tables), or passes unchanged (the load then reports it).
    """
    target = model.state_dict()
    out = {}
    for k, v in state_dict.items():
        if k in target and v.shape != target[k].shape:
            name = k.rsplit('.', 1)[-1]
            if name in _BIAS_TOKEN_AXIS:
                v = resize_agent_bias(v, name, target[k].shape)
            elif resize_other is not None:
                v = resize_other(k, v, target[k].shape)
        out[k] = v
    return out
