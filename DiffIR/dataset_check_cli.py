"""``diffir-check`` / ``scripts/check_dataset.py``: the dataset checks run over every dataset of a training option
file (the program itself, its options and exit status, is :func:`DiffIR.cli_entry.check_dataset`).

It sits above the data layer: it reads option files and builds datasets as training does, which the checks
themselves (:mod:`DiffIR.data.checks`, used while a dataset is built) must not import.
"""
from __future__ import annotations

import os
from typing import Callable, List, Optional, Sequence

from DiffIR.data import build_dataset
from DiffIR.data.checks import CheckSettings, exception_text
from DiffIR.data.pairing import collect_pairing_problems
from DiffIR.utils.errors import OptionError
from DiffIR.config.loading import finalize_options, load_yaml

__all__ = ["check_options_file"]


def check_options_file(path: str, level: str = "full", phases: Optional[Sequence[str]] = None,
                       log: Callable[[str], None] = print, limit: Optional[int] = None) -> bool:
    """Check the data sets of a training option file; print the findings. Returns True when all pass.

    Each dataset is built as training would build it (so option errors are reported the same way),
    with its own construction check off, then checked at ``level``; every problem found is listed,
    pairing problems together with the per-file problems of the pairs that do exist, and a set that
    cannot be read at all (e.g. a truncated LMDB) does not stop the check of the others. Option
    errors (wrong keys or values, missing folders) are raised as one :class:`OptionError` after the
    other sets were checked. ``limit`` caps the messages per problem kind (None: all).
    """
    opt = load_yaml(path)
    root = os.path.dirname(os.path.abspath(path))
    finalize_options(opt, root, is_train=True, file=path)
    datasets = opt.get("datasets") or {}
    if not datasets:
        raise OptionError(f"Option file {path} has no 'datasets' section. Fix: add datasets: {{train: ...}}.")
    unknown = [p for p in (phases or []) if p not in datasets]
    if unknown:
        raise OptionError(f"Option file {path} has no dataset(s) {', '.join(unknown)}; it has {', '.join(datasets)}.")
    all_ok = True
    option_errors: List[str] = []
    for phase, dopt in datasets.items():
        if phases and phase not in phases:
            continue
        where = f"datasets:{phase}"
        try:
            with collect_pairing_problems() as pairing:  # pairing problems are listed with the others
                ds = build_dataset({**dopt, "check": "off"})
        except OptionError as e:  # the option file itself is wrong: reported after the other sets (exit 2)
            option_errors.append(str(e))
            log(f"Dataset check of '{where}': not run, its options are wrong (see below).")
            continue
        except (OSError, ValueError) as e:  # unreadable data (e.g. a truncated LMDB): a problem of this set
            all_ok = False
            log(f"Dataset check of '{where}': FAILED before any pair could be read:\n  {exception_text(e)}")
            continue
        settings = CheckSettings(level, getattr(ds, "gt_size", None), dopt.get("small_images", "pad"), where,
                                 dopt.get("check_cache_dir"), log=log, hdr_max=getattr(ds, "hdr_max", None))
        report = settings.run(ds.reader)
        for msg in pairing:
            report.add("pairing", msg)
        log(report.summary())
        for note in report.notes():
            log("NOTE: " + note)
        if not report.ok:
            all_ok = False
            log(report.error_text(limit))
    if option_errors:
        raise OptionError("\n".join(option_errors))
    return all_ok
