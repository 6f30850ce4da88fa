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

LMDBs built by :func:`DiffIR.data.lmdb_writer.create_lmdb_hdr` were fully checked when written (the
writer refuses NaN/Inf, unreadable images and size mismatches); their ``full`` check reads the
writer's record instead of decoding again. The origin fork's pickled LMDBs are decoded.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence, Tuple

import numpy as np

from DiffIR.data.check_cache import DGAIN_RULES, CheckCache, DgainFacts, ImageFacts
from DiffIR.data.check_report import HDR_MAX_HEADROOM, CheckReport
from DiffIR.data.dgain import read_dgain_file
from DiffIR.data.pair_problems import (PixelCounts, channel_mismatch_message, count_bad_pixels, nonfinite_message,
                                       size_mismatch_message, too_small_message)
from DiffIR.data.parallel import default_threads, parallel_map
from DiffIR.utils.errors import OptionError
from DiffIR.utils.hdr_io import read_hdr, read_image_info, read_ldr
from DiffIR.utils.image_common import ImageIOError

logger = logging.getLogger("DiffIR")

LEVELS = ("quick", "full", "off")
SMALL_IMAGE_POLICIES = ("pad", "error")

__all__ = [
    "LEVELS",
    "SMALL_IMAGE_POLICIES",
    "CheckSettings",
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
        run.report.add("dgain", exception_text(e))
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
        return exception_text(e)
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
        return pair, exception_text(e), None
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
            run.report.add("dgain", exception_text(e))
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
            return i, exception_text(e), None

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
