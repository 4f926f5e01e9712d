""" Agent-PVT: Pyramid Vision Transformer with Agent Attention

Paper: `Agent Attention: On the Integration of Softmax and Linear Attention` - https://arxiv.org/abs/2312.08874
(ECCV 2024). Base model: `Pyramid Vision Transformer` - https://arxiv.org/abs/2102.12122.

Official code: https://github.com/LeapLabTHU/Agent-Attention (`agent_transformer/models/agent_pvt.py`, cfgs
`agent_pvt_{t,s,m,m_256,b}.yaml`; segmentation backbone `downstream/segmentation/mmseg/models/backbones/agent_pvt.py`).
The repository declares no license; this file is a reimplementation. timm has no Agent-PVT.

Four stages, each a strided patch embedding (conv 4x4/4, then 2x2/2, + LayerNorm), a learned absolute position
embedding and pre-norm blocks (LayerNorm eps 1e-6) of agent attention and an MLP; no final norm, the head
classifies the mean of the stage-4 tokens. Agent attention: ``n_agent`` agent tokens are the adaptive average pool
of the queries to a ``sqrt(n_agent)`` square grid; they aggregate the keys/values (softmax over the tokens), then
every query reads the agents (softmax over the agents), both with learned position biases, plus a depth-wise 3x3
conv of V. Every released model uses agent attention with no spatial reduction in all four stages
(``attn_type='AAAA'``, ``agent_sr_ratios='1111'``); PVT's own spatial-reduction attention appears in none of them and
is not implemented here.

What this implementation adds:
* The attention is the shared ``zoo.layers.agent.AgentAttention`` (separate ``q`` / ``kv`` projections, as the
  official): ``ops.agent_attention`` (fused Triton forward/backward on GPU), biases through ``ops.agent_bias_maps``.
* Any input size: the official classification model only runs at its training size. Here the position embeddings
  are resized bilinearly (the official forward's own rule) and the separable ``ah/aw/ha/wa`` biases bilinearly to
  the map, as the official segmentation backbone does; at the training size both are the identity, so the logits
  are the official ones.
* ``agent_grids``: optional per-stage agent grids (the segmentation code's ``downstream_agent_shapes``, e.g.
  ``((12, 12), (16, 16), (28, 28), (28, 28))``); the agent axis of the biases is then resized as there.
* timm conventions: ``stages.i.{patch_embed,pos_embed,blocks}``, NCHW ``features_only`` / ``forward_intermediates``
  at strides 4 / 8 / 16 / 32, ``checkpoint_filter_fn`` for the official ``{'model': ...}`` layout (renames, resizes
  position embeddings and ``ah/aw/ha/wa`` to this model's grid as the official ``load_pretrained`` does).
* Attention dropout is not supported (0 in every official config): the op does not materialise the attention maps.

Variants (official cfgs; embed 64/128/320/512, heads 1/2/5/8, mlp ratios 8/8/4/4, agents 9/16/49/49, qkv bias):

| model | depths | img | params | GMACs |
|---|---|---|---|---|
| agent_pvt_t | 2,2,2,2 | 224 | 11,570,352 | 1.99 |
| agent_pvt_s | 3,4,6,3 | 224 | 20,635,066 | 3.96 |
| agent_pvt_m | 3,4,18,3 | 224 | 35,921,746 | 7.00 |
| agent_pvt_m_256 | 3,4,18,3 | 256 | 36,083,682 | 9.14 |
| agent_pvt_l | 3,8,27,3 | 224 | 48,738,180 | 10.34 |

Parameter counts are the official code's (reference/agent.md §3); they depend on ``img_size`` (position embeddings
and ``ah/aw/ha/wa`` are sized by the training grid). `agent_pvt_l` is the official ``agent_pvt_large``
(cfg ``agent_pvt_b.yaml``).
"""
import re
from functools import partial
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import ClassifierHead, calculate_drop_path_rates, to_2tuple, trunc_normal_
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from zoo.layers.agent import AgentBlock, resize_agent_bias, resize_pos_embed, unwrap_checkpoint

