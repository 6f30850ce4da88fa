"""Dataset checks with clear errors, run before training starts, and their cache.

Levels (the dataset's ``check`` option; ``scripts/check_dataset.py`` runs ``full``):

* ``quick``: pairing (done by the reader), every dgain entry (``dgain``/``gamma`` present, finite,
  > 0), image sizes and channels read from the file headers (LQ and GT of a pair must agree in size, and a
  grey image cannot pair with a colour one; images smaller than ``gt_size`` are padded or refused by
  ``small_images``; an integer ``.npy`` GT is not linear HDR), truncated JPEG/PNG/.npy files (their
  ends are cheap to look at); its cost per pair is small and a cached run reads only stats (timings in
  docs/benchmarks.md).
* ``full``: ``quick`` plus a decode of every image: unreadable or truncated files, NaN/Inf in an
  HDR (an error), negative HDR values (clamped to 0 in training; reported with a count), HDR peaks far
  above the dataset's ``hdr_max`` (a note: such highlights are clipped by the network domain).
* ``off``: nothing beyond pairing.

Results are cached per file, keyed by the file's size and modification time, in a JSON file under
``check_cache_dir`` (default ``$DIFFIR_CACHE_DIR``, else ``$XDG_CACHE_HOME/diffir-hdr/dataset_checks``,
else ``~/.cache/diffir-hdr/dataset_checks``), never in the data folders (they may be read-only). A
restart reads only new or changed files. An unwritable cache folder only costs a warning. Under DDP
each rank decodes its own share of the files (rank r: pairs r, r + world, ...), so a first full scan
is split over the ranks; a problem found by any rank stops the job.

LMDBs built by :func:`DiffIR.data.lmdb_io.create_lmdb_hdr` were fully checked when written (the
writer refuses NaN/Inf, unreadable images and size mismatches); their ``full`` check reads the
writer's record instead of decoding again. The origin fork's pickled LMDBs are decoded.
"""
from __future__ import annotations

import collections
import concurrent.futures as cf
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import (Any, Callable, Dict, Iterable, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Type,
                    TypeVar)

import numpy as np

from DiffIR.data.dgain import implausible_exposure, read_dgain_file
from DiffIR.data.pairing import MAX_LISTED, PairingError, collect_pairing_problems, format_names
from DiffIR.utils.hdr_io import ImageIOError, Window, WindowArg, read_hdr, read_image_info, read_ldr
from DiffIR.utils.misc import atomic_open
from DiffIR.utils.errors import OptionError

logger = logging.getLogger("DiffIR")

LEVELS = ("quick", "full", "off")
SMALL_IMAGE_POLICIES = ("pad", "error")
#: version 2: entries are JSON objects with named fields (version 1 stored positional lists); an entry without
#: a field the result type has now (``channels``, ``peak``) is a miss, so such files are read again once
CACHE_VERSION = 2
#: an HDR whose peak exceeds ``hdr_max`` by more than this factor is reported: the network domain (and every output)
#: ends at ``hdr_max``, so its highlights cannot be learnt. Real data overshoots a little (the AIM peak of 1000 is
#: a convention, not a clip); twice the peak is a wrong ``hdr_max`` or data in other units.
HDR_MAX_HEADROOM = 2.0
#: a window function of the image size, as the readers take it
WindowFn = Callable[[int, int], Optional[Window]]

__all__ = [
    "LEVELS",
    "SMALL_IMAGE_POLICIES",
    "DatasetCheckError",
    "UnpairedSetError",
    "CheckReport",
    "CheckCache",
    "ImageFacts",
    "DgainFacts",
    "implausible_exposure_entry",
    "implausible_exposure_note",
    "PixelCounts",
    "default_cache_dir",
    "CheckSettings",
    "check_reader",
    "check_options_file",
    "size_mismatch_message",
    "channel_mismatch_message",
    "HDR_MAX_HEADROOM",
    "nonfinite_message",
    "too_small_message",
    "count_bad_pixels",
    "paired_windows",
    "check_file_tail",
    "parallel_map",
]

