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

Parameter counts are the official code's (LeapLabTHU/Agent-Attention agent_transformer/models/agent_pvt.py); they
depend on ``img_size`` (position embeddings and ``ah/aw/ha/wa`` are sized by the training grid). `agent_pvt_l` is
the official ``agent_pvt_large`` (cfg ``agent_pvt_b.yaml``).
"""
from functools import partial
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import ClassifierHead, calculate_drop_path_rates, register_notrace_function, to_2tuple, \
    trunc_normal_
from timm.models import generate_default_cfgs, register_model

from zoo.layers.agent import AGENT_PAPER, AgentBlock, agent_weights, fit_agent_checkpoint, per_stage_agent_grids, \
    resize_pos_embed
from zoo.layers.backbone import StagedBackbone, check_int_arg, family_builder, forward_blocks, \
    init_linear_trunc_normal, paper_cfg, rename_keys, unwrap_checkpoint

__all__ = ['AgentPVT']


@register_notrace_function
def resize_pos_map(pos: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """A ``(1, h, w, C)`` position map bilinearly resized to `size` (the official forward's rule off the training
    grid); `pos` itself at its own size."""
    if tuple(pos.shape[1:3]) == tuple(size):
        return pos
    pos = F.interpolate(pos.permute(0, 3, 1, 2), size=size, mode='bilinear', align_corners=False)
    return pos.permute(0, 2, 3, 1)


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
        return resize_pos_map(self.pos_embed.reshape(1, *self.grid_size, -1), (H, W))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # NCHW -> NCHW
        x = self.patch_embed(x)
        x = self.pos_drop(x + self._pos_embed(x.shape[1], x.shape[2]))
        return forward_blocks(self, x).permute(0, 3, 1, 2)


class AgentPVT(StagedBackbone):
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

    stem_name = None  # each stage embeds its input
    downsample_name = '(patch_embed|pos_embed)'
    # the official trainer exempts position embeddings and every 1-D parameter; the agent biases are not exempt in
    # classification training (the segmentation recipe exempts them via its own paramwise cfg)
    no_weight_decay_suffixes = ('pos_embed',)

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
        check_int_arg('AgentPVT', 'agent_num', agent_num, lengths=(num_stages,), scalar=False)
        if not (len(num_heads) == len(mlp_ratios) == len(depths) == len(agent_num) == num_stages):
            raise ValueError(
                f'AgentPVT: embed_dims {embed_dims}, num_heads {num_heads}, mlp_ratios {mlp_ratios}, depths {depths} '
                f'and agent_num {agent_num} must have one length')
        agent_grids = per_stage_agent_grids(agent_grids, num_stages, 'AgentPVT')
        img_size = to_2tuple(img_size)
        self.init_backbone(in_chans, num_classes, embed_dims[-1], drop_rate)

        dpr = calculate_drop_path_rates(drop_path_rate, sum(depths))
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
            self.add_stage_feature(in_chs, stride)
        self.stages = nn.Sequential(*stages)  # the official model has no final norm
        self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate, **dd)

        for stage in self.stages:
            trunc_normal_(stage.pos_embed, std=.02)
        self.apply(init_linear_trunc_normal)  # the official init; LayerNorms 1 / 0, convs PyTorch's


# Official agent_pvt.py -> zoo names (stage numbers are 1-based there).
_OFFICIAL_RULES = (
    (r'^patch_embed(\d)\.', lambda m: f'stages.{int(m.group(1)) - 1}.patch_embed.'),
    (r'^pos_embed(\d)$', lambda m: f'stages.{int(m.group(1)) - 1}.pos_embed'),
    (r'^block(\d)\.(\d+)\.', lambda m: f'stages.{int(m.group(1)) - 1}.blocks.{m.group(2)}.'),
    (r'^head\.', 'head.fc.'),
)


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Official Agent-PVT checkpoints -> zoo layout; the zoo's own layout keeps its names.

    Unwraps the official container (``{'model': ..., 'optimizer': ..., ...}``) and a DDP ``module.`` prefix, renames
    ``patch_embed{i}`` / ``pos_embed{i}`` / ``block{i}.{j}`` / ``head``, and fits grid-sized tensors to `model`: the
    position embeddings bicubically, ``ah/aw/ha/wa`` biases linearly along their spatial axis (the official
    ``load_pretrained``'s rules, e.g. a 224 checkpoint into `agent_pvt_m_256`), in either layout (a zoo export
    fine-tuned at another input size too).
    """
    state_dict = unwrap_checkpoint(state_dict)
    if not any(k.startswith('stages.') for k in state_dict):  # official layout
        state_dict = rename_keys(state_dict, _OFFICIAL_RULES)

    def resize_pos(key: str, v: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        if not key.endswith('pos_embed'):
            return v
        return resize_pos_embed(v, model.stages[int(key.split('.')[1])].grid_size)

    return fit_agent_checkpoint(state_dict, model, resize_pos)


# Per variant: the model args `_create_agent_pvt` adds to the caller's (which override them).
_MODEL_ARGS = {
    'agent_pvt_t': dict(depths=(2, 2, 2, 2)),
    'agent_pvt_s': dict(depths=(3, 4, 6, 3)),
    'agent_pvt_m': dict(depths=(3, 4, 18, 3)),
    # Agent-PVT-M trained at 256x256 (its position embeddings and separable biases are sized for a 64x64 grid).
    'agent_pvt_m_256': dict(depths=(3, 4, 18, 3), img_size=256),
    # The official ``agent_pvt_large`` (cfg ``agent_pvt_b.yaml``).
    'agent_pvt_l': dict(depths=(3, 8, 27, 3)),
}
_create_agent_pvt = family_builder(AgentPVT, _MODEL_ARGS, filter_fn=checkpoint_filter_fn)


_cfg = paper_cfg(**AGENT_PAPER, first_conv='stages.0.patch_embed.proj')


# Weights: the official ImageNet-1k checkpoints on Tsinghua Cloud (LeapLabTHU/Agent-Attention agent_transformer
# README; Agent-PVT-L is its agent_pvt_b.yaml row), converted by `checkpoint_filter_fn`.
default_cfgs = generate_default_cfgs({
    'agent_pvt_t.in1k': _cfg(**agent_weights('13fdf0e0a7c5498c934f', 'agent_pvt_t')),
    'agent_pvt_s.in1k': _cfg(**agent_weights('36b8be9a8863456685a3', 'agent_pvt_s')),
    'agent_pvt_m.in1k': _cfg(**agent_weights('4d00ecacf18b45f9b88c', 'agent_pvt_m')),
    'agent_pvt_m_256.in1k': _cfg(
        **agent_weights('654df734121643b19c52', 'agent_pvt_m_256'), input_size=(3, 256, 256), pool_size=(8, 8)),
    'agent_pvt_l.in1k': _cfg(**agent_weights('040cfe0cfbbe4762ad09', 'agent_pvt_l')),
})


@register_model
def agent_pvt_t(pretrained: bool = False, **kwargs) -> AgentPVT:
    return _create_agent_pvt('agent_pvt_t', pretrained, **kwargs)


@register_model
def agent_pvt_s(pretrained: bool = False, **kwargs) -> AgentPVT:
    return _create_agent_pvt('agent_pvt_s', pretrained, **kwargs)


@register_model
def agent_pvt_m(pretrained: bool = False, **kwargs) -> AgentPVT:
    return _create_agent_pvt('agent_pvt_m', pretrained, **kwargs)


@register_model
def agent_pvt_m_256(pretrained: bool = False, **kwargs) -> AgentPVT:
    return _create_agent_pvt('agent_pvt_m_256', pretrained, **kwargs)


@register_model
def agent_pvt_l(pretrained: bool = False, **kwargs) -> AgentPVT:
    return _create_agent_pvt('agent_pvt_l', pretrained, **kwargs)
