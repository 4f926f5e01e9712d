""" BiFormer: Vision Transformer with Bi-Level Routing Attention

Paper: `BiFormer: Vision Transformer with Bi-Level Routing Attention` - https://arxiv.org/abs/2303.08810 (CVPR 2023)

Official code (MIT license): https://github.com/rayleizhu/BiFormer (`models/biformer.py`, `ops/bra_legacy.py`,
`models/_common.py`). timm has no BiFormer.

A 4-stage conv-stem hierarchy. Every block is ``x = x + DWConv3x3(x)`` (conditional position encoding), then
pre-norm attention and MLP residuals (LayerNorm eps 1e-6). Stages 1-3 use bi-level routing attention (BRA): the map
is cut into ``n_win x n_win`` regions, region-mean queries and keys route each query region to its ``topk`` most
related regions, and the tokens attend to the tokens of those regions only; a 5x5 depth-wise conv of V (LePE) is
added to the attention output. Stage 4 is global attention (8 heads, no qkv bias) with LePE on the block input.

What this implementation adds:
* All attention runs through attnzoo's ops: `ops.bilevel_routing_attention` (stages 1-3) and
  `ops.window_attention` with one window covering the map (stage 4's global attention). This file only projects,
  adds the convolutions and merges.
* The official forward of the legacy-BRA models (all but `biformer_stl_nchw`, see below) reproduced exactly,
  padding included, at any input size: the normed tokens are zero-padded
  on the right / bottom to a multiple of `n_win` BEFORE the qkv projection (the official ``auto_pad``, which the
  official classification models leave off and then only take multiples of 112), so padded positions take part as
  keys / values equal to the qkv bias, enter the region means, and feed the LePE conv; the op sees whole regions
  and the padding is cropped afterwards. Against the official code (its auto_pad on where the input is not a
  multiple of 112) the logits agree to fp32 rounding (figures in tests/models/test_biformer.py); every multiple of
  32 (and, with the stride-2 convs' ceil, any size) works, in train and eval.
* Clean timm-style key names (`stem.conv1`, `stages.i.downsample`, `stages.i.blocks.j.{cpe,attn.qkv,attn.proj,
  attn.lepe,mlp.fc1,mlp.fc2}`, `norm`, `head.fc`); `checkpoint_filter_fn` converts the official layout.
* `n_win` is a constructor argument (segmentation uses 8 at 512x512, detection 16), `features_only` /
  `forward_intermediates` give the four NCHW maps at strides 4 / 8 / 16 / 32 before the final BatchNorm (the
  official segmentation backbone drops that norm and adds its own).

Variants (official `models/biformer.py`; heads = qk_dim / 32 in stages 1-3, 8 in stage 4; mlp ratio 3; n_win 7;
topk 1 / 4 / 16 per BRA stage):

| model | depths | embed_dims | params | GMACs (224) |
|---|---|---|---|---|
| biformer_tiny | 2,2,8,2 | 64,128,256,512 | 13,142,760 | 2.22 |
| biformer_small | 4,4,18,4 | 64,128,256,512 | 25,536,232 | 4.46 |
| biformer_base | 4,4,18,4 | 96,192,384,768 | 56,804,968 | 9.76 |
| biformer_stl | 2,2,6,2 | 96,192,384,768 | 28,372,552 | 4.57 |
| biformer_stl_nchw | 2,2,6,2 | 96,192,384,768 | 28,372,552 | 4.57 |

Parameter counts equal the official code's (rayleizhu/BiFormer models/biformer.py), GMACs its torch FlopCounterMode
figures / 2. `biformer_stl` is the paper's ablation model in Swin-T's layout (conv4x4/4 -> BN stem, BN -> conv2x2/2
downsampling, no CPE, mlp ratio 4, legacy BRA); its stride-4 / stride-2 patch convs floor sizes that are not
multiples of 32, as the official model does.

`biformer_stl_nchw` is the same ablation model with the official refactored BRA (`models/biformer_stl_nchw.py`,
`ops/bra_nchw.py`, `ops/torch/rrsda.py`), kept channels-last here: its 1x1-conv qkv (C -> 3C, so qk_dim = C, scale
C ** -0.5) and output convs are Linears (`checkpoint_filter_fn` reshapes the official (out, in, 1, 1) weights), its
LayerNorm2d block norms are channels-last LayerNorms (eps 1e-6), LePE is on V in every stage, and the global stage
(the official ``nchwAttentionLePE``: 8 heads, qkv without bias) also takes LePE of V. Where every BRA map is a
multiple of `n_win` (inputs that are multiples of 16 * n_win = 112 with n_win 7, e.g. 224, 448x336) it is the
official model to fp32 rounding (figures in tests/models/test_biformer.py). Elsewhere it deliberately differs:

* official: region size ``(H // n_win, W // n_win)`` (floor), so the grid has ``ceil(H / (H // n_win))`` regions
  per side -- not `n_win` in general (64 rows, n_win 7: 8 regions of 9 rows, the last with 1 real row), and a map
  side smaller than `n_win` fails (kernel size 0); routing means are over the real tokens of each region
  (``avg_pool2d(ceil_mode=True, count_include_pad=False)``); q / k / v are zero-padded after the projection and
  NOT masked, so every padded position is a key with score 0 and value 0 in the softmax.
* zoo: the op's grid, exactly `n_win` x `n_win` regions of ``ceil(H / n_win) x ceil(W / n_win)`` tokens; means over
  the real tokens too; padded positions are masked (never keys). Works for any map size.

The official behaviour cannot be had through the op's interface: zero-padding the projected q / k / v to the
official grid before the op (so the op sees a divisible map) reproduces the official token attention but not its
routing, because the op then averages partial edge regions over their padded size (the official divides by the
real token count), which reorders the routed regions; measured (perturbed weights) max |logit diff| vs official on
a logit scale of ~5: 0.28 / 0.83 / 1.7 at 256x256 / 250x300 / 512x683 with that padding, 1.9 / 1.3 / 2.3 with the
op's own grid (what is implemented). A checkpoint trained with the official code therefore sees different region
grids at such sizes; feed it multiples of 112 (or pad inputs to them) for the official numbers.
"""
import re
from functools import partial
from typing import Any, Callable, Dict, Optional, Tuple, Union

