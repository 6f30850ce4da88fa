"""One run per experiment (or results, or inference output) folder: a lock file beside the folder, held for the run's
life.

``experiments/NAME.lock`` sits BESIDE ``experiments/NAME``, not inside it, because a new run archives an existing
folder (``NAME_archived_<time>``): a lock inside would move away with the folder it guards, and it must be taken
before that folder exists or is archived. The kernel's ``flock`` decides who holds the lock (it frees it when the
holder dies, even by ``kill -9``); the file's text (pid, host, start time) is only for the messages. A file left by
a dead holder is taken over with a warning. Where the file system has no ``flock``, the pid is checked instead.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import signal
import socket
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from DiffIR.utils.errors import RunInUse

try:
    import fcntl
except ImportError:  # not on POSIX: the pid check below is used
    fcntl = None  # type: ignore[assignment]

_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


def _describe(holder: Dict[str, Any]) -> str:
    return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} "
            f"since {holder.get('since', '?')}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


class RunLock:
    """The lock ``FOLDER.lock`` of an experiment (``what='experiment'``) or results folder.

    :meth:`acquire` raises :class:`RunInUse` naming the holder when a live process has it, and returns a warning
    when it took over the file of a holder that is gone; :meth:`release` removes the file.
    """

    def __init__(self, folder: str, what: str = "experiment", name: Optional[str] = None,
                 instead: str = "use another name") -> None:
        self.folder = os.path.abspath(folder)
        self.path = self.folder + ".lock"
        self.what = what
        self.name = os.path.basename(self.folder) if name is None else name  # how the messages call the folder
        self.instead = instead  # the other way out of a refusal than waiting
        self._fd: Optional[int] = None
        self._made_parent = False  # experiments/ (or results/) was created for the lock: removed again if left empty

    def _in_use(self, holder: Dict[str, Any], extra: str = "") -> RunInUse:
        return RunInUse(f"{self.what} {self.name} is in use by {_describe(holder)}; wait for it, or "
                        f"{self.instead} (lock file {self.path}){extra}")

    @staticmethod
    def _read(fd: int) -> Dict[str, Any]:
        os.lseek(fd, 0, os.SEEK_SET)
        raw = b""
        while chunk := os.read(fd, 4096):
            raw += chunk
        try:
            holder = json.loads(raw.decode("utf-8")) if raw.strip() else {}
        except (UnicodeDecodeError, json.JSONDecodeError):
            holder = {"pid": "?", "host": "?", "since": "? (unreadable lock file)"}
        return holder if isinstance(holder, dict) else {}

    def _write(self, fd: int) -> None:
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "command": " ".join(sys.argv)}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(record) + "\n").encode("utf-8"))
        os.fsync(fd)

    def _stale_warning(self, holder: Dict[str, Any]) -> str:
        return (f"Took over the lock of {self.what} {self.name} ({self.path}) left by {_describe(holder)}, which is "
                "no longer running (it ended without releasing it, e.g. killed).")

    def acquire(self) -> Optional[str]:
        """Take the lock; the warning text when a dead holder's file was taken over, else None."""
        parent = os.path.dirname(self.path)
        self._made_parent = not os.path.isdir(parent)
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as e:
            raise OSError(f"Cannot set up the {self.what} folder '{self.folder}': {e.strerror or e} "
                          f"({e.filename or parent}). Make {parent} a writable folder, or run from a copy of the "
                          "project where you can write.") from None
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if fcntl is None:
                    return self._acquire_by_pid(fd)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise self._in_use(self._read(fd)) from None
                except OSError as e:
                    if e.errno not in _NO_FLOCK:
                        raise
                    return self._acquire_by_pid(fd)
                # The holder may have released (and removed) the file between our open and flock: lock the
                # file that is at the path now.
                try:
                    same = os.path.samestat(os.fstat(fd), os.stat(self.path))
                except FileNotFoundError:
                    same = False
                if not same:
                    os.close(fd)
                    fd = -1
                    continue
                holder = self._read(fd)
                self._write(fd)
                self._fd, fd = fd, -1
                return self._stale_warning(holder) if holder else None
            finally:
                if fd >= 0 and self._fd != fd:
                    os.close(fd)

    def _acquire_by_pid(self, fd: int) -> Optional[str]:
        """Without ``flock``: the file's pid decides (alive on this host = in use; another host = cannot tell)."""
        holder = self._read(fd)
        warning = None
        if holder:
            if holder.get("host") != socket.gethostname():
                raise self._in_use(holder, f". This file system has no locks, so whether that run is still going "
                                           f"cannot be checked from here: if it is not, delete {self.path}")
            if isinstance(holder.get("pid"), int) and _pid_alive(holder["pid"]) and holder["pid"] != os.getpid():
                raise self._in_use(holder)
            warning = self._stale_warning(holder)
        self._write(fd)
        self._fd = fd
        return warning

    def release(self) -> None:
        """Remove the lock file and unlock (the order matters: no one may lock a file that is about to vanish)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if os.path.samestat(os.fstat(fd), os.stat(self.path)):
                os.remove(self.path)
        except FileNotFoundError:
            pass
        finally:
            os.close(fd)  # closing frees the flock
        if self._made_parent and not os.listdir(os.path.dirname(self.path)):
            # a run refused before it wrote anything leaves no trace (the folder may be refilled concurrently)
            with contextlib.suppress(OSError):
                os.rmdir(os.path.dirname(self.path))


_held: List[RunLock] = []


def hold_run_lock(folder: str, what: str, warn: Callable[[str], Any], **names: str) -> RunLock:
    """Lock ``folder`` until the enclosing :func:`holds_run_locks` function returns (or raises); ``names``: the
    ``name``/``instead`` wording of :class:`RunLock`."""
    lock = RunLock(folder, what, **names)
    warning = lock.acquire()
    _held.append(lock)
    if warning:
        warn(warning)
    return lock


def _terminate(signum: int, _frame: Any) -> None:
    os.write(2, f"\n{signal.Signals(signum).name} received: stopped.\n".encode())
    raise SystemExit(128 + signum)


#: ended like an exception by :func:`holds_run_locks` (SIGHUP: a closed terminal; not where nohup ignores it)
_ENDING_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


def holds_run_locks(func: Callable) -> Callable:
    """Decorator for a run (train, test): the locks it takes with :func:`hold_run_lock` are released however it ends.

    That includes SIGTERM and SIGHUP outside the training loop (the loop turns them into a saved state itself):
    here they end the run like an exception (exit status 143, 129), so the lock is released rather than left behind.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        mark = len(_held)
        previous = {}
        if threading.current_thread() is threading.main_thread():
            previous = {sig: signal.signal(sig, _terminate) for sig in _ENDING_SIGNALS
                        if signal.getsignal(sig) is signal.SIG_DFL}
        try:
            return func(*args, **kwargs)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            while len(_held) > mark:
                _held.pop().release()

    return wrapper
