"""Image file I/O for LDR/HDR restoration: pure file <-> ``numpy`` conversion.

Conventions (every function here):

* Arrays are ``H x W x 3`` **RGB**, ``float32``. OpenCV's BGR order never leaks out of this module.
* HDR images are linear radiance values returned exactly as stored (negative values, NaN and values
  above any "peak" are kept; the caller decides how to clamp).
* LDR images are display-referred values scaled to ``[0, 1]`` (8-bit /255, 16-bit /65535).

Formats:

* ``.hdr`` / ``.pic`` (Radiance RGBE) through OpenCV (``cv2.IMREAD_UNCHANGED``; without it OpenCV
  returns a tone-mapped uint8 image). RGBE stores no negative numbers (they are written as 0) and
  truncates to about 0.4 % relative precision. Any orientation is read as displayed
  (:mod:`DiffIR.utils.radiance_io`).
* ``.exr`` through the ``OpenEXR`` PyPI package (:mod:`DiffIR.utils.exr_io`).
* ``.npy`` through ``np.load(allow_pickle=False)``.

Crops (``window=``): the readers take an optional ``(top, left, height, width)`` window, or a
function of the decoded ``(height, width)`` returning one, and convert (colour order, float32,
scaling) only the pixels inside it. ``.npy`` files are memory-mapped, so only the window is read;
Radiance ``.hdr`` files are decoded only down to the window's last row; JPEG/PNG/EXR are decoded
whole first (their libraries have no region decode).
:func:`read_image_size` reads just the header.

What every format shares (the error type, the crop window, OpenCV's quiet decoding) is in
:mod:`DiffIR.utils.image_common`. Every failure raises :class:`~DiffIR.utils.image_common.ImageIOError` (or
``FileNotFoundError`` for a missing file) whose message names the file and says how to fix the problem.
"""
from __future__ import annotations

import io
import os
import struct
from pathlib import Path
from typing import Any, Optional, Tuple, Union

import cv2
import numpy as np

from DiffIR.utils.exr_io import encode_exr, exr_info, read_exr
from DiffIR.utils.image_common import (ImageInfo, ImageIOError, PathLike, WindowArg, apply_window, bad_header,
                                       bgr_to_rgb, check_exists, cv_imdecode, cv_imread, ext_of, normalise_channels,
                                       once_per_size)
from DiffIR.utils.misc import atomic_write_bytes
from DiffIR.utils.radiance_io import RADIANCE_HEADER_MAX, decode_radiance, radiance_info, radiance_layout

HDR_EXTENSIONS = (".hdr", ".pic", ".exr", ".npy")
LDR_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

__all__ = [
    "HDR_EXTENSIONS",
    "LDR_EXTENSIONS",
    "read_hdr",
    "write_hdr",
    "read_ldr",
    "write_ldr",
    "decode_hdr_bytes",
    "encode_hdr_bytes",
    "decode_ldr_bytes",
    "read_image_size",
    "read_image_info",
]


# ----------------------------------------------------------------------------------------------
# HDR
# ----------------------------------------------------------------------------------------------
def _finish_hdr(img: Optional[np.ndarray], name: str, ext: str, window: WindowArg = None) -> np.ndarray:
    if img is None:
        raise ImageIOError(
            f"Cannot decode HDR image '{name}' ({ext}): OpenCV could not read it (truncated or not a "
            f"Radiance RGBE file). Fix: re-export or re-download the file."
        )
    if img.dtype != np.float32:
        raise ImageIOError(
            f"HDR image '{name}' decoded as {img.dtype}, not float32 (not a Radiance RGBE file?). "
            f"Fix: store HDR data as .hdr, .exr or .npy float32."
        )
    img = apply_window(img, window, name)
    return normalise_channels(bgr_to_rgb(np.ascontiguousarray(img)), name, allow_alpha=False)


