"""The highlight gate: the network may change only the pixels whose LDR is (nearly) clipped.

Measured on real photographs it has not seen (``benchmarks/bench_quality.py``), a DIRformer trained on a few
photographs recovers clipped highlights in a way that transfers, while its changes to the well-exposed pixels —
where the inverse tone mapping is already right but for JPEG and 8-bit error — make them worse. As HDR-CNN
(Eilertsen et al. 2017) does, the output is blended with the input by the LDR's brightest channel ``m``::

    out = lq + α·(G(lq) − lq),    α = clamp((m − threshold) / (1 − threshold), 0, 1)

in the network domain, so below ``threshold`` the output *is* the inverse tone mapping. By default the gate acts
in eval mode only (validation, ``test.py``, inference): training still fits every pixel, which measured better on
held-out photographs than training through the gate (``in_training: true``), where the network, free of the
well-exposed pixels, learnt highlight boosts that overshot on an unseen sky by 3 dB. ``m`` is recovered from the
network input with the image's dgain/gamma and the tone domain given here (which must be the datasets'). The gate
has no parameters or buffers: official checkpoints load unchanged, and it is off unless asked for.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import torch
import torch.nn as nn

from DiffIR.utils.errors import MissingInputError, OptionError
from DiffIR.config.schema import TONE_DOMAIN_DEFAULTS
from DiffIR.utils.tone_mapping import TONE_CURVES, network_input_to_ldr

__all__ = ["HighlightGate", "build_highlight_gate", "GATE_DEFAULTS"]

#: keys of the ``highlight_gate`` network option and their defaults (the tone domain of the shipped files)
GATE_DEFAULTS: Dict[str, Any] = {"threshold": 0.7, "in_training": False, **TONE_DOMAIN_DEFAULTS}


class HighlightGate(nn.Module):
    """``forward(lq, out, cond)`` → ``lq + α·(out − lq)`` (in training mode only with ``in_training``); see the
    module docstring."""

    def __init__(self, threshold: float = 0.7, tone_curve: str = "log", hdr_max: float = 1000.0,
                 lq_linearize: bool = True, in_training: bool = False) -> None:
        super().__init__()
        self.in_training = bool(in_training)
        self.threshold, self.tone_curve = float(threshold), str(tone_curve)
        self.hdr_max, self.lq_linearize = float(hdr_max), bool(lq_linearize)

    def config(self) -> Dict[str, Any]:
        """The settings that shape the gate's eval-mode output, as plain data (checkpoints record them: the
        state_dict cannot show a gate)."""
        return {"threshold": self.threshold, "tone_curve": self.tone_curve, "hdr_max": self.hdr_max,
                "lq_linearize": self.lq_linearize}

    def extra_repr(self) -> str:
        return (f"threshold={self.threshold}, tone_curve={self.tone_curve}, hdr_max={self.hdr_max}, "
                f"lq_linearize={self.lq_linearize}, in_training={self.in_training}")

    def weight(self, lq: torch.Tensor, cond: Optional[torch.Tensor]) -> torch.Tensor:
        """α (B x 1 x H x W, float32) for the network input ``lq`` of images with ``cond`` = [dgain, gamma]."""
        x = lq.float().clamp(0.0, 1.0)
        if self.lq_linearize:
            if cond is None:
                raise MissingInputError("network_g:highlight_gate needs each image's dgain and gamma to find its "
                                        "clipped pixels: give the dataset a dataroot_dgain (inference: --dgain), or "
                                        "remove highlight_gate from network_g")
            x = network_input_to_ldr(x, cond[:, 0].float(), cond[:, 1].float(), self.hdr_max, self.tone_curve)
        m = x.clamp(0.0, 1.0).amax(dim=1, keepdim=True)
        return ((m - self.threshold) / (1.0 - self.threshold)).clamp(0.0, 1.0)

    def forward(self, lq: torch.Tensor, out: torch.Tensor, cond: Optional[torch.Tensor]) -> torch.Tensor:
        if self.training and not self.in_training:
            return out
        alpha = self.weight(lq, cond).to(out.dtype)
        return lq.to(out.dtype) + alpha * (out - lq.to(out.dtype))


def build_highlight_gate(opt: Optional[Mapping[str, Any]], owner: str) -> Optional[HighlightGate]:
    """The gate of a ``highlight_gate`` network option (``None``/``false``: none; ``true``: the defaults)."""
    if opt is None or opt is False:
        return None
    if opt is True:
        opt = {}
    if not isinstance(opt, Mapping):
        raise OptionError(f"{owner}: highlight_gate must be a mapping such as {{threshold: 0.7}}, true, or null; "
                          f"got {opt!r}")
    unknown = sorted(set(opt) - set(GATE_DEFAULTS))
    if unknown:
        raise OptionError(f"{owner}: unknown highlight_gate key(s) {', '.join(unknown)}; the keys are "
                          f"{', '.join(GATE_DEFAULTS)}")
    values = {**GATE_DEFAULTS, **opt}
    try:
        threshold, hdr_max = float(values["threshold"]), float(values["hdr_max"])
    except (TypeError, ValueError):
        raise OptionError(f"{owner}: highlight_gate threshold and hdr_max must be numbers, got "
                          f"{values['threshold']!r} and {values['hdr_max']!r}") from None
    if not 0.0 <= threshold < 1.0:
        raise OptionError(f"{owner}: highlight_gate threshold must be in [0, 1) (the LDR level where the ramp "
                          f"starts), got {threshold}")
    if hdr_max <= 0.0:
        raise OptionError(f"{owner}: highlight_gate hdr_max must be positive, got {hdr_max}")
    if values["tone_curve"] not in TONE_CURVES:
        raise OptionError(f"{owner}: highlight_gate tone_curve {values['tone_curve']!r} is not one of "
                          f"{', '.join(TONE_CURVES)}")
    for key in ("lq_linearize", "in_training"):
        if not isinstance(values[key], bool):
            raise OptionError(f"{owner}: highlight_gate {key} must be true or false, got {values[key]!r}")
    return HighlightGate(threshold, values["tone_curve"], hdr_max, values["lq_linearize"], values["in_training"])
