"""ONNX export of a stage-2 network for LDR-only inference: ``diffir-export --format onnx``.

The graph is the eval-mode ``DiffIRS2`` forward — CPEN, the 4-step reverse diffusion, the DIRformer and, when the
network has one, the highlight gate — with the diffusion's start noise as an *input*: the PyTorch network draws it
from the torch RNG, which a graph cannot reproduce, so given the same noise the ONNX output is PyTorch's. Inputs:

* ``lq`` (B, 3, H, W) float32: the network input (the LDR linearised with its dgain/gamma, then the tone curve, as
  ``inference_hdr.py`` builds it); H and W any multiples of 8 (reflect-pad the bottom/right and crop the output back,
  as inference does);
* ``noise`` (B, 256) float32: standard Gaussian noise; :func:`start_noise` gives the noise ``inference_hdr.py --seed
  N`` draws on a CPU;
* ``cond`` (B, 2) float32 ``[dgain, gamma]`` per image, only when the network uses it (``dgain_cond``, or a highlight
  gate that linearises).

Output ``out`` (B, 3, H, W): the network domain, unclamped; clamp to [0, 1] and invert the recorded tone curve for
linear HDR in the GT's units. Batch, H and W are dynamic. The exporter is torch's ``dynamo=True`` one
(``torch.export``): the TorchScript exporter (``dynamo=False``, deprecated) stops at this network on torch 2.13 (it
has no ``expm1`` and needs the LayerNorm's shape as a constant). The file's metadata holds what the ``.safetensors``
export records (network options, tone domain, source checkpoint, weights' key, iteration) and the check below.

Every export is checked before it is written: onnxruntime (CPU) runs the graph on an input of another size than the
one traced and must agree with PyTorch within :data:`TOLERANCE` (max abs difference, network domain), else nothing
is written.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os.path as osp
import warnings
from typing import Any, Dict, Iterator, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn

from DiffIR.inference_pipeline import load_export_source
from DiffIR.utils.errors import DiffIRError, OptionError
from DiffIR.utils.misc import atomic_write_bytes

__all__ = ["ONNX_EXT", "TOLERANCE", "MissingPackageError", "require_onnx_packages", "LdrOnlyGraph", "start_noise",
           "export_onnx"]

ONNX_EXT = ".onnx"
#: the most the ONNX graph may differ from PyTorch (max abs difference in the network domain, about [0, 1])
TOLERANCE = 1e-4
#: torch's dynamo exporter needs onnx and onnxscript; the check at export needs onnxruntime
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")
_CHECK_SHAPE = (1, 3, 48, 56)  # the check's input: another batch and size than the traced example's
_LOGGERS = ("onnxscript", "onnx_ir", "torch.onnx", "torch.export")


class MissingPackageError(DiffIRError, ImportError):
    """An optional package (an extra) is not installed."""


class ExportCheckFailed(DiffIRError, RuntimeError):
    """The exported graph does not compute what the PyTorch network computes; nothing was written."""


def require_onnx_packages() -> None:
    """Refuse at once, naming the extra, when a package the ONNX export needs is missing (before any work)."""
    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingPackageError(
            f"ONNX export needs the packages {', '.join(ONNX_PACKAGES)}; {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not installed. Install them with `pip install -e .[onnx]` "
            "(your torch stays as it is), then run the export again.")


def uses_cond(net: nn.Module) -> bool:
    """Whether the network reads each image's ``[dgain, gamma]`` (so the graph takes ``cond``)."""
    gate = getattr(net, "gate", None)
    return bool(getattr(net, "dgain_cond", False)) or (gate is not None and gate.lq_linearize)


class LdrOnlyGraph(nn.Module):
    """What the ONNX file computes: ``net`` in eval mode, with the start noise as an input (see the module text)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        if not hasattr(net, "estimate_ipr"):
            raise OptionError(f"ONNX export is for stage-2 networks (LDR-only inference); network_g is "
                              f"{type(net).__name__}. Export a DiffIRS2 checkpoint (stage 1 needs the HDR GT).")
        self.net = net.eval()
        self.input_names: Tuple[str, ...] = ("lq", "noise") + (("cond",) if uses_cond(net) else ())

    def forward(self, lq: torch.Tensor, noise: torch.Tensor, cond: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.net(lq, cond=cond, noise=noise)

    def example(self, shape: Tuple[int, int, int, int], seed: int) -> Dict[str, torch.Tensor]:
        """Inputs of ``shape`` (lq in [0, 1], dgain in [1, 4], gamma in [1.8, 2.6]), named as the graph's."""
        g = torch.Generator().manual_seed(seed)
        b = shape[0]
        inputs = {"lq": torch.rand(shape, generator=g), "noise": torch.randn((b, self.net.ipr_dim), generator=g),
                  "cond": torch.stack([1 + 3 * torch.rand(b, generator=g), 1.8 + 0.8 * torch.rand(b, generator=g)], 1)}
        return {name: inputs[name] for name in self.input_names}


