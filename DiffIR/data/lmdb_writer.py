"""Building the LMDBs of an AIM-ITM style data set (``scripts/create_lmdb_hdr.py``): :func:`create_lmdb_hdr`, in the
format of :mod:`DiffIR.data.lmdb_format`.

Every pair is decoded and checked on the way, so a finished build needs no pixel check when read. ``meta_info.txt``
is written only when every pair is in, then the databases are marked complete; an interrupted build resumes where it
stopped when run again with the same arguments (also after a full disk: LMDB transactions leave a database as it
was, and the disk-full machinery below turns LMDB's short writes into one message with the fix), and a build over
different sources or options is refused.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from DiffIR.data.dgain import parse_dgain_text
from DiffIR.data.lmdb_format import (FLOAT16_MAX, FORMAT_NAME, FORMAT_VERSION, GT_DTYPES, KINDS, NEG_PREFIX, STATE_KEY,
                                     encode_hdr_record, hdr_record_shape, lmdb_paths, read_state, write_meta_info)
from DiffIR.data.lmdb_reader import forget_reader_env, lmdb_module, open_checked
from DiffIR.data.pair_problems import (PROBLEM_TITLES, channel_mismatch_message, count_bad_pixels, nonfinite_message,
                                       problem_text, size_mismatch_message)
from DiffIR.data.pair_reader import PairSource
from DiffIR.data.pairing import format_names, scan_paired_folders
from DiffIR.data.parallel import default_threads, parallel_map
from DiffIR.utils.errors import DiffIRError, OptionError
from DiffIR.utils.hdr_io import decode_ldr_bytes, read_hdr, read_image_info

__all__ = ["LmdbBuildError", "create_lmdb_hdr", "disk_full_error", "MIN_FREE_BYTES"]


class LmdbBuildError(DiffIRError, ValueError):
    """The LMDB cannot be built (bad inputs, or an existing output that must not be overwritten)."""


#: free space below which no new database is opened for writing: LMDB maps its (sparse) lock file, and
#: touching a mapped page that the full disk cannot back is a SIGBUS, not an error
MIN_FREE_BYTES = 1 << 20
_DISK_FULL_ERRNOS = tuple(n for n in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if n is not None)


def _free_bytes(path: str) -> Optional[int]:
    """Free bytes on the disk holding ``path`` (or its nearest existing parent); None if unknown."""
    p = os.path.abspath(path)
    while not os.path.exists(p) and os.path.dirname(p) != p:
        p = os.path.dirname(p)
    try:
        return int(shutil.disk_usage(p).free)
    except OSError:
        return None


def disk_full_error(folder: str, detail: str) -> LmdbBuildError:
    """The one "disk full" message of the writer: the folder, what failed, and the fix (the build resumes)."""
    free = _free_bytes(folder)
    room = f"; {free / 2 ** 20:.1f} MiB free" if free is not None else ""
    return LmdbBuildError(
        f"Disk full while writing the LMDB '{folder}' ({detail}{room}). Fix: free space on that disk and run the "
        f"same command again (the pairs already stored are kept and the build resumes), or build into an --out on "
        f"a disk with room (the LMDBs take about the size of the JPEGs plus 12 bytes per HDR pixel, 6 with "
        f"--gt-dtype float16)."
    )


def _write_error(path: str, e: BaseException, need: int) -> LmdbBuildError:
    """A failed LMDB write as a message. LMDB reports a full disk as an I/O error (a short ``pwrite``), so
    a failure with less free space than the transaction needed is called what it most likely is."""
    lmdb = lmdb_module()
    free = _free_bytes(path)
    if isinstance(e, lmdb.DiskError) or getattr(e, "errno", None) in _DISK_FULL_ERRNOS or \
            (free is not None and free < need + MIN_FREE_BYTES):
        return disk_full_error(path, str(e) or type(e).__name__)
    return LmdbBuildError(f"Writing the LMDB '{path}' failed: {e}. Fix: check the disk (free space, errors in the "
                          f"system log), then run the same command again: the build resumes where it stopped.")


def _open_env(path: str, map_size: int) -> Any:
    """A database of the build opened for writing: this process's read handle closed first, a truncated file and a
    disk without room for the lock file refused before LMDB maps them (either would be a SIGBUS)."""
    forget_reader_env(path)
    lmdb = lmdb_module()
    if os.path.isfile(os.path.join(path, "data.mdb")):  # resuming: refuse a truncated file before touching it
        open_checked(path, LmdbBuildError).close()
    lock = os.path.join(path, "lock.mdb")
    if not os.path.exists(lock) or os.stat(lock).st_blocks == 0:  # a new lock file: its first page needs room
        free = _free_bytes(path)
        if free is not None and free < MIN_FREE_BYTES:
            raise disk_full_error(path, "no room left to open the database")
    try:
        return lmdb.open(path, map_size=int(map_size), subdir=True, readonly=False, meminit=False, max_dbs=0)
    except lmdb.Error as e:
        raise LmdbBuildError(f"Cannot open '{path}' for writing: {e}. Fix: check the folder's permissions and free "
                             f"space, or choose another --out.") from None


def _put_batch(env: Any, items: Sequence[Tuple[bytes, bytes]], deletes: Sequence[bytes] = (),
               state: Optional[Dict[str, Any]] = None) -> None:
    """Write ``items`` (and the state record) in one transaction, doubling the map until it fits.

    A failed commit leaves the database as it was before the transaction (LMDB is transactional), so
    the build stays resumable; the failure is raised as :class:`LmdbBuildError` ("disk full" when it is).
    """
    lmdb = lmdb_module()
    while True:
        try:
            _write_txn(env, items, deletes, state)
            return
        except lmdb.MapFullError:
            env.set_mapsize(int(env.info()["map_size"]) * 2)
        except (lmdb.Error, OSError) as e:
            raise _write_error(env.path(), e, sum(len(k) + len(v) for k, v in items)) from None


def _write_txn(env: Any, items: Sequence[Tuple[bytes, bytes]], deletes: Sequence[bytes],
               state: Optional[Dict[str, Any]]) -> None:
    with env.begin(write=True) as txn:
        for key in deletes:
            txn.delete(key)
        for key, value in items:
            txn.put(key, value)
        if state is not None:
            txn.put(STATE_KEY, json.dumps(state, sort_keys=True).encode("utf-8"))


def _existing_keys(env: Any) -> set:
    """The record keys (internal keys start with a NUL byte, which no file name can)."""
    with env.begin() as txn:
        return {bytes(k) for k in txn.cursor().iternext(keys=True, values=False) if not bytes(k).startswith(b"\x00")}


def _negative_counts(env: Any) -> Dict[str, int]:
    out: Dict[str, int] = {}
    with env.begin() as txn:
        cur = txn.cursor()
        if cur.set_range(NEG_PREFIX):
            for k, v in cur:
                k = bytes(k)
                if not k.startswith(NEG_PREFIX):
                    break
                out[k[len(NEG_PREFIX):].decode("utf-8")] = int(bytes(v))
    return out


#: one source pair: (GT stem, LQ stem, the pairing's record of its three files)
_Item = Tuple[str, str, Mapping[str, str]]
#: a batch is committed at this many pairs' bytes at the latest (keeps a transaction's memory bounded)
_BATCH_BYTES = 256 << 20


def create_lmdb_hdr(
    dataroot_lq: str,
    dataroot_gt: str,
    dataroot_dgain: str,
    out_dir: str,
    gt_dtype: str = "float32",
    filename_tmpl: str = "{}",
    meta_info_file: Optional[str] = None,
    batch_items: int = 64,
    initial_map_size: int = 64 << 20,
    threads: Optional[int] = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> Dict[str, Any]:
    """Build ``OUT/{lq,gt,dgain}.lmdb`` from three paired folders; returns a summary dict.

    Every pair is decoded and checked on the way (unreadable images, LQ/GT size mismatch, NaN/Inf,
    dgain entries, float16 range); a bad pair is not written and all problems are reported together
    at the end with :class:`LmdbBuildError`, leaving the build incomplete: fix the files and run the
    same command again to add only what is missing (pairs already stored are not re-read: to pick up
    edits of stored files, rebuild into an empty folder). Negative HDR values are stored as they are
    (training clamps them) and counted. The map grows as needed. An existing ``OUT`` built from other
    sources or options, or any other LMDB there, is refused rather than mixed into.
    ``initial_map_size`` is only a starting point: a full map is doubled and the batch written again.
    """
    if gt_dtype not in GT_DTYPES:
        raise OptionError(f"--gt-dtype must be one of {', '.join(GT_DTYPES)}, got {gt_dtype!r}")
    source = PairSource(dataroot_lq, dataroot_gt, dataroot_dgain, filename_tmpl, "create_lmdb_hdr", meta_info_file)
    build = _Build.from_source(source, out_dir, gt_dtype, log)
    try:
        os.makedirs(out_dir, exist_ok=True)
        try:
            finished = _inspect(build)
            if finished is not None:
                return finished
            plan = _plan(build, initial_map_size)
            t0 = time.time()
            written, problems = _write(build, plan, batch_items, threads, progress)
            _raise_problems(build, problems, len(plan.done) + written)
            return _finish(build, written, len(plan.done), time.time() - t0)
        finally:
            for env in build.envs.values():
                env.close()
    except OSError as e:  # a full disk outside LMDB's own writes (folders, meta_info.txt)
        if e.errno in _DISK_FULL_ERRNOS:
            raise disk_full_error(str(out_dir), str(e)) from None
        raise


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


@dataclass
class _Build:
    """One run of the writer: the paired sources, the configuration it records, and the open databases."""

    out_dir: str
    items: List[_Item]
    config: Dict[str, Any]
    log: Callable[[str], None]
    paths: Dict[str, str] = field(default_factory=dict)
    envs: Dict[str, Any] = field(default_factory=dict)
    states: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # of the databases already there
    build_id: str = ""

    @classmethod
    def from_source(cls, source: PairSource, out_dir: str, gt_dtype: str, log: Callable[[str], None]) -> "_Build":
        """Pair the three source folders (refusing missing ones) and record what the build is made of."""
        for flag, folder in zip(("--lq", "--gt", "--dgain"), source.roots):
            if not os.path.isdir(folder):
                what = "does not exist" if not os.path.exists(folder) else "is not a folder"
                raise OptionError(f"{flag} '{folder}' {what}. Fix: pass the folder of the "
                                  f"{dict(lq='LDR images', gt='HDR images', dgain='dgain .txt files')[flag[2:]]}.")
        records = scan_paired_folders(source)
        items = [(_stem(r["gt_path"]), _stem(r["lq_path"]), r) for r in records]
        config = {
            "sources": dict(zip(("lq", "gt", "dgain"), map(os.path.abspath, source.roots))),
            "gt_dtype": gt_dtype,
            "filename_tmpl": source.filename_tmpl,
            "meta_info_file": os.path.abspath(source.meta_info_file) if source.meta_info_file else None,
        }
        return cls(out_dir, items, config, log, lmdb_paths(out_dir))

    @property
    def gt_dtype(self) -> str:
        return self.config["gt_dtype"]

    def summary(self, written: int, skipped: int, negatives: Mapping[str, int]) -> Dict[str, Any]:
        return {"out": str(self.out_dir), "pairs": len(self.items), "written": written, "skipped": skipped,
                "negatives": dict(negatives), "complete": True}


# -- inspect: what is in OUT already, and may this build add to it? ----------------------------------
def _inspect(b: _Build) -> Optional[Dict[str, Any]]:
    """Open the databases already in ``OUT`` and refuse anything this build must not mix into.

    Returns the summary when ``OUT`` already holds exactly this build, complete (nothing to do).
    """
    present = [k for k in KINDS if _holds_lmdb(b.paths[k])]
    for k in present:
        b.envs[k] = _open_env(b.paths[k], 1 << 20)
        b.states[k] = _own_state(b, k)
    held_ids = {b.states[k].get("build_id") for k in present}
    if len(held_ids) > 1:
        shown = ", ".join(f"{b.paths[k]} ({b.states[k].get('build_id') or 'no build id'})" for k in present)
        raise LmdbBuildError(f"'{b.out_dir}' holds LMDBs of different builds: {shown}. Refusing to add to them. "
                             f"Fix: write to another --out, or delete '{b.out_dir}' to rebuild.")
    b.build_id = next(iter(held_ids)) if held_ids and None not in held_ids else uuid.uuid4().hex
    complete = [k for k in present if b.states[k].get("complete")]
    if present and len(present) < len(KINDS) and complete:
        missing = [b.paths[k] for k in KINDS if k not in present]
        raise LmdbBuildError(f"'{b.out_dir}' is incomplete: {', '.join(missing)} is missing next to the complete "
                             f"{', '.join(b.paths[k] for k in present)}. Fix: delete '{b.out_dir}' and build it again.")
    if len(complete) < len(KINDS):
        return None
    have_keys, wanted = _existing_keys(b.envs["gt"]), {g.encode("utf-8") for g, _, _ in b.items}
    if have_keys == wanted:
        b.log(f"'{b.out_dir}' is already complete ({len(b.items)} pairs); nothing to do.")
        return b.summary(0, len(b.items), b.states["gt"].get("negatives", {}))
    raise LmdbBuildError(
        f"'{b.out_dir}' already holds a complete LMDB of {len(have_keys)} pairs, but the folders now give "
        f"{len(b.items)} pairs ({len(wanted - have_keys)} new, {len(have_keys - wanted)} no longer present). "
        f"Refusing to change a finished set. Fix: write to another --out, or delete '{b.out_dir}' to rebuild."
    )


def _holds_lmdb(path: str) -> bool:
    """Whether ``path`` holds an LMDB; refuses a file, or a folder of other files, where one is to go."""
    present = os.path.exists(os.path.join(path, "data.mdb"))
    if os.path.exists(path) and not os.path.isdir(path):
        raise LmdbBuildError(f"'{path}' exists and is not a folder. Fix: choose another --out or remove it.")
    if os.path.isdir(path) and not present and any(os.scandir(path)):
        raise LmdbBuildError(f"'{path}' exists and holds files but no LMDB. Fix: choose another --out or empty it.")
    return present


def _own_state(b: _Build, kind: str) -> Dict[str, Any]:
    """The state record of the open ``kind`` database, which must be this build's kind, version and config."""
    path, state = b.paths[kind], read_state(b.envs[kind])
    if state is None:
        raise LmdbBuildError(f"'{path}' is an LMDB that this program did not write (no {FORMAT_NAME} state record; "
                             f"e.g. an origin-fork LMDB). Fix: choose another --out, or delete it to rebuild.")
    if state.get("kind") != kind or state.get("version") != FORMAT_VERSION:
        raise LmdbBuildError(f"'{path}' holds a '{state.get('kind')}' LMDB (version {state.get('version')}), "
                             f"not '{kind}' v{FORMAT_VERSION}. Fix: choose another --out.")
    if state.get("config") != b.config:
        old = state.get("config") or {}
        diff = [f"{f}: {old.get(f)!r} -> {b.config[f]!r}" for f in b.config if old.get(f) != b.config[f]]
        raise LmdbBuildError(
            f"'{b.out_dir}' already holds an LMDB built with other sources or options ({'; '.join(diff)}). "
            f"Refusing to mix them. Fix: write to another --out, or delete '{b.out_dir}' to rebuild."
        )
    return state


