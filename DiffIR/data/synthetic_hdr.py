"""Procedural HDR scenes and matching LDR/dgain files (demo and test data; no downloads).

Scene recipe (``generate_hdr_scene``), all values in "peak-1000" units (the AIM-ITM convention):
sky gradient with clouds and a bluish tint above a wavy horizon, fractal-noise ground lit by a
log-uniform illuminant, buildings with emissive windows, 1-3 hard shadows (x 10^U(-2.3,-1)), 1-3
light discs with exponential halos; clipped to ``[1e-3, hdr_max]``, float32 RGB.

LDR recipe (``synthesize_ldr``), the fork's forward model ``ldr = clip(h/hdr_max*dgain,0,1)^(1/gamma)``:
dgain from the clip-fraction rule or the key rule (50/50), clamped to ``[1, 64]``; optional sensor
noise before clipping (off for 25 % of images); gamma ~ U(1.6, 2.6); 8-bit rounding; JPEG quality
~ U{75..98}. ``dgain``/``gamma`` are rounded to 6 decimals before use, so the values written to the
``.txt`` files are exactly the ones that made the LDR.

Folder generation (``ensure_synthetic_dataset``) is crash-safe and never touches files it did not write
(:mod:`DiffIR.data.generated_folder`).

Command line: ``python -m DiffIR.data.synthetic_hdr --out datasets/synthetic --num-images 24 --size 192``
writes ``<out>/jpg``, ``<out>/hdr`` and ``<out>/dgain_info``.
"""
from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from DiffIR.data.dgain import format_dgain_text
from DiffIR.data.generated_folder import ensure_generated_folders
from DiffIR.utils.hdr_io import write_hdr

PathLike = Union[str, os.PathLike]
SizeLike = Union[int, Sequence[int]]

GT_FORMATS = ("hdr", "exr", "npy")
LDR_FORMATS = ("jpg", "png")
_LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)

__all__ = [
    "fractal_noise",
    "generate_hdr_scene",
    "synthesize_ldr",
    "encode_ldr",
    "generate_pair",
    "generate_dataset",
    "ensure_synthetic_dataset",
    "synthetic_arg_parser",
    "size_arg",
    "main",
]


# ----------------------------------------------------------------------------------------------
# scene
# ----------------------------------------------------------------------------------------------
def fractal_noise(
    rng: np.random.Generator, h: int, w: int, octaves: int = 5, persistence: float = 0.5, base_cells: int = 3
) -> np.ndarray:
    """Value noise in ``[0, 1]`` (float32 ``h x w``): ``octaves`` bicubically upsampled uniform grids."""
    acc = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    longest = max(h, w)
    for o in range(octaves):
        cells = base_cells * (2 ** o)
        gh = max(2, int(round(cells * h / longest))) + 1
        gw = max(2, int(round(cells * w / longest))) + 1
        grid = rng.random((gh, gw), dtype=np.float32)
        acc += np.float32(amp) * cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= persistence
    lo, hi = float(acc.min()), float(acc.max())
    acc -= np.float32(lo)
    acc *= np.float32(1.0 / max(hi - lo, 1e-6))
    return acc


def _loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def generate_hdr_scene(rng: np.random.Generator, h: int, w: int, hdr_max: float = 1000.0) -> np.ndarray:
    """A random outdoor-like HDR scene, float32 ``h x w x 3`` RGB in ``[1e-3, hdr_max]``.

    Designed for ``hdr_max = 1000`` (light sources peak at 800-1000, i.e. 0.8-1.0 x ``hdr_max``).
    The parts are drawn from ``rng`` in a fixed order (sky and ground, buildings, shadows, lights),
    so a seed always gives the same scene.
    """
    s = float(hdr_max) / 1000.0
    img, solid, horizon, illum, albedo = _sky_and_ground(rng, h, w, s)
    for _ in range(int(rng.integers(2, 7))):
        _add_building(rng, img, solid, albedo, horizon, illum, s)
    _add_shadows(rng, img, solid, horizon)
    _add_lights(rng, img, s)
    return np.clip(img, 1e-3, float(hdr_max)).astype(np.float32)


