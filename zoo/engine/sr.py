"""Super-resolution evaluation: PSNR / SSIM as BasicSR computes them, and padded / tiled inference as HAT's tester.

Metrics (BasicSR ``basicsr/metrics/psnr_ssim.py``: ``calculate_psnr`` / ``calculate_ssim``, which HAT's validation
calls with ``crop_border = scale`` and ``test_y_channel = True``):

1. Both images are quantised the way BasicSR's ``tensor2img`` turns network outputs into the uint8 images it
   scores: float32, clamp to [0, 1], times 255, round half to even (``quantize=False`` skips this, for images that are
   already exact multiples of 1/255).
2. ``crop_border`` pixels are removed on every side.
3. ``test_y_channel``: RGB -> ITU-R BT.601 luma on the [16, 235] scale,
   ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255`` for R, G, B in [0, 255] (BasicSR's ``bgr2ycbcr`` on its
   BGR images; one-channel images are used as they are).
4. PSNR = 10 log10(255^2 / MSE) over all remaining pixels and channels (inf for identical images);
   SSIM (Wang et al. 2004) per channel with an 11x11 Gaussian window (sigma 1.5, normalised), 'valid' filtering
   (no padding: the map is 10 pixels smaller per side), C1 = (0.01 * 255)^2, C2 = (0.03 * 255)^2, population
   (biased) variances, the mean of the map, averaged over channels.

Everything is computed in float64 on tensors of shape ``(B, C, H, W)`` (or ``(C, H, W)``) with values in [0, 1],
returning one value per image, except where BasicSR itself rounds to float32 (``tensor2img``, the [0, 1] scaling
before the luma), which is mirrored. Measured against BasicSR's own ``calculate_psnr`` / ``calculate_ssim`` (with
OpenCV) on scikit-image's photographs at x2 / x3 / x4: |dPSNR| <= 1e-12 dB, |dSSIM| <= 1e-12
(see tests/engine/test_sr.py).

Inference (HAT's ``HATModel.pre_process`` / ``tile_process`` / ``post_process``):

* :func:`sr_inference` reflect-pads the right / bottom of the LR input to a multiple of the window;
* :func:`tiled_forward` runs the model on ``tile x tile`` pieces of the input, each read with ``overlap`` extra
  pixels of context on every side (clipped at the image border), and pastes the centre of each output: a model
  whose receptive field reaches at most ``overlap`` pixels gives exactly the untiled output; beyond that (HAT's
  field is global in depth) pieces differ slightly at tile seams, as in the official tile mode;
* :func:`sr_inference` chains them: pad, forward (whole or tiled), crop ``scale * pad`` back off.

:func:`evaluate_sr` scores a model on a loader of ``(lr, hr)`` pairs (what training validates with and ``eval.py
--task sr`` reports): the mean over images of PSNR / SSIM, BasicSR's averaging.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from zoo.errors import InputError
from zoo.layers.backbone import pad_to_multiple

__all__ = [
    "Bicubic", "bt601_luma", "evaluate_sr", "psnr", "quantize", "sr_inference", "sr_metrics", "ssim",
    "ssim_window", "tiled_forward",
]

# ITU-R BT.601 luma for R, G, B in [0, 255], on the [16, 235] scale (BasicSR / MATLAB rgb2ycbcr).
_LUMA = (65.481, 128.553, 24.966)
_SSIM_SIZE, _SSIM_SIGMA = 11, 1.5


def _as_batch(img: torch.Tensor, name: str) -> torch.Tensor:
    if img.dim() == 3:
        img = img[None]
    if img.dim() != 4:
        raise ValueError(f"{name} must be (B, C, H, W) or (C, H, W), got shape {tuple(img.shape)}")
    return img


def quantize(img: torch.Tensor) -> torch.Tensor:
    """[0, 1] image -> float64 values in {0, ..., 255}: BasicSR's ``tensor2img`` (to float32, clamp, x255, round half
    to even -- in float32, as there, so values next to a half step round the same way)."""
    return (img.float().clamp(0, 1) * 255.0).round().double()


def bt601_luma(img255: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` RGB in [0, 255] -> ``(B, 1, H, W)`` luma Y in [16, 235] (float64).

    Step for step BasicSR's ``to_y_channel`` / ``bgr2ycbcr(y_only=True)``, float32 roundings included: the image
    is scaled to [0, 1] in float32 (``img.astype(np.float32) / 255.``), weighted in float64 in B, G, R order plus
    16, divided by 255 and stored as float32 (``_convert_output_type_range``), then multiplied by 255 in float32.
    """
    x = (img255.float() / 255.0).double()
    y = x[:, 2] * _LUMA[2] + x[:, 1] * _LUMA[1] + x[:, 0] * _LUMA[0] + 16.0
    return ((y / 255.0).float() * 255.0).double()[:, None]


