"""LMDB storage of LDR/HDR/dgain triples: the writer behind ``scripts/create_lmdb_hdr.py`` and the reader
behind ``io_backend: {type: lmdb}``.

Layout written by :func:`create_lmdb_hdr` (no pickle anywhere)::

    OUT/lq.lmdb      key = LQ stem (UTF-8)   value = the original JPEG/PNG file bytes
    OUT/gt.lmdb      key = GT stem           value = 16-byte header + raw little-endian float array
    OUT/dgain.lmdb   key = LQ stem           value = the original dgain .txt bytes
    */meta_info.txt  one line per record: ``<key> (<h>,<w>,<c>) <format>`` (``<key> () txt`` for dgain)

GT header (``struct '<4sBcBBII'``): magic ``DHDR``, version 1, dtype char (``e`` float16 / ``f``
float32), channels (3), reserved, height, width; then ``height x width x 3`` RGB values, row-major.
A training crop reads only its own rows of the stored array.

Each database also holds a JSON state record under the key ``\\x00diffir-hdr-lmdb`` (no file name
can start with a NUL byte): format, version, kind, the build configuration, a build id (a random
uuid shared by the three databases of one build) and whether the build completed. ``meta_info.txt``
is written only when every pair is in, so a reader never sees a half-built set; an interrupted build
resumes where it stopped when run again with the same arguments (also after a full disk), and a
build over different sources or options is refused.

Readers refuse three databases of different builds (same stems, other pairs: training would learn
mismatched pairs silently); databases of older builds without an id are read with a warning. A
``data.mdb`` shorter than the pages it uses (a partly copied set) is refused before it is read:
reading past its end would kill the process with SIGBUS.

Precision: ``float32`` is lossless. ``float16`` (``--gt-dtype float16``) halves the size; its
relative rounding error is at most 2^-11 = 0.049 % (values below 6.1e-5 are subnormal, absolute
error <= 3e-8), values above 65504 cannot be stored (the writer refuses them). Against the
RGBE ``.hdr`` sources of the AIM set this costs nothing: an RGBE value has an 8-bit mantissa, so
every RGBE value between 7.6e-6 and 65504 is exactly representable in float16 (RGBE itself already
truncates by about 0.4 %, at most 0.78 % of a pixel's largest channel). From float EXR sources
float16 adds the 0.049 % bound, about 8x finer than RGBE.

The origin fork's LMDBs (pickled arrays and dicts, keys from its ``meta_info.txt``) are read only
with ``io_backend: {type: lmdb, allow_pickle: true}``: unpickling runs code stored in the file.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import struct
import time
import uuid
import warnings
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from DiffIR.data.checks import (channel_mismatch_message, count_bad_pixels, nonfinite_message, paired_windows,
                                parallel_map, size_mismatch_message)
from DiffIR.data.dgain import parse_dgain_text
from DiffIR.data.pairing import format_names, pair_format_parts, pair_stems, read_meta_info_file, scan_paired_folders
from DiffIR.utils.hdr_io import ImageIOError, WindowArg, decode_ldr_bytes, read_hdr, read_image_info, resolve_window
from DiffIR.utils.misc import atomic_open
from DiffIR.utils.errors import OptionError

logger = logging.getLogger("DiffIR")

FORMAT_NAME = "diffir-hdr-lmdb"
FORMAT_VERSION = 1
STATE_KEY = b"\x00diffir-hdr-lmdb"
NEG_PREFIX = b"\x00neg\x00"  # gt.lmdb: b"\x00neg\x00<stem>" -> count of negative values (only when > 0)
KINDS = ("lq", "gt", "dgain")
GT_DTYPES = {"float32": "f", "float16": "e"}
FLOAT16_MAX = 65504.0
MAGIC = b"DHDR"
_HEADER = struct.Struct("<4sBcBBII")
HEADER_SIZE = _HEADER.size  # 16
_META_LINE = re.compile(r"^(?P<key>.+) \((?P<shape>[0-9, ]*)\)(?: (?P<fmt>\S+))?\s*$")

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "GT_DTYPES",
    "LmdbBuildError",
    "disk_full_error",
    "truncated_message",
    "encode_hdr_record",
    "decode_hdr_record",
    "hdr_record_shape",
    "lmdb_paths",
    "create_lmdb_hdr",
    "LmdbPairReader",
]


class LmdbBuildError(ValueError):
    """The LMDB cannot be built (bad inputs, or an existing output that must not be overwritten)."""


def _lmdb():
    import lmdb  # imported lazily: only LMDB users need it at import time

    return lmdb


# One read-only handle per database and process: LMDB refuses to open one environment twice in a
# process (e.g. a train and a val set over the same files). Worker processes open their own.
_READ_ENVS: Dict[str, Tuple[int, Any]] = {}


def truncated_message(path: str, have: int, need: int) -> str:
    """The one message for a ``data.mdb`` shorter than the pages its LMDB uses (e.g. a partly copied set)."""
    return (f"'{os.path.join(path, 'data.mdb')}' is truncated: {have} bytes, the LMDB needs {need}. Fix: copy it "
            f"again, or rebuild it with scripts/create_lmdb_hdr.py.")


def _open_checked(path: str, exc: type) -> Any:
    """Open ``path`` read-only (no lock file) after checking ``data.mdb`` holds every page the LMDB uses.

    Reading a page beyond the end of a truncated ``data.mdb`` is a SIGBUS that kills the process with no
    message; the environment's own meta pages (read with ``pread``, not through the map) say how many
    pages it uses, so the size check comes first. Raises ``exc`` naming the file and the fix.
    """
    lmdb = _lmdb()
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


def _reader_env(path: str) -> Any:
    key = os.path.realpath(path)
    held = _READ_ENVS.get(key)
    if held is not None:
        if held[0] == os.getpid():
            return held[1]
        held[1].close()  # inherited through fork (a DataLoader worker): py-lmdb refuses a second open until closed
    env = _open_checked(path, ImageIOError)
    _READ_ENVS[key] = (os.getpid(), env)
    return env


def _forget_reader_env(path: str) -> None:
    """Close this process's read handle of ``path`` (before writing to it)."""
    held = _READ_ENVS.pop(os.path.realpath(path), None)
    if held is not None and held[0] == os.getpid():
        held[1].close()


