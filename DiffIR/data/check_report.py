"""What a dataset check found (:class:`CheckReport`) and the error that stops training on it: errors by kind, each
message naming the file and the fix, and the notes that do not stop training (negative HDR values, padded images,
implausible dgain/gamma, HDR peaks far above ``hdr_max``). Filled by :mod:`DiffIR.data.checks`.
"""
from __future__ import annotations

import collections
from typing import Dict, List, Optional, Sequence, Tuple

from DiffIR.data.dgain import implausible_exposure
from DiffIR.data.pair_problems import PROBLEM_TITLES, problem_text
from DiffIR.data.pairing import MAX_LISTED, PairingError, format_names
from DiffIR.utils.errors import DataError

__all__ = ["DatasetCheckError", "UnpairedSetError", "CheckReport", "HDR_MAX_HEADROOM", "implausible_exposure_entry",
           "implausible_exposure_note"]

#: an HDR whose peak exceeds ``hdr_max`` by more than this factor is reported: the network domain (and every output)
#: ends at ``hdr_max``, so its highlights cannot be learnt. Real data overshoots a little (the AIM peak of 1000 is
#: a convention, not a clip); twice the peak is a wrong ``hdr_max`` or data in other units.
HDR_MAX_HEADROOM = 2.0


class DatasetCheckError(DataError):
    """The data set has problems that would break or silently spoil training; the message lists them."""


class UnpairedSetError(DatasetCheckError, PairingError):
    """A failed check that includes pairing problems (catchable as either kind)."""


def implausible_exposure_entry(name: str, dgain: float, gamma: float) -> Optional[str]:
    """``"<name> (what is implausible)"`` for a dgain entry outside the plausible ranges (see
    :func:`DiffIR.data.dgain.implausible_exposure`), else None."""
    odd = implausible_exposure(dgain, gamma)
    return f"{name} ({odd})" if odd else None


def implausible_exposure_note(entries: Sequence[str], where: str) -> str:
    """The warning about the :func:`implausible_exposure_entry` entries of ``where`` (a data set, a folder): the
    data is used, but such values are usually a swapped or mis-scaled file. Training, the dataset check and
    inference give this same warning."""
    return (f"{len(entries)} dgain entr(y/ies) of '{where}' have implausible values (used as they are; check for "
            f"swapped or mis-scaled files): {format_names(entries)}")


class CheckReport:
    """What a check found: errors by kind (each message names the file and the fix) and notes."""

    def __init__(self, where: str, level: str, n_pairs: int) -> None:
        self.where = where
        self.level = level
        self.n_pairs = n_pairs
        self.errors: Dict[str, List[str]] = collections.OrderedDict((k, []) for k in PROBLEM_TITLES)
        self.negatives: List[Tuple[str, int]] = []
        self.over_peak: List[Tuple[str, float]] = []  # HDR images far above hdr_max: (name, peak)
        self.hdr_max: Optional[float] = None
        self.peaks_unchecked = ""  # why the peaks could not be compared with hdr_max (a note)
        self.smallest: Optional[Tuple[str, int, int]] = None  # (GT name, height, width) of the narrowest pair
        self.padded: List[str] = []
        self.odd_exposure: List[str] = []  # "<dgain file> (what is implausible)"
        self.decoded = 0
        self.from_cache = 0
        self.seconds = 0.0
        self.note = ""

    def add(self, kind: str, message: str) -> None:
        self.errors[kind].append(message)

    @property
    def ok(self) -> bool:
        return not any(self.errors.values())

    def error_text(self, limit: Optional[int] = MAX_LISTED) -> str:
        """The errors by kind, at most ``limit`` messages per kind (None: all)."""
        return problem_text(self.errors, limit)

    def raise_if_errors(self, limit: Optional[int] = MAX_LISTED) -> None:
        if self.ok:
            return
        unpaired = bool(self.errors["pairing"])
        off = ("set check: off in the dataset options only if you accept the per-file problems (pairing problems "
               "stop training in any case)." if unpaired else
               "set check: off in the dataset options only if you accept these problems.")
        raise (UnpairedSetError if unpaired else DatasetCheckError)(
            f"Data set '{self.where}' failed the {self.level} check ({self.n_pairs} pairs):\n{self.error_text(limit)}\n"
            f"Nothing was trained. Fix the files named above (python scripts/check_dataset.py -opt <options> lists "
            f"every problem); {off}"
        )

    def note_exposure(self, name: str, dgain: float, gamma: float) -> None:
        """Remember a dgain entry with implausible values (a warning, see ``DiffIR.data.dgain``)."""
        entry = implausible_exposure_entry(name, dgain, gamma)
        if entry:
            self.odd_exposure.append(entry)

    def notes(self) -> List[str]:
        """Warnings that do not stop training (negative HDR values, padded images, implausible dgain/gamma)."""
        out = []
        if self.negatives:
            total = sum(n for _, n in self.negatives)
            names = [f"{name} ({n})" for name, n in sorted(self.negatives, key=lambda t: -t[1])]
            out.append(f"{len(self.negatives)} HDR image(s) of '{self.where}' have negative values ({total} in all), "
                       f"clamped to 0 when loaded: {format_names(names)}")
        if self.padded:
            out.append(f"{len(self.padded)} pair(s) of '{self.where}' are smaller than gt_size and are reflect-padded "
                       f"(small_images: pad): {format_names(self.padded)}")
        if self.odd_exposure:
            out.append(implausible_exposure_note(self.odd_exposure, self.where))
        if self.over_peak:
            peak = max(p for _, p in self.over_peak)
            names = [f"{name} ({p:.6g})" for name, p in sorted(self.over_peak, key=lambda t: -t[1])]
            out.append(f"{len(self.over_peak)} HDR image(s) of '{self.where}' exceed hdr_max={self.hdr_max:g} more "
                       f"than {HDR_MAX_HEADROOM:g}-fold (peak {peak:.6g}): set hdr_max to the data's peak (the network "
                       f"domain and every output end at hdr_max, so brighter highlights cannot be learnt): "
                       f"{format_names(names)}")
        if self.peaks_unchecked:
            out.append(self.peaks_unchecked)
        return out

    def summary(self) -> str:
        state = "OK" if self.ok else "FAILED"
        extra = f", {self.note}" if self.note else ""
        return (f"Dataset check ({self.level}) of '{self.where}': {self.n_pairs} pairs {state} "
                f"({self.decoded} decoded, {self.from_cache} from the check cache, {self.seconds:.1f}s{extra}).")
