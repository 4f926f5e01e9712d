""" EMOv2: efficient mobile models built from the improved inverted residual mobile block (i2RMB)

Papers:
* `EMOv2: Pushing 5M Vision Model Frontier` - https://arxiv.org/abs/2412.06674
* `Rethinking Mobile Block for Efficient Attention-based Models` (EMO, ICCV 2023) - https://arxiv.org/abs/2301.01146

Official code: https://github.com/zhangzjn/EMOv2 (`model/lib_emo/emo2.py`). The repository declares no license; this
file is a reimplementation from the paper and the measured behaviour of that code.

An i2RMB is an inverted residual: ``norm -> expand (1x1 conv + act, or windowed attention) -> DW 5x5 conv + BN +
SiLU (with its own skip) -> 1x1 projection -> LayerScale -> residual``. In stages 3 and 4 the expansion is the
"expanded window MHSA": q and k are a 1x1 projection to the input width (heads of ``dim_head``), v a 1x1
projection + act to the expanded width (so values are 2-4x wider than keys), and every token attends over its
``ws x ws`` window ("close") and over its ``ws x ws`` dilated grid ("remote", pixels ``H / ws`` apart); the two
results are added. The first block of each stage is a stride-2 conv-only i2RMB (expansion x2, no skip, still
LayerScaled).

What this implementation adds:
* The attention runs through attnzoo's `ops.window_grid_attention` (both partitions, values of any width, fused
  Triton forward and backward on GPU; plain PyTorch elsewhere). The official code materialises six rearranged
  copies of q, k, v per block; the op addresses both partitions in place. `ops.window_attention` cannot be used:
  it needs one head width for q, k and v.
* The official forward reproduced exactly, padding included: the normed map is zero-padded at the bottom / right to
  a multiple of the window BEFORE the q/k and v projections, so padded positions take part as keys and values equal
  to the projection biases (k = bias, v = act(bias)) -- they are not masked. Small maps are padded up to one whole
  window the same way (e.g. stage 4 at 64x64: 2x2 padded to 7x7). Any input size works (every conv pads
  symmetrically, so a stride-2 conv maps H to ceil(H / 2)); feature maps are ceil(H / stride).
* The official detection / segmentation backbone (`downstreams/{det,seg}/backbones/emo2.py`) differs in one place,
  a LayerNorm + GELU local DW conv instead of BatchNorm + SiLU: ``dw_norm_layer='layernorm2d', dw_act_layer='gelu'``
  (its configs also use ``window_size=10``) builds it, and `checkpoint_filter_fn` reads its mmdet / mmseg checkpoints.
* timm conventions: `forward_features` / `forward_head` (the official forward returns ``{'out', 'out_kd'}``, both
  the logits), features_only, forward_intermediates, grad checkpointing, `checkpoint_filter_fn` for the official
  trainer checkpoints (``{'net', 'net_E', ...}``) and plain state dicts.

Variants (official names ``EMO2_<size>_k5_hybrid[_256|_512]``; ``_256`` / ``_512``: window 8, trained at 256 / 512):

| model | depths | embed_dims | exp_ratios | dim_heads | params | GMACs @ input |
|---|---|---|---|---|---|---|
| emo2_1m[_256,_512] | 2,2,8,3 | 32,48,80,180 | 2,2.5,3,3.5 | 16,16,20,20 | 1,460,844 | 0.280 @ 224 |
| emo2_2m[_256,_512] | 3,3,9,3 | 32,48,120,200 | 2,2.5,3,3.5 | 16,16,20,20 | 2,384,312 | 0.481 @ 224 |
| emo2_5m[_256,_512] | 3,3,9,3 | 48,72,160,288 | 2,3,4,4 | 16,24,32,32 | 5,126,440 | 1.025 @ 224, 5.573 @ 512 |
| emo2_20m[_256] | 3,3,13,3 | 64,128,320,448 | 2,3,4,4 | 16,32,32,32 | 20,195,208 | 3.997 @ 224 |
| emo2_50m | 5,8,20,7 | 64,128,384,512 | 2,3,4,4 | 16,32,32,32 | 49,815,560 | 8.767 @ 224 |

Parameter counts equal the official code's (zhangzjn/EMOv2 model/lib_emo/emo2.py). GMACs: torch's
FlopCounterMode / 2, equal for this model (measured on the reference path, window padding included) and the
official code (also 1.394 for emo2_5m_256 @ 256); the README quotes fvcore's 285 M / 487 M / 1035 M / 5627 M.
Window-size variants share weights' shapes; the window only changes which tokens meet. ``depths`` count the stride-2
first block of each stage.
"""
import re
from functools import partial
from typing import Any, Callable, Dict, Optional, Tuple, Union

