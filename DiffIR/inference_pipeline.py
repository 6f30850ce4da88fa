"""LDR-only inference: a folder of JPEGs (+ their dgain files) → linear HDR files, with DiffIR stage-2 weights.

``python inference_hdr.py --input DIR --dgain DIR --model net_g.pth --output DIR [--opt OPTIONS.yml]``

Each image goes through the training data pipeline (LDR linearised with its own dgain/gamma, then the tone curve
of the training options), the stage-2 network (prior from the whole image, DIRformer whole or on overlapping tiles
for large images) and back: the output is clamped to [0, 1] in the network domain (so to [0, hdr_max], as the
original fork does) and the tone curve is inverted, giving values in the training GT's units. Files are written
atomically, ``.hdr`` (Radiance RGBE) by default, ``.exr`` (float32) or ``.npy`` (float32 H x W x 3 RGB for
``np.load``, as AIM 2025 ITM entries submitted; ``scripts/make_submission.py`` zips them); ``--preview`` adds a
tone-mapped ``<stem>.png`` beside each (the preview ``test.py`` writes).

The run holds ``OUTPUT.lock`` beside ``--output`` for its life: a second run into the same folder is refused,
naming the holder. Before anything is written, every dgain file is read and every image decoded once (one error lists every bad
file), and existing outputs are refused unless ``--overwrite`` (an output folder that is ``--input`` or
``--dgain`` always). An image that still fails during the run is skipped and listed at the end (exit status 2).
Images are read as a viewer displays them: an EXIF orientation tag is applied (training reads pixels as stored,
aligned with their HDR ground truth), so the output has the orientation the photo is shown in.

The network options come from ``--opt`` (its ``network_g``, and the tone settings of its first dataset), else from
the metadata of a ``.safetensors`` model (``scripts/export_safetensors.py``), else from the ``options_*.yml`` that
training saved next to the checkpoint's ``models/`` folder, else the official stage-2 sizes built in here
(:data:`OFFICIAL_S2_NETWORK`, the ``network_g`` of ``options/test_DiffIRs2_hdr.yml``; in code so that a
pip-installed ``diffir-infer`` finds it from any directory).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import os.path as osp
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from DiffIR.archs import build_network
from DiffIR.data.check_report import implausible_exposure_entry, implausible_exposure_note
from DiffIR.data.dgain import read_dgain_file
from DiffIR.data.ldr_hdr_paired_dataset import LQ_EXTENSIONS
from DiffIR.models.diffir_s2_model import STAGE1_WEIGHTS_MESSAGE, is_stage1_state, restore_ldr_only
from DiffIR.models.evaluation import ToneDomain, write_preview
from DiffIR.utils.cpu_malloc import keep_freed_memory
from DiffIR.utils.checkpoint import (SAFETENSORS_EXT, check_network_record, extract_state_dict, load_checked,
                                     load_file, read_safetensors_metadata, recorded_gate, save_safetensors)
from DiffIR.utils.hdr_io import read_ldr, write_hdr
from DiffIR.utils.misc import path_encoding_problem
from DiffIR.config.loading import load_yaml
from DiffIR.config.sections import SELF_ENSEMBLE_SIZES, tile_size_error
from DiffIR.config.schema import tone_domain
from DiffIR.utils.errors import DataError, DiffIRError, OptionError
from DiffIR.utils.runlock import hold_run_lock, holds_run_locks
from DiffIR.utils.tone_mapping import TONE_CURVES, ldr_to_network_input

__all__ = ["build_arg_parser", "find_network_options", "load_stage2_network", "export_safetensors",
           "default_export_path", "check_export_target", "load_export_source",
           "InferenceReport", "run_inference", "main"]

#: ``.npy``: float32 H x W x 3 RGB in the GT files' units (cd/m² for the AIM data), as challenge scoring reads it
OUTPUT_FORMATS = ("hdr", "exr", "npy")

#: network_g of the official DiffIR stage 2 (= options/test_DiffIRs2_hdr.yml without its highlight_gate; a test
#: keeps them equal). A checkpoint that records a highlight gate gets it (:func:`load_stage2_network`).
OFFICIAL_S2_NETWORK: Dict[str, Any] = {
    "type": "DiffIRS2", "n_encoder_res": 5, "inp_channels": 3, "out_channels": 3, "dim": 48,
    "num_blocks": [3, 5, 6, 6], "num_refinement_blocks": 4, "heads": [1, 2, 4, 8], "ffn_expansion_factor": 2,
    "bias": False, "LayerNorm_type": "WithBias", "n_denoise_res": 1, "linear_start": 0.1, "linear_end": 0.99,
    "timesteps": 4}
OFFICIAL_S2_WHERE = "the built-in official stage-2 network options"


def build_arg_parser(description: str = "DiffIR stage 2: LDR images (+ dgain files) -> linear HDR images",
                     default_format: str = "hdr") -> argparse.ArgumentParser:
    """The options of ``inference_hdr.py``; ``scripts/make_submission.py`` takes the same ones (``.npy`` default)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--input", required=True, help="folder of LDR images (.jpg/.jpeg/.png)")
    p.add_argument("--dgain", required=True, help="folder of <stem>.txt files with 'dgain:' and 'gamma:' lines")
    p.add_argument("--model", required=True, help="stage-2 weights: net_g_*.pth, or a .safetensors export (its "
                                                   "metadata names the network)")
    p.add_argument("--output", required=True, help="folder for the HDR outputs (<stem>.hdr, .exr or .npy)")
    p.add_argument("--opt", default=None, help="options YAML naming the network (network_g) and tone settings; "
                                               "default: the options saved with the experiment")
    p.add_argument("--format", choices=OUTPUT_FORMATS, default=default_format,
                   help=f"output format: hdr (Radiance), exr (float32 OpenEXR) or npy (float32 H x W x 3 RGB array in "
                        f"the GT's units, as np.load reads it) (default: {default_format})")
    p.add_argument("--param_key", default="params_ema", help="weights inside the checkpoint (default: params_ema, "
                                                             "falls back to params)")
    p.add_argument("--tile", type=int, default=512, help="tile side for large images, a multiple of 8 "
                                                         "(default 512; 0 = always whole-image)")
    p.add_argument("--tile_overlap", type=int, default=32, help="overlap of neighbouring tiles in pixels (default 32)")
    p.add_argument("--hdr_max", type=float, default=None, help="HDR peak of the training data (default: from the "
                                                               "options, else 1000)")
    p.add_argument("--tone_curve", choices=tuple(TONE_CURVES), default=None, help="tone curve of the training data "
                                                                             "(default: from the options, else log)")
    p.add_argument("--seed", type=int, default=0, help="seed of the prior's start noise (same for every image)")
    p.add_argument("--self_ensemble", type=int, choices=SELF_ENSEMBLE_SIZES, default=0,
                   help="average over flipped copies of each image: 4 (flips) or 8 (flips and transposes), each "
                        "with the same prior noise; 4-8x slower (default 0: off)")
    p.add_argument("--device", default="auto", help="auto (a GPU if present), cpu, cuda or cuda:N")
    p.add_argument("--preview", action="store_true", help="also write <stem>.png beside each output: a tone-mapped "
                                                          "preview (Reinhard, hdr_max -> white), as test.py does")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files (default: refuse, "
                                                            "listing them, before anything is written)")
    return p


