"""Per-pixel loss weights for what inverse tone mapping cannot restore: clipped highlights and crushed shadows.

Where the LDR is clipped (or nearly) the input carries no information on the HDR value, and in deep shadows it is
quantised to a few 8-bit levels: these are the pixels where a model can beat the plain inverse tone mapping, and
they are few, so a plain mean loss hardly sees them. ``train.region_weights`` weighs them up::

    w = 1 + (highlight − 1)·clamp((m − ht) / (1 − ht), 0, 1) + (shadow − 1)·clamp((st − m) / st, 0, 1)

with ``m`` the brightest channel of the LDR in [0, 1] (recovered from the network input with the image's
dgain/gamma and the training set's tone curve), ``ht``/``st`` the thresholds; ``w`` is then divided by its batch
mean, so the loss keeps its scale and the learning rate its meaning.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Tuple

import torch

from DiffIR.utils.errors import MissingInputError, OptionError
from DiffIR.config.schema import region_weight_values, tone_domain
from DiffIR.utils.tone_mapping import TONE_CURVES, network_input_to_ldr

__all__ = ["RegionWeights", "training_tone_domain"]

def training_tone_domain(opt: Mapping[str, Any]) -> Tuple[str, float, bool]:
    """``(tone_curve, hdr_max, lq_linearize)`` of ``datasets:train`` (the dataset's defaults where unset): the
    network domain that training losses and weights must invert."""
    domain = tone_domain((opt.get("datasets") or {}).get("train"))
    return domain["tone_curve"], domain["hdr_max"], domain["lq_linearize"]


class RegionWeights:
    """``train.region_weights``: see the module docstring. Built once per model from the options; the keys and
    their defaults are :data:`DiffIR.config.schema.REGION_WEIGHTS`."""

    def __init__(self, opt: Optional[Mapping[str, Any]], tone_curve: str = "log", hdr_max: float = 1000.0,
                 lq_linearize: bool = True, where: str = "train:region_weights") -> None:
        values = region_weight_values(opt, where)
        if tone_curve not in TONE_CURVES:
            raise OptionError(f"'datasets:train:tone_curve' is {tone_curve!r}. Fix: use one of "
                              f"{', '.join(TONE_CURVES)}.")
        self.highlight, self.shadow = values["highlight"], values["shadow"]
        self.highlight_threshold, self.shadow_threshold = values["highlight_threshold"], values["shadow_threshold"]
        self.tone_curve, self.hdr_max, self.lq_linearize = tone_curve, float(hdr_max), bool(lq_linearize)
        self.where = where

    def ldr_level(self, lq: torch.Tensor, cond: Optional[torch.Tensor]) -> torch.Tensor:
        """The brightest channel of the LDR behind the network input ``lq`` (B x 1 x H x W, in [0, 1])."""
        if self.lq_linearize:
            if cond is None:
                raise MissingInputError(f"{self.where} needs each image's dgain and gamma to recover its LDR from the "
                                        "network input: give the training set a dataroot_dgain, or set "
                                        "datasets:train:lq_linearize: false")
            lq = network_input_to_ldr(lq.float().clamp(0.0, 1.0), cond[:, 0], cond[:, 1], self.hdr_max,
                                      self.tone_curve)
        return lq.float().clamp(0.0, 1.0).amax(dim=1, keepdim=True)

    @torch.no_grad()
    def __call__(self, lq: torch.Tensor, cond: Optional[torch.Tensor]) -> torch.Tensor:
        """Weights (B x 1 x H x W, batch mean 1) for the network inputs ``lq`` with conditions ``cond`` (B x 2)."""
        m = self.ldr_level(lq, cond)
        ht, st = self.highlight_threshold, self.shadow_threshold
        w = (1.0 + (self.highlight - 1.0) * ((m - ht) / (1.0 - ht)).clamp(0.0, 1.0)
             + (self.shadow - 1.0) * ((st - m) / st).clamp(0.0, 1.0))
        return w / w.mean()
