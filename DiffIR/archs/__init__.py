"""Networks. ``build_network(opt)`` turns a ``network_g``-style option dict into a module."""
from typing import Any, Dict

import torch.nn as nn

from DiffIR.utils.registry import ARCH_REGISTRY, build_from_registry

# Importing the modules registers their classes.
from DiffIR.archs import diffir_s1_arch  # noqa: F401,E402
from DiffIR.archs import diffir_s2_arch  # noqa: F401,E402


def build_network(opt: Dict[str, Any], where: str = "network_g") -> nn.Module:
    return build_from_registry(ARCH_REGISTRY, dict(opt), where)


__all__ = ["build_network", "ARCH_REGISTRY"]
