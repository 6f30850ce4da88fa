"""Datasets and data loaders (BasicSR semantics).

* ``build_dataset(opt)``: instantiate ``DATASET_REGISTRY[opt['type']](opt)`` after rejecting unknown
  option keys by name (the class's ``OPTION_KEYS``).
* ``build_dataloader(dataset, dataset_opt, num_gpu, dist, sampler, seed)``.
* ``EnlargedSampler``: epoch-seeded shuffling, sharded over ranks, optionally enlarging an epoch; its
  indices carry (seed, epoch, rank, position) so augmentation differs per sample, epoch and rank
  (:mod:`DiffIR.data.seeding`).
* ``build_prefetcher(loader, loader_options(dataset_opt), device)``: ``prefetch_mode`` ~ / cpu / cuda
  (:mod:`DiffIR.data.prefetcher`).

Every module ``DiffIR/data/*_dataset.py`` is imported here so its ``@DATASET_REGISTRY.register()``
classes are available by name, and every ``DiffIR/data/*_reader.py`` so its ``@IO_BACKEND_REGISTRY.register()``
readers are (the ``io_backend`` types, :mod:`DiffIR.data.pair_reader`).
"""
from __future__ import annotations

import importlib
import logging
import math
import random
import signal
from functools import partial
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping, Optional, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from DiffIR.config.sections import LoaderOptions
from DiffIR.data.prefetcher import CPUPrefetcher, CUDAPrefetcher, build_prefetcher
from DiffIR.data.seeding import SampleIndex
from DiffIR.utils.errors import OptionError
from DiffIR.utils.registry import DATASET_REGISTRY, check_keys

__all__ = ["build_dataset", "build_dataloader", "EnlargedSampler", "SampleIndex", "worker_init_fn",
           "build_prefetcher", "CPUPrefetcher", "CUDAPrefetcher", "DATASET_REGISTRY", "loader_options"]

logger = logging.getLogger("DiffIR")

for _pattern in ("*_reader.py", "*_dataset.py"):  # the io_backend readers, then the datasets, by name
    for _f in sorted(Path(__file__).parent.glob(_pattern)):
        importlib.import_module(f"{__name__}.{_f.stem}")


def _where(opt: Mapping[str, Any]) -> str:
    return f"datasets:{opt.get('phase') or opt.get('name') or '?'}"


def build_dataset(opt: Dict[str, Any]) -> Dataset:
    """Build a dataset from its option dict (``type`` picks the registered class).

    Raises :class:`OptionError` for a missing/unknown ``type`` (with the closest registered name)
    and for option keys the class does not list in ``OPTION_KEYS`` (with the closest valid key).
    """
    if not isinstance(opt, Mapping):
        raise OptionError(f"a dataset option must be a mapping, got {type(opt).__name__}")
    where = _where(opt)
    cls = DATASET_REGISTRY.get_type(opt, where)
    accepted = getattr(cls, "OPTION_KEYS", None)
    if accepted is not None:
        check_keys(opt, accepted, where, cls.__name__)
    dataset = cls(dict(opt))
    logger.info(f"Dataset [{cls.__name__}] - {opt.get('name')} is built ({len(dataset)} items).")
    return dataset


def _dist_rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return 0


def worker_init_fn(worker_id: int, num_workers: int, rank: int, seed: int) -> None:
    """Seed ``numpy``/``random`` globals of a worker with ``seed + num_workers * rank + worker_id``.

    (Datasets here draw from their own generator seeded by ``torch.initial_seed()``; this keeps any
    global-RNG user reproducible too.)
    """
    worker_seed = (num_workers * rank + worker_id + int(seed)) % (2 ** 32)
    np.random.seed(worker_seed)
    random.seed(worker_seed)
    # A terminal's Ctrl-C, and its SIGHUP when it closes, reach the whole process group; the main process saves a
    # state and stops, and a worker ending first would turn that into "DataLoader worker exited unexpectedly".
    # (SIGTERM stays: it is how the main process ends leftover workers at exit; a group's SIGTERM is handled by
    # the main process, see PreemptionFlag.)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)


def loader_options(dataset_opt: Union[Mapping[str, Any], LoaderOptions]) -> LoaderOptions:
    """The loader section of a dataset's options (checked once; a :class:`LoaderOptions` passes through)."""
    if isinstance(dataset_opt, LoaderOptions):
        return dataset_opt
    return LoaderOptions.build(dataset_opt, _where(dataset_opt) + ":")


