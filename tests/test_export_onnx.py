"""ONNX export of the stage-2 network (``diffir-export --format onnx``): the start noise as an input, the graph
against PyTorch with onnxruntime on the CPU (max abs difference <= 1e-4 in the network domain), the highlight gate
inside the graph, the recorded metadata, and one clear message when the packages are missing."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import DiffIR.export_onnx as eo
from DiffIR.archs import build_network
from DiffIR.cli_entry import export
from DiffIR.inference_pipeline import export_safetensors
from DiffIR.models.diffir_s2_model import restore_ldr_only
from DiffIR.utils.checkpoint import read_safetensors_metadata
from DiffIR.utils.errors import OptionError

from helpers import TINY_NET, TINY_S2, write_yaml

HAVE_ONNX = all(importlib.util.find_spec(name) for name in eo.ONNX_PACKAGES)
needs_onnx = pytest.mark.skipif(not HAVE_ONNX, reason="onnx, onnxscript and onnxruntime are not installed "
                                                      "(pip install -e .[onnx])")
GATE = {"threshold": 0.7}


def _net(**extra: Any) -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_network(dict(TINY_S2, identity_init=False, **extra), "network_g").eval()
    if getattr(net, "dgain_cond", False):  # its last layer starts at zero: give cond a visible effect
        for p in net.cond_embed.parameters():
            torch.nn.init.normal_(p, std=0.2)
    return net


# ---------------------------------------------------------------------------------------------- the noise input
def test_explicit_noise_is_the_seeded_draw_and_uses_no_rng() -> None:
    """``noise=start_noise(seed)`` gives the output of the seeded default draw, bit for bit, and draws nothing from
    the torch RNG; without ``noise`` the network consumes the RNG as before (1 + T draws, as the official code)."""
    net = _net(dgain_cond=True)
    lq, cond = torch.rand(2, 3, 16, 24), torch.tensor([[2.0, 2.2], [1.5, 1.9]])
    with torch.no_grad():
        torch.manual_seed(7)
        seeded = net(lq, cond=cond)
        after_default = torch.get_rng_state()
        torch.manual_seed(7)
        torch.randn(2, 256)
        for _ in range(net.timesteps):
            torch.randn(2, 256)
        assert torch.equal(after_default, torch.get_rng_state())
        state = torch.get_rng_state()
        given = net(lq, cond=cond, noise=eo.start_noise(7, batch=2))
        assert torch.equal(state, torch.get_rng_state())
    assert torch.equal(seeded, given)
    with pytest.raises(ValueError, match=r"noise must have shape \(2, 256\)"):
        net(lq, cond=cond, noise=torch.zeros(1, 256))
    # training mode: the noise is the diffusion's epsilon, so the step is reproducible without seeding
    net.train()
    ipr = torch.randn(2, 256)
    a = net(lq, ipr, cond, noise=torch.ones(2, 256))[0]
    b = net(lq, ipr, cond, noise=torch.ones(2, 256))[0]
    assert torch.equal(a, b)


def test_graph_refuses_stage1_and_takes_cond_only_when_used() -> None:
    with pytest.raises(OptionError, match="ONNX export is for stage-2 networks"):
        eo.LdrOnlyGraph(build_network(dict(TINY_NET), "network_g"))
    assert eo.LdrOnlyGraph(_net()).input_names == ("lq", "noise")
    assert eo.LdrOnlyGraph(_net(dgain_cond=True)).input_names == ("lq", "noise", "cond")
    assert eo.LdrOnlyGraph(_net(highlight_gate=GATE)).input_names == ("lq", "noise", "cond")  # it linearises
    assert eo.LdrOnlyGraph(_net(highlight_gate=dict(GATE, lq_linearize=False))).input_names == ("lq", "noise")


def test_missing_packages_are_named_before_any_work(monkeypatch, tmp_path: Path, capsys) -> None:
    """Without onnxruntime (say) the export stops with the extra to install, before the (missing) model is read."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    rc = export(["--format", "onnx", "--model", str(tmp_path / "missing.pth")])
    err = capsys.readouterr().err
    assert rc == 2 and "onnxruntime is not installed" in err and "`pip install -e .[onnx]`" in err
    assert "missing.pth" not in err and "Traceback" not in err
    assert export(["--model", str(tmp_path / "m.pth"), "--opset", "17"]) == 2  # --opset is for ONNX only
    assert "--opset applies to --format onnx only" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- the exported graph
@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Dict[str, Any]:
    """One export (a network with dgain_cond and the highlight gate) through the command line, its session and the
    PyTorch network it came from."""
    if not HAVE_ONNX:
        pytest.skip("onnx, onnxscript and onnxruntime are not installed (pip install -e .[onnx])")
    import onnxruntime as ort

    root = tmp_path_factory.mktemp("onnx")
    net = _net(dgain_cond=True, highlight_gate=GATE)
    torch.save({"params": net.state_dict(), "params_ema": net.state_dict()}, root / "net_g_12.pth")
    network_g = dict(TINY_S2, identity_init=False, dgain_cond=True, highlight_gate=GATE)
    write_yaml(root / "net.yml", {"network_g": network_g, "datasets": {"train": {"hdr_max": 1000}}})
    args = ["--model", str(root / "net_g_12.pth"), "--opt", str(root / "net.yml")]
    assert export(["--format", "onnx", *args]) == 0
    path = root / "net_g_12.onnx"  # the default --out: the checkpoint's name with .onnx, beside it
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return {"root": root, "path": path, "args": args, "net": net, "session": session}


