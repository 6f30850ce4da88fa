"""Training throughput of DiffIRS1 at the seed's network size: fp32 eager vs each speed option.

    python benchmarks/bench_train.py                 # default modes, batch 1, 128x128 (about 6 minutes on 2 cores)
    python benchmarks/bench_train.py --modes fp32 bf16+compile --batch 2 --size 256

All modes live in one process and take their iterations in turn (round-robin, warm-up included), so a slow spell of a shared
machine hits every mode alike. Prints a table (images/s, ms per iteration as the median of the timed iterations
after warm-up, memory per step, loss difference to fp32) and, last, ``best speedup over fp32 eager: X.XXx``.
A mode whose loss turns non-finite stops there and is marked NON-FINITE (excluded from the best speedup). The
header names the CPU features the run had (AMX, AVX-512, avx512_bf16, AVX2, torch's capability, oneDNN's ISA):
bf16 speed and correctness depend on them. Runs on CUDA when available, else on the CPU.
"""
from __future__ import annotations

import argparse
import json
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
from DiffIR.utils.cpu_features import describe_cpu, onednn_isa  # noqa: E402
from DiffIR.utils.cpu_malloc import keep_freed_memory, release_free_memory  # noqa: E402
from DiffIR.utils.errors import TrainingStopped  # noqa: E402
from DiffIR.utils.misc import atomic_open  # noqa: E402
from DiffIR.utils.logger import get_root_logger  # noqa: E402

SEED_NET = {"type": "DiffIRS1", "n_encoder_res": 5, "inp_channels": 3, "out_channels": 3, "dim": 48,
            "num_blocks": [3, 5, 6, 6], "num_refinement_blocks": 4, "heads": [1, 2, 4, 8],
            "ffn_expansion_factor": 2, "bias": False, "LayerNorm_type": "WithBias"}
# --tiny: the same architecture at a size that trains in milliseconds (smoke tests of this script)
TINY_NET = dict(SEED_NET, n_encoder_res=1, dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1)
MODES = {
    "fp32": {},
    "bf16": {"amp": "bf16"},
    "channels_last": {"channels_last": True},
    "fused_adam": {"fused_adam": True},
    "compile": {"compile": True},
    "bf16+compile": {"amp": "bf16", "compile": True},
    "bf16+compile+channels_last": {"amp": "bf16", "compile": True, "channels_last": True},
    "channels_last+fused_adam": {"channels_last": True, "fused_adam": True},
    "compile+channels_last+fused_adam": {"compile": True, "channels_last": True, "fused_adam": True},
    "bf16+channels_last": {"amp": "bf16", "channels_last": True},
    "bf16+channels_last+fused_adam": {"amp": "bf16", "channels_last": True, "fused_adam": True},
    "fp32+cudnn_benchmark_off": {"cudnn_benchmark": False},  # CUDA: cuDNN's default algorithms, no autotuning
    "fp32+grad_checkpoint": {"grad_checkpoint": True},  # activation checkpointing of every transformer block
    "bf16+grad_checkpoint": {"amp": "bf16", "grad_checkpoint": True},
    "bf16+compile+grad_checkpoint": {"amp": "bf16", "compile": True, "grad_checkpoint": True},
}
DEFAULT_MODES = ["fp32", "channels_last", "fused_adam", "channels_last+fused_adam", "compile",
                 "compile+channels_last+fused_adam", "bf16", "bf16+compile"]


def proc_status_mb(field: str) -> float:
    """A memory line of /proc/self/status (VmRSS: resident now, VmHWM: its peak), in MB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


def reset_peak(device: torch.device) -> bool:
    """Reset the peak-memory counter; False where that is impossible (then the column shows "-")."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:  # Linux: writing 5 to clear_refs resets VmHWM, the process's peak RSS
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return proc_status_mb("VmHWM")


