"""Data loading speed: training samples per second for the disk and LMDB backends against the origin's order.

    python benchmarks/bench_data.py                       # 12 pairs of 1024x1024, 256x256 crops, 0 and 2 workers
    python benchmarks/bench_data.py --pairs 24 --samples 96 --workers 0 2 4 --index 100000

Modes (same synthetic AIM-style set: 8-bit JPEG LDR, Radiance .hdr GT, dgain .txt):

* ``baseline``: the origin fork's order: decode both images, tone-map the whole images (log GT,
  inverse camera curve + log LQ), then crop and flip;
* ``disk``: ``LDR_HDR_PairedDataset`` on the folders: decode, crop, then convert and tone-map only the crop;
* ``lmdb``/``lmdb_f16``: the same dataset on ``scripts/create_lmdb_hdr.py`` output (float32 / float16 GT):
  only the crop's rows of the stored HDR array are read.

Each configuration runs a DataLoader (batch 2, ``EnlargedSampler``), skips the first batches (worker
start-up) and times the rest. Prints samples/s and the speed-up over ``baseline`` with the same
number of workers. ``--index N`` also times pairing N empty files per folder (stem matching only);
``--quick-check N`` the construction-time quick check (headers, dgain files) of N tiny triples.
The machine's load matters (shared CPUs): run it when ``uptime`` is low and compare within one run.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from typing import Any, Dict, List

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from DiffIR.data import EnlargedSampler, build_dataset  # noqa: E402
from DiffIR.data.dgain import read_dgain_file  # noqa: E402
from DiffIR.data.lmdb_writer import create_lmdb_hdr  # noqa: E402
from DiffIR.data.pair_reader import PairSource  # noqa: E402
from DiffIR.data.pairing import scan_paired_folders  # noqa: E402
from DiffIR.data.seeding import sample_rng  # noqa: E402
from DiffIR.data.synthetic_hdr import generate_dataset  # noqa: E402
from DiffIR.data.transforms import augment_pair, img2tensor, paired_random_crop  # noqa: E402
from DiffIR.utils.hdr_io import read_hdr, read_ldr  # noqa: E402
from DiffIR.utils.tone_mapping import ldr_to_hdr, log_tone_map  # noqa: E402


class OriginOrderDataset(Dataset):
    """The origin fork's per-item order, on our readers: whole-image tone mapping, then the crop."""

    def __init__(self, records: List[Dict[str, str]], gt_size: int) -> None:
        self.records, self.gt_size = records, gt_size

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: Any) -> Dict[str, Any]:
        rec = self.records[index]
        rng = sample_rng(index) or np.random.default_rng(int(index))
        gt, lq = read_hdr(rec["gt_path"]), read_ldr(rec["lq_path"])
        info = read_dgain_file(rec["dgain_path"])
        gt = log_tone_map(np.maximum(gt, np.float32(0)))
        lq = log_tone_map(ldr_to_hdr(lq, info["dgain"], info["gamma"]))
        lq, gt = paired_random_crop(lq, gt, self.gt_size, rng)
        lq, gt = augment_pair([lq, gt], rng)
        lq_t, gt_t = img2tensor([lq, gt])
        return {"lq": lq_t, "gt": gt_t, "dgain": torch.tensor(info["dgain"]), "gamma": torch.tensor(info["gamma"])}


