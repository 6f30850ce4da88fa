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
restart reads only new or changed files (:mod:`DiffIR.data.check_cache`). An unwritable cache folder only costs
a warning. Under DDP each rank decodes its own share of the files (rank r: pairs r, r + world, ...), so a first
full scan is split over the ranks; a problem found by any rank stops the job. What a check found is a
:class:`~DiffIR.data.check_report.CheckReport`.

This module is the shared driver: the settings, one run over a reader and the verdicts every backend shares
(:class:`CheckRun`). What is read, and how, is the reader's own ``check`` (see
:class:`~DiffIR.data.pair_reader.PairReader`): :class:`~DiffIR.data.disk_reader.DiskPairReader` reads headers
and decodes files through the per-file cache; :class:`~DiffIR.data.lmdb_reader.LmdbPairReader` reads the sizes
of meta_info.txt, and LMDBs built by :func:`DiffIR.data.lmdb_writer.create_lmdb_hdr` (fully checked when written:
the writer refuses NaN/Inf, unreadable images and size mismatches) get the writer's record instead of a second
decode. The origin fork's pickled LMDBs are decoded.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, Tuple

from DiffIR.data.check_cache import CheckCache
from DiffIR.data.check_report import HDR_MAX_HEADROOM, CheckReport
from DiffIR.data.pair_problems import (PixelCounts, channel_mismatch_message, nonfinite_message, size_mismatch_message,
                                       too_small_message)
from DiffIR.data.parallel import default_threads
from DiffIR.utils.errors import OptionError
from DiffIR.utils.image_common import ImageIOError

if TYPE_CHECKING:
    from DiffIR.data.pair_reader import PairReader

logger = logging.getLogger("DiffIR")

LEVELS = ("quick", "full", "off")
SMALL_IMAGE_POLICIES = ("pad", "error")

__all__ = [
    "LEVELS",
    "SMALL_IMAGE_POLICIES",
    "CheckSettings",
    "CheckRun",
    "check_reader",
    "check_file_tail",
    "exception_text",
]


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
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


def exception_text(e: BaseException) -> str:
    """An exception as a message in a list of problems: its text, or its type where it has none."""
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

    def run(self, reader: "PairReader") -> CheckReport:
        """Check every pair ``reader`` serves (an ``io_backend`` reader); ``raise_if_errors()`` stops on problems."""
        report = CheckReport(self.where, self.level, len(reader))
        report.hdr_max = self.hdr_max
        if self.level == "off":
            return report
        t0 = time.time()
        run = CheckRun(self, reader, report, CheckCache(reader.roots(), self.cache_dir))
        reader.check(run)  # the backend's part: DiskPairReader.check, LmdbPairReader.check, ...
        run.cache.save()
        report.seconds = time.time() - t0
        return report


class CheckRun:
    """One check of one reader: its settings, report and cache, and the verdicts every backend shares (a reader's
    ``check`` reports through them, so that each problem reads the same whatever the storage)."""

    def __init__(self, settings: CheckSettings, reader: "PairReader", report: CheckReport,
                 cache: CheckCache) -> None:
        self.settings, self.reader, self.report, self.cache = settings, reader, report, cache
        self.log = settings.log or logger.info
        self.threads = settings.threads or default_threads()

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
# entry points
# ----------------------------------------------------------------------------------------------
def check_reader(
    reader: "PairReader",
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
