"""The LMDB format of LDR/HDR/dgain triples: written by :mod:`DiffIR.data.lmdb_writer`
(``scripts/create_lmdb_hdr.py``), read by :mod:`DiffIR.data.lmdb_reader` (``io_backend: {type: lmdb}``).

Layout (no pickle anywhere)::

    OUT/lq.lmdb      key = LQ stem (UTF-8)   value = the original JPEG/PNG file bytes
    OUT/gt.lmdb      key = GT stem           value = 16-byte header + raw little-endian float array
    OUT/dgain.lmdb   key = LQ stem           value = the original dgain .txt bytes
    */meta_info.txt  one line per record: ``<key> (<h>,<w>,<c>) <format>`` (``<key> () txt`` for dgain)

GT header (``struct '<4sBcBBII'``): magic ``DHDR``, version 1, dtype char (``e`` float16 / ``f``
float32), channels (3), reserved, height, width; then ``height x width x 3`` RGB values, row-major.
A training crop reads only its own rows of the stored array.

Each database also holds a JSON state record under the key ``\\x00diffir-hdr-lmdb`` (no file name
can start with a NUL byte): format, version, kind, the build configuration, a build id (a random
uuid shared by the three databases of one build) and whether the build completed.

Precision: ``float32`` is lossless. ``float16`` (``--gt-dtype float16``) halves the size; its
relative rounding error is at most 2^-11 = 0.049 % (values below 6.1e-5 are subnormal, absolute
error <= 3e-8), values above 65504 cannot be stored (the writer refuses them). Against the
RGBE ``.hdr`` sources of the AIM set this costs nothing: an RGBE value has an 8-bit mantissa, so
every RGBE value between 7.6e-6 and 65504 is exactly representable in float16 (RGBE itself already
truncates by about 0.4 %, at most 0.78 % of a pixel's largest channel). From float EXR sources
float16 adds the 0.049 % bound, about 8x finer than RGBE.
"""
from __future__ import annotations

import json
import os
import re
import struct
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from DiffIR.utils.image_common import ImageIOError, WindowArg, resolve_window
from DiffIR.utils.misc import atomic_open

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
    "STATE_KEY",
    "encode_hdr_record",
    "decode_hdr_record",
    "hdr_record_shape",
    "lmdb_paths",
    "read_state",
    "write_meta_info",
    "read_meta_info",
]


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
    """``(dtype, h, w, c)`` of a GT record; refuses a record whose header or length is not this format's."""
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


def read_state(env: Any) -> Optional[Dict[str, Any]]:
    """The JSON state record of an open database (None: not written by this program's writer)."""
    with env.begin() as txn:
        raw = txn.get(STATE_KEY)
    if raw is None:
        return None
    try:
        state = json.loads(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return state if isinstance(state, dict) and state.get("format") == FORMAT_NAME else None


def write_meta_info(db_path: str, lines: Sequence[str]) -> None:
    """meta_info.txt, written to a temporary name and renamed (never half-written)."""
    with atomic_open(os.path.join(db_path, "meta_info.txt"), "w", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))


def read_meta_info(db_path: str, legacy: bool) -> Tuple[List[str], Dict[str, Tuple[int, ...]]]:
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
