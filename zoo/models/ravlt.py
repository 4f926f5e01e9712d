""" RAVLT: Rank-Augmented Vision Linear Transformer

Paper: `Breaking the Low-Rank Dilemma of Linear Attention` - https://arxiv.org/abs/2411.07635 (CVPR 2025)

Official code: https://github.com/qhfan/RALA (`classfication/RALA.py`; the repository has no license file, the
released weights' model card declares MIT). timm has no RAVLT.

A 4-stage conv-stem hierarchy. Every block is ``x = x + DWConv3x3(x)`` (conditional position encoding), then
pre-norm attention and FFN residuals (LayerNorm eps 1e-6, layer scale). Stages 1-2 use rank-augmented linear
attention (RALA): ``elu + 1`` features, keys / values reweighted by a softmax over the tokens against the mean
query, a d x d KV state, 2-D RoPE on the numerator, and the output ``proj((attn + LePE(v)) * o)`` with a raw
output gate ``o`` from the same 1x1 projection as q, k, v. Stages 3-4 use softmax attention over all tokens with
the same RoPE / LePE / gate. The FFN has a residual depth-wise conv on its hidden map. Head: 1x1 conv to 1024,
BatchNorm, SiLU, average pool, classifier.

What this implementation adds:
* RALA runs through `ops.rala` (Triton forward and backward on GPU: no N x N tensor, KV state in one pass); the
  softmax stages through `ops.window_attention` with one window covering the map (flash-style Triton kernels on
  GPU), after timm's interleaved RoPE (`timm.layers.apply_rot_embed`, the official pairing). This file only
  projects, adds the convolutions and builds the RoPE tables.
* Any input size, in every mode: the stride-2 convs take any size (each halves with ceil, as the official ones),
  RoPE tables are built per map size as officially; linear attention keeps stage 1 at 1024 x 1024 (65536 tokens)
  linear in memory -- the reason these models exist (segmentation / detection backbones).
* Channels-last blocks with Linear layers where the official code uses 1x1 convs (the same weights, reshaped by
  `checkpoint_filter_fn`), clean timm-style names, `features_only` / `forward_intermediates` giving the four NCHW
  stage maps at strides 4 / 8 / 16 / 32 (the official segmentation backbone's pre-downsample maps).

Variants (official `RAVLT_T/S/B/L`; mlp ratio 3.5; head_dim 64, except 96 in stages 1-2 of B and L; stages 1-2
RALA, 3-4 softmax):

| model | depths | embed_dims | heads | layer-scale init | params | GMACs (224) | recipe drop_path |
|---|---|---|---|---|---|---|---|
| ravlt_t | 2,2,6,2 | 64,128,256,512 | 1,2,4,8 | 1,1,1,1 | 14,897,768 | 2.61 | 0.10 |
| ravlt_s | 3,5,9,3 | 64,128,320,512 | 1,2,5,8 | 1,1,1,1 | 25,591,208 | 4.88 | 0.15 |
| ravlt_b | 4,6,12,6 | 96,192,384,512 | 1,2,6,8 | 1,1,1e-6,1e-6 | 48,241,288 | 10.58 | 0.40 |
| ravlt_l | 4,7,19,8 | 96,192,448,640 | 1,2,7,10 | 1e-6 x 4 | 95,242,440 | 17.21 | 0.55 |

Parameter counts equal the official code's; GMACs are torch FlopCounterMode figures of the official model
(qhfan/RALA classfication/RALA.py). The README's FLOPs (2.4 / 4.6 / 9.9 / 16.0 G) are 7-9 % lower than any full
count of the official code measured (fvcore gives 2.63 / 4.90 / 10.6 / 17.3); the cause is not established, the
architecture here is the official one (parity figures in tests/models/test_ravlt.py). The official model functions
hard-code the drop-path rates of the last column; here they default to 0 as in timm and the recipe sets them.

Head and timm's pooling switch: the head is ``1x1 conv -> BN -> SiLU -> pool -> Linear`` and its pre-logits are
the pooled 1024 features (`head_hidden_size`). As in timm's ``ClassifierHead``, pooling can only be disabled
without a classifier; ``global_pool=''`` then returns the unpooled last-stage map (`num_features` channels)
unchanged -- the 1x1 projection belongs to the pooled pre-logits path.
"""
import re
from typing import Any, Dict, Iterable, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint
from timm.layers import DropPath, LayerScale, SelectAdaptivePool2d, apply_rot_embed, calculate_drop_path_rates
from timm.layers import get_device_dtype, register_notrace_function, trunc_normal_
from timm.models import generate_default_cfgs, register_model

