"""Block pieces that several families share: the pre-norm residual block (``x = x + drop_path1(attn(norm1(x)))``,
then ``x = x + drop_path2(mlp(norm2(x)))``) and NCHW modules (convs) on channels-last maps."""
from typing import Callable, Optional

import torch
import torch.nn as nn
from timm.layers import DropPath

__all__ = ['PreNormBlock', 'apply_nchw']


def apply_nchw(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """An NCHW module (a conv) on a channels-last ``(B, H, W, C)`` map; the result is channels-last again."""
    return module(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class PreNormBlock(nn.Module):
    """Pre-norm attention and MLP residuals around modules the subclass builds.

    The subclass builds `attn` and `mlp` (in its own order, which fixes the init's random draws) and passes them in;
    the block registers ``norm1`` / ``attn`` / ``drop_path1`` / ``norm2`` / ``mlp`` / ``drop_path2`` (timm's
    names) in that order. ``attn=None``: an MLP-only block (no ``norm1`` / ``attn`` / ``drop_path1``). Extra
    ``forward`` arguments go to `attn`.
    """

    def __init__(
            self,
            dim: int,
            attn: Optional[nn.Module],
            mlp: nn.Module,
            drop_path: float = 0.,
            norm_layer: Callable[..., nn.Module] = nn.LayerNorm,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        if attn is None:
            self.norm1 = self.attn = self.drop_path1 = None
        else:
            self.norm1 = norm_layer(dim, **dd)
            self.attn = attn
            self.drop_path1 = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = norm_layer(dim, **dd)
        self.mlp = mlp
        self.drop_path2 = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: torch.Tensor, *attn_args) -> torch.Tensor:
        if self.attn is not None:
            x = x + self.drop_path1(self.attn(self.norm1(x), *attn_args))
        return x + self.drop_path2(self.mlp(self.norm2(x)))
