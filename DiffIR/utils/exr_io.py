"""OpenEXR files through the ``OpenEXR`` PyPI package (the OpenCV 5 wheels have no EXR codec): decoding the channel
layouts real files use, encoding, and the header-only size. Used by :mod:`DiffIR.utils.hdr_io`.

Reading accepts separate ``R``/``G``/``B`` channels (plus an optional ignored ``A``), a single
``layer.R``/``layer.G``/``layer.B`` layer, or a lone ``Y`` channel (replicated to 3 channels); ``half``, ``float``
and ``uint`` pixels and every compression the library decodes (ZIP, PIZ, DWAA/DWAB, B44, ...). The package is
imported on first use: only EXR users need it loaded.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from DiffIR.utils.image_common import ImageInfo, ImageIOError, WindowArg, bad_header, resolve_window

__all__ = ["read_exr", "encode_exr", "exr_info"]


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


def read_exr(source: Any, name: str, window: WindowArg = None) -> np.ndarray:
    """Decode an EXR (a path or a binary stream) to float32 RGB (only ``window`` of it, if given)."""
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


def encode_exr(rgb: np.ndarray, half: bool, compression: str) -> Any:
    """An ``OpenEXR.File`` of an RGB array (``half``: 16-bit floats) with the named compression, ready to write."""
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


def exr_info(name: str) -> ImageInfo:
    """The :class:`ImageInfo` of an EXR file, from its header only."""
    import OpenEXR

    try:
        header = OpenEXR.File(name, header_only=True).header()
        (x0, y0), (x1, y1) = header["dataWindow"]
        names = [c.name for c in header.get("channels", [])]
    except Exception as e:  # the bindings raise RuntimeError / ValueError / KeyError for bad data
        raise bad_header(name, f"not an OpenEXR image ({e})") from None
    return ImageInfo(int(y1) - int(y0) + 1, int(x1) - int(x0) + 1, 1 if _exr_is_grey(names) else 3)
