"""Blurred -> sharp pairs of 8-bit images (GoPro layout) for the deblurring pipeline (``train.py``).

Sources (``io_backend``)::

    disk:  dataroot_lq/<stem>.png|.jpg|...      blurred input
           dataroot_gt/<stem>.png|.jpg|...      sharp target
    lmdb:  dataroot_lq/gt = the two .lmdb folders (see DiffIR.data.lmdb_reader)

Pairs are found by stem with BasicSR's ``filename_tmpl`` (the LQ stem is ``filename_tmpl.format(gt_stem)``)
and ``meta_info_file``. Everything but the domain is
:class:`~DiffIR.data.paired_image_dataset.PairedImageDataset`, shared with ``LDR_HDR_PairedDataset``:
the readers, the checks before training (``check``), the training patch (random ``gt_size`` window,
reflect-padded when the image is smaller, then ``geometric_augs``) and the error messages. Items are RGB
float32 ``3 x H x W`` tensors in ``[0, 1]`` (no mean/std normalisation, as the official option files),
plus ``lq_path``/``gt_path``.

The progressive keys of the official option files (``mini_batch_sizes``, ``iters``, ``gt_sizes``) are
accepted and read by train.py's batch schedule. ``synthetic: {...}`` generates motion-blurred pairs into
the two folders on first use (:mod:`DiffIR.data.synthetic_deblur`).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Mapping

import numpy as np

from DiffIR.data.paired_image_dataset import PairedImageDataset
from DiffIR.data.paired_common import LDR_PAIRS
from DiffIR.data.transforms import img2tensor
from DiffIR.utils.registry import DATASET_REGISTRY

__all__ = ["DeblurPairedDataset"]


@DATASET_REGISTRY.register()
class DeblurPairedDataset(PairedImageDataset):
    """Blurred/sharp image pairs (GoPro layout); see the module docstring."""

    PAIR_FORMAT = LDR_PAIRS
    SYNTHETIC_KEYS: Dict[str, Any] = {"num_images": 24, "size": 128, "seed": 0, "max_blur": 15, "noise": True}

    def _generate_synthetic(self, opt: Mapping[str, Any], cfg: Dict[str, Any], log: Callable[[str], None]) -> None:
        from DiffIR.data.synthetic_deblur import ensure_synthetic_deblur_dataset  # lazy: keeps `python -m` of it clean

        ensure_synthetic_deblur_dataset(
            opt["dataroot_gt"], opt["dataroot_lq"], num_images=int(cfg["num_images"]), size=cfg["size"],
            seed=int(cfg["seed"]), max_blur=int(cfg["max_blur"]), noise=bool(cfg["noise"]), log=log)

    def _make_sample(self, item: Dict[str, Any], lq: np.ndarray, gt: np.ndarray) -> Dict[str, Any]:
        lq_t, gt_t = img2tensor([lq, gt])
        return {"lq": lq_t, "gt": gt_t, "lq_path": item["lq_path"], "gt_path": item["gt_path"]}
