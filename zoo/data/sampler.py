"""Data order and augmentation randomness that depend only on ``(seed, epoch, position)``.

Two pieces make a run's data stream independent of how it is executed -- the number of processes, the number
of loader workers, and where a run was stopped and resumed:

- :class:`GlobalBatchSampler` draws one permutation per epoch from ``(seed, epoch)`` and cuts it into *global*
  batches of ``batch_size * world_size`` samples; process ``rank`` takes every ``world_size``-th sample of each
  global batch. A single process with batch ``B * W`` therefore sees, batch for batch, exactly the union of what
  ``W`` processes with batch ``B`` see, and averaging their gradients (DDP) averages over the same samples.
  :meth:`GlobalBatchSampler.set_position` starts an epoch at any global batch: what resume at a step needs.
- :class:`SeededSamples` wraps a data set so that sample ``i`` of epoch ``e`` is transformed under Python /
  NumPy / torch generators seeded from ``(seed, e, i)``: the random crop, flip, RandAugment and erasing a sample
  gets no longer depend on which worker process loaded it or on what was loaded before it.

:func:`shard_range` splits an evaluation set into contiguous per-process ranges with no padding and no
duplicates, so that summing per-process counts gives the exact metric over the whole set.
"""
from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import torch
import torch.utils.data

__all__ = ["GlobalBatchSampler", "SeededSamples", "derive_seed", "shard_range"]


_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def derive_seed(*keys: int) -> int:
    """A 63-bit seed from integer keys: SplitMix64 folded over them (cheap enough to call once per sample;
    different key tuples give unrelated streams)."""
    h = 0x243F6A8885A308D3
    for k in keys:
        h = _splitmix64(h ^ (int(k) & _MASK64))
    return h >> 1


def shard_range(n: int, rank: int, world_size: int) -> range:
    """The contiguous slice of ``range(n)`` that process `rank` of `world_size` evaluates: sizes differ by at
    most one, every index belongs to exactly one process (no padding, nothing dropped)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


class GlobalBatchSampler(torch.utils.data.Sampler[int]):
    """Indices for process `rank`: the seeded epoch permutation cut into global batches of
    ``batch_size * world_size``, this process's share of each (every ``world_size``-th sample).

    `repeats` > 1 is repeated augmentation (DeiT / BiFormer's RASampler): each index of the permutation appears
    `repeats` times in a row (so its copies land on different processes, each with its own augmentation) and the
    stream is cut back to ``len(dataset)`` samples, keeping the epoch length. `drop_last`: only full global
    batches; without it the last, partial global batch is kept (single process only: ranks would differ).
    Use with ``DataLoader(batch_size=batch_size, sampler=..., drop_last=False)``.
    """

    def __init__(self, num_samples: int, batch_size: int, *, seed: int, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True, drop_last: bool = True, repeats: int = 1):
        if batch_size < 1 or world_size < 1 or repeats < 1:
            raise ValueError(f"batch_size ({batch_size}), world_size ({world_size}) and repeats ({repeats}) must be "
                             f"at least 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        if not drop_last and world_size > 1:
            raise ValueError("drop_last=False keeps a partial global batch, which processes cannot share evenly")
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.rank, self.world_size, self.shuffle, self.drop_last, self.repeats = (
            rank, world_size, shuffle, drop_last, repeats)
        self.global_batch = batch_size * world_size
        if drop_last and num_samples < self.global_batch:
            raise ValueError(f"{num_samples} training samples are fewer than one global batch of {self.global_batch} "
                             f"({batch_size} per process x {world_size} processes)")
        self.epoch = 0
        self.position = 0  # global batches of this epoch already consumed

    def __len__(self) -> int:
        """Samples this process yields from the current position to the end of the epoch."""
        return int(self.local_sizes()[self.position:].sum())

    @property
    def num_batches(self) -> int:
        """Global batches per epoch."""
        if self.drop_last:
            return self.num_samples // self.global_batch
        return -(-self.num_samples // self.global_batch)

    def local_sizes(self) -> torch.Tensor:
        sizes = torch.full((self.num_batches,), self.batch_size, dtype=torch.long)
        if not self.drop_last and self.num_samples % self.global_batch:
            sizes[-1] = self.num_samples % self.global_batch
        return sizes

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.position = 0

    def set_position(self, position: int) -> None:
        """Start the current epoch at global batch `position` (what a checkpoint written mid-epoch recorded)."""
        if not 0 <= position <= self.num_batches:
            raise ValueError(f"sampler position {position} is not in [0, {self.num_batches}] global batches")
        self.position = position

    def epoch_order(self) -> torch.Tensor:
        """The whole epoch's sample order (all processes), before it is cut into global batches."""
        n = self.num_samples
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(self.seed, self.epoch)))
        else:
            order = torch.arange(n)
        if self.repeats > 1:
            order = order.repeat_interleave(self.repeats)[:n]
        return order

    def __iter__(self) -> Iterator[int]:
        order = self.epoch_order()
        g = self.global_batch
        for b in range(self.position, self.num_batches):
            batch = order[b * g:(b + 1) * g]
            yield from batch[self.rank::self.world_size].tolist()


class SeededSamples(torch.utils.data.Dataset):
    """`dataset` whose sample ``i`` is loaded (and transformed) under generators seeded from
    ``(seed, epoch, i)``; call :meth:`set_epoch` before each epoch's loader is created. The global Python / NumPy
    / torch generators of the loading process are reseeded per sample (in the main process too when
    ``num_workers=0``), so the training loop reseeds its own stream per step afterwards."""

    def __init__(self, dataset, seed: int):
        self.dataset = dataset
        self.seed = seed
        self.epoch = 0

    @property
    def classes(self):
        return self.dataset.classes

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        s = derive_seed(self.seed, self.epoch, index, 0x5A4D)
        random.seed(s)
        np.random.seed(s & 0xFFFFFFFF)
        torch.default_generator.manual_seed(s)  # the CPU generator only: torch.manual_seed costs ~1 ms (devices)
        return self.dataset[index]
