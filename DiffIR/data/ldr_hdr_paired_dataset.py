"""Paired LDR (JPEG/PNG) -> HDR dataset in the AIM-ITM layout, with the fork's tone pipeline.

Folders (``io_backend: {type: disk}``)::

    dataroot_lq/<stem>.jpg|.jpeg|.png     8/16-bit LDR input
    dataroot_gt/<stem>.hdr|.exr|.npy      linear HDR target (peak ~ hdr_max)
    dataroot_dgain/<stem>.txt             'dgain: x' / 'gamma: y' lines

Pairing follows BasicSR's ``filename_tmpl`` semantics: for a GT stem ``g`` the LQ stem is
``filename_tmpl.format(g)`` (default ``'{}'``: identical stems); the dgain file is named after the
LQ stem (it describes the LDR's exposure).

Per item: read LQ (RGB in [0,1]), GT (linear RGB) and dgain/gamma; check sizes; training phase:
random ``gt_size`` crop (reflect-padded if the image is smaller) and optional flips/rotations,
always *before* the per-pixel tone mapping; then

* GT: ``tone(max(gt, 0))``
* LQ: ``tone(ldr_to_hdr(lq, dgain, gamma, hdr_max))`` if ``lq_linearize`` (default, the fork)
  else the LDR unchanged,

with ``tone`` = ``log_tone_map`` (``tone_curve: log``, default) or ``x / hdr_max`` (``linear``).

Random numbers come from a per-worker ``np.random.Generator`` seeded from ``torch.initial_seed()``
(which DataLoader makes distinct per worker and per epoch), never from the global numpy RNG.
"""
from __future__ import annotations

import difflib
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from DiffIR.data.dgain import read_dgain_file
from DiffIR.data.transforms import augment_pair, img2tensor, paired_random_crop
from DiffIR.utils.hdr_io import read_hdr, read_ldr
from DiffIR.utils.registry import DATASET_REGISTRY, OptionError
from DiffIR.utils.tone_mapping import ldr_to_hdr, linear_tone_map, log_tone_map

logger = logging.getLogger("DiffIR")

LQ_EXTENSIONS = (".jpg", ".jpeg", ".png")
GT_EXTENSIONS = (".hdr", ".exr", ".npy")
DGAIN_EXTENSIONS = (".txt",)
TONE_CURVES = ("log", "linear")
SYNTHETIC_KEYS = {"num_images": 24, "size": 192, "seed": 0, "gt_format": "hdr", "ldr_format": "jpg", "noise": True}
MAX_LISTED = 5

__all__ = [
    "LDR_HDR_PairedDataset",
    "BackendNotAvailableError",
    "PairingError",
    "DiskPairReader",
    "make_pair_reader",
    "scan_paired_folders",
]


class BackendNotAvailableError(OptionError, NotImplementedError):
    """An ``io_backend`` that is planned but not implemented yet (catchable as either base)."""


class PairingError(ValueError):
    """Files in the LQ / GT / dgain folders do not pair up."""


def _log(msg: str) -> None:
    if logger.handlers:  # the project logger is set up (get_root_logger; it silences ranks > 0 itself)
        logger.info(msg)
    else:
        print(msg, flush=True)


