"""The one exclusive file lock of the project, for short read-merge-write sections that several processes may run at
once (the dataset check cache, the generation of a synthetic data set).

It waits for the holder (``flock``, which the kernel frees when a holder dies) and is a no-op where the OS has no
``fcntl`` (Windows): those sections then run unlocked. Experiment folders use :class:`DiffIR.utils.runlock.RunLock`
instead, which must not wait, names the holder and works without ``flock``.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator, Union

__all__ = ["file_lock"]


@contextlib.contextmanager
def file_lock(path: Union[str, "os.PathLike[str]"]) -> Iterator[None]:
    """Hold an exclusive advisory lock on the file ``path`` (created, with its folder, if missing) for the block."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: run without a lock
        yield
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
