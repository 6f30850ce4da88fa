"""GPU readiness check: training throughput and memory of the speed options, and a short stage-1 demo, on one GPU.

    bash benchmarks/gpu_check.sh [OUT_DIR]             # the whole check, under 8 minutes on one H100/H200
    python benchmarks/gpu_check.py --out DIR           # the same
    python benchmarks/gpu_check.py --device cpu --tiny --skip-demo --out DIR   # a smoke test of this script

What it runs (each part in its own process, with a time limit, so one failure or hang costs only its part):
1. ``bench_train.py`` at the seed settings, official network size (options/train_DiffIRs1_hdr.yml ``network_g``):
   batch 2 at 256² (the HDR seed, train_DiffIRs1_hdr.yml) and batch 8 at 512² (the deblur loader batch of
   train_DiffIRS1.yml, whose progressive schedule never trains all 8 at 512²: expect "out of memory" there, which is
   reported, not fatal). Modes: fp32 eager with ``cudnn.benchmark`` on (BasicSR's default) and off, bf16 autocast,
   bf16 + regional ``torch.compile``. Peak memory is ``torch.cuda.max_memory_allocated`` of one step.
2. ``train_hdr.py -opt options/demo_DiffIRs1_hdr.yml`` with ``num_gpu: 1``, the CUDA prefetcher
   (``prefetch_mode: cuda``, ``pin_memory: true``) and ``total_iter`` cut to fit about 2 minutes: wall time,
   iterations/s, step and loader-wait times from the log, and the final validation PSNR.
Writes ``gpu_check.md`` (the tables), the JSON of each benchmark and every log to the output folder. Without a CUDA
device it stops at once with "no CUDA device" and a non-zero exit status.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# (batch, size, modes, warm-up rounds, timed rounds, time limit in s)
GPU_SETTINGS = [
    (2, 256, ["fp32", "fp32+cudnn_benchmark_off", "bf16", "bf16+compile"], 3, 10, 150),
    (8, 512, ["fp32", "bf16", "bf16+compile"], 2, 5, 150),
]
CPU_TINY_SETTINGS = [(1, 16, ["fp32", "bf16"], 1, 1, 300)]
DEMO_OPT = "options/demo_DiffIRs1_hdr.yml"


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.environ.get("OUT") or "gpu_check_results",
                        help="folder for gpu_check.md, JSON and logs (default: $OUT, else gpu_check_results)")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                        help="cpu: only to test this script (with --tiny); the figures mean nothing there")
    parser.add_argument("--tiny", action="store_true", help="tiny network and sizes (smoke test, seconds)")
    parser.add_argument("--skip-demo", action="store_true", help="benchmarks only")
    parser.add_argument("--demo-iters", type=int, default=1200,
                        help="demo iterations (default 1200, the demo's full schedule; cut to fit ~2 minutes)")
    parser.add_argument("--demo-timeout", type=int, default=150, help="time limit of the demo run, s")
    args = parser.parse_args(argv)
    if args.demo_iters < 1:
        parser.error("--demo-iters must be at least 1")
    return args


def fmt(value: Optional[float], spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def bench_table(result: Dict[str, Any]) -> List[str]:
    """Markdown rows for one ``bench_train.py --json`` result (or a failed run: ``{"error": ...}``)."""
    title = f"batch {result['batch']}, {result['size']}²"
    if "error" in result:
        return [f"**{title}**: {result['error']}", ""]
    lines = [f"**{title}** ({result['device']}, torch {result['torch']})", "",
             f"| mode | img/s | ms/iter | vs fp32 | {result['memory']} | max \\|Δloss\\| vs fp32 | status |",
             "|---|---|---|---|---|---|---|"]
    for row in result["modes"]:
        if row["status"] != "ok":
            lines.append(f"| {row['mode']} | - | - | - | - | - | **{row['detail']}** |")
            continue
        lines.append(f"| {row['mode']} | {fmt(row['img_s'], '.2f')} | {fmt(row['ms'], '.0f')} | "
                     f"{fmt(row['speedup'], '.2f', '×')} | {fmt(row['mem_mb'], '.0f')} | {fmt(row['dloss'], '.1e')} | "
                     "ok |")
    return lines + [""]


_STEP = re.compile(r"time \(data\): ([\d.]+) \(([\d.]+)\)")
_ITER = re.compile(r"iter:\s*([\d,]+)")
_METRIC = re.compile(r"# (\w+): ([-\d.]+)\tBest: [-\d.]+ @ \d+ iter(?:\t\(input: ([-\d.]+)\))?")


def parse_demo_log(text: str) -> Dict[str, Any]:
    """The last step/loader-wait times, the last iteration logged and the last validation metrics of a log."""
    out: Dict[str, Any] = {}
    steps = _STEP.findall(text)
    if steps:
        out["step_s"], out["data_s"] = float(steps[-1][0]), float(steps[-1][1])
    iters = _ITER.findall(text)
    if iters:
        out["last_iter"] = int(iters[-1].replace(",", ""))
    for name, value, base in _METRIC.findall(text):
        out[name] = float(value)
        if base:
            out[f"{name}_input"] = float(base)
    return out


def demo_table(demo: Dict[str, Any]) -> List[str]:
    if "error" in demo:
        return [f"**stage-1 demo**: {demo['error']}", ""]
    metric = next((k for k in demo if k not in ("iters", "wall_s", "step_s", "data_s", "last_iter", "status", "setup")
                   and not k.endswith("_input")), None)
    score = "-" if metric is None else (f"{metric} {demo[metric]:.2f}"
                                         + (f" (input {demo[metric + '_input']:.2f})" if metric + "_input" in demo
                                            else ""))
    setup = demo.get("setup", "num_gpu 1, prefetch_mode cuda, pin_memory")
    return [f"**stage-1 demo** (`{DEMO_OPT}`, {setup})", "",
            "| iterations | wall s | it/s (incl. start, data generation, validation) | step s | loader wait s | "
            "validation | status |",
            "|---|---|---|---|---|---|---|",
            f"| {demo['iters']} | {demo['wall_s']:.0f} | {demo['iters'] / demo['wall_s']:.2f} | "
            f"{fmt(demo.get('step_s'), '.3f')} | {fmt(demo.get('data_s'), '.3f')} | {score} | {demo['status']} |", ""]


def run_logged(cmd: List[str], log_path: str, timeout: int, env: Optional[Dict[str, str]] = None) -> Optional[int]:
    """Run ``cmd`` in the repository root with its output in ``log_path``; its exit status, None on timeout."""
    with open(log_path, "w") as log:
        try:
            return subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=timeout,
                                  env=env).returncode
        except subprocess.TimeoutExpired:
            log.write(f"\ngpu_check: stopped after the time limit of {timeout} s\n")
            return None


def run_bench(batch: int, size: int, modes: List[str], warmup: int, iters: int, timeout: int, out: str,
              tiny: bool) -> Dict[str, Any]:
    name = f"bench_b{batch}_{size}"
    json_path = os.path.join(out, name + ".json")
    cmd = [sys.executable, "benchmarks/bench_train.py", "--batch", str(batch), "--size", str(size),
           "--warmup", str(warmup), "--iters", str(iters), "--json", json_path, "--modes", *modes]
    if tiny:
        cmd.append("--tiny")
    if os.path.exists(json_path):
        os.remove(json_path)
    rc = run_logged(cmd, os.path.join(out, name + ".log"), timeout)
    if rc is None:
        return {"batch": batch, "size": size, "error": f"timed out after {timeout} s (see {name}.log)"}
    if not os.path.exists(json_path):
        return {"batch": batch, "size": size, "error": f"failed with exit status {rc} (see {name}.log)"}
    with open(json_path) as f:
        return json.load(f)


def run_demo(args: argparse.Namespace) -> Dict[str, Any]:
    iters = args.demo_iters
    cuda = args.device == "cuda"
    setup = f"num_gpu {int(cuda)}, prefetch_mode {'cuda' if cuda else 'cpu'}, pin_memory"
    overrides = ["name=gpu_check_demo", f"num_gpu={int(cuda)}", f"train:total_iter={iters}",
                 f"train:scheduler:first_cycle_steps={iters}", f"train:scheduler:warmup_steps={min(50, iters // 4)}",
                 f"val:val_freq={iters}",
                 f"logger:save_checkpoint_freq={iters}", "logger:use_tb_logger=false", "logger:language=en",
                 f"logger:print_freq={max(1, min(50, iters // 4))}", "datasets:train:pin_memory=true",
                 f"datasets:train:prefetch_mode={'cuda' if cuda else 'cpu'}"]
    cmd = [sys.executable, "train_hdr.py", "-opt", DEMO_OPT, "--force_yml", *overrides]
    log_path = os.path.join(args.out, "demo.log")
    t0 = time.time()
    rc = run_logged(cmd, log_path, args.demo_timeout)
    wall = time.time() - t0
    with open(log_path) as f:
        parsed = parse_demo_log(f.read())
    if rc not in (0, None):
        return {"error": f"train_hdr.py failed with exit status {rc} (see demo.log)"}
    status = ("ok" if rc == 0 else
              f"**timed out after {args.demo_timeout} s** at iteration {parsed.get('last_iter', '?')}")
    return {"iters": iters if rc == 0 else parsed.get("last_iter", 0), "wall_s": wall, "status": status,
            "setup": setup, **parsed}


def device_line(device: str) -> str:
    import torch

    if device != "cuda":
        from DiffIR.utils.cpu_features import describe_cpu

        return f"CPU ({describe_cpu()}), torch {torch.__version__}"
    props = torch.cuda.get_device_properties(0)
    return (f"{props.name}, {props.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, "
            f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device (torch.cuda.is_available() is False; torch "
              f"{torch.__version__}, CUDA build: {torch.version.cuda or 'no'}). Run it on a GPU machine with a CUDA "
              "build of torch, or pass --device cpu --tiny to test the script.", file=sys.stderr)
        return 1
    from DiffIR.utils.misc import atomic_open

    os.makedirs(args.out, exist_ok=True)
    start = time.time()
    lines = ["# GPU check", "", f"Device: {device_line(args.device)}.", ""]
    settings = CPU_TINY_SETTINGS if args.tiny else GPU_SETTINGS
    for batch, size, modes, warmup, iters, timeout in settings:
        print(f"gpu_check: training benchmark, batch {batch}, {size}x{size} (limit {timeout} s)", flush=True)
        lines += bench_table(run_bench(batch, size, modes, warmup, iters, timeout, args.out, args.tiny))
    if not args.skip_demo:
        print(f"gpu_check: stage-1 demo, {args.demo_iters} iterations (limit {args.demo_timeout} s)", flush=True)
        lines += demo_table(run_demo(args))
    lines.append(f"Total time of the check: {time.time() - start:.0f} s.")
    report = os.path.join(args.out, "gpu_check.md")
    with atomic_open(report, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"gpu_check: written {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
