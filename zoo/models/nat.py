""" NAT / DiNAT: (Dilated) Neighborhood Attention Transformers

Papers:
* `Neighborhood Attention Transformer` - https://arxiv.org/abs/2204.07143 (CVPR 2023)
* `Dilated Neighborhood Attention Transformer` - https://arxiv.org/abs/2209.15001

Official code (MIT license): https://github.com/SHI-Labs/Neighborhood-Attention-Transformer (`classification/
{nat,dinat,dinats,isotropic}.py`), on NATTEN 0.14 (https://github.com/SHI-Labs/NATTEN, MIT). timm registers none of
these names.

Every block attends over the k x k (dilated) neighbourhood of each token with a learned relative position bias;
NAT uses dilation 1 everywhere, DiNAT alternates dilation 1 with dilations that make the neighbourhood span the
whole map at 224x224 (8, 4, 2 in stages 1-3). Families:

* NAT / DiNAT: overlapping conv tokenizer (two 3x3 / 2 convs, no activation between, then LayerNorm), stages of
  blocks each followed by a 3x3 / 2 conv downsampler (bias-free) + LayerNorm, final LayerNorm, average pool, fc.
* DiNAT_s (`dinat_s_*`): Swin's layout -- 4x4 / 4 patch embedding, Swin patch merging -- with (dilated) NA blocks.
* Isotropic (`nat_isotropic_*`, `dinat_isotropic_*`): ViT-like, 16x16 patches, 12 blocks at one resolution
  (DiNAT: dilation 2 in every odd block); `vitrpb_*`: the same network with global self-attention plus a relative
  position bias over the whole 14x14 map (the papers' ViT+RPB baseline).

What this implementation adds:
* All attention runs through attnzoo's ops: ``ops.neighborhood_attention_2d`` (fused Triton forward and backward,
  relative position bias and dilation included, on GPU; the plain-PyTorch reference elsewhere) and, for
  ``vitrpb_*``, ``ops.window_attention`` over one window holding the whole map. This file only projects and merges.
* The official forward reproduced exactly, including NATTEN 0.14's handling of small maps: when a map is smaller
  than kernel x dilation, the block input is zero-padded at the right / bottom before the qkv projection (padded
  tokens take part as keys with q / k / v equal to the qkv bias; they are not masked), and the output is cropped.
  So any input of at least the total stride per side (32; isotropic: 16) works, e.g. DiNAT at 64x64 or
  segmentation at 512x683 (later NATTEN versions reject such maps, official issue #106). Inputs that are not
  multiples of the stride are handled as the official code does (convs with padding 1 for NAT / DiNAT; zero
  padding to multiples of 4 / 16 and to even sizes for DiNAT_s / isotropic).
* timm conventions: ``features_only``, ``forward_intermediates`` (NCHW maps, stride 4..32 or 16), grad
  checkpointing, ``group_matcher``, ``no_weight_decay`` (the relative position biases, official
  ``no_weight_decay_keywords``). Blocks run channels-last (B, H, W, C), the ops' layout; stages and isotropic blocks
  take and return NCHW views of the same memory, so that feature hooks see NCHW maps without copies.
* Key layout: the official one except where timm's structure differs: the official NAT / DiNAT / DiNAT_s
  downsampler closes a level, the zoo's opens the next stage (``levels.{i}.downsample`` ->
  ``stages.{i+1}.downsample``), and ``levels`` / ``layers`` are ``stages``. ``checkpoint_filter_fn`` converts the
  official release files (flat state dicts) and passes the zoo's own through; the isotropic models keep the
  official keys (``layers.{i}``), and ``vitrpb_*``'s index buffer is recomputed, not stored.
* ``vitrpb_*`` covers maps up to ``img_size / 16`` per side (224 -> 14x14), as its bias table does; smaller maps use
  the table's centre (the same relative offsets). ``img_size=`` sizes the table, and ``checkpoint_filter_fn``
  resizes a loaded table bicubically (as DiNAT's official 11x11 checkpoints were made from 7x7 ones).
* Stochastic depth rates grow linearly over all blocks (official); the default rate is 0 as in timm, the official
  training rates are listed below. ``proj_drop_rate`` is the official ``drop_rate`` (dropout after the MLP and the
  attention projection, 0 in every official config); ``drop_rate`` is timm's dropout before the classifier.

Variants (params = ``sum(p.numel())``, equal to the official models' as built by the official code):

| model | depths | C0 | heads | mlp | layer scale | k | dilations | official dpr | params | input |
|---|---|---|---|---|---|---|---|---|---|---|
| nat_mini | 3,4,6,5 | 64 | 2..16 | 3 | - | 7 | 1 | 0.2 | 19,984,174 | 224 |
| nat_tiny | 3,4,18,5 | 64 | 2..16 | 3 | - | 7 | 1 | 0.2 | 27,901,582 | 224 |
| nat_small | 3,4,18,5 | 96 | 3..24 | 2 | 1e-5 | 7 | 1 | 0.3 | 50,743,297 | 224 |
| nat_base | 3,4,18,5 | 128 | 4..32 | 2 | 1e-5 | 7 | 1 | 0.5 | 89,769,652 | 224 |
| dinat_mini | 3,4,6,5 | 64 | 2..16 | 3 | - | 7 | A | 0.2 | 19,984,174 | 224 |
| dinat_tiny | 3,4,18,5 | 64 | 2..16 | 3 | - | 7 | A | 0.2 | 27,901,582 | 224 |
| dinat_small | 3,4,18,5 | 96 | 3..24 | 2 | - | 7 | A | 0.3 | 50,719,681 | 224 |
| dinat_base | 3,4,18,5 | 128 | 4..32 | 2 | 1e-5 | 7 | A | 0.5 | 89,769,652 | 224 |
| dinat_large | 3,4,18,5 | 192 | 6..48 | 2 | - | 7 | A | 0.35 | 200,943,514 | 224 |
| dinat_large_384 | 3,4,18,5 | 192 | 6..48 | 2 | - | 7 | B | 0.35 | 200,943,514 | 384 |
| dinat_large_384_11x11 | 3,4,18,5 | 192 | 6..48 | 2 | - | 11 | A | 0.35 | 201,144,250 | 384 |
| dinat_large_21k | 3,4,18,5 | 192 | 6..48 | 2 | - | 7 | A | 0.2 | 232,976,131 | 224 (21841 classes) |
| dinat_large_21k_11x11 | 3,4,18,5 | 192 | 6..48 | 2 | - | 11 | A | 0.2 | 233,176,867 | 224 (21841 classes) |
| dinat_s_tiny | 2,2,6,2 | 96 | 3..24 | 4 | - | 7 | C | 0.2 | 28,288,354 | 224 |
| dinat_s_small | 2,2,18,2 | 96 | 3..24 | 4 | - | 7 | C | 0.3 | 49,606,258 | 224 |
| dinat_s_base | 2,2,18,2 | 128 | 4..32 | 4 | - | 7 | C | 0.5 | 87,768,224 | 224 |
| dinat_s_large | 2,2,18,2 | 192 | 6..48 | 4 | - | 7 | C | 0.35 | 196,532,476 | 224 |
| dinat_s_large_384 | 2,2,18,2 | 192 | 6..48 | 4 | - | 7 | D | 0.35 | 196,532,476 | 384 |
| dinat_s_large_21k | 2,2,18,2 | 192 | 6..48 | 4 | - | 7 | C | 0.2 | 228,565,093 | 224 (21841 classes) |
| nat_isotropic_small | 12 | 384 | 12 | 4 | - | 7 | 1 | 0.1 | 21,999,736 | 224 |
| dinat_isotropic_small | 12 | 384 | 12 | 4 | - | 7 | 1,2,.. | 0.1 | 21,999,736 | 224 |
| vitrpb_small | 12 | 384 | 12 | 4 | - | global | - | 0.1 | 22,080,376 | 224 |
| nat_isotropic_base | 12 | 768 | 24 | 4 | - | 7 | 1 | 0.4 | 86,465,800 | 224 |
| dinat_isotropic_base | 12 | 768 | 24 | 4 | - | 7 | 1,2,.. | 0.4 | 86,465,800 | 224 |
| vitrpb_base | 12 | 768 | 24 | 4 | - | global | - | 0.4 | 86,627,080 | 224 |

Dilations per stage and block: A = [1,8,1] / [1,4,1,4] / [1,2] repeated / all 1; B = [1,13,1] / [1,6,1,6] / [1,3]
repeated / all 1 (384x384); C = [1,8] / [1,4] / [1,2] repeated / [1,1]; D = [1,13] / [1,6] / [1,3] repeated / [1,1].
The official `*_21k` entry points build a 1000-way head unless given ``num_classes=21841``, which their ImageNet-22k
checkpoints need; the zoo's default cfg sets 21841 (the counts above are with it). FLOPs (the official README: NAT-Mini
2.7G ... DiNAT-L 384 89.7G) follow from the same layers; NA adds 2 * heads * H * W * k^2 * head_dim MACs per block.
"""
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Mlp, register_notrace_function, to_2tuple, trunc_normal_
from timm.models import checkpoint_seq, generate_default_cfgs, register_model