def build_dataloader(
    dataset: Dataset,
    dataset_opt: Union[Mapping[str, Any], LoaderOptions],
    num_gpu: int = 1,
    dist: bool = False,
    sampler: Optional[Sampler] = None,
    seed: Optional[int] = None,
) -> DataLoader:
    """BasicSR-style loader.

    Train phase: ``batch_size_per_gpu`` / ``num_worker_per_gpu`` per process (one process drives one
    device; several GPUs are used through a distributed launcher), ``shuffle`` only without a sampler (and
    unless ``use_shuffle: false``), ``drop_last=True``, workers seeded from ``seed + rank + worker id``,
    ``persistent_workers`` (default true) when there are workers. Val/test phase: batch 1, no workers, no shuffle.
    ``pin_memory`` comes from the option (default false).
    """
    loader = loader_options(dataset_opt)
    phase, where = loader.phase, loader.where
    rank = _dist_rank()
    if phase.startswith("train"):
        for key in ("batch_size_per_gpu", "num_worker_per_gpu"):
            if getattr(loader, key) is None:
                raise OptionError(f"'{where}:{key}' is missing. Fix: set it for the training set (e.g. {key}: 2).")
        bs, nw = loader.batch_size_per_gpu, loader.num_worker_per_gpu
        n_items = len(sampler) if sampler is not None else len(dataset)
        if n_items < bs:
            raise OptionError(
                f"'{where}': batch size {bs} is larger than the items per epoch ({n_items}) and drop_last is on, "
                f"so no batch would be produced. Fix: lower batch_size_per_gpu, add data or raise "
                f"dataset_enlarge_ratio."
            )
        args: Dict[str, Any] = dict(
            dataset=dataset,
            batch_size=bs,
            shuffle=sampler is None and loader.use_shuffle,
            num_workers=nw,
            sampler=sampler,
            drop_last=True,
        )
        # The loader's own generator: creating an epoch's iterator must not draw from the global torch RNG,
        # or a resumed run would shift the random stream of everything else (exact resume).
        g = torch.Generator()
        g.manual_seed((int(seed) if seed is not None else 0) + rank)
        args["generator"] = g
        if seed is not None:
            args["worker_init_fn"] = partial(worker_init_fn, num_workers=nw, rank=rank, seed=int(seed))
        if nw > 0:
            args["persistent_workers"] = loader.persistent_workers
    elif phase.startswith("val") or phase.startswith("test"):
        args = dict(dataset=dataset, batch_size=1, shuffle=False, num_workers=0, sampler=sampler)
    else:
        raise OptionError(f"'{where}:phase' = '{phase}' is not train/val/test. Fix: set the phase.")
    args["pin_memory"] = loader.pin_memory
    return DataLoader(**args)


class EnlargedSampler(Sampler):
    """Sample a ``ratio``-times enlarged epoch, sharded over ``num_replicas`` ranks (BasicSR semantics).

    Each epoch draws a permutation of ``total_size = ceil(len(dataset) * ratio / num_replicas) *
    num_replicas`` positions from a generator seeded with the epoch (call :meth:`set_epoch`), maps
    positions to items modulo the dataset size, and gives rank ``r`` positions ``r, r + R, ...``,
    so ranks never share a position (with ``ratio`` 1 and a divisible size they share no item).

    The indices are :class:`SampleIndex` ints tagged with ``(seed, epoch, rank, position)`` (position
    within this rank's epoch, also after a mid-epoch ``start``); datasets seed each sample's
    augmentation from them. ``seed`` defaults to ``torch.initial_seed()`` at construction (the run's
    ``manual_seed`` + rank in the training loop); pass the run's seed to make it explicit.
    """

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, ratio: float = 1,
                 seed: Optional[int] = None) -> None:
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"EnlargedSampler: need 0 <= rank < num_replicas, got rank={rank}, num_replicas={num_replicas}")
        if ratio <= 0:
            raise ValueError(f"EnlargedSampler: ratio (dataset_enlarge_ratio) must be > 0, got {ratio}")
        self.dataset = dataset
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.ratio = ratio
        self.seed = int(torch.initial_seed() if seed is None else seed)
        self.epoch = 0
        self.start = 0
        self.num_samples = math.ceil(len(dataset) * ratio / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self.epoch)
        perm = torch.randperm(self.total_size, generator=g).tolist()
        n = len(self.dataset)
        mine = perm[self.rank : self.total_size : self.num_replicas]
        assert len(mine) == self.num_samples
        return (SampleIndex(v % n, self.seed, self.epoch, self.rank, pos)
                for pos, v in enumerate(mine) if pos >= self.start)

    def __len__(self) -> int:
        return self.num_samples - self.start

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch's permutation; ``start`` skips that many of this rank's samples (mid-epoch resume)."""
        self.epoch = int(epoch)
        self.start = min(max(0, int(start)), self.num_samples)
