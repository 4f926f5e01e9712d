""" HAT: Hybrid Attention Transformer (image super-resolution)

Papers:
* `Activating More Pixels in Image Super-Resolution Transformer` - https://arxiv.org/abs/2205.04437 (CVPR 2023)
* `HAT: Hybrid Attention Transformer for Image Restoration` - https://arxiv.org/abs/2309.05239 (HAT-S, Real-SR)

Official code (Apache-2.0): https://github.com/XPixelGroup/HAT (`hat/archs/hat_arch.py`, `hat/models/hat_model.py`).

A super-resolution network, not a classifier: ``model(lr)`` maps a ``(B, 3, H, W)`` low-resolution RGB image in
[0, 1] to the ``(B, 3, scale*H, scale*W)`` high-resolution estimate. Shallow 3x3 conv -> residual hybrid
attention groups (RHAG: hybrid attention blocks, then one overlapping cross-attention block, then a 3x3 conv,
plus the group's input) -> 3x3 conv + the shallow features -> pixel-shuffle upsampler. A hybrid attention block
(HAB) adds window self-attention (shifted windows on every second block, Swin's -100 mask) and a channel
attention conv branch (CAB: conv-GELU-conv + squeeze-excitation, scaled by 0.01) to the residual; the OCAB lets
the queries of each 16x16 window attend to the keys of the 24x24 window centred on it.

What this implementation adds:
* All attention runs through attnzoo's ops: ``ops.window_attention`` (window / shifted-window attention with the
  relative-position bias table and the additive shift mask) and ``ops.overlapping_window_attention`` (OCAB:
  queries in 16x16 windows, keys / values read in place from the overlapping 24x24 windows -- no ``nn.Unfold``
  copy -- zero tokens beyond the border as in the official code). Fused Triton forward and backward on GPU,
  the plain-PyTorch reference elsewhere. The CAB (convolutions and a global pool) stays in the model.
* Any input size: the model itself reflect-pads the right / bottom to a multiple of the window and crops the
  output back, as the official ``HATModel.pre_process`` / ``post_process`` do around the arch (the official arch
  alone requires multiples of 16); reflect padding needs sides longer than half the window. The shifted-window
  mask is built from the padded size on the input's device. The input must be a ``(B, in_chans, H, W)`` batch:
  a grey image is an error, not broadcast against the RGB mean into a colour one.
* Relative-position tables are stored as ``(heads, 2*ws-1, 2*ws-1)`` and ``(heads, ws+wse-1, ws+wse-1)``
  (the ops' layout); ``checkpoint_filter_fn`` converts the official flat tables -- including the OCAB table's
  wrapped-around index (``calculate_rpi_oca`` in XPixelGroup/HAT hat/archs/hat_arch.py), with the ops' own
  converters (``ops.<op>.official.table_from_official``) -- and drops the derivable ``relative_position_index_*``
  buffers. All other keys keep the official names, so BasicSR checkpoints (``params_ema`` preferred, then
  ``params``) load.
* Registered with timm (``timm.create_model('hat_s_x4')``); ``pretrained_cfg['notes']`` states
  ``'task: super-resolution'`` and ``'scale: <s>'`` (timm's cfg has no task field and rejects unknown ones), its
  ``description`` starts with ``super-resolution x<s>``; ``input_size`` is the LR training patch (64x64), ``mean``
  the official DIV2K RGB mean and ``std`` 1 / img_range.

Not provided, because a super-resolution network has none of it: a classifier (``num_classes`` is 0; asking for
another is an error), pooling, ``features_only`` / ``forward_intermediates`` feature pyramids (every group works at
the input resolution).

Variants (window 16, overlap 0.5 -> 24x24 key windows, mlp_ratio 2, 6 heads per group; parameter counts are the
official arch's (XPixelGroup/HAT hat/archs/hat_arch.py), measured; GMACs: torch FlopCounterMode / 2 at a 64x64 LR
input, the official arch's, which this implementation reproduces: 54.620 / 103.880 / 202.989 measured on the meta
device; fvcore, which the README quotes, gives 54.89 / 104.22 / 203.67):

| model | embed | RHAGs x HABs | CAB compress / squeeze | params x2 / x3 / x4 | GMACs x4 |
|---|---|---|---|---|---|
| hat_s_x{2,3,4} | 144 | 6 x 6 | 24 / 24 | 9,473,471 / 9,658,111 / 9,621,183 | 54.62 |
| hat_x{2,3,4} | 180 | 6 x 6 | 3 / 30 | 20,624,795 / 20,809,435 / 20,772,507 | 103.88 |
| hat_l_x{2,3,4} | 180 | 12 x 6 | 3 / 30 | 40,698,863 / 40,883,503 / 40,846,575 | 202.99 |

The real-world models (``Real_HAT_GAN_SRx4.pth``, ``Real_HAT_GAN_SRx4_sharper.pth``) are the HAT x4 generator, so they
are pretrained tags of ``hat_x4`` (``hat_x4.real_gan``, ``hat_x4.real_gan_sharper``); the GAN's discriminator
(U-Net, spectral norm) is a training-only network and not registered. The official weights are on Google Drive /
Baidu (no stable URL), so no tag downloads; convert a local file with ``checkpoint_filter_fn``.
"""
import logging
import re
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from ops import overlapping_window_attention, window_attention
from ops.overlapping_window_attention.official import table_from_official as ocab_table_from_official
from ops.window_attention.official import table_from_official as window_table_from_official
from zoo.layers.attention import QKVAttention, head_dim_of
from zoo.errors import InputError
from zoo.layers.backbone import architecture_name, check_image_input, check_int_arg, init_linear_trunc_normal, \
    unwrap_checkpoint
