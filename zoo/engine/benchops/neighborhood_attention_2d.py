"""``neighborhood_attention_2d`` (NAT / DiNAT): every query attends to the ``k x k`` (dilated) neighbourhood
around it, with NATTEN 0.14's relative-position bias ``rpb`` ``(heads, 2k-1, 2k-1)``.

Inputs, as NAT's ``qkv`` Linear produces them: a packed ``qkv`` ``(B, H, W, 3, heads, D)`` and the ``rpb``
table; gradients w.r.t. both (without ``rpb`` for the no-bias cases). Output ``(B, H, W, heads, D)``.

Candidates:

* ``official`` -- NATTEN 0.14's unfused computation as NAT's ``NeighborhoodAttention2D`` runs it
  (``qkv.reshape(B, H, W, 3, heads, D).permute(3, 0, 4, 1, 2, 5)``, ``q * scale``, ``natten2dqkrpb``, softmax,
  ``natten2dav``, ``permute`` back), with the two NATTEN kernels written out the naive way: the neighbourhood of
  every query is gathered (``k[:, :, rows, cols]``: ``k x k`` copies of k and v) using NATTEN's own
  ``get_window_start`` / ``get_pb_start`` formulas (written independently of ``ops``' ``neighborhood_indices``),
  the bias gathered from ``rpb`` the same way. NATTEN is not needed (and 0.14 does not build on current torch).
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

Cost (``N = H W`` queries, ``K = kh kw`` keys each, ``T = B N heads D``, ``s`` the element size)::

    fwd FLOPs = 4 * B * heads * N * K * D        (q k^T and P v over the neighbourhood)
    bwd FLOPs = 2.5 * fwd                         (FlashAttention's count: q k^T recomputed)
    fwd bytes = 4 T s  [+ rpb table]              (read q, k, v; write o)
    bwd bytes = 8 T s  [+ 2 x rpb table]          (read q, k, v, o, dO; write dq, dk, dv; read rpb, write d rpb)
"""
from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass
from typing import Callable

import torch

from zoo.engine.benchops import BenchInputs, OpBench, elem_size, packed_qkv
from zoo.engine.flops import OpCost

__all__ = ["BENCH", "NeighborhoodCase", "na_official", "na_flex", "natten_axis", "neighborhood_attention_cost"]


def neighborhood_attention_cost(batch: int, height: int, width: int, heads: int, head_dim: int, kernel: int,
                                *, elem_size: int, rpb: bool = True) -> OpCost:
    """Cost of ``ops.neighborhood_attention_2d`` with a ``kernel x kernel`` neighbourhood (module docstring)."""
    flops_fwd = 4 * batch * heads * height * width * kernel * kernel * head_dim
    tensor = batch * height * width * heads * head_dim * elem_size
    table = heads * (2 * kernel - 1) ** 2 * elem_size if rpb else 0
    return OpCost(flops_fwd=flops_fwd, flops_bwd=flops_fwd * 5 // 2, bytes_fwd=4 * tensor + table,
                  bytes_bwd=8 * tensor + 2 * table)


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


def natten_axis(length: int, kernel: int, dilation: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """NATTEN's ``get_window_start`` and ``get_pb_start`` for every index of one axis, vectorised:
    ``(keys, bias)``, each ``(length, kernel)``: the neighbours' indices and their rpb indices."""
    n = kernel // 2
    i = torch.arange(length, device=device)
    if dilation <= 1:
        start = (i - n).clamp_min(0) + (i + n >= length) * (length - i - n - 1)
        pb = n + (i < n) * (n - i) + (i + n >= length) * (length - i - 1 - n)
    else:
        near_start, near_end = i - n * dilation < 0, i + n * dilation >= length
        imodd = i % dilation
        a = (length // dilation) * dilation
        b = length - a
        end = torch.where(imodd < b, length - b + imodd - 2 * n * dilation, a + imodd - kernel * dilation)
        start = torch.where(near_start, imodd, torch.where(near_end, end, i - n * dilation))
        pb = torch.where(near_start, kernel - 1 - i // dilation,
                         torch.where(near_end, (length - i - 1) // dilation, torch.full_like(i, n)))
    steps = torch.arange(kernel, device=device)
    return start[:, None] + steps * dilation, pb[:, None] + steps


def _make_inputs(case: NeighborhoodCase, device, dtype, grad: bool) -> BenchInputs:
    B, H, W, nh, D, k = case.batch, case.height, case.width, case.heads, case.head_dim, case.kernel
    qkv = packed_qkv((B, H, W, 3, nh, D), device, dtype, grad)
    leaves = [qkv]
    rpb = None
    if case.rpb:
        rpb = (0.5 * torch.randn(nh, 2 * k - 1, 2 * k - 1, device=device, dtype=dtype)).requires_grad_(grad)
        leaves.append(rpb)
    key_y, bias_y = natten_axis(H, k, case.dilation, device)
    key_x, bias_x = natten_axis(W, k, case.dilation, device)
    # (H, W, k, k) index grids of every query's neighbours and of their bias entries (the kernels' index math)
    index = dict(rows=key_y[:, None, :, None].expand(H, W, k, k), cols=key_x[None, :, None, :].expand(H, W, k, k),
                 bias_rows=bias_y[:, None, :, None].expand(H, W, k, k),
                 bias_cols=bias_x[None, :, None, :].expand(H, W, k, k))
    return BenchInputs(leaves=leaves, extra=dict(rpb=rpb, index=index))


def na_official(inp: BenchInputs, case: NeighborhoodCase) -> torch.Tensor:
    B, H, W, _, nh, D = inp.leaves[0].shape
    kk = case.kernel * case.kernel
    idx = inp.index
    q, k, v = inp.leaves[0].permute(3, 0, 4, 1, 2, 5)  # (B, heads, H, W, D) each: NATTEN's unfused layout
    q = q * D ** -0.5
    # natten2dqkrpb: (B, heads, H, W, k*k) logits over the gathered neighbours, plus the gathered bias
    k_nb = k[:, :, idx["rows"], idx["cols"]].reshape(B, nh, H, W, kk, D)
    attn = (q.unsqueeze(-2) @ k_nb.transpose(-2, -1)).squeeze(-2)
    if inp.rpb is not None:
        attn = attn + inp.rpb[:, idx["bias_rows"], idx["bias_cols"]].reshape(nh, H, W, kk)
    attn = attn.softmax(dim=-1)
    # natten2dav
    v_nb = v[:, :, idx["rows"], idx["cols"]].reshape(B, nh, H, W, kk, D)
    out = (attn.unsqueeze(-2) @ v_nb).squeeze(-2)  # (B, heads, H, W, D)
    return out.permute(0, 2, 3, 1, 4)


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
