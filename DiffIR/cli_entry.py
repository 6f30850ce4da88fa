"""The command-line programs, shared by the console scripts and the top-level scripts of the repository.

``pip install`` makes ``diffir-train`` (train_hdr.py), ``diffir-train-progressive`` (train.py), ``diffir-test``
(test.py), ``diffir-infer`` (inference_hdr.py), ``diffir-lmdb`` (scripts/create_lmdb_hdr.py) and ``diffir-check``
(scripts/check_dataset.py) and ``diffir-export`` (scripts/export_safetensors.py). Each function returns the exit status of :func:`DiffIR.utils.cli.run_cli`
(0 ok, 2 options/files/data, 3 training stopped). ``root`` is where ``experiments/``, ``results/`` and
``tb_logger/`` go: the repository for its scripts, the current directory for the console scripts.
The pipelines are imported inside the functions so ``--help`` and a bad command line answer at once.
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Any, Dict, List, Optional, Sequence

from DiffIR.utils.cli import run_cli
from DiffIR.utils.errors import OptionError

__all__ = ["train_hdr", "train_progressive", "evaluate", "infer", "create_lmdb", "check_dataset", "export"]


def _root(root: Optional[str]) -> str:
    return os.getcwd() if root is None else root


def train_hdr(argv: Optional[List[str]] = None, root: Optional[str] = None) -> int:
    """``diffir-train -opt options/train_DiffIRs1_hdr.yml``: the LDR→HDR pipeline (fixed batch, Chinese summary)."""
    from DiffIR.train_pipeline_hdr import train_pipeline

    return run_cli(lambda: train_pipeline(_root(root), argv))


def train_progressive(argv: Optional[List[str]] = None, root: Optional[str] = None) -> int:
    """``diffir-train-progressive -opt options/train_DiffIRS1.yml``: deblurring with progressive patches."""
    from DiffIR.train_pipeline import train_pipeline

    return run_cli(lambda: train_pipeline(_root(root), argv))


def evaluate(argv: Optional[List[str]] = None, root: Optional[str] = None) -> int:
    """``diffir-test -opt options/test_DiffIRs1_hdr.yml``: scores trained weights (results in results/NAME/)."""
    from DiffIR.test_pipeline import test_pipeline

    return run_cli(lambda: test_pipeline(_root(root), argv))


def infer(argv: Optional[Sequence[str]] = None, root: Optional[str] = None) -> int:
    """``diffir-infer --input DIR --dgain DIR --model net_g.pth --output DIR``: LDR JPEGs → linear HDR files."""
    from DiffIR.inference_pipeline import main

    return run_cli(lambda: main(_root(root), argv))


LMDB_HELP = """Pack an AIM-ITM style data set (LDR / HDR / dgain folders) into three LMDBs for fast training.

    diffir-lmdb --lq datasets/X/jpg --gt datasets/X/hdr --dgain datasets/X/dgain_info \\
        --out datasets/X_lmdb [--gt-dtype float16]

(or python scripts/create_lmdb_hdr.py ...) writes OUT/lq.lmdb, OUT/gt.lmdb, OUT/dgain.lmdb (each with
meta_info.txt); train with ``io_backend: {type: lmdb}`` and dataroot_lq/gt/dgain = those three folders (always the
three of one --out: each build carries an id, and training refuses LMDBs of different builds). Running the command
again resumes an interrupted build (also one stopped by a full disk, after freeing space); a build over other
sources or options, or over a truncated data.mdb, is refused. Format and precision: DiffIR/data/lmdb_format.py and the
README's "LMDB" section.
"""


def create_lmdb(argv: Optional[List[str]] = None) -> int:
    """``diffir-lmdb``: see :data:`LMDB_HELP`."""
    from DiffIR.data.lmdb_format import GT_DTYPES
    from DiffIR.data.lmdb_writer import create_lmdb_hdr

    p = argparse.ArgumentParser(description=LMDB_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lq", required=True, help="folder of LDR inputs (.jpg/.jpeg/.png)")
    p.add_argument("--gt", required=True, help="folder of HDR targets (.hdr/.exr/.npy)")
    p.add_argument("--dgain", required=True, help="folder of dgain .txt files")
    p.add_argument("--out", required=True, help="output folder for lq.lmdb, gt.lmdb, dgain.lmdb")
    p.add_argument("--gt-dtype", choices=sorted(GT_DTYPES), default="float32",
                   help="storage of HDR values (float16 halves the size; lossless for RGBE .hdr sources up to 65504)")
    p.add_argument("--filename-tmpl", default="{}", help="LQ stem from GT stem, as the dataset option (default '{}')")
    p.add_argument("--meta-info-file", default=None, help="only the stems listed in this file")
    p.add_argument("--threads", type=int, default=None, help="decoding threads (default: up to 8)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    return run_cli(lambda: create_lmdb_hdr(args.lq, args.gt, args.dgain, args.out, gt_dtype=args.gt_dtype,
                                           filename_tmpl=args.filename_tmpl, meta_info_file=args.meta_info_file,
                                           threads=args.threads, progress=not args.no_progress))


CHECK_HELP = """Check the data sets of a training option file before training; exit 0 when they are clean.

    diffir-check -opt options/train_DiffIRs1_hdr.yml [--level quick|full] [--phase train]

