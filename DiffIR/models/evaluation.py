"""The one evaluation loop: validation during training and ``test.py`` both run :func:`evaluate_dataset`.

For every image it runs the model (``feed_data`` / ``test`` / ``get_current_visuals``), scores each
``val.metrics`` entry in the domain the metric declares, optionally scores the network *input* the same way
(the "baseline": the plain inverse tone mapping of the LDR), and optionally writes the output as a linear HDR
file plus a tone-mapped PNG preview. The first ``val.num_preview_images`` images of each set also become preview rows
(input | output | GT | error map, see :func:`preview_row`) that the callers write as one PNG grid per set
(:func:`publish_previews`), which training also hands to its log sinks.

Domains (see ``DiffIR.metrics.metric_domain``):

* ``network`` (PSNR/SSIM, BasicSR semantics): the network's tone-mapped domain clamped to [0, 1] and rounded to
  8 bit, exactly what validation always scored.
* ``linear`` (PU21, PSNR-μ, PSNR-L): the dataset's tone curve (``tone_curve``/``hdr_max``) inverted, giving values
  in the GT files' units (cd/m² under the AIM convention, peak ``hdr_max`` = 1000). The output and the input are
  first clamped to [0, 1] in the network domain, i.e. to [0, hdr_max] linear, as the original fork does at
  inference; the GT is only clamped at 0 (as the dataset does), so GT values above ``hdr_max`` are kept.
"""
from __future__ import annotations

import logging
import os
import os.path as osp
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from DiffIR.metrics import calculate_metric, metric_domain
from DiffIR.utils.errors import OptionError
from DiffIR.utils.hdr_io import write_hdr, write_ldr
from DiffIR.utils.img_util import make_preview_grid, tensor2img
from DiffIR.config.sections import ValOptions
from DiffIR.config.schema import crop_border_errors, raise_errors, tone_domain
from DiffIR.utils.tone_mapping import TONE_CURVES, display_tone_map, inverse_tone_curve

__all__ = ["ToneDomain", "EvalResult", "output_suffix", "evaluate_dataset",
           "PREVIEW_ERROR_SCALE", "PREVIEW_PANEL_SIZE", "preview_domains", "error_map", "preview_row",
           "publish_previews", "PreviewGrid", "ValidationResult", "write_preview", "check_crop_borders"]

logger = logging.getLogger("DiffIR")


def check_crop_borders(metrics: Mapping[str, Any], dataset: Any) -> None:
    """Refuse, before anything is trained or scored, a ``val:metrics`` ``crop_border`` that leaves nothing of the
    smallest image of ``dataset`` (its score would be nan; see :func:`crop_border_errors`)."""
    if metrics:
        raise_errors(crop_border_errors(metrics, dataset.smallest_image(), getattr(dataset, "where", "datasets")))


@dataclass(frozen=True)
class ToneDomain:
    """The dataset's tone curve, to map network-domain tensors back to linear HDR (GT file units)."""

    curve: str = "log"
    hdr_max: float = 1000.0

    @classmethod
    def from_dataset(cls, dataset: Any) -> "ToneDomain":
        """Read ``tone_curve``/``hdr_max`` from the dataset (its attributes, else its options, else defaults)."""
        opt = getattr(dataset, "opt", None) or {}
        read = {key: getattr(dataset, key) for key in ("tone_curve", "hdr_max") if hasattr(dataset, key)}
        return cls.from_options({**opt, **read})

    @classmethod
    def from_options(cls, opt: Mapping[str, Any]) -> "ToneDomain":
        """The domain of a dataset option section (``tone_curve`` default log, ``hdr_max`` default 1000)."""
        domain = tone_domain(opt)
        if domain["tone_curve"] not in TONE_CURVES:
            raise OptionError(f"tone_curve '{domain['tone_curve']}' of dataset '{opt.get('name')}' cannot be inverted "
                              f"for HDR metrics; use one of {', '.join(TONE_CURVES)}")
        return cls(domain["tone_curve"], domain["hdr_max"])

    def to_linear(self, t: torch.Tensor, clip_top: bool = True) -> np.ndarray:
        """``C x H x W`` (or ``1 x C x H x W``) network-domain tensor → float32 ``H x W x C`` linear RGB.

        Clamped at 0, and at 1 (= ``hdr_max``) when ``clip_top``.
        """
        t = t.detach().float().cpu()
        if t.dim() == 4:
            t = t[0]
        t = t.clamp(0.0, 1.0) if clip_top else t.clamp_min(0.0)
        lin = inverse_tone_curve(t, self.curve, self.hdr_max)
        return np.ascontiguousarray(lin.permute(1, 2, 0).numpy(), dtype=np.float32)


