"""What every image reader of :mod:`DiffIR.utils.hdr_io` (and its EXR and Radiance codecs) shares: the error type,
the crop window, the header facts, the channel and colour-order conversions, and OpenCV decoding with its own log
quiet. One place, so that every format crops, converts and fails in the same way.
"""
from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Optional, Tuple, Union

import cv2
import numpy as np

from DiffIR.utils.errors import DiffIRError

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

__all__ = [
    "ImageIOError",
    "ImageInfo",
    "Window",
    "WindowArg",
    "resolve_window",
    "apply_window",
    "once_per_size",
    "normalise_channels",
    "bgr_to_rgb",
    "cv_imread",
    "cv_imdecode",
    "bad_header",
    "check_exists",
    "ext_of",
]


class ImageIOError(DiffIRError, OSError):
    """An image file exists but cannot be decoded, or has an unusable layout."""


class ImageInfo(NamedTuple):
    """What an image file's header says: its size and how many channels it stores (1: grey; 0: not known)."""

    height: int
    width: int
    channels: int


def ext_of(path: PathLike) -> str:
    """The lower-case extension of ``path`` with its dot (``.hdr``): formats are chosen by it."""
    return Path(path).suffix.lower()


def check_exists(path: PathLike, what: str) -> Path:
    """``path`` as a Path; a directory or a missing file is refused, naming ``what`` it should be and the fix."""
    p = Path(path)
    if not p.is_file():
        if p.exists():
            raise ImageIOError(f"Cannot read {what} '{p}': it is a directory, not a file. Fix: point to an image file.")
        raise FileNotFoundError(
            f"Cannot read {what} '{p}': file does not exist. Fix: check the path / dataroot option, "
            f"or regenerate the data set."
        )
    return p


def normalise_channels(img: np.ndarray, name: str, allow_alpha: bool) -> np.ndarray:
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


def apply_window(img: np.ndarray, window: WindowArg, name: str) -> np.ndarray:
    """The ``window`` view of ``img`` (no copy); ``window`` may be a function of ``(height, width)``."""
    if window is None:
        return img
    win = resolve_window(window, int(img.shape[0]), int(img.shape[1]), name)
    return img if win is None else win.crop(img)


def once_per_size(window: WindowArg) -> WindowArg:
    """``window`` with a function evaluated at most once per size (it may draw random numbers)."""
    if not callable(window):
        return window
    memo: dict = {}

    def resolved(h: int, w: int) -> Optional[Window]:
        if (h, w) not in memo:
            memo[(h, w)] = window(h, w)
        return memo[(h, w)]

    return resolved


def bgr_to_rgb(img: np.ndarray) -> np.ndarray:
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

    OpenCV prints an ``[ERROR] imread_(...)`` line of its own for every file it cannot decode; the readers report
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


def cv_imread(name: str) -> Optional[np.ndarray]:
    """``cv2.imread(name, IMREAD_UNCHANGED)`` with OpenCV's log quiet (see :func:`_quiet_opencv`)."""
    with _quiet_opencv():
        return cv2.imread(name, cv2.IMREAD_UNCHANGED)


def cv_imdecode(data: bytes, flags: int = cv2.IMREAD_UNCHANGED) -> Optional[np.ndarray]:
    """``cv2.imdecode`` of ``data`` with OpenCV's log quiet (see :func:`_quiet_opencv`)."""
    with _quiet_opencv():
        return cv2.imdecode(np.frombuffer(data, np.uint8), flags)


def bad_header(name: str, what: str) -> ImageIOError:
    """The error for an unreadable header (``what`` is wrong with it): a truncated or damaged file."""
    return ImageIOError(f"Cannot read the header of '{name}': {what}. Fix: the file is truncated or damaged; "
                        f"re-export or re-download it.")