def _sky_and_ground(rng: np.random.Generator, h: int, w: int,
                    s: float) -> Tuple[np.ndarray, np.ndarray, float, float, np.ndarray]:
    """Sky above a wavy horizon, textured ground below: ``(image, solid mask, horizon row, illumination, albedo)``."""
    yy = np.arange(h, dtype=np.float32)[:, None]
    horizon = rng.uniform(0.35, 0.65) * h
    wave = cv2.resize(rng.random((1, 7), dtype=np.float32), (w, 1), interpolation=cv2.INTER_CUBIC)[0]
    hline = (np.float32(horizon) + (wave - np.float32(0.5)) * np.float32(0.12 * h)).astype(np.float32)
    sky_mask = yy < hline[None, :]
    zenith, horizon_lum = rng.uniform(40, 150) * s, rng.uniform(150, 400) * s
    t = np.clip(yy / np.maximum(hline[None, :], np.float32(1.0)), 0.0, 1.0).astype(np.float32)
    sky_lum = np.float32(zenith) + np.float32(horizon_lum - zenith) * t ** np.float32(1.5)
    clouds = fractal_noise(rng, h, w, octaves=4)
    sky_lum = sky_lum * (np.float32(0.75) + np.float32(0.5) * clouds)
    sky_tint = (np.array([0.65, 0.85, 1.2]) * rng.uniform(0.9, 1.1, 3)).astype(np.float32)
    img = sky_lum[:, :, None] * sky_tint

    # ground: fractal albedo x illumination x tint
    albedo = np.float32(0.05) + np.float32(0.55) * fractal_noise(rng, h, w, octaves=int(rng.integers(4, 7)))
    illum = _loguniform(rng, 5.0, 300.0) * s
    ground_tint = rng.uniform(0.7, 1.1, 3).astype(np.float32)
    ground = albedo[:, :, None] * (np.float32(illum) * ground_tint)
    img = np.where(sky_mask[:, :, None], img, ground).astype(np.float32)
    solid = ~sky_mask
    return img, solid, horizon, illum, albedo


def _add_building(rng: np.random.Generator, img: np.ndarray, solid: np.ndarray, albedo: np.ndarray, horizon: float,
                  illum: float, s: float) -> None:
    """One building with emissive windows, drawn into ``img`` (and marked in ``solid``)."""
    h, w = solid.shape
    bw = int(rng.uniform(0.06, 0.2) * w) + 2
    x0 = int(rng.integers(0, max(1, w - bw)))
    x1 = min(w, x0 + bw)
    top = int(max(0.05 * h, horizon - rng.uniform(0.1, 0.45) * h))
    bottom = int(min(h, horizon + rng.uniform(0.05, 0.25) * h))
    if bottom - top < 4 or x1 - x0 < 4:
        return
    facade = np.float32(rng.uniform(0.05, 0.35) * illum) * rng.uniform(0.8, 1.05, 3).astype(np.float32)
    tex = np.float32(0.7) + np.float32(0.6) * albedo[top:bottom, x0:x1, None]
    block = tex * facade
    cw, ch = int(rng.integers(6, 14)), int(rng.integers(8, 16))
    ly = np.arange(bottom - top)[:, None]
    lx = np.arange(x1 - x0)[None, :]
    in_win = ((ly % ch) < int(ch * 0.6)) & ((lx % cw) < int(cw * 0.55)) & (ly >= 2) & (lx >= 1)
    rows, cols = (bottom - top) // ch + 1, (x1 - x0) // cw + 1
    lit_p = rng.uniform(0.2, 0.6)
    lit = rng.random((rows, cols)) < lit_p
    level = rng.uniform(300, 1000, (rows, cols)).astype(np.float32) * np.float32(s)
    win_val = np.where(lit, level, np.float32(0.02 * illum)).astype(np.float32)[ly // ch, lx // cw]
    warm = np.array([1.0, 0.85, 0.6], np.float32) * rng.uniform(0.9, 1.0, 3).astype(np.float32)
    block = np.where(in_win[:, :, None], win_val[:, :, None] * warm, block)
    img[top:bottom, x0:x1] = block
    solid[top:bottom, x0:x1] = True


def _add_shadows(rng: np.random.Generator, img: np.ndarray, solid: np.ndarray, horizon: float) -> None:
    """Hard shadows (convex quads) on solid surfaces."""
    h, w = solid.shape
    for _ in range(int(rng.integers(1, 4))):
        cx, cy = rng.uniform(0, w), rng.uniform(horizon, h)
        rad = rng.uniform(0.1, 0.35) * min(h, w)
        ang = np.sort(rng.uniform(0, 2 * np.pi, 4))
        pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], axis=1).astype(np.int32)
        mask = np.zeros((h, w), np.uint8)
        cv2.fillConvexPoly(mask, pts, 1)
        factor = np.float32(10.0 ** rng.uniform(-2.3, -1.0))
        sel = (mask > 0) & solid
        img[sel] *= factor


