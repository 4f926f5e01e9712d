"""``neighborhood_attention_2d`` (NAT / DiNAT): every query attends to the ``k x k`` (dilated) neighbourhood
around it, with NATTEN 0.14's relative-position bias ``rpb`` ``(heads, 2k-1, 2k-1)``.

Inputs, as NAT's ``qkv`` Linear produces them: a packed ``qkv`` ``(B, H, W, 3, heads, D)`` and the ``rpb``
table; gradients w.r.t. both (without ``rpb`` for the no-bias cases). Output ``(B, H, W, heads, D)``.

Candidates:

* ``official`` -- :func:`ops.neighborhood_attention.official.neighborhood_attention_2d_official`: NATTEN 0.14's
  unfused computation as NAT's ``NeighborhoodAttention2D`` runs it, its two kernels written out the naive way
  (gathered neighbourhoods) with NATTEN's own index formulas. NATTEN is not needed (and 0.14 does not build on
  current torch).
* ``flex`` -- ``torch.nn.attention.flex_attention`` over the whole row-major map: a ``create_block_mask``
  whose ``mask_mod`` admits key ``(ky, kx)`` for query ``(qy, qx)`` iff per axis it lies in the query's dilation
  group and window (window starts from ``ops.neighborhood_indices``), and a ``score_mod`` adding
  ``rpb[h, ky // d - qy // d + k - 1, kx // d - qx // d + k - 1]`` (gradient to ``rpb`` through the captured
  table). Mask building is inside the timed call. CUDA: compiled; the CPU has no FlexAttention backward (skipped,
  as for bi-level routing attention).
* ``natten`` -- the ``natten`` package when it is importable: NATTEN <= 0.17's unfused ``na2d_qk`` (with
  ``rpb``) / ``na2d_av``; NATTEN >= 0.20 has no relative-position bias at all (``natten.na2d``), so it runs the
  no-bias cases only (``*_nobias`` presets) and is skipped with that reason on the others.
* ``reference`` / ``triton`` -- :func:`ops.neighborhood_attention_2d` with that backend.
"""
from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass
from typing import Callable

import torch

from benchmarks.harness import BenchInputs, OpBench, packed_qkv
from ops._cost import OpCost, elem_size
from ops.neighborhood_attention.official import neighborhood_attention_2d_official, neighborhood_attention_cost

__all__ = ["BENCH", "NeighborhoodCase"]


@dataclass(frozen=True)
class NeighborhoodCase:
    """Neighbourhood attention on ``(batch, height, width, heads, head_dim)``, a ``kernel x kernel`` window,
    ``dilation`` on both axes, with (``rpb``) or without a relative-position bias."""

    batch: int
    height: int
    width: int
    heads: int
    head_dim: int
    kernel: int
    dilation: int
    rpb: bool = True

    @property
    def label(self) -> str:
        return (f"{self.batch}x{self.height}x{self.width}x{self.heads}x{self.head_dim} k{self.kernel} "
                f"d{self.dilation}{'+rpb' if self.rpb else ''}")

    def cost(self, dtype: torch.dtype) -> OpCost:
        return neighborhood_attention_cost(self.batch, self.height, self.width, self.heads, self.head_dim,
                                           self.kernel, elem_size=elem_size(dtype), rpb=self.rpb)


def _check_case(case: NeighborhoodCase) -> str | None:
    if case.kernel % 2 == 0:
        return f"kernel must be odd (NATTEN 0.14 semantics), got {case.kernel}"
    if min(case.height, case.width) < case.kernel * case.dilation:
        return (f"the map {case.height}x{case.width} is smaller than kernel x dilation = "
                f"{case.kernel * case.dilation} (NAT pads such maps before its qkv projection)")
    return None


def _make_inputs(case: NeighborhoodCase, device, dtype, grad: bool) -> BenchInputs:
    B, H, W, nh, D, k = case.batch, case.height, case.width, case.heads, case.head_dim, case.kernel
    qkv = packed_qkv((B, H, W, 3, nh, D), device, dtype, grad)
    leaves = [qkv]
    rpb = None
    if case.rpb:
        rpb = (0.5 * torch.randn(nh, 2 * k - 1, 2 * k - 1, device=device, dtype=dtype)).requires_grad_(grad)
        leaves.append(rpb)
    return BenchInputs(leaves=leaves, extra=dict(rpb=rpb))