def _run(exported: Dict[str, Any], **inputs: torch.Tensor) -> np.ndarray:
    return exported["session"].run(None, {k: v.numpy() for k, v in inputs.items()})[0]


@needs_onnx
def test_onnx_matches_pytorch_at_any_batch_and_size(exported: Dict[str, Any]) -> None:
    graph = eo.LdrOnlyGraph(exported["net"])
    assert [i.name for i in exported["session"].get_inputs()] == ["lq", "noise", "cond"]
    for shape in ((1, 3, 24, 40), (3, 3, 48, 32), (1, 3, 64, 8)):
        inputs = graph.example(shape, seed=sum(shape))
        with torch.no_grad():
            want = graph(**inputs).numpy()
        got = _run(exported, **inputs)
        assert got.shape == want.shape and np.abs(got - want).max() <= eo.TOLERANCE
    # the noise is an input: another noise, another output; the same noise, the same output
    other = dict(inputs, noise=torch.randn_like(inputs["noise"]))
    assert np.abs(_run(exported, **other) - got).max() > 1e-5  # small: the gate passes few pixels of random input
    assert np.array_equal(_run(exported, **inputs), got)


@needs_onnx
def test_onnx_equals_inference_with_the_same_seed_after_padding(exported: Dict[str, Any]) -> None:
    """What inference does with --seed 3 on a 30 x 36 image (reflect-pad to multiples of 8, crop back) is what the
    graph gives on the padded image with start_noise(3)."""
    net = exported["net"]
    lq, cond = torch.rand(1, 3, 30, 36), torch.tensor([[3.0, 2.4]])
    with torch.no_grad():
        want = restore_ldr_only(net, lq, cond, seed=3).numpy()
    padded = F.pad(lq, (0, 4, 0, 2), mode="reflect")
    got = _run(exported, lq=padded, noise=eo.start_noise(3), cond=cond)[..., :30, :36]
    assert np.abs(got - want).max() <= eo.TOLERANCE


@needs_onnx
def test_highlight_gate_is_in_the_graph(exported: Dict[str, Any]) -> None:
    """Where the LDR's brightest channel is below the threshold the graph returns its input exactly; in clipped
    pixels it returns the network's change."""
    net = exported["net"]
    lq = torch.rand(1, 3, 32, 32)
    cond = torch.tensor([[2.0, 2.2]])
    alpha = net.gate.weight(lq, cond)[0, 0].numpy()
    assert (alpha == 0).any() and (alpha == 1).any()
    got = _run(exported, lq=lq, noise=eo.start_noise(0), cond=cond)[0]
    dark, bright = alpha == 0, alpha == 1
    assert np.abs(got[:, dark] - lq[0].numpy()[:, dark]).max() <= 1e-6
    assert np.abs(got[:, bright] - lq[0].numpy()[:, bright]).max() > 1e-3


@needs_onnx
def test_onnx_metadata_records_what_the_safetensors_export_does(exported: Dict[str, Any], capsys) -> None:
    meta = exported["session"].get_modelmeta().custom_metadata_map
    st = exported["root"] / "net.safetensors"
    export_safetensors(str(exported["root"] / "net_g_12.pth"), str(st), str(exported["root"] / "net.yml"))
    shared = read_safetensors_metadata(str(st))
    for key in ("network_g", "tone"):  # JSON in both files
        assert json.loads(meta[key]) == shared[key], key
    for key in ("source", "param_key", "iteration", "options"):
        assert meta[key] == shared[key], key
    assert meta["iteration"] == "12" and json.loads(meta["tone"])["tone_curve"] == "log"
    assert json.loads(meta["highlight_gate"]) == exported["net"].gate.config()
    assert list(json.loads(meta["inputs"])) == ["lq", "noise", "cond"]
    check = json.loads(meta["check"])
    assert check["max_abs_diff"] <= check["tolerance"] == eo.TOLERANCE
    assert "dynamo=True" in meta["exporter"] and meta["format"].startswith("DiffIR-HDR stage-2 ONNX")
    # an existing file is refused as the .safetensors export refuses it, before the network is traced
    capsys.readouterr()
    assert export(["--format", "onnx", *exported["args"]]) == 2
    assert "already exists; choose another --out or pass --overwrite" in capsys.readouterr().err


@needs_onnx
def test_a_graph_that_disagrees_is_not_written(exported: Dict[str, Any], monkeypatch, tmp_path: Path) -> None:
    import onnx

    monkeypatch.setattr(eo, "_trace", lambda graph, opset: onnx.load(str(exported["path"])))  # no second trace
    monkeypatch.setattr(eo, "check_against_torch", lambda *a, **k: 0.5)
    out = tmp_path / "bad.onnx"
    with pytest.raises(eo.ExportCheckFailed, match=r"differs from PyTorch by 0.5 .*nothing was written"):
        eo.export_onnx(str(exported["root"] / "net_g_12.pth"), str(out), str(exported["root"] / "net.yml"))
    assert not out.exists() and not list(tmp_path.iterdir())
