""" DaViT: Dual Attention Vision Transformers

Papers:
* `DaViT: Dual Attention Vision Transformers` - https://arxiv.org/abs/2204.03645 (ECCV 2022)
* `Florence-2: Advancing a Unified Representation for a Variety of Vision Tasks` - https://arxiv.org/abs/2311.06242
  (the `_fl` variants: DaViT image towers with v2 channel attention and overlapping downsampling)

Official code (MIT license): https://github.com/dingmyu/davit
timm's port (Apache-2.0): `timm.models.davit`, registered as `davit_*`.

Every stage alternates a spatial block (multi-head attention inside non-overlapping windows) and a channel block
(channel group attention: a head_dim x head_dim softmax map per group, global over all tokens), each with a
depth-wise conv position encoding before the attention and before the MLP.

What this implementation adds:
* All attention runs through attnzoo's ops (`ops.window_attention`, `ops.channel_attention`): fused Triton
  forward and backward kernels on GPU, the plain-PyTorch reference elsewhere. This file only projects and merges.
* Names: timm registers `davit_*`, so the zoo registers `zoo_davit_*` and leaves timm's entries alone.
* The official forward reproduced exactly, padding included: the normed tokens are zero-padded to a multiple of
  the window BEFORE the qkv projection, so padded positions take part as keys/values equal to the qkv bias (they
  are not masked out). Any input that is a multiple of the total stride (32) works; other sizes are padded like
  the official code (stem to a multiple of 4, downsample to even).
* The state-dict layout is timm's, so timm's `davit_*` weights load unchanged; `checkpoint_filter_fn` also
  converts the official repository's layout (and the Florence-2 vision tower's).
* Stochastic depth follows the official schedule (one linearly increasing rate per spatial / channel sub-block);
  timm shares one rate per dual block. Only training differs; the default rate is 0 as in timm.

Variants (`depths` counts dual blocks, i.e. one spatial + one channel block each; the paper counts both):

| model | depths | embed_dims | heads | window | input | params | GMACs |
|---|---|---|---|---|---|---|---|
| zoo_davit_tiny | 1,1,3,1 | 96..768 | 3..24 | 7 | 224 | 28,360,168 | 4.52 |
| zoo_davit_small | 1,1,9,1 | 96..768 | 3..24 | 7 | 224 | 49,745,896 | 8.77 |
| zoo_davit_base | 1,1,9,1 | 128..1024 | 4..32 | 7 | 224 | 87,954,408 | 15.47 |
| zoo_davit_large | 1,1,9,1 | 192..1536 | 6..48 | 12 | 384 | 196,811,752 | 102.81 |
| zoo_davit_huge | 1,1,9,1 | 256..2048 | 8..64 | 7 | 224 | 348,922,856 | 61.16 |
| zoo_davit_giant | 1,1,12,3 | 384..3072 | 12..96 | 7 | 224 | 1,406,470,120 | 192.79 |
| zoo_davit_base_fl | 1,1,9,1 | 128..1024 | 4..32 | 12 | 768 | 90,370,048 | 189.89 |
| zoo_davit_huge_fl | 1,1,9,1 | 256..2048 | 8..64 | 12 | 768 | 360,636,416 | 743.98 |

Parameter counts equal the official code's (T/S/B/L: `DaViT_tiny/small/base/large_window12_384`) and timm's (all
eight). GMACs: torch's FlopCounterMode / 2 at the listed input, attention included; for T/S/B/L they equal the
official code's measured the same way (fvcore, which the official README / code comments quote, gives 4.54 / 8.80 /
15.51 / 102.97). `zoo_davit_large` is the official `DaViT_large_window12_384` (window 12, 384x384). huge and giant
are timm's configurations of the paper's DaViT-H / DaViT-G (trained on extra data in the paper; no public weights).
The `_fl` variants are Florence-2's towers: the 3x3 downsample convs give them more parameters than base / huge, and
they keep timm's named sub-blocks (`blocks.d.spatial_block` / `.channel_block`) so timm's and Florence-2's weights
map onto them.
"""
from collections import OrderedDict
from functools import partial
from typing import Any, Callable, Dict, Optional, Tuple, Union

import torch
import torch.nn as nn
from timm.layers import LayerNorm2d, Mlp, NormMlpClassifierHead, calculate_drop_path_rates, to_2tuple
from timm.models import generate_default_cfgs, register_model

