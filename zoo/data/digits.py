"""scikit-learn's digits as an image classification data set, with a fixed held-out split.

1797 real 8x8 grey-level images of the digits 0-9 (UCI optical recognition of handwritten digits), shipped
inside scikit-learn (``sklearn.datasets.load_digits``), so nothing is downloaded. The split is stratified and
seeded (:func:`digits_split`); the same ``(test_fraction, seed)`` always gives the same held-out images, which is
what lets ``eval.py`` score an export on exactly the images its training never saw.
"""
from __future__ import annotations

import numpy as np
import torch.utils.data
from PIL import Image
from zoo.errors import InputError

__all__ = ["DIGITS_CLASSES", "DIGITS_LABELS", "DigitsDataset", "digits_split"]

DIGITS_CLASSES = tuple(str(i) for i in range(10))
_SPLITS = ("train", "test")
# What a sample's target is: the digit itself, or a 2-class task on the same images (the fine-tuning demo)
DIGITS_LABELS = {"digit": DIGITS_CLASSES, "parity": ("even", "odd")}


def digits_split(split: str, test_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(images, labels)`` of one split: images uint8 (N, 8, 8) in 0..255, labels int64 (N,)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if split not in _SPLITS:
        raise InputError(f"digits split {split!r} does not exist; expected one of {', '.join(_SPLITS)}")
    if not 0.0 < test_fraction < 1.0:
        raise InputError(f"digits test_fraction {test_fraction!r} must be between 0 and 1")
    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # pixel values 0..16
    labels = digits.target.astype(np.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=test_fraction, random_state=seed, stratify=labels)
    idx = np.sort(train_idx if split == "train" else test_idx)
    return images[idx], labels[idx]


class DigitsDataset(torch.utils.data.Dataset):
    """One split of the digits as RGB PIL images of `img_size` x `img_size` (bicubic upscale of the 8x8
    originals, done once here so that random crops work at the model's resolution), with integer targets: the
    digit (`labels` 'digit') or its parity (`labels` 'parity': 0 even, 1 odd)."""

    def __init__(
            self,
            split: str = "train",
            *,
            test_fraction: float = 0.2,
            seed: int = 0,
            img_size: int = 32,
            transform=None,
            subset: int | None = None,
            labels: str = "digit",
    ):
        if labels not in DIGITS_LABELS:
            raise InputError(f"digits labels {labels!r} is not one of {', '.join(map(repr, DIGITS_LABELS))}")
        self.classes = list(DIGITS_LABELS[labels])
        images, targets = digits_split(split, test_fraction, seed)
        if labels == "parity":
            targets = targets % 2
        if subset is not None:
            images, targets = images[:subset], targets[:subset]
        self.images = np.stack([
            np.asarray(Image.fromarray(im).resize((img_size, img_size), Image.Resampling.BICUBIC))
            for im in images
        ]) if len(images) else np.zeros((0, img_size, img_size), np.uint8)
        self.targets = targets.tolist()
        self.transform = transform
        self.split = split

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        img = Image.fromarray(self.images[index]).convert("RGB")
        if self.transform is not None:
            img = self.transform(img)
        return img, self.targets[index]