__all__ = ['AgentPVT']


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch_size`` conv, then LayerNorm (eps 1e-5, as the official); NCHW in, NHWC out."""

    def __init__(self, in_chs: int, out_chs: int, patch_size: int, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.proj = nn.Conv2d(in_chs, out_chs, kernel_size=patch_size, stride=patch_size, **dd)
        self.norm = nn.LayerNorm(out_chs, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class AgentPvtStage(nn.Module):
    """Patch embedding, absolute position embedding, `depth` blocks. NCHW in and out; the blocks run channels-last."""

    def __init__(
            self,
            in_chs: int,
            out_chs: int,
            depth: int,
            patch_size: int,
            grid_size: Tuple[int, int],
            drop_rate: float = 0.,
            drop_path_rates: Tuple[float, ...] = (),
            device=None,
            dtype=None,
            **block_kwargs: Any,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.grad_checkpointing = False
        self.grid_size = tuple(grid_size)
        self.patch_embed = PatchEmbed(in_chs, out_chs, patch_size, **dd)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid_size[0] * grid_size[1], out_chs, **dd))
        self.pos_drop = nn.Dropout(drop_rate)
        self.blocks = nn.Sequential(*[
            AgentBlock(
                out_chs, bias_grid=grid_size, drop_path=drop_path_rates[i], norm_layer=partial(nn.LayerNorm, eps=1e-6),
                fused_qkv=False, **block_kwargs, **dd)
            for i in range(depth)])

    def _pos_embed(self, H: int, W: int) -> torch.Tensor:
        """(1, H, W, C): the official forward resizes it bilinearly when the map is not the training grid."""
        pos = self.pos_embed.reshape(1, *self.grid_size, -1)
        if (H, W) != self.grid_size:
            pos = F.interpolate(pos.permute(0, 3, 1, 2), size=(H, W), mode='bilinear', align_corners=False)
            pos = pos.permute(0, 2, 3, 1)
        return pos

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # NCHW -> NCHW
        x = self.patch_embed(x)
        x = self.pos_drop(x + self._pos_embed(x.shape[1], x.shape[2]))
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        return x.permute(0, 3, 1, 2)


class AgentPVT(nn.Module):
    """Agent-PVT: four stages of agent-attention blocks, mean pool -> Linear (no final norm, as the official).

    Args:
        img_size: Training input size: sets the grids of the position embeddings and the ``ah/aw/ha/wa`` biases
            (and so the parameter count). Any other size multiple of 32 runs too (resized, see the module docstring).
        in_chans: Number of input image channels.
        num_classes: Number of classifier classes (0: no classifier).
        global_pool: Global pooling type of the head; '' disables it.
        embed_dims: Channels per stage.
        num_heads: Heads per stage.
        mlp_ratios: MLP hidden width / channels, per stage.
        depths: Blocks per stage.
        agent_num: Agents per stage (perfect squares).
        agent_grids: Optional per-stage agent grid overriding ``sqrt(agent_num)`` squared: the official segmentation
            backbone's ``downstream_agent_shapes`` (the biases' agent axis is resized to it).
        qkv_bias: Bias of the q / kv projections.
        drop_rate: Dropout after the position embeddings, in the MLPs / projections (official) and before the head.
        drop_path_rate: Stochastic depth, increasing linearly over all blocks (official).
    """

    def __init__(
            self,
            img_size: Union[int, Tuple[int, int]] = 224,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            embed_dims: Tuple[int, ...] = (64, 128, 320, 512),
            num_heads: Tuple[int, ...] = (1, 2, 5, 8),
            mlp_ratios: Tuple[float, ...] = (8, 8, 4, 4),
            depths: Tuple[int, ...] = (2, 2, 2, 2),
            agent_num: Tuple[int, ...] = (9, 16, 49, 49),
            agent_grids: Optional[Sequence[Optional[Tuple[int, int]]]] = None,
            qkv_bias: bool = True,
            drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        num_stages = len(embed_dims)
        if not (len(num_heads) == len(mlp_ratios) == len(depths) == len(agent_num) == num_stages):
            raise ValueError(
                f'AgentPVT: embed_dims {embed_dims}, num_heads {num_heads}, mlp_ratios {mlp_ratios}, depths {depths} '
                f'and agent_num {agent_num} must have one length')
        agent_grids = tuple(agent_grids) if agent_grids is not None else (None,) * num_stages
        if len(agent_grids) != num_stages:
            raise ValueError(f'AgentPVT: agent_grids {agent_grids} must have {num_stages} entries (one per stage)')
        img_size = to_2tuple(img_size)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.num_features = self.head_hidden_size = embed_dims[-1]
        self.drop_rate = drop_rate
        self.grad_checkpointing = False

        dpr = calculate_drop_path_rates(drop_path_rate, sum(depths))
        self.feature_info = []
        stages = []
        in_chs = in_chans
        for i in range(num_stages):
            stride = 4 * 2 ** i
            first = sum(depths[:i])
            stages.append(AgentPvtStage(
                in_chs,
                embed_dims[i],
                depth=depths[i],
                patch_size=4 if i == 0 else 2,
                grid_size=(img_size[0] // stride, img_size[1] // stride),
                drop_rate=drop_rate,
                drop_path_rates=dpr[first:first + depths[i]],
                num_heads=num_heads[i],
                agent_num=agent_num[i],
                agent_grid=agent_grids[i],
                mlp_ratio=mlp_ratios[i],
                qkv_bias=qkv_bias,
                proj_drop=drop_rate,
                **dd,
            ))
            in_chs = embed_dims[i]
            self.feature_info.append(dict(num_chs=in_chs, reduction=stride, module=f'stages.{i}'))
        self.stages = nn.Sequential(*stages)
        self.norm = nn.Identity()  # the official model has no final norm
        self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate, **dd)

        for stage in self.stages:
            trunc_normal_(stage.pos_embed, std=.02)
        self.apply(self._init_weights)

    def _init_weights(self, m: nn.Module) -> None:
        # the official init: truncated-normal Linear weights, zero biases; LayerNorms 1 / 0, convs PyTorch's
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(
            stem=r'^stages\.0\.(patch_embed|pos_embed)',
            blocks=r'^stages\.(\d+)' if coarse else [
                (r'^stages\.(\d+)\.(patch_embed|pos_embed)', (0,)),
                (r'^stages\.(\d+)\.blocks\.(\d+)', None),
            ],
        )

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        # the official trainer exempts position embeddings and every 1-D parameter; the agent biases are not
        # exempt in classification training (the segmentation recipe exempts them via its own paramwise cfg)
        return {f'stages.{i}.pos_embed' for i in range(len(self.stages))}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None):
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool)

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Forward features and return the NCHW maps of the stages selected by `indices`.

        Args:
            x: Input images, NCHW.
            indices: Take the last n stages if an int, all if None, the listed ones if a sequence.
            norm: Unused (the model has no final norm); kept for timm's signature.
            stop_early: Stop after the last stage that is needed.
            output_fmt: Only 'NCHW'.
            intermediates_only: Return only the intermediates.
        """
        if output_fmt != 'NCHW':
            raise ValueError(f"AgentPVT.forward_intermediates: output_fmt must be 'NCHW', got {output_fmt!r}")
        intermediates = []
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        stages = self.stages if torch.jit.is_scripting() or not stop_early else self.stages[:max_index + 1]
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take_indices:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Drop the stages (and the head) that the selected intermediates do not need."""
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        prune_end = max_index < len(self.stages) - 1
        self.stages = self.stages[:max_index + 1]
        if prune_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]['num_chs']
        if prune_head or prune_end:
            self.head = ClassifierHead(self.num_features, 0, pool_type='')
            self.num_classes = 0
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# Official agent_pvt.py -> zoo names (stage numbers are 1-based there).
_OFFICIAL_RULES = (
    (r'^patch_embed(\d)\.', lambda m: f'stages.{int(m.group(1)) - 1}.patch_embed.'),
    (r'^pos_embed(\d)$', lambda m: f'stages.{int(m.group(1)) - 1}.pos_embed'),
    (r'^block(\d)\.(\d+)\.', lambda m: f'stages.{int(m.group(1)) - 1}.blocks.{m.group(2)}.'),
    (r'^head\.', lambda m: 'head.fc.'),
)


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Official Agent-PVT checkpoints -> zoo layout; the zoo's own layout passes through unchanged.

    Unwraps the official container (``{'model': ..., 'optimizer': ..., ...}``) and a DDP ``module.`` prefix, renames
    ``patch_embed{i}`` / ``pos_embed{i}`` / ``block{i}.{j}`` / ``head``, and fits grid-sized tensors to `model`: the
    position embeddings bicubically, ``ah/aw/ha/wa`` biases linearly along their spatial axis (the official
    ``load_pretrained``'s rules, e.g. a 224 checkpoint into `agent_pvt_m_256`).
    """
    state_dict = unwrap_checkpoint(state_dict)
    if any(k.startswith('stages.') for k in state_dict):
        return state_dict  # zoo layout
    live = model.state_dict()
    out = {}
    for k, v in state_dict.items():
        for pattern, repl in _OFFICIAL_RULES:
            k = re.sub(pattern, repl, k)
        name = k.rsplit('.', 1)[-1]
        if k in live and v.shape != live[k].shape:
            if name.endswith('pos_embed'):
                stage = model.stages[int(k.split('.')[1])]
                v = resize_pos_embed(v, stage.grid_size)
            elif name in ('ah_bias', 'aw_bias', 'ha_bias', 'wa_bias'):
                v = resize_agent_bias(v, name, live[k].shape)
        out[k] = v
    return out