from ops import channel_attention, window_attention
from zoo.layers.attention import QKVAttention
from zoo.layers.backbone import ChannelsLastStage, StagedBackbone, build_backbone, check_int_arg, \
    init_linear_trunc_normal, pad_to_multiple, paper_cfg, rename_keys, unwrap_checkpoint
from zoo.layers.blocks import PreNormBlock, apply_nchw
from zoo.weights import create, official_weights

__all__ = ['DaVit']


class ConvPosEnc(nn.Module):
    """Conditional position encoding: ``x + DWConv3x3(x)`` on channels-last maps (no activation, no norm)."""

    def __init__(self, dim: int, kernel_size: int = 3, device=None, dtype=None):
        super().__init__()
        self.proj = nn.Conv2d(
            dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C)
        return x + apply_nchw(self.proj, x)


class Stem(nn.Module):
    """Patch embedding: input padded to a multiple of 4, Conv 7x7 / stride 4 / pad 3, then LayerNorm."""

    def __init__(
            self,
            in_chs: int = 3,
            out_chs: int = 96,
            norm_layer: Callable[..., nn.Module] = LayerNorm2d,
            device=None,
            dtype=None,
    ):
        super().__init__()
        self.stride = (4, 4)
        self.conv = nn.Conv2d(in_chs, out_chs, 7, stride=self.stride, padding=3, device=device, dtype=dtype)
        self.norm = norm_layer(out_chs, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # NCHW -> NCHW
        x = pad_to_multiple(x, self.stride, channels_last=False)
        return self.norm(self.conv(x))


class Downsample(nn.Module):
    """LayerNorm on the input channels, then a stride-2 conv.

    ``kernel_size=2`` (DaViT): 2x2 / stride 2 after zero-padding odd maps to even, as the official code does.
    ``kernel_size=3`` (Florence-2): overlapping 3x3 / stride 2 / pad 1.
    """

    def __init__(
            self,
            in_chs: int,
            out_chs: int,
            kernel_size: int = 2,
            norm_layer: Callable[..., nn.Module] = LayerNorm2d,
            device=None,
            dtype=None,
    ):
        super().__init__()
        self.pad_to_even = kernel_size % 2 == 0
        self.norm = norm_layer(in_chs, device=device, dtype=dtype)
        self.conv = nn.Conv2d(
            in_chs, out_chs, kernel_size, stride=2, padding=0 if self.pad_to_even else kernel_size // 2,
            device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # NCHW -> NCHW
        x = self.norm(x)
        if self.pad_to_even:
            x = pad_to_multiple(x, (2, 2), channels_last=False)
        return self.conv(x)


class WindowAttention(QKVAttention):
    """Multi-head attention inside non-overlapping windows, no position bias, no shift.

    The input is zero-padded to window multiples before the qkv projection (official DaViT), so the op always
    sees whole windows; the padded positions are cropped off before the output projection (per-token, so
    cropping first is the same as the official crop after it).
    """

    def __init__(
            self,
            dim: int,
            num_heads: int,
            window_size: Tuple[int, int] = (7, 7),
            qkv_bias: bool = True,
            device=None,
            dtype=None,
    ):
        super().__init__(dim, num_heads, qkv_bias=qkv_bias, device=device, dtype=dtype)
        self.window_size = window_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C)
        B, H, W, C = x.shape
        x = pad_to_multiple(x, self.window_size, channels_last=True)
        x = window_attention(*self.qkv_heads(x), self.window_size)
        x = x[:, :H, :W].reshape(B, H, W, C)
        return self.proj(x)


class ChannelAttention(QKVAttention):
    """Channel group attention, global over the tokens.

    v1 (DaViT): ``out[n, i] = sum_j softmax_j(head_dim**-0.5 * sum_m k[m, i] v[m, j]) q[n, j]``.
    v2 (Florence-2, timm's ``ChannelAttentionV2``): ``out[n, i] = sum_j softmax_j(N**-0.5 * sum_m q[m, i] k[m, j])
    v[n, j]``, i.e. the same op with the roles permuted and a token-count scale.
    """

    def __init__(
            self,
            dim: int,
            num_heads: int,
            qkv_bias: bool = True,
            v2: bool = False,
            device=None,
            dtype=None,
    ):
        super().__init__(dim, num_heads, qkv_bias=qkv_bias, device=device, dtype=dtype)
        self.v2 = v2

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C)
        B, H, W, C = x.shape
        N = H * W
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).unbind(2)
        if self.v2:
            x = channel_attention(v, q, k, scale=N ** -0.5)
        else:
            x = channel_attention(q, k, v, scale=self.head_dim ** -0.5)
        return self.proj(x.reshape(B, H, W, C))


