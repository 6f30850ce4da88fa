"""Export EMA weights as ``.safetensors`` with the options that rebuild the network: ``python scripts/export_safetensors.py -h``.

The program lives in DiffIR/cli_entry.py (export), shared with the ``diffir-export`` console script.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from DiffIR.cli_entry import export as main  # noqa: E402

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