def _add_lights(rng: np.random.Generator, img: np.ndarray, s: float) -> None:
    """Light sources with halos."""
    h, w = img.shape[:2]
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    for _ in range(int(rng.integers(1, 4))):
        cy, cx = rng.uniform(0, 0.8 * h), rng.uniform(0, w)
        r = rng.uniform(2, 10)
        peak = rng.uniform(800, 1000) * s
        tint = np.array([1.0, rng.uniform(0.85, 1.0), rng.uniform(0.7, 1.0)], np.float32)
        d = np.sqrt((yy - np.float32(cy)) ** 2 + (xx - np.float32(cx)) ** 2)
        halo = np.float32(rng.uniform(0.1, 0.3) * peak) * np.exp(-np.maximum(d - np.float32(r), 0) / np.float32(rng.uniform(5, 25)))
        img += halo[:, :, None] * tint
        disc = d <= np.float32(r)
        img[disc] = np.float32(peak) * tint


# ----------------------------------------------------------------------------------------------
# LDR
# ----------------------------------------------------------------------------------------------
def synthesize_ldr(
    hdr: np.ndarray,
    rng: np.random.Generator,
    hdr_max: float = 1000.0,
    noise: bool = True,
    rule: Optional[str] = None,
) -> Tuple[np.ndarray, float, float, Dict[str, Any]]:
    """8-bit LDR from a linear HDR image with the fork's forward model (before any JPEG).

    Returns ``(ldr_uint8_rgb, dgain, gamma, info)``; ``info`` has ``rule``, ``noise_k``,
    ``noise_sigma`` and the JPEG ``quality`` drawn for this image (apply it with :func:`encode_ldr`).
    ``rule`` is ``'clip_fraction'``, ``'key'`` or None (50/50).
    """
    hdr = np.asarray(hdr, dtype=np.float32)
    lum = hdr @ _LUMA
    if rule is None:
        rule = "clip_fraction" if rng.random() < 0.5 else "key"
    if rule == "clip_fraction":
        f = _loguniform(rng, 0.005, 0.15)
        ref = float(np.quantile(lum, 1.0 - f))
        dgain = float(hdr_max) / max(ref, 1e-6)
    elif rule == "key":
        key = _loguniform(rng, 0.05, 0.25)
        dgain = float(hdr_max) * key / max(float(np.median(lum)), 1e-6)
    else:
        raise ValueError(f"rule must be 'clip_fraction', 'key' or None, got {rule!r}")
    dgain = round(min(max(dgain, 1.0), 64.0), 6)
    gamma = round(float(rng.uniform(1.6, 2.6)), 6)
    quality = int(rng.integers(75, 99))

    x = hdr * np.float32(dgain / float(hdr_max))
    k = sigma = 0.0
    if noise and rng.random() >= 0.25:
        k, sigma = float(rng.uniform(0.0, 0.01)), float(rng.uniform(0.0, 0.004))
        std = np.sqrt(np.float32(k) * np.maximum(x, np.float32(0)) + np.float32(sigma * sigma))
        x = x + std * rng.standard_normal(x.shape, dtype=np.float32)
    x = np.clip(x, 0.0, 1.0)
    ldr = x ** np.float32(1.0 / gamma)
    ldr8 = np.clip(np.rint(ldr * np.float32(255.0)), 0, 255).astype(np.uint8)
    info = {"rule": rule, "noise_k": k, "noise_sigma": sigma, "quality": quality}
    return ldr8, dgain, gamma, info


