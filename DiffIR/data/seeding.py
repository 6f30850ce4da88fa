"""Random numbers for data augmentation that differ across workers, ranks and epochs, reproducibly.

DataLoader workers that persist across epochs keep their RNG state, and since torch 2 every DDP rank
gets the same worker base seed, so a generator seeded from ``torch.initial_seed()`` repeats across
ranks. Instead, :class:`~DiffIR.data.EnlargedSampler` yields :class:`SampleIndex` values: plain
``int`` item indices that also carry ``(seed, epoch, rank, position)``. The dataset draws an item's
crop and flips from ``numpy.random.default_rng([seed, epoch, rank, position])``, so

* two samples of an epoch never share a stream (different positions), whichever worker loads them;
* epochs differ (the epoch is part of the seed), also with ``persistent_workers``;
* ranks differ (the rank is part of the seed);
* a run is reproducible for any number of workers, and a resumed run draws what the uninterrupted
  run would have drawn for the same epoch.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

__all__ = ["SampleIndex", "sample_rng"]

_MASK = (1 << 64) - 1


class SampleIndex(int):
    """An item index (an ``int``) tagged with the ``seed``, ``epoch``, ``rank`` and ``position`` it was drawn at."""

    seed: int
    epoch: int
    rank: int
    position: int

    def __new__(cls, value: int, seed: int = 0, epoch: int = 0, rank: int = 0, position: int = 0) -> "SampleIndex":
        obj = super().__new__(cls, value)
        obj.seed, obj.epoch, obj.rank, obj.position = int(seed), int(epoch), int(rank), int(position)
        return obj

    def __reduce__(self) -> Tuple[Any, ...]:  # keep the tags when sent to a worker process
        return (SampleIndex, (int(self), self.seed, self.epoch, self.rank, self.position))

    def __repr__(self) -> str:
        return f"SampleIndex({int(self)}, seed={self.seed}, epoch={self.epoch}, rank={self.rank}, position={self.position})"


def sample_rng(index: Any) -> Optional[np.random.Generator]:
    """The generator for one sample if ``index`` is a :class:`SampleIndex`, else None."""
    if not isinstance(index, SampleIndex):
        return None
    return np.random.default_rng([index.seed & _MASK, index.epoch & _MASK, index.rank & _MASK, index.position & _MASK])