# -- plan: start or resume -------------------------------------------------------------------------
@dataclass
class _Plan:
    done: List[_Item]  # stored in all three databases already
    todo: List[_Item]
    stale: Dict[str, List[bytes]]  # keys per database that the sources no longer give, deleted with the first batch


def _base_state(b: _Build) -> Dict[str, Any]:
    return {"format": FORMAT_NAME, "version": FORMAT_VERSION, "config": b.config, "complete": False,
            "build_id": b.build_id}


def _plan(b: _Build, initial_map_size: int) -> _Plan:
    """Create the missing databases (marked incomplete) and split the pairs into stored and to write."""
    for k, p in b.paths.items():
        if k not in b.envs:
            os.makedirs(p, exist_ok=True)
            b.envs[k] = _open_env(p, initial_map_size)
            _put_batch(b.envs[k], [], state={**_base_state(b), "kind": k})
    have = {k: _existing_keys(b.envs[k]) for k in KINDS}
    gt_wanted = {g.encode("utf-8") for g, _, _ in b.items}
    lq_wanted = {q.encode("utf-8") for _, q, _ in b.items}
    stale = {"gt": have["gt"] - gt_wanted, "lq": have["lq"] - lq_wanted, "dgain": have["dgain"] - lq_wanted}
    stale["gt"] |= {NEG_PREFIX + k for k in stale["gt"]}
    done = [(g, q, r) for g, q, r in b.items if g.encode("utf-8") in have["gt"]
            and q.encode("utf-8") in have["lq"] and q.encode("utf-8") in have["dgain"]]
    done_set = {g for g, _, _ in done}
    todo = [it for it in b.items if it[0] not in done_set]
    if done:
        b.log(f"Resuming '{b.out_dir}': {len(done)} of {len(b.items)} pairs are already stored; writing {len(todo)}.")
    return _Plan(done, todo, {k: sorted(v) for k, v in stale.items()})