def _npy_dtype_error(dtype: np.dtype, name: str) -> Optional[ImageIOError]:
    """Why a ``.npy`` array of ``dtype`` is not linear HDR, else None: only floating-point arrays are. Integer arrays
    (uint8, uint16, ...) are display-referred images or counts whose scale is unknown; read as radiance they would
    give a "peak" of 255 or 65535 and no highlights above it."""
    if dtype.kind == "f":
        return None
    if dtype.kind in "iu":
        return ImageIOError(
            f"'{name}' holds {dtype} values, not linear HDR (an integer array is a display-referred image of "
            f"unknown scale). Fix: save the linear radiance as float32, np.save(path, hdr.astype(np.float32)); an "
            f"8/16-bit image belongs in dataroot_lq as .png/.jpg.")
    return ImageIOError(f"'{name}' does not hold a numeric array (dtype {dtype}). "
                        f"Fix: save an H x W x 3 float32 RGB array with np.save.")


def _finish_npy(arr: np.ndarray, name: str, window: WindowArg = None) -> np.ndarray:
    if not isinstance(arr, np.ndarray):
        raise ImageIOError(f"'{name}' does not hold a numeric array ({type(arr).__name__}). "
                           f"Fix: save an H x W x 3 float32 RGB array with np.save.")
    error = _npy_dtype_error(arr.dtype, name)
    if error is not None:
        raise error
    if arr.ndim not in (2, 3):
        raise ImageIOError(
            f"Image '{name}' has shape {tuple(arr.shape)}; expected H x W x 3 (RGB). Fix: re-save it as a 3-channel image."
        )
    return normalise_channels(apply_window(arr, window, name), name, allow_alpha=False)


def read_hdr(path: PathLike, window: WindowArg = None) -> np.ndarray:
    """Read a linear HDR image as float32 ``H x W x 3`` RGB (only ``window`` of it, if given).

    ``.hdr``/``.pic`` via OpenCV, ``.exr`` via the OpenEXR package, ``.npy`` via ``np.load``
    (memory-mapped when a window is given, so only the window is read from disk).
    Values are returned as stored (negatives and NaN kept). Grey (1-channel) data is replicated to 3.
    """
    ext = ext_of(path)
    if ext not in HDR_EXTENSIONS:
        raise ImageIOError(
            f"Cannot read HDR image '{path}': unsupported extension '{ext}'. "
            f"Fix: use one of {', '.join(HDR_EXTENSIONS)}."
        )
    p = check_exists(path, "HDR image")
    name = str(p)
    if ext in (".hdr", ".pic"):
        with open(name, "rb") as f:
            layout = radiance_layout(f.read(RADIANCE_HEADER_MAX), name)
        direct = layout.standard and layout.has_format  # OpenCV reads the file as it is
        if window is None and direct:
            return _finish_hdr(cv_imread(name), name, ext)
        window = once_per_size(window)
        try:
            img = decode_radiance(p.read_bytes(), name, window)
        except cv2.error:  # OpenCV decodes RGBE buffers through a temporary file; without one, read the file
            if not direct:
                raise ImageIOError(f"Cannot decode HDR image '{name}': OpenCV needs a temporary file to decode it "
                                   f"(its orientation or header is not the standard one). Fix: make the temporary "
                                   f"folder ($TMPDIR) writable.") from None
            img = cv_imread(name)
            img = apply_window(img, window, name) if img is not None else None
        return _finish_hdr(img, name, ext)
    if ext == ".exr":
        return read_exr(name, name, window)
    try:
        arr = np.load(name, allow_pickle=False, mmap_mode="r" if window is not None else None)
    except Exception as e:  # numpy raises ValueError/OSError/EOFError/... for damaged files
        raise ImageIOError(
            f"Cannot load '{name}': {e}. Fix: the file is truncated or not a plain .npy array "
            f"(pickled objects are refused); re-save it with np.save."
        ) from None
    return _finish_npy(arr, name, window)