# error kinds, in report order, with a title
_KINDS = collections.OrderedDict(
    pairing="pairing problem(s)",
    unreadable="unreadable or truncated image(s)",
    size_mismatch="pair(s) whose LQ and GT sizes differ",
    channel_mismatch="pair(s) of a grey and a colour image",
    nonfinite="HDR image(s) with NaN or Inf values",
    dgain="bad dgain entr(y/ies)",
    too_small="image(s) smaller than gt_size",
)


class DatasetCheckError(ValueError):
    """The data set has problems that would break or silently spoil training; the message lists them."""


class UnpairedSetError(DatasetCheckError, PairingError):
    """A failed check that includes pairing problems (catchable as either kind)."""


# ----------------------------------------------------------------------------------------------
# messages (also used by the readers and the LMDB writer, so every path says the same thing)
# ----------------------------------------------------------------------------------------------
def size_mismatch_message(lq_name: str, lq_hw: Sequence[int], gt_name: str, gt_hw: Sequence[int]) -> str:
    return (f"Size mismatch: LQ '{lq_name}' is {lq_hw[0]}x{lq_hw[1]} but GT '{gt_name}' is {gt_hw[0]}x{gt_hw[1]} "
            f"(H x W). Fix: LQ and GT of a pair must have the same size; re-export one of them or remove the pair.")


def channel_mismatch_message(lq_name: str, lq_channels: int, gt_name: str, gt_channels: int) -> Optional[str]:
    """The error for a grey image paired with a colour one (channels as stored, 0: not known), else None."""
    if not (lq_channels and gt_channels) or (lq_channels == 1) == (gt_channels == 1):
        return None

    def kind(channels: int) -> str:
        return "grey (1 channel)" if channels == 1 else f"colour ({channels} channels)"

    return (f"Channel mismatch: LQ '{lq_name}' is {kind(lq_channels)} but GT '{gt_name}' is {kind(gt_channels)}. "
            f"Fix: the LQ must be a rendering of its GT (a grey image is replicated to RGB, so the network would "
            f"learn to add or drop colour): re-export the grey one in colour, or remove the pair.")


def nonfinite_message(gt_name: str, count: Optional[int] = None) -> str:
    n = f"{count} " if count is not None else ""
    return (f"HDR '{gt_name}' has {n}NaN or Inf value(s). Fix: re-export the file (NaN/Inf cannot be learnt and "
            f"would poison every loss), or remove the pair from the set.")


def too_small_message(name: str, hw: Sequence[int], gt_size: int) -> str:
    return (f"'{name}' is {hw[0]}x{hw[1]}, smaller than gt_size={gt_size}. Fix: set small_images: pad (reflect-pad "
            f"small images), lower gt_size, or remove the pair.")


def paired_windows(window: WindowArg, lq_name: str, gt_name: str) -> Tuple[WindowFn, WindowFn]:
    """Window functions for reading a pair: the LQ one resolves ``window`` (a tuple, a function of the
    size, or None) once from the LQ size; the GT one checks that the GT has the same size (else the
    size-mismatch error naming both files) and returns the same window."""
    seen: Dict[str, Any] = {}

    def lq_window(h: int, w: int) -> Optional[Window]:
        seen["hw"] = (h, w)
        seen["win"] = window(h, w) if callable(window) else window
        return seen["win"]

    def gt_window(h: int, w: int) -> Optional[Window]:
        if "hw" not in seen:
            return lq_window(h, w)
        if (h, w) != seen["hw"]:
            raise ValueError(size_mismatch_message(lq_name, seen["hw"], gt_name, (h, w)))
        return seen["win"]

    return lq_window, gt_window


class PixelCounts(NamedTuple):
    """The values of an HDR image that training cannot use as they are, and its peak."""

    nonfinite: int  # NaN/Inf: an error
    negative: int  # clamped to 0 when loaded: a note
    peak: float = 0.0  # the largest finite value: far above hdr_max, a note


def count_bad_pixels(hdr: np.ndarray) -> PixelCounts:
    """The NaN/Inf and negative values of an HDR array, and its largest finite value."""
    finite = np.isfinite(hdr)
    nonfinite = int(hdr.size - np.count_nonzero(finite))
    negative = int(np.count_nonzero(hdr < 0))
    peak = hdr.max(initial=0.0) if not nonfinite else np.max(hdr, initial=0.0, where=finite)
    return PixelCounts(nonfinite, negative, float(peak))


