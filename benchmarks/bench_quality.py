"""Does a trained model beat doing nothing on real photographs? Stage 1 + stage 2 in a fixed CPU budget.

    python benchmarks/bench_quality.py                       # the shipped recipe (shrunk), about 10 minutes
    python benchmarks/bench_quality.py --variants all        # plus the ablation of each recipe item
    python benchmarks/bench_quality.py --variants fork        # a user's option file written for the original fork
    python benchmarks/bench_quality.py --headroom-only        # where a model could gain at all (no training)

1. Builds an AIM-layout set (``jpg/``, ``hdr/``, ``dgain_info/``) from the real HDR photographs in
   ``../shared/data/real_hdr/`` (or ``--real``): each photograph is halved (area), scaled to the AIM convention
   (cd/m², its 99.9th luminance percentile at 300-900, clipped at the peak 1000) and cut into crops; each crop is cut
   from its own exposure of the whole photograph, made with the dataset's forward model
   (``clip(hdr/1000·dgain)^(1/gamma)``, 8-bit JPEG; no synthetic noise: the photographs carry their own; dgain such
   that 0.5-15 % of the photograph clips,
   :func:`DiffIR.data.synthetic_hdr.synthesize_ldr`). Training crops come from some photographs,
   the held-out crops from the others (``--held-out``).
2. Trains stage 1 and then stage 2 with ``train_hdr.py``'s pipeline from the shipped option files
   (``options/train_DiffIRs1_hdr.yml``, ``options/train_DiffIRs2_hdr.yml``), shrunk to a CPU: a small DiffIR, short
   schedules, 64² patches; the recipe (losses, tone curve, EMA, region weights, identity start) is the files'.
   The perceptual loss is dropped (its VGG weights are not shipped).
3. Scores the held-out crops with ``test.py``'s pipeline: PU21-PSNR, PU21-SSIM and PSNR-μ of the stage-2
   (LDR-only) model with its EMA weights, with its raw weights, with the flip self-ensemble ×8, and of the plain
   inverse tone mapping of the LDR (the network input).

First prints the headroom of each image (:func:`headroom`: what a perfect model of the clipped, crushed or other
pixels would score, and what a constant highlight boost scores), then a table per variant and image and the means; ``--json FILE`` writes everything. Figures: docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import copy
import glob
import json
import os
import os.path as osp
import shutil
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import cv2
import numpy as np
import yaml

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

from DiffIR.data.dgain import read_dgain_file  # noqa: E402
from DiffIR.data.synthetic_hdr import encode_ldr, synthesize_ldr  # noqa: E402
from DiffIR.metrics.hdr_metrics import calculate_pu21_psnr  # noqa: E402
from DiffIR.utils.hdr_io import read_hdr, write_hdr  # noqa: E402

REAL_DIR = osp.join(osp.dirname(ROOT), "shared", "data", "real_hdr")
HELD_OUT = ("GoldenGate", "Desk")
HDR_MAX = 1000.0
_LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)

METRICS = {
    "pu21_psnr": {"type": "calculate_pu21_psnr"},
    "pu21_ssim": {"type": "calculate_pu21_ssim"},
    "psnr_mu": {"type": "calculate_psnr_mu"},
}
SMALL_NET = {"n_encoder_res": 2, "dim": 16, "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1,
             "heads": [1, 2, 4, 8], "ffn_expansion_factor": 2}


# ------------------------------------------------------------------------------------------------------ data
def _scaled(hdr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Half resolution, AIM units: the 99.9th luminance percentile at 300-900 cd/m², clipped at the peak 1000."""
    h, w = hdr.shape[:2]
    hdr = cv2.resize(np.maximum(hdr, 0.0), (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    top = float(np.percentile(hdr @ _LUMA, 99.9))
    scale = float(rng.uniform(300.0, 900.0)) / max(top, 1e-6)
    return np.clip(hdr * np.float32(scale), 0.0, HDR_MAX).astype(np.float32)


def _crop_pairs(img: np.ndarray, size: int, n: int, rng: np.random.Generator
                ) -> List[Tuple[np.ndarray, np.ndarray, float, float, int]]:
    """``n`` random crops, each of its own exposure of the whole photograph (as a camera exposes a scene):
    ``(hdr, ldr_uint8, dgain, gamma, jpeg_quality)``."""
    h, w = img.shape[:2]
    out = []
    for _ in range(n):
        ldr8, dgain, gamma, info = synthesize_ldr(img, rng, hdr_max=HDR_MAX, noise=False, rule="clip_fraction")
        y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        window = (slice(y, y + size), slice(x, x + size))
        out.append((np.ascontiguousarray(img[window]), np.ascontiguousarray(ldr8[window]), dgain, gamma,
                    int(info["quality"])))
    return out


def _write_pair(folder: str, stem: str, pair: Tuple[np.ndarray, np.ndarray, float, float, int]) -> None:
    hdr, ldr8, dgain, gamma, quality = pair
    for sub in ("hdr", "jpg", "dgain_info"):
        os.makedirs(osp.join(folder, sub), exist_ok=True)
    write_hdr(osp.join(folder, "hdr", f"{stem}.hdr"), hdr)
    with open(osp.join(folder, "jpg", f"{stem}.jpg"), "wb") as f:
        f.write(encode_ldr(ldr8, "jpg", quality))
    with open(osp.join(folder, "dgain_info", f"{stem}.txt"), "w") as f:
        f.write(f"dgain: {dgain}\ngamma: {gamma}\n")


def build_real_set(real_dir: str, out: str, held_out: Tuple[str, ...], seed: int = 0, train_crops: int = 12,
                   val_crops: int = 4, train_size: int = 160, val_size: int = 192, extra_train_crops: int = 0
                   ) -> Dict[str, Any]:
    """``out/train`` and ``out/val`` in the AIM layout; returns what was built (photographs, crop counts).

    ``extra_train_crops`` more crops (and exposures) per training photograph come from a second random stream, so
    that the held-out crops and the first ``train_crops`` stay those of ``seed``."""
    files = sorted(glob.glob(osp.join(real_dir, "*.exr")) + glob.glob(osp.join(real_dir, "*.hdr")))
    if not files:
        raise SystemExit(f"No .exr/.hdr photographs in {real_dir}: pass --real FOLDER")
    names = [osp.splitext(osp.basename(p))[0] for p in files]
    missing = [h for h in held_out if h not in names]
    if missing:
        raise SystemExit(f"--held-out {', '.join(missing)} not among the photographs in {real_dir}: {', '.join(names)}")
    if osp.isdir(out):
        shutil.rmtree(out)
    rng = np.random.default_rng(seed)
    built: Dict[str, Any] = {"train": [], "val": []}
    for path, name in zip(files, names):
        img = _scaled(read_hdr(path), rng)
        phase, n, size = ("val", val_crops, val_size) if name in held_out else ("train", train_crops, train_size)
        for i, pair in enumerate(_crop_pairs(img, size, n, rng)):
            _write_pair(osp.join(out, phase), f"{name}_{i:02d}", pair)
        if phase == "train" and extra_train_crops:
            extra = np.random.default_rng([seed, len(built["train"]), 1])
            for i, pair in enumerate(_crop_pairs(img, size, extra_train_crops, extra), start=n):
                _write_pair(osp.join(out, phase), f"{name}_{i:02d}", pair)
        built[phase].append(name)
    return built


# ------------------------------------------------------------------------------------------------------ headroom
BOOSTS = (1.2, 1.4, 1.7, 2.0)


def _itm_pairs(folder: str):
    """``(stem, gt, ldr in [0, 1], itm)`` of an AIM-layout folder; ITM = ldr^gamma·1000/dgain."""
    for path in sorted(glob.glob(osp.join(folder, "hdr", "*.hdr"))):
        stem = osp.splitext(osp.basename(path))[0]
        ldr = cv2.cvtColor(cv2.imread(osp.join(folder, "jpg", f"{stem}.jpg")), cv2.COLOR_BGR2RGB)
        ldr = ldr.astype(np.float32) / np.float32(255.0)
        d = read_dgain_file(osp.join(folder, "dgain_info", f"{stem}.txt"))
        itm = ldr ** np.float32(d["gamma"]) * np.float32(HDR_MAX / d["dgain"])
        yield stem, read_hdr(path), ldr, itm


def headroom(folder: str) -> Dict[str, Dict[str, float]]:
    """Where a model can beat ITM, per image (PU21-PSNR, dB): ITM; ITM with the GT put in where the LDR is
    clipped (brightest channel ≥ 0.95), crushed (< 0.05) or in between (what a perfect model of each region would
    score); and ITM with a constant highlight boost ``c`` ramped in above 0.9 (the simplest highlight model)."""
    out = {}
    for stem, gt, ldr, itm in _itm_pairs(folder):
        level = ldr.max(axis=2)
        regions = {"clipped": level >= 0.95, "crushed": level < 0.05}
        regions["between"] = ~(regions["clipped"] | regions["crushed"])
        row = {"itm": calculate_pu21_psnr(itm, gt)}
        for name, mask in regions.items():
            fixed = itm.copy()
            fixed[mask] = gt[mask]
            row[f"perfect_{name}"] = calculate_pu21_psnr(fixed, gt)
        ramp = np.clip((level[..., None] - np.float32(0.9)) / np.float32(0.1), 0.0, 1.0)
        for c in BOOSTS:
            row[f"boost_{c}"] = calculate_pu21_psnr(itm * (1 + np.float32(c - 1) * ramp), gt)
        out[stem] = row
    return out


def headroom_report(phase: str, rows: Dict[str, Dict[str, float]]) -> str:
    keys = list(next(iter(rows.values())))
    lines = [f"== headroom ({phase}): PU21-PSNR of ITM, of ITM with a perfect region, of a constant highlight boost",
             f"{'image':<20}" + "".join(f"{k:>16}" for k in keys)]
    lines += [f"{stem:<20}" + "".join(f"{r[k]:>16.2f}" for k in keys) for stem, r in rows.items()]
    lines.append(f"{'mean':<20}" + "".join(f"{np.mean([r[k] for r in rows.values()]):>16.2f}" for k in keys))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------ recipe
def _dataset(data: str, phase: str, base: Dict[str, Any]) -> Dict[str, Any]:
    d = copy.deepcopy(base)
    for kind, sub in (("gt", "hdr"), ("lq", "jpg"), ("dgain", "dgain_info")):
        d[f"dataroot_{kind}"] = osp.join(data, phase, sub)
    d.pop("synthetic", None)
    return d


def shrink(opt: Dict[str, Any], data: str, name: str, iters: int) -> Dict[str, Any]:
    """A shipped option file sized for a CPU: small network, 64² patches, batch 4, a schedule of ``iters``."""
    opt = copy.deepcopy(opt)
    opt["name"] = name
    train_set = _dataset(data, "train", opt["datasets"]["train"])
    train_set.update({"gt_size": 64, "batch_size_per_gpu": 4, "num_worker_per_gpu": 1, "dataset_enlarge_ratio": 50})
    val_set = _dataset(data, "val", opt["datasets"]["val"])
    opt["datasets"] = {"train": train_set, "val": val_set}
    for key in ("network_g", "network_S1"):
        if key in opt:
            opt[key].update(SMALL_NET)
    t = opt["train"]
    t.pop("perceptual_opt", None)  # needs VGG weights that are not shipped
    t["total_iter"] = iters
    sched = t.get("scheduler") or {}
    if sched.get("type") == "CosineAnnealingWarmupRestarts":
        sched.update({"first_cycle_steps": iters, "cycle_mult": 1.0, "max_lr": 5e-4, "min_lr": 1e-5,
                      "warmup_steps": max(1, iters // 20), "gamma": 1.0})
        t["optim_g"]["lr"] = 5e-4
        t["warmup_iter"] = -1
    if "encoder_iter" in t:  # stage 2: a third prior-only, the rest joint, one decay in each phase
        t["encoder_iter"] = iters // 3
        t["lr_encoder"] = t["lr_sr"] = 5e-4
        t["lr_decay_encoder"] = max(1, iters // 6)
        t["lr_decay_sr"] = max(1, iters // 3)
        t["scheduler"] = {"type": "MultiStepLR", "milestones": [iters + 1], "gamma": 0.5}
    opt["val"] = {"val_freq": iters, "save_img": False, "pbar": False, "num_preview_images": 0,
                  "metrics": copy.deepcopy(METRICS)}
    opt["logger"] = {"print_freq": max(1, iters // 4), "save_checkpoint_freq": iters, "use_tb_logger": False,
                     "language": "en"}
    return opt


def _fork_recipe(s1: Dict[str, Any], s2: Dict[str, Any]) -> None:
    """A user's option file written for the original fork: L1 only, the log tone curve, no region weights."""
    for o in (s1, s2):
        t = o["train"]
        for k in [k for k in t if k.endswith("_opt") and k not in ("pixel_opt", "kd_opt")]:
            t.pop(k)
        t["pixel_opt"] = {"type": "L1Loss", "loss_weight": 1.0, "reduction": "mean"}
        t.pop("region_weights", None)
        for d in o["datasets"].values():
            d["tone_curve"] = "log"


def _drop_loss(key: str) -> Callable[[Dict[str, Any], Dict[str, Any]], None]:
    def change(s1: Dict[str, Any], s2: Dict[str, Any]) -> None:
        for o in (s1, s2):
            o["train"].pop(key, None)
    return change


def _set_train(key: str, value: Any) -> Callable[[Dict[str, Any], Dict[str, Any]], None]:
    def change(s1: Dict[str, Any], s2: Dict[str, Any]) -> None:
        for o in (s1, s2):
            o["train"][key] = copy.deepcopy(value)
    return change


def _tone(curve: str) -> Callable[[Dict[str, Any], Dict[str, Any]], None]:
    def change(s1: Dict[str, Any], s2: Dict[str, Any]) -> None:
        for o in (s1, s2):
            for d in o["datasets"].values():
                d["tone_curve"] = curve
            for key in ("network_g", "network_S1"):  # the gate reads the network input in the datasets' domain
                if isinstance(o.get(key, {}).get("highlight_gate"), dict):
                    o[key]["highlight_gate"]["tone_curve"] = curve
    return change


def _no_identity(s1: Dict[str, Any], s2: Dict[str, Any]) -> None:
    for o in (s1, s2):
        for key in ("network_g", "network_S1"):
            if key in o:
                o[key]["identity_init"] = False


def _gate(value: Any) -> Callable[[Dict[str, Any], Dict[str, Any]], None]:
    def change(s1: Dict[str, Any], s2: Dict[str, Any]) -> None:
        for o in (s1, s2):
            for key in ("network_g", "network_S1"):
                if key in o:
                    if value is None:
                        o[key].pop("highlight_gate", None)
                    else:
                        o[key]["highlight_gate"] = copy.deepcopy(value)
    return change


#: name → change of the (shrunk) shipped recipe; "shipped" is the recipe itself
VARIANTS: Dict[str, Optional[Callable[[Dict[str, Any], Dict[str, Any]], None]]] = {
    "shipped": None,
    "fork": _fork_recipe,
    "no_pu21_loss": _drop_loss("pu21_opt"),
    "no_fft_loss": _drop_loss("fft_opt"),
    "no_ssim_loss": _drop_loss("ssim_opt"),
    "plus_region_weights": _set_train("region_weights", {"highlight": 4.0, "shadow": 2.0,
                                                         "highlight_threshold": 0.9, "shadow_threshold": 0.05}),
    "no_ema_warmup": _set_train("ema_warmup", False),
    "no_identity_init": _no_identity,
    "gate": _gate({"threshold": 0.7}),
    "gate_in_training": _gate({"threshold": 0.7, "in_training": True}),
    "no_gate": _gate(None),
    "tone_log": _tone("log"),
    "tone_pu21": _tone("pu21"),
    "tone_pq": _tone("pq"),
    "tone_mu_law": _tone("mu_law"),
}


# ------------------------------------------------------------------------------------------------------ runs
def _write(opt: Dict[str, Any], path: str) -> str:
    with open(path, "w") as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return path


def _train(work: str, opt: Dict[str, Any]) -> float:
    from DiffIR.train_pipeline_hdr import train_pipeline

    shutil.rmtree(osp.join(work, "experiments", opt["name"]), ignore_errors=True)
    start = time.time()
    train_pipeline(work, ["-opt", _write(opt, osp.join(work, f"{opt['name']}.yml"))])
    return time.time() - start


def _evaluate(work: str, s2: Dict[str, Any], weights: str, param_key: str, ensemble: int) -> Dict[str, Any]:
    from DiffIR.test_pipeline import test_pipeline

    name = f"{s2['name']}_{param_key}_x{ensemble}"
    opt = {"name": name, "model_type": s2["model_type"], "num_gpu": s2.get("num_gpu", "auto"),
           "manual_seed": s2.get("manual_seed", 0),
           "datasets": {"test_1": {k: v for k, v in s2["datasets"]["val"].items()}},
           "network_g": s2["network_g"],
           "path": {"pretrain_network_g": weights, "param_key_g": param_key, "strict_load_g": True},
           "val": {"save_img": False, "pbar": False, "num_preview_images": 0, "metrics": copy.deepcopy(METRICS),
                   **({"self_ensemble": ensemble} if ensemble else {})},
           "logger": {"language": "en"}}
    opt["datasets"]["test_1"]["name"] = "held_out"
    shutil.rmtree(osp.join(work, "results", name), ignore_errors=True)
    res = test_pipeline(work, ["-opt", _write(opt, osp.join(work, f"{name}.yml"))])["results"]["held_out"]
    return {"mean": res.metrics, "input": res.baseline,
            "per_image": {r["image"]: {"model": r["metrics"], "input": r.get("input", {})} for r in res.per_image}}


def run_variant(work: str, data: str, variant: str, s1_iters: int, s2_iters: int, ensemble: bool) -> Dict[str, Any]:
    """Train both stages of one variant and score its stage-2 model (EMA, raw, ×8 ensemble) and the input."""
    with open(osp.join(ROOT, "options", "train_DiffIRs1_hdr.yml")) as f:
        s1 = shrink(yaml.safe_load(f), data, f"bq_{variant}_s1", s1_iters)
    with open(osp.join(ROOT, "options", "train_DiffIRs2_hdr.yml")) as f:
        s2 = shrink(yaml.safe_load(f), data, f"bq_{variant}_s2", s2_iters)
    change = VARIANTS[variant]
    if change is not None:
        change(s1, s2)
    s1_latest = osp.join(work, "experiments", s1["name"], "models", "net_g_latest.pth")
    s2["path"].update({"pretrain_network_g": None, "pretrain_network_S1": s1_latest, "strict_load_g": True})
    seconds = {"s1": _train(work, s1), "s2": _train(work, s2)}
    weights = osp.join(work, "experiments", s2["name"], "models", "net_g_latest.pth")
    out: Dict[str, Any] = {"variant": variant, "seconds": seconds,
                           "ema": _evaluate(work, s2, weights, "params_ema", 0),
                           "raw": _evaluate(work, s2, weights, "params", 0)}
    if ensemble:
        out["ema_x8"] = _evaluate(work, s2, weights, "params_ema", 8)
    return out


# ------------------------------------------------------------------------------------------------------ report
def _row(label: str, scores: Dict[str, float]) -> str:
    return f"{label:<28}" + "".join(f"{scores.get(m, float('nan')):>12.4f}" for m in METRICS)


def report(result: Dict[str, Any]) -> str:
    lines = [f"== {result['variant']}: stage 1 {result['seconds']['s1']:.0f} s + stage 2 {result['seconds']['s2']:.0f} s "
             "of training", f"{'image / weights':<28}" + "".join(f"{m:>12}" for m in METRICS)]
    ema = result["ema"]
    for image, rows in ema["per_image"].items():
        lines.append(_row(f"{image} ITM", rows["input"]))
        lines.append(_row(f"{image} model", rows["model"]))
    lines.append(_row("mean ITM (input)", ema["input"]))
    for key, label in (("ema", "mean model (EMA)"), ("raw", "mean model (raw)"), ("ema_x8", "mean model (EMA, x8)")):
        if key in result:
            lines.append(_row(label, result[key]["mean"]))
    gains = [rows["model"]["pu21_psnr"] - rows["input"]["pu21_psnr"] for rows in ema["per_image"].values()]
    lines.append(f"PU21-PSNR gain over ITM: mean {np.mean(gains):+.3f} dB, worst image {min(gains):+.3f} dB")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--real", default=REAL_DIR, help="folder of real HDR photographs (.exr/.hdr)")
    p.add_argument("--held-out", nargs="+", default=list(HELD_OUT), help="photographs whose crops are held out")
    p.add_argument("--work", default=osp.join("/tmp", "diffir_bench_quality"), help="scratch folder (replaced)")
    p.add_argument("--variants", nargs="+", default=["shipped"], help=f"any of {', '.join(VARIANTS)}, or all")
    p.add_argument("--s1-iters", type=int, default=1300)
    p.add_argument("--s2-iters", type=int, default=1100)
    p.add_argument("--no-ensemble", action="store_true", help="skip the x8 self-ensemble evaluation")
    p.add_argument("--seed", type=int, default=0, help="seed of the data set (crops, exposures, noise)")
    p.add_argument("--extra-train-crops", type=int, default=0,
                   help="more training crops (each its own exposure) per training photograph; held-out set unchanged")
    p.add_argument("--json", help="write every figure to this JSON file")
    p.add_argument("--headroom-only", action="store_true", help="build the set, print the headroom, train nothing")
    args = p.parse_args(argv)
    variants = list(VARIANTS) if args.variants == ["all"] else args.variants
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)} or all")
    os.makedirs(args.work, exist_ok=True)
    data = osp.join(args.work, "data")
    built = build_real_set(args.real, data, tuple(args.held_out), seed=args.seed,
                           extra_train_crops=args.extra_train_crops)
    print(f"data: train crops from {', '.join(built['train'])}; held out: {', '.join(built['val'])} ({data})")
    built["headroom"] = {phase: headroom(osp.join(data, phase)) for phase in ("train", "val")}
    for phase in ("train", "val"):
        print(headroom_report(phase, built["headroom"][phase]), flush=True)
    if args.headroom_only:
        variants = []
    results = []
    for variant in variants:
        result = run_variant(args.work, data, variant, args.s1_iters, args.s2_iters, not args.no_ensemble)
        results.append(result)
        print(report(result), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"data": built, "s1_iters": args.s1_iters, "s2_iters": args.s2_iters, "results": results}, f,
                      indent=1)


if __name__ == "__main__":
    main()
