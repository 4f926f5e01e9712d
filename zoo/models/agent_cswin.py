""" Agent-CSWin: CSWin Transformer with agent attention

Paper: `Agent Attention: On the Integration of Softmax and Linear Attention` - https://arxiv.org/abs/2312.08874
(Han, Ye, Han, Xia, Pan, Wan, Song, Huang; ECCV 2024)
Base model: `CSWin Transformer: A General Vision Transformer Backbone with Cross-Shaped Windows` -
https://arxiv.org/abs/2107.00652

Official code: https://github.com/LeapLabTHU/Agent-Attention (`agent_transformer/models/agent_cswin.py`; the
repository declares no license, this is a reimplementation). CSWin: https://github.com/microsoft/CSWin-Transformer
(MIT; its segmentation backbone defines how stripes are padded at arbitrary sizes).

Every block projects q, k, v once (``qkv``) and runs either
* **A** -- agent attention, global over the whole map (the official ``CSWIN_LA_SPLIT_SIZE`` equals every stage's
  resolution, so the agent branch is a single one over the full map with all heads): agents are the average-pooled
  (unscaled) queries, with learned position biases (`ops.agent_attention`, `ops.agent_bias_maps`), plus the
  depth-wise 3x3 conv of v (``get_v``);
* **B** -- CSWin's LePE stripe attention: half of the heads attend inside vertical stripes ``H x sw``, the other half
  inside horizontal stripes ``sw x W`` (one full-map branch in the last stage), plus a depth-wise 3x3 conv of v
  inside each stripe (LePE). A stripe is a non-square window, so this is `ops.window_attention` with windows
  ``(H, sw)`` / ``(sw, W)`` / ``(H, W)``.
Stage layout from the official ``attn_type`` string: ``AABB`` for every released model (see
`zoo.layers.agent.parse_attn_type`).

What this implementation adds:
* Any input size: A-blocks stay global, their separable position biases bilinearly resized from the training grid
  (as the official Agent-Swin / Agent-PVT segmentation backbones do); B-block stripes are padded as in the official
  CSWin segmentation backbone (q, k, v zero-padded symmetrically -- extra on the bottom/right -- to a multiple of
  the stripe width; padded positions are keys with zero scores, not masked; LePE sees the zero padding).
* timm conventions and names (`stem`, `stages.i.downsample`, `stages.i.blocks.j`, `head.fc`); block internals keep
  the official names (``qkv``, ``attns.b.get_v``, ``attns.0.an_bias``, ...). `checkpoint_filter_fn` converts the
  official ``{'model': ...}`` checkpoints and linearly resizes the agent biases when the grids differ.

Variants (parameter counts and GMACs -- torch's FlopCounterMode / 2 at the listed input -- equal the official
code's):

| model | embed | depths | heads | stripes (B) | agents | input | params | GMACs |
|---|---|---|---|---|---|---|---|---|
| agent_cswin_t | 64 | 2,4,18,1 | 2,4,8,16 | 1,2,7,7 | 9,16,49,49 | 224 | 20,458,672 | 4.292 |
| agent_cswin_s | 64 | 3,6,29,2 | 2,4,8,16 | 1,2,7,7 | 9,16,49,49 | 224 | 32,814,100 | 6.744 |
| agent_cswin_b | 96 | 3,6,29,2 | 4,8,16,32 | 1,2,7,7 | 9,16,49,49 | 224 | 73,249,696 | 14.870 |
| agent_cswin_b_384 | 96 | 3,6,29,2 | 4,8,16,32 | 1,2,12,12 | 9,16,49,49 | 384 | 73,328,416 | 46.177 |

The A-block biases ``ah/aw/ha/wa`` are sized by the token grid at ``img_size`` (so is the parameter count, as in
the official code). Outside the released configurations: an A-block is global at any ``img_size`` (the official
code would split it into two stripe branches if ``CSWIN_LA_SPLIT_SIZE`` differed from the resolution), and a
non-final B stage always has two stripe branches (the official code switches to one full-map branch when the
stripe width equals the training resolution).
"""
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import ClassifierHead, DropPath, LayerNorm2d, Mlp, calculate_drop_path_rates, \
    register_notrace_function, to_2tuple