from zoo.layers.blocks import apply_nchw
from zoo.weights import create, official_weights

__all__ = ['HAT']

# DIV2K RGB mean used by the official code to centre the input (`rgb_mean` in hat_arch.py).
HAT_RGB_MEAN = (0.4488, 0.4371, 0.4040)


def shifted_window_mask(height: int, width: int, window_size: int, shift_size: int,
                        device: Optional[torch.device] = None) -> torch.Tensor:
    """Swin / HAT shifted-window mask ``(num_windows, ws*ws, ws*ws)`` for a ``height x width`` map (multiples of
    the window), over the row-major window grid of the map rolled by ``-shift_size``: 0 within a region, -100 across
    (the official value, not -inf). Regions: rows / columns ``[0, n-ws)``, ``[n-ws, n-shift)``, ``[n-shift, n)``."""
    def regions(n: int) -> torch.Tensor:
        r = torch.zeros(n, dtype=torch.long, device=device)
        r[n - window_size:] = 1
        r[n - shift_size:] = 2
        return r

    ids = regions(height)[:, None] * 3 + regions(width)[None, :]
    ids = ids.view(height // window_size, window_size, width // window_size, window_size)
    ids = ids.permute(0, 2, 1, 3).reshape(-1, window_size * window_size)
    return (ids[:, :, None] != ids[:, None, :]).float() * -100.0


class ChannelAttention(nn.Module):
    """Squeeze-excitation: global average pool -> 1x1 conv (C -> C/squeeze) -> ReLU -> 1x1 conv -> sigmoid gate.

    ``attention`` keeps the official Sequential indices (1, 3) so checkpoints load unchanged."""

    def __init__(self, num_feat: int, squeeze_factor: int = 16):
        super().__init__()
        self.attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(num_feat, num_feat // squeeze_factor, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(num_feat // squeeze_factor, num_feat, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # NCHW
        return x * self.attention(x)


class CAB(nn.Module):
    """Channel attention block: conv3x3 (C -> C/compress) -> GELU -> conv3x3 (-> C) -> channel attention."""

    def __init__(self, num_feat: int, compress_ratio: int = 3, squeeze_factor: int = 30):
        super().__init__()
        self.cab = nn.Sequential(
            nn.Conv2d(num_feat, num_feat // compress_ratio, 3, 1, 1),
            nn.GELU(),
            nn.Conv2d(num_feat // compress_ratio, num_feat, 3, 1, 1),
            ChannelAttention(num_feat, squeeze_factor),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # NCHW
        return self.cab(x)


class WindowAttention(QKVAttention):
    """Multi-head self-attention in ``ws x ws`` windows with a relative-position bias table (heads, 2ws-1, 2ws-1)."""

    def __init__(self, dim: int, window_size: int, num_heads: int, qkv_bias: bool = True):
        super().__init__(dim, num_heads, qkv_bias=qkv_bias)
        self.window_size = window_size
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros(num_heads, 2 * window_size - 1, 2 * window_size - 1))
        trunc_normal_(self.relative_position_bias_table, std=.02)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:  # (B, H, W, C)
        B, H, W, C = x.shape
        table = self.relative_position_bias_table
        x = window_attention(*self.qkv_heads(x), self.window_size, bias_table=table, mask=mask)
        return self.proj(x.reshape(B, H, W, C))


class HAB(nn.Module):
    """Hybrid attention block: x + DropPath(W-MSA / SW-MSA(LN(x))) + conv_scale * CAB(LN(x)), then x + MLP(LN(x))."""

    def __init__(
            self,
            dim: int,
            num_heads: int,
            window_size: int = 16,
            shift_size: int = 0,
            compress_ratio: int = 3,
            squeeze_factor: int = 30,
            conv_scale: float = 0.01,
            mlp_ratio: float = 2.,
            qkv_bias: bool = True,
            drop: float = 0.,
            drop_path: float = 0.,
            norm_layer=nn.LayerNorm,
    ):
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise ValueError(f'HAB: shift_size {shift_size} must be in [0, window_size={window_size})')
        self.window_size = window_size
        self.shift_size = shift_size
        self.conv_scale = conv_scale
        self.norm1 = norm_layer(dim)
        self.attn = WindowAttention(dim, window_size, num_heads, qkv_bias=qkv_bias)
        self.conv_block = CAB(dim, compress_ratio=compress_ratio, squeeze_factor=squeeze_factor)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU, drop=drop)

    def forward(self, x: torch.Tensor, shift_mask: torch.Tensor) -> torch.Tensor:  # (B, H, W, C)
        y = self.norm1(x)
        conv_x = apply_nchw(self.conv_block, y)
        s = self.shift_size
        if s > 0:
            y = torch.roll(y, shifts=(-s, -s), dims=(1, 2))
            attn_x = torch.roll(self.attn(y, shift_mask), shifts=(s, s), dims=(1, 2))
        else:
            attn_x = self.attn(y)
        x = x + self.drop_path(attn_x) + conv_x * self.conv_scale
        return x + self.drop_path(self.mlp(self.norm2(x)))


class OCAB(nn.Module):
    """Overlapping cross-attention block: queries in ``ws x ws`` windows attend to the ``wse x wse`` key / value
    window centred on theirs (``wse = ws + int(overlap_ratio * ws)``), bias table (heads, ws+wse-1, ws+wse-1);
    x + proj(attention), then x + MLP(LN(x)). No DropPath (as official)."""

    def __init__(
            self,
            dim: int,
            window_size: int,
            overlap_ratio: float,
            num_heads: int,
            qkv_bias: bool = True,
            mlp_ratio: float = 2.,
            norm_layer=nn.LayerNorm,
    ):
        super().__init__()
        self.head_dim = head_dim_of('OCAB', dim, num_heads)
        self.window_size = window_size
        self.overlap_win_size = int(window_size * overlap_ratio) + window_size
        self.num_heads = num_heads
        self.norm1 = norm_layer(dim)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        n = window_size + self.overlap_win_size - 1
        self.relative_position_bias_table = nn.Parameter(torch.zeros(num_heads, n, n))
        trunc_normal_(self.relative_position_bias_table, std=.02)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C)
        B, H, W, C = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(B, H, W, 3, self.num_heads, self.head_dim).unbind(3)
        y = overlapping_window_attention(
            q, k, v, self.window_size, self.overlap_win_size, bias_table=self.relative_position_bias_table)
        x = x + self.proj(y.reshape(B, H, W, C))
        return x + self.mlp(self.norm2(x))


class AttenBlocks(nn.Module):
    """The body of one RHAG: ``depth`` HABs (shifted windows on odd blocks), then one OCAB."""

    def __init__(
            self,
            dim: int,
            depth: int,
            num_heads: int,
            window_size: int,
            compress_ratio: int,
            squeeze_factor: int,
            conv_scale: float,
            overlap_ratio: float,
            mlp_ratio: float = 2.,
            qkv_bias: bool = True,
            drop: float = 0.,
            drop_path: Tuple[float, ...] = (),
            norm_layer=nn.LayerNorm,
    ):
        super().__init__()
        self.blocks = nn.ModuleList([
            HAB(
                dim=dim,
                num_heads=num_heads,
                window_size=window_size,
                shift_size=0 if i % 2 == 0 else window_size // 2,
                compress_ratio=compress_ratio,
                squeeze_factor=squeeze_factor,
                conv_scale=conv_scale,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                drop=drop,
                drop_path=drop_path[i] if drop_path else 0.,
                norm_layer=norm_layer,
            ) for i in range(depth)])
        self.overlap_attn = OCAB(dim, window_size, overlap_ratio, num_heads, qkv_bias=qkv_bias,
                                 mlp_ratio=mlp_ratio, norm_layer=norm_layer)

    def forward(self, x: torch.Tensor, shift_mask: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x, shift_mask)
        return self.overlap_attn(x)


class RHAG(nn.Module):
    """Residual hybrid attention group: x + conv3x3(AttenBlocks(x)) ('1conv'; 'identity' skips the conv)."""

    def __init__(self, dim: int, resi_connection: str = '1conv', **kwargs):
        super().__init__()
        self.residual_group = AttenBlocks(dim=dim, **kwargs)
        if resi_connection == '1conv':
            self.conv = nn.Conv2d(dim, dim, 3, 1, 1)
        elif resi_connection == 'identity':
            self.conv = nn.Identity()
        else:
            raise ValueError(f"RHAG: resi_connection must be '1conv' or 'identity', got {resi_connection!r}")

    def forward(self, x: torch.Tensor, shift_mask: torch.Tensor) -> torch.Tensor:  # (B, H, W, C)
        y = self.residual_group(x, shift_mask)
        return apply_nchw(self.conv, y) + x


class PatchEmbed(nn.Module):
    """The LayerNorm on the shallow features (patch size 1: the official flatten is a layout change only)."""

    def __init__(self, embed_dim: int, norm_layer=nn.LayerNorm):
        super().__init__()
        self.norm = norm_layer(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C)
        return self.norm(x)


class Upsample(nn.Sequential):
    """Pixel-shuffle upsampler: log2(scale) x [conv3x3 (C -> 4C), PixelShuffle(2)] for 2^n, [conv (C -> 9C),
    PixelShuffle(3)] for 3."""

    def __init__(self, scale: int, num_feat: int):
        layers = []
        if scale >= 1 and (scale & (scale - 1)) == 0:
            for _ in range(scale.bit_length() - 1):
                layers += [nn.Conv2d(num_feat, 4 * num_feat, 3, 1, 1), nn.PixelShuffle(2)]
        elif scale == 3:
            layers += [nn.Conv2d(num_feat, 9 * num_feat, 3, 1, 1), nn.PixelShuffle(3)]
        else:
            raise ValueError(f'Upsample: scale {scale} is not supported; expected a power of 2 or 3')
        super().__init__(*layers)


class HAT(nn.Module):
    """Hybrid Attention Transformer for single-image super-resolution (pixel-shuffle reconstruction).

    Args:
        in_chans: Image channels (input and output).
        embed_dim: Feature channels of the body.
        depths: HABs per RHAG (one RHAG per entry).
        num_heads: Attention heads per RHAG.
        window_size: Attention window (16 in every released model).
        compress_ratio / squeeze_factor: CAB's channel reduction of its conv / its channel attention.
        conv_scale: Weight of the CAB branch (0.01).
        overlap_ratio: OCAB key window = window_size + int(overlap_ratio * window_size).
        mlp_ratio: MLP hidden width / embed_dim.
        qkv_bias: Biases of the qkv projections.
        drop_rate: Dropout after the input normalisation and in the HAB MLPs.
        drop_path_rate: Stochastic depth, linear over all HABs (the official default 0.1; OCABs have none).
        upscale: 2, 3, 4 (2^n and 3 are supported).
        img_range: Input scale after centring (1.0 for [0, 1] images).
        resi_connection: '1conv' or 'identity'.
        num_feat: Channels of the reconstruction head.
        num_classes / global_pool: timm's builder passes them; only 0 / '' (no classifier) are valid.
    """

    def __init__(
            self,
            in_chans: int = 3,
            embed_dim: int = 96,
            depths: Tuple[int, ...] = (6, 6, 6, 6),
            num_heads: Tuple[int, ...] = (6, 6, 6, 6),
            window_size: int = 16,
            compress_ratio: int = 3,
            squeeze_factor: int = 30,
            conv_scale: float = 0.01,
            overlap_ratio: float = 0.5,
            mlp_ratio: float = 2.,
            qkv_bias: bool = True,
            drop_rate: float = 0.,
            drop_path_rate: float = 0.1,
            norm_layer=nn.LayerNorm,
            upscale: int = 4,
            img_range: float = 1.,
            resi_connection: str = '1conv',
            num_feat: int = 64,
            num_classes: int = 0,
            global_pool: str = '',
    ):
        super().__init__()
        if num_classes != 0 or global_pool:
            raise ValueError(
                f'HAT is a super-resolution model without a classifier: num_classes must be 0 and global_pool '
                f"'', got num_classes={num_classes}, global_pool={global_pool!r}")
        if len(depths) != len(num_heads):
            raise ValueError(f'HAT: depths {depths} and num_heads {num_heads} must have one entry per group')
        check_int_arg('HAT', 'window_size', window_size)
        if isinstance(overlap_ratio, bool) or not isinstance(overlap_ratio, (int, float)) or not overlap_ratio >= 0:
            raise InputError(f'HAT: overlap_ratio must be a number >= 0 (official 0.5), got {overlap_ratio!r}')
        self.num_classes = 0
        self.in_chans = in_chans
        self.upscale = upscale
        self.img_range = img_range
        self.window_size = window_size
        self.shift_size = window_size // 2
        self.overlap_win_size = int(window_size * overlap_ratio) + window_size
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.grad_checkpointing = False
        mean = HAT_RGB_MEAN if in_chans == 3 else (0.,) * in_chans
        # official: a plain tensor attribute (not in the state dict); a non-persistent buffer follows .to()
        self.register_buffer('mean', torch.tensor(mean).view(1, in_chans, 1, 1), persistent=False)

        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, 1, 1)
        self.patch_embed = PatchEmbed(embed_dim, norm_layer)
        self.pos_drop = nn.Dropout(p=drop_rate)
        n_blocks = sum(depths)
        dpr = [drop_path_rate * i / max(n_blocks - 1, 1) for i in range(n_blocks)]  # torch.linspace's rates
        self.layers = nn.ModuleList()
        for i, depth in enumerate(depths):
            self.layers.append(RHAG(
                dim=embed_dim,
                depth=depth,
                num_heads=num_heads[i],
                window_size=window_size,
                compress_ratio=compress_ratio,
                squeeze_factor=squeeze_factor,
                conv_scale=conv_scale,
                overlap_ratio=overlap_ratio,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                drop=drop_rate,
                drop_path=tuple(dpr[sum(depths[:i]):sum(depths[:i + 1])]),
                norm_layer=norm_layer,
                resi_connection=resi_connection,
            ))
        self.norm = norm_layer(embed_dim)
        if resi_connection == '1conv':
            self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1)
        else:
            self.conv_after_body = nn.Identity()
        self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, num_feat, 3, 1, 1), nn.LeakyReLU(inplace=True))
        self.upsample = Upsample(upscale, num_feat)
        self.conv_last = nn.Conv2d(num_feat, in_chans, 3, 1, 1)
        self.feature_info = [dict(num_chs=embed_dim, reduction=1, module='conv_after_body')]

        self.apply(self._init_weights)

    def _init_weights(self, m: nn.Module) -> None:
        # the official init: truncated-normal Linear weights, zero biases, unit LayerNorms; convs keep PyTorch's
        init_linear_trunc_normal(m)
        if isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(
            stem=r'^conv_first|^patch_embed',
            blocks=r'^layers\.(\d+)' if coarse else [
                (r'^layers\.(\d+)\.residual_group\.blocks\.(\d+)', None),
                (r'^layers\.(\d+)\.residual_group\.overlap_attn', (99998,)),
                (r'^layers\.(\d+)\.conv', (99999,)),
                (r'^norm|^conv_after_body', (99999,)),
            ],
        )

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        # the official `no_weight_decay_keywords`; timm's optimizer factory matches these as patterns
        return {'*relative_position_bias_table'}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def get_classifier(self) -> nn.Module:
        return nn.Identity()

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        if num_classes != 0 or global_pool:
            raise ValueError(f'HAT is a super-resolution model without a classifier; cannot reset it to '
                             f'num_classes={num_classes}, global_pool={global_pool!r}')

    def pad_input(self, x: torch.Tensor) -> torch.Tensor:
        """Reflect-pad the right / bottom to a multiple of the window (the official ``HATModel.pre_process``)."""
        H, W = x.shape[-2:]
        ws = self.window_size
        pad_h, pad_w = (ws - H % ws) % ws, (ws - W % ws) % ws
        if (pad_h and pad_h >= H) or (pad_w and pad_w >= W):
            raise ValueError(
                f'HAT: a {H}x{W} input cannot be reflect-padded (the official padding) to a multiple of the window '
                f'{ws}: the pads {pad_h}, {pad_w} must be smaller than the sides; use sides of at least {ws // 2 + 1} '
                f'pixels, or multiples of {ws}')
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode='reflect')
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Deep features ``(B, embed_dim, Hp, Wp)`` of an image (centred, scaled and padded to the window
        multiple here): conv_after_body(body(f0)) + f0 with f0 the shallow features -- the reconstruction's input."""
        # before the mean is subtracted: a grey image would broadcast against the RGB mean into a colour one
        x = check_image_input(x, self.in_chans, 1, architecture_name(self))
        x = self.pad_input((x - self.mean) * self.img_range)
        f0 = self.conv_first(x)
        Hp, Wp = f0.shape[-2:]
        shift_mask = shifted_window_mask(Hp, Wp, self.window_size, self.shift_size, device=x.device)
        t = self.pos_drop(self.patch_embed(f0.permute(0, 2, 3, 1)))
        for layer in self.layers:
            if self.grad_checkpointing and not torch.jit.is_scripting():
                t = torch.utils.checkpoint.checkpoint(layer, t, shift_mask, use_reentrant=False)
            else:
                t = layer(t, shift_mask)
        t = self.norm(t).permute(0, 3, 1, 2)
        return self.conv_after_body(t) + f0

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The pixel-shuffle reconstruction of padded features, mapped back to image range (not cropped);
        ``pre_logits`` returns the features unchanged."""
        if pre_logits:
            return x
        x = self.conv_last(self.upsample(self.conv_before_upsample(x)))
        return x / self.img_range + self.mean

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` LR image (any H, W that can be reflect-padded) -> ``(B, C, scale*H, scale*W)``."""
        out = self.forward_head(self.forward_features(x))  # checks the input's shape
        H, W = x.shape[-2:]
        return out[..., :H * self.upscale, :W * self.upscale]


