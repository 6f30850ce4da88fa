"""Reading the LMDBs behind ``io_backend: {type: lmdb}``: one read-only environment per database and process, and
:class:`LmdbPairReader`, which serves the pairs of a build of :mod:`DiffIR.data.lmdb_writer` (format:
:mod:`DiffIR.data.lmdb_format`) or of the origin fork's pickled LMDBs.

Readers refuse three databases of different builds (same stems, other pairs: training would learn
mismatched pairs silently); databases of older builds without an id are read with a warning. A
``data.mdb`` shorter than the pages it uses (a partly copied set) is refused before it is read:
reading past its end would kill the process with SIGBUS. ``meta_info.txt`` is written only when every
pair is in, so a reader never sees a half-built set.

The origin fork's LMDBs (pickled arrays and dicts, keys from its ``meta_info.txt``) are read only
with ``io_backend: {type: lmdb, allow_pickle: true}``: unpickling runs code stored in the file, so even
then only plain data and numpy arrays are unpickled.
"""
from __future__ import annotations

import logging
import os
import warnings
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from DiffIR.data.checks import CheckRun, exception_text
from DiffIR.data.dgain import parse_dgain_text
from DiffIR.data.lmdb_format import FORMAT_VERSION, decode_hdr_record, read_meta_info, read_state
from DiffIR.data.pair_problems import PixelCounts, count_bad_pixels, paired_windows
from DiffIR.data.pair_reader import PairRecords, PairSource
from DiffIR.data.pairing import pair_format_parts, pair_stems
from DiffIR.data.parallel import parallel_map
from DiffIR.utils.errors import OptionError
from DiffIR.utils.hdr_io import decode_ldr_bytes
from DiffIR.utils.image_common import ImageIOError, WindowArg, resolve_window
from DiffIR.utils.registry import IO_BACKEND_REGISTRY

logger = logging.getLogger("DiffIR")

__all__ = ["LmdbPairReader", "truncated_message", "reader_env", "forget_reader_env", "open_checked", "lmdb_module"]


def lmdb_module() -> Any:
    """The ``lmdb`` package, imported on first use: only LMDB users need it installed and loaded."""
    import lmdb  # imported lazily: only LMDB users need it at import time

    return lmdb


# One read-only handle per database and process: LMDB refuses to open one environment twice in a
# process (e.g. a train and a val set over the same files). Worker processes open their own.
_READ_ENVS: Dict[str, Tuple[int, Any]] = {}


def truncated_message(path: str, have: int, need: int) -> str:
    """The one message for a ``data.mdb`` shorter than the pages its LMDB uses (e.g. a partly copied set)."""
    return (f"'{os.path.join(path, 'data.mdb')}' is truncated: {have} bytes, the LMDB needs {need}. Fix: copy it "
            f"again, or rebuild it with scripts/create_lmdb_hdr.py.")


def open_checked(path: str, exc: type) -> Any:
    """Open ``path`` read-only (no lock file) after checking ``data.mdb`` holds every page the LMDB uses.

    Reading a page beyond the end of a truncated ``data.mdb`` is a SIGBUS that kills the process with no
    message; the environment's own meta pages (read with ``pread``, not through the map) say how many
    pages it uses, so the size check comes first. Raises ``exc`` naming the file and the fix.
    """
    lmdb = lmdb_module()
    data = os.path.join(path, "data.mdb")
    try:
        have = os.path.getsize(data)
    except OSError as e:
        raise exc(f"Cannot read the LMDB '{path}': {e.strerror or e}. Fix: check the folder, or rebuild it with "
                  f"scripts/create_lmdb_hdr.py.") from None
    try:
        env = lmdb.open(path, readonly=True, lock=False, readahead=False, meminit=False, subdir=True, max_readers=2048)
    except lmdb.Error as e:
        raise exc(f"Cannot open the LMDB '{path}' (data.mdb is {have} bytes): {e}. Fix: copy it again (a partly "
                  f"copied data.mdb is truncated), or rebuild it with scripts/create_lmdb_hdr.py.") from None
    need = (int(env.info()["last_pgno"]) + 1) * int(env.stat()["psize"])
    if have < need:
        env.close()
        raise exc(truncated_message(path, have, need))
    return env