def _create_agent_pvt(variant: str, pretrained: bool = False, **kwargs) -> AgentPVT:
    default_out_indices = tuple(range(len(kwargs.get('depths', (2, 2, 2, 2)))))
    out_indices = kwargs.pop('out_indices', default_out_indices)
    return build_model_with_cfg(
        AgentPVT,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(flatten_sequential=True, out_indices=out_indices),
        **kwargs,
    )


def _cfg(url: str = '', **kwargs) -> Dict[str, Any]:
    return {
        'url': url,
        'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7),
        'crop_pct': 0.875, 'interpolation': 'bicubic',
        'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'stages.0.patch_embed.proj', 'classifier': 'head.fc',
        'license': 'unknown',  # LeapLabTHU/Agent-Attention declares no license
        'paper_ids': 'arXiv:2312.08874',
        'paper_name': 'Agent Attention: On the Integration of Softmax and Linear Attention',
        'origin_url': 'https://github.com/LeapLabTHU/Agent-Attention',
        **kwargs,
    }


# Weights: the official ImageNet-1k checkpoints are on Tsinghua Cloud / Google Drive share links (no direct file
# URL), so no cfg carries a url; a local copy loads with `pretrained_cfg_overlay=dict(file=PATH)` through
# `checkpoint_filter_fn`.
default_cfgs = generate_default_cfgs({
    'agent_pvt_t': _cfg(),
    'agent_pvt_s': _cfg(),
    'agent_pvt_m': _cfg(),
    'agent_pvt_m_256': _cfg(input_size=(3, 256, 256), pool_size=(8, 8)),
    'agent_pvt_l': _cfg(),
})