def check_file_tail(path: str) -> None:
    """Raise :class:`ImageIOError` if a JPEG/PNG file visibly lacks its end marker (cheap truncation test)."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".jpg", ".jpeg", ".png"):
        return
    end = b"\xff\xd9" if ext != ".png" else b"IEND"
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        for span in (1024, 65536):  # the marker is normally in the last bytes; allow some trailing data
            f.seek(max(0, size - span))
            tail = f.read()
            if end in tail:
                return
    what = "JPEG (no end-of-image marker)" if ext != ".png" else "PNG (no IEND chunk)"
    raise ImageIOError(f"LDR image '{path}' is a truncated {what}. Fix: re-export or re-download it.")


# ----------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------
def implausible_exposure_entry(name: str, dgain: float, gamma: float) -> Optional[str]:
    """``"<name> (what is implausible)"`` for a dgain entry outside the plausible ranges (see
    :func:`DiffIR.data.dgain.implausible_exposure`), else None."""
    odd = implausible_exposure(dgain, gamma)
    return f"{name} ({odd})" if odd else None


def implausible_exposure_note(entries: Sequence[str], where: str) -> str:
    """The warning about the :func:`implausible_exposure_entry` entries of ``where`` (a data set, a folder): the
    data is used, but such values are usually a swapped or mis-scaled file. Training, the dataset check and
    inference give this same warning."""
    return (f"{len(entries)} dgain entr(y/ies) of '{where}' have implausible values (used as they are; check for "
            f"swapped or mis-scaled files): {format_names(entries)}")


class CheckReport:
    """What a check found: errors by kind (each message names the file and the fix) and notes."""

    def __init__(self, where: str, level: str, n_pairs: int) -> None:
        self.where = where
        self.level = level
        self.n_pairs = n_pairs
        self.errors: Dict[str, List[str]] = collections.OrderedDict((k, []) for k in _KINDS)
        self.negatives: List[Tuple[str, int]] = []
        self.over_peak: List[Tuple[str, float]] = []  # HDR images far above hdr_max: (name, peak)
        self.hdr_max: Optional[float] = None
        self.peaks_unchecked = ""  # why the peaks could not be compared with hdr_max (a note)
        self.smallest: Optional[Tuple[str, int, int]] = None  # (GT name, height, width) of the narrowest pair
        self.padded: List[str] = []
        self.odd_exposure: List[str] = []  # "<dgain file> (what is implausible)"
        self.decoded = 0
        self.from_cache = 0
        self.seconds = 0.0
        self.note = ""

    def add(self, kind: str, message: str) -> None:
        self.errors[kind].append(message)

    @property
    def ok(self) -> bool:
        return not any(self.errors.values())

    def error_text(self, limit: Optional[int] = MAX_LISTED) -> str:
        parts = []
        for kind, msgs in self.errors.items():
            if not msgs:
                continue
            shown = msgs if limit is None else msgs[:limit]
            more = f"\n    ... and {len(msgs) - len(shown)} more" if len(shown) < len(msgs) else ""
            parts.append(f"  {len(msgs)} {_KINDS[kind]}:\n    " + "\n    ".join(shown) + more)
        return "\n".join(parts)

    def raise_if_errors(self, limit: Optional[int] = MAX_LISTED) -> None:
        if self.ok:
            return
        unpaired = bool(self.errors["pairing"])
        off = ("set check: off in the dataset options only if you accept the per-file problems (pairing problems "
               "stop training in any case)." if unpaired else
               "set check: off in the dataset options only if you accept these problems.")
        raise (UnpairedSetError if unpaired else DatasetCheckError)(
            f"Data set '{self.where}' failed the {self.level} check ({self.n_pairs} pairs):\n{self.error_text(limit)}\n"
            f"Nothing was trained. Fix the files named above (python scripts/check_dataset.py -opt <options> lists "
            f"every problem); {off}"
        )

    def note_exposure(self, name: str, dgain: float, gamma: float) -> None:
        """Remember a dgain entry with implausible values (a warning, see ``DiffIR.data.dgain``)."""
        entry = implausible_exposure_entry(name, dgain, gamma)
        if entry:
            self.odd_exposure.append(entry)

    def notes(self) -> List[str]:
        """Warnings that do not stop training (negative HDR values, padded images, implausible dgain/gamma)."""
        out = []
        if self.negatives:
            total = sum(n for _, n in self.negatives)
            names = [f"{name} ({n})" for name, n in sorted(self.negatives, key=lambda t: -t[1])]
            out.append(f"{len(self.negatives)} HDR image(s) of '{self.where}' have negative values ({total} in all), "
                       f"clamped to 0 when loaded: {format_names(names)}")
        if self.padded:
            out.append(f"{len(self.padded)} pair(s) of '{self.where}' are smaller than gt_size and are reflect-padded "
                       f"(small_images: pad): {format_names(self.padded)}")
        if self.odd_exposure:
            out.append(implausible_exposure_note(self.odd_exposure, self.where))
        if self.over_peak:
            peak = max(p for _, p in self.over_peak)
            names = [f"{name} ({p:.6g})" for name, p in sorted(self.over_peak, key=lambda t: -t[1])]
            out.append(f"{len(self.over_peak)} HDR image(s) of '{self.where}' exceed hdr_max={self.hdr_max:g} more "
                       f"than {HDR_MAX_HEADROOM:g}-fold (peak {peak:.6g}): set hdr_max to the data's peak (the network "
                       f"domain and every output end at hdr_max, so brighter highlights cannot be learnt): "
                       f"{format_names(names)}")
        if self.peaks_unchecked:
            out.append(self.peaks_unchecked)
        return out

    def summary(self) -> str:
        state = "OK" if self.ok else "FAILED"
        extra = f", {self.note}" if self.note else ""
        return (f"Dataset check ({self.level}) of '{self.where}': {self.n_pairs} pairs {state} "
                f"({self.decoded} decoded, {self.from_cache} from the check cache, {self.seconds:.1f}s{extra}).")


# ----------------------------------------------------------------------------------------------
# cache
# ----------------------------------------------------------------------------------------------
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
            with _file_lock(self.path + ".lock"):
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


class _file_lock:
    """An exclusive ``flock`` on ``path`` where available (POSIX); a no-op elsewhere."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd: Optional[int] = None

    def __enter__(self) -> "_file_lock":
        try:
            import fcntl
        except ImportError:  # not POSIX: merge without a lock
            return self
        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing releases the lock
            self.fd = None


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
T = TypeVar("T")
R = TypeVar("R")


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


