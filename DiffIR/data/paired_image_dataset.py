"""What every paired LQ/GT dataset shares: the option checks, the ``io_backend`` reader, the checks
before training, the training window and its random numbers.

The reader (one per ``io_backend``, see :mod:`DiffIR.data.pair_reader`: disk in :mod:`DiffIR.data.disk_reader`,
LMDB in :mod:`DiffIR.data.lmdb_reader`) serves the pairs by index and runs its part of the check. What a pair is
made of comes from the dataset's ``PAIR_FORMAT`` (:mod:`DiffIR.data.paired_common`).

Per training item a random ``gt_size`` window is drawn from the image size and only that window is
read and converted; images smaller than the patch are reflect-padded (``small_images: pad``, default)
or refused (``error``); then one of the 8 flips/rotations with ``geometric_augs`` (or BasicSR's
``use_hflip`` + ``use_rot``, see :func:`augmentation_flags`). With
:class:`~DiffIR.data.EnlargedSampler` each sample draws from a generator seeded by (seed, epoch,
rank, position) (see :mod:`DiffIR.data.seeding`); with plain integer indices, from a per-process
generator seeded by ``torch.initial_seed()`` and the rank. Never the global numpy RNG.

The datasets themselves (``LDR_HDR_PairedDataset``, ``DeblurPairedDataset``) add their domain.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from DiffIR.data.check_report import CheckReport
from DiffIR.data.checks import LEVELS, SMALL_IMAGE_POLICIES, CheckSettings
from DiffIR.data.disk_reader import DiskPairReader
from DiffIR.data.lmdb_reader import LmdbPairReader
from DiffIR.data.pair_problems import size_mismatch_message, too_small_message
from DiffIR.data.pair_reader import PairReader, PairSource, make_pair_reader
from DiffIR.data.paired_common import HDR_PAIRS, PROGRESSIVE_KEYS, PairFormat
from DiffIR.data.pairing import PairingError, collect_pairing_problems, collecting_pairing_problems
from DiffIR.data.seeding import sample_rng
from DiffIR.data.transforms import augment_pair, pad_to_size, random_window
from DiffIR.utils.dist import get_dist_info
from DiffIR.utils.errors import DataError, OptionError
from DiffIR.utils.image_common import Window
from DiffIR.config.schema import check_dataset_values
from DiffIR.utils.registry import check_keys

logger = logging.getLogger("DiffIR")

PREFETCH_MODES = (None, "cpu", "cuda")

__all__ = ["PairedImageDataset", "DiskPairReader", "LmdbPairReader", "PairSource", "make_pair_reader",
           "augmentation_flags", "choice_option", "PREFETCH_MODES"]


def _log(msg: str) -> None:
    if logger.handlers:  # the project logger is set up (get_root_logger; it silences ranks > 0 itself)
        logger.info(msg)
    else:
        print(msg, flush=True)


def _warn(msg: str) -> None:
    if logger.handlers:
        logger.warning(msg)
    else:
        print(f"WARNING: {msg}", flush=True)


def augmentation_flags(opt: Mapping[str, Any]) -> Tuple[bool, bool]:
    """``(horizontal flips, rotations)`` of the training patches from the dataset options.

    ``geometric_augs`` (the official DiffIR key) turns on both: one of the 8 flips/rotations, all equally likely.
    BasicSR's ``use_hflip`` (alias ``use_flip``) and ``use_rot`` keep their BasicSR meaning: both on is again one
    of the 8 variants, ``use_hflip`` alone a random left-right flip; ``use_rot`` alone draws a rotation by 0, 90,
    180 or 270 degrees (BasicSR draws a vertical flip and a transpose, the same four-variant strength).
    """
    if opt.get("geometric_augs", False):
        return True, True
    flip = bool(opt.get("use_flip", False) or opt.get("use_hflip", False))
    return flip, bool(opt.get("use_rot", False))


def choice_option(opt: Mapping[str, Any], key: str, choices: Sequence[Any], default: Any, where: str) -> Any:
    """The option ``key`` (text lower-cased) if it is one of ``choices``, else an :class:`OptionError` listing them."""
    value = opt.get(key, default)
    if isinstance(value, str):
        value = value.lower()
    if value not in choices:
        shown = ", ".join("~" if c is None else str(c) for c in choices)
        raise OptionError(f"'{where}:{key}' = {opt.get(key)!r} is unknown. Fix: use one of {shown}.")
    return value


class PairedImageDataset(Dataset):
    """What every paired LQ/GT dataset shares; subclasses add their domain (not registered itself).

    Shared: the option checks, the ``io_backend`` reader (``PAIR_FORMAT`` says what a pair is made of),
    the checks before training (``check``), the training window (drawn from the image size and read,
    reflect-padded, flipped/rotated) and its random numbers. A subclass sets ``OPTION_KEYS``,
    ``SYNTHETIC_KEYS``, ``PAIR_FORMAT`` and ``DATAROOTS``, and implements :meth:`_generate_synthetic`
    and :meth:`_make_sample` (plus :meth:`_read_domain_options` for options of its own).
    """

    PAIR_FORMAT: PairFormat = HDR_PAIRS
    DATAROOTS: Tuple[str, ...] = ("dataroot_lq", "dataroot_gt")
    SYNTHETIC_KEYS: Dict[str, Any] = {}
    #: the option keys every paired dataset accepts (``build_dataset`` rejects others by name); the
    #: progressive keys are read by train.py's batch schedule
    OPTION_KEYS: Tuple[str, ...] = (
        "name", "type", "phase",
        "dataroot_lq", "dataroot_gt", "filename_tmpl", "io_backend", "meta_info_file",
        "gt_size", "geometric_augs", "use_flip", "use_hflip", "use_rot",
        "use_shuffle", "num_worker_per_gpu", "batch_size_per_gpu", "dataset_enlarge_ratio",
        "prefetch_mode", "num_prefetch_queue", "pin_memory", "persistent_workers",
        "synthetic", "scale",
        "check", "check_cache_dir", "small_images",
    ) + PROGRESSIVE_KEYS

    @classmethod
    def check_options(cls, opt: Mapping[str, Any], where: Optional[str] = None) -> None:
        """Raise :class:`OptionError` naming every unknown key (and unknown ``synthetic`` sub-key)."""
        where = where or f"datasets:{opt.get('phase', '?')}"
        check_keys(opt, cls.OPTION_KEYS, where, cls.__name__)
        syn = opt.get("synthetic")
        if syn is not None:
            if not isinstance(syn, Mapping):
                example = ", ".join(f"{k}: {v}" for k, v in list(cls.SYNTHETIC_KEYS.items())[:3])
                raise OptionError(f"'{where}:synthetic' must be a mapping like {{{example}}}")
            check_keys(syn, list(cls.SYNTHETIC_KEYS), f"{where}:synthetic", "the synthetic data generator")

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
        self._read_options(opt, where)
        reported_above = collecting_pairing_problems()  # e.g. scripts/check_dataset.py lists them itself
        with collect_pairing_problems() as pairing:
            self.reader = self._open_reader(opt, where)
        if pairing and not reported_above and self.check_level == "off":
            raise PairingError(f"Unpaired files for '{where}':\n  " + "\n  ".join(pairing))
        self.rank = get_dist_info()[0]
        self._rng: Optional[np.random.Generator] = None
        self._rng_seed: Optional[int] = None
        self.check_report = None
        if self.check_level != "off":
            self.check_report = self._check_data([] if reported_above else pairing)

    def _read_options(self, opt: Mapping[str, Any], where: str) -> None:
        """Check and keep the options that do not touch the data."""
        check_dataset_values(opt, where)
        if int(opt.get("scale", 1) or 1) != 1:
            raise OptionError(f"'{where}:scale' = {opt.get('scale')}: {self.PAIR_FORMAT.what} pairs have the same size. Fix: set scale: 1.")
        self._read_domain_options(opt, where)
        self.check_level = choice_option(opt, "check", LEVELS, "full", where)
        self.small_images = choice_option(opt, "small_images", SMALL_IMAGE_POLICIES, "pad", where)
        self.check_cache_dir = opt.get("check_cache_dir")
        if opt.get("prefetch_mode") not in PREFETCH_MODES:
            raise OptionError(f"'{where}:prefetch_mode' = {opt.get('prefetch_mode')!r} is unknown. "
                              f"Fix: use ~ (none), cpu or cuda.")
        self.gt_size: Optional[int] = None
        if self.is_train:
            if opt.get("gt_size") is None:
                raise OptionError(f"'{where}:gt_size' must be a positive patch size for training (got None). Fix: e.g. gt_size: 256.")
            self.gt_size = int(opt["gt_size"])
        self.aug_flip, self.aug_rot = augmentation_flags(opt)

    def _open_reader(self, opt: Mapping[str, Any], where: str) -> PairReader:
        """The ``io_backend`` reader over the dataroots (generating the ``synthetic`` set first)."""
        for key in self.DATAROOTS:
            if not opt.get(key):
                raise OptionError(f"'{where}:{key}' is missing. Fix: set it to the {key[9:].upper()} folder.")
        source = PairSource.from_options(opt, where, self.PAIR_FORMAT)
        syn = opt.get("synthetic")
        if syn is not None:
            io_backend = source.io_backend
            btype = io_backend.get("type", "disk") if isinstance(io_backend, Mapping) else io_backend
            if btype != "disk":
                raise OptionError(f"'{where}:synthetic' works with io_backend type 'disk' only (got '{btype}').")
            self._generate_synthetic(opt, {**self.SYNTHETIC_KEYS, **dict(syn)}, _log)
        return make_pair_reader(source)

    def _check_data(self, pairing: Sequence[str]) -> CheckReport:
        """Check the pairs before anything trains: one error for the ``pairing`` problems and every bad file."""
        settings = CheckSettings(self.check_level, self.gt_size, self.small_images, self.where, self.check_cache_dir,
                                 shard=get_dist_info(), log=_log, hdr_max=getattr(self, "hdr_max", None))
        report = settings.run(self.reader)
        for msg in pairing:
            report.add("pairing", msg)
        report.raise_if_errors()
        _log(report.summary())
        for note in report.notes():
            _warn(note)
        return report

    def smallest_image(self) -> Optional[Tuple[str, int, int]]:
        """``(GT name, height, width)`` of the pair with the shortest side, from the check before training (with
        ``check: off``, a header-only quick check now): a metric's ``crop_border`` must leave something of it."""
        report = self.check_report
        if report is None:
            report = CheckSettings("quick", where=self.where, cache_dir=self.check_cache_dir,
                                   log=lambda _: None).run(self.reader)
        return report.smallest

    # -- what subclasses add ------------------------------------------------------------------------
    def _read_domain_options(self, opt: Mapping[str, Any], where: str) -> None:
        """Read and check the dataset's own options (called before the data is touched)."""

    def _generate_synthetic(self, opt: Mapping[str, Any], cfg: Dict[str, Any], log: Callable[[str], None]) -> None:
        """Generate the ``synthetic`` data set (``cfg``: the sub-options over ``SYNTHETIC_KEYS``) into the dataroots."""
        raise NotImplementedError(f"{type(self).__name__} has no synthetic data generator")

    def _make_sample(self, item: Dict[str, Any], lq: np.ndarray, gt: np.ndarray) -> Dict[str, Any]:
        """The item handed to the loader, from the reader's entry and the (cropped) LQ/GT arrays."""
        raise NotImplementedError

    # -- randomness -------------------------------------------------------------------------------
    @property
    def rng(self) -> np.random.Generator:
        """Per-process generator (plain int indices), re-seeded whenever ``torch.initial_seed()`` changes."""
        seed = torch.initial_seed()
        if self._rng is None or self._rng_seed != seed:
            self._rng = np.random.default_rng([seed % (1 << 64), self.rank])
            self._rng_seed = seed
        return self._rng

    def __len__(self) -> int:
        return len(self.reader)

    def _crop_window(self, rng: np.random.Generator, name: Callable[[], str]) -> Callable[[int, int], Window]:
        """A function of the image size drawing the training window (the draws of ``paired_random_crop``)."""
        gs = int(self.gt_size)

        def window(h: int, w: int) -> Window:
            if (h < gs or w < gs) and self.small_images == "error":
                raise DataError(too_small_message(name(), (h, w), gs))
            return random_window(rng, h, w, gs, gs)

        return window

    def _load_pair(self, index: int) -> Tuple[Dict[str, Any], np.ndarray, np.ndarray]:
        """The reader's entry and its LQ/GT arrays: the augmented training patch, or the whole images."""
        if self.is_train:
            rng = sample_rng(index) or self.rng
            window = self._crop_window(rng, lambda: self.reader.paths(index)["gt_path"])
            item = self.reader.read(index, window)
            lq = pad_to_size(item["lq"], self.gt_size, self.gt_size)
            gt = pad_to_size(item["gt"], self.gt_size, self.gt_size)
            if self.aug_flip or self.aug_rot:
                lq, gt = augment_pair([lq, gt], rng, hflip=self.aug_flip, rotation=self.aug_rot)
        else:
            item = self.reader.read(index)
            lq, gt = item["lq"], item["gt"]
            if lq.shape[:2] != gt.shape[:2]:  # the readers check this already; kept for any other reader
                raise DataError(size_mismatch_message(item["lq_path"], lq.shape, item["gt_path"], gt.shape))
        return item, lq, gt

    def __getitem__(self, index: int) -> Dict[str, Any]:
        return self._make_sample(*self._load_pair(index))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.opt.get('name')!r}, phase={self.phase!r}, n={len(self)}, "
                f"backend={self.reader.backend!r})")
