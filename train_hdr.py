"""Train DiffIR for LDR→HDR: ``python train_hdr.py -opt options/train_DiffIRs1_hdr.yml``."""
import os.path as osp
import sys

from DiffIR.utils.cli import run_cli

if __name__ == "__main__":
    from DiffIR.train_pipeline_hdr import train_pipeline

    sys.exit(run_cli(lambda: train_pipeline(osp.dirname(osp.abspath(__file__)))))