def start_noise(seed: int, batch: int = 1, ipr_dim: int = 256) -> torch.Tensor:
    """The start noise that ``inference_hdr.py --seed SEED`` (and validation with ``manual_seed``) draws on a CPU:
    with it, the ONNX output is that of PyTorch inference of the whole image."""
    return torch.randn((batch, ipr_dim), generator=torch.Generator().manual_seed(int(seed)))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter's progress lines, tracer warnings and constant-folding notes say nothing a user can act on."""
    levels = {name: logging.getLogger(name).level for name in _LOGGERS}
    try:
        for name in _LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _trace(graph: LdrOnlyGraph, opset: Optional[int]) -> Any:
    """The ONNX model proto of ``graph``, batch/H/W dynamic (traced at batch 2: torch.export fixes sizes of 1)."""
    from torch.export import Dim

    example = graph.example((2, 3, 32, 40), seed=0)
    batch = Dim("batch", min=1)
    # H and W as 8·k: the network's guards (H % 8 == 0, ...) then hold for every size the graph accepts
    dims = {"lq": {0: batch, 2: 8 * Dim("height_8", min=1), 3: 8 * Dim("width_8", min=1)}, "noise": {0: batch},
            "cond": {0: batch}}
    with _quiet(), torch.no_grad():
        program = torch.onnx.export(graph.eval(), tuple(example.values()), dynamo=True, input_names=list(example),
                                    output_names=["out"], dynamic_shapes={k: dims[k] for k in example},
                                    opset_version=opset, verbose=False)
    return program.model_proto


def check_against_torch(model: bytes, graph: LdrOnlyGraph, shape: Tuple[int, int, int, int] = _CHECK_SHAPE
                        ) -> float:
    """Max abs difference between onnxruntime (CPU) running ``model`` and PyTorch running ``graph``, on ``shape``."""
    import onnxruntime as ort

    inputs = graph.example(shape, seed=1)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    got = session.run(None, {name: t.numpy() for name, t in inputs.items()})[0]
    with torch.no_grad():
        want = graph(**inputs).numpy()
    if got.shape != want.shape:
        return float("inf")
    return float(np.abs(got - want).max())


def export_onnx(model_path: str, out_path: str, opt_path: Optional[str] = None, param_key: str = "params_ema",
                overwrite: bool = False, opset: Optional[int] = None) -> Dict[str, str]:
    """Write ``model_path``'s stage-2 network as an ONNX graph (see the module text); returns the file's metadata.

    The checks, refusals and metadata of :func:`DiffIR.inference_pipeline.export_safetensors` apply; the metadata
    adds the graph's inputs and output, the tolerance and the difference the check measured.
    """
    require_onnx_packages()
    import onnx
    import onnxruntime

    net, _, meta = load_export_source(model_path, out_path, opt_path, param_key, overwrite)
    graph = LdrOnlyGraph(net)
    proto = _trace(graph, opset)
    meta = {**meta, "format": "DiffIR-HDR stage-2 ONNX graph (LDR-only inference)",
            "inputs": json.dumps({"lq": "B x 3 x H x W float32, network domain, H and W multiples of 8",
                                  "noise": f"B x {net.ipr_dim} float32, standard Gaussian (the diffusion's start)",
                                  **({"cond": "B x 2 float32, [dgain, gamma] per image"}
                                     if "cond" in graph.input_names else {})}),
            "output": "out: B x 3 x H x W float32, network domain; clamp to [0, 1], then invert the tone curve",
            "highlight_gate": json.dumps(net.gate.config() if net.gate is not None else None),
            "exporter": f"torch {torch.__version__} torch.onnx.export(dynamo=True), opset "
                        f"{next(o.version for o in proto.opset_import if o.domain in ('', 'ai.onnx'))}"}
    onnx.helper.set_model_props(proto, meta)
    data = proto.SerializeToString()
    diff = check_against_torch(data, graph)
    if not diff <= TOLERANCE:
        raise ExportCheckFailed(f"The ONNX graph of {model_path} differs from PyTorch by {diff:.3g} (more than "
                                f"{TOLERANCE:g}) on a {'x'.join(map(str, _CHECK_SHAPE))} input; nothing was written "
                                f"to '{out_path}'. Report it with your torch ({torch.__version__}) and onnxruntime "
                                f"({onnxruntime.__version__}) versions.")
    meta["check"] = json.dumps({"max_abs_diff": diff, "tolerance": TOLERANCE, "input": list(_CHECK_SHAPE),
                                "runtime": f"onnxruntime {onnxruntime.__version__} CPUExecutionProvider"})
    onnx.helper.set_model_props(proto, meta)
    atomic_write_bytes(osp.abspath(out_path), proto.SerializeToString())
    return meta
