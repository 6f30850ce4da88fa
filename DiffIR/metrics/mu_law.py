"""The μ-law, the canonical HDR tone curve of PSNR-μ (NTIRE 2021/2022), for NumPy arrays and torch tensors.

Its own module so that both the metric (:mod:`DiffIR.metrics.hdr_metrics`) and the ``mu_law`` training tone curve
(:mod:`DiffIR.utils.tone_mapping`) use one definition without importing each other.
"""
from __future__ import annotations

import math
from typing import Union

import numpy as np
import torch

__all__ = ["MU_LAW_MU", "mu_law"]

MU_LAW_MU = 5000.0  #: μ of the NTIRE μ-law


def mu_law(x: Union[np.ndarray, torch.Tensor], mu: float = MU_LAW_MU) -> Union[np.ndarray, torch.Tensor]:
    """``ln(1 + μ x) / ln(1 + μ)`` (``x`` in [0, 1]); keeps a float input's dtype (μ is used as a Python float)."""
    mu = float(mu)
    if isinstance(x, torch.Tensor):
        return torch.log1p(x * mu) / math.log1p(mu)
    x = np.asarray(x)
    x = x if x.dtype.kind == "f" else x.astype(np.float64)
    return (np.log1p(x * mu) / math.log1p(mu)).astype(x.dtype, copy=False)
