"""Pack an AIM-ITM style data set (LDR / HDR / dgain folders) into three LMDBs for fast training.

    python scripts/create_lmdb_hdr.py --lq datasets/X/jpg --gt datasets/X/hdr --dgain datasets/X/dgain_info \
        --out datasets/X_lmdb [--gt-dtype float16]

writes OUT/lq.lmdb, OUT/gt.lmdb, OUT/dgain.lmdb (each with meta_info.txt); train with
``io_backend: {type: lmdb}`` and dataroot_lq/gt/dgain = those three folders (always the three of one
--out: each build carries an id, and training refuses LMDBs of different builds). Running the command
again resumes an interrupted build (also one stopped by a full disk, after freeing space); a build
over other sources or options, or over a truncated data.mdb, is refused. Format and precision:
DiffIR/data/lmdb_io.py and the README's "LMDB" section.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from DiffIR.data.lmdb_io import GT_DTYPES, create_lmdb_hdr  # noqa: E402
from DiffIR.utils.cli import run_cli  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lq", required=True, help="folder of LDR inputs (.jpg/.jpeg/.png)")
    p.add_argument("--gt", required=True, help="folder of HDR targets (.hdr/.exr/.npy)")
    p.add_argument("--dgain", required=True, help="folder of dgain .txt files")
    p.add_argument("--out", required=True, help="output folder for lq.lmdb, gt.lmdb, dgain.lmdb")
    p.add_argument("--gt-dtype", choices=sorted(GT_DTYPES), default="float32",
                   help="storage of HDR values (float16 halves the size; lossless for RGBE .hdr sources up to 65504)")
    p.add_argument("--filename-tmpl", default="{}", help="LQ stem from GT stem, as the dataset option (default '{}')")
    p.add_argument("--meta-info-file", default=None, help="only the stems listed in this file")
    p.add_argument("--threads", type=int, default=None, help="decoding threads (default: up to 8)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    return run_cli(lambda: create_lmdb_hdr(args.lq, args.gt, args.dgain, args.out, gt_dtype=args.gt_dtype,
                                           filename_tmpl=args.filename_tmpl, meta_info_file=args.meta_info_file,
                                           threads=args.threads, progress=not args.no_progress))


if __name__ == "__main__":
    sys.exit(main())
