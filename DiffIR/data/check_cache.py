"""The dataset checks' cache: per-file results keyed by the file's size and modification time, so a restart checks
only new or changed files. One JSON file per set of data roots, under ``check_cache_dir`` (default
:func:`default_cache_dir`), never in the data folders (they may be read-only).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any, Dict, NamedTuple, Optional, Sequence, Tuple, Type, TypeVar

from DiffIR.data.pair_problems import PixelCounts
from DiffIR.utils.file_lock import file_lock
from DiffIR.utils.misc import atomic_open

logger = logging.getLogger("DiffIR")

__all__ = ["CACHE_VERSION", "CheckCache", "ImageFacts", "DgainFacts", "DGAIN_RULES", "default_cache_dir"]

#: version 2: entries are JSON objects with named fields (version 1 stored positional lists); an entry without
#: a field the result type has now (``channels``, ``peak``) is a miss, so such files are read again once
CACHE_VERSION = 2


def default_cache_dir() -> str:
    """``$DIFFIR_CACHE_DIR``, else ``$XDG_CACHE_HOME/diffir-hdr/dataset_checks``, else ``~/.cache/...``."""
    env = os.environ.get("DIFFIR_CACHE_DIR")
    if env:
        return env
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "diffir-hdr", "dataset_checks")


class ImageFacts(NamedTuple):
    """What the check knows of one image file: its size and channels from the header, its pixels once decoded."""

    height: int
    width: int
    scanned: bool = False  # pixels decoded: the counts below (and the peak) are meaningful
    nonfinite: int = 0
    negative: int = 0
    channels: int = 0  # as stored (1: grey; 0: not known)
    peak: float = 0.0


#: the rules dgain files were read by; a cached entry read by other rules is read again (2: plain decimal numbers,
#: a key twice with different values refused)
DGAIN_RULES = 2


class DgainFacts(NamedTuple):
    """The values of one dgain entry (kept to warn about implausible ones without reading it again)."""

    dgain: float
    gamma: float
    rules: int = DGAIN_RULES


#: the result types a cache entry may hold
Facts = TypeVar("Facts", ImageFacts, DgainFacts, PixelCounts)


class CheckCache:
    """Per-file check results keyed by (size, mtime_ns), one JSON file per set of data roots.

    An entry is a JSON object ``{"size", "mtime_ns", <the result's fields>}``; one whose fields do not
    match the asked result type is a miss. Saving merges with what other processes wrote meanwhile
    (under a lock file where the OS has ``fcntl``) and replaces the file atomically.
    ``cache_dir=False`` disables the cache.
    """

    def __init__(self, roots: Sequence[str], cache_dir: Any = None) -> None:
        self.roots = [os.path.realpath(str(r)) for r in roots]
        self.enabled = cache_dir is not False
        self.path: Optional[str] = None
        self.entries: Dict[str, Dict[str, Any]] = {}
        self.changed: Dict[str, Dict[str, Any]] = {}
        if not self.enabled:
            return
        folder = str(cache_dir) if cache_dir else default_cache_dir()
        digest = hashlib.sha1(json.dumps(self.roots).encode("utf-8")).hexdigest()[:20]
        self.path = os.path.join(folder, f"{digest}.json")
        self.entries = self._load()

    def _load(self) -> Dict[str, Dict[str, Any]]:
        try:
            with open(self.path, "r", encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            logger.warning(f"Dataset check cache '{self.path}' is unreadable ({e}); it will be rebuilt.")
            return {}
        if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or data.get("roots") != self.roots:
            return {}
        files = data.get("files")
        return files if isinstance(files, dict) else {}

    @staticmethod
    def stat(path: str) -> Tuple[int, int]:
        st = os.stat(path)
        return int(st.st_size), int(st.st_mtime_ns)

    def get(self, key: str, st: Tuple[int, int], kind: Type[Facts]) -> Optional[Facts]:
        """The ``kind`` result stored for ``key`` when the file still has the stat ``st``, else None."""
        e = self.entries.get(key)
        if not isinstance(e, dict) or e.get("size") != st[0] or e.get("mtime_ns") != st[1]:
            return None
        try:
            return kind(**{f: e[f] for f in kind._fields})
        except KeyError:
            return None

    def put(self, key: str, st: Tuple[int, int], result: Facts) -> None:
        entry = {"size": st[0], "mtime_ns": st[1], **result._asdict()}
        self.entries[key] = entry
        self.changed[key] = entry

    def save(self) -> None:
        if not self.enabled or not self.changed or self.path is None:
            return
        folder = os.path.dirname(self.path)
        try:
            os.makedirs(folder, exist_ok=True)
            with file_lock(self.path + ".lock"):
                merged = self._load()
                merged.update(self.changed)
                with atomic_open(self.path, "w", encoding="utf-8") as f:
                    json.dump({"version": CACHE_VERSION, "roots": self.roots, "files": merged}, f,
                              separators=(",", ":"))
            self.changed = {}
        except OSError as e:
            logger.warning(f"Cannot write the dataset check cache '{self.path}' ({e}); the next start checks the files "
                           f"again. Fix: set check_cache_dir (or $DIFFIR_CACHE_DIR) to a writable folder.")
            self.enabled = False
