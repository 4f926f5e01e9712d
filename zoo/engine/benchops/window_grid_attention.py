"""``window_grid_attention`` (EMOv2's ``EW_MHSA_Hybrid``): the same q / k / v attended within ``ws x ws``
windows ("close") and within ``ws x ws`` dilated grids ("remote"), the two results summed.

Inputs, as the op receives them: the packed query / key projection ``qk`` ``(B, H, W, 2, heads, D)`` and the
(wider) values ``v`` ``(B, H, W, heads, Dv)``; gradients w.r.t. both. The output is ``(B, H, W, heads, Dv)``.

Candidates:

* ``official`` -- ``EW_MHSA_Hybrid.forward`` of zhangzjn/EMOv2 (``model/lib_emo/emo2.py``) from its ``qk`` / ``v``
  convolutions on. The official code is NCHW; it gets free NCHW views of the inputs
  (``permute``, no copy) and does what the module does: ``F.pad`` to multiples of ``ws``, the einops partitions
  ``b c (h1 n1) (w1 n2) -> (b n1 n2) c h1 w1`` (remote) and ``b c (n1 h1) (n2 w1) -> (b n1 n2) c h1 w1``
  (close) with ``.contiguous()`` (written as the view / permute / reshape einops performs; einops is not a
  dependency), ``b (qk heads dim_head) h w -> qk b heads (h w) dim_head``,
  ``(q @ k^T) * scale``, softmax, ``@ v`` per partition, the inverse rearranges, the sum, the crop. Maps that
  are not multiples of ``ws``: the official module zero-pads its *input* (padded positions become keys with
  k = the conv bias); the op masks them instead, so here the padded keys get ``-inf`` -- the op's function.
* ``sdpa`` -- ``F.scaled_dot_product_attention`` on the two partitions (``view`` / ``permute`` of the
  channels-last inputs; a float padding mask only when the map is not a multiple of ``ws``), summed.
* ``reference`` / ``triton`` -- :func:`ops.window_grid_attention` (``partition='both'``) with that backend.

Cost (``s_e`` the element size; per partition, ``sum_g n_g^2`` over its groups of ``n_g`` valid positions --
for whole windows ``B * G * N^2`` with ``G = H W / N`` groups of ``N = ws^2``)::

    fwd FLOPs = 2 * B * heads * (D + Dv) * (sum_window n^2 + sum_grid n^2)     (q k^T and P v, both partitions)
    bwd FLOPs = 2 * B * heads * (3 D + 2 Dv) * (sum_window n^2 + sum_grid n^2)  (q k^T recomputed, dV, dP, dQ,
                                                                                 dK: FlashAttention's count)
    fwd bytes = (2 T_qk + 2 T_v) * s_e      (read q, k, v; write o -- both partitions in one pass)
    bwd bytes = (4 T_qk + 4 T_v) * s_e      (read q, k, v, o, dO; write dq, dk, dv)

with ``T_qk = B H W heads D`` and ``T_v = B H W heads Dv``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from zoo.engine.benchops import BenchInputs, OpBench, elem_size, packed_qkv
from zoo.engine.flops import OpCost

__all__ = ["BENCH", "WindowGridCase", "window_grid_attention_cost", "window_grid_official", "window_grid_sdpa"]


def _valid_sq(length: int, window: int, grid: bool) -> int:
    """sum over the groups along one axis of (valid positions)^2."""
    groups = -(-length // window)
    if grid:  # group a holds positions i * groups + a, i < window
        counts = [sum(1 for i in range(window) if i * groups + a < length) for a in range(groups)]
    else:
        counts = [min(window, length - a * window) for a in range(groups)]
    return sum(c * c for c in counts)


def window_grid_attention_cost(batch: int, height: int, width: int, heads: int, head_dim: int, v_dim: int,
                               window: int, *, elem_size: int) -> OpCost:
    """Cost of ``ops.window_grid_attention(..., partition='both')`` (module docstring)."""
    pairs = sum(_valid_sq(height, window, g) * _valid_sq(width, window, g) for g in (False, True))
    t_qk = batch * height * width * heads * head_dim * elem_size
    t_v = batch * height * width * heads * v_dim * elem_size
    return OpCost(
        flops_fwd=2 * batch * heads * (head_dim + v_dim) * pairs,
        flops_bwd=2 * batch * heads * (3 * head_dim + 2 * v_dim) * pairs,
        bytes_fwd=2 * t_qk + 2 * t_v,
        bytes_bwd=4 * t_qk + 4 * t_v,
    )


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


def _partition(x: torch.Tensor, n1: int, n2: int, s: int, grid: bool) -> torch.Tensor:
    """einops ``b c (h1 n1) (w1 n2) -> (b n1 n2) c h1 w1`` (grid, remote) or ``b c (n1 h1) (n2 w1) -> ...``
    (window, close) followed by ``.contiguous()``, as view / permute / reshape (einops is not a dependency)."""
    b, c = x.shape[:2]
    if grid:
        x = x.reshape(b, c, s, n1, s, n2).permute(0, 3, 5, 1, 2, 4)
    else:
        x = x.reshape(b, c, n1, s, n2, s).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b * n1 * n2, c, s, s)


def _unpartition(x: torch.Tensor, n1: int, n2: int, grid: bool) -> torch.Tensor:
    """The inverse rearranges ``(b n1 n2) c h1 w1 -> b c (h1 n1) (w1 n2)`` / ``-> b c (n1 h1) (n2 w1)``."""
    _, c, s, _ = x.shape
    x = x.reshape(-1, n1, n2, c, s, s)
    x = x.permute(0, 3, 4, 1, 5, 2) if grid else x.permute(0, 3, 1, 4, 2, 5)
    return x.reshape(-1, c, n1 * s, n2 * s)


def window_grid_official(inp: BenchInputs, case: WindowGridCase) -> torch.Tensor:
    qk, v = inp.leaves
    B, H, W, _, nh, D = qk.shape
    Dv = case.v_dim
    s = case.window
    # the official module's NCHW tensors: free views of the channels-last inputs
    qk = qk.reshape(B, H, W, 2 * nh * D).permute(0, 3, 1, 2)
    v = v.reshape(B, H, W, nh * Dv).permute(0, 3, 1, 2)
    pad_r, pad_b = (s - W % s) % s, (s - H % s) % s
    if pad_r or pad_b:
        qk, v = F.pad(qk, (0, pad_r, 0, pad_b)), F.pad(v, (0, pad_r, 0, pad_b))
    n1, n2 = (H + pad_b) // s, (W + pad_r) // s
    out = 0
    for name in ("grid", "window"):  # remote, close
        grid = name == "grid"
        qk_p = _partition(qk, n1, n2, s, grid)
        # 'b (qk heads dim_head) h w -> qk b heads (h w) dim_head'
        qk_p = qk_p.reshape(-1, 2, nh, D, s * s).permute(1, 0, 2, 4, 3).contiguous()
        attn = (qk_p[0] @ qk_p[1].transpose(-2, -1)) * D ** -0.5
        if inp.masks[name] is not None:
            attn = attn + inp.masks[name]
        attn = attn.softmax(dim=-1)
        # 'b (heads dim_head) h w -> b heads (h w) dim_head'
        v_p = _partition(v, n1, n2, s, grid).reshape(-1, nh, Dv, s * s).transpose(-2, -1).contiguous()
        # 'b heads (h w) dim_head -> b (heads dim_head) h w'
        x = (attn @ v_p).transpose(-2, -1).reshape(-1, nh * Dv, s, s)
        out = out + _unpartition(x, n1, n2, grid)
    if pad_r or pad_b:
        out = out[:, :, :H, :W].contiguous()
    return out.permute(0, 2, 3, 1).reshape(B, H, W, nh, Dv)


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
