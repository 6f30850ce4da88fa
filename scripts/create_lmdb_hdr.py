"""Pack an LDR / HDR / dgain data set into three LMDBs: ``python scripts/create_lmdb_hdr.py -h`` (= ``diffir-lmdb``).

The program lives in DiffIR/cli_entry.py (create_lmdb), shared with the ``diffir-lmdb`` console script.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from DiffIR.cli_entry import create_lmdb as main  # noqa: E402

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
