"""``window_grid_attention`` (EMOv2's ``EW_MHSA_Hybrid``): the same q / k / v attended within ``ws x ws``
windows ("close") and within ``ws x ws`` dilated grids ("remote"), the two results summed.

Inputs, as the op receives them: the packed query / key projection ``qk`` ``(B, H, W, 2, heads, D)`` and the
(wider) values ``v`` ``(B, H, W, heads, Dv)``; gradients w.r.t. both. The output is ``(B, H, W, heads, Dv)``.

Candidates:

* ``official`` -- :func:`ops.window_grid_attention.official.window_grid_attention_official` (EMOv2's
  ``EW_MHSA_Hybrid``, NCHW, einops partitions).
* ``sdpa`` -- ``F.scaled_dot_product_attention`` on the two partitions (``view`` / ``permute`` of the
  channels-last inputs; a float padding mask only when the map is not a multiple of ``ws``), summed.
* ``reference`` / ``triton`` -- :func:`ops.window_grid_attention` (``partition='both'``) with that backend.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from benchmarks.harness import BenchInputs, OpBench, packed_qkv
from ops._cost import OpCost, elem_size
from ops.window_grid_attention.official import window_grid_attention_cost, window_grid_attention_official

__all__ = ["BENCH", "WindowGridCase"]


@dataclass(frozen=True)
class WindowGridCase:
    """Window + grid attention on ``(batch, height, width, heads, head_dim)`` q / k, ``v_dim``-wide values."""

    batch: int
    height: int
    width: int
    heads: int
    head_dim: int
    v_dim: int
    window: int

    @property
    def label(self) -> str:
        return (f"{self.batch}x{self.height}x{self.width}x{self.heads}x{self.head_dim} v{self.v_dim} "
                f"ws{self.window}")

    def cost(self, dtype: torch.dtype) -> OpCost:
        return window_grid_attention_cost(self.batch, self.height, self.width, self.heads, self.head_dim,
                                          self.v_dim, self.window, elem_size=elem_size(dtype))


def _groups(t: torch.Tensor, s: int, grid: bool) -> torch.Tensor:
    """(B, Hp, Wp, heads, D) -> (B * G, heads, s*s, D), windows or grids, in the einops patterns' group order."""
    B, Hp, Wp, nh, D = t.shape
    n1, n2 = Hp // s, Wp // s
    if grid:  # (h1 n1) (w1 n2) -> (b n1 n2) (h1 w1)
        t = t.view(B, s, n1, s, n2, nh, D).permute(0, 2, 4, 5, 1, 3, 6)
    else:  # (n1 h1) (n2 w1) -> (b n1 n2) (h1 w1)
        t = t.view(B, n1, s, n2, s, nh, D).permute(0, 1, 3, 5, 2, 4, 6)
    return t.reshape(B * n1 * n2, nh, s * s, D)


def _ungroup(t: torch.Tensor, B: int, Hp: int, Wp: int, s: int, grid: bool) -> torch.Tensor:
    """Inverse of :func:`_groups`: (B * G, heads, s*s, D) -> (B, Hp, Wp, heads, D)."""
    _, nh, _, D = t.shape
    n1, n2 = Hp // s, Wp // s
    t = t.view(B, n1, n2, nh, s, s, D)
    t = t.permute(0, 4, 1, 5, 2, 3, 6) if grid else t.permute(0, 1, 4, 2, 5, 3, 6)
    return t.reshape(B, Hp, Wp, nh, D)