class DualSubBlock(PreNormBlock):
    """One half of a dual block: ``x = cpe1(x); x += attn(norm1(x)); x = cpe2(x); x += mlp(norm2(x))``."""

    def __init__(
            self,
            dim: int,
            attn: nn.Module,
            mlp_ratio: float = 4.,
            drop_path: float = 0.,
            norm_layer: Callable[..., nn.Module] = nn.LayerNorm,
            act_layer: Callable[..., nn.Module] = nn.GELU,
            device=None,
            dtype=None,
    ):
        dd = dict(device=device, dtype=dtype)
        cpe1, cpe2 = ConvPosEnc(dim, **dd), ConvPosEnc(dim, **dd)
        mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, **dd)
        super().__init__(dim, attn, mlp, drop_path=drop_path, norm_layer=norm_layer, **dd)
        self.cpe1 = cpe1
        self.cpe2 = cpe2

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C)
        x = self.cpe1(x)
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        x = self.cpe2(x)
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return x


class SpatialBlock(DualSubBlock):
    """Window-attention half of a dual block."""

    def __init__(
            self,
            dim: int,
            num_heads: int,
            window_size: Tuple[int, int] = (7, 7),
            qkv_bias: bool = True,
            device=None,
            dtype=None,
            **kwargs: Any,
    ):
        attn = WindowAttention(dim, num_heads, window_size, qkv_bias=qkv_bias, device=device, dtype=dtype)
        super().__init__(dim, attn, device=device, dtype=dtype, **kwargs)


class ChannelBlock(DualSubBlock):
    """Channel-group-attention half of a dual block."""

    def __init__(
            self,
            dim: int,
            num_heads: int,
            qkv_bias: bool = True,
            v2: bool = False,
            device=None,
            dtype=None,
            **kwargs: Any,
    ):
        attn = ChannelAttention(dim, num_heads, qkv_bias=qkv_bias, v2=v2, device=device, dtype=dtype)
        super().__init__(dim, attn, device=device, dtype=dtype, **kwargs)


class DaVitStage(ChannelsLastStage):
    """Optional downsample, then `depth` dual blocks (spatial then channel).

    Takes and returns NCHW maps; the blocks run on one contiguous channels-last (B, H, W, C) copy, the layout of
    the ops (norms and projections then read dense rows, and the depth-wise convs see channels_last NCHW views,
    which they take without copies).
    """

    def __init__(
            self,
            in_chs: int,
            out_chs: int,
            depth: int = 1,
            downsample: bool = True,
            num_heads: int = 3,
            window_size: Tuple[int, int] = (7, 7),
            mlp_ratio: float = 4.,
            qkv_bias: bool = True,
            drop_path_rates: Tuple[float, ...] = (0., 0.),
            down_kernel_size: int = 2,
            channel_attn_v2: bool = False,
            named_blocks: bool = False,
            norm_layer: Callable[..., nn.Module] = LayerNorm2d,
            norm_layer_cl: Callable[..., nn.Module] = nn.LayerNorm,
            device=None,
            dtype=None,
    ):
        dd = dict(device=device, dtype=dtype)
        down = Downsample(in_chs, out_chs, down_kernel_size, norm_layer=norm_layer, **dd) if downsample else None

        common = dict(mlp_ratio=mlp_ratio, norm_layer=norm_layer_cl, **dd)
        blocks = []
        for i in range(depth):
            spatial = SpatialBlock(
                out_chs, num_heads, window_size, qkv_bias=qkv_bias, drop_path=drop_path_rates[2 * i], **common)
            channel = ChannelBlock(
                out_chs, num_heads, qkv_bias=qkv_bias, v2=channel_attn_v2, drop_path=drop_path_rates[2 * i + 1],
                **common)
            if named_blocks:  # timm's / Florence-2's key names for the `_fl` towers
                blocks.append(nn.Sequential(OrderedDict(spatial_block=spatial, channel_block=channel)))
            else:
                blocks.append(nn.Sequential(spatial, channel))
        super().__init__(down, blocks)