def na_official(inp: BenchInputs, case: NeighborhoodCase) -> torch.Tensor:
    q, k, v = inp.leaves[0].unbind(3)
    return neighborhood_attention_2d_official(q, k, v, case.kernel, case.dilation, rpb=inp.rpb)


_FLEX_COMPILED: Callable | None = None


def na_flex(inp: BenchInputs, case: NeighborhoodCase) -> torch.Tensor:
    """FlexAttention with a neighbourhood block mask and an rpb score_mod (module docstring)."""
    global _FLEX_COMPILED
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    from ops.neighborhood_attention import neighborhood_indices

    qkv = inp.leaves[0]
    B, H, W, _, nh, D = qkv.shape
    k, d = case.kernel, case.dilation
    L = H * W
    first_y = neighborhood_indices(H, k, d, qkv.device)[0][:, 0]  # first key row of every query row
    first_x = neighborhood_indices(W, k, d, qkv.device)[0][:, 0]
    span = (k - 1) * d

    def mask_mod(b, h, q_idx, kv_idx):
        qy, qx, ky, kx = q_idx // W, q_idx % W, kv_idx // W, kv_idx % W
        fy, fx = first_y[qy], first_x[qx]
        in_y = (ky % d == qy % d) & (ky >= fy) & (ky <= fy + span)
        in_x = (kx % d == qx % d) & (kx >= fx) & (kx <= fx + span)
        return in_y & in_x

    rpb = inp.rpb

    def score_mod(score, b, h, q_idx, kv_idx):
        qy, qx, ky, kx = q_idx // W, q_idx % W, kv_idx // W, kv_idx % W
        # clamped: the score_mod also sees masked-out pairs (whole blocks / the eager path), whose index is out of range
        by = (ky // d - qy // d + k - 1).clamp(0, 2 * k - 2)
        bx = (kx // d - qx // d + k - 1).clamp(0, 2 * k - 2)
        return score + rpb[h, by, bx]

    cuda = qkv.device.type == "cuda"
    block_mask = create_block_mask(mask_mod, None, None, L, L, device=qkv.device, _compile=cuda)
    if cuda and _FLEX_COMPILED is None:
        _FLEX_COMPILED = torch.compile(flex_attention, dynamic=False)
    attend = _FLEX_COMPILED if cuda else flex_attention
    q, kt, v = (t.reshape(B, L, nh, D).transpose(1, 2) for t in qkv.unbind(3))
    with warnings.catch_warnings():  # CPU: eager flex warns that it is unfused, which the skip reason already says
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        out = attend(q, kt, v, score_mod=score_mod if rpb is not None else None, block_mask=block_mask,
                     scale=D ** -0.5)
    return out.transpose(1, 2).reshape(B, H, W, nh, D)


def _natten_api() -> str | None:
    """'unfused' (NATTEN <= 0.17: na2d_qk / na2d_av with rpb), 'fused' (>= 0.20: na2d, no rpb), None: absent."""
    if importlib.util.find_spec("natten") is None:
        return None
    import natten
    import natten.functional as nf

    if hasattr(nf, "na2d_qk") and hasattr(nf, "na2d_av"):
        return "unfused"
    if hasattr(natten, "na2d") or hasattr(nf, "na2d"):
        return "fused"
    return None


def na_natten(inp: BenchInputs, case: NeighborhoodCase) -> torch.Tensor:
    import natten
    import natten.functional as nf

    qkv = inp.leaves[0]
    D = qkv.shape[-1]
    k, d = case.kernel, case.dilation
    if _natten_api() == "unfused":  # NATTEN <= 0.17, layout (B, heads, H, W, D), as NAT's module calls it
        q, kt, v = qkv.permute(3, 0, 4, 1, 2, 5)
        attn = nf.na2d_qk(q * D ** -0.5, kt, k, d, rpb=inp.rpb).softmax(dim=-1)
        return nf.na2d_av(attn, v, k, d).permute(0, 2, 3, 1, 4)
    na2d = getattr(natten, "na2d", None) or nf.na2d  # NATTEN >= 0.20: (B, H, W, heads, D), no rpb
    q, kt, v = qkv.unbind(3)
    return na2d(q, kt, v, kernel_size=k, dilation=d, scale=D ** -0.5)


def _natten_skip(device: torch.device, allow_interpret: bool, modes=()) -> str | None:
    api = _natten_api()
    if api is None:
        return "the natten package is not installed (optional; NATTEN <= 0.17 runs every case, >= 0.20 no-bias only)"
    if device.type != "cuda":
        return "NATTEN's kernels are timed on CUDA only"
    return None


def _case_skip(name: str, case: NeighborhoodCase) -> str | None:
    if name == "natten" and case.rpb and _natten_api() == "fused":
        return ("NATTEN >= 0.20 has no relative-position bias (NAT / DiNAT's rpb): it runs the *_nobias presets "
                "only; NATTEN <= 0.17.5 (unfused na2d_qk / na2d_av) runs these")
    return None


def _ours(backend: str):
    def run(inp: BenchInputs, case: NeighborhoodCase) -> torch.Tensor:
        import ops

        q, k, v = inp.leaves[0].unbind(3)
        return ops.neighborhood_attention_2d(q, k, v, case.kernel, case.dilation, rpb=inp.rpb, backend=backend)

    return run


# DiNAT-Tiny (C0 64, heads 2 / 4 / 8 / 16 of 32, kernel 7, dilations s1 [1, 8, 1], s2 [1, 4, 1, 4], s3 [1, 2]
# alternating, s4 1): one case per distinct (stage, dilation).
_DINAT_T_DILATIONS = ((1, 8), (1, 4), (1, 2), (1,))


def _dinat_t(batch: int, img: int, rpb: bool = True) -> list[NeighborhoodCase]:
    cases = []
    for i, dilations in enumerate(_DINAT_T_DILATIONS):
        size = img // 4 // 2 ** i
        for d in dilations:
            if size >= 7 * d:
                cases.append(NeighborhoodCase(batch, size, size, 2 * 2 ** i, 32, 7, d, rpb))
    return cases


# dinat_t_224: ImageNet training shapes, batch 32 per GPU (the official recipe's 128 would make the official
# formulation's gathered k / v -- k^2 = 49 copies, 1.2 GB each at stage 1 in bf16 -- dominate the GPU). At 224 every
# dilated layer has kernel x dilation == map size. dinat_t_1024: the same layers and dilations at 1024x1024
# (256 / 128 / 64 / 32 maps), batch 1. *_nobias: the same without rpb (what NATTEN >= 0.20 can run). tiny: CPU
# sizes, odd maps, a dilation that does not divide the map (groups of different lengths), one case without rpb.
BENCH = OpBench(
    name="neighborhood_attention_2d",
    presets={
        "dinat_t_224": _dinat_t(32, 224),
        "dinat_t_1024": _dinat_t(1, 1024),
        "dinat_t_224_nobias": _dinat_t(32, 224, rpb=False),
        "dinat_t_1024_nobias": _dinat_t(1, 1024, rpb=False),
        "tiny": [NeighborhoodCase(2, 9, 11, 2, 16, 3, 1), NeighborhoodCase(1, 13, 10, 3, 8, 3, 3),
                 NeighborhoodCase(1, 7, 9, 1, 8, 5, 1, rpb=False)],
    },
    candidates={"official": na_official, "flex": na_flex, "natten": na_natten, "reference": _ours("reference"),
                "triton": _ours("triton")},
    make_inputs=_make_inputs,
    case_type=NeighborhoodCase,
    shape_fields="B,H,W,heads,D,kernel,dilation",
    check_case=_check_case,
    skip_reasons={"natten": _natten_skip},
    case_skip=_case_skip,
)