def _convert_official_table(table: torch.Tensor, name: str, model: HAT) -> torch.Tensor:
    ws = model.window_size
    if name.endswith('overlap_attn.relative_position_bias_table'):
        return ocab_table_from_official(table, ws, model.overlap_win_size).contiguous()
    return window_table_from_official(table, (ws, ws)).contiguous()


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: nn.Module) -> Dict[str, torch.Tensor]:
    """BasicSR / official HAT checkpoints -> zoo layout; zoo state dicts pass through unchanged.

    Unwraps BasicSR's container, ``params_ema`` preferred (what every official test config loads), then
    ``params``; strips a DDP ``module.`` prefix; drops the ``relative_position_index_SA`` / ``_OCA`` buffers
    (recomputed from the window sizes); reshapes the flat ``((2ws-1)^2, heads)`` / ``((ws+wse-1)^2, heads)``
    bias tables into the ops' ``(heads, ...)`` layout, the OCAB one through its wrapped official index.

    A checkpoint of another scale (e.g. x4 weights into an x2 model, to fine-tune for x2): the pixel-shuffle
    ``upsample.*`` convolutions are the only scale-specific weights; they keep the model's initialisation (timm's
    convention for a new classifier, logged as a warning) and every other weight loads.
    """
    state_dict = unwrap_checkpoint(state_dict, containers=('params_ema', 'params'))
    out = {}
    for k, v in state_dict.items():
        if re.match(r'^relative_position_index_(SA|OCA)$', k):
            continue
        if k.endswith('relative_position_bias_table') and v.ndim == 2:
            v = _convert_official_table(v, k, model)
        out[k] = v
    own = model.state_dict()
    upsampler = {k for k in (*out, *own) if k.startswith('upsample.')}
    if any(k not in out or k not in own or out[k].shape != own[k].shape for k in upsampler):
        logging.getLogger(__name__).warning(
            'checkpoint upsampler (%s) does not fit the x%s model: upsample.* keeps its initialisation',
            ', '.join(f'{k} {tuple(out[k].shape)}' for k in sorted(out) if k.startswith('upsample.')),
            getattr(model, 'upscale', '?'))
        out = {k: v for k, v in out.items() if not k.startswith('upsample.')}
        out.update({k: v for k, v in own.items() if k.startswith('upsample.')})
    return out


