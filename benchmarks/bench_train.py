"""Training throughput of DiffIRS1 at the seed's network size: fp32 eager vs each speed option.

    python benchmarks/bench_train.py                 # default modes, batch 1, 128x128 (about 6 minutes on 2 cores)
    python benchmarks/bench_train.py --modes fp32 bf16+compile --batch 2 --size 256

All modes live in one process and take their iterations in turn (round-robin, warm-up included), so a slow spell of a shared
machine hits every mode alike. Prints a table (images/s, ms per iteration as the median of the timed iterations
after warm-up, memory per step, loss difference to fp32) and, last, ``best speedup over fp32 eager: X.XXx``
(modes with a non-finite loss excluded). Runs on CUDA when available, else on the CPU.
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
from DiffIR.utils.cpu_malloc import keep_freed_memory, release_free_memory  # noqa: E402
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
    "compile+channels_last+fused_adam": {"compile": True, "channels_last": True, "fused_adam": True},
    "bf16+channels_last": {"amp": "bf16", "channels_last": True},
    "bf16+channels_last+fused_adam": {"amp": "bf16", "channels_last": True, "fused_adam": True},
}
DEFAULT_MODES = ["fp32", "channels_last", "fused_adam", "channels_last+fused_adam", "compile",
                 "compile+channels_last+fused_adam", "bf16", "bf16+compile"]


def _proc_status_mb(field: str) -> float:
    """A memory line of /proc/self/status (VmRSS: resident now, VmHWM: its peak), in MB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


def _reset_peak(device: torch.device) -> bool:
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


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return _proc_status_mb("VmHWM")


class Run:
    """One mode: its own model, fed the same batches as every other mode."""

    def __init__(self, name: str, batch: int, size: int, tmp: str) -> None:
        opts = dict(MODES[name])
        fused = opts.pop("fused_adam", False)
        optim = {"type": "Adam", "lr": 2e-4, "betas": [0.9, 0.999]}
        if fused:
            optim["fused"] = True
        opt = {"name": "bench", "model_type": "DiffIRS1Model", "num_gpu": 1 if torch.cuda.is_available() else 0,
               "is_train": True, "dist": False, "network_g": dict(SEED_NET),
               "path": {"models": tmp, "training_states": tmp},
               "train": {"ema_decay": 0.999, "optim_g": optim, "total_iter": 10**6,
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

    def step(self, i: int, timed: bool, measure_memory: bool = False) -> None:
        model, dev = self.model, self.model.device
        model.feed_data(self.data)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        elif measure_memory:
            release_free_memory()  # so this step's peak is not hidden in the heap the other modes left free
        before = _proc_status_mb("VmRSS") if dev.type == "cpu" else 0.0
        has_peak = measure_memory and _reset_peak(dev)
        t0 = time.perf_counter()
        model.optimize_parameters(i + 1)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        dt = time.perf_counter() - t0
        self.wall += dt
        self.losses.append(model.log_dict["l_pix"])
        if timed:
            self.times.append(dt)
        if has_peak:
            self.step_mem.append(_peak_mb(dev) - before)
        print(f"  {self.name}: iteration {i + 1} {dt * 1000:.0f} ms", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", nargs="+", default=DEFAULT_MODES, choices=list(MODES))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations per mode (compilation happens here)")
    parser.add_argument("--iters", type=int, default=9, help="timed iterations per mode (median reported)")
    parser.add_argument("--system-malloc", action="store_true",
                        help="leave glibc malloc as it is (the trainer keeps freed memory on CPU, see utils/cpu_malloc.py)")
    args = parser.parse_args()
    if args.warmup < 1:
        parser.error("--warmup must be at least 1 (memory is measured on the last warm-up iteration)")
    if not torch.cuda.is_available() and not args.system_malloc:
        keep_freed_memory()
    get_root_logger().setLevel("WARNING")
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    print(f"DiffIRS1 (seed size) training step, batch {args.batch}, {args.size}x{args.size}, "
          f"torch {torch.__version__}, {device}")
    modes = list(dict.fromkeys(["fp32"] + args.modes))  # fp32 eager is always the baseline
    with tempfile.TemporaryDirectory() as tmp:
        runs = [Run(name, args.batch, args.size, tmp) for name in modes]
        # Round-robin, warm-up included: one iteration of each mode in turn, so drift in the machine's speed (shared
        # hosts, thermal limits) affects every mode alike instead of whichever happened to run during a slow spell,
        # and every mode's last warm-up iteration comes after all compilation (which upsets the others' first steps).
        for i in range(args.warmup):
            for run in runs:
                run.step(i, timed=False, measure_memory=i == args.warmup - 1)
        for i in range(args.warmup, args.warmup + args.iters):
            for run in runs:
                run.step(i, timed=True)
    base = runs[0]
    base_ms = statistics.median(base.times) * 1000
    # CPU: RSS growth during one training step after handing freed heap back (activations, gradients,
    # temporaries; the resident weights and optimizer state excluded). CUDA: peak allocated memory, all included.
    mem_title = "step MB" if runs[0].model.device.type == "cpu" else "peak MB"
    print(f"{'mode':<34}{'img/s':>8}{'ms/iter':>9}{'speedup':>9}{mem_title:>9}{'max |Δloss| vs fp32':>21}{'wall s':>8}")
    best = 1.0
    for r in runs:
        ms = statistics.median(r.times) * 1000
        dl = max(abs(a - b) for a, b in zip(r.losses, base.losses))
        finite = all(math.isfinite(v) for v in r.losses)
        mem = f"{max(r.step_mem):9.0f}" if r.step_mem else f"{'-':>9}"
        print(f"{r.name:<34}{args.batch * 1000 / ms:>8.3f}{ms:>9.0f}{base_ms / ms:>8.2f}x{mem}{dl:>21.2e}{r.wall:>8.0f}"
              + ("" if finite else "  NON-FINITE LOSS: excluded"))
        if r is not base and finite:
            best = max(best, base_ms / ms)
    if runs[0].model.device.type == "cpu":
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"process peak RSS (all modes resident together): {peak:.0f} MB")
    print(f"best speedup over fp32 eager: {best:.2f}x")


if __name__ == "__main__":
    main()