# ----------------------------------------------------------------------------------------------
# folder scanning / pairing
# ----------------------------------------------------------------------------------------------
def _scan_folder(folder: str, key: str, exts: Sequence[str], where: str) -> Dict[str, str]:
    """``stem -> path`` of the visible files with ``exts`` in ``folder`` (not recursive)."""
    p = Path(folder)
    if not p.is_dir():
        hint = ""
        if str(folder).rstrip("/").endswith(".lmdb"):
            hint = " It looks like an LMDB path; set io_backend: {type: lmdb} (LMDB arrives in a later release)."
        what = "is not a folder" if p.exists() else "does not exist"
        raise OptionError(
            f"'{where}:{key}' = '{folder}' {what}.{hint} Fix: set {key} to the folder holding the "
            f"{'/'.join(exts)} files, or add a 'synthetic:' option to generate demo data there."
        )
    stems: Dict[str, str] = {}
    others: List[str] = []
    dups: List[str] = []
    with os.scandir(p) as it:
        for e in it:
            if e.name.startswith(".") or not e.is_file():
                continue
            stem, ext = os.path.splitext(e.name)
            if ext.lower() not in exts:
                others.append(e.name)
                continue
            if stem in stems:
                dups.append(f"{os.path.basename(stems[stem])} / {e.name}")
                continue
            stems[stem] = os.path.join(str(p), e.name)
    if dups:
        raise PairingError(
            f"'{where}:{key}' = '{folder}': {len(dups)} stems exist with two extensions "
            f"({', '.join(sorted(dups)[:MAX_LISTED])}). Fix: keep one file per stem."
        )
    if not stems:
        found = f" (it holds {len(others)} other files, e.g. {', '.join(sorted(others)[:3])})" if others else " (it is empty)"
        raise OptionError(
            f"'{where}:{key}' = '{folder}' holds no {'/'.join(exts)} files{found}. Fix: point {key} at the "
            f"right folder, or add a 'synthetic:' option to generate demo data."
        )
    return stems


def scan_paired_folders(
    dataroot_lq: str,
    dataroot_gt: str,
    dataroot_dgain: str,
    filename_tmpl: str = "{}",
    where: str = "datasets",
) -> List[Dict[str, str]]:
    """Pair the three folders by stem in linear time; returns ``[{lq_path, gt_path, dgain_path}]``.

    Sorted by GT stem. Raises :class:`OptionError` for a missing/empty folder (naming the option key)
    and one :class:`PairingError` listing, per folder, how many files lack a partner and the first few names.
    """
    if not isinstance(filename_tmpl, str) or filename_tmpl.count("{}") != 1:
        raise OptionError(f"'{where}:filename_tmpl' must contain '{{}}' exactly once (got {filename_tmpl!r}). Fix: use '{{}}'.")
    lq = _scan_folder(dataroot_lq, "dataroot_lq", LQ_EXTENSIONS, where)
    gt = _scan_folder(dataroot_gt, "dataroot_gt", GT_EXTENSIONS, where)
    dg = _scan_folder(dataroot_dgain, "dataroot_dgain", DGAIN_EXTENSIONS, where)

    records: List[Dict[str, str]] = []
    gt_no_lq: List[str] = []
    no_dgain: List[str] = []
    used_lq = set()
    for g in sorted(gt):
        q = filename_tmpl.format(g)
        lq_path = lq.get(q)
        if lq_path is None:
            gt_no_lq.append(os.path.basename(gt[g]))
            continue
        used_lq.add(q)
        dg_path = dg.get(q)
        if dg_path is None:
            no_dgain.append(f"{q}.txt")
            continue
        records.append({"lq_path": lq_path, "gt_path": gt[g], "dgain_path": dg_path})
    lq_no_gt = sorted(os.path.basename(lq[q]) for q in lq if q not in used_lq)

    problems = []

    def fmt(names: List[str]) -> str:
        more = f", ... (+{len(names) - MAX_LISTED} more)" if len(names) > MAX_LISTED else ""
        return ", ".join(names[:MAX_LISTED]) + more

    if gt_no_lq:
        problems.append(
            f"{len(gt_no_lq)} file(s) in dataroot_gt='{dataroot_gt}' have no LQ partner in "
            f"dataroot_lq='{dataroot_lq}' (filename_tmpl {filename_tmpl!r}): {fmt(gt_no_lq)}"
        )
    if lq_no_gt:
        problems.append(
            f"{len(lq_no_gt)} file(s) in dataroot_lq='{dataroot_lq}' have no GT partner in "
            f"dataroot_gt='{dataroot_gt}': {fmt(lq_no_gt)}"
        )
    if no_dgain:
        problems.append(
            f"{len(no_dgain)} pair(s) have no dgain file in dataroot_dgain='{dataroot_dgain}': {fmt(no_dgain)}"
        )
    if problems:
        raise PairingError(
            f"Unpaired files for '{where}':\n  " + "\n  ".join(problems)
            + "\nFix: add the missing files or remove the unpaired ones (every stem needs an LQ image, a GT image and a dgain .txt)."
        )
    return records