def decode_hdr_bytes(buf: Union[bytes, bytearray, memoryview, np.ndarray], ext: str, name: str = "<bytes>",
                     window: WindowArg = None) -> np.ndarray:
    """Decode an in-memory HDR file (contents of a ``.hdr``/``.exr``/``.npy``) to float32 RGB.

    ``ext`` is the file extension the bytes came from (with or without the dot); ``name`` is used in
    error messages (e.g. an LMDB key). ``window`` as in :func:`read_hdr`.
    """
    ext = ext.lower() if ext.startswith(".") else "." + ext.lower()
    data = bytes(buf) if not isinstance(buf, np.ndarray) else buf.tobytes()
    if not data:
        raise ImageIOError(f"HDR data '{name}' is empty. Fix: rebuild the source (file or LMDB) it came from.")
    if ext in (".hdr", ".pic"):
        # note: OpenCV's RGBE decoder goes through a temporary file for buffers
        return _finish_hdr(decode_radiance(data, name, window), name, ext)
    if ext == ".exr":
        return read_exr(io.BytesIO(data), name, window)
    if ext == ".npy":
        try:
            arr = np.load(io.BytesIO(data), allow_pickle=False)
        except Exception as e:
            raise ImageIOError(f"Cannot load .npy data '{name}': {e}. Fix: re-save it with np.save.") from None
        return _finish_npy(arr, name, window)
    raise ImageIOError(f"Cannot decode HDR data '{name}': unsupported extension '{ext}'. Use one of {HDR_EXTENSIONS}.")


def encode_hdr_bytes(rgb: np.ndarray, ext: str, half: bool = False, compression: str = "zip") -> bytes:
    """Encode a float RGB ``H x W x 3`` array as the bytes of a ``.hdr``/``.exr``/``.npy`` file.

    ``.hdr`` cannot store negative values: they are clamped to 0 (RGBE would do so anyway).
    ``half``/``compression`` apply to ``.exr`` only.
    """
    ext = ext.lower() if ext.startswith(".") else "." + ext.lower()
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"encode_hdr_bytes expects an H x W x 3 RGB array, got shape {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if ext in (".hdr", ".pic"):
        bgr = cv2.cvtColor(np.maximum(arr, np.float32(0)), cv2.COLOR_RGB2BGR)
        ok, enc = cv2.imencode(".hdr", bgr)
        if not ok:
            raise ImageIOError("OpenCV failed to encode a Radiance .hdr image")
        return enc.tobytes()
    if ext == ".exr":
        bio = io.BytesIO()
        encode_exr(arr, half, compression).write(bio)
        return bio.getvalue()
    if ext == ".npy":
        bio = io.BytesIO()
        np.save(bio, arr, allow_pickle=False)
        return bio.getvalue()
    raise ValueError(f"Cannot encode HDR as '{ext}': use one of {', '.join(HDR_EXTENSIONS)}")


def write_hdr(path: PathLike, rgb: np.ndarray, half: bool = False, compression: str = "zip", auto_mkdir: bool = True) -> None:
    """Write a linear RGB float image by extension (``.hdr``/``.pic``, ``.exr``, ``.npy``).

    ``.exr`` is float32 by default (``half=True`` for 16-bit), ZIP-compressed by default.
    ``.hdr`` clamps negative values to 0. The file is written to a temporary name and renamed, so a
    crash never leaves a half-written image under the final name.
    """
    p = Path(path)
    data = encode_hdr_bytes(rgb, ext_of(p), half=half, compression=compression)
    atomic_write_bytes(str(p), data, auto_mkdir)


# ----------------------------------------------------------------------------------------------
# LDR
# ----------------------------------------------------------------------------------------------
def _jpeg_truncated(data: bytes) -> bool:
    """True if a JPEG byte string lacks the end-of-image marker after its last scan."""
    last_sos = data.rfind(b"\xff\xda")
    last_eoi = data.rfind(b"\xff\xd9")
    return last_eoi < 0 or last_eoi < last_sos


#: OpenCV flags: pixels as stored (``IMREAD_UNCHANGED`` never applies EXIF orientation), or as displayed
#: (``ANYDEPTH | ANYCOLOR`` keeps 16 bit and grey, drops alpha, and rotates/flips by the EXIF orientation tag)
_AS_STORED = cv2.IMREAD_UNCHANGED
_AS_DISPLAYED = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR


