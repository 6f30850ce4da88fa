"""Radiance RGBE (``.hdr``/``.pic``) files: the header's layout (size, orientation, pixel format) and decoding in
any orientation through OpenCV, down to a crop's last row only. Used by :mod:`DiffIR.utils.hdr_io`.

OpenCV reads only the standard ``-Y H +X W`` orientation with a ``FORMAT`` line, so other files are decoded as
stored under a standard resolution line and then flipped/transposed; XYZE files are refused with the conversion
(their colours would be taken for RGB).
"""
from __future__ import annotations

import os
from typing import Any, NamedTuple, Optional

import numpy as np

from DiffIR.utils.image_common import ImageInfo, ImageIOError, WindowArg, bad_header, cv_imdecode, resolve_window

__all__ = ["RadianceLayout", "RADIANCE_HEADER_MAX", "radiance_layout", "decode_radiance", "radiance_info"]

#: a Radiance header longer than this is refused (real ones are a few hundred bytes)
RADIANCE_HEADER_MAX = 65536
#: the one pixel format OpenCV decodes
_RGBE_FORMAT = b"32-bit_rle_rgbe"


class RadianceLayout(NamedTuple):
    """What a Radiance header says about the pixels: the image size and how the scanlines are stored.

    The resolution line names the slow axis first: ``-Y H +X W`` (the standard: rows top-down, pixels left to
    right), ``+Y H +X W`` (bottom-up), ``-Y H -X W`` (right to left) and the column-major ``±X W ±Y H``.
    """

    height: int
    width: int
    start: int  # byte span of the resolution line in the file
    end: int
    rows: int  # the counts of the stored axes, slow axis first
    cols: int
    transposed: bool  # the slow axis is X: the stored scanlines are the image's columns
    flip_rows: bool  # +Y: bottom-up
    flip_cols: bool  # -X: right to left
    has_format: bool  # a FORMAT line is present (OpenCV needs one)

    @property
    def standard(self) -> bool:
        return not (self.transposed or self.flip_rows or self.flip_cols)

    def standard_bytes(self, data: bytes, rows: int) -> bytes:
        """``data`` with the resolution line ``-Y rows +X cols`` (and a FORMAT line where it had none), as OpenCV
        reads it; the stored scanlines are unchanged (rows fewer than stored are decoded only down to there)."""
        head = data[: self.start]
        if not self.has_format:
            head = head[:-1] + b"FORMAT=" + _RGBE_FORMAT + b"\n\n"
        return head + f"-Y {rows} +X {self.cols}".encode("ascii") + data[self.end :]

    def orient(self, stored: np.ndarray) -> np.ndarray:
        """The image as displayed (top row first, left to right) from the scanlines as stored."""
        img = stored.transpose(1, 0, 2) if self.transposed else stored
        if self.flip_rows:
            img = img[::-1]
        if self.flip_cols:
            img = img[:, ::-1]
        return img


def radiance_layout(head: bytes, name: str) -> RadianceLayout:
    """The :class:`RadianceLayout` of a Radiance header (``head``: the file's first bytes).

    Raises :class:`ImageIOError` for a file that is not Radiance, a header that does not end, pixels stored as XYZE
    (CIE XYZ, which would be read as RGB) or in another format, and a bad resolution line.
    """
    if not head.startswith(b"#?"):
        raise bad_header(name, "not a Radiance RGBE file (no '#?' signature)")
    blank = head.find(b"\n\n")
    if blank < 0:
        raise bad_header(name, "the header does not end")
    formats = [line[7:].strip() for line in head[:blank].split(b"\n") if line.startswith(b"FORMAT=")]
    for fmt in formats:
        if fmt.lower() == b"32-bit_rle_xyze":
            raise ImageIOError(
                f"HDR image '{name}' stores its pixels as XYZE (FORMAT=32-bit_rle_xyze: CIE XYZ colours), which this "
                f"program does not read (they would be taken for RGB). Fix: convert it to RGB, e.g. with Radiance's "
                f"'ra_xyze -r {os.path.basename(name)} rgb.hdr', or export it from its source as an RGB .hdr or .exr.")
        if fmt != _RGBE_FORMAT:
            raise ImageIOError(f"HDR image '{name}' has the pixel format {fmt.decode('latin-1')!r}, not "
                               f"32-bit_rle_rgbe. Fix: re-export it as a Radiance RGBE .hdr or an .exr.")
    start = blank + 2
    end = head.find(b"\n", start)
    line = head[start : end if end >= 0 else len(head)].split()
    axes = line[0::2] if len(line) == 4 else []
    if not (end >= 0 and len(axes) == 2 and all(len(a) == 2 and a[:1] in (b"+", b"-") for a in axes)
            and {a[1:] for a in axes} == {b"X", b"Y"}):
        raise bad_header(name, f"bad resolution line {b' '.join(line)!r} (expected e.g. '-Y 512 +X 768')")
    if not (line[1].isdigit() and line[3].isdigit()):  # plain digits: int() would read b'1_0' as 10, b'+5' as 5
        raise bad_header(name, f"bad resolution line {b' '.join(line)!r}")
    counts = {axes[0][1:]: int(line[1]), axes[1][1:]: int(line[3])}
    signs = {a[1:]: a[:1] for a in axes}
    return RadianceLayout(height=counts[b"Y"], width=counts[b"X"], start=start, end=end, rows=int(line[1]),
                          cols=int(line[3]), transposed=axes[0][1:] == b"X", flip_rows=signs[b"Y"] == b"+",
                          flip_cols=signs[b"X"] == b"-", has_format=bool(formats))


def radiance_info(f: Any, name: str) -> ImageInfo:
    """The :class:`ImageInfo` of an open Radiance file, from its header only."""
    head = f.read(4096)
    if b"\n\n" not in head or head.find(b"\n", head.find(b"\n\n") + 2) < 0:
        head += f.read(RADIANCE_HEADER_MAX - len(head))  # a long header
    layout = radiance_layout(head, name)
    return ImageInfo(layout.height, layout.width, 3)



def decode_radiance(data: bytes, name: str, window: WindowArg) -> Optional[np.ndarray]:
    """Decode Radiance bytes (any orientation); with a window, only the scanlines down to the window's last row.

    OpenCV reads only the standard ``-Y H +X W`` orientation with a ``FORMAT`` line: other orientations are decoded
    as stored under a standard resolution line and then flipped/transposed (:meth:`RadianceLayout.orient`). A
    standard file's scanlines run top-down and OpenCV stops after the rows the header announces, so announcing
    ``top + height`` rows decodes just the part above the window's bottom (about 40 % less work on average for a
    256-row crop of a 1024-row image). Returns the BGR array (None if OpenCV cannot decode it), already cropped.
    """
    layout = radiance_layout(data[:RADIANCE_HEADER_MAX], name)
    win = resolve_window(window, layout.height, layout.width, name) if window is not None else None
    rows = win.bottom if (win is not None and layout.standard) else layout.rows
    if rows != layout.rows or not layout.standard or not layout.has_format:
        data = layout.standard_bytes(data, rows)
    img = cv_imdecode(data)
    if img is None:
        return None
    img = layout.orient(img)
    return img if win is None else win.crop(img)
