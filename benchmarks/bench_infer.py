"""Time and peak memory of stage-1 inference on one large image (default 3840×2160, tiled).

    python benchmarks/bench_infer.py                              # network + tiling of options/test_DiffIRs1_hdr.yml
    python benchmarks/bench_infer.py --tile 512 --overlap 32      # override the tiling
    python benchmarks/bench_infer.py --height 1080 --width 1920 --metrics

It runs the real code path (``DiffIRS1Model.test``: whole-image prior, tiled DIRformer, blending) on random
weights and a random image (speed and memory do not depend on either), and prints the wall time and the
process's peak memory: peak RSS on the CPU (``getrusage``; run in a fresh process), peak allocated memory on
CUDA. ``--metrics`` also converts the output to linear HDR and scores PU21-PSNR/SSIM on it.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import resource
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

from DiffIR.models import build_model  # noqa: E402
from DiffIR.models.tiling import tile_starts  # noqa: E402
from DiffIR.config.loading import load_yaml  # noqa: E402


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--opt", default=osp.join(ROOT, "options", "test_DiffIRs1_hdr.yml"),
                   help="option file whose network_g (and val tiling) is used")
    p.add_argument("--height", type=int, default=2160)
    p.add_argument("--width", type=int, default=3840)
    p.add_argument("--tile", type=int, default=None, help="val.tile_size (default: the option file's, else 512)")
    p.add_argument("--overlap", type=int, default=None, help="val.tile_overlap (default: the option file's, else 32)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--metrics", action="store_true", help="also score PU21-PSNR/SSIM of the output")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    file_opt = load_yaml(args.opt)
    val = dict(file_opt.get("val") or {})
    tile = args.tile if args.tile is not None else (val.get("tile_size") or 512)
    overlap = args.overlap if args.overlap is not None else val.get("tile_overlap", 32)
    opt = {"name": "bench_infer", "model_type": "DiffIRS1Model", "num_gpu": 1 if args.device == "cuda" else 0,
           "is_train": False, "dist": False, "network_g": file_opt["network_g"], "path": {},
           "val": {"tile_size": tile or None, "tile_overlap": overlap, "window_size": val.get("window_size") or 8}}
    torch.manual_seed(0)
    model = build_model(opt)
    n_params = sum(p.numel() for p in model.net_g.parameters())
    h, w = args.height, args.width
    g = torch.Generator().manual_seed(0)
    lq = torch.rand(1, 3, h, w, generator=g) * 0.9
    gt = (lq + 0.05 * torch.rand(1, 3, h, w, generator=g)).clamp_(0, 1)
    model.feed_data({"lq": lq, "gt": gt})
    del lq, gt
    n_tiles = 1
    if tile:
        hp, wp = -(-h // 8) * 8, -(-w // 8) * 8
        n_tiles = len(tile_starts(hp, tile, overlap, 8)[0]) * len(tile_starts(wp, tile, overlap, 8)[0])
    net = opt["network_g"]
    print(f"image {w}x{h}, DiffIRS1 dim {net.get('dim')} blocks {net.get('num_blocks')} ({n_params / 1e6:.1f} M "
          f"parameters), tile {tile or 'off'} overlap {overlap} ({n_tiles} tiles), device {args.device}, "
          f"torch threads {torch.get_num_threads()}, cores {os.cpu_count()}", flush=True)
    base = peak_rss_gb()
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    model.test()
    if args.device == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    print(f"inference: {dt:.1f} s ({dt / n_tiles:.2f} s per tile)")
    print(f"peak memory (process RSS): {peak_rss_gb():.2f} GB (before inference: {base:.2f} GB)")
    if args.device == "cuda":
        print(f"peak CUDA memory allocated: {torch.cuda.max_memory_allocated() / 1024 ** 3:.2f} GB")
    if args.metrics:
        from DiffIR.metrics import calculate_metric
        from DiffIR.models.evaluation import ToneDomain

        dom = ToneDomain()
        t0 = time.perf_counter()
        vis = model.get_current_visuals()
        out, ref = dom.to_linear(vis["result"]), dom.to_linear(vis["gt"], clip_top=False)
        scores = {m: calculate_metric({"img": out, "img2": ref}, {"type": m})
                  for m in ("calculate_pu21_psnr", "calculate_pu21_ssim")}
        print(f"metrics {scores}: {time.perf_counter() - t0:.1f} s; peak memory now {peak_rss_gb():.2f} GB")


if __name__ == "__main__":
    main()
