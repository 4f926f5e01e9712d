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

The implementation gathers each query's ``kh x kw`` keys and values by flat token index (``index_select`` on a
``(B * heads, H * W, D)`` layout) and computes the logits, the softmax over the neighbourhood and the weighted sum
exactly as written above, in fp32 (fp64 stays fp64). It walks the map in bands of query rows, so the gathered
neighbourhoods (``kh * kw`` copies of k and v) exist one band at a time, about 8 MB each, never for the whole map:
on the CPU a fresh whole-map gather costs more in page faults than in arithmetic (at DiNAT-T stage shapes,
batch 1, one thread: forward 1.6-2.0x, forward + backward 1.8-2.7x the official whole-map gather;
``benchmarks/results/cpu_vs_official_2026-12-07.md``). The
backward is written out (:class:`NeighborhoodAttentionFunction`): it keeps the softmax weights of the forward,
re-gathers each band's keys and values, and scatter-adds the key / value / bias gradients with ``index_add_``
(``dS = P * (dP - sum(P * dP))``, ``dq = dS k``, ``dk += dS^T q``, ``dv += P^T dO``, ``drpb += sum dS``); the
op tests check it against autograd of a naive fp64 per-pixel loop.
"""
from __future__ import annotations

import torch

from ops._utils import no_autocast

__all__ = ["NeighborhoodAttentionFunction", "neighborhood_attention_2d_reference", "neighborhood_indices"]

# bytes of one band's gathered keys (or values): small enough to stay in cache and in the allocator's reused heap
BAND_BYTES = 8 << 20


def neighborhood_indices(length: int, kernel: int, dilation: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(keys, bias)``, each ``(length, kernel)`` int64: the key indices of every query along one axis and the
    matching relative-position-bias indices (see the module docstring)."""
    i = torch.arange(length, device=device)
    g, ip = i % dilation, i // dilation
    group_len = (length - g + dilation - 1) // dilation
    start = torch.minimum((ip - kernel // 2).clamp_min(0), group_len - kernel)
    local = start[:, None] + torch.arange(kernel, device=device)[None, :]
    return local * dilation + g[:, None], local - ip[:, None] + (kernel - 1)


def _flat_indices(height: int, width: int, kernel: tuple[int, int], dilation: tuple[int, int],
                  device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(keys, bias)``, each ``(H * W, kh * kw)`` int64: every query's neighbours as row-major token indices and
    their entries in the flattened ``(2kh - 1) * (2kw - 1)`` bias table, neighbours in ``(a, b)`` row-major order."""
    (kh, kw), (dh, dw) = kernel, dilation
    key_y, bias_y = neighborhood_indices(height, kh, dh, device)
    key_x, bias_x = neighborhood_indices(width, kw, dw, device)
    keys = key_y[:, None, :, None] * width + key_x[None, :, None, :]
    bias = bias_y[:, None, :, None] * (2 * kw - 1) + bias_x[None, :, None, :]
    return keys.reshape(height * width, kh * kw), bias.reshape(height * width, kh * kw)


def _bands(height: int, width: int, band_elems: int) -> list[tuple[int, int]]:
    """Token ranges ``[start, end)`` of whole query rows whose gathered neighbourhoods hold about ``BAND_BYTES``
    (``band_elems`` bytes per query)."""
    rows = max(1, BAND_BYTES // max(1, width * band_elems))
    return [(y * width, min(height, y + rows) * width) for y in range(0, height, rows)]


class NeighborhoodAttentionFunction(torch.autograd.Function):
    """Neighbourhood attention on the ``(B * heads, N, D)`` layout with a written-out backward.

    ``q`` is already scaled; ``table`` is the ``(heads, (2kh - 1) * (2kw - 1))`` bias table or None; ``keys`` /
    ``bias`` from :func:`_flat_indices`; ``bands`` from :func:`_bands`; ``heads`` splits the leading dimension
    ``B * heads`` (batch-major) for the bias. Returns ``(B * heads, N, D)``.
    """

    @staticmethod
    def forward(ctx, q, k, v, table, keys, bias, bands, heads):
        BH, N, D = q.shape
        kk = keys.shape[1]
        out = torch.empty_like(q)
        probs = q.new_empty(BH, N, kk)
        for s, e in bands:
            n, idx = e - s, keys[s:e].reshape(-1)
            k_nb = k.index_select(1, idx).view(BH, n, kk, D)
            logits = (q[:, s:e, None, :] @ k_nb.transpose(-1, -2)).view(BH, n, kk)
            if table is not None:
                logits = (logits.view(-1, heads, n, kk) + table[:, bias[s:e]]).view(BH, n, kk)
            p = logits.softmax(dim=-1)
            probs[:, s:e] = p
            v_nb = v.index_select(1, idx).view(BH, n, kk, D)
            out[:, s:e] = (p[:, :, None, :] @ v_nb).view(BH, n, D)
        ctx.save_for_backward(q, k, v, table, keys, bias, probs)
        ctx.bands, ctx.heads = bands, heads
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, table, keys, bias, probs = ctx.saved_tensors
        heads = ctx.heads
        BH, N, D = q.shape
        kk = keys.shape[1]
        dout = dout.contiguous()
        need_q, need_k, need_v, need_table = ctx.needs_input_grad[:4]
        dq = torch.empty_like(q) if need_q else None
        dk = torch.zeros_like(k) if need_k else None
        dv = torch.zeros_like(v) if need_v else None
        dtable = torch.zeros_like(table) if need_table else None
        for s, e in ctx.bands:
            n, idx = e - s, keys[s:e].reshape(-1)
            p, do = probs[:, s:e], dout[:, s:e, None, :]  # (BH, n, kk), (BH, n, 1, D)
            v_nb = v.index_select(1, idx).view(BH, n, kk, D)
            dp = (do @ v_nb.transpose(-1, -2)).view(BH, n, kk)
            ds = p * (dp - (p * dp).sum(dim=-1, keepdim=True))  # softmax backward
            if need_v:
                dv.index_add_(1, idx, (p[..., None] @ do).view(BH, n * kk, D))
            if need_table:
                dtable.index_add_(1, bias[s:e].reshape(-1), ds.view(-1, heads, n * kk).sum(dim=0))
            if need_q:
                k_nb = k.index_select(1, idx).view(BH, n, kk, D)
                dq[:, s:e] = (ds[:, :, None, :] @ k_nb).view(BH, n, D)
            if need_k:
                dk.index_add_(1, idx, (ds[..., None] @ q[:, s:e, None, :]).view(BH, n * kk, D))
        return dq, dk, dv, dtable, None, None, None, None


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
    dtype = q.dtype
    scale = D ** -0.5 if scale is None else scale
    acc = torch.promote_types(dtype, torch.float32)  # fp32 accumulation; fp64 stays fp64
    keys, bias = _flat_indices(H, W, tuple(kernel_size), tuple(dilation), q.device)

    def heads_major(t: torch.Tensor) -> torch.Tensor:  # (B, H, W, nh, D) -> (B * nh, H * W, D), contiguous
        return t.permute(0, 3, 1, 2, 4).reshape(B * nh, H * W, D)

    q = heads_major(q.to(acc) * scale)
    table = None if rpb is None else rpb.to(acc).reshape(nh, -1)
    bands = _bands(H, W, B * nh * keys.shape[1] * D * q.element_size())
    out = NeighborhoodAttentionFunction.apply(q, heads_major(k.to(acc)), heads_major(v.to(acc)), table, keys, bias,
                                              bands, nh)
    return out.view(B, nh, H, W, D).permute(0, 2, 3, 1, 4).to(dtype)