(or python scripts/check_dataset.py ...) pairs every LQ/GT/dgain entry, reads every dgain value, compares LQ and
GT sizes, and (``full``, the default) decodes every image: files without partners, unreadable or truncated files
(a truncated LMDB too), NaN/Inf in an HDR and images smaller than gt_size are errors, all listed in one run (the
pairs that do exist are checked even when others lack partners), every file named with the fix; negative HDR
values are reported with a count (training clamps them to 0). Results are cached, so a second run reads only new
or changed files (see DiffIR/data/checks.py).

Exit status: 0 every set is clean, 1 problems were found (listed above), 2 the option file or the command line is
wrong (a bad key or value, a dataroot that does not exist).
"""


def check_dataset(argv: Optional[List[str]] = None) -> int:
    """``diffir-check``: see :data:`CHECK_HELP`; 1 when a data set has errors."""
    from DiffIR.dataset_check_cli import check_options_file

    p = argparse.ArgumentParser(description=CHECK_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-opt", required=True, help="training option file (YAML)")
    p.add_argument("--level", choices=("quick", "full"), default="full", help="quick: headers only; full: every pixel")
    p.add_argument("--phase", nargs="+", default=None, help="only these datasets (e.g. train val)")
    p.add_argument("--limit", type=int, default=None, help="show at most this many files per problem kind")
    args = p.parse_args(argv)
    result: Dict[str, Any] = {}

    def run() -> None:
        result["ok"] = check_options_file(args.opt, args.level, args.phase, limit=args.limit)

    rc = run_cli(run)
    if rc:
        return rc
    return 0 if result["ok"] else 1



EXPORT_HELP = """Export a trained network's EMA weights as ``.safetensors`` (default), or as an ONNX graph for LDR-only
inference.

    diffir-export --model experiments/NAME/models/net_g_latest.pth --out NAME.safetensors
        [--param_key params_ema] [--opt OPTIONS.yml] [--overwrite]
    diffir-export --format onnx --model experiments/NAME/models/net_g_latest.pth [--out NAME.onnx] [--opset N]

(or python scripts/export_safetensors.py ...). The options default to the ``options_NAME.yml`` that training saved
beside ``models/``. The file's metadata holds ``network_g`` and the tone settings (``hdr_max``, ``tone_curve``,
``lq_linearize``) as JSON, the source checkpoint and its iteration, so ``inference_hdr.py --model NAME.safetensors``
needs no ``--opt``; ``test.py`` loads it as ``path:pretrain_network_g``. Training states and ``net_g_*.pth``
checkpoints stay ``.pth``. The export is never written onto ``--model`` nor into an experiment's ``models/`` or
``training_states/`` (what training prunes and resumes from), with or without ``--overwrite``; without ``--out`` it
goes beside the checkpoint, or into the experiment folder for a checkpoint in its ``models/``.

``--format onnx`` (stage 2 only; needs ``pip install -e .[onnx]``) writes the LDR-only network as one ONNX graph
with inputs ``lq`` (B x 3 x H x W, network domain, H and W multiples of 8), ``noise`` (B x 256, the diffusion's start
noise) and, when the network reads it, ``cond`` (B x 2, [dgain, gamma]); output ``out`` in the network domain. The
highlight gate is in the graph. The export is checked with onnxruntime against PyTorch (max abs difference <= 1e-4)
before it is written; see DiffIR/export_onnx.py and the README's "ONNX export".
"""

EXPORT_FORMATS = ("safetensors", "onnx")


def export(argv: Optional[List[str]] = None) -> int:
    """``diffir-export``: see :data:`EXPORT_HELP`."""
    p = argparse.ArgumentParser(description=EXPORT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="checkpoint to export (net_g_*.pth)")
    p.add_argument("--format", choices=EXPORT_FORMATS, default="safetensors",
                   help="safetensors (the weights and the options that rebuild the network; default) or onnx (the "
                        "stage-2 network as an ONNX graph for LDR-only inference)")
    p.add_argument("--out", default=None, help="output file (default: the checkpoint's name with .safetensors or "
                                               ".onnx, in the experiment folder for a checkpoint in its models/); "
                                               "never the checkpoint itself nor a file in an experiment's models/ "
                                               "or training_states/")
    p.add_argument("--param_key", default="params_ema", help="weights inside the checkpoint (default params_ema, "
                                                             "falls back to params)")
    p.add_argument("--opt", default=None, help="options naming network_g (default: the options saved with the run)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (--format onnx; default: the exporter's)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    args = p.parse_args(argv)

    def run() -> None:
        from DiffIR.inference_pipeline import default_export_path, export_safetensors

        if args.format == "onnx":
            from DiffIR.export_onnx import ONNX_EXT, export_onnx, require_onnx_packages

            require_onnx_packages()  # before any file is read
            out = args.out or default_export_path(args.model, ONNX_EXT)
            meta = export_onnx(args.model, out, args.opt, args.param_key, args.overwrite, args.opset)
            check = json.loads(meta["check"])
            done = (f"inputs {', '.join(json.loads(meta['inputs']))}; onnxruntime agrees with PyTorch to "
                    f"{check['max_abs_diff']:.2g} (tolerance {check['tolerance']:g})")
        else:
            if args.opset is not None:
                raise OptionError("--opset applies to --format onnx only")
            out = args.out or default_export_path(args.model)
            meta = export_safetensors(args.model, out, args.opt, args.param_key, args.overwrite)
            done = f"network_g from {meta['options']}"
        print(f"Wrote {out}: {args.model} [{args.param_key}], iteration {meta['iteration']}, {done}", flush=True)

    return run_cli(run)