def saved_options(model_path: str) -> Optional[str]:
    """The ``options_*.yml`` that training saved beside the checkpoint's ``models/`` folder, if exactly one."""
    saved = sorted(glob.glob(osp.join(osp.dirname(osp.dirname(osp.abspath(model_path))), "options_*.yml")))
    return saved[0] if len(saved) == 1 else None


def find_network_options(model_path: str, opt_path: Optional[str]) -> Tuple[Dict[str, Any], str]:
    """The options dict that names the network, and where it came from (see the module docstring)."""
    if opt_path:
        return load_yaml(opt_path), opt_path
    if model_path.endswith(SAFETENSORS_EXT) and osp.isfile(model_path):
        meta = read_safetensors_metadata(model_path)
        if isinstance(meta.get("network_g"), dict):
            return {"network_g": meta["network_g"], "datasets": {"train": dict(meta.get("tone") or {})}}, \
                f"the metadata of {model_path}"
    saved = saved_options(model_path)
    if saved:
        return load_yaml(saved), saved
    return {"network_g": dict(OFFICIAL_S2_NETWORK)}, OFFICIAL_S2_WHERE


def tone_settings(opt: Dict[str, Any]) -> Dict[str, Any]:
    """hdr_max / tone_curve / lq_linearize of the options' first dataset (the training data's), else defaults."""
    datasets = opt.get("datasets") or {}
    return tone_domain(next((d for d in datasets.values() if isinstance(d, dict)), {}))


