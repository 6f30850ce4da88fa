"""Evaluate trained DiffIR weights: ``python test.py -opt options/test_DiffIRs1_hdr.yml`` (results in results/NAME/)."""
import os.path as osp
import sys

from DiffIR.utils.cli import run_cli

if __name__ == "__main__":
    from DiffIR.test_pipeline import test_pipeline

    sys.exit(run_cli(lambda: test_pipeline(osp.dirname(osp.abspath(__file__)))))