def reader_env(path: str) -> Any:
    """This process's read-only handle of the database ``path`` (opened on first use, after the size check)."""
    key = os.path.realpath(path)
    held = _READ_ENVS.get(key)
    if held is not None:
        if held[0] == os.getpid():
            return held[1]
        held[1].close()  # inherited through fork (a DataLoader worker): py-lmdb refuses a second open until closed
    env = open_checked(path, ImageIOError)
    _READ_ENVS[key] = (os.getpid(), env)
    return env


def forget_reader_env(path: str) -> None:
    """Close this process's read handle of ``path`` (before writing to it)."""
    held = _READ_ENVS.pop(os.path.realpath(path), None)
    if held is not None and held[0] == os.getpid():
        held[1].close()


#: the globals a pickled numpy array (and its dtype and scalars) needs, in numpy 1 and 2
_NUMPY_PICKLE_MODULES = frozenset({"numpy", "numpy.core.multiarray", "numpy._core.multiarray",
                                   "numpy.core.numeric", "numpy._core.numeric"})
_NUMPY_PICKLE_NAMES = frozenset({"_reconstruct", "ndarray", "dtype", "scalar", "_frombuffer"})


@IO_BACKEND_REGISTRY.register(name="lmdb")
class LmdbPairReader(PairRecords):
    """Reads triples from ``lq.lmdb`` / ``gt.lmdb`` / ``dgain.lmdb`` (ours, or the origin fork's with ``allow_pickle``).

    A :class:`~DiffIR.data.pair_reader.PairReader`; its check uses the sizes of meta_info.txt
    (``header_size``), the dgain records (``read_dgain``), the writer's record of its pixel check
    (``validation``) and, for the origin fork's LMDBs, a decode cached by ``fingerprint``. Databases are opened
    once per process, on first use (DataLoader workers open their own handles; the reader itself holds none, so
    it pickles).
    """

    backend = "lmdb"

    def __init__(self, source: PairSource, allow_pickle: bool = False) -> None:
        self.where = source.where
        _, _, self.gt_hdr, self.has_dgain = pair_format_parts(source.pair_format)
        self.db = dict(zip(("lq", "gt", "dgain"), source.roots))
        self.allow_pickle = bool(allow_pickle)
        self.state: Dict[str, Any] = {}
        states = self._read_states()
        self.legacy = all(st is None for st in states.values())
        if not self.legacy:
            self._check_own_build(states)
        elif self.gt_hdr or self.has_dgain:  # origin-fork layout: pickled arrays / dicts
            self._allow_pickled()
        keys = self._read_meta_infos()
        self.pairs = pair_stems(keys["lq"], keys["gt"], keys.get("dgain"), source, source.meta_info_stems(),
                                dgain_suffix="")
        self.records = []
        for g, q in self.pairs:
            rec = {"lq_path": os.path.join(self.db["lq"], q), "gt_path": os.path.join(self.db["gt"], g)}
            if self.has_dgain:
                rec["dgain_path"] = os.path.join(self.db["dgain"], q)
            self.records.append(rec)

    def _read_states(self) -> Dict[str, Optional[Dict[str, Any]]]:
        """The state record of each database (None: not written by create_lmdb_hdr); refuses a missing LMDB."""
        states = {}
        for role, path in self.db.items():
            if not os.path.isfile(os.path.join(path, "data.mdb")):
                what = "does not exist" if not os.path.exists(path) else "is not an LMDB folder (no data.mdb)"
                raise OptionError(
                    f"'{self.where}:dataroot_{role}' = '{path}' {what}. Fix: build the LMDBs with python "
                    f"scripts/create_lmdb_hdr.py --lq DIR --gt DIR --dgain DIR --out OUT and point dataroot_lq/gt/dgain "
                    f"at OUT/lq.lmdb, OUT/gt.lmdb, OUT/dgain.lmdb; or use io_backend: {{type: disk}} with image folders."
                )
            states[role] = read_state(reader_env(path))
        return states

    def _check_own_build(self, states: Mapping[str, Optional[Mapping[str, Any]]]) -> None:
        """Our format: one finished build of this program's version, each database in its role."""
        where = self.where
        if any(st is None for st in states.values()):
            odd = [self.db[r] for r, st in states.items() if st is None]
            raise OptionError(f"'{where}': {', '.join(odd)} is not an LMDB written by scripts/create_lmdb_hdr.py while the "
                              f"others are. Fix: point all three dataroots at one build (OUT/lq.lmdb, OUT/gt.lmdb, OUT/dgain.lmdb).")
        if not (self.gt_hdr and self.has_dgain):
            raise OptionError(f"'{where}': '{self.db['gt']}' was written by scripts/create_lmdb_hdr.py and holds HDR "
                              f"targets with dgain entries, which this dataset does not read. Fix: point it at an LMDB "
                              f"of this dataset's kind.")
        for role, st in states.items():
            if st.get("kind") != role:
                raise OptionError(
                    f"'{where}:dataroot_{role}' = '{self.db[role]}' holds the '{st.get('kind')}' database. Fix: set "
                    f"dataroot_{role} to the {role}.lmdb folder of the build."
                )
            if st.get("version") != FORMAT_VERSION:
                raise OptionError(f"'{self.db[role]}' is format version {st.get('version')}; this program reads "
                                  f"version {FORMAT_VERSION}. Fix: rebuild it with scripts/create_lmdb_hdr.py.")
            if not st.get("complete") or not os.path.isfile(os.path.join(self.db[role], "meta_info.txt")):
                raise OptionError(
                    f"'{self.db[role]}' is an unfinished build (interrupted, or stopped by bad input files). Fix: run "
                    f"python scripts/create_lmdb_hdr.py again with the same arguments; it resumes and finishes it."
                )
        self.state = dict(states["gt"] or {})
        self._check_build_ids(states)

    def _allow_pickled(self) -> None:
        """The origin fork's pickled LMDBs are read only with ``allow_pickle`` (unpickling runs stored code)."""
        if not self.allow_pickle:
            raise OptionError(
                f"'{self.where}': '{self.db['gt']}' is not in this program's LMDB format; it looks like the origin "
                f"fork's pickled layout. Reading it unpickles the stored data, which can run code written into the "
                f"file. Fix: rebuild it with python scripts/create_lmdb_hdr.py (no pickle), or, only if you trust the "
                f"file, set io_backend: {{type: lmdb, allow_pickle: true}}."
            )
        msg = (f"'{self.where}': reading the pickled (origin-fork) LMDBs {', '.join(self.db.values())} because "
               f"allow_pickle is true. Unpickling runs code stored in those files: use only LMDBs you built or trust, "
               f"and prefer rebuilding them with scripts/create_lmdb_hdr.py.")
        warnings.warn(msg, stacklevel=3)  # at the code that builds the reader
        logger.warning(msg)

    def _read_meta_infos(self) -> Dict[str, Dict[str, str]]:
        """Each database's keys (``key -> display name``) from its meta_info.txt; keeps the sizes it lists."""
        keys: Dict[str, Dict[str, str]] = {}
        self.shapes: Dict[str, Dict[str, Tuple[int, ...]]] = {}
        for role, path in self.db.items():
            if not os.path.isfile(os.path.join(path, "meta_info.txt")):
                raise OptionError(f"'{self.where}:dataroot_{role}' = '{path}' has no meta_info.txt. Fix: rebuild the LMDB.")
            klist, shapes = read_meta_info(path, self.legacy)
            keys[role] = {k: os.path.join(path, k) for k in klist}
            self.shapes[role] = shapes
        return keys

    def _check_build_ids(self, states: Mapping[str, Mapping[str, Any]]) -> None:
        """Refuse databases of different builds; warn once for older builds that carry no id."""
        ids = {role: st.get("build_id") for role, st in states.items()}
        if len(set(ids.values())) > 1:
            shown = ", ".join(f"dataroot_{role}='{self.db[role]}' ({bid or 'no build id'})" for role, bid in ids.items())
            raise OptionError(
                f"'{self.where}': the LMDBs come from different builds of scripts/create_lmdb_hdr.py: {shown}. "
                f"Their keys may match while their images do not, so training would see mismatched pairs. "
                f"Fix: point dataroot_lq/gt/dgain at the lq.lmdb, gt.lmdb and dgain.lmdb of one --out folder, "
                f"or rebuild them together."
            )
        if None in ids.values():
            logger.warning(f"'{self.where}': the LMDBs {', '.join(self.db.values())} carry no build id (built by an "
                           f"older scripts/create_lmdb_hdr.py), so they cannot be checked to be one build; rebuild "
                           f"them to make this check.")

    # -- plumbing -------------------------------------------------------------------------------
    def _env(self, role: str) -> Any:
        return reader_env(self.db[role])

    def roots(self) -> List[str]:
        return list(self.db.values())

    def _get(self, role: str, key: str, txn: Any) -> Any:
        value = txn.get(key.encode("utf-8"))
        if value is None:
            raise ImageIOError(f"Key '{key}' listed in '{self.db[role]}/meta_info.txt' is not in the database. "
                               f"Fix: rebuild the LMDB.")
        return value

    def _unpickle(self, data: Any, name: str) -> Any:
        """A record of the origin fork's format (behind allow_pickle, warned at construction): plain data and
        numpy arrays only; any other global a pickle names (a function it would call) is refused."""
        import io
        import pickle

        class NumpyOnly(pickle.Unpickler):
            def find_class(self, module: str, global_name: str) -> Any:
                if module in _NUMPY_PICKLE_MODULES and global_name in _NUMPY_PICKLE_NAMES:
                    return super().find_class(module, global_name)
                raise pickle.UnpicklingError(f"it names {module}.{global_name}, which is not numpy array data "
                                             "(unpickling it would run code)")

        try:
            return NumpyOnly(io.BytesIO(bytes(data))).load()
        except Exception as e:  # unpickling can fail in arbitrary ways
            raise ImageIOError(f"Cannot unpickle '{name}': {e}. Fix: rebuild the LMDB.") from None

    # -- the check before training ----------------------------------------------------------------
    def check(self, run: CheckRun) -> None:
        """Sizes from meta_info.txt and every dgain entry; with ``full`` the writer's record or a decode."""
        good = [self._check_pair(run, i) for i in range(len(self))]
        if run.settings.level != "full":
            return
        validated = self.validation()
        if validated is not None:  # our format: the writer decoded and checked every record
            run.report.note = "pixels checked when the LMDB was written"
            for key, count in sorted(validated.get("negatives", {}).items()):
                run.report.negatives.append((key, int(count)))
            if run.settings.hdr_max:
                run.report.peaks_unchecked = (
                    f"The HDR peaks of '{run.report.where}' were not compared with hdr_max={run.settings.hdr_max:g}: "
                    f"the LMDB records no peaks. Run python scripts/check_dataset.py on options naming the source "
                    f"folders to compare them.")
            return
        self._scan_pixels(run, good)

    def _check_pair(self, run: CheckRun, index: int) -> bool:
        """The quick part for one pair; False after reporting a problem that makes the pair unusable."""
        ok = True
        names = self.paths(index)
        if self.has_dgain:
            try:
                vals = self.read_dgain(index)
                run.report.note_exposure(names.get("dgain_path", str(index)), vals["dgain"], vals["gamma"])
            except (OSError, ValueError) as e:
                run.report.add("dgain", exception_text(e))
                ok = False
        lq_hw, gt_hw = self.header_size(index, "lq"), self.header_size(index, "gt")
        if lq_hw is not None and gt_hw is not None:
            ok = run.sizes_ok(names["lq_path"], lq_hw, names["gt_path"], gt_hw) and ok
        return ok

    def _scan_pixels(self, run: CheckRun, good: Sequence[bool]) -> None:
        """Legacy (pickled) LMDB: decode each GT record; the cache is keyed by the databases' own size/mtime."""
        fp = self.fingerprint()
        todo = []
        for i in range(len(self)):
            counts = run.cache.get(f"lmdb:{self.paths(i)['gt_path']}", fp, PixelCounts)
            if counts is not None:
                run.report.from_cache += 1
                run.note_pixels(self.paths(i)["gt_path"], counts)
            elif good[i] and run.mine(i):
                todo.append(i)
        progress = run.progress(len(todo))

        def scan(i: int) -> Tuple[int, Optional[str], Optional[PixelCounts]]:
            try:
                return i, None, count_bad_pixels(self.read(i)["gt"])
            except (OSError, ValueError) as e:
                return i, exception_text(e), None

        for i, err, counts in parallel_map(scan, todo, run.threads):
            progress.step()
            run.report.decoded += 1
            if err is not None:
                run.report.add("unreadable", err)
                continue
            gt_name = self.paths(i)["gt_path"]
            run.cache.put(f"lmdb:{gt_name}", fp, counts)
            run.note_pixels(gt_name, counts)

    def header_size(self, index: int, role: str) -> Optional[Tuple[int, int]]:
        """(h, w) from meta_info.txt (None when it does not say)."""
        g, q = self.pairs[index]
        shp = self.shapes[role].get(g if role == "gt" else q)
        return (int(shp[0]), int(shp[1])) if shp and len(shp) >= 2 else None

    def read_dgain(self, index: int) -> Dict[str, float]:
        _, q = self.pairs[index]
        name = self.records[index]["dgain_path"]
        with self._env("dgain").begin() as txn:
            raw = self._get("dgain", q, txn)
        if self.legacy:
            info = self._unpickle(raw, name)
            if not isinstance(info, Mapping):
                raise ValueError(f"dgain entry '{name}' is a {type(info).__name__}, not a dict. Fix: rebuild the LMDB.")
            text = "".join(f"{k}: {info[k]}\n" for k in ("dgain", "gamma") if k in info)
            return parse_dgain_text(text, source=name)
        return parse_dgain_text(bytes(raw), source=name)

    def validation(self) -> Optional[Dict[str, Any]]:
        """The writer's record of its full pixel check (our format), or None (legacy)."""
        if self.legacy or not self.state.get("validated"):
            return None
        return {"negatives": dict(self.state.get("negatives", {}))}

    def fingerprint(self) -> Tuple[int, int]:
        """(total size, newest mtime_ns) of the three data.mdb files: changes when any database changes."""
        size, mtime = 0, 0
        for p in self.db.values():
            st = os.stat(os.path.join(p, "data.mdb"))
            size += int(st.st_size)
            mtime = max(mtime, int(st.st_mtime_ns))
        return size, mtime

    # -- reading ----------------------------------------------------------------------------------
    def read(self, index: int, window: WindowArg = None) -> Dict[str, Any]:
        """``{lq, gt, dgain, gamma, lq_path, gt_path, dgain_path}``; with ``window`` only that crop of the images.

        For our format the GT crop is copied straight out of the stored array (the rest is never
        touched); the LQ JPEG is decoded whole (the codec has no region decode), then cropped.
        """
        g, q = self.pairs[index]
        rec = self.records[index]
        out: Dict[str, Any] = dict(rec)
        with self._env("lq").begin(buffers=True) as txn:
            lq_bytes = bytes(self._get("lq", q, txn))
        lq_window, gt_window = paired_windows(window, rec["lq_path"], rec["gt_path"])
        out["lq"] = decode_ldr_bytes(lq_bytes, name=rec["lq_path"], window=lq_window)

        with self._env("gt").begin(buffers=True) as txn:
            raw = self._get("gt", g, txn)
            if not self.gt_hdr:  # an 8/16-bit GT image (BasicSR image LMDB)
                out["gt"] = decode_ldr_bytes(bytes(raw), name=rec["gt_path"], window=gt_window)
            elif self.legacy:
                arr = self._unpickle(raw, rec["gt_path"])
            else:
                out["gt"] = decode_hdr_record(raw, rec["gt_path"], gt_window)
        if self.legacy and self.gt_hdr:
            if not isinstance(arr, np.ndarray) or arr.ndim != 3 or arr.shape[2] != 3:
                raise ImageIOError(f"GT entry '{rec['gt_path']}' is not an H x W x 3 array "
                                   f"({type(arr).__name__} {getattr(arr, 'shape', '')}). Fix: rebuild the LMDB.")
            win = resolve_window(gt_window, arr.shape[0], arr.shape[1], rec["gt_path"])
            if win is not None:
                arr = win.crop(arr)
            out["gt"] = np.ascontiguousarray(arr[..., ::-1], dtype=np.float32)  # the fork stored OpenCV's BGR
        if self.has_dgain:
            out.update(self.read_dgain(index))
        return out