class _Progress:
    """Log ``done/total`` with rate and ETA at most every ``every`` seconds (for long scans)."""

    def __init__(self, what: str, total: int, log: Callable[[str], None], every: float = 10.0) -> None:
        self.what, self.total, self.log, self.every = what, total, log, every
        self.t0 = self.last = time.time()
        self.done = 0

    def step(self, n: int = 1) -> None:
        self.done += n
        now = time.time()
        if now - self.last >= self.every and self.done < self.total:
            self.last = now
            rate = self.done / max(now - self.t0, 1e-9)
            eta = (self.total - self.done) / max(rate, 1e-9)
            self.log(f"{self.what}: {self.done}/{self.total} ({rate:.1f}/s, ETA {eta:.0f}s)")


def _default_threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def _error_text(e: BaseException) -> str:
    return str(e).strip() or type(e).__name__


# ----------------------------------------------------------------------------------------------
# settings and one run
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CheckSettings:
    """How a data set is checked (see the module docstring for the levels); ``run`` checks a reader.

    ``shard = (rank, world)`` splits the pixel decode over DDP ranks; ``cache_dir`` as in
    :class:`CheckCache`; ``threads`` defaults to the CPU count (at most 8); ``log`` to the project logger.
    """

    level: str = "full"
    gt_size: Optional[int] = None
    small_images: str = "pad"
    where: str = "datasets"
    cache_dir: Any = None
    shard: Tuple[int, int] = (0, 1)
    threads: Optional[int] = None
    log: Optional[Callable[[str], None]] = None
    hdr_max: Optional[float] = None  # the dataset's: HDR peaks far above it are reported (None: not an HDR set)

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise OptionError(f"'{self.where}:check' = '{self.level}' is unknown. Fix: use one of {', '.join(LEVELS)}.")
        if self.small_images not in SMALL_IMAGE_POLICIES:
            raise OptionError(f"'{self.where}:small_images' = '{self.small_images}' is unknown. Fix: use pad or error.")

    def run(self, reader: Any) -> CheckReport:
        """Check every pair ``reader`` serves (a disk or LMDB pair reader); ``raise_if_errors()`` stops on problems."""
        report = CheckReport(self.where, self.level, len(reader))
        report.hdr_max = self.hdr_max
        if self.level == "off":
            return report
        t0 = time.time()
        run = _CheckRun(self, reader, report, CheckCache(reader.roots(), self.cache_dir))
        (_check_lmdb if getattr(reader, "backend", "disk") == "lmdb" else _check_disk)(run)
        run.cache.save()
        report.seconds = time.time() - t0
        return report


