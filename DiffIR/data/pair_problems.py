"""What can be wrong with a pair, said once: the problem kinds and their titles, the messages for a bad pair, the
pixel counts behind them, and the reading of a pair's two crops with its size check.

The dataset checks (:mod:`DiffIR.data.checks`), the readers (disk and LMDB) and the LMDB writer all report through
these, so a problem reads the same wherever it is found.
"""
from __future__ import annotations

import collections
from typing import Any, Callable, Dict, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from DiffIR.utils.image_common import Window, WindowArg

__all__ = [
    "PROBLEM_TITLES",
    "problem_text",
    "size_mismatch_message",
    "channel_mismatch_message",
    "nonfinite_message",
    "too_small_message",
    "paired_windows",
    "PixelCounts",
    "count_bad_pixels",
]

#: a window function of the image size, as the readers take it
WindowFn = Callable[[int, int], Optional[Window]]

#: the kinds of problem a pair can have, in report order, each with its title in the lists of problems
PROBLEM_TITLES = collections.OrderedDict(
    pairing="pairing problem(s)",
    unreadable="unreadable or truncated image(s)",
    size_mismatch="pair(s) whose LQ and GT sizes differ",
    channel_mismatch="pair(s) of a grey and a colour image",
    nonfinite="HDR image(s) with NaN or Inf values",
    range="HDR image(s) beyond the float16 range",  # only the LMDB writer with --gt-dtype float16
    dgain="bad dgain entr(y/ies)",
    too_small="image(s) smaller than gt_size",
)


def problem_text(problems: Mapping[str, Sequence[str]], limit: Optional[int]) -> str:
    """The messages by kind (keys of :data:`PROBLEM_TITLES`), each kind under its title with a count, at most
    ``limit`` messages per kind (None: all) and how many more there are; kinds without messages are left out."""
    parts = []
    for kind, msgs in problems.items():
        if not msgs:
            continue
        shown = msgs if limit is None else msgs[:limit]
        more = f"\n    ... and {len(msgs) - len(shown)} more" if len(shown) < len(msgs) else ""
        parts.append(f"  {len(msgs)} {PROBLEM_TITLES[kind]}:\n    " + "\n    ".join(shown) + more)
    return "\n".join(parts)


def size_mismatch_message(lq_name: str, lq_hw: Sequence[int], gt_name: str, gt_hw: Sequence[int]) -> str:
    """The error for an LQ and a GT of different sizes (``*_hw``: height and width first)."""
    return (f"Size mismatch: LQ '{lq_name}' is {lq_hw[0]}x{lq_hw[1]} but GT '{gt_name}' is {gt_hw[0]}x{gt_hw[1]} "
            f"(H x W). Fix: LQ and GT of a pair must have the same size; re-export one of them or remove the pair.")


def channel_mismatch_message(lq_name: str, lq_channels: int, gt_name: str, gt_channels: int) -> Optional[str]:
    """The error for a grey image paired with a colour one (channels as stored, 0: not known), else None."""
    if not (lq_channels and gt_channels) or (lq_channels == 1) == (gt_channels == 1):
        return None

    def kind(channels: int) -> str:
        return "grey (1 channel)" if channels == 1 else f"colour ({channels} channels)"

    return (f"Channel mismatch: LQ '{lq_name}' is {kind(lq_channels)} but GT '{gt_name}' is {kind(gt_channels)}. "
            f"Fix: the LQ must be a rendering of its GT (a grey image is replicated to RGB, so the network would "
            f"learn to add or drop colour): re-export the grey one in colour, or remove the pair.")


def nonfinite_message(gt_name: str, count: Optional[int] = None) -> str:
    """The error for an HDR image with NaN or Inf values (``count`` of them, where known)."""
    n = f"{count} " if count is not None else ""
    return (f"HDR '{gt_name}' has {n}NaN or Inf value(s). Fix: re-export the file (NaN/Inf cannot be learnt and "
            f"would poison every loss), or remove the pair from the set.")


def too_small_message(name: str, hw: Sequence[int], gt_size: int) -> str:
    """The error for an image smaller than the training patch under ``small_images: error``."""
    return (f"'{name}' is {hw[0]}x{hw[1]}, smaller than gt_size={gt_size}. Fix: set small_images: pad (reflect-pad "
            f"small images), lower gt_size, or remove the pair.")


def paired_windows(window: WindowArg, lq_name: str, gt_name: str) -> Tuple[WindowFn, WindowFn]:
    """Window functions for reading a pair: the LQ one resolves ``window`` (a tuple, a function of the
    size, or None) once from the LQ size; the GT one checks that the GT has the same size (else the
    size-mismatch error naming both files) and returns the same window."""
    seen: Dict[str, Any] = {}

    def lq_window(h: int, w: int) -> Optional[Window]:
        seen["hw"] = (h, w)
        seen["win"] = window(h, w) if callable(window) else window
        return seen["win"]

    def gt_window(h: int, w: int) -> Optional[Window]:
        if "hw" not in seen:
            return lq_window(h, w)
        if (h, w) != seen["hw"]:
            raise ValueError(size_mismatch_message(lq_name, seen["hw"], gt_name, (h, w)))
        return seen["win"]

    return lq_window, gt_window


class PixelCounts(NamedTuple):
    """The values of an HDR image that training cannot use as they are, and its peak."""

    nonfinite: int  # NaN/Inf: an error
    negative: int  # clamped to 0 when loaded: a note
    peak: float = 0.0  # the largest finite value: far above hdr_max, a note


def count_bad_pixels(hdr: np.ndarray) -> PixelCounts:
    """The NaN/Inf and negative values of an HDR array, and its largest finite value."""
    finite = np.isfinite(hdr)
    nonfinite = int(hdr.size - np.count_nonzero(finite))
    negative = int(np.count_nonzero(hdr < 0))
    peak = hdr.max(initial=0.0) if not nonfinite else np.max(hdr, initial=0.0, where=finite)
    return PixelCounts(nonfinite, negative, float(peak))
