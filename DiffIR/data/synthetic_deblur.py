"""Synthetic motion-blur pairs (deblurring demo and tests; nothing is downloaded).

Recipe (``generate_deblur_pair``): a procedural scene of :mod:`DiffIR.data.synthetic_hdr`, exposed to an
8-bit photo with that module's camera model (no sensor noise), is the sharp target. The blurred input
averages the sharp photo along a random camera-shake trajectory (``motion_blur_kernel``: a smooth random
path of 1/3..1 x ``max_blur`` pixels) in linear light (gamma 2.2), adds optional Gaussian noise
(sigma ~ U(0, 0.01)) and is rounded to 8 bits. Both images are cut from the centre of a larger rendering,
so the blur has no border artefacts: each pair is a "blurred crop" of a generated image, as GoPro's.

Files: ``<dataroot_gt>/im_000001.png`` (sharp) and ``<dataroot_lq>/im_000001.png`` (blurred), lossless PNG.
Generation on first use is crash-safe (:func:`DiffIR.data.generated_folder.ensure_generated_folders`).

Command line: ``python -m DiffIR.data.synthetic_deblur --out datasets/synthetic_deblur --num-images 24``
writes ``<out>/target`` and ``<out>/input``.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from DiffIR.data.generated_folder import ensure_generated_folders
from DiffIR.data.synthetic_hdr import generate_hdr_scene, size_arg, synthesize_ldr, synthetic_arg_parser
from DiffIR.utils.hdr_io import write_ldr

PathLike = Union[str, os.PathLike]
SizeLike = Union[int, Sequence[int]]

_GAMMA = 2.2

__all__ = [
    "motion_blur_kernel",
    "apply_motion_blur",
    "generate_deblur_pair",
    "generate_deblur_dataset",
    "ensure_synthetic_deblur_dataset",
    "main",
]


def _size2(size: SizeLike) -> Tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    h, w = (int(v) for v in size)
    return h, w


def motion_blur_kernel(rng: np.random.Generator, max_length: int) -> np.ndarray:
    """A normalised camera-shake kernel (float32, odd square side ``>= max_length``).

    The path starts in a random direction and turns a little at each step (a smooth random walk of the
    heading); its length is U(max_length/3, max_length) pixels. Points are splatted bilinearly and the
    kernel is centred on the path's centroid, so the blur does not shift the image.
    """
    if max_length < 1:
        raise ValueError(f"max_blur must be >= 1 pixel, got {max_length}")
    length = rng.uniform(max(1.0, max_length / 3.0), float(max_length))
    steps = max(8, int(math.ceil(length * 4)))
    heading = rng.uniform(0, 2 * math.pi) + np.cumsum(rng.normal(0.0, 0.08, steps))
    pts = np.cumsum(np.stack([np.cos(heading), np.sin(heading)], axis=1) * (length / steps), axis=0)
    pts -= pts.mean(axis=0)
    side = 2 * int(math.ceil(np.abs(pts).max())) + 3
    kernel = np.zeros((side, side), np.float64)
    c = side // 2
    for x, y in pts + c:
        x0, y0 = int(math.floor(x)), int(math.floor(y))
        fx, fy = x - x0, y - y0
        kernel[y0, x0] += (1 - fx) * (1 - fy)
        kernel[y0, x0 + 1] += fx * (1 - fy)
        kernel[y0 + 1, x0] += (1 - fx) * fy
        kernel[y0 + 1, x0 + 1] += fx * fy
    return (kernel / kernel.sum()).astype(np.float32)


def apply_motion_blur(sharp8: np.ndarray, kernel: np.ndarray, rng: np.random.Generator,
                      noise: bool = True) -> np.ndarray:
    """Blur an 8-bit RGB image with ``kernel`` in linear light, add optional noise, return uint8."""
    lin = (sharp8.astype(np.float32) / np.float32(255.0)) ** np.float32(_GAMMA)
    blurred = cv2.filter2D(lin, -1, kernel, borderType=cv2.BORDER_REFLECT_101)
    out = np.clip(blurred, 0.0, 1.0) ** np.float32(1.0 / _GAMMA)
    if noise:
        out = out + np.float32(rng.uniform(0.0, 0.01)) * rng.standard_normal(out.shape, dtype=np.float32)
    return np.clip(np.rint(out * np.float32(255.0)), 0, 255).astype(np.uint8)


def generate_deblur_pair(rng: np.random.Generator, h: int, w: int, max_blur: int = 15,
                         noise: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    """One ``(sharp_uint8_rgb, blurred_uint8_rgb)`` pair of ``h x w`` (see the module docstring)."""
    m = int(max_blur)
    hdr = generate_hdr_scene(rng, h + 2 * m, w + 2 * m)
    sharp, _, _, _ = synthesize_ldr(hdr, rng, noise=False)
    blurred = apply_motion_blur(sharp, motion_blur_kernel(rng, m), rng, noise)
    return (np.ascontiguousarray(sharp[m:m + h, m:m + w]), np.ascontiguousarray(blurred[m:m + h, m:m + w]))


def generate_deblur_dataset(dir_gt: PathLike, dir_lq: PathLike, num_images: int, size: SizeLike, seed: int,
                            max_blur: int = 15, noise: bool = True) -> None:
    """Write ``num_images`` pairs ``im_000001.png`` ... into ``dir_gt`` (sharp) and ``dir_lq`` (blurred).

    Image ``i`` is drawn from ``np.random.default_rng([seed, i])``, so it does not depend on ``num_images``.
    """
    if int(num_images) < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    h, w = _size2(size)
    for i in range(int(num_images)):
        sharp, blurred = generate_deblur_pair(np.random.default_rng([int(seed), i]), h, w, max_blur, noise)
        write_ldr(Path(dir_gt) / f"im_{i + 1:06d}.png", sharp)
        write_ldr(Path(dir_lq) / f"im_{i + 1:06d}.png", blurred)


def ensure_synthetic_deblur_dataset(
    dir_gt: PathLike,
    dir_lq: PathLike,
    num_images: int,
    size: SizeLike,
    seed: int,
    max_blur: int = 15,
    noise: bool = True,
    log: Optional[Callable[[str], None]] = print,
    labels: Sequence[str] = ("dataroot_gt", "dataroot_lq"),
) -> bool:
    """Generate the pairs into the two folders unless a complete set with this configuration is there.

    Returns True if data was generated. Folders holding user files are never touched (``FileExistsError``
    when only some of them do, or when a generated folder to replace also holds files it did not write).
    """
    h, w = _size2(size)
    config = {"kind": "deblur", "num_images": int(num_images), "size": [h, w], "seed": int(seed),
              "max_blur": int(max_blur), "noise": bool(noise)}

    def generate(tmps: List[Path]) -> None:
        for t in tmps:
            t.mkdir(parents=True, exist_ok=True)
        generate_deblur_dataset(tmps[0], tmps[1], num_images, (h, w), seed, max_blur, noise)

    return ensure_generated_folders(
        [dir_gt, dir_lq], labels, config, generate,
        f"synthetic motion-blur data set ({num_images} images of {h}x{w}, seed {seed}, blur up to {max_blur} px)",
        log=log, legacy_names=lambda cfg, index: [f"im_{i + 1:06d}.png" for i in range(int(cfg.get("num_images", 0)))])


def main(argv: Optional[Sequence[str]] = None) -> None:
    """CLI: generate ``<out>/target`` (sharp) and ``<out>/input`` (blurred)."""
    ap = synthetic_arg_parser(__doc__.split("\n")[0], default_size=128)
    ap.add_argument("--max-blur", type=int, default=15, help="longest blur path in pixels")
    a = ap.parse_args(argv)
    out = Path(a.out)
    if not ensure_synthetic_deblur_dataset(out / "target", out / "input", a.num_images, size_arg(a.size), a.seed,
                                           a.max_blur, not a.no_noise):
        print(f"{out}: already complete, nothing to do")


if __name__ == "__main__":
    main()