def _make_inputs(case: WindowGridCase, device, dtype, grad: bool) -> BenchInputs:
    B, H, W, nh, s = case.batch, case.height, case.width, case.heads, case.window
    qk = packed_qkv((B, H, W, 2, nh, case.head_dim), device, dtype, grad)
    v = packed_qkv((B, H, W, nh, case.v_dim), device, dtype, grad)
    masks = dict(window=None, grid=None)
    hp, wp = -(-H // s) * s, -(-W // s) * s
    if (hp, wp) != (H, W):  # additive -inf on the padded keys: (B * G, 1, 1, s*s) per partition
        valid = F.pad(torch.ones(1, H, W, 1, 1, device=device), (0, 0, 0, 0, 0, wp - W, 0, hp - H))
        for name in masks:
            g = _groups(valid, s, grid=name == "grid").transpose(-2, -1)  # (G, 1, 1, s*s)
            masks[name] = torch.zeros_like(g).masked_fill(g == 0, float("-inf")).to(dtype).repeat(B, 1, 1, 1)
    return BenchInputs(leaves=[qk, v], extra=dict(masks=masks))


def window_grid_official(inp: BenchInputs, case: WindowGridCase) -> torch.Tensor:
    qk, v = inp.leaves
    return window_grid_attention_official(*qk.unbind(3), v, case.window)


def window_grid_sdpa(inp: BenchInputs, case: WindowGridCase) -> torch.Tensor:
    qk, v = inp.leaves
    B, H, W, _, nh, D = qk.shape
    s = case.window
    hp, wp = -(-H // s) * s, -(-W // s) * s
    if (hp, wp) != (H, W):
        qk, v = F.pad(qk, (0, 0, 0, 0, 0, 0, 0, wp - W, 0, hp - H)), F.pad(v, (0, 0, 0, 0, 0, wp - W, 0, hp - H))
    q, k = qk.unbind(3)
    out = 0
    for name in ("grid", "window"):
        grid = name == "grid"
        o = F.scaled_dot_product_attention(_groups(q, s, grid), _groups(k, s, grid), _groups(v, s, grid),
                                           attn_mask=inp.masks[name], scale=D ** -0.5)
        out = out + _ungroup(o, B, hp, wp, s, grid)
    return out[:, :H, :W]


def _ours(backend: str):
    def run(inp: BenchInputs, case: WindowGridCase) -> torch.Tensor:
        import ops

        qk, v = inp.leaves
        q, k = qk.unbind(3)
        return ops.window_grid_attention(q, k, v, case.window, partition="both", backend=backend)

    return run


def _emo2_5m(batch: int, img: int | tuple[int, int], window: int) -> list[WindowGridCase]:
    """EMOv2-5M's attention stages (3: 160 channels, 5 heads of 32, v 640 / 5 = 128 wide; 4: 288 channels, 9 heads
    of 32, v 1152 / 9 = 128) at img (strides 16, 32; every stride-2 conv rounds up)."""
    ih, iw = (img, img) if isinstance(img, int) else img
    cases = []
    for stride, heads in ((16, 5), (32, 9)):
        h, w = ih, iw
        for _ in range(stride.bit_length() - 1):
            h, w = -(-h // 2), -(-w // 2)
        cases.append(WindowGridCase(batch, h, w, heads, 32, 128, window))
    return cases


# emo2_5m_224: ImageNet training at 224 (ws 7: 14x14 and 7x7 maps), batch 128 per GPU (the official 1024 on 8).
# emo2_5m_512: the _512 variant (ws 8) at 512x512 (32x32, 16x16), batch 32. emo2_5m_seg_512x683: the
# segmentation backbone (window 10 in every stage) on a 512x683 ADE20K image (32x43, 16x22: not multiples of 10,
# so padded / masked windows), batch 2. tiny: CPU-sized, v wider than q / k, one map that is not a multiple of ws.
BENCH = OpBench(
    name="window_grid_attention",
    presets={
        "emo2_5m_224": _emo2_5m(128, 224, 7),
        "emo2_5m_512": _emo2_5m(32, 512, 8),
        "emo2_5m_seg_512x683": _emo2_5m(2, (512, 683), 10),
        "tiny": [WindowGridCase(2, 8, 12, 2, 16, 24, 4), WindowGridCase(1, 9, 11, 3, 8, 12, 4)],
    },
    candidates={"official": window_grid_official, "sdpa": window_grid_sdpa, "reference": _ours("reference"),
                "triton": _ours("triton")},
    make_inputs=_make_inputs,
    case_type=WindowGridCase,
    shape_fields="B,H,W,heads,D,Dv,window",
)
