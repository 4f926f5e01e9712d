""" Agent-DeiT: DeiT with Agent Attention

Paper: `Agent Attention: On the Integration of Softmax and Linear Attention` - https://arxiv.org/abs/2312.08874
(ECCV 2024). Base model: `DeiT: Data-efficient Image Transformers` - https://arxiv.org/abs/2012.12877.

Official code: https://github.com/LeapLabTHU/Agent-Attention (`agent_transformer/models/agent_deit.py`, cfgs
`agent_deit_{t,s,s_448,b}.yaml`). The repository declares no license; this file is a reimplementation. timm has
DeiT (``deit_*``) but no agent attention; its names are not touched.

A DeiT (16x16 patches, class token, learned position embedding, pre-norm blocks with LayerNorm eps 1e-6, head on
the normed class token) whose first `agent_layer` blocks use agent attention (all 12 blocks in T / S / S-448, the
first 4 in B, whose other 8 are plain softmax attention). Agent attention: the agents are the adaptive average pool
of the *patch* queries (the class token excluded) to a ``sqrt(n_agent)`` grid; they aggregate the keys/values of
all tokens (class token included), then every token reads the agents, both with learned position biases (the class
token's key column ``ac_bias`` and query row ``ca_bias`` prepended), plus a depth-wise 3x3 conv of the patch
values added to the patch outputs (the class token gets none).

What this implementation adds:
* Agent attention is the shared ``zoo.layers.agent.AgentAttention`` with one prefix (class) token: it runs through
  ``ops.agent_attention`` (fused Triton forward/backward on GPU), its biases through ``ops.agent_bias_maps``; the
  plain blocks of `agent_deit_b` are timm's own ViT ``Block``.
* Any input size multiple of 16, square or not: the official model only runs at its training size (bias shapes
  and ``h = w = sqrt(N)`` fix the grid). Here the position embedding is resized bicubically (the official
  ``load_pretrained``'s rule) and the agent biases follow the official segmentation backbones' rule (``an/na``
  and the separable ``ah/aw/ha/wa`` terms bilinearly to the patch grid); at the training size both are the
  identity, so the logits are the official ones.
* timm ViT conventions: ``forward_features`` returns the normed tokens ``(B, 1 + h*w, C)`` (``output_fmt``
  'NLC', one prefix token), the head pools the class token (``global_pool='token'``, or 'avg' over the patches),
  ``forward_intermediates`` / ``features_only`` give NCHW patch maps of the selected blocks (stride 16);
  ``checkpoint_filter_fn`` converts the official ``{'model': ...}`` layout and resizes the position embedding and
  ``ah/aw/ha/wa`` biases to this model's grid as the official ``load_pretrained`` does.
* Attention dropout is not supported in the agent blocks (0 in every official config).

Variants (official cfgs; depth 12, mlp ratio 4, qkv bias):

| model | embed / heads | agents | agent blocks | img | params | GMACs |
|---|---|---|---|---|---|---|
| agent_deit_t | 192 / 3 | 49 | 0-11 | 224 | 6,015,640 | 1.17 |
| agent_deit_s | 384 / 6 | 49 | 0-11 | 224 | 22,647,112 | 4.43 |
| agent_deit_s_448 | 384 / 6 | 49 | 0-11 | 448 | 23,070,472 | 17.64 |
| agent_deit_b | 768 / 12 | 81 | 0-3 | 224 | 87,204,904 | 17.53 |

Parameter counts are the official code's (LeapLabTHU/Agent-Attention agent_transformer/models/agent_deit.py); they
depend on ``img_size`` (the position embedding and ``ah/aw/ha/wa`` are sized by the training grid).
"""
from functools import partial
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn
from timm.layers import PatchEmbed, calculate_drop_path_rates, register_notrace_function, to_2tuple, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from timm.models.vision_transformer import Block
from torch.utils.checkpoint import checkpoint