class Run:
    """One mode: its own model, fed the same batches as every other mode."""

    def __init__(self, name: str, batch: int, size: int, tmp: str, net: dict) -> None:
        opts = dict(MODES[name])
        fused = opts.pop("fused_adam", False)
        optim = {"type": "Adam", "lr": 2e-4, "betas": [0.9, 0.999]}
        if fused:
            optim["fused"] = True
        opt = {"name": "bench", "model_type": "DiffIRS1Model", "num_gpu": 1 if torch.cuda.is_available() else 0,
               "is_train": True, "dist": False, "network_g": dict(net),
               "path": {"models": tmp, "training_states": tmp},
               "train": {"ema_decay": 0.999, "optim_g": optim, "total_iter": 10**6, "max_nonfinite_steps": 1,
                         "pixel_opt": {"type": "L1Loss"}, **opts}}
        torch.manual_seed(0)
        self.name, self.model = name, build_model(opt)
        g = torch.Generator().manual_seed(0)
        self.data = {"lq": torch.rand(batch, 3, size, size, generator=g),
                     "gt": torch.rand(batch, 3, size, size, generator=g)}
        self.times: list = []
        self.losses: list = []
        self.step_mem: list = []
        self.wall = 0.0
        self.nonfinite_at = 0  # the iteration whose loss was non-finite (the mode stops there); 0: none
        self.failed = ""  # why the mode stopped otherwise (out of memory)
        self.cudnn_benchmark = bool(opts.get("cudnn_benchmark", True))

    def step(self, i: int, timed: bool, measure_memory: bool = False) -> None:
        if self.nonfinite_at or self.failed:
            return
        model, dev = self.model, self.model.device
        if dev.type == "cuda":  # one process-wide flag: each mode sets its own before its step
            torch.backends.cudnn.benchmark = self.cudnn_benchmark
        model.feed_data(self.data)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        elif measure_memory:
            release_free_memory()  # so this step's peak is not hidden in the heap the other modes left free
        before = proc_status_mb("VmRSS") if dev.type == "cpu" else 0.0
        has_peak = measure_memory and reset_peak(dev)
        t0 = time.perf_counter()
        try:
            model.optimize_parameters(i + 1)
        except TrainingStopped:  # max_nonfinite_steps 1: the first non-finite loss
            self.nonfinite_at = i + 1
            self.losses.append(math.nan)
            print(f"  {self.name}: iteration {i + 1} NON-FINITE LOSS, mode stopped", file=sys.stderr, flush=True)
            return
        except torch.OutOfMemoryError:
            self.failed = f"out of memory at iteration {i + 1}"
            for optimizer in model.optimizers:
                optimizer.zero_grad(set_to_none=True)
            if dev.type == "cuda":
                torch.cuda.empty_cache()
            print(f"  {self.name}: iteration {i + 1} OUT OF MEMORY, mode stopped", file=sys.stderr, flush=True)
            return
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        dt = time.perf_counter() - t0
        self.wall += dt
        self.losses.append(model.log_dict["l_pix"])
        if timed:
            self.times.append(dt)
        if has_peak:
            self.step_mem.append(peak_mb(dev) - before)
        print(f"  {self.name}: iteration {i + 1} {dt * 1000:.0f} ms", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", nargs="+", default=DEFAULT_MODES, choices=list(MODES))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations per mode (compilation happens here)")
    parser.add_argument("--iters", type=int, default=9, help="timed iterations per mode (median reported)")
    parser.add_argument("--tiny", action="store_true", help="a tiny network of the same architecture (smoke test)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument("--system-malloc", action="store_true",
                        help="leave glibc malloc as it is (the trainer keeps freed memory on CPU, see utils/cpu_malloc.py)")
    args = parser.parse_args()
    if args.warmup < 1:
        parser.error("--warmup must be at least 1 (memory is measured on the last warm-up iteration)")
    if not torch.cuda.is_available() and not args.system_malloc:
        keep_freed_memory()
    get_root_logger().setLevel("WARNING")
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    print(f"DiffIRS1 ({'tiny' if args.tiny else 'seed size'}) training step, batch {args.batch}, {args.size}x{args.size}, "
          f"torch {torch.__version__}, {device}")
    print(f"CPU: {describe_cpu()}")
    print(f"oneDNN: {onednn_isa() or 'unknown (no verbose output)'}", flush=True)
    modes = list(dict.fromkeys(["fp32"] + args.modes))  # fp32 eager is always the baseline
    with tempfile.TemporaryDirectory() as tmp:
        runs = [Run(name, args.batch, args.size, tmp, TINY_NET if args.tiny else SEED_NET) for name in modes]
        # Round-robin, warm-up included: one iteration of each mode in turn, so drift in the machine's speed (shared
        # hosts, thermal limits) affects every mode alike instead of whichever happened to run during a slow spell,
        # and every mode's last warm-up iteration comes after all compilation (which upsets the others' first steps).
        for i in range(args.warmup):
            for run in runs:
                run.step(i, timed=False, measure_memory=i == args.warmup - 1)
        for i in range(args.warmup, args.warmup + args.iters):
            for run in runs:
                run.step(i, timed=True)
    report(runs, args, device)


