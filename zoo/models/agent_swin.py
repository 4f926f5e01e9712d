""" Agent-Swin: Swin Transformer with agent attention

Paper: `Agent Attention: On the Integration of Softmax and Linear Attention` - https://arxiv.org/abs/2312.08874
(Han, Ye, Han, Xia, Pan, Wan, Song, Huang; ECCV 2024)

Official code: https://github.com/LeapLabTHU/Agent-Attention (`agent_transformer/models/agent_swin.py`,
segmentation backbone `downstream/segmentation/mmseg/models/backbones/agent_swin.py`). The repository declares no
license; this is a reimplementation, the Swin parts are timm's (Apache-2.0, after Microsoft's MIT-licensed Swin).

Every stage is a Swin stage whose blocks are either
* **A** -- agent attention, global over the whole map: agents are the average-pooled (unscaled) queries, they
  aggregate the keys/values (softmax over the tokens), every query reads the agents back (softmax over the agents),
  both with learned position biases, plus a depth-wise 3x3 conv of v (`ops.agent_attention`,
  `ops.agent_bias_maps`);
* **B** -- Swin's own (shifted) window attention with a relative-position bias (`ops.window_attention`); these are
  timm's `SwinTransformerBlock`s with only the attention computation routed through the op.

The official `attn_type` strings give the layout, one letter per stage: `AAAB` (T), `AABB` (S), `AAMB2` (B: 'M'
plus the trailing number = the first 2 blocks of that stage are A, the rest B). The official `window_size` (56 / 72
/ 96 at 224 / 288 / 384) covers every A-stage map, so A-blocks are global; B-blocks use windows of
`max(7, window_size // 8)` = 7 / 9 / 12, shifted on odd blocks.

What this implementation adds:
* Any input size (every multiple of 32, and others through the official padding): A-blocks stay global and their
  separable position biases are bilinearly resized from the training grid to the actual map, as the official
  segmentation backbone does; B-blocks zero-pad the normed map to window multiples before the projection, as the
  official segmentation backbone does (padded positions take part as keys, unmasked). Where a map side fits in one
  window, that side's window shrinks to the map and is not shifted (the official classification rule, which is
  what the checkpoints were trained with; the segmentation code pads and shifts instead). The result at the
  training resolution equals the official classification model's.
* `agent_grids`: optional per-stage agent grids (the segmentation code's `downstream_agent_shapes`, e.g.
  `((9, 9), (12, 12), (14, 14), (7, 7))`); the agent axis of the biases is then bilinearly resized as there.
* timm's layout (`layers.i.downsample` at the start of stage i, `head.fc`); `checkpoint_filter_fn` converts the
  official `{'model': ...}` checkpoints (downsample at the end of a stage, `head.`), drops the persistent
  `relative_position_index` / `attn_mask` buffers and resizes agent biases (linear) and relative-position tables
  (bicubic) when the grids differ, as the official `load_pretrained` does.

Variants (parameter counts and GMACs -- torch's FlopCounterMode / 2 at the listed input -- equal the official
code's):

| model | embed | depths | heads | layout | agents | B window | input | params | GMACs |
|---|---|---|---|---|---|---|---|---|---|
| agent_swin_t | 96 | 2,2,6,2 | 3,6,12,24 | AAAB | 9,16,49,49 | 7 | 224 | 28,902,964 | 4.499 |
| agent_swin_s | 96 | 2,2,18,2 | 3,6,12,24 | AABB | 9,16,49,49 | 7 | 224 | 49,666,684 | 8.701 |
| agent_swin_s_288 | 96 | 2,2,18,2 | 3,6,12,24 | AABB | 9,16,49,49 | 9 | 288 | 49,707,964 | 14.535 |
| agent_swin_b | 128 | 2,2,18,2 | 4,8,16,32 | AAMB2 | 9,16,49,49 | 7 | 224 | 88,095,096 | 15.400 |
| agent_swin_b_384 | 128 | 2,2,18,2 | 4,8,16,32 | AAMB2 | 9,16,49,49 | 12 | 384 | 88,305,016 | 46.207 |

The A-block position biases `ah/aw/ha/wa` are sized by the token grid at `img_size`, so the parameter count
depends on `img_size` (as in the official code). Differences from the official code outside the released
configurations: A-blocks are global at any `img_size` (the official classification code would window them once a
map exceeds `window_size`), and `window_size` here is the B-block window itself.
"""
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import ClassifierHead, PatchEmbed, calculate_drop_path_rates, get_norm_layer, \
    register_notrace_function, to_2tuple