@dataclass
class EvalResult:
    """Metrics of one evaluation set: means over the images with GT, the input's own scores, per-image rows."""

    dataset: str
    images: int = 0
    has_gt: bool = True
    metrics: Dict[str, float] = field(default_factory=dict)
    baseline: Dict[str, float] = field(default_factory=dict)
    per_image: List[Dict[str, Any]] = field(default_factory=list)
    saved: List[str] = field(default_factory=list)
    previews: List[List[torch.Tensor]] = field(default_factory=list)  # rows of display panels (preview_row)


def output_suffix(suffix: Optional[str], default: str) -> str:
    """BasicSR's ``val.suffix``: ``~`` → ``default`` (run name or iteration), ``''`` → no suffix."""
    return default if suffix is None else str(suffix)


def _stem(data: Mapping[str, Any], b: int, index: int) -> str:
    paths = data.get("lq_path")
    if paths is None:
        return f"{index:06d}"
    path = paths[b] if isinstance(paths, (list, tuple)) else paths
    return osp.splitext(osp.basename(str(path)))[0]


class _Views:
    """Lazily built renderings of one image (8-bit network domain / linear HDR), each made at most once."""

    def __init__(self, tensor: torch.Tensor, domain: ToneDomain, clip_top: bool) -> None:
        self.tensor, self.domain, self.clip_top = tensor, domain, clip_top
        self._cache: Dict[str, np.ndarray] = {}

    def __call__(self, kind: str) -> np.ndarray:
        if kind not in self._cache:
            self._cache[kind] = (self.domain.to_linear(self.tensor, self.clip_top) if kind == "linear"
                                 else tensor2img(self.tensor))
        return self._cache[kind]


def _score(metrics: Mapping[str, Mapping[str, Any]], img: _Views, ref: _Views) -> Dict[str, float]:
    return {name: float(calculate_metric({"img": img(metric_domain(m["type"])), "img2": ref(metric_domain(m["type"]))}, m))
            for name, m in metrics.items()}


def _mean(rows: List[Dict[str, float]]) -> Dict[str, float]:
    if not rows:
        return {}
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def write_preview(path: str, linear: np.ndarray, hdr_max: float) -> None:
    """A tone-mapped PNG of a linear HDR image for people to look at (Reinhard, ``hdr_max`` → white)."""
    write_ldr(path, display_tone_map(linear, "reinhard", hdr_max=hdr_max))


def _refuse_existing(path: str) -> None:
    if osp.lexists(path):
        raise FileExistsError(f"Output '{path}' already exists (two images with the same name in one set?); it is "
                              "not overwritten. Give every image of a set its own file name.")


def _save_outputs(linear: np.ndarray, hdr_max: float, base: str, fmt: str, preview: bool,
                  overwrite: bool) -> List[str]:
    """``BASE.<fmt>`` (linear HDR) and, with ``preview``, ``BASE.png``; returns the written paths."""
    os.makedirs(osp.dirname(base), exist_ok=True)
    targets = [f"{base}.{fmt}"] + ([f"{base}.png"] if preview else [])
    if not overwrite:
        for target in targets:
            _refuse_existing(target)
    write_hdr(targets[0], linear)
    if preview:
        write_preview(targets[1], linear, hdr_max)
    return targets