class _CheckRun:
    """One check of one reader: its settings, report and cache, and the verdicts both backends share."""

    def __init__(self, settings: CheckSettings, reader: Any, report: CheckReport, cache: CheckCache) -> None:
        self.settings, self.reader, self.report, self.cache = settings, reader, report, cache
        self.log = settings.log or logger.info
        self.threads = settings.threads or _default_threads()

    def mine(self, index: int) -> bool:
        """Whether this rank decodes pair ``index`` (rank r: pairs r, r + world, ...)."""
        rank, world = self.settings.shard
        return index % world == rank

    def progress(self, total: int) -> "_Progress":
        return _Progress(f"Checking pixels of '{self.report.where}'", total, self.log)

    def sizes_ok(self, lq_name: str, lq_hw: Sequence[int], gt_name: str, gt_hw: Sequence[int],
                 channels: Tuple[int, int] = (0, 0)) -> bool:
        """Report a size mismatch or a grey image paired with a colour one (``channels`` of LQ and GT as stored,
        0: not known) (False: the pair is unusable), or a pair smaller than ``gt_size``."""
        if tuple(lq_hw) != tuple(gt_hw):
            self.report.add("size_mismatch", size_mismatch_message(lq_name, lq_hw, gt_name, gt_hw))
            return False
        smallest = self.report.smallest
        if smallest is None or min(gt_hw) < min(smallest[1:]):
            self.report.smallest = (gt_name, int(gt_hw[0]), int(gt_hw[1]))
        mismatch = channel_mismatch_message(lq_name, channels[0], gt_name, channels[1])
        if mismatch:
            self.report.add("channel_mismatch", mismatch)
            return False
        gt_size = self.settings.gt_size
        if gt_size and (gt_hw[0] < gt_size or gt_hw[1] < gt_size):
            if self.settings.small_images == "error":
                self.report.add("too_small", too_small_message(gt_name, gt_hw, gt_size))
            else:
                self.report.padded.append(os.path.basename(gt_name))
        return True

    def note_pixels(self, gt_name: str, counts: PixelCounts) -> None:
        """NaN/Inf values are an error; negative values and a peak far above ``hdr_max`` are notes."""
        if counts.nonfinite:
            self.report.add("nonfinite", nonfinite_message(gt_name, counts.nonfinite))
            return
        if counts.negative:
            self.report.negatives.append((os.path.basename(gt_name), int(counts.negative)))
        hdr_max = self.settings.hdr_max
        if hdr_max and counts.peak > HDR_MAX_HEADROOM * hdr_max:
            self.report.over_peak.append((os.path.basename(gt_name), float(counts.peak)))


# ----------------------------------------------------------------------------------------------
# disk backend
# ----------------------------------------------------------------------------------------------
def _cache_key(role: str, path: str) -> str:
    """Cache keys are relative to the (realpath) roots that name the cache file: ``gt/im_1.hdr``."""
    return f"{role}/{os.path.basename(path)}"


