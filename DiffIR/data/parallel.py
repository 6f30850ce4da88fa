"""Decoding many images in worker threads, in order: shared by the dataset checks and the LMDB writer."""
from __future__ import annotations

import collections
import concurrent.futures as cf
import os
from typing import Callable, Iterable, Iterator, TypeVar

__all__ = ["parallel_map", "default_threads"]

T = TypeVar("T")
R = TypeVar("R")


def default_threads() -> int:
    """The decoding threads when none are asked for: the CPU count, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


def parallel_map(fn: Callable[[T], R], items: Iterable[T], workers: int, ahead: int = 4) -> Iterator[R]:
    """``map(fn, items)`` over a thread pool, in order, with at most ``workers * ahead`` items in flight.

    Image decoders release the GIL, so threads scale on CPU-bound decoding too.
    """
    if workers <= 1:
        for it in items:
            yield fn(it)
        return
    with cf.ThreadPoolExecutor(max_workers=workers) as pool:
        pending: collections.deque = collections.deque()
        for it in items:
            pending.append(pool.submit(fn, it))
            if len(pending) >= workers * ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
