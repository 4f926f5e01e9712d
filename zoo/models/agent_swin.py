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
import re
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import ClassifierHead, PatchEmbed, calculate_drop_path_rates, get_norm_layer, to_2tuple, trunc_normal_
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from timm.models.swin_transformer import PatchMerging, SwinTransformerBlock

import ops
from zoo.layers.agent import AgentBlock, parse_attn_type, resize_agent_bias, unwrap_checkpoint

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


def _shift_mask(
        size: Tuple[int, int],
        window: Tuple[int, int],
        shift: Tuple[int, int],
        device: torch.device,
) -> torch.Tensor:
    """Swin's shifted-window mask over a padded ``size`` map: -100 between tokens from different regions.

    Returns ``(num_windows, wh*ww, wh*ww)`` over the row-major window grid (the layout `ops.window_attention` takes).
    """
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
        window = tuple(min(n, w) for n, w in zip((H, W), self.window_size))
        shift = tuple(0 if n <= w else s for n, w, s in zip((H, W), self.window_size, self.shift_size))
        return window, shift

    def _bias_table(self, window: Tuple[int, int]) -> torch.Tensor:
        """The ``(heads, 2*wh-1, 2*ww-1)`` bias table of `ops.window_attention` from timm's ``((2*ws-1)**2, heads)``."""
        full_h, full_w = self.window_size
        table = self.attn.relative_position_bias_table.t().reshape(-1, 2 * full_h - 1, 2 * full_w - 1)
        (wh, ww) = window
        return table[:, full_h - wh:full_h + wh - 1, full_w - ww:full_w + ww - 1]

    def _attn(self, x: torch.Tensor) -> torch.Tensor:  # normed (B, H, W, C)
        B, H, W, C = x.shape
        window, shift = self._window_shift(H, W)
        x = F.pad(x, (0, 0, 0, (-W) % window[1], 0, (-H) % window[0]))
        Hp, Wp = x.shape[1], x.shape[2]
        has_shift = any(shift)
        if has_shift:
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        q, k, v = self.attn.qkv(x).reshape(B, Hp, Wp, 3, self.attn.num_heads, -1).unbind(3)
        mask = _shift_mask((Hp, Wp), window, shift, x.device) if has_shift else None
        x = ops.window_attention(q, k, v, window, bias_table=self._bias_table(window), mask=mask)
        x = x.reshape(B, Hp, Wp, -1)
        if has_shift:
            x = torch.roll(x, shifts=shift, dims=(1, 2))
        x = x[:, :H, :W]
        return self.attn.proj_drop(self.attn.proj(x))