from timm.models import generate_default_cfgs, register_model
from timm.models.swin_transformer import PatchMerging, SwinTransformerBlock

from ops import window_attention
from zoo.layers.agent import AGENT_PAPER, AgentBlock, agent_weights, fit_agent_checkpoint, parse_attn_type, \
    per_stage_agent_grids
from zoo.layers.backbone import ChannelsLastStage, StagedBackbone, check_int_arg, family_builder, \
    init_linear_trunc_normal, pad_to_multiple, paper_cfg, rename_keys, unwrap_checkpoint

__all__ = ['AgentSwinTransformer']


def stage_grids(img_size: Tuple[int, int], patch_size: int, num_stages: int) -> List[Tuple[int, int]]:
    """Token grid of every stage for an `img_size` input (the stem pads to the patch size, merges pad to even)."""
    h, w = math.ceil(img_size[0] / patch_size), math.ceil(img_size[1] / patch_size)
    grids = []
    for i in range(num_stages):
        if i:
            h, w = math.ceil(h / 2), math.ceil(w / 2)
        grids.append((h, w))
    return grids


@register_notrace_function
def window_and_shift(
        size: Tuple[int, int],
        window_size: Tuple[int, int],
        shift_size: Tuple[int, int],
) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    """The window and shift of a block on a ``size`` map: a side that fits in one window takes the map's length and
    no shift (the official classification rule)."""
    window = tuple(min(n, w) for n, w in zip(size, window_size))
    shift = tuple(0 if n <= w else s for n, w, s in zip(size, window_size, shift_size))
    return window, shift


@register_notrace_function
def roll_map(x: torch.Tensor, shift: Tuple[int, int]) -> torch.Tensor:
    """A ``(B, H, W, C)`` map rolled by `shift` along H and W; `x` itself for no shift."""
    return torch.roll(x, shifts=shift, dims=(1, 2)) if any(shift) else x


