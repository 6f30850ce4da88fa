"""Pair LQ / GT / dgain entries by stem, in linear time, with one error message listing every gap.

Used by every ``io_backend``: the disk backend pairs file stems of three folders, the LMDB backend
pairs the keys of three databases. ``meta_info_file`` (BasicSR's option) restricts a set to a list
of stems, in the file's order.

What a pair is made of comes from an optional ``pair_format`` (any object with ``lq_exts``,
``gt_exts``, ``gt_hdr`` and ``dgain`` attributes, e.g. ``DiffIR.data.paired_common.LDR_PAIRS``); the
default is the HDR layout (LDR image, HDR image, dgain file). Without dgain the pairs have two parts.

A file whose partner is missing is listed with the reason the partner was not found where the folder
scan can tell: a file of that stem skipped for its extension, a broken symbolic link, or a name that
differs only in Unicode normalisation (NFC vs NFD, e.g. ``é`` typed on Linux and copied from macOS).

Problems are raised as one :class:`PairingError`, except inside :func:`collect_pairing_problems`:
there each problem is appended to a list and pairing goes on with the complete pairs, so that a
dataset check can report pairing and per-file problems together (``scripts/check_dataset.py``,
and a dataset's own check before training).
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from DiffIR.utils.errors import DataError, OptionError

if TYPE_CHECKING:
    from DiffIR.data.pair_reader import PairSource

LQ_EXTENSIONS = (".jpg", ".jpeg", ".png")
GT_EXTENSIONS = (".hdr", ".exr", ".npy")
DGAIN_EXTENSIONS = (".txt",)
MAX_LISTED = 5

#: extensions stripped from the names listed in a meta_info_file (any of the data's file types)
_META_STRIP = tuple(sorted(set(LQ_EXTENSIONS + GT_EXTENSIONS + DGAIN_EXTENSIONS + (".pic",))))

__all__ = [
    "LQ_EXTENSIONS",
    "GT_EXTENSIONS",
    "DGAIN_EXTENSIONS",
    "MAX_LISTED",
    "PairingError",
    "collect_pairing_problems",
    "collecting_pairing_problems",
    "format_names",
    "scan_folder",
    "pair_stems",
    "pair_format_parts",
    "read_meta_info_file",
    "scan_paired_folders",
]


class PairingError(DataError):
    """Files in the LQ / GT / dgain folders (or keys of the three LMDBs) do not pair up."""


_SINK: contextvars.ContextVar[Optional[List[str]]] = contextvars.ContextVar("diffir_pairing_problems", default=None)


@contextlib.contextmanager
def collect_pairing_problems() -> Iterator[List[str]]:
    """Within the block, pairing problems are appended to the yielded list (one message each, with its
    fix) instead of raised, and pairing returns the complete pairs. Nested blocks also hand their
    problems to the enclosing one."""
    outer = _SINK.get()
    sink: List[str] = []
    token = _SINK.set(sink)
    try:
        yield sink
    finally:
        _SINK.reset(token)
        if outer is not None:
            outer.extend(sink)


def collecting_pairing_problems() -> bool:
    """True inside :func:`collect_pairing_problems` (someone above reports the problems)."""
    return _SINK.get() is not None


def format_names(names: Sequence[str], limit: int = MAX_LISTED) -> str:
    """``a, b, c, ... (+N more)``: the first ``limit`` names of a problem list."""
    names = list(names)
    more = f", ... (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def check_filename_tmpl(filename_tmpl: str, where: str) -> None:
    """``filename_tmpl`` must contain ``{}`` exactly once (it maps a GT stem to the LQ stem)."""
    if not isinstance(filename_tmpl, str) or filename_tmpl.count("{}") != 1:
        raise OptionError(f"'{where}:filename_tmpl' must contain '{{}}' exactly once (got {filename_tmpl!r}). Fix: use '{{}}'.")


def _shown(path: str) -> str:
    """A file as messages show it: its folder's name and its own, ``jpg/a.jpg`` (an LMDB key stays as it is)."""
    folder = os.path.basename(os.path.dirname(path))
    return f"{folder}/{os.path.basename(path)}" if folder else path


def _skip_reason(entry: "os.DirEntry[str]", exts: Sequence[str]) -> str:
    """Why the folder scan does not use ``entry`` (a visible file or folder)."""
    ext = os.path.splitext(entry.name)[1].lower()
    if ext not in exts:
        return f"unsupported extension ({', '.join(exts)})"
    if entry.is_symlink() and not os.path.exists(entry.path):
        return f"broken symbolic link (to '{os.readlink(entry.path)}', which does not exist)"
    return "a folder, not a file" if entry.is_dir() else "not a regular file"


