"""Numbers written as text: in option files (YAML 1.1 reads ``5e-4`` as a string) and in data files (dgain)."""
from __future__ import annotations

import re
from typing import Any, Optional

__all__ = ["parse_number", "as_number", "parse_plain_number", "PLAIN_NUMBER_HINT"]

_NUMBER = re.compile(r"[-+]?(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:[eE][-+]?\d+)?")

#: a number in a data file (dgain files): digits, an optional point and exponent; no '_' (``float('1_0')`` is 10),
#: no ``nan``/``inf``, no hex, ASCII digits only (``float`` also reads the digits of other scripts)
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
PLAIN_NUMBER_HINT = "digits with an optional '.' and exponent, e.g. 2.5 or 1e-3 (no '_', ',', nan or inf)"


def parse_plain_number(text: str) -> Optional[float]:
    """The number ``text`` spells as a plain decimal (see ``_PLAIN_NUMBER``; surrounding blanks allowed), else None.

    For numbers in data files, where nothing like YAML's digit separators is expected: Python's ``float`` would read
    ``1_0`` as 10 and ``nan``/``infinity`` as numbers.
    """
    s = text.strip()
    return float(s) if _PLAIN_NUMBER.fullmatch(s) else None


def parse_number(text: str) -> Optional[float]:
    """The number a string such as ``'5e-4'``, ``'3e5'`` or ``'0.5'`` spells (as float), else None."""
    s = text.strip()
    if not _NUMBER.fullmatch(s) or s.startswith("_") or "__" in s:
        return None
    return float(s.replace("_", ""))


def as_number(value: float) -> Any:
    """An integral value read from text becomes an int (``total_iter: 3e5`` → 300000), others stay float."""
    return int(value) if value.is_integer() and abs(value) < 2 ** 53 else value
