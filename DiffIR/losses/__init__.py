"""Losses. ``build_loss(opt, where)`` builds one from a ``*_opt`` option block."""
from typing import Any, Dict

import torch.nn as nn

from DiffIR.losses import basic_loss, hdr_losses, kd_loss, perceptual_loss  # noqa: F401  (registers the classes)
from DiffIR.losses.basic_loss import LossValueError
from DiffIR.utils.errors import OptionError
from DiffIR.utils.registry import LOSS_REGISTRY, build_from_registry


def build_loss(opt: Dict[str, Any], where: str = "train:pixel_opt") -> nn.Module:
    """The loss of the option section ``where``; a bad value (a ValueError of the constructor) becomes an
    :class:`OptionError` naming the section."""
    try:
        return build_from_registry(LOSS_REGISTRY, dict(opt), where)
    except LossValueError as e:  # an OptionError without the section: named here
        raise OptionError(f"'{where}:{e.key}' {e.problem}") from None
    except OptionError:
        raise
    except ValueError as e:
        raise OptionError(f"{where}: {e}") from None


__all__ = ["build_loss", "LOSS_REGISTRY"]
