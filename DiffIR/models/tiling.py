"""Inference on images too large for memory: run a network on overlapping tiles and blend them smoothly.

``tiled_forward(fn, *inputs, tile=..., overlap=..., multiple=...)`` knows nothing about the network: ``fn``
takes same-position crops of every input (e.g. ``fn(lq)`` or ``fn(lq, gt)``) and returns an image of the same
height and width. Without ``tile`` (or when the image fits in one tile) it is plain whole-image inference,
padded to the network's multiple and cropped back.
"""
from __future__ import annotations

import math
from typing import Callable, List, Optional, Tuple

import torch

from DiffIR.utils.img_util import pad_to_multiple

__all__ = ["tiled_forward", "tile_starts", "blend_ramp"]


def tile_starts(size: int, tile: int, overlap: int, multiple: int = 1) -> Tuple[List[int], int]:
    """Start offsets along one axis and the tile length there.

    Starts are multiples of ``multiple`` (so tiles see the same down-sampling grid as the whole image), the
    stride is ``tile - overlap`` rounded down to ``multiple``, and the last tile ends at ``size``.
    """
    if size <= tile:
        return [0], size
    stride = (tile - overlap) // multiple * multiple
    if stride <= 0:
        raise ValueError(f"tile_overlap {overlap} leaves no stride for tile_size {tile} (multiple {multiple}): "
                         f"use tile_overlap <= tile_size - {multiple}")
    starts = list(range(0, size - tile, stride)) + [size - tile]
    return starts, tile


def blend_ramp(length: int, ramp: int, left: bool, right: bool, device: torch.device,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """1-D blending weight of a tile: raised-cosine ramps of ``ramp`` pixels at sides that meet another tile.

    Weights never reach 0 (the ramp samples pixel centres), so every pixel has a positive total weight; sides on
    the image border keep weight 1 up to the edge.
    """
    w = torch.ones(length, device=device, dtype=dtype)
    r = min(int(ramp), length // 2)
    if r > 0:
        t = (torch.arange(r, device=device, dtype=dtype) + 0.5) / r
        up = torch.sin(t * (math.pi / 2)) ** 2
        if left:
            w[:r] = up
        if right:
            w[length - r:] = up.flip(0)
    return w


def tiled_forward(fn: Callable[..., torch.Tensor], *inputs: torch.Tensor, tile: Optional[int] = None,
                  overlap: int = 32, multiple: int = 8) -> torch.Tensor:
    """``fn(*inputs)`` computed tile by tile with smooth blending; returns ``B x C_out x H x W``.

    ``inputs`` are ``B x C x H x W`` tensors with the same H and W (channels may differ). They are
    reflect-padded to multiples of ``multiple`` first; ``tile`` (a multiple of ``multiple``) is the tile side,
    ``overlap`` the width of the blending ramps between neighbouring tiles. Peak memory is that of ``fn`` on
    one tile plus one output-sized accumulator (on the device of ``fn``'s output).
    """
    if not inputs:
        raise ValueError("tiled_forward needs at least one input tensor")
    h, w = inputs[0].shape[-2:]
    for i, x in enumerate(inputs):
        if x.dim() != 4 or tuple(x.shape[-2:]) != (h, w):
            raise ValueError(f"tiled_forward: input {i} has shape {tuple(x.shape)}; every input must be "
                             f"B x C x {h} x {w}")
    multiple = max(1, int(multiple))
    padded = [pad_to_multiple(x, multiple) for x in inputs]
    hp, wp = padded[0].shape[-2:]
    if not tile or (hp <= tile and wp <= tile):
        return fn(*padded)[..., :h, :w]
    tile, overlap = int(tile), int(overlap)
    if tile % multiple or tile <= 0:
        raise ValueError(f"tile_size {tile} must be a positive multiple of {multiple} (the network's size multiple)")
    if not 0 <= overlap < tile:
        raise ValueError(f"tile_overlap {overlap} must be >= 0 and smaller than tile_size {tile}")
    ys, th = tile_starts(hp, tile, overlap, multiple)
    xs, tw = tile_starts(wp, tile, overlap, multiple)
    out: Optional[torch.Tensor] = None
    weight: Optional[torch.Tensor] = None
    for y0 in ys:
        for x0 in xs:
            y = fn(*[x[..., y0:y0 + th, x0:x0 + tw] for x in padded])
            if tuple(y.shape[-2:]) != (th, tw):
                raise ValueError(f"tiled_forward: fn returned {tuple(y.shape)} for a {th}x{tw} tile; it must keep "
                                 "the spatial size")
            if out is None:
                out = torch.zeros(*y.shape[:-2], hp, wp, device=y.device, dtype=y.dtype)
                weight = torch.zeros(hp, wp, device=y.device, dtype=y.dtype)
            wy = blend_ramp(th, overlap, y0 > 0, y0 + th < hp, y.device, y.dtype)
            wx = blend_ramp(tw, overlap, x0 > 0, x0 + tw < wp, y.device, y.dtype)
            win = wy[:, None] * wx[None, :]
            out[..., y0:y0 + th, x0:x0 + tw] += y * win
            weight[y0:y0 + th, x0:x0 + tw] += win
    return out.div_(weight)[..., :h, :w]
