"""DiffIRS1: stage-1 DiffIR network (DIRformer ``G`` + prior extractor ``E`` that sees LQ and GT).

Checkpoint-compatible with the official ``DiffIRS1`` (same constructor arguments and defaults, same 536
``state_dict`` entries in the same order for the official configuration). One optional HDR extension:
``dgain_cond=True`` adds a small MLP ``cond_embed`` that maps the per-image camera metadata
``[log(dgain), gamma]`` to an IPR offset. Its last layer starts at zero, so switching it on leaves the network's
function unchanged until it is trained, and official checkpoints still load (non-strictly, only the
``cond_embed.*`` keys missing).
"""
from __future__ import annotations

from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from DiffIR.archs.cpen import CPEN_S1
from DiffIR.archs.dgain_embed import DgainEmbedding
from DiffIR.archs.highlight_gate import build_highlight_gate
from DiffIR.archs.dirformer import DIRformer, check_spatial_multiple
from DiffIR.utils.registry import ARCH_REGISTRY

__all__ = ["DiffIRS1"]

_N_FEATS = 64  # hard-coded in the official DiffIRS1; the IPR dimension is 4 * n_feats = 256


@ARCH_REGISTRY.register()
class DiffIRS1(nn.Module):
    """Stage-1 teacher: IPR = CPEN_S1(lq, gt); out = DIRformer(lq, IPR).

    ``forward`` returns ``(out, [ipr])`` in training mode and ``out`` in eval mode, like the official
    network. Inputs must have H and W divisible by 8 (the caller pads).
    """

    def __init__(
        self,
        n_encoder_res: int = 6,
        inp_channels: int = 3,
        out_channels: int = 3,
        dim: int = 48,
        num_blocks: Sequence[int] = (4, 6, 6, 8),
        num_refinement_blocks: int = 4,
        heads: Sequence[int] = (1, 2, 4, 8),
        ffn_expansion_factor: float = 2.66,
        bias: bool = False,
        LayerNorm_type: str = "WithBias",  # noqa: N803 (official option name)
        dgain_cond: bool = False,
        identity_init: bool = True,
        highlight_gate: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__()
        ipr_dim = 4 * _N_FEATS
        self.ipr_dim = ipr_dim
        self.dgain_cond = bool(dgain_cond)
        self.G = DIRformer(
            inp_channels=inp_channels,
            out_channels=out_channels,
            dim=dim,
            num_blocks=num_blocks,
            num_refinement_blocks=num_refinement_blocks,
            heads=heads,
            ffn_expansion_factor=ffn_expansion_factor,
            bias=bias,
            LayerNorm_type=LayerNorm_type,
            ipr_dim=ipr_dim,
            identity_init=identity_init,
        )
        self.E = CPEN_S1(n_feats=_N_FEATS, n_encoder_res=n_encoder_res, in_channels=2 * 16 * inp_channels)
        # (The official class also holds an unused, parameter-free PixelUnshuffle(4); it is omitted here.)
        if self.dgain_cond:
            self.cond_embed = DgainEmbedding(ipr_dim, owner="DiffIRS1")
        # parameter-free (no state_dict entries): see DiffIR/archs/highlight_gate.py
        self.gate = build_highlight_gate(highlight_gate, "DiffIRS1")

    def extract_ipr(self, lq: torch.Tensor, gt: torch.Tensor, cond: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The IPR the DIRformer is conditioned on: CPEN_S1(lq, gt) [+ cond_embed(cond) if dgain_cond].

        Exposed separately because stage 2 distils exactly this vector.
        """
        ipr = self.E(lq, gt)
        if self.dgain_cond:
            ipr = ipr + self.cond_embed(cond, ipr)
        return ipr

    def restore_with_prior(self, lq: torch.Tensor, ipr: torch.Tensor, cond: Optional[torch.Tensor] = None
                           ) -> torch.Tensor:
        """The DIRformer under ``ipr`` (and the highlight gate, if built with one): what tiled inference runs."""
        out = self.G(lq, ipr)
        return out if self.gate is None else self.gate(lq, out, cond)

    def forward(
        self, lq: torch.Tensor, gt: torch.Tensor, cond: Optional[torch.Tensor] = None
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Restore ``lq`` using the prior extracted from (lq, gt).

        ``cond`` (B, 2) = per-image [dgain, gamma]; used only when built with ``dgain_cond=True``.
        Returns ``(out, [ipr])`` when training, ``out`` in eval mode.
        """
        check_spatial_multiple(lq, 8, "lq")
        check_spatial_multiple(gt, 8, "gt")
        if lq.shape != gt.shape:
            raise ValueError(f"lq and gt must have the same shape, got {tuple(lq.shape)} and {tuple(gt.shape)}")
        ipr = self.extract_ipr(lq, gt, cond)
        out = self.restore_with_prior(lq, ipr, cond)
        if self.training:
            return out, [ipr]
        return out
