"""Train DiffIR for deblurring with progressive patches: ``python train.py -opt options/train_DiffIRS1.yml``."""
import os.path as osp
import sys

from DiffIR.cli_entry import train_progressive

if __name__ == "__main__":
    sys.exit(train_progressive(root=osp.dirname(osp.abspath(__file__))))