def scan_folder(folder: str, key: str, exts: Sequence[str], where: str,
                skipped: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """``stem -> path`` of the visible files with ``exts`` in ``folder`` (not recursive, one ``scandir``).

    ``skipped`` (when given) receives ``stem -> "<folder>/<name> skipped: <why>"`` for each visible entry not used
    (another extension, a broken link, a folder), so that a partner missing for that reason can be explained.
    """
    p = Path(folder)
    if not p.is_dir():
        hint = ""
        if str(folder).rstrip("/").endswith(".lmdb"):
            hint = " It looks like an LMDB path; set io_backend: {type: lmdb}."
        what = "is not a folder" if p.exists() else "does not exist"
        raise OptionError(
            f"'{where}:{key}' = '{folder}' {what}.{hint} Fix: set {key} to the folder holding the "
            f"{'/'.join(exts)} files, or add a 'synthetic:' option to generate demo data there."
        )
    if (p / "data.mdb").is_file():
        raise OptionError(
            f"'{where}:{key}' = '{folder}' is an LMDB database, but io_backend is disk. "
            f"Fix: set io_backend: {{type: lmdb}} (and point all three dataroots at .lmdb folders)."
        )
    stems: Dict[str, str] = {}
    others: List[str] = []
    dups: List[str] = []
    base = str(p)
    with os.scandir(p) as it:
        for e in it:
            name = e.name
            if name.startswith("."):
                continue
            stem, ext = os.path.splitext(name)
            if ext.lower() not in exts or not e.is_file():
                others.append(name)
                if skipped is not None:
                    skipped.setdefault(stem, f"{_shown(os.path.join(base, name))} skipped: {_skip_reason(e, exts)}")
                continue
            if stem in stems:
                dups.append(f"{os.path.basename(stems[stem])} / {name}")
                continue
            stems[stem] = os.path.join(base, name)
    if dups:
        msg = (f"'{where}:{key}' = '{folder}': {len(dups)} stems exist with two extensions "
               f"({format_names(sorted(dups))}). Fix: keep one file per stem.")
        sink = _SINK.get()
        if sink is None:
            raise PairingError(msg)
        sink.append(msg + " (the first name is used meanwhile)")
    if not stems:
        found = f" (it holds {len(others)} other files, e.g. {', '.join(sorted(others)[:3])})" if others else " (it is empty)"
        raise OptionError(
            f"'{where}:{key}' = '{folder}' holds no {'/'.join(exts)} files{found}. Fix: point {key} at the "
            f"right folder, or add a 'synthetic:' option to generate demo data."
        )
    return stems


def read_meta_info_file(path: str, where: str = "datasets") -> List[str]:
    """The stems listed in a BasicSR-style ``meta_info_file``, in file order.

    One entry per line; the first whitespace-separated token is the name, a known image/text
    extension is stripped (``im_1.png (256,256,3) 1`` and ``im_1`` both give ``im_1``); blank lines
    and lines starting with ``#`` are skipped. A stem listed twice is an error (it would silently
    count double).
    """
    p = Path(path)
    if not p.is_file():
        raise OptionError(
            f"'{where}:meta_info_file' = '{path}' does not exist. Fix: point it at a text file with one stem per line, "
            f"or remove the option to use every pair in the folders."
        )
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise OptionError(f"'{where}:meta_info_file' = '{path}' is not UTF-8 text. Fix: write one stem per line.") from None
    stems: List[str] = []
    seen: Dict[str, int] = {}
    dups: List[str] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        name = s.split()[0]
        root, ext = os.path.splitext(name)
        stem = root if ext.lower() in _META_STRIP else name
        if stem in seen:
            dups.append(f"{stem} (lines {seen[stem]} and {lineno})")
            continue
        seen[stem] = lineno
        stems.append(stem)
    if dups:
        raise OptionError(
            f"'{where}:meta_info_file' = '{path}' lists {len(dups)} stem(s) twice: {format_names(dups)}. "
            f"Fix: list each stem once (use dataset_enlarge_ratio to repeat the whole set)."
        )
    if not stems:
        raise OptionError(f"'{where}:meta_info_file' = '{path}' lists no stems. Fix: one stem (or file name) per line.")
    return stems


def pair_format_parts(pair_format: Any = None) -> Tuple[Tuple[str, ...], Tuple[str, ...], bool, bool]:
    """``(lq_exts, gt_exts, gt_hdr, has_dgain)`` of a pair format (None: the HDR layout)."""
    if pair_format is None:
        return LQ_EXTENSIONS, GT_EXTENSIONS, True, True
    return (tuple(pair_format.lq_exts), tuple(pair_format.gt_exts), bool(pair_format.gt_hdr),
            bool(pair_format.dgain))


def pair_stems(
    lq: Mapping[str, str],
    gt: Mapping[str, str],
    dg: Optional[Mapping[str, str]],
    source: "PairSource",
    only: Optional[Sequence[str]] = None,
    dgain_suffix: str = ".txt",
    skipped: Optional[Tuple[Mapping[str, str], Mapping[str, str], Mapping[str, str]]] = None,
) -> List[Tuple[str, str]]:
    """``[(gt_stem, lq_stem)]`` of the complete triples; raises one :class:`PairingError` for all gaps.

    ``lq``/``gt``/``dg`` map a stem to a display name (file path or LMDB key); ``dg`` is None for
    pairs without dgain. For a GT stem ``g`` the LQ stem is ``source.filename_tmpl.format(g)`` and the dgain
    entry is named after the LQ stem; messages name ``source.where`` and show ``source.labels``. Without ``only``
    the result is sorted by GT stem and every LQ entry must have a GT partner; with ``only`` (the stems of the
    source's meta_info_file) exactly those GT stems are used, in that order, and entries
    not listed are ignored. ``skipped``: the LQ, GT and dgain folder scans' skipped entries (see
    :func:`scan_folder`), to say why a partner is missing.
    """
    filename_tmpl, where, only_source = source.filename_tmpl, source.where, str(source.meta_info_file or "")
    check_filename_tmpl(filename_tmpl, where)
    why = _MissingPartner(lq, gt, dg, skipped)
    out: List[Tuple[str, str]] = []
    gt_missing: List[str] = []
    gt_no_lq: List[str] = []
    no_dgain: List[str] = []
    used_lq = set()
    order = list(only) if only is not None else sorted(gt)
    for g in order:
        if g not in gt:
            gt_missing.append(g)
            continue
        q = filename_tmpl.format(g)
        if q not in lq:
            gt_no_lq.append(why.named(os.path.basename(gt[g]), "lq", q))
            continue
        used_lq.add(q)
        if dg is not None and q not in dg:
            no_dgain.append(why.named(f"{q}{dgain_suffix}", "dgain", q))
            continue
        out.append((g, q))
    lq_no_gt = [] if only is not None else sorted(
        why.named(os.path.basename(lq[q]), "gt", _gt_stem(filename_tmpl, q)) for q in lq if q not in used_lq)

    problems = _pairing_problems(source.labels, filename_tmpl, only_source, gt_missing, gt_no_lq, lq_no_gt, no_dgain)
    _report_pairing_problems(problems, where, dg is not None, bool(gt_missing))
    return out


def _gt_stem(filename_tmpl: str, lq_stem: str) -> Optional[str]:
    """The GT stem whose LQ stem is ``lq_stem`` under ``filename_tmpl`` (None when the template cannot give it)."""
    before, after = filename_tmpl.split("{}")
    if len(lq_stem) < len(before) + len(after) or not (lq_stem.startswith(before) and lq_stem.endswith(after)):
        return None
    return lq_stem[len(before) : len(lq_stem) - len(after)]


class _MissingPartner:
    """Says why the partner of an unpaired file was not found (see the module docstring)."""

    def __init__(self, lq: Mapping[str, str], gt: Mapping[str, str], dg: Optional[Mapping[str, str]],
                 skipped: Optional[Tuple[Mapping[str, str], Mapping[str, str], Mapping[str, str]]]) -> None:
        self.present = {"lq": lq, "gt": gt, "dgain": dg or {}}
        self.skipped = dict(zip(("lq", "gt", "dgain"), skipped or ({}, {}, {})))
        self._nfc: Dict[str, Dict[str, str]] = {}

    def reason(self, side: str, stem: Optional[str]) -> str:
        """Why ``side`` (lq, gt or dgain) has no entry ``stem``, or '' when the scan cannot tell."""
        if stem is None:
            return ""
        if stem in self.skipped[side]:
            return self.skipped[side][stem]
        if side not in self._nfc:  # built once per side, only when some file lacks a partner
            self._nfc[side] = {unicodedata.normalize("NFC", k): k for k in self.present[side]}
        other = self._nfc[side].get(unicodedata.normalize("NFC", stem))
        if other is not None and other != stem:
            return (f"name differs from {_shown(self.present[side][other])} only in Unicode normalisation (NFC vs "
                    f"NFD): rename one")
        return ""

    def named(self, name: str, side: str, stem: Optional[str]) -> str:
        """``name``, followed by the reason its partner ``stem`` on ``side`` is missing when there is one."""
        reason = self.reason(side, stem)
        return f"{name} ({reason})" if reason else name


def _pairing_problems(labels: Tuple[str, str, str], filename_tmpl: str, only_source: str, gt_missing: Sequence[str],
                      gt_no_lq: Sequence[str], lq_no_gt: Sequence[str],
                      no_dgain: Sequence[str]) -> List[Tuple[str, str]]:
    """``[(problem, its own fix)]``: the fix is shown with each problem when problems are collected."""
    lq_label, gt_label, dg_label = labels
    problems = []
    if gt_missing:
        problems.append((
            f"{len(gt_missing)} stem(s) listed in meta_info_file='{only_source}' are not in {gt_label}: {format_names(gt_missing)}",
            "correct the meta_info_file or add the files"))
    if gt_no_lq:
        problems.append((
            f"{len(gt_no_lq)} file(s) in {gt_label} have no LQ partner in {lq_label} "
            f"(filename_tmpl {filename_tmpl!r}): {format_names(gt_no_lq)}",
            "add the LQ images, remove these GT files, or correct filename_tmpl"))
    if lq_no_gt:
        problems.append((f"{len(lq_no_gt)} file(s) in {lq_label} have no GT partner in {gt_label}: {format_names(lq_no_gt)}",
                         "add the GT images or remove these LQ files"))
    if no_dgain:
        problems.append((f"{len(no_dgain)} pair(s) have no dgain file in {dg_label}: {format_names(no_dgain)}",
                         "add the dgain files or remove these pairs"))
    return problems


def _report_pairing_problems(problems: Sequence[Tuple[str, str]], where: str, has_dgain: bool, meta_info: bool) -> None:
    """Hand the problems to an enclosing :func:`collect_pairing_problems`, or raise them as one error."""
    sink = _SINK.get()
    if problems and sink is not None:
        sink.extend(f"{p}. Fix: {fix}." for p, fix in problems)
    elif problems:
        raise PairingError(
            f"Unpaired files for '{where}':\n  " + "\n  ".join(p for p, _ in problems)
            + "\nFix: add the missing files or remove the unpaired ones (every stem needs an LQ image, a GT image"
            + (" and a dgain entry)" if has_dgain else ")")
            + (", or correct the meta_info_file." if meta_info else ".")
        )


def scan_paired_folders(source: "PairSource") -> List[Dict[str, str]]:
    """Pair the folders of ``source`` by stem in linear time; returns ``[{lq_path, gt_path, dgain_path}]``.

    Sorted by GT stem (or in ``meta_info_file`` order when given). Raises :class:`OptionError` for a
    missing/empty folder (naming the option key) and one :class:`PairingError` listing, per folder,
    how many files lack a partner and the first few names. Without dgain in the source's ``pair_format``
    the records have no ``dgain_path``.
    """
    where = source.where
    check_filename_tmpl(source.filename_tmpl, where)
    lq_exts, gt_exts, _, has_dgain = pair_format_parts(source.pair_format)
    only = source.meta_info_stems()
    skipped: Tuple[Dict[str, str], Dict[str, str], Dict[str, str]] = ({}, {}, {})
    lq = scan_folder(source.dataroot_lq, "dataroot_lq", lq_exts, where, skipped[0])
    gt = scan_folder(source.dataroot_gt, "dataroot_gt", gt_exts, where, skipped[1])
    dg = (scan_folder(str(source.dataroot_dgain), "dataroot_dgain", DGAIN_EXTENSIONS, where, skipped[2]) if has_dgain
          else None)
    pairs = pair_stems(lq, gt, dg, source, only, skipped=skipped)
    if dg is None:
        return [{"lq_path": lq[q], "gt_path": gt[g]} for g, q in pairs]
    return [{"lq_path": lq[q], "gt_path": gt[g], "dgain_path": dg[q]} for g, q in pairs]