from timm.models import generate_default_cfgs, register_model

from ops import window_attention
from zoo.layers.agent import AGENT_PAPER, AgentAttentionBase, agent_weights, fit_agent_checkpoint, parse_attn_type, \
    per_stage_agent_grids
from zoo.layers.attention import head_dim_of
from zoo.layers.backbone import ChannelsLastStage, StagedBackbone, check_int_arg, family_builder, \
    init_linear_trunc_normal, paper_cfg, rename_keys, unwrap_checkpoint
from zoo.layers.blocks import apply_nchw

__all__ = ['AgentCSWinTransformer']


@register_notrace_function
def pad_centered(x: torch.Tensor, multiple: Tuple[int, int]) -> torch.Tensor:
    """Zero-pad a ``(B, H, W, C)`` map to multiples of `multiple`, half of the padding before and the rest after
    (the official CSWin segmentation backbone's stripe padding); `x` itself when nothing is padded."""
    H, W = x.shape[1], x.shape[2]
    pad_h, pad_w = (-H) % multiple[0], (-W) % multiple[1]
    if not (pad_h or pad_w):
        return x
    top, left = pad_h // 2, pad_w // 2
    return F.pad(x, (0, 0, left, pad_w - left, top, pad_h - top))


class AgentBranch(AgentAttentionBase):
    """Global agent attention on projected ``(B, H, W, C)`` q, k, v, plus ``get_v``: a depth-wise 3x3 conv of v.

    Args:
        dim: Channels.
        num_heads: Heads.
        agent_num: Agents (a perfect square).
        bias_grid: The token grid the separable position biases are sized for (the training resolution).
        agent_grid: Optional agent grid instead of ``sqrt(agent_num)`` squared; the biases' agent axis is resized.
    """

    def __init__(
            self,
            dim: int,
            num_heads: int,
            agent_num: int = 49,
            bias_grid: Tuple[int, int] = (7, 7),
            agent_grid: Optional[Tuple[int, int]] = None,
            device=None,
            dtype=None,
    ):
        super().__init__(dim, num_heads, agent_num, bias_grid, agent_grid)
        self.get_v = nn.Conv2d(dim, dim, 3, padding=1, groups=dim, device=device, dtype=dtype)
        self._create_biases(device=device, dtype=dtype)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:  # (B, H, W, C) each
        B, H, W, C = q.shape
        tokens = lambda t: t.reshape(B, H * W, C)  # noqa: E731
        out = self.attend(tokens(q), tokens(k), tokens(v), (H, W))
        return out.reshape(B, H, W, C) + apply_nchw(self.get_v, v)


class StripeBranch(nn.Module):
    """CSWin's LePE attention inside stripes: vertical ``H x sw`` (``idx=0``), horizontal ``sw x W`` (``idx=1``) or
    the whole map (``idx=-1``), plus LePE: a depth-wise 3x3 conv of v inside each stripe (zero-padded at its edges).

    Maps that are not a multiple of the stripe width are zero-padded around (q, k, v after the projection; half on
    each side, the extra one bottom/right), as in the official CSWin segmentation backbone.
    """

    def __init__(
            self,
            dim: int,
            num_heads: int,
            split_size: int = 7,
            idx: int = -1,
            device=None,
            dtype=None,
    ):
        super().__init__()
        head_dim_of('StripeBranch', dim, num_heads)
        if idx not in (-1, 0, 1):
            raise ValueError(f'StripeBranch: idx must be -1 (full map), 0 (vertical) or 1 (horizontal), got {idx}')
        self.num_heads = num_heads
        self.split_size = split_size
        self.idx = idx
        self.get_v = nn.Conv2d(dim, dim, 3, padding=1, groups=dim, device=device, dtype=dtype)

    def _window(self, H: int, W: int) -> Tuple[int, int]:
        if self.idx == -1:
            return H, W
        return (H, self.split_size) if self.idx == 0 else (self.split_size, W)

    def _lepe(self, v: torch.Tensor, window: Tuple[int, int]) -> torch.Tensor:
        """The depth-wise conv of v applied to every stripe on its own: ``(B, Hp, Wp, C)`` in and out."""
        B, Hp, Wp, C = v.shape
        wh, ww = window
        nh, nw = Hp // wh, Wp // ww
        stripes = v.reshape(B, nh, wh, nw, ww, C).permute(0, 1, 3, 5, 2, 4).reshape(B * nh * nw, C, wh, ww)
        out = self.get_v(stripes).reshape(B, nh, nw, C, wh, ww)
        return out.permute(0, 1, 4, 2, 5, 3).reshape(B, Hp, Wp, C)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:  # (B, H, W, C) each
        B, H, W, C = q.shape
        window = self._window(H, W)
        q, k, v = pad_centered(q, window), pad_centered(k, window), pad_centered(v, window)
        Hp, Wp = q.shape[1], q.shape[2]
        heads = lambda t: t.reshape(B, Hp, Wp, self.num_heads, -1)  # noqa: E731
        out = window_attention(heads(q), heads(k), heads(v), window).reshape(B, Hp, Wp, C)
        out = out + self._lepe(v, window)
        top, left = (Hp - H) // 2, (Wp - W) // 2
        return out[:, top:top + H, left:left + W]