# ----------------------------------------------------------------------------------------------
# GT records
# ----------------------------------------------------------------------------------------------
def encode_hdr_record(rgb: np.ndarray, dtype: str = "float32") -> bytes:
    """The stored form of an ``H x W x 3`` RGB HDR array: 16-byte header + raw values (``dtype``)."""
    if dtype not in GT_DTYPES:
        raise ValueError(f"gt dtype must be one of {', '.join(GT_DTYPES)}, got {dtype!r}")
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"encode_hdr_record expects an H x W x 3 array, got shape {arr.shape}")
    h, w, c = arr.shape
    code = GT_DTYPES[dtype]
    data = np.ascontiguousarray(arr, dtype=np.dtype("<" + code))
    return _HEADER.pack(MAGIC, FORMAT_VERSION, code.encode(), c, 0, h, w) + data.tobytes()


def _parse_header(buf: Any, name: str) -> Tuple[np.dtype, int, int, int]:
    if len(buf) < HEADER_SIZE:
        raise ImageIOError(f"HDR record '{name}' is truncated ({len(buf)} bytes). Fix: rebuild the LMDB.")
    magic, version, code, c, _, h, w = _HEADER.unpack(bytes(buf[:HEADER_SIZE]))
    if magic != MAGIC or version != FORMAT_VERSION or code not in (b"e", b"f"):
        raise ImageIOError(
            f"HDR record '{name}' is not in the {FORMAT_NAME} v{FORMAT_VERSION} format (magic {magic!r}, version {version}). "
            f"Fix: rebuild the LMDB with scripts/create_lmdb_hdr.py."
        )
    dt = np.dtype("<" + code.decode())
    if len(buf) != HEADER_SIZE + h * w * c * dt.itemsize:
        raise ImageIOError(
            f"HDR record '{name}' holds {len(buf) - HEADER_SIZE} value bytes, but its header says {h}x{w}x{c} {dt.name}. "
            f"Fix: rebuild the LMDB."
        )
    return dt, h, w, c


def hdr_record_shape(buf: Any, name: str = "<record>") -> Tuple[int, int, int]:
    """``(height, width, channels)`` from a record's header."""
    _, h, w, c = _parse_header(buf, name)
    return h, w, c


def decode_hdr_record(buf: Any, name: str = "<record>", window: WindowArg = None) -> np.ndarray:
    """float32 RGB array (or only ``window`` of it) from a stored record; copies only the window's values."""
    dt, h, w, c = _parse_header(buf, name)
    arr = np.frombuffer(buf, dtype=dt, count=h * w * c, offset=HEADER_SIZE).reshape(h, w, c)
    win = resolve_window(window, h, w, name)
    if win is not None:
        arr = win.crop(arr)
    return np.array(arr, dtype=np.float32, order="C")


# ----------------------------------------------------------------------------------------------
# state records and meta_info
# ----------------------------------------------------------------------------------------------
def lmdb_paths(out_dir: str) -> Dict[str, str]:
    """``{'lq': OUT/lq.lmdb, 'gt': OUT/gt.lmdb, 'dgain': OUT/dgain.lmdb}``."""
    return {k: os.path.join(str(out_dir), f"{k}.lmdb") for k in KINDS}