#: the folders of an experiment that only training writes to (checkpoints are pruned and resumed from there)
RUN_FOLDERS = ("models", "training_states")


def experiment_run_folder(path: str) -> Optional[str]:
    """The experiment's ``models/`` or ``training_states/`` folder that ``path`` (links resolved) lies in, or None.

    A folder of that name counts as an experiment's when the folder above it holds the other one, a saved
    ``options_*.yml`` or a ``train_*.log``, or is itself inside ``experiments/``."""
    folder = osp.dirname(osp.realpath(path))
    while True:
        parent = osp.dirname(folder)
        if parent == folder:
            return None
        if osp.basename(folder) in RUN_FOLDERS and (
                any(osp.isdir(osp.join(parent, name)) for name in RUN_FOLDERS if name != osp.basename(folder))
                or glob.glob(osp.join(glob.escape(parent), "options_*.yml"))
                or glob.glob(osp.join(glob.escape(parent), "train_*.log"))
                or osp.basename(osp.dirname(parent)) == "experiments"):
            return folder
        folder = parent


def default_export_path(model_path: str, ext: str = SAFETENSORS_EXT) -> str:
    """``--out`` of the export when none is given: the checkpoint's name with ``ext``, beside it, or in the
    experiment folder when the checkpoint lies in the experiment's ``models/`` (which only training writes to)."""
    name = osp.splitext(osp.basename(model_path))[0] + ext
    run_folder = experiment_run_folder(model_path)
    return osp.join(osp.dirname(run_folder) if run_folder else osp.dirname(model_path), name)


def check_export_target(model_path: str, out_path: str) -> None:
    """Refuse an export onto the ``--model`` file itself or into an experiment's ``models/``/``training_states/``
    (whatever ``--overwrite`` says): the checkpoints there are what training prunes and resumes from."""
    if osp.realpath(out_path) == osp.realpath(model_path):
        raise OptionError(f"--out '{out_path}' is the --model file: the export would replace the checkpoint it reads. "
                          f"Fix: choose another --out, e.g. --out {default_export_path(model_path)}")
    run_folder = experiment_run_folder(out_path)
    if run_folder:
        raise OptionError(f"--out '{out_path}' lies in the experiment folder '{run_folder}', which only training writes "
                          f"to (it prunes and resumes from the files there); --overwrite does not change this. Fix: "
                          f"write the export elsewhere, e.g. --out {osp.join(osp.dirname(run_folder), osp.basename(out_path))}")


def export_safetensors(model_path: str, out_path: str, opt_path: Optional[str] = None,
                       param_key: str = "params_ema", overwrite: bool = False) -> Dict[str, str]:
    """Write the ``param_key`` weights of a ``.pth`` checkpoint as ``.safetensors`` with what rebuilds the network.

    The metadata holds ``network_g`` and the tone settings (``hdr_max``/``tone_curve``/``lq_linearize``) as JSON
    strings, the source checkpoint, the weights' key and the iteration; the weights are loaded strictly into
    ``network_g`` first, so a file that does not fit its options is never written. An ``out_path`` that is the
    checkpoint or lies in an experiment's ``models/``/``training_states/`` is refused (:func:`check_export_target`).
    Returns the metadata.
    """
    _, state, meta = load_export_source(model_path, out_path, opt_path, param_key, overwrite)
    save_safetensors(state, out_path, meta)
    return meta


