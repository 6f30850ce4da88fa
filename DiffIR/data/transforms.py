"""Cheap numpy transforms for paired ``H x W x C`` images (LQ and GT with the same size, scale 1)."""
from __future__ import annotations

from typing import List, Sequence, Tuple, Union

import numpy as np
import torch

from DiffIR.utils.image_common import Window

NUM_VARIANTS = 8

__all__ = ["NUM_VARIANTS", "pad_to_size", "paired_random_crop", "random_window", "apply_variant", "augment_pair",
           "img2tensor"]


def _size2(size: Union[int, Sequence[int]]) -> Tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        h, w = (int(s) for s in size)
    if h <= 0 or w <= 0:
        raise ValueError(f"crop size must be positive, got {size}")
    return h, w


def pad_to_size(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Reflect-pad ``img`` at the bottom/right so that it is at least ``h x w`` (no-op if it is).

    Uses mirror padding without repeating the edge pixel (``np.pad(mode='reflect')``); a 1-pixel
    axis is edge-replicated instead (reflection is undefined there).
    """
    ph, pw = max(0, h - img.shape[0]), max(0, w - img.shape[1])
    if ph == 0 and pw == 0:
        return img
    pad = [(0, ph), (0, pw)] + [(0, 0)] * (img.ndim - 2)
    if img.shape[0] > 1 and img.shape[1] > 1:
        return np.pad(img, pad, mode="reflect")
    return np.pad(img, pad, mode="edge")


def paired_random_crop(
    lq: np.ndarray, gt: np.ndarray, size: Union[int, Sequence[int]], rng: np.random.Generator
) -> Tuple[np.ndarray, np.ndarray]:
    """Crop the same random ``size x size`` (or ``(h, w)``) window from ``lq`` and ``gt``.

    Both images must have the same height and width. If they are smaller than ``size`` along an
    axis, both are first **reflect-padded at the bottom/right** (see :func:`pad_to_size`) so that a
    full-size patch always comes out. The window is drawn from ``rng`` (a ``np.random.Generator``).
    Returns contiguous copies.
    """
    if lq.shape[:2] != gt.shape[:2]:
        raise ValueError(f"paired_random_crop: LQ {lq.shape[:2]} and GT {gt.shape[:2]} differ in size")
    ch, cw = _size2(size)
    lq = pad_to_size(lq, ch, cw)
    gt = pad_to_size(gt, ch, cw)
    win = random_window(rng, lq.shape[0], lq.shape[1], ch, cw)
    return np.ascontiguousarray(win.crop(lq)), np.ascontiguousarray(win.crop(gt))


def random_window(rng: np.random.Generator, height: int, width: int, crop_h: int, crop_w: int) -> Window:
    """A uniformly drawn ``crop_h x crop_w`` window of a ``height x width`` image (top first, then left).

    Along an axis shorter than the crop the window starts at 0 and covers the whole axis: the caller
    reflect-pads that window up to the crop size (:func:`pad_to_size`), which gives the same patch as
    padding first and cropping after, without converting the pixels outside the window.
    """
    top = int(rng.integers(0, max(height, crop_h) - crop_h + 1))
    left = int(rng.integers(0, max(width, crop_w) - crop_w + 1))
    return Window(top, left, min(height, crop_h), min(width, crop_w))


def apply_variant(img: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 dihedral variants of an ``H x W [x C]`` image (``k`` in 0..7).

    ``k & 1``: vertical flip, ``k & 2``: horizontal flip, ``k & 4``: transpose (H <-> W).
    ``k = 0`` is the identity. Returns a (possibly non-contiguous) view.
    """
    if not 0 <= k < NUM_VARIANTS:
        raise ValueError(f"variant must be in 0..7, got {k}")
    if k & 4:
        img = img.swapaxes(0, 1)
    if k & 1:
        img = img[::-1]
    if k & 2:
        img = img[:, ::-1]
    return img


def augment_pair(
    imgs: Sequence[np.ndarray], rng: np.random.Generator, hflip: bool = True, rotation: bool = True
) -> List[np.ndarray]:
    """Apply one random flip/rot90 variant identically to every image in ``imgs``.

    With ``hflip`` and ``rotation`` (default) all 8 dihedral variants are equally likely; with
    only ``hflip``: identity or left-right flip; with only ``rotation``: rot90 by 0/90/180/270 deg.
    Returns contiguous arrays in the same order.
    """
    if hflip and rotation:
        k = int(rng.integers(0, NUM_VARIANTS))
    elif hflip:
        k = (0, 2)[int(rng.integers(0, 2))]
    elif rotation:
        k = (0, 5, 3, 6)[int(rng.integers(0, 4))]  # identity, rot90 (np.rot90), rot180, rot270
    else:
        k = 0
    return [np.ascontiguousarray(apply_variant(im, k)) for im in imgs]


def img2tensor(imgs: Union[np.ndarray, Sequence[np.ndarray]]) -> Union[torch.Tensor, List[torch.Tensor]]:
    """``H x W x C`` (or ``H x W``) numpy image(s) -> contiguous float32 ``C x H x W`` tensor(s).

    No colour conversion: images in this package are already RGB.
    """
    def one(im: np.ndarray) -> torch.Tensor:
        if im.ndim == 2:
            im = im[:, :, None]
        arr = np.ascontiguousarray(im.transpose(2, 0, 1), dtype=np.float32)
        return torch.from_numpy(arr)

    if isinstance(imgs, np.ndarray):
        return one(imgs)
    return [one(im) for im in imgs]
