"""LDR-only inference: a folder of JPEGs (+ their dgain files) → linear HDR files, with DiffIR stage-2 weights.

``python inference_hdr.py --input DIR --dgain DIR --model net_g.pth --output DIR [--opt OPTIONS.yml]``

Each image goes through the training data pipeline (LDR linearised with its own dgain/gamma, then the tone curve
of the training options), the stage-2 network (prior from the whole image, DIRformer whole or on overlapping tiles
for large images) and back: the output is clamped to [0, 1] in the network domain (so to [0, hdr_max], as the
original fork does) and the tone curve is inverted, giving values in the training GT's units. Files are written
atomically, ``.hdr`` (Radiance RGBE) by default or ``.exr`` (float32).

The network options come from ``--opt`` (its ``network_g``, and the tone settings of its first dataset), else from
the ``options_*.yml`` that training saved next to the checkpoint's ``models/`` folder, else the official stage-2
sizes built in here (:data:`OFFICIAL_S2_NETWORK`, the ``network_g`` of ``options/test_DiffIRs2_hdr.yml``; in code so
that a pip-installed ``diffir-infer`` finds it from any directory).
"""
from __future__ import annotations

import argparse
import glob
import os
import os.path as osp
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from DiffIR.archs import build_network
from DiffIR.data.dgain import read_dgain_file
from DiffIR.data.ldr_hdr_paired_dataset import LQ_EXTENSIONS
from DiffIR.models.diffir_s2_model import STAGE1_WEIGHTS_MESSAGE, is_stage1_state, restore_ldr_only
from DiffIR.models.evaluation import ToneDomain
from DiffIR.utils.cpu_malloc import keep_freed_memory
from DiffIR.utils.checkpoint import extract_state_dict, load_file
from DiffIR.utils.hdr_io import read_ldr, write_hdr
from DiffIR.utils.options import load_yaml
from DiffIR.utils.registry import OptionError
from DiffIR.utils.tone_mapping import TONE_CURVES, ldr_to_network_input

__all__ = ["build_arg_parser", "find_network_options", "load_stage2_network",
           "run_inference", "main"]

OUTPUT_FORMATS = ("hdr", "exr")

#: network_g of the official DiffIR stage 2 (= options/test_DiffIRs2_hdr.yml; a test keeps them equal)
OFFICIAL_S2_NETWORK: Dict[str, Any] = {
    "type": "DiffIRS2", "n_encoder_res": 5, "inp_channels": 3, "out_channels": 3, "dim": 48,
    "num_blocks": [3, 5, 6, 6], "num_refinement_blocks": 4, "heads": [1, 2, 4, 8], "ffn_expansion_factor": 2,
    "bias": False, "LayerNorm_type": "WithBias", "n_denoise_res": 1, "linear_start": 0.1, "linear_end": 0.99,
    "timesteps": 4}
OFFICIAL_S2_WHERE = "the built-in official stage-2 network options"


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="DiffIR stage 2: LDR images (+ dgain files) -> linear HDR images")
    p.add_argument("--input", required=True, help="folder of LDR images (.jpg/.jpeg/.png)")
    p.add_argument("--dgain", required=True, help="folder of <stem>.txt files with 'dgain:' and 'gamma:' lines")
    p.add_argument("--model", required=True, help="stage-2 checkpoint (net_g_*.pth)")
    p.add_argument("--output", required=True, help="folder for the HDR outputs (<stem>.hdr or .exr)")
    p.add_argument("--opt", default=None, help="options YAML naming the network (network_g) and tone settings; "
                                               "default: the options saved with the experiment")
    p.add_argument("--format", choices=OUTPUT_FORMATS, default="hdr", help="output format (default: hdr)")
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
    p.add_argument("--device", default="auto", help="auto (a GPU if present), cpu, cuda or cuda:N")
    return p


def find_network_options(model_path: str, opt_path: Optional[str]) -> Tuple[Dict[str, Any], str]:
    """The options dict that names the network, and where it came from (see the module docstring)."""
    if opt_path:
        return load_yaml(opt_path), opt_path
    saved = sorted(glob.glob(osp.join(osp.dirname(osp.dirname(osp.abspath(model_path))), "options_*.yml")))
    if len(saved) == 1:
        return load_yaml(saved[0]), saved[0]
    return {"network_g": dict(OFFICIAL_S2_NETWORK)}, OFFICIAL_S2_WHERE


def _tone_settings(opt: Dict[str, Any]) -> Dict[str, Any]:
    """hdr_max / tone_curve / lq_linearize of the options' first dataset (the training data's), else defaults."""
    datasets = opt.get("datasets") or {}
    first = next((d for d in datasets.values() if isinstance(d, dict)), {})
    return {"hdr_max": float(first.get("hdr_max", 1000.0)), "tone_curve": str(first.get("tone_curve", "log")).lower(),
            "lq_linearize": bool(first.get("lq_linearize", True))}


