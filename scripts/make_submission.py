"""Run LDR-only inference and zip the outputs with a CodaLab readme.txt: ``python scripts/make_submission.py -h``.

The program lives in DiffIR/submission.py (see the README's "Challenge submission (AIM 2025 ITM)").
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from DiffIR.submission import main  # noqa: E402
from DiffIR.utils.cli import run_cli  # noqa: E402

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(run_cli(lambda: main(sys.argv[1:])))
