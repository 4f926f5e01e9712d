""" LITv2: Fast Vision Transformers with HiLo Attention

Paper: `Fast Vision Transformers with HiLo Attention` - https://arxiv.org/abs/2205.13213 (NeurIPS 2022)

Official code (Apache-2.0): https://github.com/ziplab/LITv2 (`classification/models/{litv2,layers,blocks,
attentions,patch_embed}.py`; the dense-prediction backbone `segmentation/mmseg/models/backbones/litv2.py`). timm has
no LITv2.

A Swin-like 4-stage hierarchy: a 4x4/4 patch embedding with LayerNorm, stages 1-2 of MLP-only blocks
(``x = x + DWMlp(LN(x))``, no attention), stages 3-4 of HiLo blocks (``x = x + HiLo(LN(x)); x = x + DWMlp(LN(x))``),
and between stages a deformable token merging (DTM): a 2x2/2 deformable conv (offsets from a zero-initialised 2x2/2
conv) -> BatchNorm -> GELU. DWMlp is fc1 -> 3x3 depth-wise conv -> GELU -> fc2, the only position information.
HiLo splits the heads by ``alpha``: ``int(heads * alpha)`` Lo-Fi heads attend from every token to the keys / values
of the ``s x s`` average-pooled map, the other (Hi-Fi) heads attend inside ``s x s`` windows; each path has its own
output projection and the outputs are concatenated (Hi-Fi channels first). s = 2 in stage 3; stage 4 has s = 1,
which the official code turns into plain global attention over all heads.

What this implementation adds:
* All attention runs through `ops.hilo_attention` (Hi-Fi via `ops.window_attention`, Lo-Fi via its fused Triton
  kernels on GPU); this file only projects, pools, pads and merges.
* The deformable conv is `torchvision.ops.deform_conv2d` (the official code needs a CUDA-only extension and apex);
  its offset layout is the official one (per kernel tap ``(dy, dx)``, one offset group).
* Any input size, as the official dense-prediction backbone handles it (the classification code asserts its
  construction size): the input is zero-padded to a multiple of 4, DTM floors odd maps (2x2/2 conv, no padding),
  and HiLo zero-pads its normed input at the right / bottom to multiples of s before every projection (padded
  positions are Hi-Fi keys / values equal to the projection bias and dilute the pooled border windows), then crops.
  At sizes where every map is divisible (multiples of 32) this is exactly the classification model.
* Clean timm-style names (`stages.i.downsample.{conv,conv_offset,norm}`, `stages.i.blocks.j`, `head.fc`);
  `checkpoint_filter_fn` converts the official ``{'model': ...}`` checkpoints.
* Training note: the official recipe multiplies the learning rate of the DTM offset convs (`conv_offset`) by 0.01;
  give them their own parameter group for that (they match ``.downsample.conv_offset.``).

Variants (official configs `classification/configs/litv2-*.yaml`; patch 4, mlp ratio 4, head dim 32, alpha 0.9,
s = (-, -, 2, 1)):

| model | depths | embed_dim | heads | params | GMACs | paper GFLOPs | top-1 |
|---|---|---|---|---|---|---|---|
| litv2_small | 2,2,6,2 | 96 | 3,6,12,24 | 27,844,000 | 3.550 | 3.7 | 82.0 |
| litv2_medium | 2,2,18,2 | 96 | 3,6,12,24 | 48,830,368 | 7.290 | 7.5 | 83.3 |
| litv2_base | 2,2,18,2 | 128 | 4,8,16,32 | 86,520,704 | 12.864 | 13.2 | 83.6 |
| litv2_base (in1k_384 tag, 384x384) | as base, fine-tuned at 384 | | | 86,520,704 | 38.740 | 39.7 | 84.7 |

Parameter counts equal the official model's. GMACs: torch's FlopCounterMode / 2 at 224 (384), equal to the
official model's (ziplab/LITv2 classification/models/litv2.py) measured the same way. The paper's figures come from
the repository's analytic ``flops()`` (3.734 / 7.479 / 13.194 / 39.709 G), which also counts the deformable conv and
the offset convs (FlopCounterMode sees neither in the official model nor here) and some element-wise work. The
released alpha sweep of LITv2-S (alpha 0.0 ... 1.0) is ``timm.create_model('litv2_small', alpha=a)`` (its parameter
count changes with alpha: the Hi-Fi and Lo-Fi output projections are separate).
"""
import math
import re
from typing import Any, Callable, Dict, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import ClassifierHead, LayerNorm2d, calculate_drop_path_rates
from timm.models import generate_default_cfgs, register_model
from torchvision.ops import DeformConv2d

