"""PU21: the perceptually uniform encoding that lets LDR metrics (PSNR, SSIM) score HDR images.

Mantiuk & Azimi, "PU21: A novel perceptually uniform encoding for adapting existing quality metrics for HDR",
PCS 2021; formula and parameters of the official ``pu21_encoder.m`` (gfxdisp/pu21). Inputs are **absolute**
linear luminance or RGB radiance in cd/m²; the encoding maps 100 cd/m² to about 256 (the 8-bit SDR range), so
the official metrics use the constant peak 256. Only the ``banding_glare`` variant is recommended by the
authors; the others are kept for comparison with published numbers.

NumPy input is computed in float64 (the encoded values feed PSNRs quoted to 1e-6 dB); a ``torch`` tensor keeps its
float dtype and device and stays differentiable, so the training losses and tone curves use the same formula and
constants.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple, Union

import numpy as np
import torch

__all__ = ["PU21_PARAMS", "PU21_L_MIN", "PU21_L_MAX", "PU21_PEAK", "LUMINANCE_WEIGHTS", "pu21_encode", "pu21_decode",
           "luminance"]

#: p1..p7 of ``V = p7 * (((p1 + p2 Y^p4) / (1 + p3 Y^p4))^p5 - p6)`` ("updated 06/02/2020" in the source).
PU21_PARAMS: Dict[str, Tuple[float, ...]] = {
    "banding": (1.070275272, 0.4088273932, 0.153224308, 0.2520326168, 1.063512885, 1.14115047, 521.4527484),
    "banding_glare": (0.353487901, 0.3734658629, 8.277049286e-05, 0.9062562627, 0.09150303166, 0.9099517204,
                      596.3148142),
    "peaks": (1.043882782, 0.6459495343, 0.3194584211, 0.374025247, 1.114783422, 1.095360363, 384.9217577),
    "peaks_glare": (816.885024, 1479.463946, 0.001253215609, 0.9329636822, 0.06746643971, 1.573435413,
                    419.6006374),
}
PU21_L_MIN = 0.005  #: cd/m²; darker values are clamped (the official code warns)
PU21_L_MAX = 10000.0  #: cd/m²; brighter values are clamped
PU21_PEAK = 256.0  #: the official metrics' peak value (MATLAB ``psnr(T, R, 256)``, ``ssim(..., 'DynamicRange', 256)``)
#: Rec. 709 / sRGB luminance of linear RGB, as in the official ``pu21_metric.m`` (RGB order).
LUMINANCE_WEIGHTS = (0.212656, 0.715158, 0.072186)


def _params(variant: str) -> Tuple[float, ...]:
    if variant not in PU21_PARAMS:
        raise ValueError(f"Unknown PU21 variant '{variant}'; use one of {', '.join(PU21_PARAMS)} "
                         "(the PU21 authors recommend 'banding_glare')")
    return PU21_PARAMS[variant]


Values = Union[np.ndarray, torch.Tensor]


def _values(x: object) -> Values:
    """A float tensor passes through (gradients kept); anything else becomes a float64 array."""
    if isinstance(x, torch.Tensor):
        return x if x.is_floating_point() else x.double()
    return np.asarray(x, dtype=np.float64)


def _clamp(x: Values, lo: float, hi: Optional[float] = None) -> Values:
    return x.clamp(lo, hi) if isinstance(x, torch.Tensor) else np.clip(x, lo, hi)


def pu21_encode(y: Values, variant: str = "banding_glare", clamp_negative: bool = True) -> Values:
    """Encode absolute luminance / radiance (cd/m²) into PU21 units (same shape; float64 for NumPy input, the
    tensor's dtype for a tensor).

    Inputs are clamped to [0.005, 10000] first. ``clamp_negative`` applies the official ``max(V, 0)``
    (it only matters for ``banding`` and ``peaks_glare`` near 0.005 cd/m²; the old official PyTorch port
    omitted it).
    """
    p1, p2, p3, p4, p5, p6, p7 = _params(variant)
    y = _clamp(_values(y), PU21_L_MIN, PU21_L_MAX)
    yp = y ** p4
    v = p7 * (((p1 + p2 * yp) / (1.0 + p3 * yp)) ** p5 - p6)
    return _clamp(v, 0.0) if clamp_negative else v


def pu21_decode(v: Values, variant: str = "banding_glare") -> Values:
    """Inverse of :func:`pu21_encode` within the valid range (cd/m²; float64 for NumPy input, the tensor's dtype
    for a tensor). Both powers have exponents > 1, so the gradient is finite at the bottom of the range too."""
    p1, p2, p3, p4, p5, p6, p7 = _params(variant)
    vp = _clamp(_values(v) / p7 + p6, 0.0) ** (1.0 / p5)
    return (_clamp(vp - p1, 0.0) / (p2 - p3 * vp)) ** (1.0 / p4)


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Luminance of linear ``H x W x 3`` RGB (float64 ``H x W``), with the official PU21 weights."""
    rgb = np.asarray(rgb, dtype=np.float64)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"luminance() expects an H x W x 3 RGB array, got shape {rgb.shape}")
    return rgb @ np.asarray(LUMINANCE_WEIGHTS, dtype=np.float64)
