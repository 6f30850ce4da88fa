"""``io_backend: {type: disk}``: :class:`DiskPairReader` serves the pairs of three folders (LQ images, GT images,
dgain ``.txt`` files; two folders for pair formats without dgain) and runs their part of the check before training.

The check reads file headers (sizes, channels, truncated ends) and dgain files at every level and decodes the
images at ``full``; what it learns is cached per file by size and mtime (:mod:`DiffIR.data.check_cache`), so a
restart reads only new or changed files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from DiffIR.data.check_cache import DGAIN_RULES, CheckCache, DgainFacts, ImageFacts
from DiffIR.data.checks import CheckRun, check_file_tail, exception_text
from DiffIR.data.dgain import read_dgain_file
from DiffIR.data.pair_problems import PixelCounts, count_bad_pixels, paired_windows
from DiffIR.data.pair_reader import PairRecords, PairSource
from DiffIR.data.pairing import pair_format_parts, scan_paired_folders
from DiffIR.data.parallel import parallel_map
from DiffIR.utils.hdr_io import read_hdr, read_image_info, read_ldr
from DiffIR.utils.image_common import WindowArg
from DiffIR.utils.registry import IO_BACKEND_REGISTRY

__all__ = ["DiskPairReader"]


@IO_BACKEND_REGISTRY.register(name="disk")
class DiskPairReader(PairRecords):
    """Reads triples (LQ, GT, dgain) from three folders, or pairs without dgain (the source's ``pair_format``)."""

    backend = "disk"

    def __init__(self, source: PairSource) -> None:
        _, _, self.gt_hdr, self.has_dgain = pair_format_parts(source.pair_format)
        self.dirs = source.roots
        self.records = scan_paired_folders(source)

    def roots(self) -> List[str]:
        return list(self.dirs)

    def read(self, index: int, window: WindowArg = None) -> Dict[str, Any]:
        """``{lq, gt, dgain, gamma, lq_path, gt_path, dgain_path}`` with float32 RGB arrays.

        ``window`` (a tuple or a function of the LQ's size) crops both images before any per-pixel
        conversion; a GT whose size differs from its LQ raises the size-mismatch error.
        """
        rec = self.records[index]
        out: Dict[str, Any] = dict(rec)
        lq_window, gt_window = paired_windows(window, rec["lq_path"], rec["gt_path"])
        out["lq"] = read_ldr(rec["lq_path"], window=lq_window)
        out["gt"] = self._read_gt(rec["gt_path"], window=gt_window)
        if self.has_dgain:
            out.update(read_dgain_file(rec["dgain_path"]))
        return out

    def _read_gt(self, path: str, window: WindowArg = None) -> np.ndarray:
        return (read_hdr if self.gt_hdr else read_ldr)(path, window=window)

    # -- the check before training ----------------------------------------------------------------
    def check(self, run: CheckRun) -> None:
        """Headers and dgain entries of every pair; with ``full`` the pixels too (from the cache where it can)."""
        pairs = [self._check_pair(run, rec) for rec in self.records]
        if run.settings.level == "full":
            self._scan_pixels(run, pairs)
        for pair in pairs:  # what is known about pixels: this run's scan or the cache
            gt = pair.gt.facts
            if gt is not None and gt.scanned and not (gt.nonfinite and pair.bad):
                run.note_pixels(pair.rec["gt_path"], PixelCounts(gt.nonfinite, gt.negative, gt.peak))

    def _check_pair(self, run: CheckRun, rec: Mapping[str, str]) -> "_Pair":
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

    def _scan_pixels(self, run: CheckRun, pairs: List["_Pair"]) -> None:
        """Decode this rank's share of the pairs whose pixels are not known yet, and cache what they hold."""
        todo = [pair for i, pair in enumerate(pairs) if run.mine(i) and not pair.bad
                and not (pair.lq.facts.scanned and pair.gt.facts.scanned)]
        rank, world = run.settings.shard
        if world > 1:
            run.report.note = f"rank {rank} of {world} decoded its share"
        progress = run.progress(len(todo))
        for pair, err, counts in parallel_map(self._decode_pair, todo, run.threads):
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

    def _decode_pair(self, pair: "_Pair") -> Tuple["_Pair", Optional[str], Optional[PixelCounts]]:
        """``(pair, error message, GT pixel counts)``; runs in a worker thread, so it only reads."""
        counts = None
        try:
            if not pair.lq.facts.scanned:
                err = _decoded_size_error("LDR", pair.lq, read_ldr(pair.lq.path))
                if err is not None:
                    return pair, err, None
            if not pair.gt.facts.scanned:
                hdr = self._read_gt(pair.gt.path)
                err = _decoded_size_error("HDR", pair.gt, hdr)
                if err is not None:
                    return pair, err, None
                counts = count_bad_pixels(hdr)
        except (OSError, ValueError) as e:
            return pair, exception_text(e), None
        return pair, None, counts


# -- what the check knows of one pair's files --------------------------------------------------------
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


def _check_dgain_file(run: CheckRun, path: str) -> bool:
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


def _read_header(run: CheckRun, image: _ImageFile) -> Optional[str]:
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


def _decoded_size_error(what: str, image: _ImageFile, img: np.ndarray) -> Optional[str]:
    """A decoded image whose size differs from its header's is damaged."""
    h, w = img.shape[:2]
    if (h, w) == (image.facts.height, image.facts.width):
        return None
    return (f"{what} image '{image.path}' decodes to {h}x{w} but its header says "
            f"{image.facts.height}x{image.facts.width}. Fix: re-export it.")