@dataclass
class _ImageFile:
    """One image of a pair while it is checked: its cache key and stat, and what is known of it."""

    role: str
    path: str
    stat: Tuple[int, int] = (0, 0)
    facts: Optional[ImageFacts] = None  # None: unreadable

    @property
    def key(self) -> str:
        return _cache_key(self.role, self.path)

    def remember(self, cache: CheckCache, facts: ImageFacts) -> None:
        self.facts = facts
        cache.put(self.key, self.stat, facts)


@dataclass
class _Pair:
    rec: Mapping[str, str]
    lq: _ImageFile
    gt: _ImageFile
    bad: bool = False  # a problem was reported: no further checks of this pair


def _check_disk(run: _CheckRun) -> None:
    """Headers and dgain entries of every pair; with ``full`` the pixels too (from the cache where it can)."""
    pairs = [_check_disk_pair(run, rec) for rec in run.reader.records]
    if run.settings.level == "full":
        _scan_disk_pixels(run, pairs)
    for pair in pairs:  # what is known about pixels: this run's scan or the cache
        gt = pair.gt.facts
        if gt is not None and gt.scanned and not (gt.nonfinite and pair.bad):
            run.note_pixels(pair.rec["gt_path"], PixelCounts(gt.nonfinite, gt.negative, gt.peak))


def _check_disk_pair(run: _CheckRun, rec: Mapping[str, str]) -> _Pair:
    """The quick part for one pair: cheap (stats, and headers of new or changed files only)."""
    pair = _Pair(rec, _ImageFile("lq", rec["lq_path"]), _ImageFile("gt", rec["gt_path"]))
    dpath = rec.get("dgain_path")  # None for pair formats without dgain
    if dpath is not None and not _check_dgain_file(run, dpath):
        pair.bad = True
    for image in (pair.lq, pair.gt):
        err = _read_header(run, image)
        if err is not None:
            run.report.add("unreadable", err)
            pair.bad = True
    lq, gt = pair.lq.facts, pair.gt.facts
    if lq is not None and gt is not None:
        if not run.sizes_ok(rec["lq_path"], (lq.height, lq.width), rec["gt_path"], (gt.height, gt.width),
                            (lq.channels, gt.channels)):
            pair.bad = True
    return pair


def _check_dgain_file(run: _CheckRun, path: str) -> bool:
    """Check one dgain file (cached); False after reporting a problem."""
    try:
        st = run.cache.stat(path)
        key = _cache_key("dgain", path)
        facts = run.cache.get(key, st, DgainFacts)
        if facts is None or facts.rules != DGAIN_RULES:
            vals = read_dgain_file(path)
            facts = DgainFacts(vals["dgain"], vals["gamma"])
            run.cache.put(key, st, facts)
        else:
            run.report.from_cache += 1
    except (OSError, ValueError) as e:
        run.report.add("dgain", _error_text(e))
        return False
    run.report.note_exposure(os.path.basename(path), facts.dgain, facts.gamma)
    return True


def _read_header(run: _CheckRun, image: _ImageFile) -> Optional[str]:
    """Fill ``image.stat``/``facts`` from the cache or the file's header; the error message, if any."""
    try:
        image.stat = run.cache.stat(image.path)
    except OSError as e:
        return f"'{image.path}': {e.strerror or e}. Fix: check the file's permissions or restore it."
    image.facts = run.cache.get(image.key, image.stat, ImageFacts)
    if image.facts is not None:
        run.report.from_cache += 1
        return None
    try:
        check_file_tail(image.path)
        info = read_image_info(image.path)
    except (OSError, ValueError) as e:
        return _error_text(e)
    image.remember(run.cache, ImageFacts(info.height, info.width, channels=info.channels))
    return None


def _scan_disk_pixels(run: _CheckRun, pairs: Sequence[_Pair]) -> None:
    """Decode this rank's share of the pairs whose pixels are not known yet, and cache what they hold."""
    todo = [pair for i, pair in enumerate(pairs) if run.mine(i) and not pair.bad
            and not (pair.lq.facts.scanned and pair.gt.facts.scanned)]
    rank, world = run.settings.shard
    if world > 1:
        run.report.note = f"rank {rank} of {world} decoded its share"
    read_gt = read_hdr if getattr(run.reader, "gt_hdr", True) else read_ldr
    progress = run.progress(len(todo))
    for pair, err, counts in parallel_map(lambda p: _decode_pair(p, read_gt), todo, run.threads):
        progress.step()
        run.report.decoded += 1
        if err is not None:
            run.report.add("unreadable", err)
            pair.bad = True
            continue
        if not pair.lq.facts.scanned:
            pair.lq.remember(run.cache, pair.lq.facts._replace(scanned=True))
        if counts is not None:
            pair.gt.remember(run.cache, pair.gt.facts._replace(scanned=True, **counts._asdict()))