def encode_ldr(ldr_uint8_rgb: np.ndarray, fmt: str = "jpg", quality: int = 90) -> bytes:
    """Encode an RGB uint8 image as JPEG (given quality, OpenCV default 4:2:0) or PNG bytes."""
    bgr = cv2.cvtColor(np.ascontiguousarray(ldr_uint8_rgb), cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt in ("jpg", "jpeg") else []
    ok, buf = cv2.imencode("." + fmt, bgr, params)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a .{fmt} image")
    return buf.tobytes()


def generate_pair(
    rng: np.random.Generator, h: int, w: int, noise: bool = True, jpeg: bool = True, hdr_max: float = 1000.0
) -> Tuple[np.ndarray, np.ndarray, float, float]:
    """One synthetic training pair: ``(hdr_rgb float32, ldr_uint8_rgb, dgain, gamma)``.

    With ``jpeg=True`` the LDR is the decoded JPEG (quality U{75..98}), i.e. what a dataset reads
    from disk; with ``noise=False, jpeg=False`` it is exactly ``round(255 * hdr_to_ldr(hdr))``.
    """
    hdr = generate_hdr_scene(rng, h, w, hdr_max)
    ldr8, dgain, gamma, info = synthesize_ldr(hdr, rng, hdr_max=hdr_max, noise=noise)
    if jpeg:
        buf = encode_ldr(ldr8, "jpg", info["quality"])
        ldr8 = cv2.cvtColor(cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return hdr, ldr8, dgain, gamma


def _size2(size: SizeLike) -> Tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    h, w = (int(v) for v in size)
    return h, w


def generate_dataset(
    dir_lq: PathLike,
    dir_gt: PathLike,
    dir_dgain: PathLike,
    num_images: int,
    size: SizeLike,
    seed: int,
    gt_format: str = "hdr",
    ldr_format: str = "jpg",
    noise: bool = True,
    hdr_max: float = 1000.0,
) -> None:
    """Write ``num_images`` triples ``<stem>.jpg`` / ``<stem>.<gt_format>`` / ``<stem>.txt``.

    Stems are ``im_000001``, ``im_000002``, ... Image ``i`` is drawn from
    ``np.random.default_rng([seed, i])``, so it does not depend on ``num_images``. ``size`` is an
    int (square) or ``(h, w)``. ``gt_format``: 'hdr' (RGBE), 'exr' (float32) or 'npy';
    ``ldr_format``: 'jpg' (quality U{75..98}) or 'png' (lossless). Writes directly into the given
    folders (creating them); use :func:`ensure_synthetic_dataset` for crash-safe generation.
    """
    gt_format = gt_format.lower().lstrip(".")
    ldr_format = ldr_format.lower().lstrip(".")
    if gt_format not in GT_FORMATS:
        raise ValueError(f"gt_format must be one of {GT_FORMATS}, got {gt_format!r}")
    if ldr_format not in LDR_FORMATS:
        raise ValueError(f"ldr_format must be one of {LDR_FORMATS}, got {ldr_format!r}")
    if int(num_images) < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    h, w = _size2(size)
    dirs = [Path(dir_lq), Path(dir_gt), Path(dir_dgain)]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    for i in range(int(num_images)):
        rng = np.random.default_rng([int(seed), i])
        stem = f"im_{i + 1:06d}"
        hdr = generate_hdr_scene(rng, h, w, hdr_max)
        ldr8, dgain, gamma, info = synthesize_ldr(hdr, rng, hdr_max=hdr_max, noise=noise)
        (dirs[0] / f"{stem}.{ldr_format}").write_bytes(encode_ldr(ldr8, ldr_format, info["quality"]))
        write_hdr(dirs[1] / f"{stem}.{gt_format}", hdr)
        extra = {
            "strategy": "synthetic_gamma",
            "rule": info["rule"],
            "noise_k": f"{info['noise_k']:.6g}",
            "noise_sigma": f"{info['noise_sigma']:.6g}",
        }
        if ldr_format == "jpg":
            extra["jpeg_quality"] = info["quality"]
        (dirs[2] / f"{stem}.txt").write_text(format_dgain_text(dgain, gamma, **extra))



def ensure_synthetic_dataset(
    dir_lq: PathLike,
    dir_gt: PathLike,
    dir_dgain: PathLike,
    num_images: int,
    size: SizeLike,
    seed: int,
    gt_format: str = "hdr",
    ldr_format: str = "jpg",
    noise: bool = True,
    log: Optional[Callable[[str], None]] = print,
    labels: Sequence[str] = ("dataroot_lq", "dataroot_gt", "dataroot_dgain"),
) -> bool:
    """Make sure the three folders hold a complete synthetic LDR/HDR set; generate it if not.

    Returns True if data was generated, False if the folders were already usable (a complete
    synthetic set with the same configuration, or user data in all three folders). Raises
    ``FileExistsError`` if some folders hold user files and others would have to be generated
    (the generator never mixes with or deletes user data). ``labels`` name the folders in messages.
    """
    h, w = _size2(size)
    config = {
        "num_images": int(num_images),
        "size": [h, w],
        "seed": int(seed),
        "gt_format": gt_format.lower().lstrip("."),
        "ldr_format": ldr_format.lower().lstrip("."),
        "noise": bool(noise),
    }

    def generate(tmps: List[Path]) -> None:
        generate_dataset(*tmps, num_images=num_images, size=(h, w), seed=seed, gt_format=config["gt_format"],
                         ldr_format=config["ldr_format"], noise=noise)

    return ensure_generated_folders(
        [dir_lq, dir_gt, dir_dgain], labels, config, generate,
        f"synthetic LDR/HDR data set ({num_images} images of {h}x{w}, seed {seed})", log=log, lock_index=1,
        legacy_names=_legacy_names)


def _legacy_names(cfg: Mapping[str, Any], index: int) -> List[str]:
    """The files an older marker (without a file list) of :func:`ensure_synthetic_dataset` stands for."""
    ext = (cfg.get("ldr_format"), cfg.get("gt_format"), "txt")[index]
    return [f"im_{i + 1:06d}.{ext}" for i in range(int(cfg.get("num_images", 0)))]


def synthetic_arg_parser(description: str, default_size: int) -> argparse.ArgumentParser:
    """The command-line options every synthetic generator takes: ``--out``, ``--num-images``, ``--size``,
    ``--seed``, ``--no-noise`` (add the generator's own; read the size with :func:`size_arg`)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--num-images", type=int, default=24)
    ap.add_argument("--size", type=int, nargs="+", default=[default_size], help="S or H W")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-noise", action="store_true")
    return ap


def size_arg(values: Sequence[int]) -> SizeLike:
    """``--size S`` (square) or ``--size H W``."""
    return values[0] if len(values) == 1 else (int(values[0]), int(values[1]))


def main(argv: Optional[Sequence[str]] = None) -> None:
    """CLI: generate ``<out>/jpg``, ``<out>/hdr`` (or ``exr``/``npy``) and ``<out>/dgain_info``."""
    ap = synthetic_arg_parser(__doc__.split("\n")[0], default_size=192)
    ap.add_argument("--gt-format", choices=GT_FORMATS, default="hdr")
    ap.add_argument("--ldr-format", choices=LDR_FORMATS, default="jpg")
    a = ap.parse_args(argv)
    out = Path(a.out)
    made = ensure_synthetic_dataset(out / "jpg", out / "hdr", out / "dgain_info", a.num_images, size_arg(a.size),
                                    a.seed, gt_format=a.gt_format, ldr_format=a.ldr_format, noise=not a.no_noise)
    if not made:
        print(f"{out}: already complete, nothing to do")


if __name__ == "__main__":
    main()