def load_stage2_network(model_path: str, network_opt: Dict[str, Any], param_key: str, where: str,
                        device: torch.device) -> nn.Module:
    """Build ``network_opt`` and load ``model_path`` into it strictly; explain stage-1 files and mismatches."""
    state = extract_state_dict(load_file(model_path, "network checkpoint"), param_key, model_path)
    if is_stage1_state(state):
        raise OptionError(STAGE1_WEIGHTS_MESSAGE.format(what=f"The checkpoint {model_path}"))
    if str(network_opt.get("type")) == "DiffIRS1":
        raise OptionError(STAGE1_WEIGHTS_MESSAGE.format(what=f"network_g in {where}"))
    net = build_network(network_opt, "network_g")
    if not hasattr(net, "estimate_ipr"):
        raise OptionError(f"network_g in {where} is {type(net).__name__}; LDR-only inference needs a stage-2 "
                          "network (type: DiffIRS2)")
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise OptionError(f"The checkpoint {model_path} [{param_key}] does not fit network_g of {where}: pass --opt "
                          f"with the options the model was trained with.\n{e}") from None
    return net.to(device).eval()


def _pair_inputs(input_dir: str, dgain_dir: str) -> List[Tuple[str, str, str]]:
    """``(stem, image, dgain file)`` for every LDR image; every missing dgain file is an error, named."""
    for folder, what in ((input_dir, "--input"), (dgain_dir, "--dgain")):
        if not osp.isdir(folder):
            raise FileNotFoundError(f"{what} folder '{folder}' does not exist")
    images = sorted(f for f in os.listdir(input_dir) if osp.splitext(f)[1].lower() in LQ_EXTENSIONS)
    if not images:
        raise FileNotFoundError(f"--input folder '{input_dir}' has no LDR images ({', '.join(LQ_EXTENSIONS)})")
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


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise OptionError(f"--device {name}: no CUDA GPU is available here; use --device cpu")
    return dev


def run_inference(args: argparse.Namespace) -> List[str]:
    """Restore every image of ``args.input``; returns the written paths. Everything is checked before any output."""
    if args.tile < 0 or args.tile % 8:
        raise OptionError(f"--tile must be 0 or a positive multiple of 8, got {args.tile}")
    if args.tile and not 0 <= args.tile_overlap <= args.tile - 8:
        raise OptionError(f"--tile_overlap must be in [0, {args.tile - 8}] for --tile {args.tile}, got {args.tile_overlap}")
    pairs = _pair_inputs(args.input, args.dgain)
    metas = {stem: read_dgain_file(txt) for stem, _, txt in pairs}  # a bad dgain file stops the run before any output
    opt, where = find_network_options(args.model, args.opt)
    if "network_g" not in opt:
        raise OptionError(f"{where} has no network_g section: pass --opt with the options the model was trained with")
    tone = _tone_settings(opt)
    if args.hdr_max is not None:
        tone["hdr_max"] = float(args.hdr_max)
    if args.tone_curve is not None:
        tone["tone_curve"] = args.tone_curve
    if tone["tone_curve"] not in TONE_CURVES:
        raise OptionError(f"tone_curve '{tone['tone_curve']}' (from {where}) is unknown; use one of {', '.join(TONE_CURVES)}")
    device = _device(args.device)
    if device.type == "cpu":
        keep_freed_memory()
    net = load_stage2_network(args.model, dict(opt["network_g"]), args.param_key, where, device)
    domain = ToneDomain(tone["tone_curve"], tone["hdr_max"])
    print(f"Network options: {where}\nWeights: {args.model} [{args.param_key}] on {device}\n"
          f"Tone: {tone['tone_curve']}, hdr_max {tone['hdr_max']:g}; "
          + (f"images larger than {args.tile} px run in tiles" if args.tile else "no tiling"), flush=True)

    os.makedirs(args.output, exist_ok=True)
    written = []
    start = time.time()
    for stem, image_path, _ in tqdm(pairs, unit="image", desc="LDR->HDR"):
        meta = metas[stem]
        x = ldr_to_network_input(read_ldr(image_path), meta["dgain"], meta["gamma"], **tone)
        lq = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32))[None].to(device)
        cond = torch.tensor([[meta["dgain"], meta["gamma"]]], dtype=torch.float32, device=device)
        out = restore_ldr_only(net, lq, cond, window=8, tile=args.tile or None, overlap=args.tile_overlap,
                               seed=args.seed)
        path = osp.join(args.output, f"{stem}.{args.format}")
        write_hdr(path, domain.to_linear(out[0]))
        written.append(path)
    print(f"Wrote {len(written)} HDR file(s) to {args.output} in {time.time() - start:.1f} s", flush=True)
    return written


def main(root: str, argv: Optional[Sequence[str]] = None) -> List[str]:
    """Entry point of ``inference_hdr.py``/``diffir-infer``; ``root`` is unused (every pipeline entry point takes
    ``(root, argv)``: inference writes only to ``--output`` and its default network is built in)."""
    return run_inference(build_arg_parser().parse_args(argv))
