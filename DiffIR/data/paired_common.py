"""Facts every paired LQ/GT dataset shares: what a pair is made of, and the progressive-training keys.

:class:`PairFormat` tells the pairing (:mod:`DiffIR.data.pairing`), the ``io_backend`` readers and the
dataset checks which files form a pair; the datasets themselves share
:class:`~DiffIR.data.paired_image_dataset.PairedImageDataset`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

from DiffIR.data.pairing import GT_EXTENSIONS, LQ_EXTENSIONS
from DiffIR.utils.hdr_io import LDR_EXTENSIONS

#: the official progressive-training keys of ``datasets:train``, read by train.py's batch schedule; every
#: paired dataset accepts them so that the official option files load unchanged
PROGRESSIVE_KEYS: Tuple[str, ...] = ("mini_batch_sizes", "iters", "gt_sizes")

__all__ = ["PROGRESSIVE_KEYS", "PairFormat", "HDR_PAIRS", "LDR_PAIRS"]


@dataclass(frozen=True)
class PairFormat:
    """What one pair is made of, so that pairing, readers and checks serve every paired dataset.

    ``gt_hdr``: the GT is linear HDR (``read_hdr``) rather than an 8/16-bit image (``read_ldr``);
    ``dgain``: every pair also has a dgain/gamma entry (``dataroot_dgain``).
    """

    lq_exts: Tuple[str, ...]
    gt_exts: Tuple[str, ...]
    gt_hdr: bool
    dgain: bool
    what: str  # shown in messages, e.g. "LDR/HDR"


#: LDR input, linear HDR target and a dgain file per pair (AIM-ITM layout, LDR_HDR_PairedDataset)
HDR_PAIRS = PairFormat(tuple(LQ_EXTENSIONS), tuple(GT_EXTENSIONS), gt_hdr=True, dgain=True, what="LDR/HDR")
#: two 8/16-bit images per pair, e.g. blurred/sharp (GoPro layout, DeblurPairedDataset)
LDR_PAIRS = PairFormat(tuple(LDR_EXTENSIONS), tuple(LDR_EXTENSIONS), gt_hdr=False, dgain=False, what="LQ/GT image")
