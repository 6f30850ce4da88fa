"""The small diffusion model of DiffIR stage 2: it turns noise into an IPR (prior vector), conditioned on the LQ.

DiffIR runs a DDPM in the 256-dimensional IPR space, not in image space: T = 4 steps, an "x0"-predicting
denoiser (an MLP, :class:`IPRDenoiser`), and a reverse step that returns the posterior mean without adding
noise. Stage 2 trains it *jointly* through all T reverse steps, starting from the stage-1 IPR diffused to
``t = T - 1`` (not with the usual random-t noise-prediction loss).

Written from the description of the official ``ldm/ddpm.py`` (see ``shared/reference/diffir_architecture.md``
§3.3-3.4). What must match for checkpoints and outputs to be interchangeable:

* buffer names, order and float32 values (computed in float64 first),
* the submodule names ``model`` (the denoiser) and ``condition`` (the LQ encoder), which the official class
  stores as references to modules the parent network also owns; the checkpoint therefore lists those tensors
  under both names,
* the torch RNG draws: one ``randn`` of shape (B, 256) to start the chain, then one more per reverse step
  that the official sampler draws but never uses. We draw (and drop) it too, so that a seeded run consumes
  the random stream exactly as the official code does and every later random number is the same.

``forward(..., noise=x_T)`` takes the start noise as a tensor instead: the chain then draws nothing from the torch RNG
(so an exported graph, e.g. ONNX, has the noise as an input and no random operator, and its output is a function of
its inputs). Without it everything above holds unchanged.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn as nn

from DiffIR.utils.errors import OptionError

__all__ = ["IPRDenoiser", "IPRDiffusion", "linear_beta_schedule"]

_SLOPE = 0.1  # LeakyReLU slope of the official denoiser

# Buffer names in the official registration order (== checkpoint key order).
SCHEDULE_BUFFERS = (
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
)


def linear_beta_schedule(timesteps: int, linear_start: float, linear_end: float) -> torch.Tensor:
    """LDM's "linear" schedule (linear in sqrt(beta)): ``linspace(√start, √end, T)²`` in float64."""
    if int(timesteps) < 1:
        raise OptionError(f"timesteps must be >= 1, got {timesteps}")
    if not 0 < linear_start <= linear_end < 1:
        raise OptionError(f"need 0 < linear_start <= linear_end < 1, got {linear_start} and {linear_end}")
    return torch.linspace(linear_start ** 0.5, linear_end ** 0.5, int(timesteps), dtype=torch.float64) ** 2


