"""A small semantic segmentation data set made from real images, in ADE20K's folder layout.

scikit-learn's handwritten digits (real 8x8 scans, upscaled) are painted onto crops of the photographs bundled
with scikit-image; every pixel is labelled with the digit drawn there or as background. Nothing is downloaded,
and the same arguments always write the same files. The validation split uses held-out digit scans
(:func:`zoo.data.digits.digits_split`) and photographs the training split never sees.

Layout and label convention are ADE20K's, so mmsegmentation's own ``ADE20KDataset`` reads it unchanged::

    OUT/images/{training,validation}/seg_digits_NNNNN.jpg
    OUT/annotations/{training,validation}/seg_digits_NNNNN.png     # uint8, one value per pixel

ADE20K stores 0 for "unlabelled" and 1..150 for its classes, and ``reduce_zero_label=True`` maps 0 to the
ignore index 255 and k to k - 1. Here 0 marks the anti-aliased rim of each digit (neither digit nor background
with certainty, so not scored), 1 the background and 2 + d the digit d; after the reduction the classes are
:data:`SEG_DIGITS_CLASSES` = ``('background', '0', ..., '9')``, to pass as ``metainfo`` in the config.

    python -m zoo.data.seg_synth data/seg_digits [--num-train 400 --num-val 100 --size 160 --max-digits 8 --seed 0]

Each image gets 1 to ``max_digits`` digits (as many as fit without overlapping), each a square of side 1/5 to 2/5
of the image (32 to 64 px at the default 160 px), in an ink colour that contrasts with the photograph under it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from zoo.errors import InputError

__all__ = ["SEG_DIGITS_CLASSES", "SEG_DIGITS_PALETTE", "make_seg_digits"]

SEG_DIGITS_CLASSES = ("background",) + tuple(str(d) for d in range(10))
SEG_DIGITS_PALETTE = [[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                      [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212]]

# scikit-image's bundled photographs (loaded by name from skimage.data); the two splits share none
_PHOTOS = {
    "training": ("astronaut", "coffee", "chelsea", "camera", "grass", "brick", "moon", "immunohistochemistry",
                 "retina"),
    "validation": ("rocket", "hubble_deep_field", "gravel", "coins", "clock"),
}
_DIGIT_SPLIT = {"training": "train", "validation": "test"}
_PREFIX = "seg_digits"
# grey levels (0..1) of an upscaled glyph: <= _FLOOR is paper (the scans' faint noise, not drawn), >= _FULL is
# fully inked; a pixel is labelled digit from _SOLID of that range up and background below _FLOOR
_FLOOR, _FULL, _SOLID = 0.35, 0.8, 0.5


def _photo(name: str) -> np.ndarray:
    import skimage.data

    image = getattr(skimage.data, name)()
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3]).astype(np.uint8)


def _ink(rng: np.random.Generator, patch: np.ndarray) -> np.ndarray:
    """A random colour that stands out from `patch`: dark on bright backgrounds, bright on dark ones."""
    hue = rng.uniform(0.0, 1.0, size=3)
    hue = hue / hue.max()
    if patch.mean() > 110:
        return hue * rng.uniform(10, 70)
    return 255 - (1 - hue) * rng.uniform(10, 70)


def _place(rng: np.random.Generator, size: int, side: int, boxes: list[tuple[int, int, int, int]]):
    """Top-left corner of a `side` square inside the image that overlaps none of `boxes`, or None."""
    for _ in range(50):
        y, x = (int(v) for v in rng.integers(0, size - side + 1, size=2))
        if all(y + side <= b[0] or b[2] <= y or x + side <= b[1] or b[3] <= x for b in boxes):
            return y, x
    return None


def _sample(rng: np.random.Generator, photos: list[np.ndarray], glyphs: np.ndarray, digits: np.ndarray,
            size: int, max_digits: int) -> tuple[np.ndarray, np.ndarray]:
    photo = photos[int(rng.integers(len(photos)))]
    y0 = int(rng.integers(0, photo.shape[0] - size + 1))
    x0 = int(rng.integers(0, photo.shape[1] - size + 1))
    image = photo[y0:y0 + size, x0:x0 + size].astype(np.float32)
    label = np.ones((size, size), np.uint8)  # 1 = background
    boxes: list[tuple[int, int, int, int]] = []
    for _ in range(int(rng.integers(1, max_digits + 1))):
        side = int(rng.integers(size // 5, size * 2 // 5 + 1))
        corner = _place(rng, size, side, boxes)
        if corner is None:
            break
        y, x = corner
        boxes.append((y, x, y + side, x + side))
        k = int(rng.integers(len(glyphs)))
        glyph = Image.fromarray(glyphs[k]).resize((side, side), Image.Resampling.BICUBIC)
        a = np.clip((np.asarray(glyph, np.float32) / 255.0 - _FLOOR) / (_FULL - _FLOOR), 0.0, 1.0)
        region = image[y:y + side, x:x + side]
        region[:] = region * (1 - a[..., None]) + _ink(rng, region) * a[..., None]
        sub = label[y:y + side, x:x + side]
        sub[a > 0] = 0
        sub[a >= _SOLID] = 2 + int(digits[k])
    return np.clip(np.round(image), 0, 255).astype(np.uint8), label


def make_seg_digits(out_dir: str | Path, *, num_train: int = 400, num_val: int = 100, size: int = 160,
                    max_digits: int = 8, seed: int = 0) -> Path:
    """Write the data set under `out_dir` (created; existing files of the same names are overwritten) and return
    it. Images are `size` x `size` RGB JPEGs with 1 to `max_digits` digits each, labels PNGs as described above."""
    from zoo.data.digits import digits_split

    for name, value, low in (("num_train", num_train, 1), ("num_val", num_val, 1), ("size", size, 32),
                             ("max_digits", max_digits, 1)):
        if not isinstance(value, int) or value < low:
            raise InputError(f"make_seg_digits: {name}={value!r}, expected an integer >= {low}")
    out = Path(out_dir)
    for split, count in (("training", num_train), ("validation", num_val)):
        photos = [_photo(n) for n in _PHOTOS[split]]
        photos = [p for p in photos if min(p.shape[:2]) >= size]
        if not photos:
            raise InputError(f"make_seg_digits: size={size} is larger than every {split} photograph")
        glyphs, digits = digits_split(_DIGIT_SPLIT[split])
        rng = np.random.default_rng([seed, 0 if split == "training" else 1])
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "annotations" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image, label = _sample(rng, photos, glyphs, digits, size, max_digits)
            stem = f"{_PREFIX}_{split}_{i:05d}"
            Image.fromarray(image).save(out / "images" / split / f"{stem}.jpg", quality=95)
            Image.fromarray(label).save(out / "annotations" / split / f"{stem}.png")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m zoo.data.seg_synth", description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir", help="output folder (ADE20K layout: images/ and annotations/ inside)")
    p.add_argument("--num-train", type=int, default=400)
    p.add_argument("--num-val", type=int, default=100)
    p.add_argument("--size", type=int, default=160, help="image side in pixels")
    p.add_argument("--max-digits", type=int, default=8, help="digits per image: 1 to this (as many as fit)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    out = make_seg_digits(args.out_dir, num_train=args.num_train, num_val=args.num_val, size=args.size,
                          max_digits=args.max_digits, seed=args.seed)
    print(f"wrote {args.num_train} training and {args.num_val} validation images to {out}")
    return 0


if __name__ == "__main__":
    from zoo.errors import run_cli

    sys.exit(run_cli("python -m zoo.data.seg_synth", main, sys.argv[1:]))