class PatchEmbedNCHW(PatchEmbed):
    """timm's patch embedding (conv, then LayerNorm on channels-last tokens), returning an NCHW map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).permute(0, 3, 1, 2)


class AgentSwinStage(nn.Module):
    """Optional patch merging, then the stage's A / B blocks.

    Takes and returns NCHW maps; the merging and the blocks run channels-last ``(B, H, W, C)``, the layout of the ops.
    """

    def __init__(
            self,
            dim: int,
            out_dim: int,
            layout: str,
            bias_grid: Tuple[int, int],
            downsample: bool = True,
            num_heads: int = 4,
            window_size: int = 7,
            agent_num: int = 49,
            agent_grid: Optional[Tuple[int, int]] = None,
            mlp_ratio: float = 4.,
            qkv_bias: bool = True,
            proj_drop: float = 0.,
            drop_path: Sequence[float] = (0.,),
            norm_layer: Callable[..., nn.Module] = nn.LayerNorm,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.grad_checkpointing = False
        self.downsample = PatchMerging(dim, out_dim, norm_layer=norm_layer, **dd) if downsample else nn.Identity()
        blocks = []
        for i, kind in enumerate(layout):
            common = dict(
                num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, proj_drop=proj_drop,
                drop_path=drop_path[i], norm_layer=norm_layer, **dd)
            if kind == 'A':
                blocks.append(AgentBlock(
                    out_dim, agent_num=agent_num, bias_grid=bias_grid, agent_grid=agent_grid, **common))
            else:
                blocks.append(SwinWindowBlock(
                    out_dim, input_resolution=bias_grid, window_size=window_size,
                    shift_size=0 if i % 2 == 0 else window_size // 2, **common))
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # NCHW -> NCHW
        x = self.downsample(x.permute(0, 2, 3, 1)).contiguous()
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        return x.permute(0, 3, 1, 2)


class AgentSwinTransformer(nn.Module):
    """Agent-Swin: Swin Transformer whose blocks are agent attention (A) or Swin window attention (B).

    Blocks run channels-last; ``forward_features`` and the intermediates are NCHW maps at strides 4, 8, 16, 32.
    """

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
        depths, num_heads, agent_num = tuple(depths), tuple(num_heads), tuple(int(a) for a in agent_num)
        num_stages = len(depths)
        if not (len(num_heads) == len(agent_num) == num_stages):
            raise ValueError(
                f'AgentSwinTransformer: depths {depths}, num_heads {num_heads} and agent_num {agent_num} must have '
                f'one length')
        agent_grids = tuple(agent_grids) if agent_grids is not None else (None,) * num_stages
        if len(agent_grids) != num_stages:
            raise ValueError(f'AgentSwinTransformer: agent_grids {agent_grids} must have {num_stages} entries')
        layouts = parse_attn_type(attn_type, depths)
        if isinstance(norm_layer, str):
            norm_layer = get_norm_layer(norm_layer)
        img_size = to_2tuple(img_size)

        self.num_classes = num_classes
        self.in_chans = in_chans
        self.num_layers = num_stages
        self.embed_dim = embed_dim
        self.num_features = self.head_hidden_size = int(embed_dim * 2 ** (num_stages - 1))
        self.drop_rate = drop_rate
        self.grad_checkpointing = False

        self.patch_embed = PatchEmbedNCHW(
            img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim, norm_layer=norm_layer,
            strict_img_size=False, dynamic_img_pad=True, output_fmt='NHWC', **dd)

        grids = stage_grids(img_size, patch_size, num_stages)
        dpr = calculate_drop_path_rates(drop_path_rate, list(depths), stagewise=True)  # per block, split by stage
        self.feature_info = []
        layers = []
        in_dim = embed_dim
        for i in range(num_stages):
            out_dim = int(embed_dim * 2 ** i)
            layers.append(AgentSwinStage(
                in_dim, out_dim, layouts[i], grids[i],
                downsample=i > 0,
                num_heads=num_heads[i],
                window_size=window_size,
                agent_num=agent_num[i],
                agent_grid=agent_grids[i],
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                proj_drop=proj_drop_rate,
                drop_path=dpr[i],
                norm_layer=norm_layer,
                **dd,
            ))
            in_dim = out_dim
            self.feature_info.append(dict(num_chs=out_dim, reduction=patch_size * 2 ** i, module=f'layers.{i}'))
        self.layers = nn.Sequential(*layers)

        self.norm = norm_layer(self.num_features, **dd)
        self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate, **dd)
        self.apply(self._init_weights)

    def _init_weights(self, m: nn.Module) -> None:
        # the official init: truncated-normal Linear weights and zero biases; convs keep PyTorch's init
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        # the official trainer exempts the relative-position tables (and 1-D parameters) only
        return {n for n, _ in self.named_parameters() if 'relative_position_bias_table' in n}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(
            stem=r'^patch_embed',
            blocks=r'^layers\.(\d+)' if coarse else [
                (r'^layers\.(\d+)\.downsample', (0,)),
                (r'^layers\.(\d+)\.\w+\.(\d+)', None),
                (r'^norm', (99999,)),
            ],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable
        for layer in self.layers:
            layer.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, pool_type=global_pool)

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
            norm: Apply the final norm to the last stage's map when it is taken.
            stop_early: Stop after the last stage that is needed.
            output_fmt: Only 'NCHW'.
            intermediates_only: Return only the intermediates.
        """
        if output_fmt != 'NCHW':
            raise ValueError(
                f"AgentSwinTransformer.forward_intermediates: output_fmt must be 'NCHW', got {output_fmt!r}")
        intermediates = []
        take_indices, max_index = feature_take_indices(len(self.layers), indices)
        layers = self.layers if torch.jit.is_scripting() or not stop_early else self.layers[:max_index + 1]
        last = len(self.layers) - 1

        x = self.patch_embed(x)
        for i, layer in enumerate(layers):
            x = layer(x)
            if i in take_indices:
                intermediates.append(self._norm(x) if norm and i == last else x)
        if intermediates_only:
            return intermediates
        return self._norm(x), intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Drop the stages (and norm / head) that the selected intermediates do not need."""
        take_indices, max_index = feature_take_indices(len(self.layers), indices)
        prune_end = max_index < len(self.layers) - 1
        self.layers = self.layers[:max_index + 1]
        if prune_norm or prune_end:
            # the final norm is sized for the last stage; without it the map of the new last stage passes as is
            self.norm = nn.Identity()
        if prune_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]['num_chs']
        if prune_head or prune_end:
            self.reset_classifier(0, '')
        return take_indices

    def _norm(self, x: torch.Tensor) -> torch.Tensor:  # the final LayerNorm on an NCHW map
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.patch_embed(x))
        return self._norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=True) if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _resize_rpb_table(v: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Bicubic resize of a ``((2w-1)**2, heads)`` relative-position table (the official `load_pretrained`)."""
    (l_old, heads), (l_new, heads_new) = v.shape, shape
    s_old, s_new = math.isqrt(l_old), math.isqrt(l_new)
    if heads != heads_new or s_old ** 2 != l_old or s_new ** 2 != l_new:
        raise ValueError(f'checkpoint_filter_fn: relative_position_bias_table {tuple(v.shape)} cannot be resized to '
                         f'{tuple(shape)}')
    out = F.interpolate(v.t().reshape(1, heads, s_old, s_old).float(), size=(s_new, s_new), mode='bicubic')
    return out.reshape(heads, l_new).t().to(v.dtype)


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Official Agent-Swin checkpoints (``{'model': state_dict, ...}``) -> zoo (timm) layout.

    Renames (downsample at the end of stage i -> start of stage i + 1, ``head.`` -> ``head.fc.``), drops the
    ``relative_position_index`` / ``attn_mask`` buffers, and resizes agent biases and relative-position tables whose
    grid differs from the model's. A state dict in the zoo's layout with the model's shapes passes unchanged.
    """
    state_dict = unwrap_checkpoint(state_dict)

    official = 'layers.0.downsample.reduction.weight' in state_dict or 'head.weight' in state_dict
    target = model.state_dict()
    out = {}
    for k, v in state_dict.items():
        if k.endswith(('relative_position_index', 'attn_mask')):
            continue  # buffers, rebuilt by the model
        if official:
            k = re.sub(r'^layers\.(\d+)\.downsample', lambda m: f'layers.{int(m.group(1)) + 1}.downsample', k)
            k = re.sub(r'^head\.', 'head.fc.', k)
        if k in target and v.shape != target[k].shape:
            name = k.rsplit('.', 1)[-1]
            if name in ('ah_bias', 'aw_bias', 'ha_bias', 'wa_bias'):
                v = resize_agent_bias(v, name, target[k].shape)
            elif name == 'relative_position_bias_table':
                v = _resize_rpb_table(v, target[k].shape)
        out[k] = v
    return out


def _create_agent_swin(variant: str, pretrained: bool = False, **kwargs) -> AgentSwinTransformer:
    default_out_indices = tuple(range(len(kwargs.get('depths', (1, 1, 1, 1)))))
    out_indices = kwargs.pop('out_indices', default_out_indices)
    return build_model_with_cfg(
        AgentSwinTransformer,
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
        'first_conv': 'patch_embed.proj', 'classifier': 'head.fc',
        # the repository declares no license
        'license': 'unknown',
        'paper_ids': 'arXiv:2312.08874',
        'paper_name': 'Agent Attention: On the Integration of Softmax and Linear Attention',
        'origin_url': 'https://github.com/LeapLabTHU/Agent-Attention',
        **kwargs,
    }


# The official ImageNet-1k checkpoints are on Tsinghua Cloud / Google Drive (links in the official README), not on
# the Hugging Face Hub: load them with `pretrained_cfg_overlay=dict(file=...)`; `checkpoint_filter_fn` converts them.
# 288 / 384 fine-tunes evaluate without the center crop (TEST.CROP False).
default_cfgs = generate_default_cfgs({
    'agent_swin_t.in1k': _cfg(),
    'agent_swin_s.in1k': _cfg(),
    'agent_swin_s_288.in1k': _cfg(input_size=(3, 288, 288), pool_size=(9, 9), crop_pct=1.0),
    'agent_swin_b.in1k': _cfg(),
    'agent_swin_b_384.in1k': _cfg(input_size=(3, 384, 384), pool_size=(12, 12), crop_pct=1.0),
})


@register_model
def agent_swin_t(pretrained: bool = False, **kwargs) -> AgentSwinTransformer:
    """Agent-Swin-T (cfgs/agent_swin_t.yaml)."""
    model_args = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), attn_type='AAAB')
    return _create_agent_swin('agent_swin_t', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def agent_swin_s(pretrained: bool = False, **kwargs) -> AgentSwinTransformer:
    """Agent-Swin-S (cfgs/agent_swin_s.yaml)."""
    model_args = dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), attn_type='AABB')
    return _create_agent_swin('agent_swin_s', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def agent_swin_s_288(pretrained: bool = False, **kwargs) -> AgentSwinTransformer:
    """Agent-Swin-S at 288x288 (cfgs/agent_swin_s_288.yaml: WINDOW_SIZE 72, B-block window 9)."""
    model_args = dict(
        img_size=288, embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), attn_type='AABB', window_size=9)
    return _create_agent_swin('agent_swin_s_288', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def agent_swin_b(pretrained: bool = False, **kwargs) -> AgentSwinTransformer:
    """Agent-Swin-B (cfgs/agent_swin_b.yaml)."""
    model_args = dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), attn_type='AAMB2')
    return _create_agent_swin('agent_swin_b', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def agent_swin_b_384(pretrained: bool = False, **kwargs) -> AgentSwinTransformer:
    """Agent-Swin-B at 384x384 (cfgs/agent_swin_b_384.yaml: WINDOW_SIZE 96, B-block window 12)."""
    model_args = dict(
        img_size=384, embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), attn_type='AAMB2',
        window_size=12)
    return _create_agent_swin('agent_swin_b_384', pretrained=pretrained, **dict(model_args, **kwargs))
