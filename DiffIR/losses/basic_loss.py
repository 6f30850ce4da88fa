"""Pixel losses (BasicSR semantics: ``loss_weight`` and ``reduction``)."""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from DiffIR.utils.errors import OptionError
from DiffIR.utils.registry import LOSS_REGISTRY

_REDUCTIONS = ("none", "mean", "sum")


class LossValueError(OptionError):
    """A bad value of the loss argument ``key``; :func:`DiffIR.losses.build_loss` names it with its option section."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"'{key}' {problem}")
        self.key, self.problem = key, problem


def check_choice(value: Any, choices: Sequence[str], key: str) -> str:
    """``value`` if it is one of ``choices``, else a :class:`LossValueError` naming ``key``."""
    if value not in choices:
        raise LossValueError(key, f"is {value!r}. Fix: use one of {', '.join(choices)}.")
    return value


def charbonnier(diff: torch.Tensor, eps: float) -> torch.Tensor:
    """``sqrt(diff² + eps)``: an L1 that is smooth at zero."""
    return torch.sqrt(diff * diff + eps)


def fp32_loss(forward: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Run a loss ``forward(pred, target, ...)`` in float32 with autocast off: power curves, FFTs and SSIM's
    variance differences lose too many digits in half precision."""
    @functools.wraps(forward)
    def wrapper(self: nn.Module, pred: torch.Tensor, target: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        with torch.autocast(device_type=pred.device.type, enabled=False):
            return forward(self, pred.float(), target.float(), *args, **kwargs)
    return wrapper


class _PixelLoss(nn.Module):
    def __init__(self, loss_weight: float = 1.0, reduction: str = "mean") -> None:
        super().__init__()
        check_choice(reduction, _REDUCTIONS, "reduction")
        self.loss_weight = float(loss_weight)
        self.reduction = reduction

    def _reduce(self, loss: torch.Tensor, weight: Optional[torch.Tensor]) -> torch.Tensor:
        if weight is not None:
            loss = loss * weight
        if self.reduction == "mean":
            loss = loss.mean()
        elif self.reduction == "sum":
            loss = loss.sum()
        return self.loss_weight * loss


@LOSS_REGISTRY.register()
class L1Loss(_PixelLoss):
    def forward(self, pred: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        if weight is None and self.reduction != "none":
            return self.loss_weight * F.l1_loss(pred, target, reduction=self.reduction)
        return self._reduce((pred - target).abs(), weight)


@LOSS_REGISTRY.register()
class MSELoss(_PixelLoss):
    def forward(self, pred: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        if weight is None and self.reduction != "none":
            return self.loss_weight * F.mse_loss(pred, target, reduction=self.reduction)
        return self._reduce((pred - target) ** 2, weight)


@LOSS_REGISTRY.register()
class CharbonnierLoss(_PixelLoss):
    """sqrt(diff² + eps): an L1 that is smooth at zero."""

    def __init__(self, loss_weight: float = 1.0, reduction: str = "mean", eps: float = 1e-12) -> None:
        super().__init__(loss_weight, reduction)
        self.eps = float(eps)

    def forward(self, pred: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self._reduce(charbonnier(pred - target, self.eps), weight)
