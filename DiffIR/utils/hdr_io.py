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

Every failure raises :class:`ImageIOError` (or ``FileNotFoundError`` for a missing file) whose
message names the file and says how to fix the problem.
"""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Optional, Union

import cv2
import numpy as np

PathLike = Union[str, os.PathLike]

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


def _bgr_to_rgb(img: np.ndarray) -> np.ndarray:
    """OpenCV colour order -> RGB (works for 1/3/4 channels and 2-D greys, any dtype)."""
    if img.ndim == 3 and img.shape[2] == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
    return img


# ----------------------------------------------------------------------------------------------
# EXR
# ----------------------------------------------------------------------------------------------
def _exr_channels_to_rgb(channels: dict, name: str) -> np.ndarray:
    """Pick R, G, B planes from an ``OpenEXR.File(..., separate_channels=True).channels()`` dict."""
    planes = {k: v.pixels for k, v in channels.items()}
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
    if set(names) <= {"Y", "A"} and "Y" in planes:
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


def _read_exr(source, name: str) -> np.ndarray:
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
    return np.ascontiguousarray(_exr_channels_to_rgb(channels, name), dtype=np.float32)


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
def _finish_hdr(img: Optional[np.ndarray], name: str, ext: str) -> np.ndarray:
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
    return _normalise_channels(_bgr_to_rgb(img), name, allow_alpha=False)


def _finish_npy(arr: np.ndarray, name: str) -> np.ndarray:
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiu":
        raise ImageIOError(
            f"'{name}' does not hold a numeric array (dtype {getattr(arr, 'dtype', type(arr))}). "
            f"Fix: save an H x W x 3 float32 RGB array with np.save."
        )
    return _normalise_channels(arr, name, allow_alpha=False)


def read_hdr(path: PathLike) -> np.ndarray:
    """Read a linear HDR image as float32 ``H x W x 3`` RGB.

    ``.hdr``/``.pic`` via OpenCV, ``.exr`` via the OpenEXR package, ``.npy`` via ``np.load``.
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
        return _finish_hdr(cv2.imread(name, cv2.IMREAD_UNCHANGED), name, ext)
    if ext == ".exr":
        return _read_exr(name, name)
    try:
        arr = np.load(name, allow_pickle=False)
    except Exception as e:
        raise ImageIOError(
            f"Cannot load '{name}': {e}. Fix: the file is truncated or not a plain .npy array "
            f"(pickled objects are refused); re-save it with np.save."
        ) from None
    return _finish_npy(arr, name)


def decode_hdr_bytes(buf: Union[bytes, bytearray, memoryview, np.ndarray], ext: str, name: str = "<bytes>") -> np.ndarray:
    """Decode an in-memory HDR file (contents of a ``.hdr``/``.exr``/``.npy``) to float32 RGB.

    ``ext`` is the file extension the bytes came from (with or without the dot); ``name`` is used in
    error messages (e.g. an LMDB key).
    """
    ext = ext.lower() if ext.startswith(".") else "." + ext.lower()
    data = bytes(buf) if not isinstance(buf, np.ndarray) else buf.tobytes()
    if not data:
        raise ImageIOError(f"HDR data '{name}' is empty. Fix: rebuild the source (file or LMDB) it came from.")
    if ext in (".hdr", ".pic"):
        # note: OpenCV's RGBE decoder goes through a temporary file for buffers
        return _finish_hdr(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED), name, ext)
    if ext == ".exr":
        return _read_exr(io.BytesIO(data), name)
    if ext == ".npy":
        try:
            arr = np.load(io.BytesIO(data), allow_pickle=False)
        except Exception as e:
            raise ImageIOError(f"Cannot load .npy data '{name}': {e}. Fix: re-save it with np.save.") from None
        return _finish_npy(arr, name)
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


def _atomic_write_bytes(path: Path, data: bytes, auto_mkdir: bool) -> None:
    if auto_mkdir:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_hdr(path: PathLike, rgb: np.ndarray, half: bool = False, compression: str = "zip", auto_mkdir: bool = True) -> None:
    """Write a linear RGB float image by extension (``.hdr``/``.pic``, ``.exr``, ``.npy``).

    ``.exr`` is float32 by default (``half=True`` for 16-bit), ZIP-compressed by default.
    ``.hdr`` clamps negative values to 0. The file is written to a temporary name and renamed, so a
    crash never leaves a half-written image under the final name.
    """
    p = Path(path)
    data = encode_hdr_bytes(rgb, _ext_of(p), half=half, compression=compression)
    _atomic_write_bytes(p, data, auto_mkdir)


# ----------------------------------------------------------------------------------------------
# LDR
# ----------------------------------------------------------------------------------------------
def _jpeg_truncated(data: bytes) -> bool:
    """True if a JPEG byte string lacks the end-of-image marker after its last scan."""
    last_sos = data.rfind(b"\xff\xda")
    last_eoi = data.rfind(b"\xff\xd9")
    return last_eoi < 0 or last_eoi < last_sos


def decode_ldr_bytes(buf: Union[bytes, bytearray, memoryview, np.ndarray], name: str = "<bytes>") -> np.ndarray:
    """Decode in-memory PNG/JPEG/... bytes to float32 RGB in ``[0, 1]`` (grey -> 3 channels, alpha dropped)."""
    data = bytes(buf) if not isinstance(buf, np.ndarray) else buf.tobytes()
    if not data:
        raise ImageIOError(f"LDR image '{name}' is empty (0 bytes). Fix: re-export or re-download it.")
    if data[:2] == b"\xff\xd8" and _jpeg_truncated(data):
        raise ImageIOError(
            f"LDR image '{name}' is a truncated JPEG (no end-of-image marker). Fix: re-export or re-download it."
        )
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
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
    img = _bgr_to_rgb(img)
    out = _normalise_channels(img, name, allow_alpha=True)
    out *= np.float32(scale)
    return out


def read_ldr(path: PathLike) -> np.ndarray:
    """Read an 8/16-bit PNG/JPEG as float32 ``H x W x 3`` RGB in ``[0, 1]``.

    Grey images are replicated to 3 channels, an alpha channel is dropped; EXIF orientation is
    ignored (pixels are returned as stored, so they stay aligned with their HDR partner).
    """
    ext = _ext_of(path)
    if ext not in LDR_EXTENSIONS:
        raise ImageIOError(
            f"Cannot read LDR image '{path}': unsupported extension '{ext}'. Fix: use one of {', '.join(LDR_EXTENSIONS)}."
        )
    p = _check_exists(path, "LDR image")
    return decode_ldr_bytes(p.read_bytes(), name=str(p))


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
    _atomic_write_bytes(p, enc.tobytes(), auto_mkdir)
