"""Evaluate trained DiffIR weights: ``python test.py -opt options/test_DiffIRs1_hdr.yml`` (results in results/NAME/)."""
import os.path as osp
import sys

from DiffIR.cli_entry import evaluate

if __name__ == "__main__":
    sys.exit(evaluate(root=osp.dirname(osp.abspath(__file__))))
