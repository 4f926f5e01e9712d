"""Super-resolution data: HR / LR image pairs as BasicSR's ``PairedImageDataset`` (which HAT trains with) makes them.

* :func:`imresize` -- MATLAB's ``imresize(img, scale, 'bicubic')`` with antialiasing (BasicSR's
  ``basicsr/utils/matlab_functions.py`` reproduces it; this is an independent, matrix-form implementation):
  cubic kernel a = -0.5, the kernel stretched by 1 / scale when downscaling, output pixel x (1-based) centred at
  input coordinate ``x / scale + 0.5 (1 - 1 / scale)``, weights normalised per output pixel, borders extended
  symmetrically (edge pixel repeated). Output size ``ceil(scale * size)``, values not rounded.
* :class:`SRPairs` -- pairs from one of three sources: paired folders (LR stem = ``filename_tmpl.format(HR stem)``,
  same extension, as ``paired_paths_from_folder``), an HR-only folder, or in-memory HR images (the embedded demo:
  scikit-image's bundled photographs, :func:`skimage_photos`). HR-only sources crop the HR to a multiple of the
  scale and make the LR with :func:`imresize` (``1 / scale``), as HAT's ``ImageNetPairedDataset``: unrounded for
  training, rounded to 8 bits for validation (what a saved benchmark LR image holds).
* Training items: a random ``gt_size`` HR crop and the matching ``gt_size / scale`` LR crop
  (``paired_random_crop``), then BasicSR's ``augment``: horizontal flip, vertical flip and transpose, each with
  probability 1/2 (flips only with ``use_hflip``, flip + transpose only with ``use_rot``). Randomness comes from
  Python's ``random`` (the engine seeds it per sample). Validation items: whole images, the HR cropped to
  ``scale x`` the LR size.

Items are ``(lr, hr)`` float32 tensors ``(3, h, w)`` / ``(3, scale h, scale w)`` in [0, 1], RGB.
"""
from __future__ import annotations

import functools
import math
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.utils.data

from zoo.data.images import open_rgb

__all__ = ["IMG_EXTENSIONS", "SKIMAGE_PHOTOS", "SRPairs", "imresize", "list_images", "paired_paths",
           "resize_matrix", "skimage_photos"]

IMG_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp")
# scikit-image's bundled colour photographs (no download needed)
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "hubble_deep_field", "immunohistochemistry", "retina", "rocket")


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's 'bicubic')."""
    ax = np.abs(x)
    ax2, ax3 = ax ** 2, ax ** 3
    return ((1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
            + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2)))


def _mirror(i: np.ndarray, n: int) -> np.ndarray:
    """Symmetric extension of 0-based indices into [0, n): -1 -> 0, n -> n - 1 (repeated for tiny n)."""
    period = 2 * n
    i = np.mod(i, period)
    return np.where(i < n, i, period - 1 - i)


@functools.lru_cache(maxsize=64)
def _resize_matrix_t(in_len: int, out_len: int, scale: float, antialiasing: bool) -> torch.Tensor:
    return torch.from_numpy(resize_matrix(in_len, out_len, scale, antialiasing))


def resize_matrix(in_len: int, out_len: int, scale: float, antialiasing: bool = True) -> np.ndarray:
    """``(out_len, in_len)`` float64 matrix of MATLAB's bicubic resampling along one axis (borders folded in)."""
    width = 4.0
    shrink = scale < 1 and antialiasing
    if shrink:
        width /= scale
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)  # 1-based input coordinate of each output pixel centre
    left = np.floor(u - width / 2)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps)[None, :]  # 1-based input pixels
    d = u[:, None] - idx
    w = scale * _cubic(d * scale) if shrink else _cubic(d)
    w = w / w.sum(axis=1, keepdims=True)
    m = np.zeros((out_len, in_len))
    rows = np.repeat(np.arange(out_len), taps)
    np.add.at(m, (rows, _mirror(idx.astype(np.int64).ravel() - 1, in_len)), w.ravel())
    return m


def imresize(img: torch.Tensor | np.ndarray, scale: float, antialiasing: bool = True) -> torch.Tensor:
    """MATLAB-style bicubic resize of a ``(C, H, W)`` (or ``(H, W)``) image by `scale` (e.g. ``1 / 4``), in float64,
    returned as float32 of size ``ceil(scale H) x ceil(scale W)`` (not clamped or rounded)."""
    t = torch.as_tensor(np.asarray(img) if isinstance(img, np.ndarray) else img).double()
    if scale <= 0:
        raise ValueError(f"imresize: scale must be positive, got {scale}")
    squeeze = t.dim() == 2
    if squeeze:
        t = t[None]
    if t.dim() != 3:
        raise ValueError(f"imresize: expected a (C, H, W) or (H, W) image, got shape {tuple(t.shape)}")
    h, w = t.shape[-2:]
    mh = _resize_matrix_t(h, math.ceil(h * scale - 1e-9), scale, antialiasing)
    mw = _resize_matrix_t(w, math.ceil(w * scale - 1e-9), scale, antialiasing)
    out = mh @ t @ mw.T
    return (out[0] if squeeze else out).float()


