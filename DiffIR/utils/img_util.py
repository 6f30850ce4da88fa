"""Tensor ↔ image conversions shared by validation, previews and metrics."""
from __future__ import annotations

from typing import List

import numpy as np
import torch
import torch.nn.functional as F


def tensor2img(tensor: torch.Tensor) -> np.ndarray:
    """C×H×W (or 1×C×H×W) float in [0, 1] → H×W×C uint8 RGB, clamped and rounded as BasicSR does."""
    t = tensor.detach().float().cpu()
    if t.dim() == 4:
        t = t[0]
    img = t.clamp_(0, 1).permute(1, 2, 0).numpy()
    return (img * 255.0).round().astype(np.uint8)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Reflect-pad bottom/right so H and W are multiples of ``multiple`` (replicate where reflect can't)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def make_preview_grid(rows: List[List[torch.Tensor]], max_rows: int = 4) -> torch.Tensor:
    """Stack per-sample rows of C×H×W images (e.g. input | output | GT) into one C×H'×W' image in [0, 1].

    Panels of one row must share their height; rows narrower than the widest are padded with black on the right.
    """
    lines = [torch.cat([img.detach().float().cpu().clamp(0, 1) for img in row], dim=-1) for row in rows[:max_rows]]
    width = max(line.shape[-1] for line in lines)
    return torch.cat([F.pad(line, (0, width - line.shape[-1])) for line in lines], dim=-2)
