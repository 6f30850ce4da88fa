"""Paired LDR (JPEG/PNG) -> HDR dataset in the AIM-ITM layout, with the fork's tone pipeline.

Sources (``io_backend``)::

    disk:  dataroot_lq/<stem>.jpg|.jpeg|.png     8/16-bit LDR input
           dataroot_gt/<stem>.hdr|.exr|.npy      linear HDR target (peak ~ hdr_max)
           dataroot_dgain/<stem>.txt             'dgain: x' / 'gamma: y' lines
    lmdb:  dataroot_lq/gt/dgain = OUT/lq.lmdb, OUT/gt.lmdb, OUT/dgain.lmdb of scripts/create_lmdb_hdr.py
           (see DiffIR.data.lmdb_reader; the origin fork's pickled LMDBs need allow_pickle: true)

Pairing follows BasicSR's ``filename_tmpl`` semantics: for a GT stem ``g`` the LQ stem is
``filename_tmpl.format(g)`` (default ``'{}'``: identical stems); the dgain entry is named after the
LQ stem (it describes the LDR's exposure). ``meta_info_file`` restricts the set to the stems it
lists, in its order.

Construction checks the set before anything trains (``check: full`` by default; ``quick`` or
``off``; see :mod:`DiffIR.data.checks`) and raises one :class:`DatasetCheckError` naming every bad
file and the fix, files without partners included (then it is also a :class:`PairingError`; with
``check: off`` unpaired files still stop construction, with a :class:`PairingError`).

Per item: the training window (drawn from the image size, read, padded, flipped/rotated, see
:mod:`DiffIR.data.paired_image_dataset`); then, on the patch only,

* GT: ``tone(max(gt, 0))`` (NaN/Inf stop with the file named)
* LQ: ``tone(ldr_to_hdr(lq, dgain, gamma, hdr_max))`` if ``lq_linearize`` (default, the fork)
  else the LDR unchanged,

with ``tone`` the ``tone_curve`` (``log`` default, ``linear``, ``pu21``, ``pq``, ``mu_law``; see
:data:`DiffIR.utils.tone_mapping.TONE_CURVES`).

Everything above except the dgain files and the tone pipeline is
:class:`~DiffIR.data.paired_image_dataset.PairedImageDataset`, which ``DeblurPairedDataset`` shares
(its ``PAIR_FORMAT`` says what a pair is made of).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Mapping

import numpy as np
import torch

from DiffIR.data.check_report import DatasetCheckError
from DiffIR.data.pair_problems import nonfinite_message
from DiffIR.data.paired_common import HDR_PAIRS
from DiffIR.data.paired_image_dataset import (DiskPairReader, PairedImageDataset, PairSource, choice_option,
                                              make_pair_reader)
from DiffIR.data.pairing import (DGAIN_EXTENSIONS, GT_EXTENSIONS, LQ_EXTENSIONS, MAX_LISTED, PairingError,
                                 scan_paired_folders)
from DiffIR.data.transforms import img2tensor
from DiffIR.utils.errors import DataError
from DiffIR.config.schema import TONE_DOMAIN_DEFAULTS, tone_domain
from DiffIR.utils.registry import DATASET_REGISTRY
from DiffIR.utils.tone_mapping import TONE_CURVES as _CURVES
from DiffIR.utils.tone_mapping import apply_tone_curve, ldr_to_network_input

TONE_CURVES = tuple(_CURVES)
SYNTHETIC_KEYS = {"num_images": 24, "size": 192, "seed": 0, "gt_format": "hdr", "ldr_format": "jpg", "noise": True}

# the generic dataset, its readers, the pairing names and the check errors are exported here too, so that
# code importing everything about the HDR set from this module keeps working
__all__ = [
    "PairedImageDataset",
    "LDR_HDR_PairedDataset",
    "DatasetCheckError",
    "PairingError",
    "DiskPairReader",
    "PairSource",
    "make_pair_reader",
    "scan_paired_folders",
    "LQ_EXTENSIONS",
    "GT_EXTENSIONS",
    "DGAIN_EXTENSIONS",
    "MAX_LISTED",
]


@DATASET_REGISTRY.register()
class LDR_HDR_PairedDataset(PairedImageDataset):
    """LDR -> HDR pairs (AIM-ITM layout). See the module docstring for the pipeline.

    Returns per item ``lq``/``gt``: float32 ``3 x H x W`` RGB tensors in the tone-curve domain,
    ``dgain``/``gamma``: float32 0-d tensors, ``lq_path``/``gt_path``/``dgain_path``: str.
    """

    PAIR_FORMAT = HDR_PAIRS
    DATAROOTS = PairedImageDataset.DATAROOTS + ("dataroot_dgain",)
    SYNTHETIC_KEYS = SYNTHETIC_KEYS
    OPTION_KEYS = PairedImageDataset.OPTION_KEYS + ("dataroot_dgain", "hdr_max", "tone_curve", "lq_linearize")

    def _read_domain_options(self, opt: Mapping[str, Any], where: str) -> None:
        domain = tone_domain(opt)  # the values were checked with the others (schema.DATASET)
        self.hdr_max = domain["hdr_max"]
        self.tone_curve = choice_option(opt, "tone_curve", TONE_CURVES, TONE_DOMAIN_DEFAULTS["tone_curve"], where)
        self.lq_linearize = domain["lq_linearize"]

    def _generate_synthetic(self, opt: Mapping[str, Any], cfg: Dict[str, Any], log: Callable[[str], None]) -> None:
        from DiffIR.data.synthetic_hdr import ensure_synthetic_dataset  # lazy: keeps `python -m` of it clean

        ensure_synthetic_dataset(
            opt["dataroot_lq"], opt["dataroot_gt"], opt["dataroot_dgain"],
            num_images=int(cfg["num_images"]), size=cfg["size"], seed=int(cfg["seed"]),
            gt_format=str(cfg["gt_format"]), ldr_format=str(cfg["ldr_format"]), noise=bool(cfg["noise"]),
            log=log,
        )

    # -- tone pipeline ------------------------------------------------------------------------------
    def tone(self, hdr_linear: np.ndarray) -> np.ndarray:
        """The configured tone curve (``tone_curve``) on linear HDR values."""
        return apply_tone_curve(hdr_linear, self.tone_curve, self.hdr_max)

    def _make_sample(self, item: Dict[str, Any], lq: np.ndarray, gt: np.ndarray) -> Dict[str, Any]:
        if not np.isfinite(gt).all():
            raise DataError(nonfinite_message(item["gt_path"]))
        dgain, gamma = float(item["dgain"]), float(item["gamma"])
        gt = self.tone(np.maximum(gt, np.float32(0.0)))
        lq = ldr_to_network_input(lq, dgain, gamma, self.hdr_max, self.tone_curve, self.lq_linearize)
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
