"""Train DiffIR for deblurring with progressive patches: ``python train.py -opt options/train_DiffIRS1.yml``."""
import os.path as osp
import sys

from DiffIR.utils.cli import run_cli

if __name__ == "__main__":
    from DiffIR.train_pipeline import train_pipeline

    sys.exit(run_cli(lambda: train_pipeline(osp.dirname(osp.abspath(__file__)))))
