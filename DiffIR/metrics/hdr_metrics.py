"""The field's HDR fidelity metrics, on **linear** HDR images (H×W×3 RGB, float, in the GT files' units).

``img`` is the image under test, ``img2`` the reference (the ground truth): PSNR-μ and PSNR-L normalise by
statistics of the reference, as their official definitions do. The evaluation loop hands these functions the
network output and the GT after inverting the dataset's tone curve (see ``DiffIR.models.evaluation``); every
function here is tagged ``input_domain = "linear"`` for that purpose.

* ``calculate_pu21_psnr``: AIM 2025 ITM ranking metric. Each of R, G, B is PU21-encoded (``banding_glare``)
  as absolute cd/m², then ``10 log10(256² / MSE)`` over all pixels and channels (official ``pu21_metric.m``).
* ``calculate_pu21_ssim``: SSIM of PU21-encoded *luminance*, dynamic range 256 (official), Gaussian window
  σ 1.5 with population covariances (the closest match to MATLAB's ``ssim``).
* ``calculate_psnr_mu``: NTIRE-style μ-law PSNR (μ = 5000). Default ``norm: tanh_percentile`` =
  ``T_μ(tanh(x / p99(ref)))`` on the linear values (variant B of the reference notes); ``gamma: 2.24``
  reproduces the official NTIRE 2021 function on gamma-encoded data; ``max_clip`` (x / max(ref), clipped)
  and ``fixed`` (x / norm_value, unclipped) are the other published variants.
* ``calculate_psnr_l``: linear PSNR after dividing both images by the reference's maximum (NTIRE PSNR-L).

Absolute units: PU21 needs cd/m². ``lum_scale`` multiplies the file units first; the default 1.0 follows the
AIM 2025 convention that GT values are cd/m² with a peak of about 1000.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Iterable

import numpy as np

from DiffIR.metrics.mu_law import MU_LAW_MU, mu_law
from DiffIR.metrics.psnr_ssim import _check, _prepare
from DiffIR.metrics.pu21 import PU21_PARAMS, PU21_PEAK, luminance, pu21_encode
from DiffIR.utils.errors import DataError
from DiffIR.utils.registry import METRIC_REGISTRY


MU_NORMS = ("tanh_percentile", "max_clip", "fixed")
_EPS = 1e-12


def hdr_metric(choices: Dict[str, Iterable[str]]) -> Callable[[Callable], Callable]:
    """Register a metric that takes linear HDR inputs; ``choices`` lists the valid values of string options.

    ``DiffIR.metrics.check_metric_options`` reads both tags, so a bad value stops a run before any work.
    """

    def deco(fn: Callable) -> Callable:
        fn.input_domain = "linear"
        fn.option_choices = {k: tuple(v) for k, v in choices.items()}
        return METRIC_REGISTRY.register()(fn)

    return deco


def _linear_pair(img: np.ndarray, img2: np.ndarray, crop_border: int) -> tuple:
    _check(img, img2)
    a, b = _prepare(img, crop_border, False), _prepare(img2, crop_border, False)
    if a.shape[2] != 3:
        raise ValueError(f"HDR metrics expect H x W x 3 RGB images, got {a.shape[2]} channel(s)")
    return a, b


def _psnr(a: np.ndarray, b: np.ndarray, peak: float) -> float:
    mse = float(np.mean((a - b) ** 2))
    if mse == 0:
        return float("inf")
    return 10.0 * math.log10(peak * peak / mse)


@hdr_metric(choices={"pu21_type": PU21_PARAMS})
def calculate_pu21_psnr(img: np.ndarray, img2: np.ndarray, lum_scale: float = 1.0, pu21_type: str = "banding_glare",
                        peak: float = PU21_PEAK, test_y_channel: bool = False, crop_border: int = 0) -> float:
    """PU21-PSNR in dB: PU21-encode each RGB channel of ``lum_scale * x`` (cd/m²), PSNR with peak 256.

    ``test_y_channel: true`` scores PU21(luminance) instead ('PSNRY' of the official code). The fork of DiffIR
    used ``peak: 530`` (6.32 dB higher than the official value); the default is the official 256.
    """
    a, b = _linear_pair(img, img2, crop_border)
    if test_y_channel:
        a, b = luminance(a), luminance(b)
    s = float(lum_scale)
    return _psnr(pu21_encode(a * s, pu21_type), pu21_encode(b * s, pu21_type), float(peak))


@hdr_metric(choices={"pu21_type": PU21_PARAMS})
def calculate_pu21_ssim(img: np.ndarray, img2: np.ndarray, lum_scale: float = 1.0, pu21_type: str = "banding_glare",
                        data_range: float = PU21_PEAK, gaussian_weights: bool = True, crop_border: int = 0) -> float:
    """PU21-SSIM: SSIM of the PU21-encoded luminance of ``lum_scale * x`` with dynamic range 256.

    ``gaussian_weights: true`` (default) is MATLAB's ``ssim`` as in the official metric (11×11 Gaussian,
    σ 1.5, population covariances; borders cropped instead of padded, a small difference); ``false`` is
    scikit-image's default 7×7 uniform window.
    """
    from skimage.metrics import structural_similarity

    a, b = _linear_pair(img, img2, crop_border)
    need = 11 if gaussian_weights else 7
    if min(a.shape[:2]) < need:
        raise DataError(f"PU21-SSIM needs images of at least {need}x{need} pixels, got {a.shape[0]}x{a.shape[1]}")
    s = float(lum_scale)
    ya, yb = pu21_encode(luminance(a) * s, pu21_type), pu21_encode(luminance(b) * s, pu21_type)
    kwargs: Dict[str, Any] = {"data_range": float(data_range)}
    if gaussian_weights:
        kwargs.update(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    return float(structural_similarity(ya, yb, **kwargs))


@hdr_metric(choices={"norm": MU_NORMS})
def calculate_psnr_mu(img: np.ndarray, img2: np.ndarray, mu: float = MU_LAW_MU, norm: str = "tanh_percentile",
                      percentile: float = 99.0, norm_value: float = 1000.0, gamma: float = 1.0,
                      crop_border: int = 0) -> float:
    """μ-law PSNR (peak 1) of ``img`` against the reference ``img2``.

    Both are raised to ``gamma`` first (1: already linear; 2.24: the official NTIRE 2021 data). Then
    ``tanh_percentile``: ``tanh(x / percentile(ref, 99))`` (NTIRE); ``max_clip``: ``clip(x / max(ref), 0, 1)``;
    ``fixed``: ``x / norm_value`` with no clip. Finally ``T_μ`` and PSNR with peak 1.
    """
    a, b = _linear_pair(img, img2, crop_border)
    if gamma != 1.0:
        a, b = np.maximum(a, 0.0) ** gamma, np.maximum(b, 0.0) ** gamma
    if norm == "tanh_percentile":
        n = max(float(np.percentile(b, percentile)), _EPS)
        a, b = np.tanh(a / n), np.tanh(b / n)
    elif norm == "max_clip":
        n = max(float(b.max()), _EPS)
        a, b = np.clip(a / n, 0.0, 1.0), np.clip(b / n, 0.0, 1.0)
    elif norm == "fixed":
        a, b = a / float(norm_value), b / float(norm_value)
    else:
        raise ValueError(f"calculate_psnr_mu: unknown norm '{norm}'; use one of {', '.join(MU_NORMS)}")
    return _psnr(mu_law(a, float(mu)), mu_law(b, float(mu)), 1.0)


@hdr_metric(choices={})
def calculate_psnr_l(img: np.ndarray, img2: np.ndarray, crop_border: int = 0) -> float:
    """PSNR-L (NTIRE): linear PSNR, peak 1, after dividing both images by the reference's maximum."""
    a, b = _linear_pair(img, img2, crop_border)
    n = max(float(b.max()), _EPS)
    return _psnr(a / n, b / n, 1.0)