# ----------------------------------------------------------------------------------------------
# readers (one per io_backend; LMDB will add a reader with the same interface)
# ----------------------------------------------------------------------------------------------
class DiskPairReader:
    """Reads triples from three folders. Interface: ``len()``, ``paths(i)``, ``read(i)``."""

    backend = "disk"

    def __init__(self, dataroot_lq: str, dataroot_gt: str, dataroot_dgain: str, filename_tmpl: str = "{}",
                 where: str = "datasets", **backend_opt: Any) -> None:
        if backend_opt:
            raise OptionError(
                f"'{where}:io_backend' has keys {sorted(backend_opt)} that the disk backend does not use. "
                f"Fix: remove them (io_backend: {{type: disk}})."
            )
        self.records = scan_paired_folders(dataroot_lq, dataroot_gt, dataroot_dgain, filename_tmpl, where)

    def __len__(self) -> int:
        return len(self.records)

    def paths(self, index: int) -> Dict[str, str]:
        return dict(self.records[index])

    def read(self, index: int) -> Dict[str, Any]:
        """``{lq, gt, dgain, gamma, lq_path, gt_path, dgain_path}`` with float32 RGB arrays."""
        rec = self.records[index]
        out: Dict[str, Any] = dict(rec)
        out["lq"] = read_ldr(rec["lq_path"])
        out["gt"] = read_hdr(rec["gt_path"])
        out.update(read_dgain_file(rec["dgain_path"]))
        return out


_READERS = {"disk": DiskPairReader}
_PLANNED_BACKENDS = {"lmdb": "LMDB arrives in a later release"}