import torch
import torch.nn as nn
from timm.layers import ClassifierHead, Mlp, calculate_drop_path_rates
from timm.models import generate_default_cfgs, register_model

from ops import bilevel_routing_attention, window_attention
from zoo.layers.attention import head_dim_of
from zoo.layers.backbone import ChannelsLastStage, StagedBackbone, check_int_arg, family_builder, \
    init_linear_trunc_normal, pad_to_multiple, paper_cfg, rename_keys, unwrap_checkpoint
from zoo.layers.blocks import PreNormBlock, apply_nchw
from zoo.weights import unavailable

__all__ = ['BiFormer']


class Stem(nn.Module):
    """Conv3x3/2 -> BN -> GELU -> Conv3x3/2 -> BN (overlapping, stride 4)."""

    def __init__(self, in_chs: int = 3, out_chs: int = 64, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.conv1 = nn.Conv2d(in_chs, out_chs // 2, 3, stride=2, padding=1, **dd)
        self.norm1 = nn.BatchNorm2d(out_chs // 2, **dd)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(out_chs // 2, out_chs, 3, stride=2, padding=1, **dd)
        self.norm2 = nn.BatchNorm2d(out_chs, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # NCHW -> NCHW
        return self.norm2(self.conv2(self.act(self.norm1(self.conv1(x)))))


class PatchStem(nn.Module):
    """Conv4x4/4 (patchify) -> BN: the Swin-T layout of the STL ablation models."""

    def __init__(self, in_chs: int = 3, out_chs: int = 96, device=None, dtype=None):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, 4, stride=4, device=device, dtype=dtype)
        self.norm = nn.BatchNorm2d(out_chs, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # NCHW -> NCHW
        return self.norm(self.conv(x))


class Downsample(nn.Module):
    """Conv3x3/2 (overlapping) -> BN; with ``norm_first`` (Swin-T layout): BN -> Conv2x2/2 (patch merging)."""

    def __init__(self, in_chs: int, out_chs: int, norm_first: bool = False, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.norm_first = norm_first
        if norm_first:
            self.norm = nn.BatchNorm2d(in_chs, **dd)
            self.conv = nn.Conv2d(in_chs, out_chs, 2, stride=2, **dd)
        else:
            self.conv = nn.Conv2d(in_chs, out_chs, 3, stride=2, padding=1, **dd)
            self.norm = nn.BatchNorm2d(out_chs, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # NCHW -> NCHW
        return self.conv(self.norm(x)) if self.norm_first else self.norm(self.conv(x))


class BiLevelRoutingAttention(nn.Module):
    """Bi-level routing attention with LePE (the official legacy BRA, ``kv_downsample_mode='identity'``).

    ``qkv`` projects to q (qk_dim) | k (qk_dim) | v (dim); the op routes over region means of q and k with the
    full-qk_dim scale ``qk_dim ** -0.5`` and attends over the routed regions; ``lepe`` (5x5 depth-wise) of the V map
    is added before ``proj``. ``pad='input'`` (legacy BRA): input padded to `n_win` multiples before ``qkv``, cropped
    before ``proj`` (per-token, so the same as the official crop after it). ``pad='mask'`` (the refactored nchwBRA's
    interface, qk_dim = dim): the projected map goes to the op as is, which masks the padding of non-divisible maps
    (see the module docstring for how that differs from the official nchw code).
    """

    def __init__(
            self,
            dim: int,
            num_heads: int,
            n_win: int = 7,
            topk: int = 4,
            qk_dim: Optional[int] = None,
            qk_scale: Optional[float] = None,
            side_dwconv: int = 5,
            pad: str = 'input',
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        if pad not in ('input', 'mask'):
            raise ValueError(f"BiLevelRoutingAttention: pad must be 'input' or 'mask', got {pad!r}")
        self.pad = pad
        qk_dim = qk_dim or dim
        if qk_dim % num_heads or dim % num_heads:
            raise ValueError(
                f'BiLevelRoutingAttention: qk_dim {qk_dim} and dim {dim} must be divisible by num_heads {num_heads}')
        self.dim = dim
        self.qk_dim = qk_dim
        self.num_heads = num_heads
        self.n_win = n_win
        self.topk = topk
        self.scale = qk_scale or qk_dim ** -0.5
        self.qkv = nn.Linear(dim, 2 * qk_dim + dim, **dd)
        self.lepe = nn.Conv2d(dim, dim, side_dwconv, padding=side_dwconv // 2, groups=dim, **dd)
        self.proj = nn.Linear(dim, dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C)
        B, H, W, C = x.shape
        if self.pad == 'input':
            x = pad_to_multiple(x, self.n_win, channels_last=True)  # the official ``auto_pad``
        Hp, Wp = x.shape[1], x.shape[2]
        q, k, v = self.qkv(x).split([self.qk_dim, self.qk_dim, self.dim], dim=-1)
        nh = self.num_heads
        out = bilevel_routing_attention(
            q.reshape(B, Hp, Wp, nh, self.qk_dim // nh),
            k.reshape(B, Hp, Wp, nh, self.qk_dim // nh),
            v.reshape(B, Hp, Wp, nh, self.dim // nh),
            self.n_win,
            self.topk,
            scale=self.scale,
        )
        x = out.reshape(B, Hp, Wp, C) + apply_nchw(self.lepe, v)
        return self.proj(x[:, :H, :W])


class GlobalAttentionLePE(nn.Module):
    """Global multi-head attention with LePE of the input (the official ``AttentionLePE``, last stage).

    Computed as window attention with one window covering the whole map. ``lepe_on_v``: LePE of V instead of the
    input (the official ``nchwAttentionLePE`` of the refactored STL model).
    """

    def __init__(
            self,
            dim: int,
            num_heads: int = 8,
            qkv_bias: bool = False,
            side_dwconv: int = 5,
            lepe_on_v: bool = False,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.num_heads = num_heads
        self.head_dim = head_dim_of('GlobalAttentionLePE', dim, num_heads)
        self.lepe_on_v = lepe_on_v
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias, **dd)
        self.lepe = nn.Conv2d(dim, dim, side_dwconv, padding=side_dwconv // 2, groups=dim, **dd)
        self.proj = nn.Linear(dim, dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C)
        B, H, W, C = x.shape
        q, k, v = self.qkv(x).reshape(B, H, W, 3, self.num_heads, self.head_dim).unbind(3)
        out = window_attention(q, k, v, (H, W), scale=self.head_dim ** -0.5)
        lepe_in = v.reshape(B, H, W, C) if self.lepe_on_v else x
        return self.proj(out.reshape(B, H, W, C) + apply_nchw(self.lepe, lepe_in))


class Block(PreNormBlock):
    """``x = x + cpe(x); x = x + attn(norm1(x)); x = x + mlp(norm2(x))`` on channels-last maps.

    ``topk > 0``: bi-level routing attention; ``topk == -2``: global attention with LePE (the official codes).
    ``cpe_kernel_size=0``: no conditional position encoding (the STL models).
    """

    def __init__(
            self,
            dim: int,
            num_heads: int,
            n_win: int = 7,
            topk: int = 4,
            qk_dim: Optional[int] = None,
            qk_scale: Optional[float] = None,
            global_num_heads: int = 8,
            mlp_ratio: float = 3.,
            side_dwconv: int = 5,
            cpe_kernel_size: int = 3,
            bra_pad: str = 'input',
            global_lepe_on_v: bool = False,
            drop_path: float = 0.,
            norm_layer: Callable[..., nn.Module] = partial(nn.LayerNorm, eps=1e-6),
            act_layer: Callable[..., nn.Module] = nn.GELU,
            device=None,
            dtype=None,
    ):
        dd = dict(device=device, dtype=dtype)
        # the official padding is 1 whatever the kernel size
        cpe = nn.Conv2d(dim, dim, cpe_kernel_size, padding=1, groups=dim, **dd) if cpe_kernel_size else None
        if topk > 0:
            attn = BiLevelRoutingAttention(
                dim, num_heads, n_win=n_win, topk=topk, qk_dim=qk_dim, qk_scale=qk_scale, side_dwconv=side_dwconv,
                pad=bra_pad, **dd)
        elif topk == -2:
            attn = GlobalAttentionLePE(
                dim, global_num_heads, side_dwconv=side_dwconv, lepe_on_v=global_lepe_on_v, **dd)
        else:
            raise ValueError(f'Block: topk must be > 0 (routing) or -2 (global attention with LePE), got {topk}')
        mlp = Mlp(dim, int(mlp_ratio * dim), act_layer=act_layer, **dd)
        super().__init__(dim, attn, mlp, drop_path=drop_path, norm_layer=norm_layer, **dd)
        self.cpe = cpe

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C)
        if self.cpe is not None:
            x = x + apply_nchw(self.cpe, x)
        return super().forward(x)


class BiFormer(StagedBackbone):
    """BiFormer: conv stem, four stages of routed / global attention blocks, BatchNorm -> mean pool -> Linear.

    Any input size works (legacy BRA: the regions are padded as the official ``auto_pad`` does; ``bra_pad='mask'``:
    the op masks the padding); feature maps are NCHW at
    strides 4, 8, 16, 32.

    Args:
        in_chans: Number of input image channels.
        num_classes: Number of classifier classes (0: no classifier, `forward` returns pooled features).
        global_pool: Global pooling type of the head; '' disables it.
        depths: Blocks per stage.
        embed_dims: Channels per stage.
        qk_dims: Query / key channels per stage (default: embed_dims).
        head_dim: Query / key channels per head in the routing stages (heads = qk_dim / head_dim).
        global_num_heads: Heads of the global-attention stages (official: 8 whatever the width).
        n_win: Regions per side in the routing stages.
        topks: Routed regions per query region, per stage; -2 marks a global-attention stage.
        mlp_ratios: MLP hidden width / channels, per stage.
        side_dwconv: LePE depth-wise kernel size.
        cpe_kernel_size: Kernel size of the depth-wise conv position encoding before each block (0: none).
        layout: 'biformer': overlapping conv stem (3x3/2 twice) and 3x3/2 conv -> BN downsampling;
            'swin': conv4x4/4 -> BN stem and BN -> conv2x2/2 downsampling (the STL ablation models).
        bra_pad: 'input': zero-pad the normed tokens to `n_win` multiples before the qkv projection (legacy BRA,
            official ``auto_pad``); 'mask': project the map as is and let the op mask the padding (refactored
            nchwBRA models).
        global_lepe_on_v: LePE of V (refactored ``nchwAttentionLePE``) instead of the block input in the
            global-attention stages.
        qk_scale: Override the attention / routing scale of the routing stages (default qk_dim ** -0.5).
        drop_rate: Dropout before the classifier.
        drop_path_rate: Stochastic depth, increasing linearly over all blocks (official).
        img_size: Nominal input size, recorded by timm for recipes / export; the network is size-agnostic.
    """

    def __init__(
            self,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            depths: Tuple[int, ...] = (2, 2, 8, 2),
            embed_dims: Tuple[int, ...] = (64, 128, 256, 512),
            qk_dims: Optional[Tuple[int, ...]] = None,
            head_dim: int = 32,
            global_num_heads: int = 8,
            n_win: int = 7,
            topks: Tuple[int, ...] = (1, 4, 16, -2),
            mlp_ratios: Union[float, Tuple[float, ...]] = 3.,
            side_dwconv: int = 5,
            cpe_kernel_size: int = 3,
            layout: str = 'biformer',
            bra_pad: str = 'input',
            global_lepe_on_v: bool = False,
            qk_scale: Optional[float] = None,
            drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            img_size: Optional[Union[int, Tuple[int, int]]] = None,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        check_int_arg('BiFormer', 'n_win', n_win, lengths=(2,))
        check_int_arg('BiFormer', 'topks', topks, lengths=(len(depths),), scalar=False, minimum=None)
        depths, embed_dims, topks = tuple(depths), tuple(embed_dims), tuple(topks)
        qk_dims = embed_dims if qk_dims is None else tuple(qk_dims)
        num_stages = len(embed_dims)
        if isinstance(mlp_ratios, (int, float)):
            mlp_ratios = (mlp_ratios,) * num_stages
        mlp_ratios = tuple(mlp_ratios)
        if not (len(depths) == len(qk_dims) == len(topks) == len(mlp_ratios) == num_stages):
            raise ValueError(
                f'BiFormer: depths {depths}, embed_dims {embed_dims}, qk_dims {qk_dims}, topks {topks} and '
                f'mlp_ratios {mlp_ratios} must have one length')

        self.init_backbone(in_chans, num_classes, embed_dims[-1], drop_rate)

        if layout not in ('biformer', 'swin'):
            raise ValueError(f"BiFormer: layout must be 'biformer' or 'swin', got {layout!r}")
        stem_layer = PatchStem if layout == 'swin' else Stem
        self.stem = stem_layer(in_chans, embed_dims[0], **dd)

        dpr = calculate_drop_path_rates(drop_path_rate, sum(depths))
        stages = []
        for i, dim in enumerate(embed_dims):
            first = sum(depths[:i])
            # each stage: optional downsample, then its blocks, channels-last
            stages.append(ChannelsLastStage(
                Downsample(embed_dims[i - 1], dim, norm_first=layout == 'swin', **dd) if i else None,
                [Block(
                    dim,
                    num_heads=qk_dims[i] // head_dim,
                    n_win=n_win,
                    topk=topks[i],
                    qk_dim=qk_dims[i],
                    qk_scale=qk_scale,
                    global_num_heads=global_num_heads,
                    mlp_ratio=mlp_ratios[i],
                    side_dwconv=side_dwconv,
                    cpe_kernel_size=cpe_kernel_size,
                    bra_pad=bra_pad,
                    global_lepe_on_v=global_lepe_on_v,
                    drop_path=dpr[first + j],
                    **dd,
                ) for j in range(depths[i])],
            ))
            self.add_stage_feature(dim, 2 ** (i + 2))
        self.stages = nn.Sequential(*stages)

        self.norm = nn.BatchNorm2d(self.num_features, **dd)
        self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate, **dd)
        self.apply(init_linear_trunc_normal)  # the official init


# Official repository (rayleizhu/BiFormer, models/biformer.py) -> zoo names, applied in order to every key.
_OFFICIAL_RULES = (
    (r'^downsample_layers\.0\.0\.', 'stem.conv1.'),
    (r'^downsample_layers\.0\.1\.', 'stem.norm1.'),
    (r'^downsample_layers\.0\.3\.', 'stem.conv2.'),
    (r'^downsample_layers\.0\.4\.', 'stem.norm2.'),
    (r'^downsample_layers\.(\d+)\.0\.', r'stages.\1.downsample.conv.'),
    (r'^downsample_layers\.(\d+)\.1\.', r'stages.\1.downsample.norm.'),
    (r'^stages\.(\d+)\.(\d+)\.', r'stages.\1.blocks.\2.'),
    (r'\.pos_embed\.', '.cpe.'),
    (r'\.attn\.qkv\.qkv\.', '.attn.qkv.'),
    (r'\.attn\.wo\.', '.attn.proj.'),
    (r'\.mlp\.0\.', '.mlp.fc1.'),
    (r'\.mlp\.3\.', '.mlp.fc2.'),
    (r'^head\.', 'head.fc.'),
)

# Official STL ablation model (models/biformer_stl.py: BN-first downsampling, `stages.s.blocks.b`, mlp.0 / mlp.2).
_OFFICIAL_STL_RULES = (
    (r'^downsample_layers\.0\.0\.', 'stem.conv.'),
    (r'^downsample_layers\.0\.1\.', 'stem.norm.'),
    (r'^downsample_layers\.(\d+)\.0\.', r'stages.\1.downsample.norm.'),
    (r'^downsample_layers\.(\d+)\.1\.', r'stages.\1.downsample.conv.'),
    (r'\.attn\.qkv\.qkv\.', '.attn.qkv.'),
    (r'\.attn\.wo\.', '.attn.proj.'),
    (r'\.attn\.qkv_linear\.', '.attn.qkv.'),  # biformer_stl_nchw (1x1 convs)
    (r'\.attn\.output_linear\.', '.attn.proj.'),
    (r'\.mlp\.0\.', '.mlp.fc1.'),
    (r'\.mlp\.2\.', '.mlp.fc2.'),
    (r'^head\.', 'head.fc.'),
)


_LINEAR_AS_CONV = re.compile(r'\.(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.weight$')


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Official BiFormer checkpoints -> zoo layout; the zoo's own layout passes through unchanged.

    Unwraps checkpoint containers (``state_dict``, then ``model``, then ``model_ema`` / ``state_dict_ema``: the
    released files are ``{'model': ...}``, training checkpoints add ``model_ema`` and optimizer state) and a DDP
    ``module.`` prefix.
    """
    state_dict = unwrap_checkpoint(state_dict)

    if 'stem.conv1.weight' in state_dict or 'stem.conv.weight' in state_dict:
        return state_dict  # zoo layout, with or without the classifier
    # the STL model nests its blocks (`stages.s.blocks.b`), biformer.py's stages are the block lists
    rules = _OFFICIAL_STL_RULES if any(k.startswith('stages.0.blocks.') for k in state_dict) else _OFFICIAL_RULES
    # biformer_stl_nchw's 1x1 convs are the zoo's Linears: (out, in, 1, 1) -> (out, in)
    return {
        k: v.flatten(1) if v.ndim == 4 and v.shape[2:] == (1, 1) and _LINEAR_AS_CONV.search(k) else v
        for k, v in rename_keys(state_dict, rules).items()}


# Per variant: the model args `_create_biformer` adds to the caller's (which override them).
_MODEL_ARGS = {
    'biformer_tiny': dict(depths=(2, 2, 8, 2), embed_dims=(64, 128, 256, 512)),
    'biformer_small': dict(depths=(4, 4, 18, 4), embed_dims=(64, 128, 256, 512)),
    'biformer_base': dict(depths=(4, 4, 18, 4), embed_dims=(96, 192, 384, 768)),
    # The ablation model in Swin-T's layout (official `models/biformer_stl.py`): patchify stem, BN -> conv2x2
    # downsampling, no conditional position encoding, mlp ratio 4, legacy BRA.
    'biformer_stl': dict(
        depths=(2, 2, 6, 2), embed_dims=(96, 192, 384, 768), mlp_ratios=4., cpe_kernel_size=0, layout='swin'),
    # The STL ablation model with the refactored NCHW BRA (official `models/biformer_stl_nchw.py`): as `biformer_stl`,
    # but qk_dim = dim with scale dim ** -0.5, no input padding before the projection (the op masks non-divisible
    # maps, see the module docstring), LePE of V in the global stage, whose qkv has no bias.
    'biformer_stl_nchw': dict(
        depths=(2, 2, 6, 2), embed_dims=(96, 192, 384, 768), mlp_ratios=4., cpe_kernel_size=0, layout='swin',
        bra_pad='mask', global_lepe_on_v=True),
}
_create_biformer = family_builder(BiFormer, _MODEL_ARGS, filter_fn=checkpoint_filter_fn)


_cfg = paper_cfg('arXiv:2303.08810', 'BiFormer: Vision Transformer with Bi-Level Routing Attention',
                 'https://github.com/rayleizhu/BiFormer', license='mit', crop_pct=0.9, first_conv='stem.conv1')


# Weights: the official ImageNet-1k checkpoints ({'model': state_dict, ...}) were linked from the README through
# matix.li short links that no longer resolve (rayleizhu/BiFormer issue #53), so no cfg carries a url and
# `pretrained=True` says so, naming the README's other mirror; a local copy loads with
# `pretrained_cfg_overlay=dict(file=PATH)` (or dict(url=...) for a copy on a web server) through `checkpoint_filter_fn`.
_BIFORMER_DEAD = unavailable(
    "the official download links (matix.li, rayleizhu/BiFormer README) are dead (rayleizhu/BiFormer issue #53); "
    "the README's other mirror is a OneDrive folder, https://1drv.ms/u/s!AkBbczdRlZvChGsXFqAA-PVnA-R8?e=IPlOCG "
    "(download the file by hand in a browser)")
default_cfgs = generate_default_cfgs({
    'biformer_tiny.in1k': _cfg(**_BIFORMER_DEAD),
    'biformer_small.in1k': _cfg(**_BIFORMER_DEAD),
    'biformer_base.in1k': _cfg(**_BIFORMER_DEAD),
    'biformer_stl.in1k': _cfg(first_conv='stem.conv', **_BIFORMER_DEAD),
    'biformer_stl_nchw': _cfg(first_conv='stem.conv', **unavailable(
        'no official checkpoint was released for the NCHW STL model (rayleizhu/BiFormer README)')),
})


@register_model
def biformer_tiny(pretrained: bool = False, **kwargs) -> BiFormer:
    return _create_biformer('biformer_tiny', pretrained, **kwargs)


@register_model
def biformer_small(pretrained: bool = False, **kwargs) -> BiFormer:
    return _create_biformer('biformer_small', pretrained, **kwargs)


@register_model
def biformer_base(pretrained: bool = False, **kwargs) -> BiFormer:
    return _create_biformer('biformer_base', pretrained, **kwargs)


@register_model
def biformer_stl(pretrained: bool = False, **kwargs) -> BiFormer:
    return _create_biformer('biformer_stl', pretrained, **kwargs)


@register_model
def biformer_stl_nchw(pretrained: bool = False, **kwargs) -> BiFormer:
    return _create_biformer('biformer_stl_nchw', pretrained, **kwargs)
