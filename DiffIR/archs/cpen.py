"""CPEN: the compact IR-prior extraction network of DiffIR.

It turns one or more images into the IPR vector that conditions the DIRformer. Stage 1 (``CPEN_S1``) sees the
LQ and the GT (PixelUnshuffle(4) of each, 2×48 = 96 channels); a stage-2 CPEN sees only the LQ (48 channels)
and can be built from the same :class:`CPEN` class with ``in_channels=48``. Module names follow the official
code (``E.<i>``, ``mlp.<i>``, ResBlocks with ``body.0``/``body.2``) so that checkpoints load unchanged.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["ResBlock", "CPEN", "CPEN_S1"]

_SLOPE = 0.1  # LeakyReLU negative slope used everywhere in the official CPEN and its ResBlocks


class ResBlock(nn.Module):
    """EDSR-style residual block ``x + conv(lrelu(conv(x)))`` (3×3 convs with bias, LeakyReLU(0.1), no scaling).

    The official DiffIR variant uses LeakyReLU(0.1) where EDSR uses ReLU; keys are ``body.0`` and ``body.2``.
    """

    def __init__(self, n_feats: int, kernel_size: int = 3, bias: bool = True) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.body = nn.Sequential(
            nn.Conv2d(n_feats, n_feats, kernel_size, padding=pad, bias=bias),
            nn.LeakyReLU(_SLOPE, inplace=True),
            nn.Conv2d(n_feats, n_feats, kernel_size, padding=pad, bias=bias),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = self.body(x)
        res += x  # in place on a fresh conv output; conv backward does not need its output
        return res


class CPEN(nn.Module):
    """Prior extractor: PixelUnshuffle(4) each input image, concatenate, conv trunk, global pool, MLP.

    ``in_channels`` is the channel count *after* unshuffling and concatenation (16 × total image channels):
    96 for stage 1 (LQ + GT RGB), 48 for a stage-2 LQ-only CPEN. The output has ``4 * n_feats`` features and
    ends with a LeakyReLU(0.1), as in the official network.
    """

    def __init__(self, in_channels: int, n_feats: int = 64, n_encoder_res: int = 6, downscale: int = 4) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.downscale = downscale
        self.out_features = n_feats * 4
        layers = [nn.Conv2d(in_channels, n_feats, kernel_size=3, padding=1), nn.LeakyReLU(_SLOPE, inplace=True)]
        layers += [ResBlock(n_feats, kernel_size=3) for _ in range(n_encoder_res)]
        layers += [
            nn.Conv2d(n_feats, n_feats * 2, kernel_size=3, padding=1),
            nn.LeakyReLU(_SLOPE, inplace=True),
            nn.Conv2d(n_feats * 2, n_feats * 2, kernel_size=3, padding=1),
            nn.LeakyReLU(_SLOPE, inplace=True),
            nn.Conv2d(n_feats * 2, n_feats * 4, kernel_size=3, padding=1),
            nn.LeakyReLU(_SLOPE, inplace=True),
            nn.AdaptiveAvgPool2d(1),
        ]
        self.E = nn.Sequential(*layers)
        self.mlp = nn.Sequential(
            nn.Linear(n_feats * 4, n_feats * 4),
            nn.LeakyReLU(_SLOPE, inplace=True),
            nn.Linear(n_feats * 4, n_feats * 4),
            nn.LeakyReLU(_SLOPE, inplace=True),
        )

    def forward(self, *images: torch.Tensor) -> torch.Tensor:
        """Return the IPR ``(B, 4*n_feats)`` of the given images (concatenated in argument order)."""
        if not images:
            raise ValueError("CPEN needs at least one image")
        r = self.downscale
        for i, im in enumerate(images):
            if im.dim() != 4 or im.shape[-2] % r or im.shape[-1] % r:
                raise ValueError(
                    f"CPEN input {i} must be (B, C, H, W) with H and W multiples of {r}, got {tuple(im.shape)}"
                )
        x = torch.cat([F.pixel_unshuffle(im, r) for im in images], dim=1)
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"CPEN expects {self.in_channels} channels after PixelUnshuffle({r}) and concatenation, "
                f"got {x.shape[1]} from image shapes {[tuple(im.shape) for im in images]}"
            )
        return self.mlp(self.E(x).flatten(1))


class CPEN_S1(CPEN):  # noqa: N801 (name used in the DiffIR paper/code)
    """Stage-1 CPEN: sees the LQ and the GT (concatenated in that order); 96 = 2 × 3 × 4² channels for RGB."""

    def __init__(self, n_feats: int = 64, n_encoder_res: int = 6, in_channels: int = 96) -> None:
        super().__init__(in_channels=in_channels, n_feats=n_feats, n_encoder_res=n_encoder_res)

    def forward(self, lq: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """Return the IPR (B, 4*n_feats) extracted from the (LQ, GT) pair."""
        if lq.shape != gt.shape:
            raise ValueError(f"lq and gt must have the same shape, got {tuple(lq.shape)} and {tuple(gt.shape)}")
        return super().forward(lq, gt)