class DaVit(StagedBackbone):
    """DaViT: Dual Attention Vision Transformer.

    Any input size works (the official padding applies); feature maps are NCHW at strides 4, 8, 16, 32.

    Args:
        in_chans: Number of input image channels.
        num_classes: Number of classifier classes (0: no classifier, `forward` returns pooled features).
        global_pool: Global pooling type of the head (pool -> LayerNorm -> fc, the official order); '' disables it.
        depths: Dual blocks (one spatial + one channel block) per stage.
        embed_dims: Channels per stage.
        num_heads: Window-attention heads and channel-attention groups per stage.
        window_size: Window size of the spatial blocks (int or (h, w)).
        mlp_ratio: MLP hidden width / channels.
        qkv_bias: Bias in the qkv projections.
        down_kernel_size: 2: 2x2 / stride 2 downsampling (DaViT); 3: overlapping 3x3 (Florence-2).
        channel_attn_v2: Florence-2's channel attention (roles permuted, scale N**-0.5).
        named_blocks: Name the sub-blocks `spatial_block` / `channel_block` (timm's `_fl` key layout) instead of 0 / 1.
        norm_eps: Epsilon of every LayerNorm.
        drop_rate: Dropout before the classifier.
        drop_path_rate: Stochastic depth, increasing linearly over all spatial and channel sub-blocks (official).
        img_size: Nominal input size, recorded by timm for recipes / export; the network is size-agnostic.
    """

    def __init__(
            self,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            depths: Tuple[int, ...] = (1, 1, 3, 1),
            embed_dims: Tuple[int, ...] = (96, 192, 384, 768),
            num_heads: Tuple[int, ...] = (3, 6, 12, 24),
            window_size: Union[int, Tuple[int, int]] = 7,
            mlp_ratio: float = 4.,
            qkv_bias: bool = True,
            down_kernel_size: int = 2,
            channel_attn_v2: bool = False,
            named_blocks: bool = False,
            norm_eps: float = 1e-5,
            drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            img_size: Optional[Union[int, Tuple[int, int]]] = None,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        check_int_arg('DaVit', 'window_size', window_size, lengths=(2,))
        depths, embed_dims, num_heads = tuple(depths), tuple(embed_dims), tuple(num_heads)
        num_stages = len(embed_dims)
        if not (len(depths) == len(num_heads) == num_stages):
            raise ValueError(
                f'DaVit: depths {depths}, embed_dims {embed_dims} and num_heads {num_heads} must have one length')
        norm_layer = partial(LayerNorm2d, eps=norm_eps)
        norm_layer_cl = partial(nn.LayerNorm, eps=norm_eps)
        window_size = to_2tuple(window_size)

        self.init_backbone(in_chans, num_classes, embed_dims[-1], drop_rate)

        self.stem = Stem(in_chans, embed_dims[0], norm_layer=norm_layer, **dd)

        dpr = calculate_drop_path_rates(drop_path_rate, 2 * sum(depths))
        stages = []
        in_chs = embed_dims[0]
        for i in range(num_stages):
            first = 2 * sum(depths[:i])
            stages.append(DaVitStage(
                in_chs,
                embed_dims[i],
                depth=depths[i],
                downsample=i > 0,
                num_heads=num_heads[i],
                window_size=window_size,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                drop_path_rates=dpr[first:first + 2 * depths[i]],
                down_kernel_size=down_kernel_size,
                channel_attn_v2=channel_attn_v2,
                named_blocks=named_blocks,
                norm_layer=norm_layer,
                norm_layer_cl=norm_layer_cl,
                **dd,
            ))
            in_chs = embed_dims[i]
            self.add_stage_feature(in_chs, 2 ** (i + 2))
        self.stages = nn.Sequential(*stages)

        # pool -> norm -> fc, the official order (norm before pooling costs ~0.4 % top-1, timm PR #1583)
        self.head = NormMlpClassifierHead(
            self.num_features,
            num_classes,
            pool_type=global_pool,
            drop_rate=drop_rate,
            norm_layer=norm_layer,
            **dd,
        )
        self.apply(init_linear_trunc_normal)  # the official init (timm ViT's)

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None, reset_other: bool = False):
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool, reset_other=reset_other, in_features=self.num_features)
        self.head_hidden_size = self.head.num_features

    def _reset_head_for_pruning(self) -> None:
        # the head's norm is sized for the last stage, which may be gone
        self.reset_classifier(0, '', reset_other=True)


# Official repository (dingmyu/davit) -> timm / zoo names, applied in order to every key.
_OFFICIAL_RULES = (
    (r'^patch_embeds\.0\.proj\.', 'stem.conv.'),
    (r'^patch_embeds\.0\.norm\.', 'stem.norm.'),
    (r'^patch_embeds\.(\d+)\.proj\.', r'stages.\1.downsample.conv.'),
    (r'^patch_embeds\.(\d+)\.norm\.', r'stages.\1.downsample.norm.'),
    (r'^main_blocks\.(\d+)\.', r'stages.\1.blocks.'),
    (r'\.cpe\.0\.', '.cpe1.'),
    (r'\.cpe\.1\.', '.cpe2.'),
    (r'^head\.', 'head.fc.'),
    (r'^norms\.', 'head.norm.'),
)