def _decode_pair(pair: _Pair,
                 read_gt: Callable[[str], np.ndarray]) -> Tuple[_Pair, Optional[str], Optional[PixelCounts]]:
    """``(pair, error message, GT pixel counts)``; runs in a worker thread, so it only reads."""
    counts = None
    try:
        if not pair.lq.facts.scanned:
            err = _decoded_size_error("LDR", pair.lq, read_ldr(pair.lq.path))
            if err is not None:
                return pair, err, None
        if not pair.gt.facts.scanned:
            hdr = read_gt(pair.gt.path)
            err = _decoded_size_error("HDR", pair.gt, hdr)
            if err is not None:
                return pair, err, None
            counts = count_bad_pixels(hdr)
    except (OSError, ValueError) as e:
        return pair, _error_text(e), None
    return pair, None, counts


def _decoded_size_error(what: str, image: _ImageFile, img: np.ndarray) -> Optional[str]:
    """A decoded image whose size differs from its header's is damaged."""
    h, w = img.shape[:2]
    if (h, w) == (image.facts.height, image.facts.width):
        return None
    return (f"{what} image '{image.path}' decodes to {h}x{w} but its header says "
            f"{image.facts.height}x{image.facts.width}. Fix: re-export it.")


# ----------------------------------------------------------------------------------------------
# LMDB backend
# ----------------------------------------------------------------------------------------------
def _check_lmdb(run: _CheckRun) -> None:
    """Sizes from meta_info.txt and every dgain entry; with ``full`` the writer's record or a decode."""
    good = [_check_lmdb_pair(run, i) for i in range(len(run.reader))]
    if run.settings.level != "full":
        return
    validated = run.reader.validation()
    if validated is not None:  # our format: the writer decoded and checked every record
        run.report.note = "pixels checked when the LMDB was written"
        for key, count in sorted(validated.get("negatives", {}).items()):
            run.report.negatives.append((key, int(count)))
        if run.settings.hdr_max:
            run.report.peaks_unchecked = (
                f"The HDR peaks of '{run.report.where}' were not compared with hdr_max={run.settings.hdr_max:g}: the "
                f"LMDB records no peaks. Run python scripts/check_dataset.py on options naming the source folders "
                f"to compare them.")
        return
    _scan_lmdb_pixels(run, good)


def _check_lmdb_pair(run: _CheckRun, index: int) -> bool:
    """The quick part for one pair; False after reporting a problem that makes the pair unusable."""
    reader, ok = run.reader, True
    names = reader.paths(index)
    if getattr(reader, "has_dgain", True):
        try:
            vals = reader.read_dgain(index)
            run.report.note_exposure(names.get("dgain_path", str(index)), vals["dgain"], vals["gamma"])
        except (OSError, ValueError) as e:
            run.report.add("dgain", _error_text(e))
            ok = False
    lq_hw, gt_hw = reader.header_size(index, "lq"), reader.header_size(index, "gt")
    if lq_hw is not None and gt_hw is not None:
        ok = run.sizes_ok(names["lq_path"], lq_hw, names["gt_path"], gt_hw) and ok
    return ok