def _read_state(env: Any) -> Optional[Dict[str, Any]]:
    with env.begin() as txn:
        raw = txn.get(STATE_KEY)
    if raw is None:
        return None
    try:
        state = json.loads(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return state if isinstance(state, dict) and state.get("format") == FORMAT_NAME else None


def _write_meta_info(db_path: str, lines: Sequence[str]) -> None:
    """meta_info.txt, written to a temporary name and renamed (never half-written)."""
    with atomic_open(os.path.join(db_path, "meta_info.txt"), "w", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))


def _read_meta_info(db_path: str, legacy: bool) -> Tuple[List[str], Dict[str, Tuple[int, ...]]]:
    """Keys (file order) and shapes from ``meta_info.txt``.

    Our lines are ``key (h,w,c) fmt``. BasicSR / origin-fork lines are ``name.ext (h,w,c) level``,
    and their key is the part before the first dot (as the fork reads it).
    """
    path = os.path.join(db_path, "meta_info.txt")
    with open(path, "r", encoding="utf-8") as f:
        lines = [ln.rstrip("\n") for ln in f if ln.strip()]
    keys: List[str] = []
    shapes: Dict[str, Tuple[int, ...]] = {}
    for ln in lines:
        m = _META_LINE.match(ln)
        if legacy:
            key = ln.split()[0].split(".")[0]
        else:
            key = m.group("key") if m else ln.strip()
        keys.append(key)
        if m and m.group("shape").strip():
            try:
                shapes[key] = tuple(int(v) for v in m.group("shape").split(","))
            except ValueError:
                pass
    return keys, shapes


# ----------------------------------------------------------------------------------------------
# writer
# ----------------------------------------------------------------------------------------------
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
    lmdb = _lmdb()
    free = _free_bytes(path)
    if isinstance(e, lmdb.DiskError) or getattr(e, "errno", None) in _DISK_FULL_ERRNOS or \
            (free is not None and free < need + MIN_FREE_BYTES):
        return disk_full_error(path, str(e) or type(e).__name__)
    return LmdbBuildError(f"Writing the LMDB '{path}' failed: {e}. Fix: check the disk (free space, errors in the "
                          f"system log), then run the same command again: the build resumes where it stopped.")


def _open_env(path: str, map_size: int) -> Any:
    _forget_reader_env(path)
    lmdb = _lmdb()
    if os.path.isfile(os.path.join(path, "data.mdb")):  # resuming: refuse a truncated file before touching it
        _open_checked(path, LmdbBuildError).close()
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
    lmdb = _lmdb()
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
#: what the writer reports per kind of bad pair
_PROBLEM_TITLES = {"unreadable": "unreadable or truncated image(s)", "size_mismatch": "pair(s) of different sizes",
                   "nonfinite": "HDR image(s) with NaN/Inf", "dgain": "bad dgain file(s)",
                   "range": "HDR image(s) beyond the float16 range",
                   "channel_mismatch": "pair(s) of a grey and a colour image"}
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
    build = _Build.from_sources(dataroot_lq, dataroot_gt, dataroot_dgain, out_dir, gt_dtype, filename_tmpl,
                                meta_info_file, log)
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
    def from_sources(cls, dataroot_lq: str, dataroot_gt: str, dataroot_dgain: str, out_dir: str, gt_dtype: str,
                     filename_tmpl: str, meta_info_file: Optional[str], log: Callable[[str], None]) -> "_Build":
        """Pair the three source folders (refusing missing ones) and record what the build is made of."""
        for flag, folder in (("--lq", dataroot_lq), ("--gt", dataroot_gt), ("--dgain", dataroot_dgain)):
            if not os.path.isdir(folder):
                what = "does not exist" if not os.path.exists(folder) else "is not a folder"
                raise OptionError(f"{flag} '{folder}' {what}. Fix: pass the folder of the "
                                  f"{dict(lq='LDR images', gt='HDR images', dgain='dgain .txt files')[flag[2:]]}.")
        records = scan_paired_folders(dataroot_lq, dataroot_gt, dataroot_dgain, filename_tmpl, "create_lmdb_hdr",
                                      meta_info_file)
        items = [(_stem(r["gt_path"]), _stem(r["lq_path"]), r) for r in records]
        config = {
            "sources": {"lq": os.path.abspath(dataroot_lq), "gt": os.path.abspath(dataroot_gt),
                        "dgain": os.path.abspath(dataroot_dgain)},
            "gt_dtype": gt_dtype,
            "filename_tmpl": filename_tmpl,
            "meta_info_file": os.path.abspath(meta_info_file) if meta_info_file else None,
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
    path, state = b.paths[kind], _read_state(b.envs[kind])
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
    problems: Dict[str, List[str]] = {k: [] for k in _PROBLEM_TITLES}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(b.items), initial=len(plan.done), unit="pair",
                   desc=f"LMDB {os.path.basename(str(b.out_dir))}", dynamic_ncols=True)
    batches = _Batches(b.envs, plan.stale, batch_items)
    written = 0
    load = partial(_load_pair, gt_dtype=b.gt_dtype)
    for (g, q, _), err, out in parallel_map(load, plan.todo, threads or max(1, min(8, os.cpu_count() or 1))):
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
    text = "\n".join(f"  {len(v)} {_PROBLEM_TITLES[k]}:\n    " + "\n    ".join(v[:20])
                     + (f"\n    ... and {len(v) - 20} more" if len(v) > 20 else "")
                     for k, v in problems.items() if v)
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
        _write_meta_info(b.paths[k], metas[k])
    negatives = {g: n for g, n in _negative_counts(b.envs["gt"]).items() if n > 0}
    done = {"pairs": len(b.items), "negatives": negatives, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            "validated": True}
    for k in KINDS:
        _put_batch(b.envs[k], [], state={**_base_state(b), "kind": k, "complete": True, **done})
    for k, env in b.envs.items():
        try:
            env.sync(True)
        except _lmdb().Error as e:
            raise _write_error(b.paths[k], e, 0) from None
    b.log(f"Wrote {written} pairs to '{b.out_dir}' ({len(b.items)} in all, gt {b.gt_dtype}) in {seconds:.1f}s."
          + (f" {len(negatives)} HDR image(s) have negative values (stored as they are; training clamps them to 0): "
             f"{format_names(sorted(negatives))}" if negatives else ""))
    return b.summary(written, skipped, negatives)


