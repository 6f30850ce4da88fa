"""Check the data sets of a training option file before training; exit 0 when they are clean.

    python scripts/check_dataset.py -opt options/train_DiffIRs1_hdr.yml [--level quick|full] [--phase train]

Pairs every LQ/GT/dgain entry, reads every dgain value, compares LQ and GT sizes, and (``full``, the
default) decodes every image: files without partners, unreadable or truncated files (a truncated
LMDB too), NaN/Inf in an HDR and images smaller than gt_size are errors, all listed in one run (the
pairs that do exist are checked even when others lack partners), every file named with the fix;
negative HDR values are reported with a count (training clamps them to 0). Results are cached, so
a second run reads only new or changed files (see DiffIR/data/checks.py).

Exit status: 0 every set is clean, 1 problems were found (listed above), 2 the option file or the
command line is wrong (a bad key or value, a dataroot that does not exist).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from DiffIR.data.checks import check_options_file  # noqa: E402
from DiffIR.utils.cli import run_cli  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-opt", required=True, help="training option file (YAML)")
    p.add_argument("--level", choices=("quick", "full"), default="full", help="quick: headers only; full: every pixel")
    p.add_argument("--phase", nargs="+", default=None, help="only these datasets (e.g. train val)")
    p.add_argument("--limit", type=int, default=None, help="show at most this many files per problem kind")
    args = p.parse_args(argv)
    result = {}

    def run() -> None:
        result["ok"] = check_options_file(args.opt, args.level, args.phase, limit=args.limit)

    rc = run_cli(run)
    if rc:
        return rc
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