class AgentCSWinBlock(nn.Module):
    """``x += proj(attn(qkv(norm1(x)))); x += mlp(norm2(x))``; the attention is one agent branch (A), one full-map
    stripe branch (B, last stage) or two stripe branches on the two halves of the heads (B)."""

    def __init__(
            self,
            dim: int,
            num_heads: int,
            kind: str = 'B',
            split_size: int = 7,
            last_stage: bool = False,
            agent_num: int = 49,
            bias_grid: Tuple[int, int] = (7, 7),
            agent_grid: Optional[Tuple[int, int]] = None,
            mlp_ratio: float = 4.,
            qkv_bias: bool = True,
            proj_drop: float = 0.,
            drop_path: float = 0.,
            act_layer: Callable[..., nn.Module] = nn.GELU,
            norm_layer: Callable[..., nn.Module] = nn.LayerNorm,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias, **dd)
        self.norm1 = norm_layer(dim, **dd)
        self.proj = nn.Linear(dim, dim, **dd)
        self.proj_drop = nn.Dropout(proj_drop)
        if kind == 'A':
            self.attns = nn.ModuleList([AgentBranch(dim, num_heads, agent_num, bias_grid, agent_grid, **dd)])
        elif last_stage:
            self.attns = nn.ModuleList([StripeBranch(dim, num_heads, split_size, idx=-1, **dd)])
        else:
            if num_heads % 2 or dim % 2:
                raise ValueError(f'AgentCSWinBlock: two stripe branches need an even dim and head count, got '
                                 f'dim {dim}, num_heads {num_heads}')
            self.attns = nn.ModuleList([
                StripeBranch(dim // 2, num_heads // 2, split_size, idx=i, **dd) for i in range(2)])
        self.drop_path1 = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = norm_layer(dim, **dd)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=proj_drop, **dd)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C)
        B, H, W, C = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(B, H, W, 3, C).unbind(3)
        if len(self.attns) == 2:
            half = C // 2
            out = torch.cat([
                self.attns[0](q[..., :half], k[..., :half], v[..., :half]),
                self.attns[1](q[..., half:], k[..., half:], v[..., half:]),
            ], dim=-1)
        else:
            out = self.attns[0](q, k, v)
        x = x + self.drop_path1(self.proj_drop(self.proj(out)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class ConvNorm(nn.Module):
    """Strided conv then LayerNorm over channels, NCHW in and out: the stem (7x7 / 4, pad 2) and the merge blocks
    (3x3 / 2, pad 1)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int, padding: int, device=None,
                 dtype=None):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, device=device, dtype=dtype)
        self.norm = LayerNorm2d(out_chs, eps=1e-5, device=device, dtype=dtype)  # nn.LayerNorm's eps, as official

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


def _cswin_grids(img_size: Tuple[int, int], num_stages: int) -> List[Tuple[int, int]]:
    """Token grid per stage: stem conv 7 / 4 / pad 2, then 3 / 2 / pad 1 convs."""
    h, w = (img_size[0] - 3) // 4 + 1, (img_size[1] - 3) // 4 + 1
    grids = [(h, w)]
    for _ in range(num_stages - 1):
        h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
        grids.append((h, w))
    return grids


class AgentCSWinTransformer(StagedBackbone):
    """Agent-CSWin: CSWin Transformer whose blocks are agent attention (A) or LePE stripe attention (B).

    ``forward_features`` and the intermediates are NCHW maps at strides 4, 8, 16, 32.
    """

    norm_channels_last = True

    def __init__(
            self,
            img_size: Union[int, Tuple[int, int]] = 224,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            embed_dim: int = 64,
            depths: Sequence[int] = (2, 4, 18, 1),
            num_heads: Sequence[int] = (2, 4, 8, 16),
            split_size: Sequence[int] = (1, 2, 7, 7),
            attn_type: str = 'AABB',
            agent_num: Sequence[int] = (9, 16, 49, 49),
            agent_grids: Optional[Sequence[Optional[Tuple[int, int]]]] = None,
            mlp_ratio: float = 4.,
            qkv_bias: bool = True,
            drop_rate: float = 0.,
            proj_drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            norm_layer: Callable[..., nn.Module] = nn.LayerNorm,
            device=None,
            dtype=None,
    ):
        """
        Args:
            img_size: Training resolution: sizes the A-blocks' position biases (any input size runs).
            split_size: Stripe width of the B-blocks per stage (the last stage's B-blocks are full-map).
            attn_type: Official layout string ('AABB'; see `zoo.layers.agent.parse_attn_type`).
            agent_num: Agents per stage (perfect squares).
            agent_grids: Optional per-stage agent grid overriding ``sqrt(agent_num)`` squared.
        """
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        check_int_arg('AgentCSWinTransformer', 'split_size', split_size, lengths=(len(depths),), scalar=False)
        check_int_arg('AgentCSWinTransformer', 'agent_num', agent_num, lengths=(len(depths),), scalar=False)
        depths, num_heads, split_size = tuple(depths), tuple(num_heads), tuple(split_size)
        agent_num = tuple(int(a) for a in agent_num)
        num_stages = len(depths)
        if not (len(num_heads) == len(split_size) == len(agent_num) == num_stages):
            raise ValueError(
                f'AgentCSWinTransformer: depths {depths}, num_heads {num_heads}, split_size {split_size} and '
                f'agent_num {agent_num} must have one length')
        agent_grids = per_stage_agent_grids(agent_grids, num_stages, 'AgentCSWinTransformer')
        layouts = parse_attn_type(attn_type, depths)
        img_size = to_2tuple(img_size)

        self.init_backbone(in_chans, num_classes, embed_dim * 2 ** (num_stages - 1), drop_rate)

        self.stem = ConvNorm(in_chans, embed_dim, 7, 4, 2, **dd)
        grids = _cswin_grids(img_size, num_stages)
        dpr = calculate_drop_path_rates(drop_path_rate, list(depths), stagewise=True)  # per block, split by stage
        stages = []
        in_chs = embed_dim
        for i in range(num_stages):
            out_chs = embed_dim * 2 ** i
            # merge block (NCHW), then the stage's blocks (channels-last)
            downsample = ConvNorm(in_chs, out_chs, 3, 2, 1, **dd) if i else None
            blocks = [
                AgentCSWinBlock(
                    out_chs, num_heads[i], kind, split_size=split_size[i], last_stage=i == num_stages - 1,
                    agent_num=agent_num[i], bias_grid=grids[i], agent_grid=agent_grids[i], mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias, proj_drop=proj_drop_rate, drop_path=dpr[i][j], norm_layer=norm_layer, **dd)
                for j, kind in enumerate(layouts[i])]
            stages.append(ChannelsLastStage(downsample, blocks))
            in_chs = out_chs
            self.add_stage_feature(out_chs, 4 * 2 ** i)
        self.stages = nn.Sequential(*stages)

        self.norm = norm_layer(self.num_features, **dd)
        self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate, **dd)
        self.apply(init_linear_trunc_normal)  # the official init


# Official (agent_transformer/models/agent_cswin.py) -> zoo names, applied in order to every key.
_OFFICIAL_RULES = (
    (r'^stage1_conv_embed\.0\.', 'stem.conv.'),
    (r'^stage1_conv_embed\.2\.', 'stem.norm.'),
    (r'^stage(\d)\.(\d+)\.', lambda m: f'stages.{int(m.group(1)) - 1}.blocks.{m.group(2)}.'),
    (r'^merge(\d)\.', r'stages.\1.downsample.'),
    (r'^head\.', 'head.fc.'),
)


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Official Agent-CSWin checkpoints (``{'model': state_dict, ...}``) -> zoo layout.

    Renames the stem, stages, merge blocks and head, and linearly resizes the agent biases ``ah/aw/ha/wa`` whose
    grid differs from the model's (the official `load_pretrained`). A state dict in the zoo's layout with the
    model's shapes passes unchanged.
    """
    state_dict = unwrap_checkpoint(state_dict)
    if 'stage1_conv_embed.0.weight' in state_dict:
        state_dict = rename_keys(state_dict, _OFFICIAL_RULES)
    return fit_agent_checkpoint(state_dict, model)


# Per variant: the model args `_create_agent_cswin` adds to the caller's (which override them).
_MODEL_ARGS = {
    # Agent-CSWin-T (official `Agent_CSWin_64_24181_tiny_224`, cfgs/agent_cswin_t.yaml).
    'agent_cswin_t': dict(embed_dim=64, depths=(2, 4, 18, 1), num_heads=(2, 4, 8, 16), split_size=(1, 2, 7, 7)),
    # Agent-CSWin-S (official `Agent_CSWin_64_36292_small_224`, cfgs/agent_cswin_s.yaml).
    'agent_cswin_s': dict(embed_dim=64, depths=(3, 6, 29, 2), num_heads=(2, 4, 8, 16), split_size=(1, 2, 7, 7)),
    # Agent-CSWin-B (official `Agent_CSWin_96_36292_base_224`, cfgs/agent_cswin_b.yaml).
    'agent_cswin_b': dict(embed_dim=96, depths=(3, 6, 29, 2), num_heads=(4, 8, 16, 32), split_size=(1, 2, 7, 7)),
    # Agent-CSWin-B at 384x384 (official `Agent_CSWin_96_36292_base_384`, cfgs/agent_cswin_b_384.yaml).
    'agent_cswin_b_384': dict(
        img_size=384, embed_dim=96, depths=(3, 6, 29, 2), num_heads=(4, 8, 16, 32), split_size=(1, 2, 12, 12)),
}
_create_agent_cswin = family_builder(AgentCSWinTransformer, _MODEL_ARGS, filter_fn=checkpoint_filter_fn)


_cfg = paper_cfg(**AGENT_PAPER, crop_pct=0.9)


# Weights: the official ImageNet-1k checkpoints on Tsinghua Cloud (LeapLabTHU/Agent-Attention agent_transformer
# README; its Google Drive copies are the same files), converted by `checkpoint_filter_fn`.
default_cfgs = generate_default_cfgs({
    'agent_cswin_t.in1k': _cfg(**agent_weights('8c562a74441e46d5902b', 'agent_cswin_t')),
    'agent_cswin_s.in1k': _cfg(**agent_weights('30eb8af675bc4b7a8747', 'agent_cswin_s')),
    'agent_cswin_b.in1k': _cfg(**agent_weights('c8035b0839b2410c8c9f', 'agent_cswin_b')),
    'agent_cswin_b_384.in1k': _cfg(
        **agent_weights('1239be0df44b47719432', 'agent_cswin_b_384'), input_size=(3, 384, 384), pool_size=(12, 12),
        crop_pct=1.0),
})


@register_model
def agent_cswin_t(pretrained: bool = False, **kwargs) -> AgentCSWinTransformer:
    return _create_agent_cswin('agent_cswin_t', pretrained, **kwargs)


@register_model
def agent_cswin_s(pretrained: bool = False, **kwargs) -> AgentCSWinTransformer:
    return _create_agent_cswin('agent_cswin_s', pretrained, **kwargs)


@register_model
def agent_cswin_b(pretrained: bool = False, **kwargs) -> AgentCSWinTransformer:
    return _create_agent_cswin('agent_cswin_b', pretrained, **kwargs)


@register_model
def agent_cswin_b_384(pretrained: bool = False, **kwargs) -> AgentCSWinTransformer:
    return _create_agent_cswin('agent_cswin_b_384', pretrained, **kwargs)