# -- write: decode and check each pair, commit in batches -------------------------------------------
def _load_pair(item: _Item, gt_dtype: str) -> Tuple[_Item, Optional[Tuple[str, str]], Optional[Dict[str, Any]]]:
    """``(item, (problem kind, message), records to store)``: one pair read and checked (in a worker thread)."""
    _, _, rec = item
    try:
        lq_bytes = Path(rec["lq_path"]).read_bytes()
        lq = decode_ldr_bytes(lq_bytes, name=rec["lq_path"])
        hdr = read_hdr(rec["gt_path"])
    except (OSError, ValueError) as e:
        return item, ("unreadable", str(e)), None
    if lq.shape[:2] != hdr.shape[:2]:
        return item, ("size_mismatch", size_mismatch_message(rec["lq_path"], lq.shape, rec["gt_path"], hdr.shape)), None
    try:
        mismatch = channel_mismatch_message(rec["lq_path"], read_image_info(rec["lq_path"]).channels, rec["gt_path"],
                                            read_image_info(rec["gt_path"]).channels)
    except (OSError, ValueError) as e:
        return item, ("unreadable", str(e)), None
    if mismatch:
        return item, ("channel_mismatch", mismatch), None
    try:
        dg_bytes = Path(rec["dgain_path"]).read_bytes()
        parse_dgain_text(dg_bytes, source=rec["dgain_path"])
    except (OSError, ValueError) as e:
        return item, ("dgain", str(e)), None
    counts = count_bad_pixels(hdr)
    if counts.nonfinite:
        return item, ("nonfinite", nonfinite_message(rec["gt_path"], counts.nonfinite)), None
    if gt_dtype == "float16" and hdr.size and float(np.abs(hdr).max()) > FLOAT16_MAX:
        return item, ("range", f"HDR '{rec['gt_path']}' has values up to {float(np.abs(hdr).max()):.6g}, beyond "
                               f"float16's {FLOAT16_MAX:.0f}. Fix: build with --gt-dtype float32."), None
    return item, None, {"lq": lq_bytes, "gt": encode_hdr_record(hdr, gt_dtype), "dgain": dg_bytes,
                        "negative": counts.negative}