def list_images(folder: str | Path) -> list[Path]:
    """The image files directly inside `folder` (sorted), with a clear error when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {str(folder)!r} does not exist")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS)
    if not files:
        raise FileNotFoundError(f"image folder {str(folder)!r} holds no images ({', '.join(IMG_EXTENSIONS)})")
    return files


def paired_paths(hr_dir: str | Path, lr_dir: str | Path, filename_tmpl: str = "{}") -> list[tuple[Path, Path]]:
    """``(hr, lr)`` paths: each HR file ``stem.ext`` pairs with ``lr_dir / (filename_tmpl.format(stem) + ext)``
    (BasicSR's ``paired_paths_from_folder``); an HR image without its LR file is an error naming both."""
    lr_dir = Path(lr_dir)
    if not lr_dir.is_dir():
        raise FileNotFoundError(f"LR folder {str(lr_dir)!r} does not exist")
    pairs = []
    for hr in list_images(hr_dir):
        lr = lr_dir / f"{filename_tmpl.format(hr.stem)}{hr.suffix}"
        if not lr.is_file():
            raise FileNotFoundError(f"HR image {str(hr)!r} has no LR image {str(lr)!r} (sr.filename_tmpl "
                                    f"{filename_tmpl!r} maps HR stems to LR stems)")
        pairs.append((hr, lr))
    return pairs


def read_image(path: str | Path) -> torch.Tensor:
    """RGB ``(3, H, W)`` float32 in [0, 1] from an image file (grey / alpha converted to RGB, 16-bit scaled to 8;
    :func:`zoo.data.images.open_rgb`)."""
    return to_tensor(np.asarray(open_rgb(path)))


def to_tensor(arr: np.ndarray) -> torch.Tensor:
    """uint8 ``(H, W, 3)`` -> float32 ``(3, H, W)`` in [0, 1]."""
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) RGB image, got {arr.dtype} {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).float() / 255.0


def skimage_photos(names: Sequence[str]) -> list[torch.Tensor]:
    """scikit-image's bundled colour photographs as ``(3, H, W)`` tensors (no download)."""
    import skimage.data

    bad = [n for n in names if n not in SKIMAGE_PHOTOS]
    if bad:
        raise ValueError(f"unknown scikit-image photograph(s) {', '.join(map(repr, bad))}; bundled colour photographs: "
                         f"{', '.join(SKIMAGE_PHOTOS)}")
    return [to_tensor(getattr(skimage.data, n)()) for n in names]


