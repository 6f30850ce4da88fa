"""Image file I/O for LDR/HDR restoration: pure file <-> ``numpy`` conversion.

Conventions (every function here):

* Arrays are ``H x W x 3`` **RGB**, ``float32``. OpenCV's BGR order never leaks out of this module.
* HDR images are linear radiance values returned exactly as stored (negative values, NaN and values
  above any "peak" are kept; the caller decides how to clamp).
* LDR images are display-referred values scaled to ``[0, 1]`` (8-bit /255, 16-bit /65535).

Formats:

* ``.hdr`` / ``.pic`` (Radiance RGBE) through OpenCV (``cv2.IMREAD_UNCHANGED``; without it OpenCV
  returns a tone-mapped uint8 image). RGBE stores no negative numbers (they are written as 0) and
  truncates to about 0.4 % relative precision.
* ``.exr`` through the ``OpenEXR`` PyPI package (the OpenCV 5 wheels have no EXR codec). Reading
  accepts separate ``R``/``G``/``B`` channels (plus an optional ignored ``A``), a single
  ``layer.R``/``layer.G``/``layer.B`` layer, or a lone ``Y`` channel (replicated to 3 channels);
  ``half``, ``float`` and ``uint`` pixels and every compression the library decodes (ZIP, PIZ,
  DWAA/DWAB, B44, ...).
* ``.npy`` through ``np.load(allow_pickle=False)``.

Crops (``window=``): the readers take an optional ``(top, left, height, width)`` window, or a
function of the decoded ``(height, width)`` returning one, and convert (colour order, float32,
scaling) only the pixels inside it. ``.npy`` files are memory-mapped, so only the window is read;
Radiance ``.hdr`` files are decoded only down to the window's last row; JPEG/PNG/EXR are decoded
whole first (their libraries have no region decode).
:func:`read_image_size` reads just the header.

Every failure raises :class:`ImageIOError` (or ``FileNotFoundError`` for a missing file) whose
message names the file and says how to fix the problem.
"""
from __future__ import annotations

import contextlib
import io
import os
import struct
import threading
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from DiffIR.utils.misc import atomic_write_bytes

PathLike = Union[str, os.PathLike]


class Window(NamedTuple):
    """``(top, left, height, width)`` of a crop.

    A tuple, so that callers may pass a plain ``(top, left, height, width)`` wherever a window is taken.
    """

    top: int
    left: int
    height: int
    width: int

    @property
    def bottom(self) -> int:
        return self.top + self.height

    @property
    def right(self) -> int:
        return self.left + self.width

    def crop(self, img: np.ndarray) -> np.ndarray:
        """The window's view of an ``H x W [x C]`` array (no copy)."""
        return img[self.top : self.bottom, self.left : self.right]


#: a crop, or a function of the decoded image's ``(height, width)`` returning one (or None: whole image)
WindowArg = Optional[Union[Tuple[int, int, int, int], Callable[[int, int], Optional[Tuple[int, int, int, int]]]]]

HDR_EXTENSIONS = (".hdr", ".pic", ".exr", ".npy")
LDR_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

__all__ = [
    "HDR_EXTENSIONS",
    "LDR_EXTENSIONS",
    "ImageIOError",
    "read_hdr",
    "write_hdr",
    "read_ldr",
    "write_ldr",
    "decode_hdr_bytes",
    "encode_hdr_bytes",
    "decode_ldr_bytes",
    "read_image_size",
    "read_image_info",
    "ImageInfo",
    "RadianceLayout",
    "Window",
    "WindowArg",
    "resolve_window",
]


class ImageIOError(OSError):
    """An image file exists but cannot be decoded, or has an unusable layout."""


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def _ext_of(path: PathLike) -> str:
    return Path(path).suffix.lower()


