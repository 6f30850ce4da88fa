"""Flip self-ensemble at test time: average a network's outputs over flipped (and transposed) copies of its inputs.

``self_ensemble(fn, *inputs, n=...)`` knows nothing about the network, like :func:`~DiffIR.models.tiling.tiled_forward`
(which ``fn`` may call, so an ensemble of tiled passes is one call): every input is transformed the same way, ``fn``
runs, the inverse transform brings its output back, and the ``n`` outputs are averaged in the network domain.
``n`` = 4: identity, horizontal flip, vertical flip, both (a 180° rotation); ``n`` = 8: those four, each also
transposed (H↔W), i.e. the 8 symmetries of the square, as BITM (AIM 2025 ITM) evaluates. ``fn`` must accept
either orientation of a non-square image (tiling and padding happen inside it).
"""
from __future__ import annotations

from typing import Callable, List, Tuple

import torch

from DiffIR.config.sections import SELF_ENSEMBLE_SIZES

__all__ = ["SELF_ENSEMBLE_SIZES", "Transform", "ensemble_transforms", "apply_transform", "invert_transform",
           "self_ensemble"]

#: ``(flip H, flip W, transpose)``: forward = flips, then the transpose; the inverse undoes them in reverse order
Transform = Tuple[bool, bool, bool]


def ensemble_transforms(n: int) -> List[Transform]:
    """The ``n`` transforms of an ensemble (1 for ``n`` = 0, the identity alone), identity first."""
    if n not in SELF_ENSEMBLE_SIZES:
        raise ValueError(f"self_ensemble must be one of {', '.join(map(str, SELF_ENSEMBLE_SIZES))} (0 = off), got "
                         f"{n!r}")
    flips = [(False, False), (False, True), (True, False), (True, True)][: 1 if n == 0 else 4]
    return [(fh, fw, t) for t in ((False, True) if n == 8 else (False,)) for fh, fw in flips]


def _dims(tf: Transform) -> List[int]:
    return [d for d, on in ((-2, tf[0]), (-1, tf[1])) if on]


def apply_transform(x: torch.Tensor, tf: Transform) -> torch.Tensor:
    """``x`` (``... x H x W``) flipped as ``tf`` says, then transposed if it says so."""
    dims = _dims(tf)
    y = x.flip(dims) if dims else x
    return y.transpose(-2, -1) if tf[2] else y


def invert_transform(y: torch.Tensor, tf: Transform) -> torch.Tensor:
    """The inverse of :func:`apply_transform` (flips are their own inverse, so: transpose back, then flip)."""
    if tf[2]:
        y = y.transpose(-2, -1)
    dims = _dims(tf)
    return y.flip(dims) if dims else y


def self_ensemble(fn: Callable[..., torch.Tensor], *inputs: torch.Tensor, n: int = 0) -> torch.Tensor:
    """The mean of ``invert(fn(*transform(inputs)))`` over the ``n`` transforms; ``n`` = 0 is plain ``fn(*inputs)``.

    Each pass calls ``fn`` afresh, so anything random inside it (stage 2's diffusion noise) must be seeded there to
    be the same for every transform. The sum is accumulated in place: memory is one output more than one pass.
    """
    transforms = ensemble_transforms(n)
    if len(transforms) == 1:
        return fn(*inputs)
    total = None
    for tf in transforms:
        out = invert_transform(fn(*[apply_transform(x, tf) for x in inputs]), tf)
        total = out.clone() if total is None else total.add_(out)
    return total.div_(len(transforms))
