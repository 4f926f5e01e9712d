"""2-D neighborhood attention in plain PyTorch: the specification, the CPU path and the test oracle.

``q, k, v``: ``(B, H, W, heads, D)``. Every query attends to exactly ``kh x kw`` keys around it; the semantics
are those of NATTEN <= 0.17 (``natten2dqkrpb`` / ``natten2dav``), which the official NAT / DiNAT models were
trained with. Per axis (length ``L``, kernel ``k`` (odd), dilation ``d``, ``n = k // 2``), for query index ``i``:

* dilation group ``g = i mod d``, group-local index ``ip = i div d``; the group holds the indices
  ``g, g + d, g + 2d, ...``, i.e. ``Lg = ceil((L - g) / d)`` of them (groups differ in length when ``d`` does not
  divide ``L``);
* group-local window start ``s = clamp(ip - n, 0, Lg - k)``: the window is centred on the query and shifted
  inward at the borders -- nothing is padded or masked, every query sees exactly ``k`` keys of its own group,
  the key indices ``(s + a) * d + g`` for ``a = 0 .. k - 1``;
* relative-position-bias index ``(s + a) - ip + (k - 1)`` in ``[0, 2k - 2]`` (NATTEN's ``get_pb_start`` + ``a``).

The 2-D neighbourhood is the product of the two axes, and the logits are
``scale * <q, k> + rpb[h, bias_y, bias_x]`` with an ``rpb`` table of shape ``(heads, 2kh - 1, 2kw - 1)``.
This needs ``L >= k * d`` on both axes (every group at least ``k`` long); smaller maps are the model's business
(NATTEN 0.14's module zero-pads the input before its qkv projection, see ``zoo.models.nat``).

The implementation gathers each query's ``kh x kw`` keys and values with index tensors computed per axis
(no loop over pixels) and materialises the ``(B, H, W, heads, kh * kw)`` logits: fine for a CPU path and an
oracle, not what the Triton kernels do.
"""
from __future__ import annotations

import torch

from ops._utils import no_autocast

__all__ = ["neighborhood_attention_2d_reference", "neighborhood_indices"]


def neighborhood_indices(length: int, kernel: int, dilation: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(keys, bias)``, each ``(length, kernel)`` int64: the key indices of every query along one axis and the
    matching relative-position-bias indices (see the module docstring)."""
    i = torch.arange(length, device=device)
    g, ip = i % dilation, i // dilation
    group_len = (length - g + dilation - 1) // dilation
    start = torch.minimum((ip - kernel // 2).clamp_min(0), group_len - kernel)
    local = start[:, None] + torch.arange(kernel, device=device)[None, :]
    return local * dilation + g[:, None], local - ip[:, None] + (kernel - 1)


def neighborhood_attention_2d_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kernel_size: tuple[int, int],
    dilation: tuple[int, int],
    rpb: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    with no_autocast(q.device):
        return _neighborhood_attention(q, k, v, kernel_size, dilation, rpb, scale)


def _neighborhood_attention(q, k, v, kernel_size, dilation, rpb, scale) -> torch.Tensor:
    B, H, W, nh, D = q.shape
    kh, kw = kernel_size
    scale = D ** -0.5 if scale is None else scale
    key_y, bias_y = neighborhood_indices(H, kh, dilation[0], q.device)  # (H, kh)
    key_x, bias_x = neighborhood_indices(W, kw, dilation[1], q.device)  # (W, kw)
    # (H, W, kh, kw) index grids: query (y, x), neighbour (a, b)
    rows = key_y[:, None, :, None].expand(H, W, kh, kw)
    cols = key_x[None, :, None, :].expand(H, W, kh, kw)

    def neighbours(t: torch.Tensor) -> torch.Tensor:  # (B, H, W, nh, D) -> (B, H, W, nh, kh*kw, D), fp32
        t = t.float()[:, rows, cols]  # (B, H, W, kh, kw, nh, D)
        return t.flatten(3, 4).transpose(3, 4)

    attn = torch.einsum("bhwnd,bhwnkd->bhwnk", q.float() * scale, neighbours(k))
    if rpb is not None:
        bias = rpb.float()[:, bias_y[:, None, :, None], bias_x[None, :, None, :]]  # (nh, H, W, kh, kw)
        attn = attn + bias.flatten(3, 4).permute(1, 2, 0, 3)[None]
    out = torch.einsum("bhwnk,bhwnkd->bhwnd", attn.softmax(dim=-1), neighbours(v))
    return out.to(q.dtype)
