"""HDR extension shared by both DiffIR stages: an IPR offset computed from each image's camera metadata.

The LDR of an HDR pair depends on its digital gain and gamma (``ldr = clip(hdr/hdr_max·dgain)^(1/gamma)``),
so they are useful side information for the prior. The embedding maps ``[log(dgain), gamma]`` to an offset
that is added to the IPR. Its last layer starts at zero: switching it on leaves a network's function unchanged
until it is trained, and checkpoints without it still load (non-strictly, only ``cond_embed.*`` missing).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from DiffIR.utils.errors import MissingInputError

__all__ = ["DgainEmbedding"]

_HIDDEN = 64


class DgainEmbedding(nn.Sequential):
    """``[dgain, gamma]`` (B, 2) → IPR offset (B, ipr_dim). Keys ``0.*`` and ``2.*`` (a plain Sequential).

    ``owner`` names the network in error messages.
    """

    def __init__(self, ipr_dim: int, hidden: int = _HIDDEN, owner: str = "the network") -> None:
        super().__init__(nn.Linear(2, hidden), nn.LeakyReLU(0.1, inplace=True), nn.Linear(hidden, ipr_dim))
        nn.init.zeros_(self[2].weight)
        nn.init.zeros_(self[2].bias)
        self.owner = owner

    def forward(self, cond: Optional[torch.Tensor], like: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """The offset for ``cond``, on ``like``'s device and dtype (``like`` is the (B, ipr_dim) IPR)."""
        if cond is None:
            raise MissingInputError(f"{self.owner} was built with dgain_cond=True, so forward() needs cond=(B, 2) "
                                    "[dgain, gamma]")
        batch = like.shape[0]
        if cond.dim() != 2 or cond.shape != (batch, 2):
            raise ValueError(f"cond must be a ({batch}, 2) tensor of [dgain, gamma], got shape {tuple(cond.shape)}")
        cond = cond.to(device=like.device, dtype=like.dtype)
        dgain, gamma = cond.unbind(1)  # log: dgain is a multiplicative exposure gain
        return super().forward(torch.stack([torch.log(dgain.clamp_min(1e-8)), gamma], dim=1))
