"""`neighborhood_attention_2d`: NATTEN-style 2-D (dilated) neighborhood attention with relative position bias
(NAT, DiNAT)."""
from __future__ import annotations

import torch

from ops._backend import resolve_backend
from ops._checks import SPATIAL, check_qkv, check_shape, pair
from ops.neighborhood_attention.reference import neighborhood_attention_2d_reference, neighborhood_indices

__all__ = ["neighborhood_attention_2d", "neighborhood_indices"]

_OP = "neighborhood_attention_2d"


def _check(q, k, v, kernel_size, dilation, rpb) -> None:
    check_qkv(_OP, q, k, v, SPATIAL)
    for ks in kernel_size:
        if ks % 2 == 0:
            raise ValueError(f"{_OP}: kernel_size must be odd (NATTEN 0.14 semantics), got {kernel_size}")
    _, H, W, nh, _ = q.shape
    (kh, kw), (dh, dw) = kernel_size, dilation
    if H < kh * dh or W < kw * dw:
        raise ValueError(
            f"{_OP}: the feature map {H}x{W} is smaller than kernel_size x dilation = {kh * dh}x{kw * dw}; "
            f"every query needs kernel_size keys of its own dilation group. Pad the map first (NAT / DiNAT "
            f"zero-pad the block input to {max(H, kh * dh)}x{max(W, kw * dw)} before the qkv projection)"
        )
    check_shape(_OP, "rpb", rpb, (nh, 2 * kh - 1, 2 * kw - 1), "(heads, 2*kh-1, 2*kw-1)")


def neighborhood_attention_2d(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kernel_size: int | tuple[int, int],
    dilation: int | tuple[int, int] = 1,
    *,
    rpb: torch.Tensor | None = None,
    scale: float | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Softmax attention of every query over the ``kh x kw`` keys of its (dilated) neighbourhood.

    NATTEN 0.14 semantics, as the official NAT / DiNAT use them: windows are shifted inward at the borders (no
    padding, no masking: every query sees exactly ``kh * kw`` keys), dilation ``d`` splits each axis into ``d``
    interleaved groups that attend only within themselves (groups may differ in length when ``d`` does not
    divide the axis). See :mod:`ops.neighborhood_attention.reference` for the exact index formulas.

    Args:
        q, k, v: ``(B, H, W, heads, head_dim)`` with ``H >= kh * dh`` and ``W >= kw * dw``.
        kernel_size: odd ``k`` or ``(kh, kw)``.
        dilation: ``d`` or ``(dh, dw)``, default 1.
        rpb: optional relative position bias ``(heads, 2*kh-1, 2*kw-1)``; entry ``[h, ky - qy + kh - 1,
            kx - qx + kw - 1]`` (key minus query, in dilated steps) is added to the logit. Receives a gradient.
        scale: logit scale, default ``head_dim ** -0.5``.
        backend: ``'reference'`` or ``'triton'``; default from :mod:`ops._backend`.

    Returns:
        ``(B, H, W, heads, head_dim)`` in the dtype of ``q``.
    """
    kernel_size = pair(_OP, "kernel_size", kernel_size)
    dilation = pair(_OP, "dilation", dilation)
    _check(q, k, v, kernel_size, dilation, rpb)
    if resolve_backend(_OP, backend, q, k, v, rpb) == "reference":
        return neighborhood_attention_2d_reference(q, k, v, kernel_size, dilation, rpb, scale)
    from ops.neighborhood_attention.triton import neighborhood_attention_2d_triton

    return neighborhood_attention_2d_triton(q, k, v, kernel_size, dilation, rpb, scale)
