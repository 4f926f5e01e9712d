"""Data sets for the engine: the embedded digits demo (:mod:`zoo.data.digits`), ImageFolder trees
(:mod:`zoo.data.folder`) and tar shards (:mod:`zoo.data.shards`); the sampler and per-sample seeding that make
a run's data independent of processes, workers and resumption (:mod:`zoo.data.sampler`). Transforms come from
`timm.data.create_transform` in the engine."""
from __future__ import annotations

from zoo.data.digits import DIGITS_CLASSES, DigitsDataset, digits_split
from zoo.data.folder import image_folder
from zoo.data.shards import TarShards
from zoo.errors import InputError

__all__ = ["DATASETS", "DIGITS_CLASSES", "DigitsDataset", "TarShards", "create_dataset", "digits_split",
           "image_folder"]

DATASETS = ("digits", "folder", "shards")


def create_dataset(
        name: str,
        split: str,
        *,
        transform=None,
        root: str | None = None,
        folder_split: str | None = None,
        test_fraction: float = 0.2,
        seed: int = 0,
        img_size: int = 32,
        subset: int | None = None,
        labels: str = "digit",
        skip_corrupt: bool = False,
):
    """The `split` ('train' or 'eval') of data set `name`. For 'folder', `folder_split` names the sub-folder
    (or shard prefix) of `root` to read; for 'digits' the eval split is the seeded held-out test split.
    Every data set has a ``classes`` list (the label names). `labels`: what a digits target is ('digit' or
    'parity'); `skip_corrupt`: an ImageFolder skips (and reports) unreadable images instead of stopping."""
    if split not in ("train", "eval"):
        raise InputError(f"split {split!r} is not one of 'train', 'eval'")
    if name == "digits":
        return DigitsDataset("train" if split == "train" else "test", test_fraction=test_fraction, seed=seed,
                             img_size=img_size, transform=transform, subset=subset, labels=labels)
    if name in ("folder", "shards"):
        if not root:
            raise InputError(f"data set {name!r} needs the root directory (data.root / --data-dir)")
        folder = folder_split if folder_split is not None else split
        if name == "folder":
            ds = image_folder(root, folder, transform=transform, skip_corrupt=skip_corrupt)
        else:
            ds = TarShards(root, folder, transform=transform)
        if subset is not None:
            import torch.utils.data
            classes = ds.classes
            ds = torch.utils.data.Subset(ds, range(min(subset, len(ds))))
            ds.classes = classes
        return ds
    raise InputError(f"unknown data set {name!r}; expected one of {', '.join(DATASETS)}")
