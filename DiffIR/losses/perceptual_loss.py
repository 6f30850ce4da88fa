"""VGG perceptual/style loss. Needs the optional ``torchvision`` extra and locally present ImageNet weights."""
from __future__ import annotations

import os
from typing import Dict, Optional

import torch
import torch.nn as nn

from DiffIR.utils.errors import OptionError
from DiffIR.utils.registry import LOSS_REGISTRY

# Layer names of VGG19's ``features`` in order; "conv3_4" etc. index into it (BasicSR naming).
_VGG19_NAMES = [
    "conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1",
    "conv2_1", "relu2_1", "conv2_2", "relu2_2", "pool2",
    "conv3_1", "relu3_1", "conv3_2", "relu3_2", "conv3_3", "relu3_3", "conv3_4", "relu3_4", "pool3",
    "conv4_1", "relu4_1", "conv4_2", "relu4_2", "conv4_3", "relu4_3", "conv4_4", "relu4_4", "pool4",
    "conv5_1", "relu5_1", "conv5_2", "relu5_2", "conv5_3", "relu5_3", "conv5_4", "relu5_4", "pool5",
]
_VGG19_FILE = "vgg19-dcbb9e9d.pth"  # torchvision's IMAGENET1K_V1 file name


def _vgg19_features(weights_path: Optional[str]) -> nn.Sequential:
    try:
        import torchvision
    except ImportError:
        raise OptionError("perceptual_opt (PerceptualLoss) needs torchvision: install the extra with "
                          "`pip install -e .[perceptual]` next to a torch build that torchvision supports, "
                          "or remove perceptual_opt from the train section.") from None
    path = weights_path or os.path.join(torch.hub.get_dir(), "checkpoints", _VGG19_FILE)
    if not os.path.isfile(path):
        raise OptionError(
            f"perceptual_opt: VGG19 ImageNet weights not found at '{path}'. This program never downloads weights. "
            "On a machine with internet run `python -c \"import torchvision; torchvision.models.vgg19(weights='IMAGENET1K_V1')\"` "
            f"(it stores {_VGG19_FILE} in the torch hub cache) and copy the file, or set perceptual_opt:vgg_weights_path, "
            "or remove perceptual_opt.")
    net = torchvision.models.vgg19(weights=None)
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net.features


class VGGFeatureExtractor(nn.Module):
    def __init__(self, layer_names, use_input_norm: bool = True, range_norm: bool = False,
                 weights_path: Optional[str] = None) -> None:
        super().__init__()
        unknown = [n for n in layer_names if n not in _VGG19_NAMES]
        if unknown:
            raise OptionError(f"perceptual_opt:layer_weights: unknown VGG19 layer(s) {unknown}; valid: {_VGG19_NAMES}")
        last = max(_VGG19_NAMES.index(n) for n in layer_names)
        features = _vgg19_features(weights_path)
        self.layers = nn.ModuleDict()
        self.names = _VGG19_NAMES[: last + 1]
        self.body = nn.Sequential(*list(features.children())[: last + 1])
        self.wanted = set(layer_names)
        self.use_input_norm = use_input_norm
        self.range_norm = range_norm
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        for p in self.parameters():
            p.requires_grad = False

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        if self.range_norm:
            x = (x + 1) / 2
        if self.use_input_norm:
            x = (x - self.mean) / self.std
        out = {}
        for name, layer in zip(self.names, self.body):
            x = layer(x)
            if name in self.wanted:
                out[name] = x
        return out


@LOSS_REGISTRY.register()
class PerceptualLoss(nn.Module):
    """Weighted VGG19 feature distance (+ optional Gram-matrix style loss); returns ``(percep, style)``."""

    def __init__(self, layer_weights: Dict[str, float], vgg_type: str = "vgg19", use_input_norm: bool = True,
                 range_norm: bool = False, perceptual_weight: float = 1.0, style_weight: float = 0.0,
                 criterion: str = "l1", vgg_weights_path: Optional[str] = None) -> None:
        super().__init__()
        if vgg_type != "vgg19":
            raise OptionError(f"perceptual_opt:vgg_type '{vgg_type}' is not supported; use vgg19")
        if criterion not in ("l1", "l2", "fro"):
            raise OptionError(f"perceptual_opt:criterion '{criterion}' is not supported; use l1, l2 or fro")
        self.layer_weights = dict(layer_weights)
        self.perceptual_weight = float(perceptual_weight)
        self.style_weight = float(style_weight)
        self.criterion_type = criterion
        self.vgg = VGGFeatureExtractor(list(self.layer_weights), use_input_norm, range_norm, vgg_weights_path)

    def _dist(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.criterion_type == "fro":
            return torch.norm(a - b, p="fro")
        if self.criterion_type == "l2":
            return nn.functional.mse_loss(a, b)
        return nn.functional.l1_loss(a, b)

    @staticmethod
    def _gram(x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        f = x.view(n, c, h * w)
        return f.bmm(f.transpose(1, 2)) / (c * h * w)

    def forward(self, x: torch.Tensor, gt: torch.Tensor):
        fx, fg = self.vgg(x), self.vgg(gt.detach())
        percep = style = None
        if self.perceptual_weight > 0:
            percep = sum(self._dist(fx[k], fg[k]) * w for k, w in self.layer_weights.items()) * self.perceptual_weight
        if self.style_weight > 0:
            style = sum(self._dist(self._gram(fx[k]), self._gram(fg[k])) * w
                        for k, w in self.layer_weights.items()) * self.style_weight
        return percep, style