import torch
import torch.nn as nn
from timm.layers import ClassifierHead, ConvNormAct, DropPath, LayerScale2d, calculate_drop_path_rates, \
    get_act_layer, get_norm_layer
from timm.models import generate_default_cfgs, register_model

from ops import window_grid_attention
from ops.window_grid_attention import PARTITIONS
from zoo.layers.backbone import StagedBackbone, check_int_arg, family_builder, init_linear_trunc_normal, \
    pad_to_multiple, paper_cfg, rename_keys, unwrap_checkpoint
from zoo.weights import release

__all__ = ['EMO2']

_NORM_EPS = 1e-6  # every norm of the official model (BatchNorm2d and LayerNorm2d alike)


def _conv_norm_act(in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, groups: int = 1, bias: bool = False,
                   norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d, act_layer: Callable[..., nn.Module] = nn.SiLU,
                   device=None, dtype=None) -> ConvNormAct:
    """Conv (symmetric padding k // 2) -> norm (eps 1e-6; BatchNorm unless told) -> act."""
    return ConvNormAct(
        in_chs, out_chs, kernel_size, stride=stride, groups=groups, bias=bias, norm_layer=norm_layer,
        act_layer=act_layer, norm_kwargs=dict(eps=_NORM_EPS), device=device, dtype=dtype)


class ConvAct(nn.Module):
    """1x1 conv (with bias) -> act: the expansion of a conv-only i2RMB."""

    def __init__(self, in_chs: int, out_chs: int, bias: bool = True, act_layer: Callable[..., nn.Module] = nn.SiLU,
                 device=None, dtype=None):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, 1, bias=bias, device=device, dtype=dtype)
        self.act = act_layer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class WindowGridAttention(nn.Module):
    """EMOv2's expanded window MHSA (official ``EW_MHSA_Hybrid`` / ``_Close`` / ``_Remote``).

    ``q, k = 1x1(x)`` (``dim`` each, heads of ``dim_head``), ``v = act(1x1(x))`` (``out_chs``, heads of
    ``out_chs / heads``); attention over each token's window and / or grid (``partition``), no output projection.
    The input is zero-padded to multiples of the window before the projections, as in the official code, and the
    padding is cropped off after the attention.
    """

    def __init__(
            self,
            dim: int,
            out_chs: int,
            dim_head: int = 32,
            window_size: int = 7,
            qkv_bias: bool = True,
            act_layer: Callable[..., nn.Module] = nn.GELU,
            partition: str = 'both',
            device=None,
            dtype=None,
    ):
        super().__init__()
        if dim % dim_head:
            raise ValueError(f'WindowGridAttention: dim {dim} is not a multiple of dim_head {dim_head}')
        self.num_heads = dim // dim_head
        if out_chs % self.num_heads:
            raise ValueError(
                f'WindowGridAttention: out_chs {out_chs} is not a multiple of the number of heads {self.num_heads}')
        if partition not in PARTITIONS:
            raise ValueError(f'WindowGridAttention: partition must be one of {PARTITIONS}, got {partition!r}')
        self.dim_head = dim_head
        self.v_head = out_chs // self.num_heads
        self.window_size = window_size
        self.partition = partition
        self.qk = nn.Conv2d(dim, 2 * dim, 1, bias=qkv_bias, device=device, dtype=dtype)
        self.v = nn.Conv2d(dim, out_chs, 1, bias=qkv_bias, device=device, dtype=dtype)
        self.act = act_layer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # NCHW -> NCHW
        B, _, H, W = x.shape
        ws = self.window_size
        x = pad_to_multiple(x, ws)
        Hp, Wp = x.shape[-2], x.shape[-1]
        # channels-last views: (B, Hp, Wp, heads, D); the op reads them through their strides
        q, k = self.qk(x).permute(0, 2, 3, 1).reshape(B, Hp, Wp, 2, self.num_heads, self.dim_head).unbind(3)
        v = self.act(self.v(x)).permute(0, 2, 3, 1).reshape(B, Hp, Wp, self.num_heads, self.v_head)
        x = window_grid_attention(q, k, v, ws, partition=self.partition, scale=self.dim_head ** -0.5)
        return x[:, :H, :W].flatten(3).permute(0, 3, 1, 2)