from ops import rala, window_attention
from ops.rala.official import rope_tables
from zoo.layers.attention import head_dim_of
from zoo.layers.backbone import ChannelsLastStage, StagedBackbone, family_builder, paper_cfg, rename_keys, \
    unwrap_checkpoint
from zoo.layers.blocks import apply_nchw
from zoo.weights import release

__all__ = ['RAVLT']


# RAVLT's 2-D RoPE tables, (sin, cos) each (H W, head_dim) fp32, built per map size (the official `RoPE` module's
# construction, kept once in ops.rala.official); sized by the map, so FX records the call and builds them at run time
register_notrace_function(rope_tables)


class Stem(nn.Module):
    """Conv3x3/2 -> (BN, GELU, Conv3x3/1) x 2 -> BN, GELU -> Conv3x3/2 -> BN: stride 4, C/2 channels inside."""

    def __init__(self, in_chs: int = 3, out_chs: int = 64, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        mid = out_chs // 2
        self.conv1 = nn.Conv2d(in_chs, mid, 3, stride=2, padding=1, **dd)
        self.norm1 = nn.BatchNorm2d(mid, **dd)
        self.conv2 = nn.Conv2d(mid, mid, 3, padding=1, **dd)
        self.norm2 = nn.BatchNorm2d(mid, **dd)
        self.conv3 = nn.Conv2d(mid, mid, 3, padding=1, **dd)
        self.norm3 = nn.BatchNorm2d(mid, **dd)
        self.conv4 = nn.Conv2d(mid, out_chs, 3, stride=2, padding=1, **dd)
        self.norm4 = nn.BatchNorm2d(out_chs, **dd)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # NCHW -> NCHW
        x = self.act(self.norm1(self.conv1(x)))
        x = self.act(self.norm2(self.conv2(x)))
        x = self.act(self.norm3(self.conv3(x)))
        return self.norm4(self.conv4(x))


class Downsample(nn.Module):
    """Conv3x3/2 (with bias) -> BN."""

    def __init__(self, in_chs: int, out_chs: int, device=None, dtype=None):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, 3, stride=2, padding=1, device=device, dtype=dtype)
        self.norm = nn.BatchNorm2d(out_chs, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # NCHW -> NCHW
        return self.norm(self.conv(x))


class RavltAttention(nn.Module):
    """qkvo projection, LePE (5x5 depth-wise conv of v), attention, ``proj((attn + lepe) * o)``.

    ``linear=True``: rank-augmented linear attention (`ops.rala`, RoPE inside the op); ``False``: softmax
    attention over all tokens of RoPE'd q and k (the official ``VanillaSelfAttention``). Both have the same
    parameters.
    """

    def __init__(self, dim: int, num_heads: int, linear: bool = True, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = head_dim_of('RavltAttention', dim, num_heads)
        if self.head_dim % 4:
            raise ValueError(f'RavltAttention: the 2-D RoPE needs head_dim % 4 == 0, got {self.head_dim}')
        self.linear = linear
        self.qkvo = nn.Linear(dim, 4 * dim, **dd)
        self.lepe = nn.Conv2d(dim, dim, 5, padding=2, groups=dim, **dd)
        self.proj = nn.Linear(dim, dim, **dd)

    def forward(self, x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:  # (B, H, W, C)
        B, H, W, C = x.shape
        qkvo = self.qkvo(x)
        lepe = apply_nchw(self.lepe, qkvo[..., 2 * C:3 * C]).reshape(B, H * W, self.num_heads, self.head_dim)
        # channel m * C + h * d + j of the projection is role m (q, k, v, o), head h, channel j (official)
        q, k, v, o = qkvo.reshape(B, H * W, 4, self.num_heads, self.head_dim).unbind(2)
        if self.linear:
            x = rala(q, k, v, gate=o, residual=lepe, rope=(sin, cos))
        else:
            # softmax attention over all tokens: one window covering the map
            sin, cos = sin[:, None], cos[:, None]  # broadcast over heads
            q, k = apply_rot_embed(q, sin, cos), apply_rot_embed(k, sin, cos)
            q, k, v = (t.reshape(B, H, W, self.num_heads, self.head_dim) for t in (q, k, v))
            x = (window_attention(q, k, v, (H, W)).reshape(B, H * W, self.num_heads, self.head_dim) + lepe) * o
        return self.proj(x.reshape(B, H, W, C))


class ConvFfn(nn.Module):
    """fc1 -> GELU -> ``h + DWConv3x3(h)`` -> fc2 (channels-last)."""

    def __init__(self, dim: int, hidden_dim: int, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.fc1 = nn.Linear(dim, hidden_dim, **dd)
        self.act = nn.GELU()
        self.dwconv = nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1, groups=hidden_dim, **dd)
        self.fc2 = nn.Linear(hidden_dim, dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C)
        x = self.act(self.fc1(x))
        x = x + apply_nchw(self.dwconv, x)
        return self.fc2(x)


class Block(nn.Module):
    """``x + cpe(x)``, then ``x + DP(ls1 * attn(norm1(x)))`` and ``x + DP(ls2 * ffn(norm2(x)))``."""

    def __init__(
            self,
            dim: int,
            num_heads: int,
            linear: bool = True,
            mlp_ratio: float = 3.5,
            ls_init_value: float = 1.0,
            drop_path: float = 0.,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.cpe = nn.Conv2d(dim, dim, 3, padding=1, groups=dim, **dd)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6, **dd)
        self.attn = RavltAttention(dim, num_heads, linear=linear, **dd)
        self.ls1 = LayerScale(dim, ls_init_value, **dd)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6, **dd)
        self.mlp = ConvFfn(dim, int(mlp_ratio * dim), **dd)
        self.ls2 = LayerScale(dim, ls_init_value, **dd)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:  # (B, H, W, C)
        x = x + apply_nchw(self.cpe, x)
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x), sin, cos)))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