def evaluate_dataset(model: Any, dataloader: Any, val: ValOptions, *,
                     baseline: bool = True, save_dir: Optional[str] = None, suffix: str = "",
                     desc: Optional[str] = None, overwrite: bool = True) -> EvalResult:
    """Run ``model`` over ``dataloader`` and score it with ``val.metrics``.

    ``baseline``: also score the network input against the GT. ``save_dir``: write ``<stem>[_<suffix>].<fmt>``
    (linear HDR in the GT files' units; ``val.save_format``: hdr, exr or npy) and ``<stem>[_<suffix>].png``
    (a Reinhard tone-mapped preview, ``val.save_preview: false`` to skip). Images without GT are run and saved
    but not scored. ``result.previews`` holds the display rows of the first ``val.num_preview_images`` (default 4)
    images, for :func:`publish_previews`.
    ``overwrite=False`` (``test.py``) refuses to replace an existing output file; validation during
    training rewrites its own outputs of an iteration it validates again after a resume.
    """
    metrics = val.metrics
    dataset = dataloader.dataset
    name = (getattr(dataset, "opt", None) or {}).get("name", "val")
    domain = ToneDomain.from_dataset(dataset)
    fmt, preview = val.save_format, val.save_preview
    tail = f"_{suffix}" if suffix else ""
    num_previews, (out_domain, in_domain) = val.num_preview_images, preview_domains(dataset)
    result = EvalResult(dataset=name)
    scored: List[Dict[str, float]] = []
    base_rows: List[Dict[str, float]] = []
    pbar = tqdm(total=len(dataloader), unit="image", desc=desc or f"Validate {name}",
                disable=not val.pbar, leave=False)
    for index, data in enumerate(dataloader):
        model.feed_data(data)
        model.test()
        visuals = model.get_current_visuals()
        for b in range(visuals["result"].shape[0]):
            stem = _stem(data, b, index)
            out = _Views(visuals["result"][b], domain, clip_top=True)
            row: Dict[str, Any] = {"image": stem}
            if "gt" in visuals and metrics:
                gt = _Views(visuals["gt"][b], domain, clip_top=False)
                row["metrics"] = _score(metrics, out, gt)
                scored.append(row["metrics"])
                if baseline:
                    row["input"] = _score(metrics, _Views(visuals["lq"][b], domain, clip_top=True), gt)
                    base_rows.append(row["input"])
            elif "gt" not in visuals:
                result.has_gt = False
            if save_dir is not None:
                result.saved += _save_outputs(out("linear"), domain.hdr_max, osp.join(save_dir, f"{stem}{tail}"),
                                              fmt, preview, overwrite)
            if len(result.previews) < num_previews:  # the first images in dataset order: the same at every validation
                result.previews.append(preview_row(visuals["lq"][b], visuals["result"][b],
                                                   visuals["gt"][b] if "gt" in visuals else None,
                                                   domain=out_domain, input_domain=in_domain))
            result.per_image.append(row)
            result.images += 1
        pbar.update(1)
    pbar.close()
    if not result.has_gt and metrics:
        logger.warning(f"{name}: some images have no ground truth, so they were not scored")
    result.metrics = _mean(scored)
    result.baseline = _mean(base_rows)
    return result


# ----------------------------------------------------------------------------------------------- preview grids
PREVIEW_ERROR_SCALE = 0.1
"""Error-map scale: a mean absolute error of 0.1 in the network domain (the log curve: ln(1001) · 0.1 ≈ 0.69, i.e.
a factor of about 2 in 1 + radiance) is the top of the colour map; the scale is fixed so maps of different
iterations compare."""
PREVIEW_PANEL_SIZE = 512
"""Longest side of each preview panel in pixels; larger images are shrunk (area averaging), never enlarged."""


def preview_domains(dataset: Any) -> Tuple[Optional[ToneDomain], Optional[ToneDomain]]:
    """How to display a set's (output/GT, input) tensors: their tone domain, or None where they display as is.

    HDR sets (a ``tone_curve``) go back to linear HDR and through the one display tone map; sets without one (the
    deblurring task's sRGB images) and an input that is not linearised (``lq_linearize: false``) are shown as is.
    """
    opt = getattr(dataset, "opt", None) or {}
    if not hasattr(dataset, "tone_curve") and "tone_curve" not in opt:
        return None, None
    domain = ToneDomain.from_dataset(dataset)
    linearised = bool(getattr(dataset, "lq_linearize", opt.get("lq_linearize", True)))
    return domain, (domain if linearised else None)


