"""PSNR and SSIM with BasicSR semantics, on images in [0, 255] (H×W×C, RGB)."""
from __future__ import annotations

import cv2
import numpy as np

from DiffIR.utils.registry import METRIC_REGISTRY


def _prepare(img: np.ndarray, crop_border: int, test_y_channel: bool) -> np.ndarray:
    img = np.asarray(img, dtype=np.float64)
    if img.ndim == 2:
        img = img[..., None]
    if crop_border:
        img = img[crop_border:-crop_border, crop_border:-crop_border, ...]
    if test_y_channel and img.shape[2] == 3:
        # ITU-R BT.601 luma of RGB in [0, 255], as BasicSR's rgb2ycbcr(y_only=True).
        img = (16.0 + img @ np.array([65.481, 128.553, 24.966]) / 255.0)[..., None]
    return img


def _check(img: np.ndarray, img2: np.ndarray) -> None:
    if img.shape != img2.shape:
        raise ValueError(f"Image shapes differ: {img.shape} vs {img2.shape}")


@METRIC_REGISTRY.register()
def calculate_psnr(img: np.ndarray, img2: np.ndarray, crop_border: int = 0, test_y_channel: bool = False,
                   input_order: str = "HWC") -> float:
    """PSNR in dB with peak 255; ``inf`` for identical images."""
    _check(img, img2)
    a, b = _prepare(img, crop_border, test_y_channel), _prepare(img2, crop_border, test_y_channel)
    mse = np.mean((a - b) ** 2)
    if mse == 0:
        return float("inf")
    return float(10.0 * np.log10(255.0 ** 2 / mse))


def _ssim_channel(a: np.ndarray, b: np.ndarray) -> float:
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    kernel = cv2.getGaussianKernel(11, 1.5)
    window = np.outer(kernel, kernel.transpose())
    mu1 = cv2.filter2D(a, -1, window)[5:-5, 5:-5]
    mu2 = cv2.filter2D(b, -1, window)[5:-5, 5:-5]
    mu1_sq, mu2_sq, mu12 = mu1 ** 2, mu2 ** 2, mu1 * mu2
    s1 = cv2.filter2D(a ** 2, -1, window)[5:-5, 5:-5] - mu1_sq
    s2 = cv2.filter2D(b ** 2, -1, window)[5:-5, 5:-5] - mu2_sq
    s12 = cv2.filter2D(a * b, -1, window)[5:-5, 5:-5] - mu12
    ssim_map = ((2 * mu12 + c1) * (2 * s12 + c2)) / ((mu1_sq + mu2_sq + c1) * (s1 + s2 + c2))
    return float(ssim_map.mean())


@METRIC_REGISTRY.register()
def calculate_ssim(img: np.ndarray, img2: np.ndarray, crop_border: int = 0, test_y_channel: bool = False,
                   input_order: str = "HWC") -> float:
    """SSIM (Wang et al. 2004; 11×11 Gaussian window, σ 1.5), averaged over channels."""
    _check(img, img2)
    a, b = _prepare(img, crop_border, test_y_channel), _prepare(img2, crop_border, test_y_channel)
    return float(np.mean([_ssim_channel(a[..., c], b[..., c]) for c in range(a.shape[2])]))