@register_notrace_function
def shift_mask(
        size: Tuple[int, int],
        window: Tuple[int, int],
        shift: Tuple[int, int],
        device: torch.device,
) -> Optional[torch.Tensor]:
    """Swin's shifted-window mask over a padded ``size`` map: -100 between tokens from different regions.

    Returns ``(num_windows, wh*ww, wh*ww)`` over the row-major window grid (the layout `ops.window_attention` takes),
    or None when nothing is shifted.
    """
    if not any(shift):
        return None
    H, W = size
    (wh, ww), (sh, sw) = window, shift

    def region(n: int, win: int, s: int) -> torch.Tensor:
        # 0 before the last window, 1 inside it before the shifted-in strip, 2 for the strip (none when s == 0)
        idx = torch.arange(n, device=device)
        return (idx >= n - win).long() + ((idx >= n - s).long() if s else 0)

    labels = region(H, wh, sh)[:, None] * 3 + region(W, ww, sw)[None, :]  # (H, W)
    labels = labels.view(H // wh, wh, W // ww, ww).permute(0, 2, 1, 3).reshape(-1, wh * ww)
    diff = labels[:, None, :] != labels[:, :, None]
    return torch.zeros(diff.shape, device=device).masked_fill(diff, -100.0)


class SwinWindowBlock(SwinTransformerBlock):
    """timm's Swin block, its (shifted) window attention computed by `ops.window_attention`.

    The window and shift follow the actual map: a side that fits in one window takes the map's length and no shift
    (official classification rule), longer sides are zero-padded to window multiples (after norm1, before the qkv
    projection: padded positions are keys, as in the official segmentation code) and shifted on odd blocks.
    Parameters (``attn.relative_position_bias_table`` of ``(2*ws-1)**2 x heads``, ...) keep timm's / the official
    names and shapes; for a smaller window the bias table's central part is used.
    """

    def __init__(self, *args, **kwargs):
        # full-size table and no mask buffer at any input resolution: the window is decided per forward
        super().__init__(*args, always_partition=True, dynamic_mask=True, **kwargs)

    def _window_shift(self, H: int, W: int) -> Tuple[Tuple[int, int], Tuple[int, int]]:
        return window_and_shift((H, W), self.window_size, self.shift_size)

    def _bias_table(self, window: Tuple[int, int]) -> torch.Tensor:
        """The ``(heads, 2*wh-1, 2*ww-1)`` bias table of `ops.window_attention` from timm's ``((2*ws-1)**2, heads)``."""
        full_h, full_w = self.window_size
        table = self.attn.relative_position_bias_table.t().reshape(-1, 2 * full_h - 1, 2 * full_w - 1)
        (wh, ww) = window
        return table[:, full_h - wh:full_h + wh - 1, full_w - ww:full_w + ww - 1]

    def _attn(self, x: torch.Tensor) -> torch.Tensor:  # normed (B, H, W, C)
        B, H, W, C = x.shape
        window, shift = self._window_shift(H, W)
        x = pad_to_multiple(x, window, channels_last=True)
        Hp, Wp = x.shape[1], x.shape[2]
        x = roll_map(x, (-shift[0], -shift[1]))
        q, k, v = self.attn.qkv(x).reshape(B, Hp, Wp, 3, self.attn.num_heads, -1).unbind(3)
        mask = shift_mask((Hp, Wp), window, shift, x.device)
        x = window_attention(q, k, v, window, bias_table=self._bias_table(window), mask=mask)
        x = roll_map(x.reshape(B, Hp, Wp, -1), shift)[:, :H, :W]
        return self.attn.proj_drop(self.attn.proj(x))


class PatchEmbedNCHW(PatchEmbed):
    """timm's patch embedding (conv, then LayerNorm on channels-last tokens), returning an NCHW map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).permute(0, 3, 1, 2)


class AgentSwinTransformer(StagedBackbone):
    """Agent-Swin: Swin Transformer whose blocks are agent attention (A) or Swin window attention (B).

    Blocks run channels-last; ``forward_features`` and the intermediates are NCHW maps at strides 4, 8, 16, 32.
    """

    stem_name = 'patch_embed'
    stages_name = 'layers'
    norm_channels_last = True
    # the official trainer exempts the relative-position tables (and 1-D parameters) only
    no_weight_decay_suffixes = ('relative_position_bias_table',)

    def __init__(
            self,
            img_size: Union[int, Tuple[int, int]] = 224,
            patch_size: int = 4,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            embed_dim: int = 96,
            depths: Sequence[int] = (2, 2, 6, 2),
            num_heads: Sequence[int] = (3, 6, 12, 24),
            attn_type: str = 'AAAB',
            agent_num: Sequence[int] = (9, 16, 49, 49),
            agent_grids: Optional[Sequence[Optional[Tuple[int, int]]]] = None,
            window_size: int = 7,
            mlp_ratio: float = 4.,
            qkv_bias: bool = True,
            drop_rate: float = 0.,
            proj_drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            norm_layer: Union[str, Callable[..., nn.Module]] = nn.LayerNorm,
            device=None,
            dtype=None,
    ):
        """
        Args:
            img_size: Training resolution: sizes the A-blocks' position biases (any input size runs).
            attn_type: Official layout string, e.g. 'AAAB', 'AABB', 'AAMB2' (see `parse_attn_type`).
            agent_num: Agents per stage (perfect squares).
            agent_grids: Optional per-stage agent grid overriding ``sqrt(agent_num)`` squared (segmentation).
            window_size: B-block window (the official ``max(7, WINDOW_SIZE // 8)``).
        """
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        check_int_arg('AgentSwinTransformer', 'window_size', window_size)
        check_int_arg('AgentSwinTransformer', 'agent_num', agent_num, lengths=(len(depths),), scalar=False)
        depths, num_heads, agent_num = tuple(depths), tuple(num_heads), tuple(int(a) for a in agent_num)
        num_stages = len(depths)
        if not (len(num_heads) == len(agent_num) == num_stages):
            raise ValueError(
                f'AgentSwinTransformer: depths {depths}, num_heads {num_heads} and agent_num {agent_num} must have '
                f'one length')
        agent_grids = per_stage_agent_grids(agent_grids, num_stages, 'AgentSwinTransformer')
        layouts = parse_attn_type(attn_type, depths)
        if isinstance(norm_layer, str):
            norm_layer = get_norm_layer(norm_layer)
        img_size = to_2tuple(img_size)

        self.init_backbone(in_chans, num_classes, int(embed_dim * 2 ** (num_stages - 1)), drop_rate)
        self.num_layers = num_stages
        self.embed_dim = embed_dim

        self.patch_embed = PatchEmbedNCHW(
            img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim, norm_layer=norm_layer,
            strict_img_size=False, dynamic_img_pad=True, output_fmt='NHWC', **dd)

        grids = stage_grids(img_size, patch_size, num_stages)
        dpr = calculate_drop_path_rates(drop_path_rate, list(depths), stagewise=True)  # per block, split by stage
        layers = []
        in_dim = embed_dim
        for i in range(num_stages):
            out_dim = int(embed_dim * 2 ** i)
            # patch merging (channels-last), then the stage's A / B blocks
            downsample = PatchMerging(in_dim, out_dim, norm_layer=norm_layer, **dd) if i else None
            common = dict(
                num_heads=num_heads[i], mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, proj_drop=proj_drop_rate,
                norm_layer=norm_layer, **dd)
            blocks = [
                AgentBlock(
                    out_dim, agent_num=agent_num[i], bias_grid=grids[i], agent_grid=agent_grids[i],
                    drop_path=dpr[i][j], **common)
                if kind == 'A' else
                SwinWindowBlock(
                    out_dim, input_resolution=grids[i], window_size=window_size,
                    shift_size=0 if j % 2 == 0 else window_size // 2, drop_path=dpr[i][j], **common)
                for j, kind in enumerate(layouts[i])]
            layers.append(ChannelsLastStage(downsample, blocks, downsample_channels_last=True))
            in_dim = out_dim
            self.add_stage_feature(out_dim, patch_size * 2 ** i)
        self.layers = nn.Sequential(*layers)

        self.norm = norm_layer(self.num_features, **dd)
        self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate, **dd)
        self.apply(init_linear_trunc_normal)  # the official init


def _resize_rpb_table(key: str, v: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Bicubic resize of a ``((2w-1)**2, heads)`` relative-position table (the official `load_pretrained`); other
    tensors pass unchanged."""
    if not key.endswith('relative_position_bias_table'):
        return v
    (l_old, heads), (l_new, heads_new) = v.shape, shape
    s_old, s_new = math.isqrt(l_old), math.isqrt(l_new)
    if heads != heads_new or s_old ** 2 != l_old or s_new ** 2 != l_new:
        raise ValueError(f'checkpoint_filter_fn: relative_position_bias_table {tuple(v.shape)} cannot be resized to '
                         f'{tuple(shape)}')
    out = F.interpolate(v.t().reshape(1, heads, s_old, s_old).float(), size=(s_new, s_new), mode='bicubic')
    return out.reshape(heads, l_new).t().to(v.dtype)


# Official (agent_transformer/models/agent_swin.py) -> zoo names: the downsample at the end of stage i starts
# stage i + 1, the classifier is timm's head.fc.
_OFFICIAL_RULES = (
    (r'^layers\.(\d+)\.downsample', lambda m: f'layers.{int(m.group(1)) + 1}.downsample'),
    (r'^head\.', 'head.fc.'),
)


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Official Agent-Swin checkpoints (``{'model': state_dict, ...}``) -> zoo (timm) layout.

    Renames (downsample at the end of stage i -> start of stage i + 1, ``head.`` -> ``head.fc.``), drops the
    ``relative_position_index`` / ``attn_mask`` buffers, and resizes agent biases and relative-position tables whose
    grid differs from the model's. A state dict in the zoo's layout with the model's shapes passes unchanged.
    """
    state_dict = unwrap_checkpoint(state_dict)
    # buffers, rebuilt by the model
    state_dict = {k: v for k, v in state_dict.items() if not k.endswith(('relative_position_index', 'attn_mask'))}
    if 'layers.0.downsample.reduction.weight' in state_dict or 'head.weight' in state_dict:
        state_dict = rename_keys(state_dict, _OFFICIAL_RULES)
    return fit_agent_checkpoint(state_dict, model, _resize_rpb_table)


# Per variant: the model args `_create_agent_swin` adds to the caller's (which override them).
_MODEL_ARGS = {
    # Agent-Swin-T (cfgs/agent_swin_t.yaml).
    'agent_swin_t': dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), attn_type='AAAB'),
    # Agent-Swin-S (cfgs/agent_swin_s.yaml).
    'agent_swin_s': dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), attn_type='AABB'),
    # Agent-Swin-S at 288x288 (cfgs/agent_swin_s_288.yaml: WINDOW_SIZE 72, B-block window 9).
    'agent_swin_s_288': dict(
        img_size=288, embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), attn_type='AABB', window_size=9),
    # Agent-Swin-B (cfgs/agent_swin_b.yaml).
    'agent_swin_b': dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), attn_type='AAMB2'),
    # Agent-Swin-B at 384x384 (cfgs/agent_swin_b_384.yaml: WINDOW_SIZE 96, B-block window 12).
    'agent_swin_b_384': dict(
        img_size=384, embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), attn_type='AAMB2',
        window_size=12),
}
_create_agent_swin = family_builder(AgentSwinTransformer, _MODEL_ARGS, filter_fn=checkpoint_filter_fn)


_cfg = paper_cfg(**AGENT_PAPER, first_conv='patch_embed.proj')


# Weights: the official ImageNet-1k checkpoints on Tsinghua Cloud (LeapLabTHU/Agent-Attention agent_transformer
# README; its Google Drive copies are the same files), converted by `checkpoint_filter_fn`.
# 288 / 384 fine-tunes evaluate without the center crop (TEST.CROP False).
default_cfgs = generate_default_cfgs({
    'agent_swin_t.in1k': _cfg(**agent_weights('a2ddc1190c224f768a41', 'agent_swin_t')),
    'agent_swin_s.in1k': _cfg(**agent_weights('f607172c9fea4d6e99bb', 'agent_swin_s')),
    'agent_swin_s_288.in1k': _cfg(
        **agent_weights('09760394e93b4046a25e', 'agent_swin_s_288'), input_size=(3, 288, 288), pool_size=(9, 9),
        crop_pct=1.0),
    'agent_swin_b.in1k': _cfg(**agent_weights('4fcd2d0114bb490483c3', 'agent_swin_b')),
    'agent_swin_b_384.in1k': _cfg(
        **agent_weights('bb84ee9058954706a557', 'agent_swin_b_384'), input_size=(3, 384, 384), pool_size=(12, 12),
        crop_pct=1.0),
})


@register_model
def agent_swin_t(pretrained: bool = False, **kwargs) -> AgentSwinTransformer:
    return _create_agent_swin('agent_swin_t', pretrained, **kwargs)


@register_model
def agent_swin_s(pretrained: bool = False, **kwargs) -> AgentSwinTransformer:
    return _create_agent_swin('agent_swin_s', pretrained, **kwargs)


@register_model
def agent_swin_s_288(pretrained: bool = False, **kwargs) -> AgentSwinTransformer:
    return _create_agent_swin('agent_swin_s_288', pretrained, **kwargs)


@register_model
def agent_swin_b(pretrained: bool = False, **kwargs) -> AgentSwinTransformer:
    return _create_agent_swin('agent_swin_b', pretrained, **kwargs)


@register_model
def agent_swin_b_384(pretrained: bool = False, **kwargs) -> AgentSwinTransformer:
    return _create_agent_swin('agent_swin_b_384', pretrained, **kwargs)
