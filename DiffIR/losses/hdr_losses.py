"""Losses for LDR→HDR training beside the pixel losses: in the metric's PU21 domain, in frequency, and SSIM.

* ``PU21Loss``: the ranking metric of AIM 2025 (PU21-PSNR) measures in PU21 space, and Refusion-HDR trains there;
  this loss goes back from the network domain to linear HDR and compares PU21 encodings, so it needs the training
  set's tone curve (``needs_tone_domain``; the model calls :meth:`PU21Loss.set_tone_domain`).
* ``FFTLoss``: the frequency term of BITM's first stage (Charbonnier + FFT), which sharpens texture that a pixel
  L1 blurs.
* ``SSIMLoss``: ``1 − SSIM`` in the network domain (BITM's second stage).

All run in float32 with autocast off (:func:`fp32_loss`).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from DiffIR.losses.basic_loss import _PixelLoss, charbonnier, check_choice, fp32_loss
from DiffIR.metrics.pu21 import LUMINANCE_WEIGHTS, pu21_encode
from DiffIR.utils.errors import OptionError
from DiffIR.utils.registry import LOSS_REGISTRY
from DiffIR.utils.tone_mapping import TONE_CURVES, inverse_tone_curve

__all__ = ["PU21Loss", "FFTLoss", "SSIMLoss", "ssim_map"]


def _clamp_straight_through(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """``x`` clamped to [lo, hi] in value, with the gradient of the clamped point passed through, so an output
    outside the range is still pulled toward its target instead of getting no gradient."""
    return x + (x.clamp(lo, hi) - x).detach()


@LOSS_REGISTRY.register()
class PU21Loss(_PixelLoss):
    """L1 (or Charbonnier) between the PU21 (banding_glare) encodings of output and GT in linear units, divided by
    PU21(hdr_max) so the values are about [0, 1].

    The output is clamped to [0, 1] in the network domain first, as at inference (straight through, see
    :func:`_clamp_straight_through`); the GT only at 0, as the metrics see it. ``channels``: ``rgb`` (each channel
    encoded, as PU21-PSNR does) or ``luminance`` (BT.709 Y, as PU21-SSIM does). ``weight``: per-pixel weights
    (B, 1 or C, H, W), e.g. the region weights.
    """

    #: the model calls :meth:`set_tone_domain` with the training set's ``tone_curve`` and ``hdr_max``
    needs_tone_domain = True

    def __init__(self, loss_weight: float = 1.0, reduction: str = "mean", criterion: str = "l1",
                 channels: str = "rgb", eps: float = 1e-12) -> None:
        super().__init__(loss_weight, reduction)
        self.criterion = check_choice(criterion, ("l1", "charbonnier"), "criterion")
        self.channels = check_choice(channels, ("rgb", "luminance"), "channels")
        self.eps = float(eps)
        self.set_tone_domain("log", 1000.0)

    def set_tone_domain(self, curve: str, hdr_max: float) -> None:
        """The network domain's tone curve and ``hdr_max`` (the training set's), to go back to linear HDR."""
        if curve not in TONE_CURVES:
            raise OptionError(f"PU21Loss: 'datasets:train:tone_curve' is {curve!r}. Fix: use one of "
                              f"{', '.join(TONE_CURVES)}.")
        if not float(hdr_max) > 0:
            raise OptionError(f"PU21Loss: 'datasets:train:hdr_max' is {hdr_max!r}. Fix: use a number > 0, e.g. 1000.")
        self.curve, self.hdr_max = curve, float(hdr_max)
        self.scale = float(pu21_encode(self.hdr_max))

    def encode(self, x: torch.Tensor, clip_top: bool) -> torch.Tensor:
        """Network-domain ``B x C x H x W`` → PU21 / PU21(hdr_max) (``B x 1 x H x W`` for ``luminance``)."""
        x = _clamp_straight_through(x, 0.0, 1.0) if clip_top else x.clamp_min(0.0)
        linear = inverse_tone_curve(x, self.curve, self.hdr_max)
        if self.channels == "luminance":
            if linear.shape[1] != 3:
                raise ValueError(f"PU21Loss channels: luminance needs RGB images, got {linear.shape[1]} channels")
            w = torch.tensor(LUMINANCE_WEIGHTS, dtype=linear.dtype, device=linear.device).view(1, 3, 1, 1)
            linear = (linear * w).sum(dim=1, keepdim=True)
        return pu21_encode(linear) / self.scale

    @fp32_loss
    def forward(self, pred: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        diff = self.encode(pred, clip_top=True) - self.encode(target.detach(), clip_top=False)
        loss = charbonnier(diff, self.eps) if self.criterion == "charbonnier" else diff.abs()
        return self._reduce(loss, weight)


@LOSS_REGISTRY.register()
class FFTLoss(_PixelLoss):
    """L1 between the real and imaginary parts of ``rfft2`` (norm ``ortho``) of output and GT (no pixel weights:
    a frequency mixes every pixel)."""

    @fp32_loss
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        diff = torch.fft.rfft2(pred, norm="ortho") - torch.fft.rfft2(target, norm="ortho")
        return self._reduce(torch.view_as_real(diff).abs(), None)


def _gaussian_kernel(size: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    """The normalised 1-D Gaussian of ``size`` taps in ``like``'s dtype and device."""
    taps = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2.0
    g = torch.exp(-(taps * taps) / (2.0 * sigma * sigma))
    return g / g.sum()


def ssim_map(x: torch.Tensor, y: torch.Tensor, window_size: int = 11, sigma: float = 1.5,
             data_range: float = 1.0) -> torch.Tensor:
    """Per-pixel, per-channel SSIM of ``B x C x H x W`` images (Gaussian window, population covariances), over the
    positions where the whole window fits (``H − window_size + 1`` rows): what skimage's ``structural_similarity``
    averages with ``gaussian_weights=True, use_sample_covariance=False``."""
    if min(x.shape[-2:]) < window_size:
        raise OptionError(f"SSIM needs images of at least {window_size} x {window_size} pixels, got "
                          f"{tuple(x.shape[-2:])}")
    c = x.shape[1]
    g = _gaussian_kernel(window_size, sigma, x)
    rows, cols = g.view(1, 1, -1, 1).expand(c, 1, -1, 1), g.view(1, 1, 1, -1).expand(c, 1, 1, -1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, rows, groups=c), cols, groups=c)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    return ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))


@LOSS_REGISTRY.register()
class SSIMLoss(_PixelLoss):
    """``1 − SSIM`` in the network domain (Gaussian window 11, σ 1.5, data range 1, per channel); ``mean`` gives
    1 − the mean SSIM, ``none`` the per-pixel map (smaller than the image by 10 pixels, so no pixel weights)."""

    @fp32_loss
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self._reduce(1.0 - ssim_map(pred, target), None)