# Florence-2 vision tower (`vision_tower.` prefix, named sub-blocks) -> timm / zoo names.
_FLORENCE2_RULES = (
    (r'^convs\.0\.', 'stem.'),
    (r'^convs\.(\d+)\.', r'stages.\1.downsample.'),
    (r'\.downsample\.proj\.', '.downsample.conv.'),
    (r'^stem\.proj\.', 'stem.conv.'),
    (r'^blocks\.(\d+)\.', r'stages.\1.blocks.'),
    (r'\.conv(\d)\.fn\.dw\.', r'.cpe\1.proj.'),
    (r'\.(window|channel)_attn\.norm\.', '.norm1.'),
    (r'\.(window|channel)_attn\.fn\.', '.attn.'),
    (r'\.ffn\.norm\.', '.norm2.'),
    (r'\.ffn\.fn\.net\.', '.mlp.'),
)


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Official / Florence-2 / timm checkpoints -> zoo (= timm) layout.

    Unwraps training-checkpoint containers (``state_dict``, then ``model``, then ``state_dict_ema``) and a DDP
    ``module.`` prefix; dicts already in timm's / zoo's layout pass through unchanged.
    """
    state_dict = unwrap_checkpoint(state_dict, containers=('state_dict', 'model', 'state_dict_ema'))

    if 'stem.conv.weight' in state_dict:
        return state_dict  # timm / zoo layout, with or without the classifier
    if 'vision_tower.convs.0.proj.weight' in state_dict:
        prefix = 'vision_tower.'
        tower = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
        return rename_keys(tower, _FLORENCE2_RULES)
    return rename_keys(state_dict, _OFFICIAL_RULES)


def _create_davit(variant: str, pretrained: bool = False, **kwargs) -> DaVit:
    # Florence-2's tower has no head norm (its projection follows elsewhere), so its weights load non-strict
    strict = kwargs.pop('pretrained_strict', not variant.endswith('_fl'))
    return create(lambda pretrained, **kwargs: build_backbone(
        DaVit, variant, pretrained, filter_fn=checkpoint_filter_fn, model_args=_MODEL_ARGS[variant],
        pretrained_strict=strict, **kwargs), variant, pretrained, kwargs)


_cfg = paper_cfg('arXiv:2204.03645', 'DaViT: Dual Attention Vision Transformers', 'https://github.com/dingmyu/davit',
                 license='mit', crop_pct=0.95)


def _cfg_fl(hf_hub_id: str, **kwargs) -> Dict[str, Any]:
    return _cfg(**{
        'hf_hub_id': hf_hub_id,
        'num_classes': 0, 'input_size': (3, 768, 768), 'pool_size': (24, 24), 'crop_pct': 1.0,
        'paper_ids': 'arXiv:2311.06242',
        'paper_name': 'Florence-2: Advancing a Unified Representation for a Variety of Vision Tasks',
        'origin_url': f'https://huggingface.co/{hf_hub_id}',
        **kwargs,
    })


def _davit_weights(drive_id: str) -> Dict[str, Any]:
    # official trainer: timm's train.py (its CheckpointSaver also pickles the argparse args); unverified
    return official_weights(f'https://drive.google.com/file/d/{drive_id}/view',
                            container="{'state_dict': state_dict, 'args': argparse.Namespace, ...} or a state dict")


# Weights: the official ImageNet-1k checkpoints as timm hosts them on the Hugging Face Hub (`timm/davit_*.msft_in1k`,
# converted from https://github.com/dingmyu/davit and labelled apache-2.0 there; timm's layout is the zoo's, so they
# load without conversion), and the Florence-2 vision towers (MIT) from Microsoft's Florence-2 repositories, converted
# by `checkpoint_filter_fn`. The official large (ImageNet-22k) checkpoint is not hosted; huge / giant have none.
default_cfgs = generate_default_cfgs({
    'zoo_davit_tiny.msft_in1k': _cfg(hf_hub_id='timm/davit_tiny.msft_in1k', license='apache-2.0'),
    'zoo_davit_small.msft_in1k': _cfg(hf_hub_id='timm/davit_small.msft_in1k', license='apache-2.0'),
    'zoo_davit_base.msft_in1k': _cfg(hf_hub_id='timm/davit_base.msft_in1k', license='apache-2.0'),
    # the same weights as first released (dingmyu/davit README, Google Drive; needs the optional gdown client)
    'zoo_davit_tiny.msft_in1k_gdrive': _cfg(**_davit_weights('1RSpi3lxKaloOL5-or20HuG975tbPwxRZ')),
    'zoo_davit_small.msft_in1k_gdrive': _cfg(**_davit_weights('1q976ruj45mt0RhO9oxhOo6EP_cmj4ahQ')),
    'zoo_davit_base.msft_in1k_gdrive': _cfg(**_davit_weights('1u9sDBEueB-YFuLigvcwf4b2YyA4MIVsZ')),
    'zoo_davit_large': _cfg(input_size=(3, 384, 384), pool_size=(12, 12), crop_pct=1.0),
    'zoo_davit_huge': _cfg(),
    'zoo_davit_giant': _cfg(),
    'zoo_davit_base_fl.msft_florence2': _cfg_fl('microsoft/Florence-2-base'),
    'zoo_davit_huge_fl.msft_florence2': _cfg_fl('microsoft/Florence-2-large'),
})


# Per variant: the model args `_create_davit` adds to the caller's (which override them).
_MODEL_ARGS = {
    'zoo_davit_tiny': dict(depths=(1, 1, 3, 1), embed_dims=(96, 192, 384, 768), num_heads=(3, 6, 12, 24)),
    'zoo_davit_small': dict(depths=(1, 1, 9, 1), embed_dims=(96, 192, 384, 768), num_heads=(3, 6, 12, 24)),
    'zoo_davit_base': dict(depths=(1, 1, 9, 1), embed_dims=(128, 256, 512, 1024), num_heads=(4, 8, 16, 32)),
    # The official `DaViT_large_window12_384`: window 12 at 384x384.
    'zoo_davit_large': dict(
        depths=(1, 1, 9, 1), embed_dims=(192, 384, 768, 1536), num_heads=(6, 12, 24, 48), window_size=12),
    'zoo_davit_huge': dict(depths=(1, 1, 9, 1), embed_dims=(256, 512, 1024, 2048), num_heads=(8, 16, 32, 64)),
    'zoo_davit_giant': dict(depths=(1, 1, 12, 3), embed_dims=(384, 768, 1536, 3072), num_heads=(12, 24, 48, 96)),
    # Florence-2-base's image tower.
    'zoo_davit_base_fl': dict(
        depths=(1, 1, 9, 1), embed_dims=(128, 256, 512, 1024), num_heads=(4, 8, 16, 32), window_size=12,
        down_kernel_size=3, channel_attn_v2=True, named_blocks=True),
    # Florence-2-large's image tower.
    'zoo_davit_huge_fl': dict(
        depths=(1, 1, 9, 1), embed_dims=(256, 512, 1024, 2048), num_heads=(8, 16, 32, 64), window_size=12,
        down_kernel_size=3, channel_attn_v2=True, named_blocks=True),
}


@register_model
def zoo_davit_tiny(pretrained: bool = False, **kwargs) -> DaVit:
    return _create_davit('zoo_davit_tiny', pretrained, **kwargs)


@register_model
def zoo_davit_small(pretrained: bool = False, **kwargs) -> DaVit:
    return _create_davit('zoo_davit_small', pretrained, **kwargs)


@register_model
def zoo_davit_base(pretrained: bool = False, **kwargs) -> DaVit:
    return _create_davit('zoo_davit_base', pretrained, **kwargs)


@register_model
def zoo_davit_large(pretrained: bool = False, **kwargs) -> DaVit:
    return _create_davit('zoo_davit_large', pretrained, **kwargs)


@register_model
def zoo_davit_huge(pretrained: bool = False, **kwargs) -> DaVit:
    return _create_davit('zoo_davit_huge', pretrained, **kwargs)


@register_model
def zoo_davit_giant(pretrained: bool = False, **kwargs) -> DaVit:
    return _create_davit('zoo_davit_giant', pretrained, **kwargs)


@register_model
def zoo_davit_base_fl(pretrained: bool = False, **kwargs) -> DaVit:
    return _create_davit('zoo_davit_base_fl', pretrained, **kwargs)


@register_model
def zoo_davit_huge_fl(pretrained: bool = False, **kwargs) -> DaVit:
    return _create_davit('zoo_davit_huge_fl', pretrained, **kwargs)
