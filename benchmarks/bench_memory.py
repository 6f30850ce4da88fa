"""Peak memory of a DiffIRS1 training step: fp32/bf16 x activation checkpointing, at several batch x patch sizes.

    python benchmarks/bench_memory.py                  # seed-size network, 4 modes x 4 sizes (about 5 min, 2 cores)
    python benchmarks/bench_memory.py --sizes 1x64 1x128 2x128 --json mem.json

Each setting runs in a fresh process (nothing left over from another setting): the network is built, one step
warms up (the optimizer's state is allocated there), and the second step's peak is measured — on CUDA
``max_memory_allocated``, on the CPU the growth of the resident set (VmHWM after resetting it, minus VmRSS before
the step). Per mode, a line ``peak = a + b·(batch·H·W)`` is fitted; ``b`` over the network's activation units
(``DiffIR.models.memory.activation_units``: dim times its resolution-weighted block count) is the coefficient
``DiffIR.models.memory.STEP_BYTES`` holds. The table then says what the guide's (8 x 512²) and the fork's
(2 x 256²) settings need at the official network size, and which GPUs (16/24/40/80/141 GB) they fit. Also
prints the step time with and without checkpointing (median of the measured steps).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

MODES = {"fp32": {}, "fp32+ckpt": {"grad_checkpoint": True}, "bf16": {"amp": "bf16"},
         "bf16+ckpt": {"amp": "bf16", "grad_checkpoint": True}}
SIZES = ["1x64", "1x96", "1x128", "2x128"]
GPUS_GB = (16, 24, 40, 80, 141)
#: (label, batch, patch) of the settings the table is about
SETTINGS = (("guide: 8 x 512²", 8, 512), ("fork (train_DiffIRS1.yml): 2 x 256²", 2, 256), ("1 x 256²", 1, 256),
            ("4 x 256²", 4, 256), ("1 x 512²", 1, 512), ("2 x 512²", 2, 512))


def measure_one(mode: str, batch: int, size: int, steps: int, tiny: bool) -> dict:
    """One setting in this process: the peak growth of the measured steps (MB) and their median time (s)."""
    import torch

    from bench_train import SEED_NET, TINY_NET, peak_mb, proc_status_mb, reset_peak
    from DiffIR.models import build_model
    from DiffIR.utils.cpu_malloc import release_free_memory

    tmp = tempfile.mkdtemp()
    opt = {"name": "mem", "model_type": "DiffIRS1Model", "num_gpu": 1 if torch.cuda.is_available() else 0,
           "is_train": True, "dist": False, "network_g": dict(TINY_NET if tiny else SEED_NET),
           "path": {"models": tmp, "training_states": tmp},
           "train": {"ema_decay": 0.999, "optim_g": {"type": "Adam", "lr": 2e-4}, "total_iter": 10 ** 6,
                     "pixel_opt": {"type": "L1Loss"}, **MODES[mode]}}
    torch.manual_seed(0)
    model = build_model(opt)
    g = torch.Generator().manual_seed(0)
    data = {"lq": torch.rand(batch, 3, size, size, generator=g), "gt": torch.rand(batch, 3, size, size, generator=g)}
    dev = model.device
    peaks, times = [], []
    for i in range(steps + 1):
        model.feed_data(data)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        else:
            release_free_memory()
        before = proc_status_mb("VmRSS") if dev.type == "cpu" else 0.0
        reset_peak(dev)
        t0 = time.perf_counter()
        model.optimize_parameters(i + 1)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if i:  # the first step allocates the optimizer's state: not part of the steady step
            times.append(time.perf_counter() - t0)
            peaks.append(peak_mb(dev) - before)
    return {"mode": mode, "batch": batch, "size": size, "peak_mb": max(peaks), "step_s": sorted(times)[len(times) // 2],
            "device": str(dev), "net": "tiny" if tiny else "seed"}


def _fit(points: list) -> tuple:
    """Least squares ``mb = a + b·pixels`` over ``(pixels, mb)``."""
    n = len(points)
    mx = sum(p for p, _ in points) / n
    my = sum(m for _, m in points) / n
    sxx = sum((p - mx) ** 2 for p, _ in points)
    b = sum((p - mx) * (m - my) for p, m in points) / sxx if sxx else 0.0
    return my - b * mx, b


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    p.add_argument("--sizes", nargs="+", default=SIZES, help="BATCHxPATCH, e.g. 2x128")
    p.add_argument("--steps", type=int, default=2, help="measured steps per setting (after one warm-up step)")
    p.add_argument("--tiny", action="store_true", help="a tiny network of the same architecture (smoke test)")
    p.add_argument("--json", help="write every figure to this JSON file")
    p.add_argument("--one", nargs=3, metavar=("MODE", "BATCH", "SIZE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.one[0], int(args.one[1]), int(args.one[2]), args.steps, args.tiny)))
        return

    from bench_train import SEED_NET, TINY_NET
    from DiffIR.models.memory import OFFICIAL_NET, activation_units
    from DiffIR.utils.cpu_features import describe_cpu

    net = TINY_NET if args.tiny else SEED_NET
    print(f"machine: {describe_cpu()}; network: {'tiny' if args.tiny else 'seed size'} DiffIRS1 "
          f"({activation_units(net):.0f} activation units; the official size has {activation_units(OFFICIAL_NET):.0f})",
          flush=True)
    rows = []
    for mode in args.modes:
        for spec in args.sizes:
            batch, size = (int(v) for v in spec.lower().split("x"))
            cmd = [sys.executable, os.path.abspath(__file__), "--one", mode, str(batch), str(size),
                   "--steps", str(args.steps)] + (["--tiny"] if args.tiny else [])
            out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if out.returncode:
                print(f"{mode} {spec}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
                continue
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{mode:<10} batch {batch} x {size}²: peak +{row['peak_mb']:8.0f} MB, step {row['step_s'] * 1000:7.0f} ms",
                  flush=True)
    fits = {}
    for mode in args.modes:
        points = [(r["batch"] * r["size"] ** 2, r["peak_mb"]) for r in rows if r["mode"] == mode]
        if len(points) >= 2:
            a, b = _fit(points)
            fits[mode] = {"base_mb": a, "mb_per_pixel": b,
                          "bytes_per_pixel_unit": b * 2 ** 20 / activation_units(net)}
    print("\nfit: peak step memory = base + coefficient x batch x H x W")
    for mode, f in fits.items():
        print(f"  {mode:<10} base {f['base_mb']:7.0f} MB, {f['mb_per_pixel'] * 1e3:8.3f} MB per 1000 pixels "
              f"({f['bytes_per_pixel_unit']:.2f} bytes per pixel and activation unit)")
    for key, label in (("fp32+ckpt", "fp32"), ("bf16+ckpt", "bf16")):
        if key in fits and label in fits:
            ratio = fits[key]["mb_per_pixel"] / fits[label]["mb_per_pixel"]
            times = {m: [r["step_s"] for r in rows if r["mode"] == m] for m in (key, label)}
            slow = sum(times[key]) / max(sum(times[label]), 1e-9)
            print(f"  {label}: checkpointing keeps {ratio:.2f}x the per-pixel memory, at {slow:.2f}x the step time")
    units = activation_units(OFFICIAL_NET)
    print("\nestimated at the official network size (GB; fits on: the GPU sizes with room for it):")
    print(f"  {'setting':<36}" + "".join(f"{m:>12}" for m in fits))
    for label, batch, size in SETTINGS:
        line = f"  {label:<36}"
        for mode, f in fits.items():
            gb = (f["base_mb"] + f["bytes_per_pixel_unit"] * units * batch * size * size / 2 ** 20) / 1024
            fit = [g for g in GPUS_GB if gb <= g * 0.95]
            line += f"{gb:8.1f} {('≥' + str(fit[0])) if fit else '—':>3}"
        print(line)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"rows": rows, "fits": fits}, fh, indent=1)


if __name__ == "__main__":
    main()