class _Batches:
    """Records collected into batches, each committed to the three databases (gt first).

    A pair counts as stored once all three databases have it, so a crash between the commits only costs
    writing that batch again. The first commit also deletes the plan's stale keys.
    """

    def __init__(self, envs: Mapping[str, Any], stale: Mapping[str, Sequence[bytes]], batch_items: int) -> None:
        self.envs, self.stale, self.batch_items = envs, stale, batch_items
        self.records: Dict[str, List[Tuple[bytes, bytes]]] = {k: [] for k in KINDS}
        self.bytes = 0
        self.first = True

    def add(self, gt_stem: str, lq_stem: str, out: Mapping[str, Any]) -> None:
        gk, qk = gt_stem.encode("utf-8"), lq_stem.encode("utf-8")
        self.records["gt"] += [(gk, out["gt"]), (NEG_PREFIX + gk, str(int(out["negative"])).encode("ascii"))]
        self.records["lq"].append((qk, out["lq"]))
        self.records["dgain"].append((qk, out["dgain"]))
        self.bytes += len(out["gt"]) + len(out["lq"])
        if len(self.records["lq"]) >= self.batch_items or self.bytes >= _BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        if not any(self.records.values()) and not self.first:
            return
        for k in ("gt", "lq", "dgain"):
            _put_batch(self.envs[k], self.records[k], self.stale[k] if self.first else ())
        self.records = {k: [] for k in KINDS}
        self.bytes = 0
        self.first = False


