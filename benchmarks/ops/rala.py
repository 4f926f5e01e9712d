"""``rala`` (RAVLT's rank-augmented linear attention): ``elu + 1`` features, a query-context softmax that
reweights the keys, 2-D RoPE on the numerator, the ``d x d`` linear-attention state with its normaliser, and the
output rank augmentation ``(attn + lepe) * gate``.

Inputs, as RAVLT's ``qkvo`` projection and LePE convolution hand them over: a packed ``qkv``
``(B, N, 3, heads, d)``, the raw gate ``o`` and the LePE output (the op's ``residual``), each ``(B, N, heads, d)``;
gradients w.r.t. all three. The stage's RoPE tables ``(N, d)`` (:func:`ops.rala.official.rope_tables`, as the
official ``RoPE`` module builds them, in the input dtype) are constants. Output ``(B, N, heads, d)``.

Candidates:

* ``official`` -- :func:`ops.rala.official.rala_official` (``GateLinearAttentionNoSilu.forward`` of qhfan/RALA
  between its ``qkvo`` / ``lepe`` convolutions and ``proj``).
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

"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from benchmarks.harness import BenchInputs, OpBench, packed_qkv
from ops._cost import OpCost, elem_size
from ops.rala import official
from ops.rala.official import rala_cost, rope_tables, theta_shift

__all__ = ["BENCH", "RalaCase"]


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


def _make_inputs(case: RalaCase, device, dtype, grad: bool) -> BenchInputs:
    B, N, nh, d = case.batch, case.tokens, case.heads, case.head_dim
    qkv = packed_qkv((B, N, 3, nh, d), device, dtype, grad)
    gate = packed_qkv((B, N, nh, d), device, dtype, grad)
    residual = packed_qkv((B, N, nh, d), device, dtype, grad)
    rope = None
    if case.rope:
        rope = tuple(t.to(dtype) for t in rope_tables(case.height, case.width, d, device))
    return BenchInputs(leaves=[qkv, gate, residual], extra=dict(rope=rope))


def rala_official(inp: BenchInputs, case: RalaCase) -> torch.Tensor:
    qkv, gate, residual = inp.leaves
    return official.rala_official(*qkv.unbind(2), gate=gate, residual=residual, rope=inp.rope)


def rala_fbla(inp: BenchInputs, case: RalaCase) -> torch.Tensor:
    from flash_bla.ops.linear_attn.decoupled import decoupled_la

    qkv, gate, residual = inp.leaves
    L = case.tokens
    q, k, v = qkv.permute(2, 0, 3, 1, 4)  # (B, heads, L, d)
    q = F.elu(q) + 1.0
    k = F.elu(k) + 1.0
    eff = torch.softmax(case.head_dim ** -0.5 * q.mean(dim=-2, keepdim=True) @ k.transpose(-1, -2), dim=-1)
    k = k * eff.transpose(-1, -2) * L
    q_rope, k_rope = (q, k) if inp.rope is None else (theta_shift(q, *inp.rope), theta_shift(k, *inp.rope))
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
