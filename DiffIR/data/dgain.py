"""Per-image exposure files (``dgain_info/<stem>.txt``) of the AIM-ITM layout.

Format: one ``key: value`` per line, e.g.::

    dgain: 2.5
    gamma: 2.2
    strategy: sksldrlogtohdrlog
    PSNR: 41.2

Only ``dgain`` and ``gamma`` are used (both must be finite and > 0); other keys, blank lines,
lines starting with ``#`` and lines without a ``:`` are ignored. Keys are case-insensitive.
Unlike the fork (which silently falls back to dgain 1.0 / gamma 1.6), a missing key is an error
unless ``defaults`` supplies it.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Dict, Mapping, Optional, Union

REQUIRED_KEYS = ("dgain", "gamma")

__all__ = ["REQUIRED_KEYS", "read_dgain_file", "parse_dgain_text", "format_dgain_text"]


def parse_dgain_text(
    text: Union[str, bytes], source: str = "<string>", defaults: Optional[Mapping[str, float]] = None
) -> Dict[str, float]:
    """Parse the contents of a dgain file; returns ``{'dgain': float, 'gamma': float}``.

    ``source`` names the file (or LMDB key) in error messages. ``defaults`` (e.g. the fork's
    ``{'dgain': 1.0, 'gamma': 1.6}``) fills keys that are absent.
    """
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"dgain file '{source}' is not UTF-8 text. Fix: regenerate it as 'dgain: <x>' / 'gamma: <y>' lines.") from None
    found: Dict[str, str] = {}
    for line in text.splitlines():
        s = line.strip().lstrip("\ufeff")
        if not s or s.startswith("#") or ":" not in s:
            continue
        key, value = s.split(":", 1)
        key = key.strip().lower()
        if key in REQUIRED_KEYS:
            found[key] = value.strip()
    out: Dict[str, float] = {}
    for key in REQUIRED_KEYS:
        if key not in found:
            if defaults is not None and key in defaults:
                out[key] = float(defaults[key])
                continue
            raise ValueError(
                f"dgain file '{source}' has no '{key}:' line. Fix: add a line '{key}: <positive number>' "
                f"(both 'dgain' and 'gamma' are required)."
            )
        raw = found[key]
        try:
            val = float(raw)
        except ValueError:
            raise ValueError(
                f"dgain file '{source}': value of '{key}' is '{raw}', not a number. Fix: write '{key}: <positive number>'."
            ) from None
        if not (math.isfinite(val) and val > 0):
            raise ValueError(
                f"dgain file '{source}': '{key}' must be a finite number > 0, got {raw}. Fix the value in the file."
            )
        out[key] = val
    return out


def read_dgain_file(path: Union[str, os.PathLike], defaults: Optional[Mapping[str, float]] = None) -> Dict[str, float]:
    """Read ``path`` and return ``{'dgain': float, 'gamma': float}``.

    Raises ``FileNotFoundError`` if the file is missing and ``ValueError`` (naming the file and the
    key) if ``dgain``/``gamma`` is missing, unparsable, non-finite or <= 0.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"dgain file '{p}' does not exist. Fix: check dataroot_dgain, or create it with 'dgain: <x>' and 'gamma: <y>' lines."
        )
    return parse_dgain_text(p.read_bytes(), source=str(p), defaults=defaults)


def format_dgain_text(dgain: float, gamma: float, **extra: object) -> str:
    """The text of a dgain file: ``dgain``/``gamma`` at full precision, then ``extra`` keys in order."""
    lines = [f"dgain: {float(dgain)!r}", f"gamma: {float(gamma)!r}"]
    lines += [f"{k}: {v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"