def _write(b: _Build, plan: _Plan, batch_items: int, threads: Optional[int],
           progress: bool) -> Tuple[int, Dict[str, List[str]]]:
    """Store every pair of the plan that passes its checks; ``(pairs written, problems by kind)``."""
    problems: Dict[str, List[str]] = {k: [] for k in PROBLEM_TITLES}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(b.items), initial=len(plan.done), unit="pair",
                   desc=f"LMDB {os.path.basename(str(b.out_dir))}", dynamic_ncols=True)
    batches = _Batches(b.envs, plan.stale, batch_items)
    written = 0
    load = partial(_load_pair, gt_dtype=b.gt_dtype)
    for (g, q, _), err, out in parallel_map(load, plan.todo, threads or default_threads()):
        if bar is not None:
            bar.update(1)
        if err is not None:
            problems[err[0]].append(err[1])
            continue
        batches.add(g, q, out)
        written += 1
    batches.flush()
    if bar is not None:
        bar.close()
    return written, problems


def _raise_problems(b: _Build, problems: Mapping[str, List[str]], stored: int) -> None:
    """Every pair that could not be stored, in one error; the build stays incomplete and resumable."""
    n_problems = sum(len(v) for v in problems.values())
    if not n_problems:
        return
    text = problem_text(problems, 20)
    raise LmdbBuildError(
        f"{n_problems} of {len(b.items)} pairs could not be stored in '{b.out_dir}':\n{text}\n"
        f"The other {stored} pairs are stored; the LMDB stays marked incomplete (readers refuse it). "
        f"Fix these files and run the same command again: only the missing pairs are written."
    )


