"""Super-resolution evaluation (`zoo.engine.sr`): BasicSR's PSNR / SSIM checked against scikit-image on real
photographs, and padded / tiled inference checked against untiled inference.

The independent implementation is scikit-image (``skimage.metrics.peak_signal_noise_ratio`` /
``structural_similarity`` with BasicSR's settings: ``data_range=255``, Gaussian weights, sigma 1.5, an 11x11
window, population covariances; luma from ``skimage.color.rgb2ycbcr``) on its bundled photographs (astronaut,
chelsea, coffee: real images, no download), each turned into an HR / SR pair by bicubic down- and up-sampling, the
SR image quantised with NumPy as BasicSR's ``tensor2img`` does; they agree to the float32 rounding BasicSR applies
to the luma (observed <= 3.2e-7 dB, 7.8e-9 SSIM). BasicSR's own functions (with OpenCV, not project dependencies)
were run once outside the suite on seeded noisy versions of the photographs: the values are pinned in
``BASICSR`` and reproduced to 7e-15 dB / 5e-14.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from skimage import color, data, metrics

import timm
import zoo  # noqa: F401
from zoo.engine.sr import bt601_luma, psnr, quantize, sr_inference, sr_metrics, ssim, tiled_forward
from zoo.layers.backbone import pad_to_multiple

pytestmark = pytest.mark.usefixtures("one_thread")

PHOTOS = ("astronaut", "chelsea", "coffee")


def _pair(name: str, scale: int):
    """(HR uint8 HWC cropped to a multiple of the scale, its float32 tensor (1, 3, H, W) in [0, 1], and SR:
    bicubic down- and up-sampling by the scale)."""
    hr = getattr(data, name)()[:240, :320]  # a real crop, small enough for a fast test
    h, w = hr.shape[0] // scale * scale, hr.shape[1] // scale * scale
    hr = hr[:h, :w]
    hr_t = torch.from_numpy(hr).permute(2, 0, 1)[None].float() / 255.0  # float32, as a network's output
    lr = F.interpolate(hr_t, scale_factor=1 / scale, mode="bicubic", antialias=True, align_corners=False)
    sr = F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False)
    return hr, hr_t, sr


def _skimage_side(hr: np.ndarray, sr: torch.Tensor, crop: int, y_channel: bool):
    sr_f32 = np.clip(sr[0].permute(1, 2, 0).float().numpy(), 0, 1)
    sr_u8 = np.round(sr_f32 * np.float32(255.0)).astype(np.uint8)  # tensor2img: float32, clamp, x255, round
    a, b = hr[crop:-crop, crop:-crop], sr_u8[crop:-crop, crop:-crop]
    if y_channel:
        return color.rgb2ycbcr(a)[..., 0], color.rgb2ycbcr(b)[..., 0]
    return a.astype(np.float64), b.astype(np.float64)


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("name", PHOTOS)
def test_y_channel_metrics_match_scikit_image(name, scale):
    hr, hr_t, sr = _pair(name, scale)
    a, b = _skimage_side(hr, sr, scale, y_channel=True)
    want_psnr = metrics.peak_signal_noise_ratio(a, b, data_range=255)
    want_ssim = metrics.structural_similarity(a, b, data_range=255, gaussian_weights=True, sigma=1.5,
                                              use_sample_covariance=False, win_size=11)
    got = sr_metrics(sr, hr_t, scale)
    # scikit-image forms the luma in float64; BasicSR (mirrored here) rounds it to float32 twice
    assert abs(got["psnr"].item() - want_psnr) < 1e-5, (got["psnr"].item(), want_psnr)
    assert abs(got["ssim"].item() - want_ssim) < 1e-7, (got["ssim"].item(), want_ssim)
    assert 20 < want_psnr < 40 and 0.5 < want_ssim < 1  # a real, imperfect reconstruction


def _noisy_pair(name: str):
    """(HR (1, 3, H, W) float32 from the uint8 photo crop, HR + 0.03 N(0, 1) noise): elementwise IEEE float32 ops on
    a seeded generator, so the pair is bit-identical on every machine (unlike resampling, whose vectorised sums
    may round differently) and the BasicSR values below stay valid."""
    hr = torch.from_numpy(getattr(data, name)()[:240, :320]).permute(2, 0, 1)[None].float() / 255.0
    noise = torch.randn(hr.shape, generator=torch.Generator().manual_seed(0))
    return hr, hr + 0.03 * noise


# BasicSR's own calculate_psnr / calculate_ssim (XPixelGroup/BasicSR @ 8d56e3a, basicsr/metrics/psnr_ssim.py with
# OpenCV 5.0.0; images through its tensor2img), test_y_channel=True, crop_border=scale, on `_noisy_pair` --
# measured once outside the suite (BasicSR and OpenCV are not project dependencies).
BASICSR = {
    ('astronaut', 2): (35.43131899512174, 0.8710777759742945),
    ('astronaut', 3): (35.43029255300563, 0.8714372512867984),
    ('astronaut', 4): (35.436450369913274, 0.8718401710839653),
    ('chelsea', 2): (35.26191704608586, 0.9055364086287492),
    ('chelsea', 4): (35.26584794331471, 0.9061359638807542),
    ('coffee', 3): (35.30725042294481, 0.8715831264441521),
}


@pytest.mark.parametrize("key", list(BASICSR), ids=lambda k: f"{k[0]}-x{k[1]}")
def test_y_channel_metrics_equal_basicsr(key):
    name, scale = key
    hr, sr = _noisy_pair(name)
    want_psnr, want_ssim = BASICSR[key]
    assert abs(psnr(sr, hr, scale).item() - want_psnr) < 1e-10
    assert abs(ssim(sr, hr, scale).item() - want_ssim) < 1e-12


@pytest.mark.parametrize("name", PHOTOS[1:])
def test_rgb_metrics_match_scikit_image(name):
    hr, hr_t, sr = _pair(name, 3)
    a, b = _skimage_side(hr, sr, 3, y_channel=False)
    want_psnr = metrics.peak_signal_noise_ratio(a, b, data_range=255)
    want_ssim = metrics.structural_similarity(a, b, data_range=255, gaussian_weights=True, sigma=1.5,
                                              use_sample_covariance=False, win_size=11, channel_axis=-1)
    assert abs(psnr(sr, hr_t, 3, test_y_channel=False).item() - want_psnr) < 1e-9
    assert abs(ssim(sr, hr_t, 3, test_y_channel=False).item() - want_ssim) < 1e-12


def test_batch_is_per_image():
    _, hr_t, sr = _pair("astronaut", 4)
    hr2, sr2 = hr_t.flip(-1), sr.flip(-1) * 0.9
    got = psnr(torch.cat([sr, sr2]), torch.cat([hr_t, hr2]), 4)
    assert got.shape == (2,)
    assert got[0] == psnr(sr, hr_t, 4)[0] and got[1] == psnr(sr2, hr2, 4)[0]


def test_known_values():
    hr = torch.zeros(1, 3, 20, 20)
    assert psnr(hr, hr, 2).item() == math.inf and ssim(hr, hr, 2).item() == 1.0
    sr = torch.full_like(hr, 1 / 255)
    # every channel off by one grey level: MSE 1 on the RGB scale; on Y the offset is 219 / 255 levels
    assert psnr(sr, hr, 0, test_y_channel=False).item() == pytest.approx(10 * math.log10(255**2), abs=1e-12)
    # (the luma passes through float32 as in BasicSR: ~1e-7 relative)
    assert psnr(sr, hr, 0).item() == pytest.approx(10 * math.log10(255**2 / (219 / 255) ** 2), abs=1e-5)
    assert bt601_luma(torch.full((1, 3, 1, 1), 255.0)).item() == pytest.approx(235.0, abs=1e-5)
    assert bt601_luma(torch.zeros(1, 3, 1, 1)).item() == 16.0


def test_quantize_is_tensor2img():
    x = torch.cat([torch.tensor([-0.1, 0.0, 0.999, 1.0, 1.2]), torch.rand(1000)])
    want = np.round(np.clip(x.float().numpy(), 0, 1) * np.float32(255.0)).astype(np.float64)
    assert np.array_equal(quantize(x).numpy(), want)


def test_metric_argument_errors():
    a = torch.rand(1, 3, 20, 20)
    with pytest.raises(ValueError, match="one shape"):
        psnr(a, a[..., :19])
    with pytest.raises(ValueError, match="crop_border 10 .* 20x20"):
        psnr(a, a, 10)
    with pytest.raises(ValueError, match="SSIM needs at least 11x11 .* 10x10"):
        ssim(a, a, 5)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\) or \(C, H, W\)"):
        psnr(a[0, 0], a[0, 0])


# --------------------------------------------------------------------------------------------------------------
# Padded and tiled inference


class LocalSR(nn.Module):
    """Three 3x3 convs then a pixel shuffle: each output pixel sees input pixels at most 3 away."""

    def __init__(self, scale: int):
        super().__init__()
        self.scale = scale
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.GELU(), nn.Conv2d(8, 8, 3, 1, 1), nn.GELU(),
                                  nn.Conv2d(8, 3 * scale * scale, 3, 1, 1), nn.PixelShuffle(scale))

    def forward(self, x):
        return self.body(x)


@pytest.mark.parametrize("size,tile,overlap", [((37, 50), 16, 3), ((32, 32), 8, 4), ((21, 9), 10, 5)])
def test_tiled_equals_untiled_within_the_receptive_field(size, tile, overlap):
    torch.manual_seed(0)
    model = LocalSR(3).double().eval()
    x = torch.rand(2, 3, *size, dtype=torch.float64)
    with torch.no_grad():
        want = model(x)
    got = tiled_forward(model, x, 3, tile, overlap)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_tiles_are_really_independent():
    """With less overlap than the receptive field the seams differ: the tiles do not see the whole image."""
    torch.manual_seed(0)
    model = LocalSR(2).double().eval()
    x = torch.rand(1, 3, 24, 24, dtype=torch.float64)
    with torch.no_grad():
        diff = (tiled_forward(model, x, 2, 8, 1) - model(x)).abs()
    assert diff.max() > 1e-6
    assert diff[..., :12, :12].max() < 1e-12  # the first tile's interior (<= 7 - 3 input px) is still exact


def _hat(**kwargs):
    torch.manual_seed(0)
    return timm.create_model("hat_s_x2", embed_dim=12, depths=(2,), num_heads=(2,), window_size=8,
                             compress_ratio=3, squeeze_factor=4, drop_path_rate=0.0, **kwargs).eval()


def test_hat_single_tile_and_padding_equal_untiled():
    """A tile that covers the image is the untiled forward; the tester's reflect padding is the model's own."""
    model = _hat()
    lr = torch.rand(1, 3, 13, 21)
    with torch.no_grad():
        want = model(lr)
    torch.testing.assert_close(sr_inference(model, lr, 2, window_size=8), want, rtol=0, atol=0)
    torch.testing.assert_close(sr_inference(model, lr, 2, window_size=8, tile=24, overlap=8), want, rtol=0, atol=0)
    tiled = sr_inference(model, lr, 2, window_size=8, tile=8, overlap=8)  # 2 x 3 tiles
    assert tiled.shape == want.shape == (1, 3, 26, 42) and torch.isfinite(tiled).all()


def test_pad_to_multiple_for_models_that_need_it():
    class NeedsMultiple(nn.Module):
        def forward(self, x):
            assert x.shape[-1] % 8 == 0 and x.shape[-2] % 8 == 0, x.shape
            return F.interpolate(x, scale_factor=2, mode="nearest")

    lr = torch.rand(1, 3, 13, 21)
    out = sr_inference(NeedsMultiple(), lr, 2, window_size=8)
    torch.testing.assert_close(out, F.interpolate(lr, scale_factor=2, mode="nearest"), rtol=0, atol=0)
    padded = pad_to_multiple(lr, 8, mode="reflect")
    assert padded.shape == (1, 3, 16, 24)
    torch.testing.assert_close(padded[..., 13:, :21], lr.flip(-2)[..., 1:4, :], rtol=0, atol=0)  # reflect
    with pytest.raises(ValueError, match="3x20 input cannot be reflect-padded to a multiple of 8"):
        sr_inference(NeedsMultiple(), torch.rand(1, 3, 3, 20), 2, window_size=8)
    with pytest.raises(ValueError, match="window_size must be >= 1, got 0"):
        sr_inference(NeedsMultiple(), lr, 2, window_size=0)


def test_tiled_forward_errors():
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match="tile must be >= 1"):
        tiled_forward(nn.Identity(), x, 1, 0)
    with pytest.raises(ValueError, match="not scale=2 times its size"):
        tiled_forward(nn.Identity(), x, 2, 4, 0)
