"""LDR-only inference with DiffIR stage 2: ``python inference_hdr.py --input DIR --dgain DIR --model net_g.pth --output DIR``.

Turns a folder of LDR JPEGs and their dgain files into linear HDR files (``.hdr``, or ``--format exr``).
``--opt`` names the options the model was trained with (default: those saved with the experiment).
``python inference_hdr.py -h`` lists every option.
"""
import os.path as osp
import sys

from DiffIR.cli_entry import infer

if __name__ == "__main__":
    sys.exit(infer(root=osp.dirname(osp.abspath(__file__))))
