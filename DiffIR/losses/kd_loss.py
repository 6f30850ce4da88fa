"""Knowledge-distillation loss of DiffIR stage 2: how far the generated prior (IPR) is from the stage-1 prior."""
from __future__ import annotations

from typing import Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from DiffIR.utils.registry import LOSS_REGISTRY

IPRs = Union[torch.Tensor, Sequence[torch.Tensor]]


def _as_list(x: IPRs) -> Sequence[torch.Tensor]:
    return [x] if isinstance(x, torch.Tensor) else x


@LOSS_REGISTRY.register()
class KDLoss(nn.Module):
    """Distance between student (stage-2) and teacher (stage-1) IPR vectors, both (B, D).

    Returns two terms, each summed over the given pairs and multiplied by ``loss_weight`` (official semantics):

    * ``kl``: KL(softmax(teacher/T) ‖ softmax(student/T)), ``batchmean`` reduction, T = ``temperature``;
    * ``l1``: mean absolute difference.

    The teacher is detached in both. The official stage-2 model optimises only ``l1`` and logs ``kl``.
    """

    def __init__(self, loss_weight: float = 1.0, temperature: float = 0.15) -> None:
        super().__init__()
        if not float(temperature) > 0:
            raise ValueError(f"KDLoss temperature must be > 0, got {temperature}")
        self.loss_weight = float(loss_weight)
        self.temperature = float(temperature)

    def forward(self, teacher: IPRs, student: IPRs) -> Tuple[torch.Tensor, torch.Tensor]:
        """``teacher``/``student``: a (B, D) tensor each, or equally long lists of them (official call style)."""
        teacher, student = _as_list(teacher), _as_list(student)
        if len(teacher) != len(student) or not teacher:
            raise ValueError(f"KDLoss needs as many teacher as student IPRs (>= 1), got {len(teacher)} and {len(student)}")
        kl = l1 = 0
        for t, s in zip(teacher, student):
            if t.shape != s.shape or t.dim() != 2:
                raise ValueError(f"KDLoss compares (B, D) IPRs of equal shape, got {tuple(t.shape)} and {tuple(s.shape)}")
            t = t.detach()
            kl = kl + F.kl_div(F.log_softmax(s / self.temperature, dim=1), F.softmax(t / self.temperature, dim=1),
                               reduction="batchmean")
            l1 = l1 + F.l1_loss(s, t)
        return self.loss_weight * kl, self.loss_weight * l1
