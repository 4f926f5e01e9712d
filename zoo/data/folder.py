"""A real data set the user points at, as an ImageFolder tree (``root/<split>/<class>/<image>``).

Nothing is downloaded; the tree has to exist. Train and evaluation splits must list the same classes, since
the class index is the classifier's output index. Images are read by :func:`zoo.data.images.open_rgb` (16-bit
images scaled, not clipped; an unreadable file named). With `skip_corrupt`, an unreadable image is reported on
stderr, counted in ``skipped`` and replaced by the next readable one, so a long run is not lost to one bad file.
"""
from __future__ import annotations

import sys
from pathlib import Path

from torchvision.datasets import ImageFolder

from zoo.data.images import open_rgb
from zoo.errors import FileError

__all__ = ["ZooImageFolder", "image_folder"]


class ZooImageFolder(ImageFolder):
    """torchvision's ImageFolder reading images with :func:`~zoo.data.images.open_rgb`; see the module doc."""

    def __init__(self, root: str, transform=None, skip_corrupt: bool = False):
        super().__init__(root, transform=transform, loader=open_rgb)
        self.skip_corrupt = skip_corrupt
        self.skipped: set[str] = set()  # unreadable files met so far (in this process)

    def __getitem__(self, index: int):
        for offset in range(len(self.samples)):
            i = (index + offset) % len(self.samples)
            try:
                return super().__getitem__(i)
            except FileError as e:
                if not self.skip_corrupt:
                    raise FileError(f"{e} (set data.skip_corrupt: true to skip unreadable images)") from None
                path = self.samples[i][0]
                if path not in self.skipped:
                    self.skipped.add(path)
                    print(f"warning: skipped unreadable image {len(self.skipped)}: {e}", file=sys.stderr)
        raise FileError(f"no image under {self.root!r} can be read")


def image_folder(root: str | Path, split: str, transform=None, skip_corrupt: bool = False) -> ZooImageFolder:
    """:class:`ZooImageFolder` over ``root/split`` (or `root` itself when `split` is empty)."""
    path = Path(root) / split if split else Path(root)
    if not path.is_dir():
        raise FileNotFoundError(
            f"image folder {str(path)!r} does not exist; expected {str(Path(root))!r} to hold "
            f"{split or '.'}/<class name>/<image files>")
    try:
        return ZooImageFolder(str(path), transform=transform, skip_corrupt=skip_corrupt)
    except FileNotFoundError as e:  # no class folders / no images: torchvision's message names the folder
        raise FileNotFoundError(f"image folder {str(path)!r} holds no usable images: {e}") from None
