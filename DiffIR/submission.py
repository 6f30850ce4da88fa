"""A challenge submission from LDR-only inference: ``python scripts/make_submission.py`` (AIM 2025 ITM, CodaLab).

It runs ``inference_hdr.py`` (the same options; ``--format npy`` by default: float32 H x W x 3 RGB arrays in the GT
files' units, cd/m² with the AIM data's peak of 1000: the ``.npy`` files AIM 2025 ITM entries submitted) into
``--output`` and packs what it wrote into one flat zip — ``<stem>.npy`` files at the top, no folders — with the
``readme.txt`` CodaLab challenges (NTIRE/AIM) ask for::

    runtime per image [s] : 1.234
    CPU[1] / GPU[0] : 1
    Extra Data [1] / No Extra Data [0] : 0
    Other description : DiffIR stage 2 (DiffIR-HDR), 26.1 M parameters, ...

The runtime is the mean over the images of the network's time (prior, DIRformer, tiles, self-ensemble) and the
return to linear HDR, without file reading and writing. Whether training used data beyond the challenge's cannot be
read from a checkpoint, so ``--extra_data`` must be given.
"""
from __future__ import annotations

import argparse
import os.path as osp
import platform
import zipfile
from typing import List, Optional, Sequence

import torch

from DiffIR.inference_pipeline import InferenceReport, build_arg_parser, run_inference
from DiffIR.utils.errors import OptionError
from DiffIR.utils.misc import atomic_open

__all__ = ["README_NAME", "readme_text", "write_submission_zip", "make_submission", "main"]

README_NAME = "readme.txt"

HELP = """Run LDR-only inference and pack the outputs with a readme.txt into one flat zip, as CodaLab challenges
(AIM 2025 inverse tone mapping) expect: <stem>.npy (float32 H x W x 3 RGB, cd/m²) and readme.txt at the top of the
zip."""


def build_submission_parser() -> argparse.ArgumentParser:
    """``inference_hdr.py``'s options (``--format npy`` by default) and the zip's."""
    p = build_arg_parser(description=HELP, default_format="npy")
    p.add_argument("--zip", default=None, help="the submission file (default: <output>.zip beside --output)")
    p.add_argument("--extra_data", type=int, choices=(0, 1), required=True,
                   help="1 if the model was trained with data beyond the challenge's training set, else 0 "
                        "(the readme.txt line 'Extra Data [1] / No Extra Data [0]')")
    p.add_argument("--description", default="", help="more text for the readme.txt line 'Other description' (the "
                                                     "method, the training data); the model size and device are "
                                                     "added")
    return p


def readme_text(seconds_per_image: float, on_gpu: bool, extra_data: bool, description: str) -> str:
    """The four lines of a CodaLab ``readme.txt``; ``description`` is kept on its line (newlines become spaces:
    the organisers' scripts read the file line by line)."""
    return (f"runtime per image [s] : {seconds_per_image:.3f}\n"
            f"CPU[1] / GPU[0] : {0 if on_gpu else 1}\n"
            f"Extra Data [1] / No Extra Data [0] : {int(bool(extra_data))}\n"
            f"Other description : {' '.join(description.split())}\n")


def _device_name(device: str) -> str:
    """The GPU's or CPU's model name and the threads used, for the readme (the runtime depends on them)."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name(torch.device(device))}"
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    return f"CPU {name}, {torch.get_num_threads()} threads"


def describe(report: InferenceReport, args: argparse.Namespace) -> str:
    """The 'Other description' line: the model, its size, the device and the inference settings, then the user's."""
    settings = [f"prior noise seed {args.seed}", f"tiles of {args.tile} px" if args.tile else "whole images",
                f"self-ensemble x{args.self_ensemble}" if args.self_ensemble else "no self-ensemble"]
    text = (f"DiffIR stage 2 (DiffIR-HDR), LDR-only inference from the JPEG and its dgain/gamma, "
            f"{report.parameters / 1e6:.2f} M parameters, PyTorch {torch.__version__} on "
            f"{_device_name(report.device)}; "
            f"{', '.join(settings)}; outputs linear HDR .{args.format} in cd/m2.")
    return f"{text} {args.description}".strip()


def write_submission_zip(zip_path: str, files: Sequence[str], readme: str) -> None:
    """``zip_path`` (atomically) with ``readme.txt`` and ``files`` at its top level, under their base names."""
    names = [osp.basename(f) for f in files]
    clash = sorted({n for n in names if names.count(n) > 1 or n == README_NAME})
    if clash:
        raise OptionError(f"The submission cannot hold {', '.join(clash)} twice (a flat zip has one name each).")
    with atomic_open(zip_path, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(README_NAME, readme)
        for path, name in zip(files, names):
            z.write(path, arcname=name)


def make_submission(args: argparse.Namespace) -> str:
    """Run the inference of ``args`` and write its zip; returns the zip's path. The zip is checked before the run."""
    zip_path = args.zip or osp.normpath(osp.abspath(args.output)) + ".zip"
    if osp.isdir(zip_path):
        raise OptionError(f"--zip '{zip_path}' is a folder; give the submission's file name, e.g. submission.zip")
    if osp.lexists(zip_path) and not args.overwrite:
        raise FileExistsError(f"'{zip_path}' already exists; choose another --zip or pass --overwrite")
    if args.preview:
        print("Note: the --preview .png files stay in --output; the zip holds only the HDR outputs", flush=True)
    report = InferenceReport()
    written = run_inference(args, report)  # every image written, or ImagesFailed (no zip of a partial set)
    seconds = sum(report.seconds) / len(report.seconds)
    readme = readme_text(seconds, report.device.startswith("cuda"), bool(args.extra_data), describe(report, args))
    write_submission_zip(zip_path, written, readme)
    print(f"Wrote {zip_path}: {len(written)} .{args.format} file(s) and {README_NAME}\n{readme}", end="", flush=True)
    return zip_path


def main(argv: Optional[List[str]] = None) -> str:
    """Entry point of ``scripts/make_submission.py``."""
    return make_submission(build_submission_parser().parse_args(argv))
