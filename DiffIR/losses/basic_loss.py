"""Pixel losses (BasicSR semantics: ``loss_weight`` and ``reduction``)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from DiffIR.utils.registry import LOSS_REGISTRY

_REDUCTIONS = ("none", "mean", "sum")


class _PixelLoss(nn.Module):
    def __init__(self, loss_weight: float = 1.0, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"Unsupported reduction '{reduction}'; use one of {_REDUCTIONS}")
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
        return self._reduce(torch.sqrt((pred - target) ** 2 + self.eps), weight)
