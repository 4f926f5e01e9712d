"""Reading one image file, the same way for every data set (ImageFolder trees, tar shards, SR folders).

PIL's ``convert('RGB')`` clips a 16-bit greyscale image (mode ``I;16`` / ``I``) to 255 instead of scaling it, so
a folder of 16-bit PNGs would be scored far below its 8-bit copy without a word. Here 16-bit images are scaled to
8 bits (``round(v / 257)``, the exact inverse of 8 -> 16-bit expansion), floating-point images are refused by
name, and a file PIL cannot decode (corrupt, truncated, not an image) is a :class:`~zoo.errors.FileError` naming
it. 48-bit RGB PNGs need nothing: PIL reads them as 8-bit RGB already.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from zoo.errors import FileError

__all__ = ["open_rgb"]

_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")


def _to_rgb(im: Image.Image, name: str) -> Image.Image:
    if im.mode in _SIXTEEN_BIT or im.mode == "I":
        arr = np.asarray(im).astype(np.int64)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise FileError(f"image {name!r} is a 32-bit integer image (mode {im.mode}, values {arr.min()} to "
                            f"{arr.max()}); the zoo reads 8- and 16-bit images: convert it to 8-bit PNG / JPEG")
        grey = np.rint(arr / 257.0).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if im.mode == "F":
        raise FileError(f"image {name!r} holds floating-point pixels (mode F), which have no fixed range; the zoo "
                        f"reads 8- and 16-bit images: convert it to 8-bit PNG / JPEG")
    return im.convert("RGB")


def open_rgb(source: str | Path | bytes | BinaryIO, name: str | None = None) -> Image.Image:
    """The image in `source` (a path, the file's bytes or an open binary file) as an 8-bit RGB PIL image.

    `name` is what errors call the file (default: the path). Raises :class:`~zoo.errors.FileError` for a file
    that cannot be decoded or whose pixels cannot be read as 8- or 16-bit values; a missing path is a
    FileNotFoundError from ``open``.
    """
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    name = name or str(source)
    try:
        with Image.open(source) as im:
            im.load()  # decode now: a truncated file fails here, with its name, not later inside a transform
            return _to_rgb(im, name)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        if isinstance(e, (FileError, FileNotFoundError, IsADirectoryError, PermissionError)):
            raise
        raise FileError(f"image {name!r} cannot be read ({type(e).__name__}: {e}); the file is corrupt, truncated "
                        f"or not an image") from None