def decode_ldr_bytes(buf: Union[bytes, bytearray, memoryview, np.ndarray], name: str = "<bytes>",
                     window: WindowArg = None, exif_orientation: bool = False) -> np.ndarray:
    """Decode in-memory PNG/JPEG/... bytes to float32 RGB in ``[0, 1]`` (grey -> 3 channels, alpha dropped).

    With ``window`` only that crop is converted to float32 RGB (the codec still decodes the whole image).
    ``exif_orientation``: False (training, checks, LMDB) returns the pixels as stored, aligned with their HDR
    partner; True (inference on users' photos) rotates/flips them as the EXIF orientation tag says a viewer shows them.
    """
    data = bytes(buf) if not isinstance(buf, np.ndarray) else buf.tobytes()
    if not data:
        raise ImageIOError(f"LDR image '{name}' is empty (0 bytes). Fix: re-export or re-download it.")
    if data[:2] == b"\xff\xd8" and _jpeg_truncated(data):
        raise ImageIOError(
            f"LDR image '{name}' is a truncated JPEG (no end-of-image marker). Fix: re-export or re-download it."
        )
    img = cv_imdecode(data, _AS_DISPLAYED if exif_orientation else _AS_STORED)
    if img is None:
        raise ImageIOError(
            f"Cannot decode LDR image '{name}': OpenCV could not read it (truncated or not an image). "
            f"Fix: re-export or re-download the file."
        )
    if img.dtype == np.uint8:
        scale = 1.0 / 255.0
    elif img.dtype == np.uint16:
        scale = 1.0 / 65535.0
    else:
        raise ImageIOError(
            f"LDR image '{name}' has pixel type {img.dtype}; expected 8- or 16-bit. "
            f"Fix: save LDR inputs as 8/16-bit PNG or JPEG (HDR data belongs in dataroot_gt)."
        )
    img = bgr_to_rgb(np.ascontiguousarray(apply_window(img, window, name)))
    out = normalise_channels(img, name, allow_alpha=True)
    out *= np.float32(scale)
    return out


def read_ldr(path: PathLike, window: WindowArg = None, exif_orientation: bool = False) -> np.ndarray:
    """Read an 8/16-bit PNG/JPEG as float32 ``H x W x 3`` RGB in ``[0, 1]`` (only ``window`` of it, if given).

    Grey images are replicated to 3 channels, an alpha channel is dropped. EXIF orientation is ignored by
    default (pixels as stored, so a training LDR stays aligned with its HDR partner); ``exif_orientation=True``
    applies it (inference: the output is oriented as the photo is displayed).
    """
    ext = ext_of(path)
    if ext not in LDR_EXTENSIONS:
        raise ImageIOError(
            f"Cannot read LDR image '{path}': unsupported extension '{ext}'. Fix: use one of {', '.join(LDR_EXTENSIONS)}."
        )
    p = check_exists(path, "LDR image")
    return decode_ldr_bytes(p.read_bytes(), name=str(p), window=window, exif_orientation=exif_orientation)


def write_ldr(path: PathLike, rgb: np.ndarray, quality: int = 95, auto_mkdir: bool = True) -> None:
    """Write an RGB image (uint8, uint16, or float in ``[0, 1]`` -> rounded to 8 bit) as PNG/JPEG/...

    ``quality`` is the JPEG quality (ignored for other formats).
    """
    p = Path(path)
    ext = ext_of(p)
    arr = np.asarray(rgb)
    if arr.dtype.kind == "f":
        arr = np.clip(np.rint(arr.astype(np.float32) * np.float32(255.0)), 0, 255).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if ext in (".jpg", ".jpeg") else []
    ok, enc = cv2.imencode(ext, arr, params)
    if not ok:
        raise ImageIOError(f"OpenCV failed to encode '{p}'")
    atomic_write_bytes(str(p), enc.tobytes(), auto_mkdir)



# ----------------------------------------------------------------------------------------------
# header-only size
# ----------------------------------------------------------------------------------------------
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}