class RavltStage(ChannelsLastStage):
    """Optional downsample, then blocks sharing one pair of RoPE tables (of `head_dim`, sized by the stage's map).
    NCHW in and out."""

    def __init__(self, downsample: Optional[nn.Module], blocks: Iterable[Block], head_dim: int):
        super().__init__(downsample, blocks, contiguous=False)
        self.head_dim = head_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # NCHW -> NCHW
        x = self.downsample(x).permute(0, 2, 3, 1)
        sin, cos = rope_tables(x.shape[1], x.shape[2], self.head_dim, x.device)
        for blk in self.blocks:
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = torch.utils.checkpoint.checkpoint(blk, x, sin, cos, use_reentrant=False)
            else:
                x = blk(x, sin, cos)
        return x.permute(0, 3, 1, 2)


class RavltHead(nn.Module):
    """1x1 conv -> BN -> SiLU -> global pool -> dropout -> Linear; ``hidden_size=0``: no projection.

    ``pool_type=''`` (only without a classifier, as timm's ``ClassifierHead``): the input map is returned as is.
    """

    def __init__(
            self,
            in_chs: int,
            hidden_size: int,
            num_classes: int = 1000,
            pool_type: str = 'avg',
            drop_rate: float = 0.,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.in_chs = in_chs
        self.hidden_size = hidden_size or in_chs
        if hidden_size:
            self.proj = nn.Conv2d(in_chs, hidden_size, 1, **dd)
            self.norm = nn.BatchNorm2d(hidden_size, **dd)
            self.act = nn.SiLU()
        else:
            self.proj = self.norm = self.act = nn.Identity()
        self.drop = nn.Dropout(drop_rate)
        self.reset(num_classes, pool_type, **dd)

    def reset(self, num_classes: int, pool_type: Optional[str] = None, device=None, dtype=None) -> None:
        if pool_type is not None:
            if not pool_type and num_classes:
                raise ValueError(
                    f"RAVLT head: pooling can only be disabled (global_pool='') without a classifier, got "
                    f"num_classes={num_classes}")
            self.global_pool = SelectAdaptivePool2d(pool_type=pool_type, flatten=True)
        elif not self.global_pool.pool_type and num_classes:
            raise ValueError(f"RAVLT head: global pooling is disabled, so num_classes must be 0, got {num_classes}")
        dd = get_device_dtype(self, device=device, dtype=dtype)
        self.fc = nn.Linear(self.hidden_size, num_classes, **dd) if num_classes else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if not self.global_pool.pool_type:
            return x
        x = self.global_pool(self.act(self.norm(self.proj(x))))
        x = self.drop(x)
        return x if pre_logits else self.fc(x)


class RAVLT(StagedBackbone):
    """RAVLT: conv stem, two stages of rank-augmented linear attention, two of softmax attention, conv head.

    Any input size works; feature maps are NCHW at strides 4, 8, 16, 32 (each a ceil division of the input).

    Args:
        in_chans: Number of input image channels.
        num_classes: Number of classifier classes (0: no classifier, `forward` returns pooled features).
        global_pool: Global pooling type of the head; '' disables it (only with num_classes=0).
        depths: Blocks per stage.
        embed_dims: Channels per stage.
        num_heads: Attention heads per stage.
        linear_stages: Per stage, RALA (True) or softmax attention (False); official: (True, True, False, False).
        mlp_ratio: FFN hidden width / channels.
        ls_init_values: Layer-scale init per stage.
        head_hidden_size: Channels of the head's 1x1 projection (official 1024).
        drop_rate: Dropout before the classifier.
        drop_path_rate: Stochastic depth, increasing linearly over all blocks (official).
        img_size: Nominal input size, recorded by timm for recipes / export; the network is size-agnostic.
    """

    def __init__(
            self,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            depths: Tuple[int, ...] = (2, 2, 6, 2),
            embed_dims: Tuple[int, ...] = (64, 128, 256, 512),
            num_heads: Tuple[int, ...] = (1, 2, 4, 8),
            linear_stages: Tuple[bool, ...] = (True, True, False, False),
            mlp_ratio: float = 3.5,
            ls_init_values: Tuple[float, ...] = (1., 1., 1., 1.),
            head_hidden_size: int = 1024,
            drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            img_size: Optional[Union[int, Tuple[int, int]]] = None,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        depths, embed_dims, num_heads = tuple(depths), tuple(embed_dims), tuple(num_heads)
        linear_stages, ls_init_values = tuple(linear_stages), tuple(ls_init_values)
        num_stages = len(depths)
        if not (len(embed_dims) == len(num_heads) == len(linear_stages) == len(ls_init_values) == num_stages):
            raise ValueError(
                f'RAVLT: depths {depths}, embed_dims {embed_dims}, num_heads {num_heads}, linear_stages '
                f'{linear_stages} and ls_init_values {ls_init_values} must have one length')
        self.init_backbone(in_chans, num_classes, embed_dims[-1], drop_rate, head_hidden_size)

        self.stem = Stem(in_chans, embed_dims[0], **dd)
        dpr = calculate_drop_path_rates(drop_path_rate, sum(depths))
        stages = []
        for i, dim in enumerate(embed_dims):
            first = sum(depths[:i])
            stages.append(RavltStage(
                Downsample(embed_dims[i - 1], dim, **dd) if i else None,
                [Block(
                    dim,
                    num_heads[i],
                    linear=linear_stages[i],
                    mlp_ratio=mlp_ratio,
                    ls_init_value=ls_init_values[i],
                    drop_path=dpr[first + j],
                    **dd,
                ) for j in range(depths[i])],
                head_dim=dim // num_heads[i],
            ))
            self.add_stage_feature(dim, 2 ** (i + 2))
        self.stages = nn.Sequential(*stages)
        self.head = RavltHead(
            self.num_features, head_hidden_size, num_classes, pool_type=global_pool, drop_rate=drop_rate, **dd)
        if not self.stem.conv1.weight.is_meta:  # meta tensors hold no values; trunc_normal_ on them is slow
            self.apply(self._init_weights)

    def _init_weights(self, m: nn.Module) -> None:
        # official: truncated-normal (std .02) weights and zero biases for every conv (here also the Linears that
        # replace its 1x1 convs); LayerNorm / BatchNorm keep PyTorch's init
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            trunc_normal_(m.weight, std=.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def _reset_head_for_pruning(self) -> None:
        # a head without projection: the pruned map is returned as is, and no 1x1 conv sized for a pruned stage stays
        self.head = RavltHead(self.num_features, 0, 0, pool_type='')
        self.num_classes = 0


# Official repository (qhfan/RALA, classfication/RALA.py) -> zoo names, applied in order to every key.
_OFFICIAL_RULES = (
    (r'^patch_embed\.proj\.0\.', 'stem.conv1.'),
    (r'^patch_embed\.proj\.1\.', 'stem.norm1.'),
    (r'^patch_embed\.proj\.3\.', 'stem.conv2.'),
    (r'^patch_embed\.proj\.4\.', 'stem.norm2.'),
    (r'^patch_embed\.proj\.6\.', 'stem.conv3.'),
    (r'^patch_embed\.proj\.7\.', 'stem.norm3.'),
    (r'^patch_embed\.proj\.9\.', 'stem.conv4.'),
    (r'^patch_embed\.proj\.10\.', 'stem.norm4.'),
    # the official stage s ends with the downsample that the zoo's stage s + 1 starts with
    (r'^layers\.0\.downsample\.reduction\.', 'stages.1.downsample.conv.'),
    (r'^layers\.1\.downsample\.reduction\.', 'stages.2.downsample.conv.'),
    (r'^layers\.2\.downsample\.reduction\.', 'stages.3.downsample.conv.'),
    (r'^layers\.0\.downsample\.norm\.', 'stages.1.downsample.norm.'),
    (r'^layers\.1\.downsample\.norm\.', 'stages.2.downsample.norm.'),
    (r'^layers\.2\.downsample\.norm\.', 'stages.3.downsample.norm.'),
    (r'^layers\.(\d+)\.blocks\.', r'stages.\1.blocks.'),
    (r'\.pos\.', '.cpe.'),
    (r'\.gamma_1$', '.ls1.gamma'),
    (r'\.gamma_2$', '.ls2.gamma'),
    (r'\.norm([12])\.norm\.', r'.norm\1.'),
    (r'\.ffn\.', '.mlp.'),
    (r'^head\.', 'head.fc.'),
    (r'^proj\.', 'head.proj.'),
    (r'^norm\.', 'head.norm.'),
)
# The official 1x1 convs that are Linears here: (out, in, 1, 1) -> (out, in).
_CONV1X1_AS_LINEAR = re.compile(r'(\.attn\.qkvo|\.attn\.proj|\.mlp\.fc1|\.mlp\.fc2|^head\.fc)\.weight$')


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Official RAVLT checkpoints -> zoo layout; the zoo's own layout passes through unchanged.

    Unwraps checkpoint containers (``state_dict``, then ``model``, then ``model_ema`` / ``state_dict_ema``; the
    official trainer saves ``model`` and ``model_ema`` beside optimizer state) and a DDP ``module.`` prefix. Drops
    the stored RoPE ``angle`` buffers (recomputed here) and the segmentation backbone's ``extra_norms`` (not part
    of the classification model); reshapes 1x1-conv weights to Linear weights and ``(1, C, 1, 1)`` layer scales
    to ``(C,)``.
    """
    state_dict = unwrap_checkpoint(state_dict)
    if 'stem.conv1.weight' in state_dict:
        return state_dict  # zoo layout, with or without the classifier

    state_dict = {
        k: v for k, v in state_dict.items() if not (k.endswith('.RoPE.angle') or k.startswith('extra_norms.'))}
    out = {}
    for k, v in rename_keys(state_dict, _OFFICIAL_RULES).items():
        if _CONV1X1_AS_LINEAR.search(k) and v.ndim == 4:
            v = v.flatten(1)
        elif k.endswith('.gamma') and v.ndim == 4:
            v = v.flatten()
        out[k] = v
    return out


# Per variant: the model args `_create_ravlt` adds to the caller's (which override them).
_MODEL_ARGS = {
    'ravlt_t': dict(depths=(2, 2, 6, 2), embed_dims=(64, 128, 256, 512), num_heads=(1, 2, 4, 8)),
    'ravlt_s': dict(depths=(3, 5, 9, 3), embed_dims=(64, 128, 320, 512), num_heads=(1, 2, 5, 8)),
    'ravlt_b': dict(
        depths=(4, 6, 12, 6), embed_dims=(96, 192, 384, 512), num_heads=(1, 2, 6, 8), ls_init_values=(1., 1., 1e-6,
        1e-6)),
    'ravlt_l': dict(
        depths=(4, 7, 19, 8), embed_dims=(96, 192, 448, 640), num_heads=(1, 2, 7, 10), ls_init_values=(1e-6, 1e-6,
        1e-6, 1e-6)),
}
_create_ravlt = family_builder(RAVLT, _MODEL_ARGS, filter_fn=checkpoint_filter_fn)


# imagenet_cfg's crop 0.875, bicubic: the official eval resizes to 256 (bicubic) and center-crops 224. License: no
# license file in qhfan/RALA; the ImageNet-1k weights' model card (HF aldjalkdf/RAVLT) says MIT.
_cfg = paper_cfg('arXiv:2411.07635', 'Breaking the Low-Rank Dilemma of Linear Attention', 'https://github.com/qhfan/RALA',
                 license='other', first_conv='stem.conv1')


# Weights: the official ImageNet-1k files of the Hugging Face repository aldjalkdf/RAVLT (RAVLT_{T,S,B,L}.pth,
# through their `resolve/` links; `blob/` is an HTML page). The official trainer pickles its argparse Namespace
# beside the weights: zoo.weights reads it as an inert stand-in (nothing from the file runs).
_ravlt_weights = release('https://huggingface.co/aldjalkdf/RAVLT/resolve/main/', container=(
    "{'model': state_dict, 'model_ema', 'optimizer', 'epoch', 'args': argparse.Namespace} (unverified)"))


default_cfgs = generate_default_cfgs({
    'ravlt_t.in1k': _cfg(**_ravlt_weights('RAVLT_T.pth')),
    'ravlt_s.in1k': _cfg(**_ravlt_weights('RAVLT_S.pth')),
    'ravlt_b.in1k': _cfg(**_ravlt_weights('RAVLT_B.pth')),
    'ravlt_l.in1k': _cfg(**_ravlt_weights('RAVLT_L.pth')),
})


@register_model
def ravlt_t(pretrained: bool = False, **kwargs) -> RAVLT:
    return _create_ravlt('ravlt_t', pretrained, **kwargs)


@register_model
def ravlt_s(pretrained: bool = False, **kwargs) -> RAVLT:
    return _create_ravlt('ravlt_s', pretrained, **kwargs)


@register_model
def ravlt_b(pretrained: bool = False, **kwargs) -> RAVLT:
    return _create_ravlt('ravlt_b', pretrained, **kwargs)


@register_model
def ravlt_l(pretrained: bool = False, **kwargs) -> RAVLT:
    return _create_ravlt('ravlt_l', pretrained, **kwargs)
