"""Small helpers without project knowledge: seeding, paths, durations, atomic file writes."""
from __future__ import annotations

import contextlib
import errno
import os
import random
import shutil
import sys
import tempfile
import time
from typing import IO, Any, Iterator, List, Optional

import numpy as np
import torch

from DiffIR.utils.errors import DataError, DiskFullError


def shown_path(path: str) -> str:
    """``path`` as text that can always be printed: characters the terminal cannot show are written as escapes."""
    return str(path).encode("utf-8", "backslashreplace").decode("utf-8")


def path_encoding_problem(path: Any) -> Optional[str]:
    """Why ``path`` cannot be handed to the operating system (a character the file-system encoding cannot encode,
    e.g. a lone surrogate from a name decoded with the wrong encoding), or None. ``os.path.isfile`` would just say
    False for it, and open() raise a codec error."""
    if not isinstance(path, str):
        return None
    try:
        os.fsencode(path)
    except UnicodeEncodeError as e:
        return (f"'{shown_path(path)}' cannot be encoded in the file-system encoding ({sys.getfilesystemencoding()}): "
                f"the character {path[e.start]!r} at position {e.start} ({e.reason})")
    return None


def decode_utf8(data: bytes, source: str, fix: str) -> str:
    """``data`` decoded as UTF-8 (a leading byte-order mark is dropped); else a DataError naming ``source``, the
    line, column and byte offset of the first byte that is not UTF-8, and ``fix``."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(f"{source} is UTF-16 text, not UTF-8. Fix: {fix}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(f"{source} is not UTF-8 text: byte 0x{data[e.start]:02x} at line {line}, column {column} (byte "
                        f"offset {e.start}) is not valid UTF-8 (Latin-1 or Windows-1252 text looks like this). "
                        f"Fix: {fix}") from None


def set_random_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds every CUDA device too


def mkdir_and_rename(path: str) -> None:
    """Create ``path``; an existing folder is kept as ``path_archived_<time>`` instead of being mixed into.

    A second archive within the same second gets a ``_2``, ``_3`` ... suffix (a rename onto an existing empty
    folder would silently replace it). The caller holds the folder's run lock (DiffIR.utils.runlock).
    """
    if os.path.exists(path):
        base = new_name = f"{path}_archived_{time.strftime('%Y%m%d_%H%M%S')}"
        n = 1
        while os.path.exists(new_name):
            n += 1
            new_name = f"{base}_{n}"
        print(f"Path already exists. Rename it to {new_name}", flush=True)
        os.rename(path, new_name)
    os.makedirs(path, exist_ok=True)


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    days, rem = divmod(seconds, 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    return (f"{days}d " if days else "") + f"{h:d}:{m:02d}:{s:02d}"


def select_device(num_gpu: int, local_rank: Optional[int] = None) -> torch.device:
    """The device this process trains on: a CUDA device when GPUs were asked for and exist, else the CPU."""
    if num_gpu > 0 and torch.cuda.is_available():
        index = local_rank if local_rank is not None else 0
        return torch.device("cuda", index % torch.cuda.device_count())
    return torch.device("cpu")


def capture_rng_state() -> dict:
    """Python, NumPy, torch (and CUDA) RNG states as tensors and numbers, loadable with ``weights_only=True``."""
    version, internal, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "gauss": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["internal"].tolist()), py["gauss"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


_TEMP_PREFIX = ".tmp_"


def _target_mode(path: str) -> int:
    """The permission bits of ``path`` if it exists, else those a new file gets (0666 less the umask)."""
    try:
        return os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        pass
    try:  # Linux: read the umask without changing it (other threads may be creating files)
        with open("/proc/self/status") as f:
            mask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration):
        mask = os.umask(0)  # elsewhere the only way to read it; restored at once
        os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "wb", auto_mkdir: bool = True, **kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success flush, fsync and rename it over ``path``.

    A crash or error mid-write leaves the previous file intact (never a truncated one); the temporary file is
    removed on error. The one implementation of this pattern in the project.
    """
    folder = os.path.dirname(os.path.abspath(path))
    if auto_mkdir:
        os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_TEMP_PREFIX, suffix="_" + os.path.basename(path), dir=folder)
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            os.fchmod(f.fileno(), _target_mode(path))  # mkstemp makes 0600: keep what a plain open() would give
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        full = _disk_full_cause(e)
        if full is not None:
            raise _disk_full_error(path, folder, full) from full
        raise


# --- disk full: one message for every atomic write (kept apart from atomic_open's body on purpose) ---
# ENOSPC: the file system is full; EDQUOT: the user's quota on it is; EFBIG: the file passed the largest size this
# process may write (ulimit -f, RLIMIT_FSIZE) or the file system can hold (FAT32: 4 GiB). torch.save reports the
# last two only as "unexpected pos" otherwise.
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def _disk_full_cause(exc: BaseException) -> Optional[OSError]:
    """The ENOSPC/EDQUOT/EFBIG error behind ``exc``: torch.save turns the write's OSError into a RuntimeError whose
    context is the OSError, so the chain is searched too."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def _file_size_limit() -> str:
    """This process's largest writable file size (RLIMIT_FSIZE) in words, or that there is none set."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    except (ImportError, OSError, ValueError):
        soft = None
    if soft is None or soft == getattr(resource, "RLIM_INFINITY", -1):
        return ("no process limit is set (ulimit -f is unlimited), so it is the file system's largest file size "
                "(FAT32 holds at most 4 GiB)")
    return f"this process may write files of at most {soft} bytes (ulimit -f {soft // 1024})"


def _disk_full_error(path: str, folder: str, cause: OSError) -> "DiskFullError":
    """The message of a write that ran out of room (see :data:`_DISK_FULL`): the file, the limit met, the fix."""
    try:
        free = f"{shutil.disk_usage(folder).free / 2**20:.0f} MB free there now"
    except OSError:
        free = "free space unknown"
    kept = f"the previous {path} is intact" if os.path.exists(path) else "no partial file was left"
    if cause.errno == errno.EFBIG:
        text = (f"file size limit reached while writing {path}: {_file_size_limit()}. Raise the limit (ulimit -f "
                f"unlimited) or write to a file system that holds larger files, and run again ({kept}).")
    elif cause.errno == errno.EDQUOT:
        text = (f"disk quota exceeded while writing {path} ({free}, but your quota there is used up); free space "
                f"within your quota in {folder} (see: quota -s) or ask for a larger one, and run again ({kept}).")
    else:
        text = f"disk full while writing {path} ({free}); free space in {folder} and run again ({kept})."
    err = DiskFullError(text)
    err.errno = cause.errno
    return err


def remove_stale_temp_files(folder: str) -> List[str]:
    """Delete the temporary files that :func:`atomic_open` left in ``folder`` when its process was killed mid-write.

    Call it before writing into ``folder`` again (e.g. when a training run resumes); returns the removed paths.
    """
    if not os.path.isdir(folder):
        return []
    stale = sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.startswith(_TEMP_PREFIX))
    for path in stale:
        os.remove(path)
    return stale


def atomic_write_bytes(path: str, data: bytes, auto_mkdir: bool = True) -> None:
    """Write ``data`` atomically (see :func:`atomic_open`): results tables, images."""
    with atomic_open(path, "wb", auto_mkdir) as f:
        f.write(data)