def measure(ds: Dataset, workers: int, samples: int, batch: int, warm: int) -> float:
    """Samples per second after ``warm`` batches."""
    n_batches = warm + max(1, samples // batch)
    ratio = max(1, -(-n_batches * batch // len(ds)))
    sampler = EnlargedSampler(ds, 1, 0, ratio, seed=0)
    loader = DataLoader(ds, batch_size=batch, sampler=sampler, num_workers=workers, drop_last=True,
                        persistent_workers=workers > 0)
    it = iter(loader)
    for _ in range(warm):
        next(it)
    t0 = time.perf_counter()
    done = 0
    for _ in range(n_batches - warm):
        b = next(it)
        done += b["gt"].shape[0]
    dt = time.perf_counter() - t0
    del it, loader
    return done / dt


def bench_index(n: int, tmp: str) -> float:
    root = os.path.join(tmp, "index")
    for sub, ext in (("lq", ".jpg"), ("gt", ".hdr"), ("dg", ".txt")):
        os.makedirs(os.path.join(root, sub))
        for i in range(n):
            open(os.path.join(root, sub, f"im_{i:07d}{ext}"), "wb").close()
    t0 = time.perf_counter()
    recs = scan_paired_folders(PairSource(*(os.path.join(root, s) for s in ("lq", "gt", "dg"))))
    dt = time.perf_counter() - t0
    assert len(recs) == n
    shutil.rmtree(root)
    return dt


def bench_quick_check(n: int, tmp: str) -> Dict[str, float]:
    """Seconds for the construction-time ``quick`` check of ``n`` tiny valid triples, without and with the cache."""
    from DiffIR.data.checks import check_reader
    from DiffIR.data.dgain import format_dgain_text
    from DiffIR.data.ldr_hdr_paired_dataset import DiskPairReader
    from DiffIR.utils.hdr_io import encode_hdr_bytes

    import cv2

    root = os.path.join(tmp, "quick")
    img = np.full((8, 8, 3), 100.0, np.float32)
    blobs = {"lq": cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes(),
             "gt": encode_hdr_bytes(img, ".hdr"), "dg": format_dgain_text(2.0, 2.2).encode()}
    for sub, ext in (("lq", ".jpg"), ("gt", ".hdr"), ("dg", ".txt")):
        os.makedirs(os.path.join(root, sub))
        for i in range(n):
            with open(os.path.join(root, sub, f"im_{i:07d}{ext}"), "wb") as f:
                f.write(blobs[sub])
    reader = DiskPairReader(PairSource(*(os.path.join(root, s) for s in ("lq", "gt", "dg"))))
    out = {}
    for label in ("cold", "cached"):
        t0 = time.perf_counter()
        report = check_reader(reader, "quick", gt_size=4, cache_dir=os.path.join(tmp, "cache"), log=lambda m: None)
        out[label] = time.perf_counter() - t0
        assert report.ok
    shutil.rmtree(root)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=12)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--samples", type=int, default=64, help="timed samples per configuration")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--warm", type=int, default=2, help="untimed batches first")
    ap.add_argument("--modes", nargs="+", default=["baseline", "disk", "lmdb", "lmdb_f16"])
    ap.add_argument("--index", type=int, default=0, help="also time pairing this many files per folder")
    ap.add_argument("--quick-check", type=int, default=0,
                    help="also time the quick construction check of this many tiny triples (cold and cached)")
    ap.add_argument("--data", default=None, help="reuse/keep the generated set in this folder")
    args = ap.parse_args()
    torch.set_num_threads(1)

    tmp = tempfile.mkdtemp(prefix="bench_data_")
    data = args.data or os.path.join(tmp, "set")
    dirs = [os.path.join(data, d) for d in ("jpg", "hdr", "dgain_info")]
    t0 = time.perf_counter()
    if not os.path.isdir(dirs[1]):
        generate_dataset(*dirs, num_images=args.pairs, size=args.size, seed=0, gt_format="hdr", ldr_format="jpg")
    t_gen = time.perf_counter() - t0
    lmdbs = {}
    for mode, dtype in (("lmdb", "float32"), ("lmdb_f16", "float16")):
        if mode in args.modes:
            out = os.path.join(data, f"lmdb_{dtype}")
            create_lmdb_hdr(*dirs, out, gt_dtype=dtype, progress=False, log=lambda m: None)
            lmdbs[mode] = out
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"load {os.getloadavg()[0]:.2f}; {args.pairs} pairs {args.size}x{args.size} (.jpg + .hdr), "
          f"crop {args.crop}, batch {args.batch}, {args.samples} timed samples (set made in {t_gen:.0f}s)")

    base_opt = {"name": "bench", "type": "LDR_HDR_PairedDataset", "phase": "train", "gt_size": args.crop,
                "geometric_augs": True, "check": "off", "dataroot_lq": dirs[0], "dataroot_gt": dirs[1],
                "dataroot_dgain": dirs[2], "io_backend": {"type": "disk"}}
    datasets: Dict[str, Dataset] = {}
    for mode in args.modes:
        if mode == "baseline":
            datasets[mode] = OriginOrderDataset(scan_paired_folders(PairSource(*dirs)), args.crop)
        elif mode == "disk":
            datasets[mode] = build_dataset(dict(base_opt))
        elif mode in lmdbs:
            out = lmdbs[mode]
            datasets[mode] = build_dataset({**base_opt, "io_backend": {"type": "lmdb"},
                                            "dataroot_lq": os.path.join(out, "lq.lmdb"),
                                            "dataroot_gt": os.path.join(out, "gt.lmdb"),
                                            "dataroot_dgain": os.path.join(out, "dgain.lmdb")})
        else:
            raise SystemExit(f"unknown mode {mode}")

    print(f"{'mode':<10} {'workers':>7} {'samples/s':>10} {'vs baseline':>12}")
    for workers in args.workers:
        base = None
        for mode, ds in datasets.items():
            rate = measure(ds, workers, args.samples, args.batch, args.warm)
            if mode == "baseline":
                base = rate
            ratio = f"{rate / base:.2f}x" if base else "-"
            print(f"{mode:<10} {workers:>7} {rate:>10.1f} {ratio:>12}", flush=True)
    if args.index:
        print(f"pairing {args.index} files per folder (3 folders): {bench_index(args.index, tmp):.2f}s")
    if args.quick_check:
        t = bench_quick_check(args.quick_check, tmp)
        print(f"quick check of {args.quick_check} pairs: {t['cold']:.1f}s cold, {t['cached']:.1f}s with the check cache")
    if not args.data:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