def bicubic_lr(hr: torch.Tensor, scale: int, quantize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(LR, HR cropped to a multiple of `scale`): the LR by :func:`imresize` (``1 / scale``), clamped and rounded to
    8 bits when `quantize` (a saved LR image), else as computed."""
    h, w = hr.shape[-2:]
    hr = hr[..., :h - h % scale, :w - w % scale]
    lr = imresize(hr, 1 / scale)
    if quantize:
        lr = (lr.clamp(0, 1) * 255.0).round() / 255.0
    return lr, hr


class SRPairs(torch.utils.data.Dataset):
    """``(lr, hr)`` pairs for training (`gt_size` crops + augmentation) or validation (`gt_size` None: whole images).

    Give exactly one source: `hr_dir` (with `lr_dir` for paired folders, else bicubic LR) or `images` (HR tensors,
    bicubic LR; `names` label them). `length`: the number of items (cycling through the images, as BasicSR's
    enlarged sampler); default one per image.
    """

    def __init__(self, scale: int, *, hr_dir: str | Path | None = None, lr_dir: str | Path | None = None,
                 images: Sequence[torch.Tensor] | None = None, names: Sequence[str] | None = None,
                 filename_tmpl: str = "{}", gt_size: int | None = None, use_hflip: bool = True,
                 use_rot: bool = True, length: int | None = None):
        if scale < 1:
            raise ValueError(f"scale must be at least 1, got {scale}")
        if (hr_dir is None) == (images is None):
            raise ValueError("SRPairs: give exactly one of hr_dir (an image folder) or images (HR tensors)")
        if gt_size is not None and (gt_size < scale or gt_size % scale):
            raise ValueError(f"gt_size {gt_size} must be a positive multiple of the scale {scale}")
        self.scale, self.gt_size, self.use_hflip, self.use_rot = scale, gt_size, use_hflip, use_rot
        self.paired = lr_dir is not None
        if hr_dir is not None:
            if self.paired:
                self.items = paired_paths(hr_dir, lr_dir, filename_tmpl)
            else:
                self.items = [(p, None) for p in list_images(hr_dir)]
            self.names = [hr.name for hr, _ in self.items]
        else:
            if lr_dir is not None:
                raise ValueError("SRPairs: lr_dir pairs with hr_dir, not with images")
            self.items = [(img, None) for img in images]
            self.names = list(names) if names is not None else [f"image{i}" for i in range(len(self.items))]
        if not self.items:
            raise ValueError("SRPairs: no images")
        self.length = len(self.items) if length is None else int(length)
        if self.length < 1:
            raise ValueError(f"SRPairs: length must be at least 1, got {length}")
        self.classes: list[str] = []  # the engine's data sets list their classes; SR has none

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        src, lr_path = self.items[index % len(self.items)]
        name = self.names[index % len(self.items)]
        hr = read_image(src) if isinstance(src, Path) else src
        s = self.scale
        if lr_path is None and self.gt_size is not None:  # training crop of a bicubic pair: only the crop's LR
            return bicubic_random_crop(hr, self.gt_size, s, name, self.use_hflip, self.use_rot)
        if lr_path is not None:
            lr = read_image(lr_path)
        else:
            lr, hr = bicubic_lr(hr, s, quantize=True)
        if self.gt_size is None:  # validation: the HR cropped to scale x the LR (BasicSR does the same)
            hr = hr[..., :lr.shape[-2] * s, :lr.shape[-1] * s]
            if hr.shape[-2:] != (lr.shape[-2] * s, lr.shape[-1] * s):
                raise ValueError(f"{name}: HR {tuple(hr.shape[-2:])} is smaller than scale {s} x LR "
                                 f"{tuple(lr.shape[-2:])}")
            return lr.contiguous(), hr.contiguous()
        return paired_random_crop(lr, hr, self.gt_size, s, name, self.use_hflip, self.use_rot)


def bicubic_random_crop(hr: torch.Tensor, gt_size: int, scale: int, name: str = "", use_hflip: bool = True,
                        use_rot: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`paired_random_crop` of (``imresize(hr_mod, 1 / scale)``, ``hr_mod``) with ``hr_mod`` the HR cropped to a
    multiple of `scale` -- the same random draws and the same values (unrounded LR), computing only the LR crop (its
    rows of the resampling matrices)."""
    h, w = hr.shape[-2:]
    hl, wl = h // scale, w // scale
    p = gt_size // scale
    if hl < p or wl < p:
        raise ValueError(f"{name}: LR {(hl, wl)} is smaller than the LR patch {p}x{p} (sr.gt_size {gt_size} / scale "
                         f"{scale}); remove the image or lower sr.gt_size")
    hr = hr[..., :hl * scale, :wl * scale]
    top, left = random.randint(0, hl - p), random.randint(0, wl - p)
    mh = _resize_matrix_t(hl * scale, hl, 1 / scale, True)[top:top + p]
    mw = _resize_matrix_t(wl * scale, wl, 1 / scale, True)[left:left + p]
    rows, cols = mh.abs().sum(0).nonzero()[:, 0], mw.abs().sum(0).nonzero()[:, 0]
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    lr = (mh[:, r0:r1] @ hr[..., r0:r1, c0:c1].double() @ mw[:, c0:c1].T).float()
    hr = hr[..., top * scale:top * scale + gt_size, left * scale:left * scale + gt_size]
    return _augment(lr, hr, use_hflip, use_rot)


def _augment(lr: torch.Tensor, hr: torch.Tensor, use_hflip: bool, use_rot: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """BasicSR's ``augment``: hflip, vflip, transpose, each with probability 1/2, the same for both images."""
    hflip = use_hflip and random.random() < 0.5
    vflip = use_rot and random.random() < 0.5
    rot90 = use_rot and random.random() < 0.5
    out = []
    for t in (lr, hr):
        if hflip:
            t = t.flip(-1)
        if vflip:
            t = t.flip(-2)
        if rot90:
            t = t.transpose(-2, -1)
        out.append(t.contiguous())
    return out[0], out[1]


def paired_random_crop(lr: torch.Tensor, hr: torch.Tensor, gt_size: int, scale: int, name: str = "",
                       use_hflip: bool = True, use_rot: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """BasicSR's ``paired_random_crop`` then ``augment`` on ``(C, h, w)`` / ``(C, scale h, scale w)`` tensors."""
    hl, wl = lr.shape[-2:]
    if hr.shape[-2:] != (hl * scale, wl * scale):
        raise ValueError(f"{name}: HR {tuple(hr.shape[-2:])} is not scale {scale} x LR {(hl, wl)}")
    p = gt_size // scale
    if hl < p or wl < p:
        raise ValueError(f"{name}: LR {(hl, wl)} is smaller than the LR patch {p}x{p} (sr.gt_size {gt_size} / scale "
                         f"{scale}); remove the image or lower sr.gt_size")
    top, left = random.randint(0, hl - p), random.randint(0, wl - p)
    lr = lr[..., top:top + p, left:left + p]
    hr = hr[..., top * scale:top * scale + gt_size, left * scale:left * scale + gt_size]
    return _augment(lr, hr, use_hflip, use_rot)