def _create_hat(variant: str, pretrained: bool = False, **kwargs) -> HAT:
    if kwargs.get('features_only'):
        raise ValueError(f'{variant} is a super-resolution model (one full-resolution feature map): features_only '
                         f'is not supported; use forward_features')
    return create(lambda pretrained, **kwargs: build_model_with_cfg(
        HAT, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn, **dict(_MODEL_ARGS[variant], **kwargs)),
        variant, pretrained, kwargs)


def _cfg(url: str = '', scale: int = 4, notes: Tuple[str, ...] = (), **kwargs) -> Dict[str, Any]:
    return {
        'url': url,
        'num_classes': 0, 'input_size': (3, 64, 64), 'pool_size': None,
        'crop_pct': 1.0, 'interpolation': 'bicubic',
        'mean': HAT_RGB_MEAN, 'std': (1.0, 1.0, 1.0),
        'first_conv': 'conv_first', 'classifier': '',
        'license': 'apache-2.0',
        'description': f'super-resolution x{scale}: (B, 3, H, W) LR image in [0, 1] -> (B, 3, {scale}H, {scale}W); '
                       f'input_size is the LR training patch, mean / std the official rgb_mean / 1 / img_range',
        # timm's PretrainedCfg takes no unknown fields (a `task` key would break timm's own config.json round trip,
        # `local-dir:` loading), so the task and the scale are stated in its `notes`, as `key: value` strings
        'notes': ('task: super-resolution', f'scale: {scale}', *notes),
        'paper_ids': 'arXiv:2205.04437',
        'paper_name': 'Activating More Pixels in Image Super-Resolution Transformer',
        'origin_url': 'https://github.com/XPixelGroup/HAT',
        **kwargs,
    }


