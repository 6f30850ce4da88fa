"""Per-image exposure files (``dgain_info/<stem>.txt``) of the AIM-ITM layout.

Format: one ``key: value`` per line, e.g.::

    dgain: 2.5
    gamma: 2.2
    strategy: sksldrlogtohdrlog
    PSNR: 41.2

Only ``dgain`` and ``gamma`` are used (both must be plain decimal numbers, finite and > 0; values outside the plausible ranges below
are reported as warnings by the dataset check, see :func:`implausible_exposure`); other keys, blank lines,
lines starting with ``#`` and lines without a ``:`` are ignored. Keys are case-insensitive. A key given twice with
different values is an error (the same value twice is accepted).
Unlike the fork (which silently falls back to dgain 1.0 / gamma 1.6), a missing key is an error
unless ``defaults`` supplies it.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple, Union

from DiffIR.utils.errors import DataError
from DiffIR.utils.misc import decode_utf8
from DiffIR.utils.numbers import PLAIN_NUMBER_HINT, parse_plain_number

REQUIRED_KEYS = ("dgain", "gamma")

#: Plausible exposure values (inclusive). ``ldr = clip(hdr / hdr_max * dgain)^(1/gamma)``: with dgain 64 the LDR
#: already clips at hdr_max/64 (about 16 cd/m² for the AIM peak of 1000), with dgain 1/64 the whole HDR range maps to
#: the darkest 1/64 of the LDR; the synthetic data uses [1, 64], the AIM-ITM fits mostly 1-8. Display gammas lie
#: around 1.6-2.6 (sRGB about 2.2); below 1 or above 4 the file was most likely written with 1/gamma or in
#: another convention. Outside these ranges the data is used but reported, as a sign of swapped or mis-scaled files.
DGAIN_PLAUSIBLE = (1.0 / 64.0, 64.0)
GAMMA_PLAUSIBLE = (1.0, 4.0)

__all__ = ["REQUIRED_KEYS", "DGAIN_PLAUSIBLE", "GAMMA_PLAUSIBLE", "read_dgain_file", "parse_dgain_text",
           "format_dgain_text", "implausible_exposure"]


def implausible_exposure(dgain: float, gamma: float) -> Optional[str]:
    """What is implausible about a (dgain, gamma) pair (see ``DGAIN_PLAUSIBLE``/``GAMMA_PLAUSIBLE``), or None."""
    odd = []
    if not DGAIN_PLAUSIBLE[0] <= dgain <= DGAIN_PLAUSIBLE[1]:
        odd.append(f"dgain {dgain:g} outside [1/64, 64]")
    if not GAMMA_PLAUSIBLE[0] <= gamma <= GAMMA_PLAUSIBLE[1]:
        odd.append(f"gamma {gamma:g} outside [{GAMMA_PLAUSIBLE[0]:g}, {GAMMA_PLAUSIBLE[1]:g}]")
    return ", ".join(odd) or None


def parse_dgain_text(
    text: Union[str, bytes], source: str = "<string>", defaults: Optional[Mapping[str, float]] = None
) -> Dict[str, float]:
    """Parse the contents of a dgain file; returns ``{'dgain': float, 'gamma': float}``.

    ``source`` names the file (or LMDB key) in error messages. ``defaults`` (e.g. the fork's
    ``{'dgain': 1.0, 'gamma': 1.6}``) fills keys that are absent.
    """
    if isinstance(text, (bytes, bytearray)):
        text = decode_utf8(bytes(text), f"dgain file '{source}'",
                           "save it as UTF-8 text (or regenerate it) with 'dgain: <x>' / 'gamma: <y>' lines.")
    found: Dict[str, Tuple[float, str, int]] = {}  # key -> (value, text, line)
    for number, line in enumerate(text.splitlines(), 1):
        s = line.strip().lstrip("\ufeff")
        if not s or s.startswith("#") or ":" not in s:
            continue
        key, raw = (part.strip() for part in s.split(":", 1))
        key = key.lower()
        if key not in REQUIRED_KEYS:
            continue
        val = _value(raw, key, source, number)
        if key in found and found[key][0] != val:
            raise DataError(
                f"dgain file '{source}' gives '{key}' twice with different values: {found[key][1]} (line "
                f"{found[key][2]}) and {raw} (line {number}). Fix: keep the line with the right value."
            )
        found.setdefault(key, (val, raw, number))
    out: Dict[str, float] = {}
    for key in REQUIRED_KEYS:
        if key in found:
            out[key] = found[key][0]
        elif defaults is not None and key in defaults:
            out[key] = float(defaults[key])
        else:
            raise DataError(
                f"dgain file '{source}' has no '{key}:' line. Fix: add a line '{key}: <positive number>' "
                f"(both 'dgain' and 'gamma' are required)."
            )
    return out


def _value(raw: str, key: str, source: str, line: int) -> float:
    """The value of a ``dgain``/``gamma`` line: a finite number > 0, else a DataError naming file, line and key."""
    val = parse_plain_number(raw)
    if val is None:
        raise DataError(
            f"dgain file '{source}', line {line}: value of '{key}' is '{raw}', not a number. "
            f"Fix: write '{key}: <positive number>', {PLAIN_NUMBER_HINT}."
        )
    if not (math.isfinite(val) and val > 0):
        raise DataError(
            f"dgain file '{source}', line {line}: '{key}' must be a finite number > 0, got {raw}. Fix the value in the file."
        )
    return val


def read_dgain_file(path: Union[str, os.PathLike], defaults: Optional[Mapping[str, float]] = None) -> Dict[str, float]:
    """Read ``path`` and return ``{'dgain': float, 'gamma': float}``.

    Raises ``FileNotFoundError`` if the file is missing and :class:`DataError` (a ``ValueError``, naming the file
    and the key) if ``dgain``/``gamma`` is missing, unparsable, non-finite or <= 0.
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
