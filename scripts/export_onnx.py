"""Export a stage-2 network as an ONNX graph for LDR-only inference: ``python scripts/export_onnx.py -h``.

The same program as ``scripts/export_safetensors.py --format onnx`` (DiffIR/cli_entry.py, export); needs
``pip install -e .[onnx]``.
"""
import os
import sys
from typing import List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from DiffIR.cli_entry import export  # noqa: E402

__all__ = ["main"]


def main(argv: Optional[List[str]] = None) -> int:
    """``diffir-export --format onnx`` with ``argv``."""
    return export(["--format", "onnx", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