def make_pair_reader(io_backend: Optional[Mapping[str, Any]], dataroot_lq: str, dataroot_gt: str,
                     dataroot_dgain: str, filename_tmpl: str = "{}", where: str = "datasets"):
    """Build the reader for ``io_backend`` (a dict with ``type``; None means disk)."""
    backend = dict(io_backend or {"type": "disk"})
    btype = backend.pop("type", "disk")
    if btype in _PLANNED_BACKENDS:
        raise BackendNotAvailableError(
            f"'{where}:io_backend:type' = '{btype}' is not available yet: {_PLANNED_BACKENDS[btype]}. "
            f"Fix: use io_backend: {{type: disk}} with image folders as dataroots."
        )
    if btype not in _READERS:
        close = difflib.get_close_matches(str(btype), list(_READERS) + list(_PLANNED_BACKENDS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise OptionError(f"'{where}:io_backend:type' = '{btype}' is unknown{hint}. Fix: use 'disk'.")
    return _READERS[btype](dataroot_lq, dataroot_gt, dataroot_dgain, filename_tmpl, where, **backend)


# ----------------------------------------------------------------------------------------------
# dataset
# ----------------------------------------------------------------------------------------------
def _check_keys(opt: Mapping[str, Any], accepted: Sequence[str], where: str, what: str) -> None:
    unknown = [k for k in opt if k not in accepted]
    if unknown:
        parts = []
        for k in unknown:
            close = difflib.get_close_matches(str(k), list(accepted), n=1)
            parts.append(f"'{where}:{k}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        raise OptionError(
            f"Unknown option key {', '.join(parts)} for {what}. Accepted keys: {', '.join(accepted)}. "
            f"Fix or remove the key in your YAML file."
        )


@DATASET_REGISTRY.register()
class LDR_HDR_PairedDataset(Dataset):
    """LDR -> HDR pairs (AIM-ITM layout). See the module docstring for the pipeline.

    Returns per item ``lq``/``gt``: float32 ``3 x H x W`` RGB tensors in the tone-curve domain,
    ``dgain``/``gamma``: float32 0-d tensors, ``lq_path``/``gt_path``/``dgain_path``: str.
    """

    #: every option key this dataset accepts (``build_dataset`` rejects others by name)
    OPTION_KEYS: Tuple[str, ...] = (
        "name", "type", "phase",
        "dataroot_lq", "dataroot_gt", "dataroot_dgain", "filename_tmpl", "io_backend", "meta_info_file",
        "gt_size", "geometric_augs", "use_flip", "use_rot",
        "use_shuffle", "num_worker_per_gpu", "batch_size_per_gpu", "dataset_enlarge_ratio",
        "prefetch_mode", "pin_memory", "persistent_workers",
        "hdr_max", "tone_curve", "lq_linearize", "synthetic", "scale",
    )

    @classmethod
    def check_options(cls, opt: Mapping[str, Any], where: Optional[str] = None) -> None:
        """Raise :class:`OptionError` naming every unknown key (and unknown ``synthetic`` sub-key)."""
        where = where or f"datasets:{opt.get('phase', '?')}"
        _check_keys(opt, cls.OPTION_KEYS, where, cls.__name__)
        syn = opt.get("synthetic")
        if syn is not None:
            if not isinstance(syn, Mapping):
                raise OptionError(f"'{where}:synthetic' must be a mapping like {{num_images: 24, size: 192, seed: 0}}")
            _check_keys(syn, list(SYNTHETIC_KEYS), f"{where}:synthetic", "the synthetic data generator")

    def __init__(self, opt: Dict[str, Any]) -> None:
        super().__init__()
        self.opt = opt
        phase = opt.get("phase")
        self.where = where = f"datasets:{phase if phase else opt.get('name', '?')}"
        self.check_options(opt, where)
        if not phase:
            raise OptionError(f"'{where}:phase' is missing. Fix: set phase: train or val (the option parser fills it from the datasets key).")
        self.phase = str(phase)
        self.is_train = self.phase.startswith("train")

        if int(opt.get("scale", 1) or 1) != 1:
            raise OptionError(f"'{where}:scale' = {opt.get('scale')}: LDR->HDR pairs have the same size. Fix: set scale: 1.")
        if opt.get("meta_info_file") is not None:
            raise OptionError(f"'{where}:meta_info_file' is reserved for a later release. Fix: remove it (pairs are found by file stem).")
        self.hdr_max = float(opt.get("hdr_max", 1000.0))
        if not self.hdr_max > 0:
            raise OptionError(f"'{where}:hdr_max' must be > 0, got {opt.get('hdr_max')}.")
        self.tone_curve = str(opt.get("tone_curve", "log")).lower()
        if self.tone_curve not in TONE_CURVES:
            raise OptionError(f"'{where}:tone_curve' = '{opt.get('tone_curve')}' is unknown. Fix: use one of {', '.join(TONE_CURVES)}.")
        self.lq_linearize = bool(opt.get("lq_linearize", True))

        self.gt_size: Optional[int] = None
        if self.is_train:
            gs = opt.get("gt_size")
            if gs is None or int(gs) <= 0:
                raise OptionError(f"'{where}:gt_size' must be a positive patch size for training (got {gs}). Fix: e.g. gt_size: 256.")
            self.gt_size = int(gs)
        use_flip, use_rot = bool(opt.get("use_flip", False)), bool(opt.get("use_rot", False))
        if opt.get("geometric_augs", False):
            use_flip = use_rot = True
        self.aug_flip, self.aug_rot = use_flip, use_rot

        for key in ("dataroot_lq", "dataroot_gt", "dataroot_dgain"):
            if not opt.get(key):
                raise OptionError(f"'{where}:{key}' is missing. Fix: set it to the {key[9:].upper()} folder.")
        io_backend = opt.get("io_backend") or {"type": "disk"}
        syn = opt.get("synthetic")
        if syn is not None:
            btype = io_backend.get("type", "disk")
            if btype != "disk":
                raise OptionError(f"'{where}:synthetic' works with io_backend type 'disk' only (got '{btype}').")
            from DiffIR.data.synthetic_hdr import ensure_synthetic_dataset  # lazy: keeps `python -m` of it clean

            cfg = {**SYNTHETIC_KEYS, **dict(syn)}
            ensure_synthetic_dataset(
                opt["dataroot_lq"], opt["dataroot_gt"], opt["dataroot_dgain"],
                num_images=int(cfg["num_images"]), size=cfg["size"], seed=int(cfg["seed"]),
                gt_format=str(cfg["gt_format"]), ldr_format=str(cfg["ldr_format"]), noise=bool(cfg["noise"]),
                log=_log,
            )
        self.reader = make_pair_reader(
            io_backend, str(opt["dataroot_lq"]), str(opt["dataroot_gt"]), str(opt["dataroot_dgain"]),
            str(opt.get("filename_tmpl", "{}")), where,
        )
        self._rng: Optional[np.random.Generator] = None
        self._rng_seed: Optional[int] = None

    # -- randomness -------------------------------------------------------------------------------
    @property
    def rng(self) -> np.random.Generator:
        """Per-process generator, re-seeded whenever ``torch.initial_seed()`` changes (new worker)."""
        seed = torch.initial_seed()
        if self._rng is None or self._rng_seed != seed:
            self._rng = np.random.default_rng(seed)
            self._rng_seed = seed
        return self._rng

    # -- tone pipeline ------------------------------------------------------------------------------
    def tone(self, hdr_linear: np.ndarray) -> np.ndarray:
        """The configured tone curve (``log`` or ``linear``) on linear HDR values."""
        if self.tone_curve == "log":
            return log_tone_map(hdr_linear, self.hdr_max)
        return linear_tone_map(hdr_linear, self.hdr_max)

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        item = self.reader.read(index)
        lq, gt = item["lq"], item["gt"]
        if lq.shape[:2] != gt.shape[:2]:
            raise ValueError(
                f"Size mismatch: LQ '{item['lq_path']}' is {lq.shape[0]}x{lq.shape[1]} but GT '{item['gt_path']}' "
                f"is {gt.shape[0]}x{gt.shape[1]} (H x W). Fix: LQ and GT of a pair must have the same size."
            )
        if self.is_train:
            rng = self.rng
            lq, gt = paired_random_crop(lq, gt, self.gt_size, rng)
            if self.aug_flip or self.aug_rot:
                lq, gt = augment_pair([lq, gt], rng, hflip=self.aug_flip, rotation=self.aug_rot)
        dgain, gamma = float(item["dgain"]), float(item["gamma"])
        gt = self.tone(np.maximum(gt, np.float32(0.0)))
        if self.lq_linearize:
            lq = self.tone(ldr_to_hdr(lq, dgain, gamma, self.hdr_max))
        lq_t, gt_t = img2tensor([lq, gt])
        return {
            "lq": lq_t,
            "gt": gt_t,
            "dgain": torch.tensor(dgain, dtype=torch.float32),
            "gamma": torch.tensor(gamma, dtype=torch.float32),
            "lq_path": item["lq_path"],
            "gt_path": item["gt_path"],
            "dgain_path": item["dgain_path"],
        }

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.opt.get('name')!r}, phase={self.phase!r}, n={len(self)}, "
                f"backend={self.reader.backend!r}, tone_curve={self.tone_curve!r}, lq_linearize={self.lq_linearize})")