def load_export_source(model_path: str, out_path: str, opt_path: Optional[str], param_key: str, overwrite: bool
                       ) -> Tuple[nn.Module, Dict[str, torch.Tensor], Dict[str, str]]:
    """What every export starts from, after every check: ``(network with the weights loaded strictly, the weights,
    the metadata)``; the metadata (strings) is the same for every export format. See :func:`export_safetensors`."""
    check_path_arguments({"model": model_path, "out": out_path, "opt": opt_path}, ("model", "out", "opt"))
    check_export_target(model_path, out_path)
    opt_file = opt_path or saved_options(model_path)
    if not opt_file:
        raise OptionError(f"No options found for {model_path}: training saves options_<name>.yml beside models/; "
                          "pass --opt with the options the model was trained with")
    opt = load_yaml(opt_file)
    if not isinstance(opt.get("network_g"), dict):
        raise OptionError(f"{opt_file} has no network_g section: pass --opt with the options the model was trained with")
    if osp.lexists(out_path) and not overwrite:
        raise FileExistsError(f"'{out_path}' already exists; choose another --out or pass --overwrite")
    ckpt = load_file(model_path, "network checkpoint")
    state = extract_state_dict(ckpt, param_key, model_path)
    net = build_network(dict(opt["network_g"]), "network_g")
    check_network_record(ckpt, net, model_path, what=f"network_g of {opt_file}")
    load_checked(net, state, model_path, param_key, what=f"network_g of {opt_file}")
    found = re.search(r"_(\d+)\.pth$", osp.basename(model_path))
    meta = {"format": "DiffIR-HDR network weights", "network_g": json.dumps(opt["network_g"]),
            "tone": json.dumps(tone_settings(opt)), "source": osp.abspath(model_path), "param_key": param_key,
            "iteration": found.group(1) if found else osp.splitext(osp.basename(model_path))[0].rsplit("_", 1)[-1],
            "options": osp.abspath(opt_file)}
    return net, state, meta


def load_stage2_network(model_path: str, network_opt: Dict[str, Any], param_key: str, where: str,
                        device: torch.device) -> nn.Module:
    """Build ``network_opt`` and load ``model_path`` into it strictly; explain stage-1 files and mismatches."""
    ckpt = load_file(model_path, "network checkpoint")
    state = extract_state_dict(ckpt, param_key, model_path)
    if is_stage1_state(state):
        raise OptionError(STAGE1_WEIGHTS_MESSAGE.format(what=f"The checkpoint {model_path}"))
    if str(network_opt.get("type")) == "DiffIRS1":
        raise OptionError(STAGE1_WEIGHTS_MESSAGE.format(what=f"network_g in {where}"))
    if where == OFFICIAL_S2_WHERE and recorded_gate(ckpt):
        network_opt = {**network_opt, "highlight_gate": recorded_gate(ckpt)}  # no options: the file's gate
    net = build_network(network_opt, "network_g")
    if not hasattr(net, "estimate_ipr"):
        raise OptionError(f"network_g in {where} is {type(net).__name__}; LDR-only inference needs a stage-2 "
                          "network (type: DiffIRS2)")
    check_network_record(ckpt, net, model_path, what=f"network_g of {where}")
    load_checked(net, state, model_path, param_key, what=f"network_g of {where}")
    return net.to(device).eval()