def _scan_lmdb_pixels(run: _CheckRun, good: Sequence[bool]) -> None:
    """Legacy (pickled) LMDB: decode each GT record; the cache is keyed by the databases' own size/mtime."""
    reader = run.reader
    fp = reader.fingerprint()
    todo = []
    for i in range(len(reader)):
        counts = run.cache.get(f"lmdb:{reader.paths(i)['gt_path']}", fp, PixelCounts)
        if counts is not None:
            run.report.from_cache += 1
            run.note_pixels(reader.paths(i)["gt_path"], counts)
        elif good[i] and run.mine(i):
            todo.append(i)
    progress = run.progress(len(todo))

    def scan(i: int) -> Tuple[int, Optional[str], Optional[PixelCounts]]:
        try:
            return i, None, count_bad_pixels(reader.read(i)["gt"])
        except (OSError, ValueError) as e:
            return i, _error_text(e), None

    for i, err, counts in parallel_map(scan, todo, run.threads):
        progress.step()
        run.report.decoded += 1
        if err is not None:
            run.report.add("unreadable", err)
            continue
        gt_name = reader.paths(i)["gt_path"]
        run.cache.put(f"lmdb:{gt_name}", fp, counts)
        run.note_pixels(gt_name, counts)


# ----------------------------------------------------------------------------------------------
# entry points
# ----------------------------------------------------------------------------------------------
def check_reader(
    reader: Any,
    level: str = "full",
    gt_size: Optional[int] = None,
    small_images: str = "pad",
    where: str = "datasets",
    cache_dir: Any = None,
    shard: Tuple[int, int] = (0, 1),
    threads: Optional[int] = None,
    log: Optional[Callable[[str], None]] = None,
    hdr_max: Optional[float] = None,
) -> CheckReport:
    """Check every pair a dataset reader serves: ``CheckSettings(...).run(reader)`` in one call."""
    return CheckSettings(level, gt_size, small_images, where, cache_dir, shard, threads, log, hdr_max).run(reader)


def check_options_file(path: str, level: str = "full", phases: Optional[Sequence[str]] = None,
                       log: Callable[[str], None] = print, limit: Optional[int] = None) -> bool:
    """Check the data sets of a training option file; print the findings. Returns True when all pass.

    Each dataset is built as training would build it (so option errors are reported the same way),
    with its own construction check off, then checked at ``level``; every problem found is listed,
    pairing problems together with the per-file problems of the pairs that do exist, and a set that
    cannot be read at all (e.g. a truncated LMDB) does not stop the check of the others. Option
    errors (wrong keys or values, missing folders) are raised as one :class:`OptionError` after the
    other sets were checked. ``limit`` caps the messages per problem kind (None: all).
    """
    from DiffIR.data import build_dataset  # lazy: the dataset module imports this one
    from DiffIR.utils.options import finalize_options, load_yaml

    opt = load_yaml(path)
    root = os.path.dirname(os.path.abspath(path))
    finalize_options(opt, root, is_train=True, file=path)
    datasets = opt.get("datasets") or {}
    if not datasets:
        raise OptionError(f"Option file {path} has no 'datasets' section. Fix: add datasets: {{train: ...}}.")
    unknown = [p for p in (phases or []) if p not in datasets]
    if unknown:
        raise OptionError(f"Option file {path} has no dataset(s) {', '.join(unknown)}; it has {', '.join(datasets)}.")
    all_ok = True
    option_errors: List[str] = []
    for phase, dopt in datasets.items():
        if phases and phase not in phases:
            continue
        where = f"datasets:{phase}"
        try:
            with collect_pairing_problems() as pairing:  # pairing problems are listed with the others
                ds = build_dataset({**dopt, "check": "off"})
        except OptionError as e:  # the option file itself is wrong: reported after the other sets (exit 2)
            option_errors.append(str(e))
            log(f"Dataset check of '{where}': not run, its options are wrong (see below).")
            continue
        except (OSError, ValueError) as e:  # unreadable data (e.g. a truncated LMDB): a problem of this set
            all_ok = False
            log(f"Dataset check of '{where}': FAILED before any pair could be read:\n  {_error_text(e)}")
            continue
        settings = CheckSettings(level, getattr(ds, "gt_size", None), dopt.get("small_images", "pad"), where,
                                 dopt.get("check_cache_dir"), log=log, hdr_max=getattr(ds, "hdr_max", None))
        report = settings.run(ds.reader)
        for msg in pairing:
            report.add("pairing", msg)
        log(report.summary())
        for note in report.notes():
            log("NOTE: " + note)
        if not report.ok:
            all_ok = False
            log(report.error_text(limit))
    if option_errors:
        raise OptionError("\n".join(option_errors))
    return all_ok
