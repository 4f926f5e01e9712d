"""Image classification samples stored in tar shards (the webdataset layout), read with random access.

Large data sets (ImageNet's 1.28 M files) strain file systems with small-file limits; a few hundred tar files of
~1 GB each do not. The layout is webdataset's: in ``ROOT/<split>-000000.tar, ...`` (or ``ROOT/<split>/*.tar``)
the files of one sample share a key -- the member path up to the first dot of its base name -- and the
extensions say what each holds: the image (``.jpg``, ``.jpeg``, ``.png``, ``.webp``, ``.bmp``) and the class
index as decimal text (``.cls``). Other members are ignored. Class names are the lines of ``ROOT/classes.txt``
when present, else ``0 .. max_label``. Shards can be written from an ImageFolder tree with
:func:`write_shards` (or with webdataset's ``ShardWriter``; the files are the same).

Unlike webdataset's streaming reader, :class:`TarShards` indexes every shard once (member offsets, read from
the tar headers, not the data) and then reads any sample by ``seek`` + ``read``: it is a map-style data set, so
the engine's sampler gives exact distributed evaluation and exact resume at any step with tar shards as with
image files.
"""
from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import torch.utils.data
from PIL import Image

from zoo.data.images import open_rgb
from zoo.errors import FileError

__all__ = ["IMAGE_EXTENSIONS", "TarShards", "find_shards", "write_shards"]

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp")


def find_shards(root: str | Path, split: str) -> list[Path]:
    root = Path(root)
    shards = sorted(root.glob(f"{split}-*.tar")) if split else []
    if not shards and (root / split).is_dir():
        shards = sorted((root / split).glob("*.tar"))
    if not shards:
        raise FileNotFoundError(f"no tar shards for split {split!r} in {str(root)!r}: expected "
                                f"{str(root / (split + '-*.tar'))!r} or {str(root / split / '*.tar')!r}")
    return shards


def _split_key(name: str) -> tuple[str, str]:
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower() if dot else ""


class TarShards(torch.utils.data.Dataset):
    """The samples of the tar shards of `split` under `root`, as ``(PIL RGB image or transform(image), label)``."""

    def __init__(self, root: str | Path, split: str, transform=None):
        self.root = Path(root)
        self.shards = find_shards(root, split)
        self.transform = transform
        self.samples: list[tuple[int, int, int]] = []  # (shard index, data offset, size)
        self.targets: list[int] = []
        for si, shard in enumerate(self.shards):
            pending: dict[str, dict] = {}
            try:
                with tarfile.open(shard, "r:") as tf:  # uncompressed tar: members are at fixed offsets
                    for m in tf:
                        if not m.isfile():
                            continue
                        key, ext = _split_key(m.name)
                        entry = pending.setdefault(key, {})
                        if ext in IMAGE_EXTENSIONS:
                            entry["image"] = (m.offset_data, m.size)
                        elif ext == "cls":
                            text = tf.extractfile(m).read().decode().strip()
                            try:
                                entry["label"] = int(text)
                            except ValueError:
                                raise FileError(f"{shard}: {m.name} holds {text!r}, not a class index") from None
            except tarfile.TarError as e:
                raise FileError(f"tar shard {str(shard)!r} cannot be read ({e}); it must be an uncompressed tar") \
                    from None
            for key, entry in pending.items():
                if "image" in entry and "label" in entry:
                    self.samples.append((si, *entry["image"]))
                    self.targets.append(entry["label"])
                elif "image" in entry or "label" in entry:
                    lacks = "an image but no .cls label" if "image" in entry else "a .cls label but no image"
                    raise FileError(f"{shard}: sample {key!r} has {lacks}")
        if not self.samples:
            raise FileNotFoundError(f"the tar shards of split {split!r} in {str(root)!r} hold no image + .cls samples")
        names = self.root / "classes.txt"
        if names.is_file():
            self.classes = [line.strip() for line in names.read_text().splitlines() if line.strip()]
        else:
            self.classes = [str(i) for i in range(max(self.targets) + 1)]
        bad = [t for t in self.targets if not 0 <= t < len(self.classes)]
        if bad:
            raise ValueError(
                f"tar shards of split {split!r} have label {bad[0]}, outside the {len(self.classes)} classes")
        self._files: dict[int, object] = {}
        self._pid = None

    def __len__(self) -> int:
        return len(self.samples)

    def _file(self, si: int):
        if self._pid != os.getpid():  # a loader worker: open its own handles, never share a file position
            self._files, self._pid = {}, os.getpid()
        f = self._files.get(si)
        if f is None:
            f = self._files[si] = open(self.shards[si], "rb")  # noqa: SIM115 (kept open for random access)
        return f

    def __getitem__(self, index: int):
        si, offset, size = self.samples[index]
        f = self._file(si)
        f.seek(offset)
        img = open_rgb(f.read(size), f"{self.shards[si]} (member at byte {offset})")
        if self.transform is not None:
            img = self.transform(img)
        return img, self.targets[index]

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_files"], state["_pid"] = {}, None
        return state


def write_shards(dataset, out_dir: str | Path, split: str, *, samples_per_shard: int = 1000,
                 image_format: str = "png") -> list[Path]:
    """Write `dataset` (items ``(PIL image, label)``, e.g. torchvision's ImageFolder without transform) as tar
    shards ``out_dir/<split>-NNNNNN.tar``, plus ``classes.txt`` when it has ``classes``."""
    from zoo.files import atomic_write

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for start in range(0, len(dataset), samples_per_shard):
        path = out_dir / f"{split}-{len(paths):06d}.tar"

        def write(f, start=start):
            with tarfile.open(fileobj=f, mode="w") as tf:
                for i in range(start, min(start + samples_per_shard, len(dataset))):
                    img, label = dataset[i]
                    for ext, data in ((image_format, _encode(img, image_format)), ("cls", str(int(label)).encode())):
                        info = tarfile.TarInfo(f"{i:09d}.{ext}")
                        info.size = len(data)
                        tf.addfile(info, io.BytesIO(data))

        paths.append(atomic_write(path, write))
    if getattr(dataset, "classes", None):
        (out_dir / "classes.txt").write_text("".join(f"{c}\n" for c in dataset.classes))
    return paths


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format={"jpg": "JPEG"}.get(fmt, fmt.upper()))
    return buf.getvalue()
