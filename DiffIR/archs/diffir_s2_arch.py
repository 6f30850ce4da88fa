"""DiffIRS2: stage-2 DiffIR network. It restores from the LQ alone by *generating* the prior with a diffusion model.

Stage 1 extracts the IPR from (LQ, GT); stage 2 replaces that extractor by CPEN_S2 (sees only the LQ) plus a
4-step diffusion model in IPR space (:mod:`DiffIR.archs.ddpm`), trained to reproduce the stage-1 IPR, and
keeps the same DIRformer ``G``. So at inference time no ground truth is needed.

Checkpoint-compatible with the official ``DiffIRS2`` (same constructor arguments and defaults; for the official
configuration the same 588 ``state_dict`` entries in the same order, including the aliased
``diffusion.model.*``/``diffusion.condition.*`` copies of ``denoise.*``/``condition.*`` and the 12 schedule
buffers), and computes the same outputs from the same weights and torch RNG state. Optional HDR extension as in
stage 1: ``dgain_cond=True`` adds ``cond_embed`` (an IPR offset from ``[log(dgain), gamma]``, added to every
estimate of the reverse chain), which a stage-1 ``cond_embed`` initialises.
"""
from __future__ import annotations

from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from DiffIR.archs.cpen import CPEN
from DiffIR.archs.ddpm import IPRDenoiser, IPRDiffusion
from DiffIR.archs.dgain_embed import DgainEmbedding
from DiffIR.archs.highlight_gate import build_highlight_gate
from DiffIR.archs.dirformer import DIRformer, check_spatial_multiple
from DiffIR.utils.registry import ARCH_REGISTRY

__all__ = ["DiffIRS2"]

_N_FEATS = 64  # hard-coded in the official code; the IPR dimension is 4 * n_feats = 256


@ARCH_REGISTRY.register()
class DiffIRS2(nn.Module):
    """Stage-2 student: IPR = reverse diffusion chain conditioned on CPEN_S2(lq); out = DIRformer(lq, IPR).

    * training mode: ``forward(lq, ipr_s1)`` → ``(out, [IPR after each of the T reverse steps])``; the chain
      starts from ``ipr_s1`` diffused to the last step (the official "joint" training).
    * eval mode: ``forward(lq)`` → ``out``; the chain starts from Gaussian noise drawn from the torch RNG
      (seed it for reproducible results), or from ``noise`` (B, 256) when given: then the output is a function of
      the inputs alone, which is what an exported graph (ONNX) needs.
    * ``prior_only=True`` skips the DIRformer and returns the IPR (eval) or ``(IPR, list)`` (training): the
      first training phase and tiled inference (one prior for the whole image) use it.

    Inputs must have H and W divisible by 8 (the caller pads).
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
        n_denoise_res: int = 1,
        linear_start: float = 0.1,
        linear_end: float = 0.99,
        timesteps: int = 4,
        dgain_cond: bool = False,
        identity_init: bool = True,
        highlight_gate: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__()
        ipr_dim = 4 * _N_FEATS
        self.ipr_dim = ipr_dim
        self.dgain_cond = bool(dgain_cond)
        # Registration order == official order == checkpoint key order: G, condition, denoise, diffusion.
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
        self.condition = CPEN(in_channels=16 * inp_channels, n_feats=_N_FEATS, n_encoder_res=n_encoder_res)
        self.denoise = IPRDenoiser(n_feats=_N_FEATS, n_denoise_res=n_denoise_res, timesteps=timesteps)
        self.diffusion = IPRDiffusion(self.denoise, self.condition, timesteps=timesteps, linear_start=linear_start,
                                      linear_end=linear_end, ipr_dim=ipr_dim)
        if self.dgain_cond:
            self.cond_embed = DgainEmbedding(ipr_dim, owner="DiffIRS2")
        # parameter-free (no state_dict entries): see DiffIR/archs/highlight_gate.py
        self.gate = build_highlight_gate(highlight_gate, "DiffIRS2")

    @property
    def timesteps(self) -> int:
        return self.diffusion.num_timesteps

    def estimate_ipr(self, lq: torch.Tensor, ipr_s1: Optional[torch.Tensor] = None,
                     cond: Optional[torch.Tensor] = None, noise: Optional[torch.Tensor] = None
                     ) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """Run the reverse chain; returns ``(final IPR, [IPR after each step])`` (``final is list[-1]``).

        In training mode with ``ipr_s1`` the chain starts from it, diffused to the last step; otherwise from noise
        (``noise`` if given, else drawn from the torch RNG).
        """
        ipr, estimates = self.diffusion(lq, ipr_s1 if self.training else None, noise)
        if self.dgain_cond:
            offset = self.cond_embed(cond, ipr)
            estimates = [e + offset for e in estimates]
            ipr = estimates[-1]
        return ipr, estimates

    def restore_with_prior(self, lq: torch.Tensor, ipr: torch.Tensor, cond: Optional[torch.Tensor] = None
                           ) -> torch.Tensor:
        """The DIRformer under ``ipr`` (and the highlight gate, if built with one): what tiled inference runs."""
        out = self.G(lq, ipr)
        return out if self.gate is None else self.gate(lq, out, cond)

    def forward(
        self, lq: torch.Tensor, ipr_s1: Optional[torch.Tensor] = None, cond: Optional[torch.Tensor] = None,
        prior_only: bool = False, noise: Optional[torch.Tensor] = None,
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Restore ``lq`` with a generated prior (see the class docstring for the return values per mode).

        ``cond`` (B, 2) = per-image [dgain, gamma]; used only when built with ``dgain_cond=True`` or a highlight gate
        that linearises. ``noise`` (B, 256): the diffusion's start noise instead of a draw from the torch RNG.
        """
        check_spatial_multiple(lq, 8, "lq")
        if self.training:
            if ipr_s1 is None:
                raise ValueError("DiffIRS2 in training mode needs the stage-1 IPR: forward(lq, ipr_s1) with ipr_s1 "
                                 "(B, 256) from the stage-1 network's CPEN. For LDR-only inference call .eval() first.")
            if ipr_s1.shape != (lq.shape[0], self.ipr_dim):
                raise ValueError(f"ipr_s1 must have shape ({lq.shape[0]}, {self.ipr_dim}), got {tuple(ipr_s1.shape)}")
            ipr, estimates = self.estimate_ipr(lq, ipr_s1, cond, noise)
            if prior_only:
                return ipr, estimates
            return self.restore_with_prior(lq, ipr, cond), estimates
        ipr, _ = self.estimate_ipr(lq, None, cond, noise)
        if prior_only:
            return ipr
        return self.restore_with_prior(lq, ipr, cond)