def _pair_inputs(input_dir: str, dgain_dir: str) -> List[Tuple[str, str, str]]:
    """``(stem, image, dgain file)`` for every LDR image; every missing dgain file is an error, named."""
    for folder, what in ((input_dir, "--input"), (dgain_dir, "--dgain")):
        if not osp.isdir(folder):
            raise FileNotFoundError(f"{what} folder '{folder}' does not exist")
    images = sorted(f for f in os.listdir(input_dir) if osp.splitext(f)[1].lower() in LQ_EXTENSIONS)
    if not images:
        raise FileNotFoundError(f"--input folder '{input_dir}' has no LDR images ({', '.join(LQ_EXTENSIONS)})")
    by_stem: Dict[str, List[str]] = {}
    for name in images:
        by_stem.setdefault(osp.splitext(name)[0], []).append(name)
    clashes = [" and ".join(names) for names in by_stem.values() if len(names) > 1]
    if clashes:
        raise OptionError(f"{len(clashes)} stem(s) of --input '{input_dir}' name several images ({_listed(clashes)}): "
                          "their outputs <stem>.hdr would overwrite each other. Rename or move one of each.")
    pairs, missing = [], []
    for name in images:
        stem = osp.splitext(name)[0]
        txt = osp.join(dgain_dir, stem + ".txt")
        (pairs if osp.isfile(txt) else missing).append((stem, osp.join(input_dir, name), txt))
    if missing:
        listed = ", ".join(osp.basename(m[2]) for m in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise FileNotFoundError(f"{len(missing)} of {len(images)} images have no dgain file in '{dgain_dir}': {listed}. "
                                "Each <stem>.jpg needs <stem>.txt with 'dgain: <x>' and 'gamma: <y>' lines.")
    return pairs


def _listed(items: Sequence[str], n: int = 10) -> str:
    return ", ".join(items[:n]) + (f" ... (+{len(items) - n} more)" if len(items) > n else "")


def _same_folder(a: str, b: str) -> bool:
    return osp.realpath(a) == osp.realpath(b)


def check_output_targets(output: str, targets: Sequence[str], inputs: Mapping[str, str], overwrite: bool) -> None:
    """Refuse an output folder that is an input folder, and existing outputs unless ``overwrite``.

    ``inputs`` maps an option name (``--input``) to its folder; folders are compared by real path (links resolved).
    Runs before anything is written.
    """
    for what, folder in inputs.items():
        if _same_folder(output, folder):
            raise OptionError(f"--output '{output}' is the {what} folder: outputs must not be written among the "
                              "inputs. Choose another folder, e.g. --output results/inference")
    existing = [osp.basename(t) for t in targets if osp.lexists(t)]
    if existing and not overwrite:
        raise FileExistsError(f"{len(existing)} output file(s) already exist in '{output}': {_listed(existing)}. "
                              "Nothing was written. Choose another --output folder, or pass --overwrite to replace "
                              "them (make sure it is not a folder of ground-truth HDR files).")
    if osp.isdir(output):
        folder = output
    else:  # the nearest existing ancestor must be a folder we may create it in
        folder = osp.dirname(osp.abspath(output))
        while not osp.exists(folder):
            folder = osp.dirname(folder)
        if osp.lexists(output) or not osp.isdir(folder):
            raise NotADirectoryError(f"Cannot create the output folder '{output}': "
                                     f"'{output if osp.lexists(output) else folder}' is a file. Choose another --output.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"Cannot write to the output folder '{output}': '{folder}' is not writable for this "
                              "user. Choose a folder you can write to (--output).")


def check_inputs(pairs: Sequence[Tuple[str, str, str]]) -> Dict[str, Dict[str, float]]:
    """Read every dgain file and decode every image once; one error listing every bad file, before any output."""
    metas: Dict[str, Dict[str, float]] = {}
    bad: List[str] = []
    for stem, image_path, txt in tqdm(pairs, unit="image", desc="Checking inputs", leave=False):
        try:
            metas[stem] = read_dgain_file(txt)
        except (OSError, ValueError) as e:
            bad.append(str(e))
        try:
            read_ldr(image_path, exif_orientation=True)
        except (OSError, ValueError) as e:
            bad.append(str(e))
    odd = [implausible_exposure_entry(osp.basename(txt), metas[stem]["dgain"], metas[stem]["gamma"])
           for stem, _, txt in pairs if stem in metas]
    odd = [entry for entry in odd if entry]
    if odd:  # as training and scripts/check_dataset.py warn: the output of such an image may be black or clipped
        print(f"WARNING: {implausible_exposure_note(odd, osp.dirname(pairs[0][2]))}", file=sys.stderr, flush=True)
    if bad:
        raise DataError(f"{len(bad)} input problem(s) found before any output was written:\n  "
                        + "\n  ".join(bad[:20]) + (f"\n  ... (+{len(bad) - 20} more)" if len(bad) > 20 else "")
                        + "\nFix or remove these files, then run again.")
    return metas


class ImagesFailed(DiffIRError, OSError):
    """Some images failed during the run (after the checks passed); the others were written."""


@dataclass
class InferenceReport:
    """What a run measured, for a challenge's ``readme.txt`` (:mod:`DiffIR.submission`)."""

    device: str = ""
    parameters: int = 0
    #: per written image: the network (prior, DIRformer, tiles, self-ensemble) and the return to linear HDR, in s
    seconds: List[float] = field(default_factory=list)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise OptionError(f"--device {name}: no CUDA GPU is available here; use --device cpu")
    return dev


def _resolve_tone(args: argparse.Namespace, opt: Dict[str, Any], where: str) -> Dict[str, Any]:
    """The training data's tone settings, with ``--hdr_max``/``--tone_curve`` taking precedence."""
    tone = tone_settings(opt)
    if args.hdr_max is not None:
        tone["hdr_max"] = float(args.hdr_max)
    if args.tone_curve is not None:
        tone["tone_curve"] = args.tone_curve
    if tone["tone_curve"] not in TONE_CURVES:
        raise OptionError(f"tone_curve '{tone['tone_curve']}' (from {where}) is unknown; use one of {', '.join(TONE_CURVES)}")
    return tone


def check_path_arguments(args: Any, names: Sequence[str]) -> None:
    """Refuse a path argument (``--NAME``; ``args`` a Namespace or a mapping) that cannot be encoded in the
    file-system encoding, by its name: the OS could not be asked for it, so it would otherwise be reported as missing."""
    for name in names:
        value = args.get(name) if isinstance(args, Mapping) else getattr(args, name, None)
        problem = path_encoding_problem(value)
        if problem:
            raise OptionError(f"--{name} {problem}. Fix: pass the path as it is on disk, or rename the file or folder.")


@holds_run_locks
def run_inference(args: argparse.Namespace, report: Optional[InferenceReport] = None) -> List[str]:
    """Restore every image of ``args.input``; returns the written paths. Everything is checked before any output.

    An image that still fails during the run (e.g. changed since the check) is skipped; the failures are listed at
    the end in an :class:`ImagesFailed` error (exit status 2), after the other images were written. ``report``, when
    given, receives the device, the parameter count and each written image's runtime.
    """
    check_path_arguments(args, ("input", "dgain", "model", "output", "opt"))
    tile_error = tile_size_error(args.tile, 8, "--tile", "0", "--tile 512") if args.tile else None
    if tile_error:
        raise OptionError(tile_error)
    if args.tile and not 0 <= args.tile_overlap <= args.tile - 8:
        raise OptionError(f"--tile_overlap must be in [0, {args.tile - 8}] for --tile {args.tile}, got {args.tile_overlap}")
    pairs = _pair_inputs(args.input, args.dgain)
    targets = {stem: osp.join(args.output, f"{stem}.{args.format}") for stem, _, _ in pairs}
    previews = {stem: osp.join(args.output, f"{stem}.png") for stem in targets} if args.preview else {}
    outputs, inputs = [*targets.values(), *previews.values()], {"--input": args.input, "--dgain": args.dgain}
    check_output_targets(args.output, outputs, inputs, args.overwrite)  # a bad folder is named as such first
    # OUTPUT.lock beside the folder for the run's life: a second run into it is refused (with --overwrite the two
    # would silently replace each other's files); the outputs are checked again under the lock, so that a run
    # which ended meanwhile cannot have written them since
    hold_run_lock(args.output, "--output", lambda text: print(f"WARNING: {text}", file=sys.stderr, flush=True),
                  name=f"'{osp.abspath(args.output)}'", instead="choose another --output")
    check_output_targets(args.output, outputs, inputs, args.overwrite)
    opt, where = find_network_options(args.model, args.opt)
    if not isinstance(opt.get("network_g"), dict):
        raise OptionError(f"{where} has no network_g section (a mapping with the network's type and sizes): pass "
                          "--opt with the options the model was trained with")
    tone = _resolve_tone(args, opt, where)
    device = _device(args.device)
    if device.type == "cpu":
        keep_freed_memory()
    net = load_stage2_network(args.model, dict(opt["network_g"]), args.param_key, where, device)
    report = report if report is not None else InferenceReport()
    report.device, report.parameters = str(device), sum(p.numel() for p in net.parameters())
    metas = check_inputs(pairs)  # a bad image or dgain file stops the run before any output
    domain = ToneDomain(tone["tone_curve"], tone["hdr_max"])
    print(f"Network options: {where}\nWeights: {args.model} [{args.param_key}] on {device}\n"
          f"Tone: {tone['tone_curve']}, hdr_max {tone['hdr_max']:g}; "
          + (f"images larger than {args.tile} px run in tiles" if args.tile else "no tiling")
          + (f"; self-ensemble of {args.self_ensemble} flips" if args.self_ensemble else "")
          + "\nImages are read as displayed: an EXIF orientation tag is applied (training reads pixels as stored)",
          flush=True)

    try:
        os.makedirs(args.output, exist_ok=True)
    except OSError as e:
        raise OSError(f"Cannot create the output folder '{args.output}': {e.strerror or e}. Choose another --output."
                      ) from None
    written: List[str] = []
    failed: List[str] = []
    start = time.time()
    for stem, image_path, _ in tqdm(pairs, unit="image", desc="LDR->HDR"):
        meta = metas[stem]
        try:
            x = ldr_to_network_input(read_ldr(image_path, exif_orientation=True), meta["dgain"], meta["gamma"], **tone)
            lq = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32))[None].to(device)
            cond = torch.tensor([[meta["dgain"], meta["gamma"]]], dtype=torch.float32, device=device)
            began = time.perf_counter()
            out = restore_ldr_only(net, lq, cond, window=8, tile=args.tile or None, overlap=args.tile_overlap,
                                   seed=args.seed, ensemble=args.self_ensemble)
            linear = domain.to_linear(out[0])  # on the host: waits for the device
            seconds = time.perf_counter() - began
            write_hdr(targets[stem], linear)
            if args.preview:
                write_preview(previews[stem], linear, domain.hdr_max)
        except (OSError, ValueError) as e:  # a file that changed since the check, a full disk: go on, list at the end
            failed.append(f"{osp.basename(image_path)}: {e}")
            continue
        written.append(targets[stem])
        report.seconds.append(seconds)
    print(f"Wrote {len(written)} HDR file(s) to {args.output} in {time.time() - start:.1f} s", flush=True)
    if failed:
        raise ImagesFailed(f"{len(failed)} of {len(pairs)} image(s) failed during the run ({len(written)} written to "
                           f"'{args.output}'):\n  " + "\n  ".join(failed[:20])
                           + (f"\n  ... (+{len(failed) - 20} more)" if len(failed) > 20 else "")
                           + "\nFix these files and run them again (--overwrite replaces the outputs already written).")
    return written


def main(root: str, argv: Optional[Sequence[str]] = None) -> List[str]:
    """Entry point of ``inference_hdr.py``/``diffir-infer``; ``root`` is unused (every pipeline entry point takes
    ``(root, argv)``: inference writes only to ``--output`` and its default network is built in)."""
    return run_inference(build_arg_parser().parse_args(argv))