from zoo.layers.agent import AGENT_PAPER, AgentBlock, agent_weights, fit_agent_checkpoint, resize_pos_embed
from zoo.layers.backbone import architecture_name, check_image_input, check_int_arg, init_linear_trunc_normal, \
    paper_cfg, prune_isotropic, unwrap_checkpoint
from zoo.weights import create

__all__ = ['AgentDeiT']


@register_notrace_function
def patch_grid(x: torch.Tensor, in_chans: int, patch_size: Tuple[int, int], model_name: str) -> Tuple[int, int]:
    """The patch grid of a ``(B, in_chans, H, W)`` batch whose sides are multiples of `patch_size`; a ValueError
    naming the shape and what was expected otherwise."""
    check_image_input(x, in_chans, max(patch_size), model_name)
    H, W = x.shape[-2:]
    ph, pw = patch_size
    if H % ph or W % pw:
        raise ValueError(f'{model_name}: input {H}x{W} is not a multiple of the patch size {ph}x{pw}')
    return H // ph, W // pw


class AgentDeiT(nn.Module):
    """Agent-DeiT: a class-token ViT whose first `agent_layer` blocks use agent attention.

    Args:
        img_size: Training input size: sets the position-embedding grid and the ``ah/aw/ha/wa`` biases (and so the
            parameter count). Any other multiple of `patch_size` runs too (resized, see the module docstring).
        patch_size: Patch size (16).
        in_chans: Number of input image channels.
        num_classes: Number of classifier classes (0: no classifier).
        global_pool: 'token' (class token, official), 'avg' (mean of the patch tokens) or '' (no pooling).
        embed_dim: Channels.
        depth: Blocks.
        num_heads: Heads.
        mlp_ratio: MLP hidden width / channels.
        qkv_bias: Bias of the qkv projections.
        agent_num: Agents of each agent block: one int, or one per block (perfect squares).
        agent_layer: The first `agent_layer` blocks use agent attention, the rest timm's softmax ``Block``
            (None: all).
        drop_rate: Dropout after the position embedding, in the MLPs / projections (official) and before the head.
        attn_drop_rate: Attention dropout of the plain softmax blocks (the agent blocks support none).
        drop_path_rate: Stochastic depth, increasing linearly over the blocks (official).
    """

    def __init__(
            self,
            img_size: Union[int, Tuple[int, int]] = 224,
            patch_size: int = 16,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'token',
            embed_dim: int = 192,
            depth: int = 12,
            num_heads: int = 3,
            mlp_ratio: float = 4.,
            qkv_bias: bool = True,
            agent_num: Union[int, Tuple[int, ...]] = 49,
            agent_layer: Optional[int] = None,
            drop_rate: float = 0.,
            attn_drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        if global_pool not in ('token', 'avg', ''):
            raise ValueError(f"AgentDeiT: global_pool must be 'token', 'avg' or '', got {global_pool!r}")
        agent_layer = depth if agent_layer is None else agent_layer
        if not 0 <= agent_layer <= depth:
            raise ValueError(f'AgentDeiT: agent_layer must be in [0, depth={depth}], got {agent_layer}')
        check_int_arg('AgentDeiT', 'agent_num', agent_num, lengths=(depth,))
        agent_num = (agent_num,) * depth if isinstance(agent_num, int) else tuple(agent_num)
        if len(agent_num) != depth:
            raise ValueError(f'AgentDeiT: agent_num must be an int or one per block ({depth}), got {agent_num}')
        img_size = to_2tuple(img_size)
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.in_chans = in_chans
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.num_prefix_tokens = 1
        self.output_fmt = 'NLC'
        self.patch_size = patch_size
        self.grad_checkpointing = False

        self.patch_embed = PatchEmbed(img_size=img_size, patch_size=patch_size, in_chans=in_chans,
                                      embed_dim=embed_dim, strict_img_size=False, **dd)
        self.grid_size = self.patch_embed.grid_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim, **dd))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid_size[0] * self.grid_size[1], embed_dim, **dd))
        self.pos_drop = nn.Dropout(drop_rate)

        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        dpr = calculate_drop_path_rates(drop_path_rate, depth)
        self.blocks = nn.Sequential(*[
            AgentBlock(embed_dim, num_heads, agent_num[i], self.grid_size, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                       proj_drop=drop_rate, drop_path=dpr[i], norm_layer=norm_layer, num_prefix_tokens=1, **dd)
            if i < agent_layer else
            Block(embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, proj_drop=drop_rate,
                  attn_drop=attn_drop_rate, drop_path=dpr[i], norm_layer=norm_layer, **dd)
            for i in range(depth)])
        self.feature_info = [dict(module=f'blocks.{i}', num_chs=embed_dim, reduction=patch_size) for i in range(depth)]
        self.norm = norm_layer(embed_dim, **dd)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes, **dd) if num_classes > 0 else nn.Identity()

        trunc_normal_(self.pos_embed, std=.02)
        trunc_normal_(self.cls_token, std=.02)
        self.apply(init_linear_trunc_normal)  # the official (timm 0.4 ViT) init; norms and convs PyTorch's

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(stem=r'^cls_token|pos_embed|patch_embed', blocks=[(r'^blocks\.(\d+)', None), (r'^norm', (99999,))])

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        return {'pos_embed', 'cls_token'}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None):
        self.num_classes = num_classes
        if global_pool is not None:
            if global_pool not in ('token', 'avg', ''):
                raise ValueError(f"AgentDeiT: global_pool must be 'token', 'avg' or '', got {global_pool!r}")
            self.global_pool = global_pool
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    def _embed(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """Patch tokens with the class token prepended and the position embedding (resized to the grid) added."""
        B = x.shape[0]
        grid = patch_grid(x, self.in_chans, self.patch_embed.patch_size, architecture_name(self))
        x = self.patch_embed(x)
        pos = resize_pos_embed(self.pos_embed, grid, num_prefix_tokens=1, old_size=tuple(self.grid_size))
        x = torch.cat([self.cls_token.expand(B, -1, -1), x], dim=1) + pos
        return self.pos_drop(x), grid

    def _block(self, block: nn.Module, x: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
        if isinstance(block, AgentBlock):
            if self.grad_checkpointing and not torch.jit.is_scripting():
                return checkpoint(block, x, grid, use_reentrant=False)
            return block(x, grid)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint(block, x, use_reentrant=False)
        return block(x)

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            return_prefix_tokens: bool = False,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Forward features and return the outputs of the blocks selected by `indices`.

        Args:
            x: Input images, NCHW.
            indices: Take the last n blocks if an int, all if None, the listed ones if a sequence.
            return_prefix_tokens: Return ``(map, class token)`` pairs.
            norm: Apply the final norm to every intermediate.
            stop_early: Stop after the last block that is needed.
            output_fmt: 'NCHW' (patch maps) or 'NLC' (patch tokens).
            intermediates_only: Return only the intermediates.
        """
        if output_fmt not in ('NCHW', 'NLC'):
            raise ValueError(f"AgentDeiT.forward_intermediates: output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        B = x.shape[0]
        x, grid = self._embed(x)
        blocks = self.blocks if torch.jit.is_scripting() or not stop_early else self.blocks[:max_index + 1]
        intermediates = []
        for i, block in enumerate(blocks):
            x = self._block(block, x, grid)
            if i in take_indices:
                y = self.norm(x) if norm else x
                prefix, patches = y[:, :1], y[:, 1:]
                if output_fmt == 'NCHW':
                    patches = patches.reshape(B, *grid, -1).permute(0, 3, 1, 2).contiguous()
                intermediates.append((patches, prefix) if return_prefix_tokens else patches)
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Drop the blocks (and the final norm / head) that the selected intermediates do not need."""
        return prune_isotropic(self, 'blocks', indices, prune_norm, prune_head)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x, grid = self._embed(x)
        for block in self.blocks:
            x = self._block(block, x, grid)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == 'token':
            x = x[:, 0]
        elif self.global_pool == 'avg':
            x = x[:, self.num_prefix_tokens:].mean(dim=1)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Official Agent-DeiT checkpoints -> zoo layout; the zoo's own layout passes through unchanged.

    The official names are the zoo's (timm-0.4 ViT names); this unwraps the official container
    (``{'model': ..., 'optimizer': ..., ...}``) and a DDP ``module.`` prefix, and fits grid-sized tensors to `model`
    as the official ``load_pretrained`` does: the position embedding bicubically (class token kept), the
    ``ah/aw/ha/wa`` biases linearly along their spatial axis (e.g. a 224 checkpoint into `agent_deit_s_448`).
    """
    def resize_pos(key: str, v: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        return resize_pos_embed(v, tuple(model.grid_size), num_prefix_tokens=1) if key == 'pos_embed' else v

    return fit_agent_checkpoint(unwrap_checkpoint(state_dict), model, resize_pos)


def _create_agent_deit(variant: str, pretrained: bool = False, **kwargs) -> AgentDeiT:
    kwargs = dict(_MODEL_ARGS[variant], **kwargs)
    # every block by default (as the zoo's hierarchical models give every stage); timm's ViTs default to the last 3
    out_indices = kwargs.pop('out_indices', tuple(range(kwargs.get('depth', 12))))
    return create(lambda pretrained, **kwargs: build_model_with_cfg(
        AgentDeiT,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=out_indices, feature_cls='getter'),
        **kwargs,
    ), variant, pretrained, kwargs)


_cfg = paper_cfg(**AGENT_PAPER, pool_size=None, first_conv='patch_embed.proj', classifier='head')


# Weights: the official ImageNet-1k checkpoints on Tsinghua Cloud (LeapLabTHU/Agent-Attention agent_transformer
# README), unwrapped by `checkpoint_filter_fn`.
default_cfgs = generate_default_cfgs({
    'agent_deit_t.in1k': _cfg(**agent_weights('57e0904221824ee7b7af', 'agent_deit_t')),
    'agent_deit_s.in1k': _cfg(**agent_weights('fdd43304372541db8ea7', 'agent_deit_s')),
    'agent_deit_s_448.in1k': _cfg(
        **agent_weights('a228f86241c445f1969b', 'agent_deit_s_448'), input_size=(3, 448, 448), crop_pct=1.0),
    'agent_deit_b.in1k': _cfg(**agent_weights('5115f15fdd7e4ab58fbc', 'agent_deit_b')),
})


# Per variant: the model args `_create_agent_deit` adds to the caller's (which override them).
_MODEL_ARGS = {
    'agent_deit_t': dict(embed_dim=192, num_heads=3, agent_num=49),
    'agent_deit_s': dict(embed_dim=384, num_heads=6, agent_num=49),
    # Agent-DeiT-S trained at 448x448 (position embedding and separable biases sized for a 28x28 grid).
    'agent_deit_s_448': dict(embed_dim=384, num_heads=6, agent_num=49, img_size=448),
    # Agent-DeiT-B: 81 agents in blocks 0-3, timm's softmax ViT blocks 4-11 (official ``agent_layer=4``).
    'agent_deit_b': dict(embed_dim=768, num_heads=12, agent_num=81, agent_layer=4),
}


@register_model
def agent_deit_t(pretrained: bool = False, **kwargs) -> AgentDeiT:
    return _create_agent_deit('agent_deit_t', pretrained, **kwargs)


@register_model
def agent_deit_s(pretrained: bool = False, **kwargs) -> AgentDeiT:
    return _create_agent_deit('agent_deit_s', pretrained, **kwargs)


@register_model
def agent_deit_s_448(pretrained: bool = False, **kwargs) -> AgentDeiT:
    return _create_agent_deit('agent_deit_s_448', pretrained, **kwargs)


@register_model
def agent_deit_b(pretrained: bool = False, **kwargs) -> AgentDeiT:
    return _create_agent_deit('agent_deit_b', pretrained, **kwargs)