def _display(t: torch.Tensor, domain: Optional[ToneDomain], clip_top: bool) -> torch.Tensor:
    """Network-domain ``C x H x W`` → display ``3 x H x W`` in [0, 1]: linear HDR, then the Reinhard preview map
    (``hdr_max`` → white, gamma 2.2) that the saved PNG previews use; as is without a domain."""
    if domain is None:
        return t.detach().float().cpu().clamp(0.0, 1.0)
    shown = display_tone_map(domain.to_linear(t, clip_top), "reinhard", hdr_max=domain.hdr_max)
    return torch.from_numpy(np.ascontiguousarray(shown, dtype=np.float32)).permute(2, 0, 1)


def _shrink(t: torch.Tensor, max_size: int) -> torch.Tensor:
    h, w = t.shape[-2:]
    if max(h, w) <= max_size:
        return t
    s = max_size / max(h, w)
    return F.interpolate(t[None], size=(max(1, round(h * s)), max(1, round(w * s))), mode="area")[0]


def error_map(result: torch.Tensor, gt: torch.Tensor, scale: float = PREVIEW_ERROR_SCALE,
              max_size: Optional[int] = None) -> torch.Tensor:
    """``|output − GT|`` per pixel in the network domain, mean over channels, ``scale`` → 1, as a ``3 x H x W`` inferno
    colour map in [0, 1] (black = no error, yellow-white = ``scale`` or more).

    Output clamped to [0, 1] and GT at 0, as the metrics see them; shrunk to ``max_size`` before colouring.
    """
    err = (result.detach().float().cpu().clamp(0.0, 1.0) - gt.detach().float().cpu().clamp_min(0.0)).abs()
    err = err.mean(dim=0, keepdim=True)
    if max_size:
        err = _shrink(err, max_size)
    grey = (err[0] / float(scale)).clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8).numpy()
    rgb = cv2.applyColorMap(grey, cv2.COLORMAP_INFERNO)[..., ::-1]
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float().div_(255.0)


def preview_row(lq: torch.Tensor, result: torch.Tensor, gt: Optional[torch.Tensor], *,
                domain: Optional[ToneDomain], input_domain: Optional[ToneDomain],
                max_size: int = PREVIEW_PANEL_SIZE) -> List[torch.Tensor]:
    """Display panels of one image: input | output | GT | error map (input | output without GT).

    Output and input are clamped to ``hdr_max`` as the metrics and saved outputs are; the GT is not, so the display
    map clips it. Each panel is at most ``max_size`` pixels on its longest side.
    """
    panels = [_display(lq, input_domain, True), _display(result, domain, True)]
    if gt is not None:
        panels.append(_display(gt, domain, False))
    panels = [_shrink(p, max_size) for p in panels]
    if gt is not None:
        panels.append(error_map(result, gt, max_size=max_size))
    return panels


@dataclass(frozen=True)
class PreviewGrid:
    """The preview grid of one evaluation: the PNG written and its pixels (H x W x 3 RGB uint8), the image the
    training loop hands to its sinks."""

    path: str
    image: np.ndarray


@dataclass(frozen=True)
class ValidationResult:
    """What one validation during training found, for the loop to record: the metric means, the input's scores
    when they were computed at this validation (once per set), and the preview grid written."""

    dataset: str
    metrics: Dict[str, float] = field(default_factory=dict)
    baseline: Dict[str, float] = field(default_factory=dict)
    preview: Optional[PreviewGrid] = None


def publish_previews(result: EvalResult, folder: str, suffix: str = "") -> Optional[PreviewGrid]:
    """Write ``result.previews`` as one grid ``<folder>/preview[_<suffix>].png`` (atomically); None without
    previews. The grid is rounded once, so a sink shows exactly the pixels on disk."""
    if not result.previews:
        return None
    grid = tensor2img(make_preview_grid(result.previews, max_rows=len(result.previews)))
    path = osp.join(folder, f"preview_{suffix}.png" if suffix else "preview.png")
    write_ldr(path, grid)
    return PreviewGrid(path, grid)