def _cfg_ext(scale: int, **kwargs) -> Dict[str, Any]:
    return _cfg(scale=scale, paper_ids='arXiv:2309.05239',
                paper_name='HAT: Hybrid Attention Transformer for Image Restoration', **kwargs)


# Official weights: files in the shared Google Drive folder of the XPixelGroup/HAT README (mirror: Baidu Netdisk,
# same README), fetched with the optional `gdown` client (zoo.weights); tags name the released files' training data.
# df2k: `HAT[-S]_SRx{2,3,4}.pth`; imagenet_df2k: `HAT[-L]_SRx*_ImageNet-pretrain.pth` (ImageNet pre-training,
# DF2K fine-tuning); real_gan / real_gan_sharper: `Real_HAT_GAN_SRx4[_sharper].pth` (HAT x4 generator).
_HAT_FOLDER = 'https://drive.google.com/drive/folders/1HpmReFfoUqUbnAOQ7rvOeNU3uf_m69w0'
# BasicSR's save_network (the official test configs load params_ema; files not downloaded here, unverified)
_HAT_CONTAINER = "{'params': state_dict, 'params_ema': EMA state_dict}"


def _hat_weights(file: str) -> Dict[str, Any]:
    return official_weights(_HAT_FOLDER, file_name=file, container=_HAT_CONTAINER)