class _MLPBlock(nn.Module):
    """Linear + LeakyReLU(0.1). The official name is "ResMLP", but it has no skip connection."""

    def __init__(self, n_feats: int) -> None:
        super().__init__()
        self.resmlp = nn.Sequential(nn.Linear(n_feats, n_feats), nn.LeakyReLU(_SLOPE, inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resmlp(x)


class IPRDenoiser(nn.Module):
    """Predict the clean IPR x0 from (noisy IPR ``x``, step ``t``, condition ``c``).

    Input features are ``[c, t / (10·T), x]`` (the timestep enters as one scalar, no sinusoidal embedding):
    Linear(2·D + 1 → D) + LeakyReLU, then ``n_denoise_res`` Linear(D → D) + LeakyReLU blocks, D = 4·n_feats.
    Keys: ``resmlp.0``, ``resmlp.2.resmlp.0``, ``resmlp.3.resmlp.0`` ...
    """

    def __init__(self, n_feats: int = 64, n_denoise_res: int = 5, timesteps: int = 5) -> None:
        super().__init__()
        self.max_period = timesteps * 10
        dim = 4 * n_feats
        layers: List[nn.Module] = [nn.Linear(2 * dim + 1, dim), nn.LeakyReLU(_SLOPE, inplace=True)]
        layers += [_MLPBlock(dim) for _ in range(n_denoise_res)]
        self.resmlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        t = (t.float() / self.max_period).view(-1, 1)
        return self.resmlp(torch.cat([c, t, x], dim=1))


class IPRDiffusion(nn.Module):
    """DDPM over IPR vectors with x0-parameterisation and a deterministic (posterior-mean) reverse step.

    ``denoiser`` and ``condition`` are *shared* with the owning network (registered here as ``model`` and
    ``condition``, as in the official code). ``forward(lq, ipr_start)`` in training mode diffuses
    ``ipr_start`` to ``t = T-1`` and runs the whole reverse chain; in eval mode (or without ``ipr_start``)
    the chain starts from pure Gaussian noise. Returns ``(ipr, [estimate after each reverse step])``.
    ``noise`` (B, ipr_dim), when given, is that Gaussian noise (the ε of the diffusion in training): the chain
    then draws nothing from the torch RNG.
    """

    def __init__(self, denoiser: nn.Module, condition: nn.Module, timesteps: int = 4, linear_start: float = 0.1,
                 linear_end: float = 0.99, ipr_dim: int = 256) -> None:
        super().__init__()
        self.model = denoiser
        self.condition = condition
        self.ipr_dim = ipr_dim
        betas = linear_beta_schedule(timesteps, linear_start, linear_end)
        self.num_timesteps = int(betas.shape[0])
        alphas = 1.0 - betas
        ac = torch.cumprod(alphas, dim=0)
        ac_prev = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
        post_var = betas * (1.0 - ac_prev) / (1.0 - ac)  # v_posterior = 0
        values = {
            "betas": betas,
            "alphas_cumprod": ac,
            "alphas_cumprod_prev": ac_prev,
            "sqrt_alphas_cumprod": ac.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1.0 - ac).sqrt(),
            "log_one_minus_alphas_cumprod": (1.0 - ac).log(),
            "sqrt_recip_alphas_cumprod": (1.0 / ac).sqrt(),
            "sqrt_recipm1_alphas_cumprod": (1.0 / ac - 1).sqrt(),
            "posterior_variance": post_var,
            "posterior_log_variance_clipped": post_var.clamp_min(1e-20).log(),
            "posterior_mean_coef1": betas * ac_prev.sqrt() / (1.0 - ac),
            "posterior_mean_coef2": (1.0 - ac_prev) * alphas.sqrt() / (1.0 - ac),
        }
        for name in SCHEDULE_BUFFERS:  # float64 maths, float32 storage, official order
            self.register_buffer(name, values[name].to(torch.float32))

    @staticmethod
    def _at(buf: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``buf[t]`` as a (B, 1) column, to scale (B, D) vectors per sample."""
        return buf.gather(-1, t).view(-1, 1)

    def q_sample(self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Diffuse ``x_start`` to step ``t``: ``√ᾱ_t·x0 + √(1-ᾱ_t)·ε``."""
        return self._at(self.sqrt_alphas_cumprod, t) * x_start + self._at(self.sqrt_one_minus_alphas_cumprod, t) * noise

    def reverse_step(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor, draw_unused: bool = True
                     ) -> torch.Tensor:
        """x_{t-1} = coef1[t]·x̂0 + coef2[t]·x_t, x̂0 = denoiser(x_t, t, c); no noise is added.

        ``draw_unused``: draw (and drop) the official sampler's unused noise, which keeps the RNG stream equal."""
        x0 = self.model(x, t, c)
        mean = self._at(self.posterior_mean_coef1, t) * x0 + self._at(self.posterior_mean_coef2, t) * x
        if draw_unused:
            torch.randn(x.shape, device=x.device)
        return mean

    def forward(self, lq: torch.Tensor, ipr_start: Optional[torch.Tensor] = None,
                noise: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        b = lq.shape[0]
        device = self.betas.device
        if noise is not None and tuple(noise.shape) != (b, self.ipr_dim):
            raise ValueError(f"noise must have shape ({b}, {self.ipr_dim}) (batch, IPR size), got {tuple(noise.shape)}")
        if self.training and ipr_start is not None:
            last = torch.full((b,), self.num_timesteps - 1, device=device, dtype=torch.long)
            x = self.q_sample(ipr_start, last, torch.randn_like(ipr_start) if noise is None else noise)
        else:
            x = torch.randn((b, self.ipr_dim), device=device) if noise is None else noise
        c = self.condition(lq)
        estimates: List[torch.Tensor] = []
        for i in reversed(range(self.num_timesteps)):
            x = self.reverse_step(x, torch.full((b,), i, device=device, dtype=torch.long), c,
                                  draw_unused=noise is None)
            estimates.append(x)
        return x, estimates
