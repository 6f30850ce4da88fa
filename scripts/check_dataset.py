"""Check the data sets of a training option file before training: ``python scripts/check_dataset.py -h``.

The program lives in DiffIR/cli_entry.py (check_dataset), shared with the ``diffir-check`` console script.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from DiffIR.cli_entry import check_dataset as main  # noqa: E402

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
