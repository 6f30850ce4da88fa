"""Batch prefetchers (BasicSR's ``prefetch_mode``), so the next batch is ready when a step ends.

* ``prefetch_mode: ~`` -> :class:`CPUPrefetcher` without a queue: plain iteration of the loader.
* ``prefetch_mode: cpu`` -> :class:`CPUPrefetcher` with a background thread keeping
  ``num_prefetch_queue`` (default 1) batches ready; helps when collation or a slow main-process
  step leaves the workers idle.
* ``prefetch_mode: cuda`` -> :class:`CUDAPrefetcher`: copies the next batch's tensors to the GPU on
  a side stream while the current step runs (needs ``pin_memory: true`` and a CUDA device).

All three have BasicSR's interface (``next()`` returns a batch or None at the end of the epoch,
``reset()`` starts a new epoch) and are also iterable: ``for batch in prefetcher`` runs one epoch
(``iter()`` resets). Call ``sampler.set_epoch(epoch)`` before starting each epoch, as with a loader.
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Iterator, Mapping, Optional, Union

import torch

from DiffIR.config.sections import LoaderOptions
from DiffIR.utils.errors import OptionError

__all__ = ["CPUPrefetcher", "CUDAPrefetcher", "build_prefetcher"]

_END = object()


class _Failure:
    """An exception raised by the loader in the background thread, re-raised in the consumer."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class _Prefetcher:
    """BasicSR's ``next()``/``reset()`` interface, plus iteration over one epoch."""

    def reset(self) -> None:
        raise NotImplementedError

    def next(self) -> Any:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Any]:
        self.reset()
        while True:
            batch = self.next()
            if batch is None:
                return
            yield batch


class CPUPrefetcher(_Prefetcher):
    """Iterates a loader; with ``num_prefetch_queue > 0`` a background thread keeps that many batches ready."""

    def __init__(self, loader: Any, num_prefetch_queue: int = 0) -> None:
        if num_prefetch_queue < 0:
            raise ValueError(f"num_prefetch_queue must be >= 0, got {num_prefetch_queue}")
        self.ori_loader = loader
        self.num_prefetch_queue = int(num_prefetch_queue)
        self._it: Optional[Iterator[Any]] = None
        self._queue: Optional[queue.Queue] = None
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()

    def __len__(self) -> int:
        return len(self.ori_loader)

    @staticmethod
    def _producer(it: Iterator[Any], q: queue.Queue, stop: threading.Event) -> None:
        def put(obj: Any) -> bool:
            while not stop.is_set():
                try:
                    q.put(obj, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        try:
            for batch in it:
                if not put(batch):
                    return
        except BaseException as e:  # handed to the consumer, which re-raises it
            put(_Failure(e))
            return
        put(_END)

    def _stop_thread(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def reset(self) -> None:
        """Start a new pass over the loader (a new epoch)."""
        self._stop_thread()
        self._it = iter(self.ori_loader)
        if self.num_prefetch_queue > 0:
            self._stop = threading.Event()
            self._queue = queue.Queue(maxsize=self.num_prefetch_queue)
            self._thread = threading.Thread(target=self._producer, args=(self._it, self._queue, self._stop),
                                            name="DiffIR-prefetch", daemon=True)
            self._thread.start()

    def next(self) -> Optional[Any]:
        """The next batch, or None at the end of the pass."""
        if self._it is None:
            self.reset()
        if self._thread is None:
            try:
                return next(self._it)
            except StopIteration:
                return None
        item = self._queue.get()
        if item is _END:
            self._thread.join()
            self._thread = None
            return None
        if isinstance(item, _Failure):
            self._thread.join()
            self._thread = None
            raise item.exc
        return item

    def close(self) -> None:
        """Stop the background thread (if any)."""
        self._stop_thread()

    def __del__(self) -> None:  # the thread holds no reference to self, so this runs when the prefetcher is dropped
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _record_stream(batch: Any, stream: Any) -> None:
    if isinstance(batch, torch.Tensor):
        batch.record_stream(stream)
    elif isinstance(batch, Mapping):
        for v in batch.values():
            _record_stream(v, stream)
    elif isinstance(batch, (list, tuple)):
        for v in batch:
            _record_stream(v, stream)


class CUDAPrefetcher(_Prefetcher):
    """Copies each next batch's tensors to ``device`` on a side CUDA stream while the current batch is used.

    The loader should pin memory (``pin_memory: true``) so the copies are asynchronous. Strings and
    other non-tensors pass through unchanged.
    """

    def __init__(self, loader: Any, device: Union[str, torch.device]) -> None:
        device = torch.device(device)
        if device.type != "cuda" or not torch.cuda.is_available():
            raise OptionError(f"prefetch_mode: cuda needs a CUDA device, but this process runs on '{device}'. "
                              f"Fix: set prefetch_mode: ~ (or cpu) in the training dataset options.")
        self.ori_loader = loader
        self.device = device
        self.stream = torch.cuda.Stream(device=device)
        self._it: Optional[Iterator[Any]] = None
        self._next: Any = None

    def __len__(self) -> int:
        return len(self.ori_loader)

    def _preload(self) -> None:
        try:
            batch = next(self._it)
        except StopIteration:
            self._next = None
            return
        with torch.cuda.stream(self.stream):
            self._next = _to_device(batch, self.device)

    def reset(self) -> None:
        """Start a new pass over the loader (a new epoch) and begin copying its first batch."""
        self._it = iter(self.ori_loader)
        self._preload()

    def next(self) -> Optional[Any]:
        """The next batch (already on the device), or None at the end of the pass."""
        if self._it is None:
            self.reset()
        current = torch.cuda.current_stream(self.device)
        current.wait_stream(self.stream)
        batch = self._next
        if batch is not None:
            _record_stream(batch, current)  # the caching allocator must not reuse these while the step runs
            self._preload()
        return batch


def build_prefetcher(loader: Any, options: LoaderOptions,
                     device: Union[str, torch.device, None] = None) -> Union[CPUPrefetcher, CUDAPrefetcher]:
    """The prefetcher for ``prefetch_mode`` (~, cpu or cuda) around ``loader``.

    ``cuda`` requires ``device`` to be a CUDA device and ``pin_memory: true`` (else an
    :class:`OptionError` says which option to change).
    """
    mode = options.prefetch_mode
    if mode is None:
        return CPUPrefetcher(loader)
    if mode == "cpu":
        return CPUPrefetcher(loader, num_prefetch_queue=options.num_prefetch_queue)
    if mode != "cuda":
        raise OptionError(f"'{options.where}:prefetch_mode' = {mode!r} is unknown. Fix: use ~ (none), cpu or cuda.")
    if not options.pin_memory:
        raise OptionError(f"'{options.where}:prefetch_mode' is cuda but pin_memory is off; asynchronous copies need "
                          f"pinned memory. Fix: set pin_memory: true (or prefetch_mode: ~).")
    return CUDAPrefetcher(loader, device if device is not None else "cpu")