def results(runs: list, batch: int) -> list:
    """One dict per mode: status ``ok`` / ``non-finite`` / ``failed`` (with ``detail``) and, when ok, the figures;
    ``speedup`` and ``dloss`` are None where the fp32 baseline (``runs[0]``) has none."""
    base = runs[0]
    base_ok = not (base.nonfinite_at or base.failed) and base.times
    base_ms = statistics.median(base.times) * 1000 if base_ok else None
    out = []
    for r in runs:
        row = {"mode": r.name, "status": "ok", "detail": ""}
        if r.nonfinite_at:
            row.update(status="non-finite", detail=f"NON-FINITE loss at iteration {r.nonfinite_at}")
        elif r.failed or not r.times:
            row.update(status="failed", detail=r.failed or "no timed iterations")
        else:
            ms = statistics.median(r.times) * 1000
            row.update(img_s=batch * 1000 / ms, ms=ms, speedup=base_ms / ms if base_ms else None,
                       mem_mb=max(r.step_mem) if r.step_mem else None, wall_s=r.wall,
                       dloss=max(abs(a - b) for a, b in zip(r.losses, base.losses)) if base_ok else None)
        out.append(row)
    return out


def report(runs: list, args: argparse.Namespace, device: str) -> None:
    rows = results(runs, args.batch)
    # CPU: RSS growth during one training step after handing freed heap back (activations, gradients,
    # temporaries; the resident weights and optimizer state excluded). CUDA: peak allocated memory, all included.
    mem_title = "step MB" if runs[0].model.device.type == "cpu" else "peak MB"
    print(f"{'mode':<34}{'img/s':>8}{'ms/iter':>9}{'speedup':>9}{mem_title:>9}{'max |Δloss| vs fp32':>21}{'wall s':>8}")
    best = 1.0
    for row in rows:
        if row["status"] != "ok":
            print(f"{row['mode']:<34}  {row['detail']}: stopped, excluded")
            continue
        speedup = f"{row['speedup']:>8.2f}x" if row["speedup"] else f"{'-':>9}"
        mem = f"{row['mem_mb']:9.0f}" if row["mem_mb"] is not None else f"{'-':>9}"
        dl = f"{row['dloss']:>21.2e}" if row["dloss"] is not None else f"{'-':>21}"
        print(f"{row['mode']:<34}{row['img_s']:>8.3f}{row['ms']:>9.0f}{speedup}{mem}{dl}{row['wall_s']:>8.0f}")
        if row is not rows[0] and row["speedup"]:
            best = max(best, row["speedup"])
    if runs[0].model.device.type == "cpu":
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"process peak RSS (all modes resident together): {peak:.0f} MB")
    if rows[0]["status"] == "ok":
        print(f"best speedup over fp32 eager: {best:.2f}x")
    else:
        print(f"fp32 eager: {rows[0]['detail']}; no speedups to report")
    bad = [row["mode"] for row in rows if row["status"] == "non-finite"]
    if bad:
        print(f"NON-FINITE modes: {', '.join(bad)}")
    if args.json:
        with atomic_open(args.json, "w") as f:
            json.dump({"batch": args.batch, "size": args.size, "device": device, "torch": torch.__version__,
                       "cpu": describe_cpu(), "memory": mem_title, "modes": rows}, f, indent=1)

if __name__ == "__main__":
    main()