default_cfgs = generate_default_cfgs({
    'hat_s_x2.df2k': _cfg_ext(2, **_hat_weights('HAT-S_SRx2.pth')),
    'hat_s_x3.df2k': _cfg_ext(3, **_hat_weights('HAT-S_SRx3.pth')),
    'hat_s_x4.df2k': _cfg_ext(4, **_hat_weights('HAT-S_SRx4.pth')),
    'hat_x2.df2k': _cfg(scale=2, **_hat_weights('HAT_SRx2.pth')),
    'hat_x2.imagenet_df2k': _cfg(scale=2, **_hat_weights('HAT_SRx2_ImageNet-pretrain.pth')),
    'hat_x3.df2k': _cfg(scale=3, **_hat_weights('HAT_SRx3.pth')),
    'hat_x3.imagenet_df2k': _cfg(scale=3, **_hat_weights('HAT_SRx3_ImageNet-pretrain.pth')),
    'hat_x4.df2k': _cfg(scale=4, **_hat_weights('HAT_SRx4.pth')),
    'hat_x4.imagenet_df2k': _cfg(scale=4, **_hat_weights('HAT_SRx4_ImageNet-pretrain.pth')),
    'hat_x4.real_gan': _cfg_ext(4, **_hat_weights('Real_HAT_GAN_SRx4.pth')),
    'hat_x4.real_gan_sharper': _cfg_ext(4, **_hat_weights('Real_HAT_GAN_SRx4_sharper.pth')),
    'hat_l_x2.imagenet_df2k': _cfg(scale=2, **_hat_weights('HAT-L_SRx2_ImageNet-pretrain.pth')),
    'hat_l_x3.imagenet_df2k': _cfg(scale=3, **_hat_weights('HAT-L_SRx3_ImageNet-pretrain.pth')),
    'hat_l_x4.imagenet_df2k': _cfg(scale=4, **_hat_weights('HAT-L_SRx4_ImageNet-pretrain.pth')),
})

