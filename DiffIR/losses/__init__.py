"""Losses. ``build_loss(opt, where)`` builds one from a ``*_opt`` option block."""
from typing import Any, Dict

import torch.nn as nn

from DiffIR.losses import basic_loss, kd_loss, perceptual_loss  # noqa: F401  (registers the classes)
from DiffIR.utils.registry import LOSS_REGISTRY, build_from_registry


def build_loss(opt: Dict[str, Any], where: str = "train:pixel_opt") -> nn.Module:
    return build_from_registry(LOSS_REGISTRY, dict(opt), where)


__all__ = ["build_loss", "LOSS_REGISTRY"]
