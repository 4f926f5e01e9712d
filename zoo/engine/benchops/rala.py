"""``rala`` (RAVLT's rank-augmented linear attention): ``elu + 1`` features, a query-context softmax that
reweights the keys, 2-D RoPE on the numerator, the ``d x d`` linear-attention state with its normaliser, and the
output rank augmentation ``(attn + lepe) * gate``.

Inputs, as RAVLT's ``qkvo`` projection and LePE convolution hand them over: a packed ``qkv``
``(B, N, 3, heads, d)``, the raw gate ``o`` and the LePE output (the op's ``residual``), each ``(B, N, heads, d)``;
gradients w.r.t. all three. The stage's RoPE tables ``(N, d)`` (built as the official ``RoPE`` module builds
them, in the input dtype) are constants. Output ``(B, N, heads, d)``.

Candidates:

* ``official`` -- ``GateLinearAttentionNoSilu.forward`` of qhfan/RALA (``classfication/RALA.py``) between its
  ``qkvo`` / ``lepe`` convolutions and ``proj``: NCHW views of the inputs (free ``permute``), einops
  ``b (m n d) h w -> m b n (h w) d`` (as the view / permute it performs), ``elu + 1``, ``q.mean``, ``softmax(scale * q_mean @ k^T)``, ``k * eff * L``,
  ``theta_shift`` of q and k, ``z = 1 / (q @ k.mean^T + 1e-6)``, ``kv = (k_rope^T L^-0.5) @ (v L^-0.5)``,
  ``q_rope @ kv * z``, rearrange back, ``+ lepe``, ``* o``.
* ``fbla`` -- fla-org/flash-bidirectional-linear-attention (``flash_bla``) when it is importable (CUDA): the
  feature map, reweighting and RoPE in PyTorch as its ``RALALinearAttention`` layer does, then its fused Triton
  ``decoupled_la(q, k, q_rope, k_rope, v, scale=1/L)`` (numerator with the rotated features, normaliser with the
  plain ones), then ``+ lepe``, ``* o``.
* ``sdpa`` -- NOT the same function: full softmax attention ``softmax(q k^T / sqrt(d)) v`` over the same ``N``
  tokens (``F.scaled_dot_product_attention``, flash backend on CUDA) with the same ``(. + lepe) * o``
  epilogue -- the quadratic attention RAVLT's linear attention replaces (and what its stages 3-4 run). A
  reference point for the timings only: the table marks it ``unchecked`` (only its output / gradient shapes are
  compared), its speedup is against ``official`` all the same.
* ``reference`` / ``triton`` -- :func:`ops.rala` with that backend.

Cost (``T = B N heads d``, ``s`` the element size; the RoPE tables ``2 N d s``). Counted: the products
``qbar . phi(k)``, ``KV``, ``ksum``, the normaliser and ``R phi(q) KV``; not the element-wise work (``elu``,
RoPE, softmax, epilogue)::

    fwd FLOPs = B * heads * N * (4 d^2 + 6 d)
    bwd FLOPs = 2 * fwd                           (every product has two gradients; the d x d state is kept)
    fwd bytes = 6 T s + tables                    (read q, k, v, gate, residual; write o)
    bwd bytes = 11 T s + tables                   (read q, k, v, gate, residual, dO; write dq, dk, dv, dgate,
                                                   dresidual; the pre-gate value is recomputed)
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from zoo.engine.benchops import BenchInputs, OpBench, elem_size, packed_qkv
from zoo.engine.flops import OpCost

__all__ = ["BENCH", "RalaCase", "rala_cost", "rala_official", "rala_sdpa_softmax", "ravlt_rope"]


def rala_cost(batch: int, tokens: int, heads: int, head_dim: int, *, elem_size: int, rope: bool = True) -> OpCost:
    """Cost of ``ops.rala`` with a gate and a residual (module docstring)."""
    flops_fwd = batch * heads * tokens * (4 * head_dim * head_dim + 6 * head_dim)
    t = batch * tokens * heads * head_dim * elem_size
    tables = 2 * tokens * head_dim * elem_size if rope else 0
    return OpCost(flops_fwd=flops_fwd, flops_bwd=2 * flops_fwd, bytes_fwd=6 * t + tables, bytes_bwd=11 * t + tables)


@dataclass(frozen=True)
class RalaCase:
    """RALA over a ``height x width`` map (``N = H W`` tokens), ``heads`` of ``head_dim``, with (``rope``) or
    without the 2-D RoPE tables; always with the gate and the LePE residual (as in RAVLT)."""

    batch: int
    height: int
    width: int
    heads: int
    head_dim: int
    rope: bool = True

    @property
    def tokens(self) -> int:
        return self.height * self.width

    @property
    def label(self) -> str:
        return f"{self.batch}x{self.height}x{self.width}x{self.heads}x{self.head_dim}{'+rope' if self.rope else ''}"

    def cost(self, dtype: torch.dtype) -> OpCost:
        return rala_cost(self.batch, self.tokens, self.heads, self.head_dim, elem_size=elem_size(dtype),
                         rope=self.rope)


def _check_case(case: RalaCase) -> str | None:
    if case.rope and (case.head_dim % 4 or case.head_dim < 8):
        return f"RoPE needs head_dim a multiple of 4 and >= 8 (d / 4 frequencies), got {case.head_dim}"
    return None


def ravlt_rope(height: int, width: int, head_dim: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sin, cos)``, each ``(H W, d)`` fp32, as RAVLT's ``RoPE`` module: ``d / 4`` frequencies
    ``10000 ** -linspace(0, 1, d / 4)``, each repeated twice; the first ``d / 2`` channels turn with the row,
    the last ``d / 2`` with the column."""
    angle = (1.0 / 10000 ** torch.linspace(0, 1, head_dim // 4, device=device)).repeat_interleave(2)
    rows = torch.arange(height, device=device, dtype=torch.float32)[:, None] * angle  # (H, d/2)
    cols = torch.arange(width, device=device, dtype=torch.float32)[:, None] * angle  # (W, d/2)
    tables = []
    for fn in (torch.sin, torch.cos):
        t = torch.cat([fn(rows)[:, None, :].expand(height, width, -1), fn(cols)[None, :, :].expand(height, width, -1)],
                      dim=-1)
        tables.append(t.reshape(height * width, head_dim))
    return tables[0], tables[1]


def _make_inputs(case: RalaCase, device, dtype, grad: bool) -> BenchInputs:
    B, N, nh, d = case.batch, case.tokens, case.heads, case.head_dim
    qkv = packed_qkv((B, N, 3, nh, d), device, dtype, grad)
    gate = packed_qkv((B, N, nh, d), device, dtype, grad)
    residual = packed_qkv((B, N, nh, d), device, dtype, grad)
    rope = None
    if case.rope:
        rope = tuple(t.to(dtype) for t in ravlt_rope(case.height, case.width, d, device))
    return BenchInputs(leaves=[qkv, gate, residual], extra=dict(rope=rope))


def _rotate_every_two(x: torch.Tensor) -> torch.Tensor:
    return torch.stack([-x[..., 1::2], x[..., ::2]], dim=-1).flatten(-2)


def _theta_shift(x: torch.Tensor, rope) -> torch.Tensor:
    if rope is None:
        return x
    sin, cos = rope
    return x * cos + _rotate_every_two(x) * sin


def _nchw(t: torch.Tensor, case: RalaCase) -> torch.Tensor:
    """(B, N, ..., ) channels-last -> a (B, C, H, W) view, no copy (the official module's layout)."""
    return t.reshape(case.batch, case.height, case.width, -1).permute(0, 3, 1, 2)


def rala_official(inp: BenchInputs, case: RalaCase) -> torch.Tensor:
    qkv, gate, residual = inp.leaves
    H, W, L = case.height, case.width, case.tokens
    # einops 'b (m n d) h w -> m b n (h w) d' (as view / permute: einops is not a dependency)
    q, k, v = _nchw(qkv, case).reshape(case.batch, 3, case.heads, case.head_dim, L).permute(1, 0, 2, 4, 3)
    q = F.elu(q) + 1.0
    k = F.elu(k) + 1.0
    q_mean = q.mean(dim=-2, keepdim=True)
    eff = case.head_dim ** -0.5 * q_mean @ k.transpose(-1, -2)
    eff = torch.softmax(eff, dim=-1).transpose(-1, -2)
    k = k * eff * L
    q_rope, k_rope = _theta_shift(q, inp.rope), _theta_shift(k, inp.rope)
    z = 1 / (q @ k.mean(dim=-2, keepdim=True).transpose(-2, -1) + 1e-6)
    kv = (k_rope.transpose(-2, -1) * (L ** -0.5)) @ (v * (L ** -0.5))
    res = q_rope @ kv * z
    res = res.transpose(-2, -1).reshape(case.batch, case.heads * case.head_dim, H, W)  # 'b n (h w) d -> b (n d) h w'
    res = (res + _nchw(residual, case)) * _nchw(gate, case)
    return res.permute(0, 2, 3, 1).reshape(case.batch, L, case.heads, case.head_dim)


def rala_fbla(inp: BenchInputs, case: RalaCase) -> torch.Tensor:
    from flash_bla.ops.linear_attn.decoupled import decoupled_la

    qkv, gate, residual = inp.leaves
    L = case.tokens
    q, k, v = qkv.permute(2, 0, 3, 1, 4)  # (B, heads, L, d)
    q = F.elu(q) + 1.0
    k = F.elu(k) + 1.0
    eff = torch.softmax(case.head_dim ** -0.5 * q.mean(dim=-2, keepdim=True) @ k.transpose(-1, -2), dim=-1)
    k = k * eff.transpose(-1, -2) * L
    q_rope, k_rope = _theta_shift(q, inp.rope), _theta_shift(k, inp.rope)
    x = decoupled_la(q.contiguous(), k.contiguous(), q_rope.contiguous(), k_rope.contiguous(), v.contiguous(),
                     scale=L ** -1.0)
    return (x.transpose(1, 2) + residual) * gate


def _fbla_skip(device: torch.device, allow_interpret: bool, modes=()) -> str | None:
    if importlib.util.find_spec("flash_bla") is None:
        return ("flash-bidirectional-linear-attention (import flash_bla; fla-org, optional) is not installed; "
                "pip install it from GitHub to time it")
    if device.type != "cuda":
        return "flash_bla's Triton kernels need CUDA"
    return None


def rala_sdpa_softmax(inp: BenchInputs, case: RalaCase) -> torch.Tensor:
    qkv, gate, residual = inp.leaves
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    x = F.scaled_dot_product_attention(q, k, v, scale=case.head_dim ** -0.5)
    return (x.transpose(1, 2) + residual) * gate


def _ours(backend: str):
    def run(inp: BenchInputs, case: RalaCase) -> torch.Tensor:
        import ops

        qkv, gate, residual = inp.leaves
        q, k, v = qkv.unbind(2)
        return ops.rala(q, k, v, gate=gate, residual=residual, rope=inp.rope, backend=backend)

    return run


def _ravlt_s(batch: int, img: int) -> list[RalaCase]:
    """RAVLT-S's RALA stages (1-2: 64 / 128 channels, 1 / 2 heads of 64; stages 3-4 are softmax attention) at
    img x img (strides 4, 8)."""
    return [RalaCase(batch, img // 4, img // 4, 1, 64), RalaCase(batch, img // 8, img // 8, 2, 64)]


# ravlt_s_224: ImageNet training, batch 128 per GPU (the official recipe). ravlt_s_1024: the same stages at 1024x1024
# (256x256 and 128x128 maps: 65536 / 16384 tokens), batch 2 -- where linear attention pays (the sdpa reference point
# is quadratic in N). tiny: CPU sizes, odd token counts, one case without RoPE.
BENCH = OpBench(
    name="rala",
    presets={
        "ravlt_s_224": _ravlt_s(128, 224),
        "ravlt_s_1024": _ravlt_s(2, 1024),
        "tiny": [RalaCase(2, 5, 7, 2, 16), RalaCase(1, 9, 11, 1, 8, rope=False)],
    },
    candidates={"official": rala_official, "fbla": rala_fbla, "sdpa": rala_sdpa_softmax,
                "reference": _ours("reference"), "triton": _ours("triton")},
    make_inputs=_make_inputs,
    case_type=RalaCase,
    shape_fields="B,H,W,heads,D",
    check_case=_check_case,
    skip_reasons={"fbla": _fbla_skip},
    unchecked={"sdpa": "NOT the same function: full softmax attention over the same N tokens (+ lepe, * gate), a "
                       "timing reference point; only output / gradient shapes are compared"},
)