_HAT_S = dict(embed_dim=144, depths=(6,) * 6, num_heads=(6,) * 6, compress_ratio=24, squeeze_factor=24)
_HAT = dict(embed_dim=180, depths=(6,) * 6, num_heads=(6,) * 6, compress_ratio=3, squeeze_factor=30)
_HAT_L = dict(embed_dim=180, depths=(6,) * 12, num_heads=(6,) * 12, compress_ratio=3, squeeze_factor=30)


# Per variant: the model args `_create_hat` adds to the caller's (which override them).
_MODEL_ARGS = {
    'hat_s_x2': dict(_HAT_S, upscale=2),
    'hat_s_x3': dict(_HAT_S, upscale=3),
    'hat_s_x4': dict(_HAT_S, upscale=4),
    'hat_x2': dict(_HAT, upscale=2),
    'hat_x3': dict(_HAT, upscale=3),
    'hat_x4': dict(_HAT, upscale=4),
    'hat_l_x2': dict(_HAT_L, upscale=2),
    'hat_l_x3': dict(_HAT_L, upscale=3),
    'hat_l_x4': dict(_HAT_L, upscale=4),
}


@register_model
def hat_s_x2(pretrained: bool = False, **kwargs) -> HAT:
    return _create_hat('hat_s_x2', pretrained, **kwargs)


@register_model
def hat_s_x3(pretrained: bool = False, **kwargs) -> HAT:
    return _create_hat('hat_s_x3', pretrained, **kwargs)


@register_model
def hat_s_x4(pretrained: bool = False, **kwargs) -> HAT:
    return _create_hat('hat_s_x4', pretrained, **kwargs)


@register_model
def hat_x2(pretrained: bool = False, **kwargs) -> HAT:
    return _create_hat('hat_x2', pretrained, **kwargs)


@register_model
def hat_x3(pretrained: bool = False, **kwargs) -> HAT:
    return _create_hat('hat_x3', pretrained, **kwargs)


@register_model
def hat_x4(pretrained: bool = False, **kwargs) -> HAT:
    return _create_hat('hat_x4', pretrained, **kwargs)


@register_model
def hat_l_x2(pretrained: bool = False, **kwargs) -> HAT:
    return _create_hat('hat_l_x2', pretrained, **kwargs)


@register_model
def hat_l_x3(pretrained: bool = False, **kwargs) -> HAT:
    return _create_hat('hat_l_x3', pretrained, **kwargs)


@register_model
def hat_l_x4(pretrained: bool = False, **kwargs) -> HAT:
    return _create_hat('hat_l_x4', pretrained, **kwargs)
