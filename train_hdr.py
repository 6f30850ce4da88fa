"""Train DiffIR for LDR→HDR: ``python train_hdr.py -opt options/train_DiffIRs1_hdr.yml``."""
import os.path as osp
import sys

from DiffIR.cli_entry import train_hdr

if __name__ == "__main__":
    sys.exit(train_hdr(root=osp.dirname(osp.abspath(__file__))))
