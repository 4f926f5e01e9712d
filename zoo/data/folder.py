"""A real data set the user points at, as an ImageFolder tree (``root/<split>/<class>/<image>``).

Nothing is downloaded; the tree has to exist. Train and evaluation splits must list the same classes, since
the class index is the classifier's output index.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["image_folder"]


def image_folder(root: str | Path, split: str, transform=None):
    """``torchvision.datasets.ImageFolder`` over ``root/split`` (or `root` itself when `split` is empty)."""
    from torchvision.datasets import ImageFolder

    path = Path(root) / split if split else Path(root)
    if not path.is_dir():
        raise FileNotFoundError(
            f"image folder {str(path)!r} does not exist; expected {str(Path(root))!r} to hold "
            f"{split or '.'}/<class name>/<image files>")
    try:
        return ImageFolder(str(path), transform=transform)
    except FileNotFoundError as e:  # no class folders / no images: torchvision's message names the folder
        raise FileNotFoundError(f"image folder {str(path)!r} holds no usable images: {e}") from None