# -- finish: meta_info first, then the complete flag (a reader needs both) ----------------------------
def _finish(b: _Build, written: int, skipped: int, seconds: float) -> Dict[str, Any]:
    """Write the meta_info.txt files, mark the three databases complete, and sync them to disk."""
    metas: Dict[str, List[str]] = {k: [] for k in KINDS}
    with b.envs["gt"].begin(buffers=True) as txn:
        for g, q, rec in b.items:
            shp = hdr_record_shape(txn.get(g.encode("utf-8")), g)
            shape = f"({shp[0]},{shp[1]},{shp[2]})"
            ext = os.path.splitext(rec["lq_path"])[1].lower().lstrip(".")
            metas["lq"].append(f"{q} {shape} {ext}")
            metas["gt"].append(f"{g} {shape} {b.gt_dtype}")
            metas["dgain"].append(f"{q} () txt")
    for k in KINDS:
        write_meta_info(b.paths[k], metas[k])
    negatives = {g: n for g, n in _negative_counts(b.envs["gt"]).items() if n > 0}
    done = {"pairs": len(b.items), "negatives": negatives, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            "validated": True}
    for k in KINDS:
        _put_batch(b.envs[k], [], state={**_base_state(b), "kind": k, "complete": True, **done})
    for k, env in b.envs.items():
        try:
            env.sync(True)
        except lmdb_module().Error as e:
            raise _write_error(b.paths[k], e, 0) from None
    b.log(f"Wrote {written} pairs to '{b.out_dir}' ({len(b.items)} in all, gt {b.gt_dtype}) in {seconds:.1f}s."
          + (f" {len(negatives)} HDR image(s) have negative values (stored as they are; training clamps them to 0): "
             f"{format_names(sorted(negatives))}" if negatives else ""))
    return b.summary(written, skipped, negatives)