from ops import neighborhood_attention_2d, window_attention
from zoo.errors import InputError
from zoo.layers.attention import QKVAttention
from zoo.layers.backbone import ChannelsLastStage, StagedBackbone, architecture_name, build_backbone, \
    check_image_input, check_int_arg, family_builder, feature_take_indices, init_linear_trunc_normal, pad_to_multiple, \
    paper_cfg, prune_isotropic, rename_keys, unwrap_checkpoint
from zoo.layers.blocks import PreNormBlock, apply_nchw
from zoo.weights import create, official_weights

__all__ = ['NAT', 'NATIsotropic']

# DiNAT dilation patterns (official registry), per stage and block.
_DILATIONS_A = lambda s3: ((1, 8, 1), (1, 4, 1, 4), (1, 2) * (s3 // 2), (1,) * 5)  # noqa: E731
_DILATIONS_B = ((1, 13, 1), (1, 6, 1, 6), (1, 3) * 9, (1,) * 5)
_DILATIONS_C = lambda s3: ((1, 8), (1, 4), (1, 2) * (s3 // 2), (1, 1))  # noqa: E731
_DILATIONS_D = ((1, 13), (1, 6), (1, 3) * 9, (1, 1))


# Shape-dependent helpers are FX leaves, called by a global name without a leading underscore: FX's autowrap skips
# private names.
@register_notrace_function
def pad_to_at_least(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Zero-pad a channels-last (B, H, W, C) map at the bottom / right to at least `height` x `width`."""
    pad_b, pad_r = max(0, height - x.shape[1]), max(0, width - x.shape[2])
    if pad_b or pad_r:
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    return x


class NeighborhoodAttention(QKVAttention):
    """NATTEN 0.14's ``NeighborhoodAttention2D``: qkv projection, neighbourhood attention with a relative position
    bias, output projection, on channels-last maps.

    Maps smaller than ``kernel_size * dilation`` are zero-padded at the bottom / right before the qkv projection and
    cropped after the attention (NATTEN 0.14 / 0.15's module behaviour, which the official weights were trained
    with); the padded tokens are ordinary keys, not masked.
    """

    def __init__(
            self,
            dim: int,
            num_heads: int,
            kernel_size: int = 7,
            dilation: int = 1,
            qkv_bias: bool = True,
            proj_drop: float = 0.,
            device=None,
            dtype=None,
    ):
        dd = dict(device=device, dtype=dtype)
        super().__init__(dim, num_heads, qkv_bias=qkv_bias, **dd)
        check_int_arg('NeighborhoodAttention', 'kernel_size', kernel_size)
        check_int_arg('NeighborhoodAttention', 'dilation', dilation)
        if kernel_size % 2 == 0:
            raise ValueError(f'NeighborhoodAttention: kernel_size must be odd, got {kernel_size}')
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.rpb = nn.Parameter(torch.zeros(num_heads, 2 * kernel_size - 1, 2 * kernel_size - 1, **dd))
        self.proj_drop = nn.Dropout(proj_drop)
        trunc_normal_(self.rpb, std=.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C)
        B, H, W, C = x.shape
        span = self.kernel_size * self.dilation
        x = pad_to_at_least(x, span, span)
        x = neighborhood_attention_2d(*self.qkv_heads(x), self.kernel_size, self.dilation, rpb=self.rpb)
        # cropping before the per-token projection is the official crop after it
        x = x[:, :H, :W].reshape(B, H, W, C)
        return self.proj_drop(self.proj(x))


class GlobalAttentionRPB(QKVAttention):
    """Global multi-head self-attention with a learned relative position bias over the whole map (``vitrpb``'s
    ``MHSARPB``), as ``ops.window_attention`` over one window that holds the map.

    The table ``rpb`` (heads, 2L-1, 2L-1), ``L = img_size / patch``, is indexed by key minus query (the official
    index is Swin's flipped in both directions); ``ops.window_attention`` indexes query minus key, hence the flip.
    Maps up to L x L use the table's centre.
    """

    def __init__(
            self,
            dim: int,
            num_heads: int,
            grid_size: int = 14,
            qkv_bias: bool = True,
            proj_drop: float = 0.,
            device=None,
            dtype=None,
    ):
        dd = dict(device=device, dtype=dtype)
        super().__init__(dim, num_heads, qkv_bias=qkv_bias, **dd)
        self.grid_size = grid_size
        self.rpb = nn.Parameter(torch.zeros(num_heads, 2 * grid_size - 1, 2 * grid_size - 1, **dd))
        self.proj_drop = nn.Dropout(proj_drop)
        trunc_normal_(self.rpb, std=.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C)
        B, H, W, C = x.shape
        table = centred_bias_table(self.rpb, x, self.grid_size)
        x = window_attention(*self.qkv_heads(x), (H, W), bias_table=table).reshape(B, H, W, C)
        return self.proj_drop(self.proj(x))


@register_notrace_function
def centred_bias_table(rpb: torch.Tensor, x: torch.Tensor, grid_size: int) -> torch.Tensor:
    """The centre of ``vitrpb``'s key-minus-query table that a ``(B, H, W, C)`` map uses, flipped into the
    query-minus-key table ``window_attention`` reads; maps beyond ``grid_size`` per side are an error."""
    H, W, L = x.shape[1], x.shape[2], grid_size
    if H > L or W > L:
        raise ValueError(
            f'GlobalAttentionRPB: the {H}x{W} map is larger than the {L}x{L} its relative position bias covers; '
            f'build the model with img_size={max(H, W) * 16} (or more) to size the table for it')
    return rpb.flip(-2, -1)[:, L - H:L + H - 1, L - W:L + W - 1]


class NATBlock(PreNormBlock):
    """Pre-norm transformer block on channels-last maps: ``x += DP(g1 * attn(LN(x)))``, ``x += DP(g2 * MLP(LN(x)))``
    (``g1``, ``g2``: layer scale, official ``gamma1`` / ``gamma2``, only when ``layer_scale`` is set)."""

    def __init__(
            self,
            dim: int,
            num_heads: int,
            kernel_size: int = 7,
            dilation: int = 1,
            mlp_ratio: float = 4.,
            qkv_bias: bool = True,
            proj_drop: float = 0.,
            drop_path: float = 0.,
            layer_scale: Optional[float] = None,
            global_rpb_size: Optional[int] = None,
            act_layer: Callable[..., nn.Module] = nn.GELU,
            norm_layer: Callable[..., nn.Module] = nn.LayerNorm,
            device=None,
            dtype=None,
    ):
        dd = dict(device=device, dtype=dtype)
        if global_rpb_size is None:
            attn = NeighborhoodAttention(
                dim, num_heads, kernel_size, dilation, qkv_bias=qkv_bias, proj_drop=proj_drop, **dd)
        else:
            attn = GlobalAttentionRPB(dim, num_heads, global_rpb_size, qkv_bias=qkv_bias, proj_drop=proj_drop, **dd)
        mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=proj_drop, **dd)
        super().__init__(dim, attn, mlp, drop_path=drop_path, norm_layer=norm_layer, **dd)
        self.layer_scale = layer_scale is not None
        if self.layer_scale:
            self.gamma1 = nn.Parameter(torch.full((dim,), float(layer_scale), **dd))
            self.gamma2 = nn.Parameter(torch.full((dim,), float(layer_scale), **dd))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C)
        if not self.layer_scale:
            return super().forward(x)
        x = x + self.drop_path1(self.gamma1 * self.attn(self.norm1(x)))
        return x + self.drop_path2(self.gamma2 * self.mlp(self.norm2(x)))


class IsotropicBlock(NATBlock):
    """A :class:`NATBlock` that takes and returns NCHW views (the isotropic models' feature hooks see NCHW maps)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # NCHW view of channels-last memory -> same
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvTokenizer(nn.Module):
    """NAT's stem: Conv 3x3/2 (-> C/2) and Conv 3x3/2 (-> C), no activation between, then LayerNorm."""

    def __init__(
            self,
            in_chs: int = 3,
            out_chs: int = 64,
            norm_layer: Callable[..., nn.Module] = nn.LayerNorm,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.proj = nn.Sequential(
            nn.Conv2d(in_chs, out_chs // 2, 3, stride=2, padding=1, **dd),
            nn.Conv2d(out_chs // 2, out_chs, 3, stride=2, padding=1, **dd),
        )
        self.norm = norm_layer(out_chs, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # NCHW -> NCHW view of channels-last memory
        return self.norm(self.proj(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class PatchEmbed(nn.Module):
    """DiNAT_s / isotropic stem: input zero-padded to a multiple of the patch, Conv p x p / p, LayerNorm."""

    def __init__(
            self,
            patch_size: int = 4,
            in_chs: int = 3,
            out_chs: int = 96,
            norm_layer: Callable[..., nn.Module] = nn.LayerNorm,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chs, out_chs, patch_size, stride=patch_size, **dd)
        self.norm = norm_layer(out_chs, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # NCHW -> NCHW view of channels-last memory
        x = pad_to_multiple(x, self.patch_size)
        return self.norm(self.proj(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvDownsample(nn.Module):
    """NAT's downsampler: Conv 3x3/2 (C -> 2C, no bias), LayerNorm. Channels-last in and out."""

    def __init__(
            self,
            dim: int,
            out_dim: int,
            norm_layer: Callable[..., nn.Module] = nn.LayerNorm,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.reduction = nn.Conv2d(dim, out_dim, 3, stride=2, padding=1, bias=False, **dd)
        self.norm = norm_layer(out_dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(apply_nchw(self.reduction, x))


class PatchMerging(nn.Module):
    """Swin's patch merging (DiNAT_s): odd maps zero-padded to even, 2x2 neighbours concatenated in Swin's order,
    LayerNorm(4C), Linear(4C -> 2C, no bias). Channels-last in and out."""

    def __init__(
            self,
            dim: int,
            out_dim: int,
            norm_layer: Callable[..., nn.Module] = nn.LayerNorm,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.norm = norm_layer(4 * dim, **dd)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pad_to_multiple(x, 2, channels_last=True)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))


class NATStage(ChannelsLastStage):
    """Optional downsample (conv or patch merging), then blocks. NCHW views in and out, channels-last inside."""

    def __init__(
            self,
            dim: int,
            out_dim: int,
            depth: int,
            num_heads: int,
            kernel_size: int = 7,
            dilations: Optional[Sequence[int]] = None,
            downsample: Optional[Callable[..., nn.Module]] = None,
            drop_path_rates: Sequence[float] = (),
            norm_layer: Callable[..., nn.Module] = nn.LayerNorm,
            device=None,
            dtype=None,
            **block_kwargs: Any,
    ):
        dd = dict(device=device, dtype=dtype)
        down = downsample(dim, out_dim, norm_layer=norm_layer, **dd) if downsample else None
        dilations = tuple(dilations) if dilations is not None else (1,) * depth
        if len(dilations) != depth:
            raise ValueError(f'NATStage: {len(dilations)} dilations {dilations} for {depth} blocks')
        blocks = [
            NATBlock(
                out_dim, num_heads, kernel_size, dilations[i], drop_path=drop_path_rates[i], norm_layer=norm_layer,
                **block_kwargs, **dd)
            for i in range(depth)
        ]
        super().__init__(down, blocks, downsample_channels_last=True, contiguous=False)


class _NATHead:
    """The classifier both NAT layouts end with: final LayerNorm over channels, average pooling, dropout and a Linear
    ``head`` (the official key; timm's ``ClassifierHead`` would make it ``head.fc``), and the official weight-decay
    exemptions."""

    num_classes: int
    num_features: int
    global_pool: str

    def _init_head(self, num_classes: int, global_pool: str, drop_rate: float, dd: Dict[str, Any]) -> None:
        if global_pool not in ('avg', ''):
            raise ValueError(f"{type(self).__name__}: global_pool must be 'avg' or '', got {global_pool!r}")
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.head_hidden_size = self.num_features
        self.norm = nn.LayerNorm(self.num_features, **dd)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features, num_classes, **dd) if num_classes > 0 else nn.Identity()

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        # the official `no_weight_decay_keywords = {'rpb'}`, as the parameter names timm's optimizer factory takes
        return {n for n, _ in self.named_parameters() if n.endswith('.rpb')}

    @torch.jit.ignore
    def no_weight_decay_keywords(self) -> set:
        return {'rpb'}

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        if global_pool is not None:
            if global_pool not in ('avg', ''):
                raise ValueError(f"{type(self).__name__}: global_pool must be 'avg' or '', got {global_pool!r}")
            self.global_pool = global_pool
        self.num_classes = num_classes
        w = self.norm.weight if isinstance(self.norm, nn.LayerNorm) else None
        dd = dict(device=w.device, dtype=w.dtype) if w is not None else {}
        self.head = nn.Linear(self.num_features, num_classes, **dd) if num_classes > 0 else nn.Identity()

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == 'avg':
            x = x.mean(dim=(2, 3))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)


class NAT(_NATHead, StagedBackbone):
    """NAT, DiNAT and DiNAT_s: hierarchical (dilated) neighborhood attention transformers.

    Any input of at least 32x32 (the total stride) works; feature maps are NCHW at strides 4, 8, 16, 32.

    Args:
        in_chans: Number of input image channels.
        num_classes: Number of classifier classes (0: no classifier, `forward` returns pooled features).
        global_pool: 'avg' or '' (no pooling: `forward` returns the normed NCHW map).
        embed_dim: Channels of the first stage; stage i has ``embed_dim * 2**i``.
        depths: Blocks per stage.
        num_heads: Attention heads per stage.
        kernel_size: Neighbourhood size (odd).
        dilations: Per stage, per block dilation (DiNAT); None: 1 everywhere (NAT).
        mlp_ratio: MLP hidden width / channels.
        qkv_bias: Bias in the qkv projections.
        layer_scale: Initial layer-scale value (``gamma1`` / ``gamma2``), None for none.
        swin_layout: DiNAT_s: 4x4 patch embedding and Swin patch merging instead of the conv tokenizer /
            downsampler.
        drop_rate: Dropout before the classifier.
        proj_drop_rate: Dropout after the attention projection and in the MLP (official ``drop_rate``).
        drop_path_rate: Stochastic depth, increasing linearly over all blocks.
        img_size: Nominal input size, recorded by timm; the network takes any size of at least 32x32.
    """

    stem_name = 'patch_embed'
    norm_channels_last = True  # the blocks run channels-last; the stages hand NCHW views of that memory on

    def __init__(
            self,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            embed_dim: int = 64,
            depths: Tuple[int, ...] = (3, 4, 6, 5),
            num_heads: Tuple[int, ...] = (2, 4, 8, 16),
            kernel_size: int = 7,
            dilations: Optional[Sequence[Sequence[int]]] = None,
            mlp_ratio: float = 3.,
            qkv_bias: bool = True,
            layer_scale: Optional[float] = None,
            swin_layout: bool = False,
            drop_rate: float = 0.,
            proj_drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            img_size: Optional[Union[int, Tuple[int, int]]] = None,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        depths, num_heads = tuple(depths), tuple(num_heads)
        num_stages = len(depths)
        if dilations is not None and not isinstance(dilations, (tuple, list)):
            raise InputError(f'NAT: dilations must be a tuple with one entry per stage ({num_stages}), each an int or '
                             f'one int per block, got {dilations!r}')
        if len(num_heads) != num_stages or (dilations is not None and len(dilations) != num_stages):
            raise ValueError(
                f'NAT: depths {depths}, num_heads {num_heads} and dilations {dilations} must have one length')
        dims = [embed_dim * 2 ** i for i in range(num_stages)]
        self.init_backbone(in_chans, num_classes, dims[-1], drop_rate)

        if swin_layout:
            self.patch_embed = PatchEmbed(4, in_chans, embed_dim, **dd)
            downsample = PatchMerging
        else:
            self.patch_embed = ConvTokenizer(in_chans, embed_dim, **dd)
            downsample = ConvDownsample

        dpr = torch.linspace(0, drop_path_rate, sum(depths), device='cpu').tolist()
        stages = []
        for i in range(num_stages):
            first = sum(depths[:i])
            stages.append(NATStage(
                dims[max(i - 1, 0)],
                dims[i],
                depths[i],
                num_heads[i],
                kernel_size=kernel_size,
                dilations=None if dilations is None else dilations[i],
                downsample=downsample if i > 0 else None,
                drop_path_rates=dpr[first:first + depths[i]],
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                proj_drop=proj_drop_rate,
                layer_scale=layer_scale,
                **dd,
            ))
            self.add_stage_feature(dims[i], 2 ** (i + 2))
        self.stages = nn.Sequential(*stages)
        self._init_head(num_classes, global_pool, drop_rate, dd)
        self.apply(init_linear_trunc_normal)  # official


class NATIsotropic(_NATHead, nn.Module):
    """Isotropic (ViT-like) NAT / DiNAT and ViT+RPB: 16x16 patches, blocks at one resolution.

    Not a staged backbone: every block is a feature level, and ``forward_intermediates(norm=True)`` norms every map
    taken (ViT's convention), not only the last.

    Args:
        in_chans: Number of input image channels.
        num_classes: Number of classifier classes (0: no classifier, `forward` returns pooled features).
        global_pool: 'avg' or '' (no pooling: `forward` returns the normed NCHW map).
        embed_dim: Channels.
        depth: Number of blocks.
        num_heads: Attention heads.
        kernel_size: Neighbourhood size (odd); None: global attention with a relative position bias (``vitrpb``).
        dilation: Dilation of the odd blocks (the even ones have 1): 2 for DiNAT, 1 for NAT.
        mlp_ratio: MLP hidden width / channels.
        qkv_bias: Bias in the qkv projections.
        patch_size: Patch size of the stem.
        img_size: Input size; sets the extent of ``vitrpb``'s bias table (``img_size / patch_size`` per side).
        drop_rate: Dropout before the classifier.
        proj_drop_rate: Dropout after the attention projection and in the MLP (official ``drop_rate``).
        drop_path_rate: Stochastic depth, increasing linearly over the blocks.
    """

    def __init__(
            self,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            embed_dim: int = 384,
            depth: int = 12,
            num_heads: int = 12,
            kernel_size: Optional[int] = 7,
            dilation: int = 2,
            mlp_ratio: float = 4.,
            qkv_bias: bool = True,
            patch_size: int = 16,
            img_size: Union[int, Tuple[int, int]] = 224,
            drop_rate: float = 0.,
            proj_drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        if kernel_size is not None:  # None: global attention (ViT-RPB)
            check_int_arg('NATIsotropic', 'kernel_size', kernel_size)
        self.in_chans = in_chans
        self.num_features = embed_dim
        self.grad_checkpointing = False
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, **dd)
        grid = None if kernel_size is not None else math.ceil(max(to_2tuple(img_size)) / patch_size)
        dpr = torch.linspace(0, drop_path_rate, depth, device='cpu').tolist()
        self.layers = nn.Sequential(*[
            IsotropicBlock(
                embed_dim, num_heads, kernel_size or 1, 1 if i % 2 == 0 else dilation, mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias, proj_drop=proj_drop_rate, drop_path=dpr[i], global_rpb_size=grid, **dd)
            for i in range(depth)
        ])
        self.feature_info = [dict(num_chs=embed_dim, reduction=patch_size, module=f'layers.{i}') for i in range(depth)]
        self._init_head(num_classes, global_pool, drop_rate, dd)
        self.apply(init_linear_trunc_normal)  # official

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(stem=r'^patch_embed', blocks=[(r'^layers\.(\d+)', None), (r'^norm', (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def check_input(self, x: torch.Tensor) -> torch.Tensor:
        return check_image_input(x, self.in_chans, self.feature_info[-1]['reduction'], architecture_name(self))

    def _final_norm(self, x: torch.Tensor) -> torch.Tensor:  # NCHW view -> NCHW view
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Forward features and return the block outputs selected by `indices` (NCHW, stride 16).

        Args:
            x: Input images, NCHW.
            indices: Take the last n blocks if an int, all if None, the listed ones if a sequence.
            norm: Apply the final LayerNorm to every map taken.
            stop_early: Stop after the last block that is needed.
            output_fmt: Only 'NCHW'.
            intermediates_only: Return only the intermediates.
        """
        if output_fmt != 'NCHW':
            raise ValueError(f"NATIsotropic.forward_intermediates: output_fmt must be 'NCHW', got {output_fmt!r}")
        intermediates = []
        take_indices, max_index = feature_take_indices(len(self.layers), indices)
        layers = self.layers if torch.jit.is_scripting() or not stop_early else self.layers[:max_index + 1]

        x = self.patch_embed(self.check_input(x))
        for i, blk in enumerate(layers):
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = torch.utils.checkpoint.checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
            if i in take_indices:
                intermediates.append(self._final_norm(x) if norm else x)
        if intermediates_only:
            return intermediates
        if len(layers) == len(self.layers):
            x = self._final_norm(x)
        return x, intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Drop the blocks (and the final norm / head) that the selected intermediates do not need; the norm fits
        every block's map, so it stays unless `prune_norm`."""
        return prune_isotropic(self, 'layers', indices, prune_norm, prune_head)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(self.check_input(x))
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.layers, x)
        else:
            x = self.layers(x)
        return self._final_norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# --------------------------------------------------------------------------------------------------------------
# Checkpoints

# Official hierarchical layout -> zoo's: each downsampler closes a level there and opens the next stage here.
_OFFICIAL_RULES = (
    (r'^(?:levels|layers)\.(\d+)\.downsample\.', lambda m: f'stages.{int(m.group(1)) + 1}.downsample.'),
    (r'^(?:levels|layers)\.(\d+)\.blocks\.', r'stages.\1.blocks.'),
)


def _resize_table(table: torch.Tensor, shape: Tuple[int, ...]) -> torch.Tensor:
    """Bicubic resize of a (heads, 2k-1, 2k-1) relative position bias table (official 11x11 / Swin practice)."""
    if tuple(table.shape) == tuple(shape):
        return table
    out = F.interpolate(table[None].float(), size=shape[-2:], mode='bicubic', align_corners=False)[0]
    return out.to(table.dtype)


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Official NAT / DiNAT / DiNAT_s / isotropic checkpoints -> zoo layout; the zoo's own layout passes through.

    Unwraps training-checkpoint containers (``state_dict``, ``model``, ``state_dict_ema``) and a DDP ``module.``
    prefix. Official -> zoo: ``levels.{i}`` / ``layers.{i}`` (hierarchical) -> ``stages.{i}`` with each downsampler
    moved to the start of the next stage; ``vitrpb``'s ``relative_position_index`` buffer is dropped (recomputed).
    Relative position bias tables whose size differs from the model's are resized bicubically.
    """
    state_dict = unwrap_checkpoint(state_dict, containers=('state_dict', 'model', 'state_dict_ema'))
    state_dict = {k: v for k, v in state_dict.items() if not k.endswith('relative_position_index')}
    if isinstance(model, NAT):
        state_dict = rename_keys(state_dict, _OFFICIAL_RULES)
    target = model.state_dict()
    return {k: _resize_table(v, target[k].shape) if k.endswith('.rpb') and k in target else v
            for k, v in state_dict.items()}


def _create_nat_isotropic(variant: str, pretrained: bool = False, **kwargs) -> NATIsotropic:
    kwargs = dict(_ISOTROPIC_ARGS[variant], **kwargs)
    # every block is a feature level
    return create(lambda pretrained, **kwargs: build_backbone(
        NATIsotropic, variant, pretrained, filter_fn=checkpoint_filter_fn, num_stages=kwargs.get('depth', 12),
        **kwargs), variant, pretrained, kwargs)


_NAT_URL = 'https://shi-labs.com/projects/nat/checkpoints/CLS/'
_DINAT_URL = 'https://shi-labs.com/projects/dinat/checkpoints/'


_MINI = dict(depths=(3, 4, 6, 5), num_heads=(2, 4, 8, 16), embed_dim=64, mlp_ratio=3.)
_TINY = dict(depths=(3, 4, 18, 5), num_heads=(2, 4, 8, 16), embed_dim=64, mlp_ratio=3.)
_SMALL = dict(depths=(3, 4, 18, 5), num_heads=(3, 6, 12, 24), embed_dim=96, mlp_ratio=2.)
_BASE = dict(depths=(3, 4, 18, 5), num_heads=(4, 8, 16, 32), embed_dim=128, mlp_ratio=2.)
_LARGE = dict(depths=(3, 4, 18, 5), num_heads=(6, 12, 24, 48), embed_dim=192, mlp_ratio=2.)
_S_SMALL = dict(depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), embed_dim=96, mlp_ratio=4., swin_layout=True)
_S_BASE = dict(depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), embed_dim=128, mlp_ratio=4., swin_layout=True)
_S_LARGE = dict(depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48), embed_dim=192, mlp_ratio=4., swin_layout=True)
_ISO_SMALL = dict(embed_dim=384, depth=12, num_heads=12)
_ISO_BASE = dict(embed_dim=768, depth=12, num_heads=24)


# Per variant: the model args `_create_nat` adds to the caller's (which override them).
_MODEL_ARGS = {
    'nat_mini': _MINI,
    'nat_tiny': _TINY,
    'nat_small': dict(_SMALL, layer_scale=1e-5),
    'nat_base': dict(_BASE, layer_scale=1e-5),
    'dinat_mini': dict(_MINI, dilations=_DILATIONS_A(6)),
    'dinat_tiny': dict(_TINY, dilations=_DILATIONS_A(18)),
    # Unlike nat_small, no layer scale (official).
    'dinat_small': dict(_SMALL, dilations=_DILATIONS_A(18)),
    'dinat_base': dict(_BASE, layer_scale=1e-5, dilations=_DILATIONS_A(18)),
    'dinat_large': dict(_LARGE, dilations=_DILATIONS_A(18)),
    'dinat_large_384': dict(_LARGE, dilations=_DILATIONS_B),
    'dinat_large_384_11x11': dict(_LARGE, kernel_size=11, dilations=_DILATIONS_A(18)),
    'dinat_large_21k': dict(_LARGE, dilations=_DILATIONS_A(18)),
    'dinat_large_21k_11x11': dict(_LARGE, kernel_size=11, dilations=_DILATIONS_A(18)),
    'dinat_s_tiny': dict(_S_SMALL, depths=(2, 2, 6, 2), dilations=_DILATIONS_C(6)),
    'dinat_s_small': dict(_S_SMALL, dilations=_DILATIONS_C(18)),
    'dinat_s_base': dict(_S_BASE, dilations=_DILATIONS_C(18)),
    'dinat_s_large': dict(_S_LARGE, dilations=_DILATIONS_C(18)),
    'dinat_s_large_384': dict(_S_LARGE, dilations=_DILATIONS_D),
    'dinat_s_large_21k': dict(_S_LARGE, dilations=_DILATIONS_C(18)),
}
_create_nat = family_builder(NAT, _MODEL_ARGS, filter_fn=checkpoint_filter_fn)


_paper_cfg = paper_cfg('arXiv:2204.07143', 'Neighborhood Attention Transformer',
                       'https://github.com/SHI-Labs/Neighborhood-Attention-Transformer', license='mit',
                       first_conv='patch_embed.proj.0', classifier='head')


def _cfg(url: str = '', **kwargs) -> Dict[str, Any]:
    # the official release files are flat state dicts in the official layout (the official loader reads them as is)
    return _paper_cfg(**official_weights(url, container='flat state dict') if url else {}, **kwargs)


def _cfg_dinat(url: str = '', **kwargs) -> Dict[str, Any]:
    return _cfg(url, **{
        'paper_ids': 'arXiv:2209.15001', 'paper_name': 'Dilated Neighborhood Attention Transformer', **kwargs})


_CFG_384 = dict(input_size=(3, 384, 384), pool_size=(12, 12), crop_pct=1.0)
_CFG_SWIN = dict(first_conv='patch_embed.proj')
_CFG_ISO = dict(first_conv='patch_embed.proj', pool_size=(14, 14))

# Weights: the official release files (flat state dicts in the official layout, converted by
# `checkpoint_filter_fn` on load), MIT like the code. URLs as in the official model files.
default_cfgs = generate_default_cfgs({
    'nat_mini.in1k': _cfg(_NAT_URL + 'nat_mini.pth'),
    'nat_tiny.in1k': _cfg(_NAT_URL + 'nat_tiny.pth'),
    'nat_small.in1k': _cfg(_NAT_URL + 'nat_small.pth'),
    'nat_base.in1k': _cfg(_NAT_URL + 'nat_base.pth'),
    'dinat_mini.in1k': _cfg_dinat(_DINAT_URL + 'imagenet1k/dinat_mini_in1k_224.pth'),
    'dinat_tiny.in1k': _cfg_dinat(_DINAT_URL + 'imagenet1k/dinat_tiny_in1k_224.pth'),
    'dinat_small.in1k': _cfg_dinat(_DINAT_URL + 'imagenet1k/dinat_small_in1k_224.pth'),
    'dinat_base.in1k': _cfg_dinat(_DINAT_URL + 'imagenet1k/dinat_base_in1k_224.pth'),
    'dinat_large.in22k_ft_in1k': _cfg_dinat(_DINAT_URL + 'imagenet1k/dinat_large_in22k_in1k_224.pth'),
    'dinat_large_384.in22k_ft_in1k': _cfg_dinat(
        _DINAT_URL + 'imagenet1k/dinat_large_in22k_in1k_384.pth', **_CFG_384),
    'dinat_large_384_11x11.in22k_ft_in1k': _cfg_dinat(
        _DINAT_URL + 'imagenet1k/dinat_large_in22k_in1k_384_11x11.pth', **_CFG_384),
    'dinat_large_21k.in22k': _cfg_dinat(_DINAT_URL + 'imagenet22k/dinat_large_in22k_224.pth', num_classes=21841),
    'dinat_large_21k_11x11.in22k': _cfg_dinat(
        _DINAT_URL + 'imagenet22k/dinat_large_in22k_224_11x11interp.pth', num_classes=21841),
    'dinat_s_tiny.in1k': _cfg_dinat(_DINAT_URL + 'imagenet1k/dinat_s_tiny_in1k_224.pth', **_CFG_SWIN),
    'dinat_s_small.in1k': _cfg_dinat(_DINAT_URL + 'imagenet1k/dinat_s_small_in1k_224.pth', **_CFG_SWIN),
    'dinat_s_base.in1k': _cfg_dinat(_DINAT_URL + 'imagenet1k/dinat_s_base_in1k_224.pth', **_CFG_SWIN),
    'dinat_s_large.in22k_ft_in1k': _cfg_dinat(_DINAT_URL + 'imagenet1k/dinat_s_large_in1k_224.pth', **_CFG_SWIN),
    'dinat_s_large_384.in22k_ft_in1k': _cfg_dinat(
        _DINAT_URL + 'imagenet1k/dinat_s_large_in1k_384.pth', **_CFG_SWIN, **_CFG_384),
    'dinat_s_large_21k.in22k': _cfg_dinat(
        _DINAT_URL + 'imagenet22k/dinat_s_large_in22k_224.pth', num_classes=21841, **_CFG_SWIN),
    'nat_isotropic_small.in1k': _cfg_dinat(
        _DINAT_URL + 'isotropic/nat_isotropic_small_in1k_224.pth', **_CFG_ISO),
    'dinat_isotropic_small.in1k': _cfg_dinat(
        _DINAT_URL + 'isotropic/dinat_isotropic_small_in1k_224.pth', **_CFG_ISO),
    'vitrpb_small.in1k': _cfg_dinat(_DINAT_URL + 'isotropic/vitrpb_small_in1k_224.pth', **_CFG_ISO),
    'nat_isotropic_base.in1k': _cfg_dinat(_DINAT_URL + 'isotropic/nat_isotropic_base_in1k_224.pth', **_CFG_ISO),
    'dinat_isotropic_base.in1k': _cfg_dinat(
        _DINAT_URL + 'isotropic/dinat_isotropic_base_in1k_224.pth', **_CFG_ISO),
    'vitrpb_base.in1k': _cfg_dinat(_DINAT_URL + 'isotropic/vitrpb_base_in1k_224.pth', **_CFG_ISO),
})


# Per variant: the model args `_create_nat_isotropic` adds to the caller's (which override them).
_ISOTROPIC_ARGS = {
    'nat_isotropic_small': dict(_ISO_SMALL, dilation=1),
    'dinat_isotropic_small': dict(_ISO_SMALL, dilation=2),
    'vitrpb_small': dict(_ISO_SMALL, kernel_size=None),
    'nat_isotropic_base': dict(_ISO_BASE, dilation=1),
    'dinat_isotropic_base': dict(_ISO_BASE, dilation=2),
    'vitrpb_base': dict(_ISO_BASE, kernel_size=None),
}


@register_model
def nat_mini(pretrained: bool = False, **kwargs) -> NAT:
    return _create_nat('nat_mini', pretrained, **kwargs)


@register_model
def nat_tiny(pretrained: bool = False, **kwargs) -> NAT:
    return _create_nat('nat_tiny', pretrained, **kwargs)


@register_model
def nat_small(pretrained: bool = False, **kwargs) -> NAT:
    return _create_nat('nat_small', pretrained, **kwargs)


@register_model
def nat_base(pretrained: bool = False, **kwargs) -> NAT:
    return _create_nat('nat_base', pretrained, **kwargs)


@register_model
def dinat_mini(pretrained: bool = False, **kwargs) -> NAT:
    return _create_nat('dinat_mini', pretrained, **kwargs)


@register_model
def dinat_tiny(pretrained: bool = False, **kwargs) -> NAT:
    return _create_nat('dinat_tiny', pretrained, **kwargs)


@register_model
def dinat_small(pretrained: bool = False, **kwargs) -> NAT:
    return _create_nat('dinat_small', pretrained, **kwargs)


@register_model
def dinat_base(pretrained: bool = False, **kwargs) -> NAT:
    return _create_nat('dinat_base', pretrained, **kwargs)


@register_model
def dinat_large(pretrained: bool = False, **kwargs) -> NAT:
    return _create_nat('dinat_large', pretrained, **kwargs)


@register_model
def dinat_large_384(pretrained: bool = False, **kwargs) -> NAT:
    return _create_nat('dinat_large_384', pretrained, **kwargs)


@register_model
def dinat_large_384_11x11(pretrained: bool = False, **kwargs) -> NAT:
    return _create_nat('dinat_large_384_11x11', pretrained, **kwargs)


@register_model
def dinat_large_21k(pretrained: bool = False, **kwargs) -> NAT:
    return _create_nat('dinat_large_21k', pretrained, **kwargs)


@register_model
def dinat_large_21k_11x11(pretrained: bool = False, **kwargs) -> NAT:
    return _create_nat('dinat_large_21k_11x11', pretrained, **kwargs)


@register_model
def dinat_s_tiny(pretrained: bool = False, **kwargs) -> NAT:
    return _create_nat('dinat_s_tiny', pretrained, **kwargs)


@register_model
def dinat_s_small(pretrained: bool = False, **kwargs) -> NAT:
    return _create_nat('dinat_s_small', pretrained, **kwargs)


@register_model
def dinat_s_base(pretrained: bool = False, **kwargs) -> NAT:
    return _create_nat('dinat_s_base', pretrained, **kwargs)


@register_model
def dinat_s_large(pretrained: bool = False, **kwargs) -> NAT:
    return _create_nat('dinat_s_large', pretrained, **kwargs)


@register_model
def dinat_s_large_384(pretrained: bool = False, **kwargs) -> NAT:
    return _create_nat('dinat_s_large_384', pretrained, **kwargs)


@register_model
def dinat_s_large_21k(pretrained: bool = False, **kwargs) -> NAT:
    return _create_nat('dinat_s_large_21k', pretrained, **kwargs)


@register_model
def nat_isotropic_small(pretrained: bool = False, **kwargs) -> NATIsotropic:
    return _create_nat_isotropic('nat_isotropic_small', pretrained, **kwargs)


@register_model
def dinat_isotropic_small(pretrained: bool = False, **kwargs) -> NATIsotropic:
    return _create_nat_isotropic('dinat_isotropic_small', pretrained, **kwargs)


@register_model
def vitrpb_small(pretrained: bool = False, **kwargs) -> NATIsotropic:
    return _create_nat_isotropic('vitrpb_small', pretrained, **kwargs)


@register_model
def nat_isotropic_base(pretrained: bool = False, **kwargs) -> NATIsotropic:
    return _create_nat_isotropic('nat_isotropic_base', pretrained, **kwargs)


@register_model
def dinat_isotropic_base(pretrained: bool = False, **kwargs) -> NATIsotropic:
    return _create_nat_isotropic('dinat_isotropic_base', pretrained, **kwargs)


@register_model
def vitrpb_base(pretrained: bool = False, **kwargs) -> NATIsotropic:
    return _create_nat_isotropic('vitrpb_base', pretrained, **kwargs)