# ----------------------------------------------------------------------------------------------
# reader
# ----------------------------------------------------------------------------------------------
#: the globals a pickled numpy array (and its dtype and scalars) needs, in numpy 1 and 2
_NUMPY_PICKLE_MODULES = frozenset({"numpy", "numpy.core.multiarray", "numpy._core.multiarray",
                                   "numpy.core.numeric", "numpy._core.numeric"})
_NUMPY_PICKLE_NAMES = frozenset({"_reconstruct", "ndarray", "dtype", "scalar", "_frombuffer"})


class LmdbPairReader:
    """Reads triples from ``lq.lmdb`` / ``gt.lmdb`` / ``dgain.lmdb`` (ours, or the origin fork's with ``allow_pickle``).

    Interface (shared with the disk reader): ``len()``, ``paths(i)``, ``read(i, window)``,
    ``roots()``, plus ``header_size(i, role)``, ``read_dgain(i)``, ``validation()`` and
    ``fingerprint()`` for the dataset checks. Databases are opened once per process, on first use
    (DataLoader workers open their own handles; the reader itself holds none, so it pickles).
    """

    backend = "lmdb"

    def __init__(self, dataroot_lq: str, dataroot_gt: str, dataroot_dgain: Optional[str], filename_tmpl: str = "{}",
                 where: str = "datasets", meta_info_file: Optional[str] = None, allow_pickle: bool = False,
                 pair_format: Any = None, **backend_opt: Any) -> None:
        if backend_opt:
            raise OptionError(
                f"'{where}:io_backend' has keys {sorted(backend_opt)} that the lmdb backend does not use. "
                f"Fix: remove them (accepted: type, allow_pickle)."
            )
        self.where = where
        _, _, self.gt_hdr, self.has_dgain = pair_format_parts(pair_format)
        self.db = {"lq": str(dataroot_lq), "gt": str(dataroot_gt)}
        if self.has_dgain:
            self.db["dgain"] = str(dataroot_dgain)
        self.allow_pickle = bool(allow_pickle)
        self.state: Dict[str, Any] = {}
        states = self._read_states()
        self.legacy = all(st is None for st in states.values())
        if not self.legacy:
            self._check_own_build(states)
        elif self.gt_hdr or self.has_dgain:  # origin-fork layout: pickled arrays / dicts
            self._allow_pickled()
        keys = self._read_meta_infos()
        only = read_meta_info_file(meta_info_file, where) if meta_info_file else None
        labels = (f"dataroot_lq='{self.db['lq']}'", f"dataroot_gt='{self.db['gt']}'",
                  f"dataroot_dgain='{self.db.get('dgain')}'")
        self.pairs = pair_stems(keys["lq"], keys["gt"], keys.get("dgain"), filename_tmpl, where, labels, only,
                                str(meta_info_file or ""), dgain_suffix="")
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
            states[role] = _read_state(_reader_env(path))
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
            klist, shapes = _read_meta_info(path, self.legacy)
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
        return _reader_env(self.db[role])

    def __len__(self) -> int:
        return len(self.pairs)

    def paths(self, index: int) -> Dict[str, str]:
        return dict(self.records[index])

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

    # -- checks -----------------------------------------------------------------------------------
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