def _prepare(sr: torch.Tensor, hr: torch.Tensor, crop_border: int, test_y_channel: bool,
             quantize_input: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    sr, hr = _as_batch(sr, "sr"), _as_batch(hr, "hr")
    if sr.shape != hr.shape:
        raise ValueError(f"sr and hr must have one shape, got {tuple(sr.shape)} and {tuple(hr.shape)}")
    if crop_border < 0 or 2 * crop_border >= min(sr.shape[-2:]):
        raise ValueError(f"crop_border {crop_border} must be >= 0 and leave pixels of a {sr.shape[-2]}x{sr.shape[-1]} "
                         f"image")
    out = []
    for img in (sr, hr):
        img = quantize(img) if quantize_input else img.double() * 255.0
        if crop_border:
            img = img[..., crop_border:-crop_border, crop_border:-crop_border]
        if test_y_channel and img.shape[1] == 3:
            img = bt601_luma(img)
        out.append(img)
    return out[0], out[1]


def psnr(sr: torch.Tensor, hr: torch.Tensor, crop_border: int = 0, test_y_channel: bool = True,
         quantize_input: bool = True) -> torch.Tensor:
    """PSNR in dB per image (``(B,)`` float64), BasicSR's ``calculate_psnr`` (see the module docstring)."""
    a, b = _prepare(sr, hr, crop_border, test_y_channel, quantize_input)
    mse = (a - b).square().mean(dim=(1, 2, 3))
    return torch.where(mse == 0, torch.full_like(mse, math.inf), 10.0 * torch.log10(255.0 ** 2 / mse))


def ssim_window(dtype: torch.dtype = torch.float64, device: Optional[torch.device] = None) -> torch.Tensor:
    """The normalised 11x11 Gaussian (sigma 1.5) of SSIM: the outer product of OpenCV's getGaussianKernel(11, 1.5)."""
    x = torch.arange(_SSIM_SIZE, dtype=torch.float64) - (_SSIM_SIZE - 1) / 2
    g = torch.exp(-x.square() / (2 * _SSIM_SIGMA ** 2))
    g = g / g.sum()
    return torch.outer(g, g).to(dtype=dtype, device=device)


def ssim(sr: torch.Tensor, hr: torch.Tensor, crop_border: int = 0, test_y_channel: bool = True,
         quantize_input: bool = True) -> torch.Tensor:
    """SSIM per image (``(B,)`` float64), BasicSR's ``calculate_ssim`` (see the module docstring)."""
    a, b = _prepare(sr, hr, crop_border, test_y_channel, quantize_input)
    if min(a.shape[-2:]) < _SSIM_SIZE:
        raise ValueError(f"SSIM needs at least {_SSIM_SIZE}x{_SSIM_SIZE} pixels after the border crop, got "
                         f"{a.shape[-2]}x{a.shape[-1]}")
    c = a.shape[1]
    window = ssim_window(device=a.device).expand(c, 1, _SSIM_SIZE, _SSIM_SIZE)

    def filt(t: torch.Tensor) -> torch.Tensor:  # 'valid' Gaussian filtering, channel by channel
        return F.conv2d(t, window, groups=c)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu1, mu2 = filt(a), filt(b)
    mu1_sq, mu2_sq, mu12 = mu1.square(), mu2.square(), mu1 * mu2
    sigma1_sq = filt(a * a) - mu1_sq
    sigma2_sq = filt(b * b) - mu2_sq
    sigma12 = filt(a * b) - mu12
    ssim_map = ((2 * mu12 + c1) * (2 * sigma12 + c2)) / ((mu1_sq + mu2_sq + c1) * (sigma1_sq + sigma2_sq + c2))
    return ssim_map.mean(dim=(2, 3)).mean(dim=1)


def sr_metrics(sr: torch.Tensor, hr: torch.Tensor, scale: int, test_y_channel: bool = True) -> Dict[str, torch.Tensor]:
    """``{'psnr': (B,), 'ssim': (B,)}`` with the border crop equal to the scale (as HAT / BasicSR score test sets)."""
    return dict(psnr=psnr(sr, hr, scale, test_y_channel), ssim=ssim(sr, hr, scale, test_y_channel))


@torch.no_grad()
def tiled_forward(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, scale: int, tile: int,
                  overlap: int = 32) -> torch.Tensor:
    """``model(x)`` computed tile by tile (HAT's official ``tile_process``), for inputs too large for memory.

    The input is cut into ``tile x tile`` pieces from the top-left (the last row / column may be smaller); each is
    run with ``overlap`` pixels of context on every side (clipped at the image border) and the output of its own
    area is pasted into the result, without blending. Exactly the untiled output when the model's receptive field
    reaches at most ``overlap`` input pixels, or when one tile covers the image.
    """
    if tile < 1 or overlap < 0:
        raise InputError(f"tile must be >= 1 and overlap >= 0, got tile={tile}, overlap={overlap}")
    x = _as_batch(x, "x")
    b, c, h, w = x.shape
    out = None
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            py0, px0 = max(y0 - overlap, 0), max(x0 - overlap, 0)
            py1, px1 = min(y1 + overlap, h), min(x1 + overlap, w)
            piece = model(x[..., py0:py1, px0:px1])
            if out is None:
                out = piece.new_zeros(b, piece.shape[1], h * scale, w * scale)
            expected = ((py1 - py0) * scale, (px1 - px0) * scale)
            if tuple(piece.shape[-2:]) != expected:
                raise ValueError(f"model output {tuple(piece.shape[-2:])} for a {py1 - py0}x{px1 - px0} tile is not "
                                 f"scale={scale} times its size {expected}")
            oy, ox = (y0 - py0) * scale, (x0 - px0) * scale
            out[..., y0 * scale:y1 * scale, x0 * scale:x1 * scale] = \
                piece[..., oy:oy + (y1 - y0) * scale, ox:ox + (x1 - x0) * scale]
    return out


@torch.no_grad()
def sr_inference(model: Callable[[torch.Tensor], torch.Tensor], lr: torch.Tensor, scale: int,
                 window_size: int = 1, tile: Optional[int] = None, overlap: int = 32) -> torch.Tensor:
    """HAT's test procedure: reflect-pad ``lr`` to a multiple of ``window_size``, run the model (tiled when
    ``tile`` is given), crop the output back to ``scale * (H, W)``.

    The zoo's HAT pads internally too, so ``window_size=1`` gives the same result for it; the padding here is for
    tiles (pass multiples of the window for ``tile`` and ``overlap``, as the official tile mode asks) and for
    models that require window multiples.
    """
    if window_size < 1:
        raise InputError(f"window_size must be >= 1, got {window_size}")
    lr = _as_batch(lr, "lr")
    h, w = lr.shape[-2:]
    x = pad_to_multiple(lr, window_size, mode="reflect")
    out = tiled_forward(model, x, scale, tile, overlap) if tile else model(x)
    return out[..., :h * scale, :w * scale]


@torch.no_grad()
def evaluate_sr(model: torch.nn.Module, loader, device, *, scale: int, tile: Optional[int] = None, overlap: int = 32,
                window_size: int = 1, test_y_channel: bool = True, env=None, amp: Optional[str] = None,
                progress: bool = False) -> Dict[str, float]:
    """``{'psnr', 'ssim', 'count'}``: mean PSNR (dB) / SSIM over the images of `loader` (``(lr, hr)`` batches), border
    crop = `scale`, on Y by default; :func:`sr_inference` (tiled with `tile`). Under several processes (`env`) each
    process passes its own part of the data; the sums are reduced, so the means are those of the whole set."""
    from tqdm.auto import tqdm

    from zoo.engine.distributed import all_reduce_sum
    from zoo.engine.setup import autocast

    device = torch.device(device)
    was_training = model.training
    model.eval()
    psnr_sum = ssim_sum = 0.0
    count = 0
    try:
        for lr, hr in tqdm(loader, desc="eval", leave=False, disable=not progress):
            lr = lr.to(device)
            with autocast(device, amp):
                out = sr_inference(model, lr, scale, window_size=window_size, tile=tile, overlap=overlap)
            out, hr = out.float().cpu(), hr.float()
            if out.shape != hr.shape:
                raise ValueError(f"model output {tuple(out.shape)} does not match the HR image {tuple(hr.shape)} "
                                 f"(scale {scale}: is this a x{scale} model?)")
            m = sr_metrics(out, hr, scale, test_y_channel)
            psnr_sum += m["psnr"].sum().item()
            ssim_sum += m["ssim"].sum().item()
            count += hr.shape[0]
    finally:
        model.train(was_training)
    if env is not None and env.distributed:
        psnr_sum, ssim_sum, count = all_reduce_sum([psnr_sum, ssim_sum, count], env, device)
        count = int(count)
    if count == 0:
        raise InputError("SR evaluation got no images")
    return {"psnr": psnr_sum / count, "ssim": ssim_sum / count, "count": count}


class Bicubic(torch.nn.Module):
    """The bicubic baseline: MATLAB-style bicubic upscaling (:func:`zoo.data.sr.imresize`) as a model."""

    def __init__(self, scale: int):
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from zoo.data.sr import imresize

        out = torch.stack([imresize(img.double().cpu(), self.scale) for img in x])
        return out.to(device=x.device, dtype=x.dtype)