def _check_exists(path: PathLike, what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        if p.exists():
            raise ImageIOError(f"Cannot read {what} '{p}': it is a directory, not a file. Fix: point to an image file.")
        raise FileNotFoundError(
            f"Cannot read {what} '{p}': file does not exist. Fix: check the path / dataroot option, "
            f"or regenerate the data set."
        )
    return p


def _normalise_channels(img: np.ndarray, name: str, allow_alpha: bool) -> np.ndarray:
    """Return a float32 H x W x 3 array from H x W, H x W x 1, H x W x 3 (or x 4 when allowed)."""
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3:
        raise ImageIOError(
            f"Image '{name}' has shape {tuple(img.shape)}; expected H x W x 3 (RGB). "
            f"Fix: re-save it as a 3-channel image."
        )
    c = img.shape[2]
    if c == 1:
        img = np.repeat(img, 3, axis=2)
    elif c == 4 and allow_alpha:
        img = img[:, :, :3]
    elif c != 3:
        raise ImageIOError(
            f"Image '{name}' has {c} channels; expected 3 (RGB) or 1 (grey). "
            f"Fix: re-save it as a 3-channel RGB image."
        )
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise ImageIOError(f"Image '{name}' is empty (shape {tuple(img.shape)}). Fix: regenerate the file.")
    return np.ascontiguousarray(img, dtype=np.float32)


def resolve_window(window: WindowArg, height: int, width: int, name: str) -> Optional[Window]:
    """The crop ``window`` asks of the ``height x width`` image ``name`` (None: the whole image).

    ``window`` is a ``(top, left, height, width)`` tuple or a function of the image size returning one.
    Every reader resolves its crop here, so a window outside the image is refused with one message.
    """
    win = window(height, width) if callable(window) else window
    if win is None:
        return None
    win = Window(*(int(v) for v in win))
    if win.top < 0 or win.left < 0 or win.height <= 0 or win.width <= 0 or win.bottom > height or win.right > width:
        raise ValueError(f"crop window (top={win.top}, left={win.left}, {win.height}x{win.width}) lies outside "
                         f"image '{name}' of {height}x{width} pixels")
    return win


def _apply_window(img: np.ndarray, window: WindowArg, name: str) -> np.ndarray:
    """The ``window`` view of ``img`` (no copy); ``window`` may be a function of ``(height, width)``."""
    if window is None:
        return img
    win = resolve_window(window, int(img.shape[0]), int(img.shape[1]), name)
    return img if win is None else win.crop(img)


def _once(window: WindowArg) -> WindowArg:
    """``window`` with a function evaluated at most once per size (it may draw random numbers)."""
    if not callable(window):
        return window
    memo: dict = {}

    def resolved(h: int, w: int) -> Optional[Window]:
        if (h, w) not in memo:
            memo[(h, w)] = window(h, w)
        return memo[(h, w)]

    return resolved


def _bgr_to_rgb(img: np.ndarray) -> np.ndarray:
    """OpenCV colour order -> RGB (works for 1/3/4 channels and 2-D greys, any dtype)."""
    if img.ndim == 3 and img.shape[2] == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
    return img


_CV_LOG_LOCK = threading.Lock()
_cv_log = {"depth": 0, "level": None}


@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
    """OpenCV's own log is silent inside the block.

    OpenCV prints an ``[ERROR] imread_(...)`` line of its own for every file it cannot decode; this module reports
    each failure itself (naming the file and the fix), so that line is noise, printed once per file of a check.
    Decoders run in threads: the level is set by the first thread in and restored by the last one out.
    """
    logging_api = cv2.utils.logging
    with _CV_LOG_LOCK:
        if _cv_log["depth"] == 0:
            _cv_log["level"] = logging_api.setLogLevel(logging_api.LOG_LEVEL_SILENT)
        _cv_log["depth"] += 1
    try:
        yield
    finally:
        with _CV_LOG_LOCK:
            _cv_log["depth"] -= 1
            if _cv_log["depth"] == 0:
                logging_api.setLogLevel(_cv_log["level"])


def _cv_imread(name: str) -> Optional[np.ndarray]:
    """``cv2.imread(name, IMREAD_UNCHANGED)`` with OpenCV's log quiet (see :func:`_quiet_opencv`)."""
    with _quiet_opencv():
        return cv2.imread(name, cv2.IMREAD_UNCHANGED)


def _cv_imdecode(data: bytes, flags: int = cv2.IMREAD_UNCHANGED) -> Optional[np.ndarray]:
    """``cv2.imdecode`` of ``data`` with OpenCV's log quiet (see :func:`_quiet_opencv`)."""
    with _quiet_opencv():
        return cv2.imdecode(np.frombuffer(data, np.uint8), flags)


# ----------------------------------------------------------------------------------------------
# EXR
# ----------------------------------------------------------------------------------------------
def _exr_is_grey(names: Sequence[str]) -> bool:
    """A lone luminance channel ``Y`` (and maybe ``A``): a grey EXR, read as Y replicated to R, G and B."""
    return "Y" in names and set(names) <= {"Y", "A"}


def _exr_channels_to_rgb(channels: dict, name: str, window: WindowArg = None) -> np.ndarray:
    """Pick R, G, B planes from an ``OpenEXR.File(..., separate_channels=True).channels()`` dict."""
    planes = {k: v.pixels for k, v in channels.items()}
    if window is not None and planes:
        first = np.asarray(next(iter(planes.values())))
        win = resolve_window(window, int(first.shape[0]), int(first.shape[1]), name)
        if win is not None:
            planes = {k: (win.crop(np.asarray(v)) if np.asarray(v).shape[:2] == first.shape[:2] else v)
                      for k, v in planes.items()}
    names = sorted(planes)

    def stack(r: str, g: str, b: str) -> np.ndarray:
        arrs = [np.asarray(planes[k]) for k in (r, g, b)]
        shapes = {a.shape for a in arrs}
        if len(shapes) != 1:
            raise ImageIOError(
                f"EXR '{name}': channels {r}, {g}, {b} have different sizes {sorted(shapes)} (subsampled "
                f"channels are not supported). Fix: re-save the file without channel subsampling."
            )
        return np.stack([a.astype(np.float32, copy=False) for a in arrs], axis=-1)

    if all(k in planes for k in ("R", "G", "B")):
        return stack("R", "G", "B")
    # one named layer, e.g. "beauty.R", "beauty.G", "beauty.B"
    rgb_layers = sorted(k[:-2] for k in names if k.endswith(".R") and f"{k[:-2]}.G" in planes and f"{k[:-2]}.B" in planes)
    if len(rgb_layers) == 1:
        ly = rgb_layers[0]
        return stack(f"{ly}.R", f"{ly}.G", f"{ly}.B")
    if _exr_is_grey(names):
        y = np.asarray(planes["Y"]).astype(np.float32, copy=False)
        return np.repeat(y[:, :, None], 3, axis=2)
    if len(rgb_layers) > 1:
        raise ImageIOError(
            f"EXR '{name}' holds several RGB layers ({', '.join(rgb_layers)}); cannot tell which is the image. "
            f"Fix: re-save it with a single R, G, B channel set."
        )
    raise ImageIOError(
        f"EXR '{name}' has channels {names}; expected R, G, B (optionally A) or Y. "
        f"Fix: re-save it as an RGB EXR."
    )


def _read_exr(source, name: str, window: WindowArg = None) -> np.ndarray:
    import OpenEXR  # imported lazily: only EXR users need the package

    try:
        f = OpenEXR.File(source, separate_channels=True)
        channels = f.channels()
    except Exception as e:  # the bindings raise RuntimeError / ValueError for bad data
        raise ImageIOError(
            f"Cannot decode EXR '{name}': {e}. Fix: the file is truncated or not an OpenEXR image; "
            f"re-export or re-download it."
        ) from None
    if not channels:
        raise ImageIOError(f"EXR '{name}' contains no pixel channels (truncated?). Fix: re-export the file.")
    return np.ascontiguousarray(_exr_channels_to_rgb(channels, name, window), dtype=np.float32)


def _encode_exr(rgb: np.ndarray, half: bool, compression: str) -> "object":
    import OpenEXR

    comp = {
        "none": OpenEXR.NO_COMPRESSION,
        "zip": OpenEXR.ZIP_COMPRESSION,
        "zips": OpenEXR.ZIPS_COMPRESSION,
        "piz": OpenEXR.PIZ_COMPRESSION,
        "rle": OpenEXR.RLE_COMPRESSION,
        "pxr24": OpenEXR.PXR24_COMPRESSION,
        "dwaa": OpenEXR.DWAA_COMPRESSION,
        "dwab": OpenEXR.DWAB_COMPRESSION,
        "b44": OpenEXR.B44_COMPRESSION,
    }
    key = compression.lower()
    if key not in comp:
        raise ValueError(f"Unknown EXR compression '{compression}'. Choose one of: {', '.join(comp)}")
    dtype = np.float16 if half else np.float32
    arr = np.ascontiguousarray(rgb, dtype=dtype)
    header = {"compression": comp[key], "type": OpenEXR.scanlineimage}
    return OpenEXR.File(header, {"RGB": arr})


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
    img = _apply_window(img, window, name)
    return _normalise_channels(_bgr_to_rgb(np.ascontiguousarray(img)), name, allow_alpha=False)


def _decode_radiance(data: bytes, name: str, window: WindowArg) -> Optional[np.ndarray]:
    """Decode Radiance bytes (any orientation); with a window, only the scanlines down to the window's last row.

    OpenCV reads only the standard ``-Y H +X W`` orientation with a ``FORMAT`` line: other orientations are decoded
    as stored under a standard resolution line and then flipped/transposed (:meth:`RadianceLayout.orient`). A
    standard file's scanlines run top-down and OpenCV stops after the rows the header announces, so announcing
    ``top + height`` rows decodes just the part above the window's bottom (about 40 % less work on average for a
    256-row crop of a 1024-row image). Returns the BGR array (None if OpenCV cannot decode it), already cropped.
    """
    layout = _radiance_layout(data[:_RADIANCE_HEADER_MAX], name)
    win = resolve_window(window, layout.height, layout.width, name) if window is not None else None
    rows = win.bottom if (win is not None and layout.standard) else layout.rows
    if rows != layout.rows or not layout.standard or not layout.has_format:
        data = layout.standard_bytes(data, rows)
    img = _cv_imdecode(data)
    if img is None:
        return None
    img = layout.orient(img)
    return img if win is None else win.crop(img)


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
    return _normalise_channels(_apply_window(arr, window, name), name, allow_alpha=False)


def read_hdr(path: PathLike, window: WindowArg = None) -> np.ndarray:
    """Read a linear HDR image as float32 ``H x W x 3`` RGB (only ``window`` of it, if given).

    ``.hdr``/``.pic`` via OpenCV, ``.exr`` via the OpenEXR package, ``.npy`` via ``np.load``
    (memory-mapped when a window is given, so only the window is read from disk).
    Values are returned as stored (negatives and NaN kept). Grey (1-channel) data is replicated to 3.
    """
    ext = _ext_of(path)
    if ext not in HDR_EXTENSIONS:
        raise ImageIOError(
            f"Cannot read HDR image '{path}': unsupported extension '{ext}'. "
            f"Fix: use one of {', '.join(HDR_EXTENSIONS)}."
        )
    p = _check_exists(path, "HDR image")
    name = str(p)
    if ext in (".hdr", ".pic"):
        with open(name, "rb") as f:
            layout = _radiance_layout(f.read(_RADIANCE_HEADER_MAX), name)
        direct = layout.standard and layout.has_format  # OpenCV reads the file as it is
        if window is None and direct:
            return _finish_hdr(_cv_imread(name), name, ext)
        window = _once(window)
        try:
            img = _decode_radiance(p.read_bytes(), name, window)
        except cv2.error:  # OpenCV decodes RGBE buffers through a temporary file; without one, read the file
            if not direct:
                raise ImageIOError(f"Cannot decode HDR image '{name}': OpenCV needs a temporary file to decode it "
                                   f"(its orientation or header is not the standard one). Fix: make the temporary "
                                   f"folder ($TMPDIR) writable.") from None
            img = _cv_imread(name)
            img = _apply_window(img, window, name) if img is not None else None
        return _finish_hdr(img, name, ext)
    if ext == ".exr":
        return _read_exr(name, name, window)
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
        return _finish_hdr(_decode_radiance(data, name, window), name, ext)
    if ext == ".exr":
        return _read_exr(io.BytesIO(data), name, window)
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
        _encode_exr(arr, half, compression).write(bio)
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
    data = encode_hdr_bytes(rgb, _ext_of(p), half=half, compression=compression)
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
    img = _cv_imdecode(data, _AS_DISPLAYED if exif_orientation else _AS_STORED)
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
    img = _bgr_to_rgb(np.ascontiguousarray(_apply_window(img, window, name)))
    out = _normalise_channels(img, name, allow_alpha=True)
    out *= np.float32(scale)
    return out


def read_ldr(path: PathLike, window: WindowArg = None, exif_orientation: bool = False) -> np.ndarray:
    """Read an 8/16-bit PNG/JPEG as float32 ``H x W x 3`` RGB in ``[0, 1]`` (only ``window`` of it, if given).

    Grey images are replicated to 3 channels, an alpha channel is dropped. EXIF orientation is ignored by
    default (pixels as stored, so a training LDR stays aligned with its HDR partner); ``exif_orientation=True``
    applies it (inference: the output is oriented as the photo is displayed).
    """
    ext = _ext_of(path)
    if ext not in LDR_EXTENSIONS:
        raise ImageIOError(
            f"Cannot read LDR image '{path}': unsupported extension '{ext}'. Fix: use one of {', '.join(LDR_EXTENSIONS)}."
        )
    p = _check_exists(path, "LDR image")
    return decode_ldr_bytes(p.read_bytes(), name=str(p), window=window, exif_orientation=exif_orientation)


def write_ldr(path: PathLike, rgb: np.ndarray, quality: int = 95, auto_mkdir: bool = True) -> None:
    """Write an RGB image (uint8, uint16, or float in ``[0, 1]`` -> rounded to 8 bit) as PNG/JPEG/...

    ``quality`` is the JPEG quality (ignored for other formats).
    """
    p = Path(path)
    ext = _ext_of(p)
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


def _bad_header(name: str, what: str) -> ImageIOError:
    return ImageIOError(f"Cannot read the header of '{name}': {what}. Fix: the file is truncated or damaged; "
                        f"re-export or re-download it.")


def _jpeg_header(f, name: str) -> "ImageInfo":
    if f.read(2) != b"\xff\xd8":
        raise _bad_header(name, "not a JPEG file (no start-of-image marker)")
    while True:
        b = f.read(1)
        while b and b != b"\xff":  # skip garbage between segments
            b = f.read(1)
        while b == b"\xff":  # fill bytes
            b = f.read(1)
        if not b:
            raise _bad_header(name, "no frame header before the end of the file")
        marker = b[0]
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            continue  # stand-alone markers
        if marker == 0xD9:
            raise _bad_header(name, "end of image before the frame header")
        seg = f.read(2)
        if len(seg) != 2:
            raise _bad_header(name, "truncated segment")
        length = struct.unpack(">H", seg)[0]
        if marker in _JPEG_SOF:
            body = f.read(6)  # precision, height, width, number of components
            if len(body) != 6:
                raise _bad_header(name, "truncated frame header")
            h, w = struct.unpack(">HH", body[1:5])
            return ImageInfo(h, w, body[5])
        f.seek(length - 2, io.SEEK_CUR)


#: PNG colour types: 0 grey, 2 RGB, 3 palette, 4 grey + alpha, 6 RGBA
_PNG_GREY_TYPES = (0, 4)


def _png_header(f, name: str) -> "ImageInfo":
    head = f.read(26)
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise _bad_header(name, "not a PNG file (no IHDR chunk)")
    w, h = struct.unpack(">II", head[16:24])
    return ImageInfo(h, w, 1 if head[25] in _PNG_GREY_TYPES else 3)


#: a Radiance header longer than this is refused (real ones are a few hundred bytes)
_RADIANCE_HEADER_MAX = 65536
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


def _radiance_layout(head: bytes, name: str) -> RadianceLayout:
    """The :class:`RadianceLayout` of a Radiance header (``head``: the file's first bytes).

    Raises :class:`ImageIOError` for a file that is not Radiance, a header that does not end, pixels stored as XYZE
    (CIE XYZ, which would be read as RGB) or in another format, and a bad resolution line.
    """
    if not head.startswith(b"#?"):
        raise _bad_header(name, "not a Radiance RGBE file (no '#?' signature)")
    blank = head.find(b"\n\n")
    if blank < 0:
        raise _bad_header(name, "the header does not end")
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
        raise _bad_header(name, f"bad resolution line {b' '.join(line)!r} (expected e.g. '-Y 512 +X 768')")
    if not (line[1].isdigit() and line[3].isdigit()):  # plain digits: int() would read b'1_0' as 10, b'+5' as 5
        raise _bad_header(name, f"bad resolution line {b' '.join(line)!r}")
    counts = {axes[0][1:]: int(line[1]), axes[1][1:]: int(line[3])}
    signs = {a[1:]: a[:1] for a in axes}
    return RadianceLayout(height=counts[b"Y"], width=counts[b"X"], start=start, end=end, rows=int(line[1]),
                          cols=int(line[3]), transposed=axes[0][1:] == b"X", flip_rows=signs[b"Y"] == b"+",
                          flip_cols=signs[b"X"] == b"-", has_format=bool(formats))


def _radiance_header(f, name: str) -> "ImageInfo":
    head = f.read(4096)
    if b"\n\n" not in head or head.find(b"\n", head.find(b"\n\n") + 2) < 0:
        head += f.read(_RADIANCE_HEADER_MAX - len(head))  # a long header
    layout = _radiance_layout(head, name)
    return ImageInfo(layout.height, layout.width, 3)


def _npy_header(f, name: str) -> "ImageInfo":
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    except ValueError as e:
        raise _bad_header(name, f"not a .npy array ({e})") from None
    error = _npy_dtype_error(np.dtype(dtype), name)
    if error is not None:
        raise error
    if len(shape) not in (2, 3):
        raise ImageIOError(f"Image '{name}' has shape {tuple(shape)}; expected H x W x 3 (RGB). "
                           f"Fix: re-save it as a 3-channel image.")
    expected = f.tell() + int(np.prod(shape)) * np.dtype(dtype).itemsize
    size = os.fstat(f.fileno()).st_size
    if size < expected:
        raise _bad_header(name, f"the array needs {expected} bytes but the file has {size}")
    return ImageInfo(int(shape[0]), int(shape[1]), int(shape[2]) if len(shape) == 3 else 1)


class ImageInfo(NamedTuple):
    """What an image file's header says: its size and how many channels it stores (1: grey; 0: not known)."""

    height: int
    width: int
    channels: int


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
    p = _check_exists(path, "image")
    name = str(p)
    ext = _ext_of(p)
    if ext == ".exr":
        import OpenEXR

        try:
            header = OpenEXR.File(name, header_only=True).header()
            (x0, y0), (x1, y1) = header["dataWindow"]
            names = [c.name for c in header.get("channels", [])]
        except Exception as e:  # the bindings raise RuntimeError / ValueError / KeyError for bad data
            raise _bad_header(name, f"not an OpenEXR image ({e})") from None
        return ImageInfo(int(y1) - int(y0) + 1, int(x1) - int(x0) + 1, 1 if _exr_is_grey(names) else 3)
    with open(name, "rb") as f:
        if ext in (".jpg", ".jpeg"):
            return _jpeg_header(f, name)
        if ext == ".png":
            return _png_header(f, name)
        if ext in (".hdr", ".pic"):
            return _radiance_header(f, name)
        if ext == ".npy":
            return _npy_header(f, name)
    img = read_hdr(name) if ext in HDR_EXTENSIONS else read_ldr(name)
    return ImageInfo(int(img.shape[0]), int(img.shape[1]), 0)