class I2RMB(nn.Module):
    """Improved inverted residual mobile block.

    ``x = norm(x); x = expand(x) or attn(x); x = x + dw(x) (or dw(x) without skip); x = ls(proj(x));
    out = shortcut + drop_path(x)`` (or ``x`` without skip).
    """

    def __init__(
            self,
            in_chs: int,
            out_chs: int,
            exp_ratio: float = 4.,
            stride: int = 1,
            dw_kernel_size: int = 5,
            has_skip: bool = True,
            attn: bool = False,
            dim_head: int = 32,
            window_size: int = 7,
            attn_partition: str = 'both',
            qkv_bias: bool = True,
            norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d,
            act_layer: Callable[..., nn.Module] = nn.SiLU,
            dw_norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d,
            dw_act_layer: Callable[..., nn.Module] = nn.SiLU,
            ls_init_value: float = 1e-6,
            drop_path: float = 0.,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        mid_chs = int(in_chs * exp_ratio)
        self.has_skip = has_skip and in_chs == out_chs and stride == 1
        self.norm = norm_layer(in_chs, **dd)
        if attn:
            self.attn = WindowGridAttention(
                in_chs, mid_chs, dim_head, window_size, qkv_bias=qkv_bias, act_layer=act_layer,
                partition=attn_partition, **dd)
            self.expand = None
        else:
            self.attn = None
            self.expand = ConvAct(in_chs, mid_chs, bias=qkv_bias, act_layer=act_layer, **dd)
        # the local DW conv: BN + SiLU in every stage of the official classification model (LayerNorm + GELU in
        # its detection / segmentation backbone)
        self.conv_dw = _conv_norm_act(
            mid_chs, mid_chs, dw_kernel_size, stride=stride, groups=mid_chs, norm_layer=dw_norm_layer,
            act_layer=dw_act_layer, **dd)
        self.proj = nn.Conv2d(mid_chs, out_chs, 1, bias=False, **dd)
        self.ls = LayerScale2d(out_chs, ls_init_value, **dd) if ls_init_value > 0 else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0. and self.has_skip else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm(x)
        x = self.attn(x) if self.attn is not None else self.expand(x)
        x = x + self.conv_dw(x) if self.has_skip else self.conv_dw(x)
        x = self.ls(self.proj(x))
        return shortcut + self.drop_path(x) if self.has_skip else x


class EMO2Stage(nn.Module):
    """A stride-2 conv-only i2RMB (``downsample``: expansion ``2 * exp_ratio``, no skip), then ``depth - 1`` i2RMBs."""

    def __init__(
            self,
            in_chs: int,
            out_chs: int,
            depth: int,
            exp_ratio: float = 4.,
            dw_kernel_size: int = 5,
            attn: bool = False,
            dim_head: int = 32,
            window_size: int = 7,
            attn_partition: str = 'both',
            qkv_bias: bool = True,
            norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d,
            act_layer: Callable[..., nn.Module] = nn.SiLU,
            dw_norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d,
            dw_act_layer: Callable[..., nn.Module] = nn.SiLU,
            ls_init_value: float = 1e-6,
            drop_path_rates: Tuple[float, ...] = (),
            device=None,
            dtype=None,
    ):
        super().__init__()
        common = dict(
            dw_kernel_size=dw_kernel_size, qkv_bias=qkv_bias, norm_layer=norm_layer, act_layer=act_layer,
            dw_norm_layer=dw_norm_layer, dw_act_layer=dw_act_layer, ls_init_value=ls_init_value, device=device,
            dtype=dtype)
        self.downsample = I2RMB(in_chs, out_chs, exp_ratio * 2, stride=2, has_skip=False, attn=False, **common)
        self.blocks = nn.Sequential(*[
            I2RMB(
                out_chs, out_chs, exp_ratio, attn=attn, dim_head=dim_head, window_size=window_size,
                attn_partition=attn_partition, drop_path=drop_path_rates[j], **common)
            for j in range(1, depth)
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


def _per_stage(value, n: int, name: str) -> tuple:
    values = tuple(value) if isinstance(value, (list, tuple)) else (value,) * n
    if len(values) != n:
        raise ValueError(f'EMO2: {name} must have one entry per stage ({n}), got {value!r}')
    return values


class EMO2(StagedBackbone):
    """EMOv2: a conv stem, then four stages of i2RMBs (strides 4, 8, 16, 32); windowed attention in the stages
    listed by ``attn_stages``. Any input size works; feature maps are NCHW of ``ceil(H / stride)``."""

    checkpoint_per_stage = False  # gradient checkpointing recomputes whole stages, stride-2 first block included
    # the official trainer also exempts the LayerScale gammas (keyword 'gamma')
    no_weight_decay_suffixes = ('.ls.gamma',)

    def __init__(
            self,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            depths: Tuple[int, ...] = (3, 3, 9, 3),
            embed_dims: Tuple[int, ...] = (48, 72, 160, 288),
            exp_ratios: Tuple[float, ...] = (2., 3., 4., 4.),
            dim_heads: Tuple[int, ...] = (16, 24, 32, 32),
            window_size: Union[int, Tuple[int, ...]] = 7,
            dw_kernel_sizes: Union[int, Tuple[int, ...]] = 5,
            attn_stages: Tuple[bool, ...] = (False, False, True, True),
            attn_partition: str = 'both',
            norm_layers: Tuple[str, ...] = ('batchnorm2d', 'batchnorm2d', 'layernorm2d', 'layernorm2d'),
            act_layers: Tuple[str, ...] = ('silu', 'silu', 'gelu', 'gelu'),
            dw_norm_layer: str = 'batchnorm2d',
            dw_act_layer: str = 'silu',
            qkv_bias: bool = True,
            ls_init_value: float = 1e-6,
            drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            img_size: Optional[Union[int, Tuple[int, int]]] = None,
            device=None,
            dtype=None,
    ):
        """`img_size` is accepted and unused, as in the official code: no shape depends on it.

        ``dw_norm_layer='layernorm2d', dw_act_layer='gelu'`` (with e.g. ``window_size=10``) builds the official
        detection / segmentation backbone's blocks (`downstreams/{det,seg}/backbones/emo2.py`), whose local DW conv
        is LayerNorm + GELU; the classification default is BatchNorm + SiLU.
        """
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        n = len(depths)
        embed_dims = _per_stage(embed_dims, n, 'embed_dims')
        exp_ratios = _per_stage(exp_ratios, n, 'exp_ratios')
        dim_heads = _per_stage(dim_heads, n, 'dim_heads')
        check_int_arg('EMO2', 'window_size', window_size, lengths=(n,))
        window_sizes = _per_stage(window_size, n, 'window_size')
        dw_kernel_sizes = _per_stage(dw_kernel_sizes, n, 'dw_kernel_sizes')
        attn_stages = _per_stage(attn_stages, n, 'attn_stages')
        norm_layers = [partial(get_norm_layer(nl), eps=_NORM_EPS) for nl in _per_stage(norm_layers, n, 'norm_layers')]
        act_layers = [get_act_layer(al) for al in _per_stage(act_layers, n, 'act_layers')]
        dw_norm_layer = get_norm_layer(dw_norm_layer)
        dw_act_layer = get_act_layer(dw_act_layer)
        if any(d < 1 for d in depths):
            raise ValueError(f'EMO2: every stage needs at least its stride-2 first block, got depths {depths}')

        self.init_backbone(in_chans, num_classes, embed_dims[-1], drop_rate)

        stem_chs = embed_dims[0] // 2
        self.stem = nn.Sequential(
            _conv_norm_act(in_chans, stem_chs, 3, stride=2, bias=True, **dd),
            _conv_norm_act(stem_chs, stem_chs, 3, groups=stem_chs, **dd),
            nn.Conv2d(stem_chs, stem_chs, 1, bias=False, **dd),
        )

        # the official schedule: linear over all blocks, stride-2 first blocks included (they have no skip, so
        # their rates go unused)
        dpr = calculate_drop_path_rates(drop_path_rate, sum(depths))
        stages = []
        in_chs = stem_chs
        for i in range(n):
            first = sum(depths[:i])
            stages.append(EMO2Stage(
                in_chs,
                embed_dims[i],
                depths[i],
                exp_ratio=exp_ratios[i],
                dw_kernel_size=dw_kernel_sizes[i],
                attn=attn_stages[i],
                dim_head=dim_heads[i],
                window_size=window_sizes[i],
                attn_partition=attn_partition,
                qkv_bias=qkv_bias,
                norm_layer=norm_layers[i],
                act_layer=act_layers[i],
                dw_norm_layer=dw_norm_layer,
                dw_act_layer=dw_act_layer,
                ls_init_value=ls_init_value,
                drop_path_rates=dpr[first:first + depths[i]],
                **dd,
            ))
            in_chs = embed_dims[i]
            self.add_stage_feature(in_chs, 2 ** (i + 2))
        self.stages = nn.Sequential(*stages)

        # official order: norm (per token) -> global average -> classifier
        self.norm = norm_layers[-1](self.num_features, **dd)
        self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate, **dd)
        self.apply(init_linear_trunc_normal)  # the official init (norms at 1 / 0, convs PyTorch's)


def _stage_block(match: re.Match) -> str:
    """``stage{i}.{j}.`` (i >= 1) -> ``stages.{i-1}.downsample.`` for j = 0, ``stages.{i-1}.blocks.{j-1}.`` after."""
    stage, block = int(match.group(1)) - 1, int(match.group(2))
    return f'stages.{stage}.downsample.' if block == 0 else f'stages.{stage}.blocks.{block - 1}.'


# Official EMO2 -> zoo names, applied in order to every key.
_OFFICIAL_RULES = (
    (r'^stage0\.(\d)\.norm\.', r'stem.\1.bn.'),
    (r'^stage0\.2\.conv\.', 'stem.2.'),
    (r'^stage0\.(\d)\.conv\.', r'stem.\1.conv.'),
    (r'^stage([1-9])\.(\d+)\.', _stage_block),
    (r'\.norm\.norm\.', '.norm.'),  # LayerNorm2d wraps nn.LayerNorm as `.norm`
    (r'^norm\.norm\.', 'norm.'),
    (r'\.eops\.0\.net\.conv\.', '.expand.conv.'),
    (r'\.eops\.0\.(qk|v)\.conv\.', r'.attn.\1.'),
    (r'\.conv_local\.conv\.', '.conv_dw.conv.'),
    (r'\.conv_local\.norm\.', '.conv_dw.bn.'),
    (r'\.proj\.conv\.', '.proj.'),
    (r'^head\.', 'head.fc.'),
)


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Official EMOv2 checkpoints -> zoo layout; the zoo's own layout passes through unchanged.

    Takes the official trainer's checkpoints (``{'net': ..., 'net_E': ..., 'optimizer': ...}``: ``net``, as the
    official loader does by default, or ``net_E`` -- the EMA weights -- when ``net`` is absent or None), the plain
    state dicts it also saves (``net.pth`` / ``net_E.pth``), generic ``state_dict`` / ``model`` containers, and a
    DDP ``module.`` prefix, and mmdet / mmseg checkpoints of the official downstream backbone (``backbone.*`` keys,
    the rest dropped). LayerScale gammas go from the official (1, C, 1, 1) to (C,).
    """
    state_dict = unwrap_checkpoint(state_dict, containers=('net', 'net_E', 'state_dict', 'model'))
    if any(k.startswith('backbone.') for k in state_dict):
        # an mmdet / mmseg checkpoint of the official downstream backbone: its weights only (it has no final norm or
        # classifier, so load those non-strict into a model built with dw_norm_layer='layernorm2d', dw_act_layer='gelu')
        state_dict = {k[len('backbone.'):]: v for k, v in state_dict.items() if k.startswith('backbone.')}
    if 'stem.0.conv.weight' in state_dict:
        return state_dict  # zoo layout, with or without the classifier

    return {k: v.reshape(-1) if k.endswith('.ls.gamma') else v
            for k, v in rename_keys(state_dict, _OFFICIAL_RULES).items()}


_ARGS_1M = dict(depths=(2, 2, 8, 3), embed_dims=(32, 48, 80, 180), exp_ratios=(2., 2.5, 3., 3.5),
                dim_heads=(16, 16, 20, 20))
_ARGS_2M = dict(depths=(3, 3, 9, 3), embed_dims=(32, 48, 120, 200), exp_ratios=(2., 2.5, 3., 3.5),
                dim_heads=(16, 16, 20, 20))
_ARGS_5M = dict(depths=(3, 3, 9, 3), embed_dims=(48, 72, 160, 288), exp_ratios=(2., 3., 4., 4.),
                dim_heads=(16, 24, 32, 32))
_ARGS_20M = dict(depths=(3, 3, 13, 3), embed_dims=(64, 128, 320, 448), exp_ratios=(2., 3., 4., 4.),
                 dim_heads=(16, 32, 32, 32))
_ARGS_50M = dict(depths=(5, 8, 20, 7), embed_dims=(64, 128, 384, 512), exp_ratios=(2., 3., 4., 4.),
                 dim_heads=(16, 32, 32, 32))


# Per variant: the model args `_create_emo2` adds to the caller's (which override them).
_MODEL_ARGS = {
    # Official `EMO2_1M_k5_hybrid` (window 7).
    'emo2_1m': _ARGS_1M,
    # Official `EMO2_1M_k5_hybrid_256` (window 8).
    'emo2_1m_256': dict(_ARGS_1M, window_size=8),
    # Official `EMO2_1M_k5_hybrid_512` (window 8).
    'emo2_1m_512': dict(_ARGS_1M, window_size=8),
    # Official `EMO2_2M_k5_hybrid` (window 7).
    'emo2_2m': _ARGS_2M,
    # Official `EMO2_2M_k5_hybrid_256` (window 8).
    'emo2_2m_256': dict(_ARGS_2M, window_size=8),
    # Official `EMO2_2M_k5_hybrid_512` (window 8).
    'emo2_2m_512': dict(_ARGS_2M, window_size=8),
    # Official `EMO2_5M_k5_hybrid` (window 7).
    'emo2_5m': _ARGS_5M,
    # Official `EMO2_5M_k5_hybrid_256` (window 8).
    'emo2_5m_256': dict(_ARGS_5M, window_size=8),
    # Official `EMO2_5M_k5_hybrid_512` (window 8): the README's 82.9 % model at 512x512 (5627 M FLOPs).
    'emo2_5m_512': dict(_ARGS_5M, window_size=8),
    # Official `EMO2_20M_k5_hybrid` (window 7).
    'emo2_20m': _ARGS_20M,
    # Official `EMO2_20M_k5_hybrid_256` (window 8).
    'emo2_20m_256': dict(_ARGS_20M, window_size=8),
    # Official `EMO2_50M_k5_hybrid` (window 7).
    'emo2_50m': _ARGS_50M,
}
_create_emo2 = family_builder(EMO2, _MODEL_ARGS, filter_fn=checkpoint_filter_fn)


# zhangzjn/EMOv2 declares no license
_cfg = paper_cfg('arXiv:2412.06674', 'EMOv2: Pushing 5M Vision Model Frontier', 'https://github.com/zhangzjn/EMOv2',
                 license='unknown', first_conv='stem.0.conv')


_CFG_256 = dict(input_size=(3, 256, 256), pool_size=(8, 8))
_CFG_512 = dict(input_size=(3, 512, 512), pool_size=(16, 16))

# Weights: the official ImageNet-1k checkpoints are files of the GitHub repository zhangzjn/data (folder
# emov2_pretrained_weights; the zhangzjn/EMOv2 README links their `blob/` pages, which are HTML: the cfgs use the
# `raw/` links, which serve the files). in1k_kd: distilled from a TResNet-L teacher; emo2_5m_512's file is the README's
# 512x512 KD model. No 20M / 50M or other 256 / 512 classification checkpoint is released.
# The official trainer saves {'net', 'net_E' (EMA), 'optimizer', ...} and plain state dicts (unverified).
_emo2_weights = release('https://github.com/zhangzjn/data/raw/main/emov2_pretrained_weights/', container=(
    "{'net': state_dict, 'net_E': EMA state_dict, 'optimizer', ...} or a plain state dict"))


default_cfgs = generate_default_cfgs({
    'emo2_1m.in1k': _cfg(**_emo2_weights('EMOv2_1M_224.pth')),
    'emo2_1m.in1k_kd': _cfg(**_emo2_weights('EMOv2_1M_224_KD.pth')),
    'emo2_1m_256': _cfg(**_CFG_256),
    'emo2_1m_512': _cfg(**_CFG_512),
    'emo2_2m.in1k': _cfg(**_emo2_weights('EMOv2_2M_224.pth')),
    'emo2_2m.in1k_kd': _cfg(**_emo2_weights('EMOv2_2M_224_KD.pth')),
    'emo2_2m_256': _cfg(**_CFG_256),
    'emo2_2m_512': _cfg(**_CFG_512),
    'emo2_5m.in1k': _cfg(**_emo2_weights('EMOv2_5M_224.pth')),
    'emo2_5m.in1k_kd': _cfg(**_emo2_weights('EMOv2_5M_224_KD.pth')),
    'emo2_5m_256': _cfg(**_CFG_256),
    'emo2_5m_512.in1k_kd': _cfg(**_emo2_weights('EMOv2_5M_512.pth'), **_CFG_512),
    'emo2_20m': _cfg(),
    'emo2_20m_256': _cfg(**_CFG_256),
    'emo2_50m': _cfg(),
})


@register_model
def emo2_1m(pretrained: bool = False, **kwargs) -> EMO2:
    return _create_emo2('emo2_1m', pretrained, **kwargs)


@register_model
def emo2_1m_256(pretrained: bool = False, **kwargs) -> EMO2:
    return _create_emo2('emo2_1m_256', pretrained, **kwargs)


@register_model
def emo2_1m_512(pretrained: bool = False, **kwargs) -> EMO2:
    return _create_emo2('emo2_1m_512', pretrained, **kwargs)


@register_model
def emo2_2m(pretrained: bool = False, **kwargs) -> EMO2:
    return _create_emo2('emo2_2m', pretrained, **kwargs)


@register_model
def emo2_2m_256(pretrained: bool = False, **kwargs) -> EMO2:
    return _create_emo2('emo2_2m_256', pretrained, **kwargs)


@register_model
def emo2_2m_512(pretrained: bool = False, **kwargs) -> EMO2:
    return _create_emo2('emo2_2m_512', pretrained, **kwargs)


@register_model
def emo2_5m(pretrained: bool = False, **kwargs) -> EMO2:
    return _create_emo2('emo2_5m', pretrained, **kwargs)


@register_model
def emo2_5m_256(pretrained: bool = False, **kwargs) -> EMO2:
    return _create_emo2('emo2_5m_256', pretrained, **kwargs)


@register_model
def emo2_5m_512(pretrained: bool = False, **kwargs) -> EMO2:
    return _create_emo2('emo2_5m_512', pretrained, **kwargs)


@register_model
def emo2_20m(pretrained: bool = False, **kwargs) -> EMO2:
    return _create_emo2('emo2_20m', pretrained, **kwargs)


@register_model
def emo2_20m_256(pretrained: bool = False, **kwargs) -> EMO2:
    return _create_emo2('emo2_20m_256', pretrained, **kwargs)


@register_model
def emo2_50m(pretrained: bool = False, **kwargs) -> EMO2:
    return _create_emo2('emo2_50m', pretrained, **kwargs)