from ops import hilo_attention
from ops.hilo_attention import hilo_head_split
from zoo.layers.attention import head_dim_of
from zoo.errors import InputError
from zoo.layers.backbone import ChannelsLastStage, StagedBackbone, check_int_arg, family_builder, \
    init_linear_trunc_normal, pad_to_multiple, paper_cfg, rename_keys, unwrap_checkpoint
from zoo.layers.blocks import PreNormBlock, apply_nchw
from zoo.weights import release

__all__ = ['LITv2']


class PatchEmbed(nn.Module):
    """Conv4x4/4 -> LayerNorm; the input is zero-padded at the right / bottom to multiples of the patch size."""

    def __init__(self, in_chs: int = 3, out_chs: int = 96, patch_size: int = 4, device=None, dtype=None):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chs, out_chs, patch_size, stride=patch_size, device=device, dtype=dtype)
        self.norm = nn.LayerNorm(out_chs, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # NCHW -> NCHW
        x = pad_to_multiple(x, self.patch_size)
        return self.norm(self.proj(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class DeformableTokenMerging(nn.Module):
    """DTM: 2x2/2 deformable conv (offsets from a zero-initialised 2x2/2 conv) -> BatchNorm -> GELU.

    At initialisation the offsets are 0 and DTM is a plain 2x2/2 conv. Odd maps are floored, as in the official
    dense-prediction backbone.
    """

    def __init__(self, in_chs: int, out_chs: int, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        # torchvision's DeformConv2d has the official DeformConv2d's init (nn.Conv2d's) and calls deform_conv2d;
        # it takes no device / dtype arguments
        self.conv = DeformConv2d(in_chs, out_chs, 2, stride=2).to(**{k: v for k, v in dd.items() if v is not None})
        # one (dy, dx) offset per kernel tap and output position (one offset group), zero at init as officially
        self.conv_offset = nn.Conv2d(in_chs, 2 * 2 * 2, 2, stride=2, **dd)
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)
        self.norm = nn.BatchNorm2d(out_chs, **dd)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # NHWC -> NHWC
        x = x.permute(0, 3, 1, 2)
        offset = self.conv_offset(x)
        # torchvision's deform_conv2d turns offsets into indices without a check: a NaN / Inf offset (a diverging
        # run, NaN input) crashes the process. Sample those positions at offset 0 and make their outputs NaN,
        # which is what sampling at a non-finite position means; finite offsets are untouched.
        finite = torch.isfinite(offset)
        x = self.conv(x, torch.where(finite, offset, 0.))
        x = torch.where(finite.all(dim=1, keepdim=True), x, float('nan'))
        return self.act(self.norm(x)).permute(0, 2, 3, 1)


class DWMlp(nn.Module):
    """fc1 -> 3x3 depth-wise conv -> GELU -> fc2 on channels-last maps (the official DWMlp)."""

    def __init__(
            self,
            in_chs: int,
            hidden_chs: int,
            act_layer: Callable[..., nn.Module] = nn.GELU,
            drop: float = 0.,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.fc1 = nn.Linear(in_chs, hidden_chs, **dd)
        self.dwconv = nn.Conv2d(hidden_chs, hidden_chs, 3, padding=1, groups=hidden_chs, **dd)
        self.act = act_layer()
        self.drop = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_chs, in_chs, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C)
        x = self.fc1(x)
        x = apply_nchw(self.dwconv, x)
        x = self.drop(self.act(x))
        return self.drop(self.fc2(x))


class HiLo(nn.Module):
    """HiLo attention (official names: ``h_qkv``, ``h_proj`` for Hi-Fi, ``l_q``, ``l_kv``, ``l_proj`` for Lo-Fi).

    Heads are split by :func:`ops.hilo_attention.hilo_head_split`; ``window_size == 1`` is global attention over
    all heads (Lo-Fi without pooling). Maps that are not multiples of the window are zero-padded before the
    projections and cropped after the attention, as the official dense-prediction code does.
    """

    def __init__(
            self,
            dim: int,
            num_heads: int = 8,
            qkv_bias: bool = True,
            qk_scale: Optional[float] = None,
            window_size: int = 2,
            alpha: float = 0.9,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.head_dim = head_dim_of('HiLo', dim, num_heads)
        self.ws = window_size
        self.h_heads, self.l_heads = hilo_head_split(num_heads, alpha, window_size)
        self.h_dim = self.h_heads * self.head_dim
        self.l_dim = self.l_heads * self.head_dim
        self.scale = qk_scale or self.head_dim ** -0.5
        if self.l_heads:
            self.l_q = nn.Linear(dim, self.l_dim, bias=qkv_bias, **dd)
            self.l_kv = nn.Linear(dim, 2 * self.l_dim, bias=qkv_bias, **dd)
            self.l_proj = nn.Linear(self.l_dim, self.l_dim, **dd)
        if self.h_heads:
            self.h_qkv = nn.Linear(dim, 3 * self.h_dim, bias=qkv_bias, **dd)
            self.h_proj = nn.Linear(self.h_dim, self.h_dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C)
        B, H, W, _ = x.shape
        s, d = self.ws, self.head_dim
        x = pad_to_multiple(x, s, channels_last=True)  # the official dense-prediction HiLo
        Hp, Wp = x.shape[1], x.shape[2]
        hq = hk = hv = lq = lk = lv = None
        if self.h_heads:
            hq, hk, hv = self.h_qkv(x).reshape(B, Hp, Wp, 3, self.h_heads, d).unbind(3)
        if self.l_heads:
            lq = self.l_q(x).reshape(B, Hp, Wp, self.l_heads, d)
            pooled = F.avg_pool2d(x.permute(0, 3, 1, 2), s).permute(0, 2, 3, 1) if s > 1 else x
            lk, lv = self.l_kv(pooled).reshape(B, Hp // s, Wp // s, 2, self.l_heads, d).unbind(3)
        hifi, lofi = hilo_attention(hq, hk, hv, lq, lk, lv, s, scale=self.scale)
        # the projections are per token: cropping before them is the official crop after them; which paths exist
        # is decided by the head split, not by the outputs (FX traces them as proxies, never None)
        outs = []
        if self.h_heads:
            outs.append(self.h_proj(hifi.reshape(B, Hp, Wp, self.h_dim)[:, :H, :W]))
        if self.l_heads:
            outs.append(self.l_proj(lofi.reshape(B, Hp, Wp, self.l_dim)[:, :H, :W]))
        return torch.cat(outs, dim=-1) if len(outs) > 1 else outs[0]


class Block(PreNormBlock):
    """``x = x + attn(norm1(x))`` (HiLo stages only), then ``x = x + mlp(norm2(x))``, on channels-last maps.

    ``attention=False`` is the official ConvFFNBlock of the first two stages (no ``norm1`` / ``attn``).
    """

    def __init__(
            self,
            dim: int,
            num_heads: int,
            attention: bool = True,
            window_size: int = 2,
            alpha: float = 0.9,
            mlp_ratio: float = 4.,
            qkv_bias: bool = True,
            qk_scale: Optional[float] = None,
            proj_drop: float = 0.,
            drop_path: float = 0.,
            norm_layer: Callable[..., nn.Module] = nn.LayerNorm,
            act_layer: Callable[..., nn.Module] = nn.GELU,
            device=None,
            dtype=None,
    ):
        dd = dict(device=device, dtype=dtype)
        attn = HiLo(
            dim, num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale, window_size=window_size, alpha=alpha, **dd,
        ) if attention else None
        mlp = DWMlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=proj_drop, **dd)
        super().__init__(dim, attn, mlp, drop_path=drop_path, norm_layer=norm_layer, **dd)


class LITv2(StagedBackbone):
    """LITv2: patch embedding, MLP-only stages, HiLo stages, deformable token merging; LayerNorm -> mean -> Linear.

    Any input size works (padded / floored as the official dense-prediction backbone does); feature maps are NCHW
    at strides 4, 8, 16, 32.

    Args:
        in_chans: Number of input image channels.
        num_classes: Number of classifier classes (0: no classifier, `forward` returns pooled features).
        global_pool: Global pooling type of the head; '' disables it.
        embed_dim: Channels of the first stage (doubled by every DTM).
        depths: Blocks per stage.
        num_heads: Attention heads per stage (unused in MLP-only stages).
        has_msa: Per stage, whether blocks have attention (official ``has_msa``).
        local_ws: Per stage, the HiLo window s (official ``local_ws``; 1: global attention).
        alpha: Fraction of Lo-Fi heads (``int(heads * alpha)``).
        mlp_ratio: DWMlp hidden width / channels.
        qkv_bias: Bias in the q / kv / qkv projections.
        qk_scale: Override the attention scale ``head_dim ** -0.5``.
        patch_size: Patch embedding stride.
        drop_rate: Dropout before the classifier.
        proj_drop_rate: Dropout inside the MLPs (official ``drop_rate`` also feeds it).
        drop_path_rate: Stochastic depth, increasing linearly over all blocks (official).
        img_size: Nominal input size, recorded by timm for recipes / export; the network is size-agnostic.
    """

    stem_name = 'patch_embed'

    def __init__(
            self,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            embed_dim: int = 96,
            depths: Tuple[int, ...] = (2, 2, 6, 2),
            num_heads: Tuple[int, ...] = (3, 6, 12, 24),
            has_msa: Tuple[int, ...] = (0, 0, 1, 1),
            local_ws: Tuple[int, ...] = (0, 0, 2, 1),
            alpha: float = 0.9,
            mlp_ratio: float = 4.,
            qkv_bias: bool = True,
            qk_scale: Optional[float] = None,
            patch_size: int = 4,
            drop_rate: float = 0.,
            proj_drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            img_size: Optional[Union[int, Tuple[int, int]]] = None,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        check_int_arg('LITv2', 'local_ws', local_ws, lengths=(len(depths),), scalar=False, minimum=0)
        depths, num_heads, has_msa, local_ws = tuple(depths), tuple(num_heads), tuple(has_msa), tuple(local_ws)
        if any(msa and ws < 1 for msa, ws in zip(has_msa, local_ws)):
            raise InputError(
                f'LITv2: local_ws {local_ws} must be >= 1 in every stage with attention (has_msa {has_msa})')
        num_stages = len(depths)
        if not (len(num_heads) == len(has_msa) == len(local_ws) == num_stages):
            raise ValueError(
                f'LITv2: depths {depths}, num_heads {num_heads}, has_msa {has_msa} and local_ws {local_ws} must '
                f'have one length')
        bad_ws = [(i, ws) for i, (m, ws) in enumerate(zip(has_msa, local_ws)) if m and ws < 1]
        if bad_ws:
            raise ValueError(f'LITv2: attention stages need local_ws >= 1, got (stage, ws) {bad_ws}')
        dims = [embed_dim * 2 ** i for i in range(num_stages)]

        self.init_backbone(in_chans, num_classes, dims[-1], drop_rate)

        self.patch_embed = PatchEmbed(in_chans, embed_dim, patch_size, **dd)
        dpr = calculate_drop_path_rates(drop_path_rate, sum(depths))
        stages = []
        for i, dim in enumerate(dims):
            first = sum(depths[:i])
            # each stage: a DTM from the previous stage's width (channels-last in and out), then its blocks
            stages.append(ChannelsLastStage(
                DeformableTokenMerging(dims[i - 1], dim, **dd) if i else None,
                [Block(
                    dim,
                    num_heads=num_heads[i],
                    attention=bool(has_msa[i]),
                    window_size=local_ws[i],
                    alpha=alpha,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    qk_scale=qk_scale,
                    proj_drop=proj_drop_rate,
                    drop_path=dpr[first + j],
                    **dd,
                ) for j in range(depths[i])],
                downsample_channels_last=True,
                contiguous=False,
            ))
            self.add_stage_feature(dim, patch_size * 2 ** i)
        self.stages = nn.Sequential(*stages)

        self.norm = LayerNorm2d(self.num_features, eps=1e-5, **dd)
        self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate, **dd)
        self.apply(self._init_weights)

    def _init_weights(self, m: nn.Module) -> None:
        # official: truncated-normal Linear weights with zero biases; DWMlp's depth-wise convs N(0, 2 / fan_out);
        # LayerNorms ones / zeros, the patch conv and BatchNorms PyTorch's init, DTM its own
        init_linear_trunc_normal(m)
        if isinstance(m, DWMlp):
            conv = m.dwconv
            fan_out = conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels // conv.groups
            nn.init.normal_(conv.weight, 0, math.sqrt(2.0 / fan_out))
            nn.init.zeros_(conv.bias)


_DTM_NAMES = {'dconv.conv_offset': 'conv_offset', 'dconv': 'conv', 'norm_layer': 'norm'}


def _rename_dtm(m: re.Match) -> str:
    return f'stages.{int(m.group(1)) + 1}.downsample.{_DTM_NAMES[m.group(2)]}.{m.group(3)}'


# Official repository (ziplab/LITv2, classification/models) -> zoo names, applied in order to every key.
# `layers.i.downsample` is the DTM at the END of official stage i, which is the start of zoo stage i + 1.
_OFFICIAL_RULES = (
    (r'^layers\.(\d+)\.downsample\.(dconv\.conv_offset|dconv|norm_layer)\.(.+)$', _rename_dtm),
    (r'^layers\.(\d+)\.blocks\.', r'stages.\1.blocks.'),
    (r'\.mlp\.dwconv\.dwconv\.', '.mlp.dwconv.'),
    (r'^head\.', 'head.fc.'),
)


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Official LITv2 checkpoints -> zoo layout; the zoo's own layout passes through unchanged.

    Unwraps checkpoint containers (the official ``utils.save_checkpoint`` files are ``{'model': ...,
    'optimizer': ..., ...}``; also ``state_dict`` / ``model_ema``) and a DDP ``module.`` prefix.
    """
    state_dict = unwrap_checkpoint(state_dict)
    if any(k.startswith('stages.') for k in state_dict):
        return state_dict  # zoo layout, with or without the classifier
    return rename_keys(state_dict, _OFFICIAL_RULES)


# Per variant: the model args `_create_litv2` adds to the caller's (which override them).
_MODEL_ARGS = {
    'litv2_small': dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    'litv2_medium': dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
    'litv2_base': dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
}
_create_litv2 = family_builder(LITv2, _MODEL_ARGS, filter_fn=checkpoint_filter_fn)


_cfg = paper_cfg('arXiv:2205.13213', 'Fast Vision Transformers with HiLo Attention', 'https://github.com/ziplab/LITv2',
                 license='apache-2.0', first_conv='patch_embed.proj')


# Weights: the official ImageNet-1k checkpoints, GitHub release assets of ziplab/LITv2 (v1.0; v1.1: the README's
# "Pretrained LITv2-S with Different Values of Alpha", tags alpha_A_B build litv2_small with alpha=A.B), loaded by
# `pretrained=True` (zoo.weights). The official evaluation (Swin's pipeline) resizes to 256 and center-crops 224
# (0.875); the 384 model is evaluated without cropping.
# What the official trainer saves: Swin's save_checkpoint, ziplab/LITv2 classification/utils.py (unverified).
_litv2_weights = release('https://github.com/ziplab/LITv2/releases/download/', container=(
    "{'model': state_dict, 'optimizer', 'lr_scheduler', 'max_accuracy', 'epoch', 'config': yacs CfgNode}"))


default_cfgs = generate_default_cfgs({
    'litv2_small.in1k': _cfg(**_litv2_weights('v1.0/litv2_s.pth')),
    'litv2_medium.in1k': _cfg(**_litv2_weights('v1.0/litv2_m.pth')),
    'litv2_base.in1k': _cfg(**_litv2_weights('v1.0/litv2_b.pth')),
    'litv2_base.in1k_384': _cfg(
        **_litv2_weights('v1.0/litv2_b_384.pth'), input_size=(3, 384, 384), pool_size=(12, 12), crop_pct=1.0),
    'litv2_small.alpha_0_0': _cfg(**_litv2_weights('v1.1/alpha_0.pth', model_args=dict(alpha=0.0))),
    'litv2_small.alpha_0_2': _cfg(**_litv2_weights('v1.1/alpha_0.2.pth', model_args=dict(alpha=0.2))),
    'litv2_small.alpha_0_4': _cfg(**_litv2_weights('v1.1/alpha_0.4.pth', model_args=dict(alpha=0.4))),
    'litv2_small.alpha_0_5': _cfg(**_litv2_weights('v1.1/alpha_0.5.pth', model_args=dict(alpha=0.5))),
    'litv2_small.alpha_0_7': _cfg(**_litv2_weights('v1.1/alpha_0.7.pth', model_args=dict(alpha=0.7))),
    'litv2_small.alpha_0_9': _cfg(**_litv2_weights('v1.1/alpha_0.9.pth', model_args=dict(alpha=0.9))),
    'litv2_small.alpha_1_0': _cfg(**_litv2_weights('v1.1/alpha_1.pth', model_args=dict(alpha=1.0))),
})


@register_model
def litv2_small(pretrained: bool = False, **kwargs) -> LITv2:
    return _create_litv2('litv2_small', pretrained, **kwargs)


@register_model
def litv2_medium(pretrained: bool = False, **kwargs) -> LITv2:
    return _create_litv2('litv2_medium', pretrained, **kwargs)


@register_model
def litv2_base(pretrained: bool = False, **kwargs) -> LITv2:
    return _create_litv2('litv2_base', pretrained, **kwargs)