def _jpeg_header(f: Any, name: str) -> ImageInfo:
    """The :class:`ImageInfo` of an open JPEG file, from its frame header (the segments before it are skipped)."""
    if f.read(2) != b"\xff\xd8":
        raise bad_header(name, "not a JPEG file (no start-of-image marker)")
    while True:
        b = f.read(1)
        while b and b != b"\xff":  # skip garbage between segments
            b = f.read(1)
        while b == b"\xff":  # fill bytes
            b = f.read(1)
        if not b:
            raise bad_header(name, "no frame header before the end of the file")
        marker = b[0]
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            continue  # stand-alone markers
        if marker == 0xD9:
            raise bad_header(name, "end of image before the frame header")
        seg = f.read(2)
        if len(seg) != 2:
            raise bad_header(name, "truncated segment")
        length = struct.unpack(">H", seg)[0]
        if marker in _JPEG_SOF:
            body = f.read(6)  # precision, height, width, number of components
            if len(body) != 6:
                raise bad_header(name, "truncated frame header")
            h, w = struct.unpack(">HH", body[1:5])
            return ImageInfo(h, w, body[5])
        f.seek(length - 2, io.SEEK_CUR)


#: PNG colour types: 0 grey, 2 RGB, 3 palette, 4 grey + alpha, 6 RGBA
_PNG_GREY_TYPES = (0, 4)


def _png_header(f: Any, name: str) -> ImageInfo:
    """The :class:`ImageInfo` of an open PNG file, from its IHDR chunk."""
    head = f.read(26)
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise bad_header(name, "not a PNG file (no IHDR chunk)")
    w, h = struct.unpack(">II", head[16:24])
    return ImageInfo(h, w, 1 if head[25] in _PNG_GREY_TYPES else 3)


def _npy_header(f: Any, name: str) -> ImageInfo:
    """The :class:`ImageInfo` of an open ``.npy`` file, from its header; refuses one shorter than the array."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    except ValueError as e:
        raise bad_header(name, f"not a .npy array ({e})") from None
    error = _npy_dtype_error(np.dtype(dtype), name)
    if error is not None:
        raise error
    if len(shape) not in (2, 3):
        raise ImageIOError(f"Image '{name}' has shape {tuple(shape)}; expected H x W x 3 (RGB). "
                           f"Fix: re-save it as a 3-channel image.")
    expected = f.tell() + int(np.prod(shape)) * np.dtype(dtype).itemsize
    size = os.fstat(f.fileno()).st_size
    if size < expected:
        raise bad_header(name, f"the array needs {expected} bytes but the file has {size}")
    return ImageInfo(int(shape[0]), int(shape[1]), int(shape[2]) if len(shape) == 3 else 1)


def read_image_size(path: PathLike) -> Tuple[int, int]:
    """``(height, width)`` of an LDR/HDR image file, from its header where the format allows (see
    :func:`read_image_info`)."""
    info = read_image_info(path)
    return info.height, info.width


def read_image_info(path: PathLike) -> ImageInfo:
    """The :class:`ImageInfo` of an LDR/HDR image file, from its header where the format allows.

    JPEG, PNG, Radiance ``.hdr``, ``.exr`` and ``.npy`` read only the header (a ``.npy`` file that
    is shorter than its header promises is reported as truncated); other formats are decoded (their channels are
    then not known: the readers make every image 3-channel). The channels are those stored, before the readers
    replicate a grey image to RGB: a dataset check compares them within a pair.
    Raises :class:`ImageIOError` naming the file when the header is unreadable.
    """
    p = check_exists(path, "image")
    name = str(p)
    ext = ext_of(p)
    if ext == ".exr":
        return exr_info(name)
    with open(name, "rb") as f:
        if ext in (".jpg", ".jpeg"):
            return _jpeg_header(f, name)
        if ext == ".png":
            return _png_header(f, name)
        if ext in (".hdr", ".pic"):
            return radiance_info(f, name)
        if ext == ".npy":
            return _npy_header(f, name)
    img = read_hdr(name) if ext in HDR_EXTENSIONS else read_ldr(name)
    return ImageInfo(int(img.shape[0]), int(img.shape[1]), 0)