@register_model
def agent_pvt_t(pretrained: bool = False, **kwargs) -> AgentPVT:
    model_args = dict(depths=(2, 2, 2, 2))
    return _create_agent_pvt('agent_pvt_t', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def agent_pvt_s(pretrained: bool = False, **kwargs) -> AgentPVT:
    model_args = dict(depths=(3, 4, 6, 3))
    return _create_agent_pvt('agent_pvt_s', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def agent_pvt_m(pretrained: bool = False, **kwargs) -> AgentPVT:
    model_args = dict(depths=(3, 4, 18, 3))
    return _create_agent_pvt('agent_pvt_m', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def agent_pvt_m_256(pretrained: bool = False, **kwargs) -> AgentPVT:
    """Agent-PVT-M trained at 256x256 (its position embeddings and separable biases are sized for a 64x64 grid)."""
    model_args = dict(depths=(3, 4, 18, 3), img_size=256)
    return _create_agent_pvt('agent_pvt_m_256', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def agent_pvt_l(pretrained: bool = False, **kwargs) -> AgentPVT:
    """The official ``agent_pvt_large`` (cfg ``agent_pvt_b.yaml``)."""
    model_args = dict(depths=(3, 8, 27, 3))
    return _create_agent_pvt('agent_pvt_l', pretrained=pretrained, **dict(model_args, **kwargs))
