"""Keep glibc from handing every large tensor back to the kernel between training steps.

A CPU training step allocates and frees the same few hundred activation and gradient tensors, up to hundreds of
MB each (PyTorch's CPU allocator does not cache). By default glibc maps every block above 32 MB afresh and unmaps
it on free, and gives the heap's free top back whenever it exceeds a threshold, so every step pays page faults and
the kernel's zeroing of all those pages again; at large batches and crops that kernel time can exceed the
computation. Serving every block from the heap and never trimming it lets a step reuse the previous step's memory
(step times in docs/benchmarks.md, "Training"). The price is a somewhat higher peak, as freed heap blocks do not
always coalesce. jemalloc or tcmalloc preloaded with ``LD_PRELOAD`` (the usual advice for PyTorch on CPUs) do the
same job; where glibc is not the allocator, this changes nothing that is used.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform
from typing import Optional

__all__ = ["keep_freed_memory", "release_free_memory"]

# glibc <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

_applied = False


@functools.lru_cache(maxsize=None)
def _glibc() -> Optional[ctypes.CDLL]:
    """The C library where it is glibc (the only allocator these settings apply to), else None."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def keep_freed_memory() -> bool:
    """Make glibc malloc reuse freed memory instead of returning it to the OS; True where it took effect.

    Process-wide and idempotent; data-loader workers forked afterwards inherit it. The resident size stays at
    the peak between steps instead of dropping and growing again.
    """
    global _applied
    libc = _glibc()
    if not _applied and libc is not None:
        # No block is served by mmap (the 32 MB ceiling of glibc's mmap threshold is far below the large
        # activations), and the heap's free top is never given back.
        _applied = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    return _applied


def release_free_memory() -> bool:
    """Hand the heap's free memory back to the OS once (``malloc_trim``), e.g. before measuring a peak."""
    libc = _glibc()
    return libc is not None and bool(libc.malloc_trim(0))
