"""Training throughput of DiffIRS1 at the seed's network size: fp32 eager vs each speed option.

    python benchmarks/bench_train.py                 # default modes, batch 1, 128x128
    python benchmarks/bench_train.py --modes fp32 bf16+compile --batch 2 --size 256

Prints a table (images/s, ms per iteration as the median of the timed iterations after warm-up, peak memory)
and, last, ``best speedup over fp32 eager: X.XXx``. Runs on CUDA when available, else on the CPU.
"""
from __future__ import annotations

import argparse
import math
import os
import resource
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from DiffIR.models import build_model  # noqa: E402
from DiffIR.utils.logger import get_root_logger  # noqa: E402

SEED_NET = {"type": "DiffIRS1", "n_encoder_res": 5, "inp_channels": 3, "out_channels": 3, "dim": 48,
            "num_blocks": [3, 5, 6, 6], "num_refinement_blocks": 4, "heads": [1, 2, 4, 8],
            "ffn_expansion_factor": 2, "bias": False, "LayerNorm_type": "WithBias"}
MODES = {
    "fp32": {},
    "bf16": {"amp": "bf16"},
    "channels_last": {"channels_last": True},
    "fused_adam": {"fused_adam": True},
    "compile": {"compile": True},
    "bf16+compile": {"amp": "bf16", "compile": True},
    "bf16+compile+channels_last": {"amp": "bf16", "compile": True, "channels_last": True},
    "channels_last+fused_adam": {"channels_last": True, "fused_adam": True},
}
DEFAULT_MODES = ["fp32", "channels_last", "fused_adam", "channels_last+fused_adam", "bf16+compile"]


def _peak_mem_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process high-water mark (Linux: KiB)


def run_mode(name: str, batch: int, size: int, warmup: int, iters: int, tmp: str) -> dict:
    opts = dict(MODES[name])
    fused = opts.pop("fused_adam", False)
    num_gpu = 1 if torch.cuda.is_available() else 0
    optim = {"type": "Adam", "lr": 2e-4, "betas": [0.9, 0.999]}
    if fused:
        optim["fused"] = True
    opt = {"name": "bench", "model_type": "DiffIRS1Model", "num_gpu": num_gpu, "is_train": True, "dist": False,
           "network_g": dict(SEED_NET), "path": {"models": tmp, "training_states": tmp},
           "train": {"ema_decay": 0.999, "optim_g": optim, "total_iter": 10**6,
                     "pixel_opt": {"type": "L1Loss"}, **opts}}
    torch.manual_seed(0)
    model = build_model(opt)
    if model.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(model.device)
    g = torch.Generator().manual_seed(0)
    data = {"lq": torch.rand(batch, 3, size, size, generator=g), "gt": torch.rand(batch, 3, size, size, generator=g)}
    times, losses = [], []
    for i in range(warmup + iters):
        model.feed_data(data)
        if model.device.type == "cuda":
            torch.cuda.synchronize(model.device)
        t0 = time.perf_counter()
        model.optimize_parameters(i + 1)
        if model.device.type == "cuda":
            torch.cuda.synchronize(model.device)
        dt = time.perf_counter() - t0
        losses.append(model.log_dict["l_pix"])
        if i >= warmup:
            times.append(dt)
        print(f"  {name}: iteration {i + 1}/{warmup + iters} {dt * 1000:.0f} ms", file=sys.stderr, flush=True)
    ms = statistics.median(times) * 1000
    return {"mode": name, "ms": ms, "img_s": batch * 1000 / ms, "mem": _peak_mem_mb(model.device), "loss": losses}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", nargs="+", default=DEFAULT_MODES, choices=list(MODES))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations (compilation happens here)")
    parser.add_argument("--iters", type=int, default=5, help="timed iterations (median reported)")
    args = parser.parse_args()
    get_root_logger().setLevel("WARNING")
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    print(f"DiffIRS1 (seed size) training step, batch {args.batch}, {args.size}x{args.size}, torch {torch.__version__}, {device}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.modes:
            start = time.time()
            rows.append(run_mode(name, args.batch, args.size, args.warmup, args.iters, tmp))
            rows[-1]["wall"] = time.time() - start
    base = next((r for r in rows if r["mode"] == "fp32"), rows[0])
    print(f"{'mode':<28}{'img/s':>9}{'ms/iter':>10}{'speedup':>9}{'peak MB':>10}{'max |Δloss| vs fp32':>21}{'wall s':>8}")
    for r in rows:
        dl = max(abs(a - b) for a, b in zip(r["loss"], base["loss"]))
        r["finite"] = all(math.isfinite(v) for v in r["loss"])
        print(f"{r['mode']:<28}{r['img_s']:>9.3f}{r['ms']:>10.0f}{base['ms'] / r['ms']:>8.2f}x{r['mem']:>10.0f}"
              f"{dl:>21.2e}{r['wall']:>8.0f}" + ("" if r["finite"] else "  NON-FINITE LOSS: excluded"))
    valid = [r for r in rows if r is not base and r["finite"]]
    best = max((base["ms"] / r["ms"] for r in valid), default=1.0)
    print(f"best speedup over fp32 eager: {best:.2f}x")


if __name__ == "__main__":
    main()
