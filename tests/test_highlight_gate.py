"""The highlight gate (network option ``highlight_gate``): only (nearly) clipped pixels change, the checkpoint
records it, and a network built without it (or in another tone domain) is refused for gated weights."""
import pytest
import torch
import yaml

from DiffIR.archs import build_network
from DiffIR.archs.diffir_s1_arch import DiffIRS1
from DiffIR.archs.diffir_s2_arch import DiffIRS2
from DiffIR.archs.highlight_gate import build_highlight_gate
from DiffIR.models.diffir_s2_model import restore_ldr_only
from DiffIR.train_pipeline_hdr import train_pipeline
from DiffIR.utils.checkpoint import CheckpointMismatch, check_network_record, load_file
from DiffIR.utils.errors import OptionError
from DiffIR.config.schema import value_errors
from DiffIR.utils.tone_mapping import ldr_to_network_input

from helpers import TINY_NET, TINY_S2, train_options

TINY = {k: v for k, v in TINY_NET.items() if k != "type"}
TINY2 = {k: v for k, v in TINY_S2.items() if k != "type"}
GATE = {"threshold": 0.7}
TRAIN_GATE = {"threshold": 0.7, "in_training": True}


def _inputs(h: int = 32, w: int = 40):
    """Network inputs of LDRs with dark, mid and clipped areas, their conditions and their LDR levels."""
    g = torch.Generator().manual_seed(0)
    ldr = torch.rand(2, 3, h, w, generator=g) * 0.6
    ldr[:, :, : h // 4] = 1.0  # clipped rows
    ldr[:, :, h // 4: h // 2] = 0.85  # a ramp value: half gated at threshold 0.7
    cond = torch.tensor([[2.0, 2.2], [1.3, 1.9]])
    lq = ldr_to_network_input(ldr, cond[:, 0], cond[:, 1]).float()
    return lq, cond, ldr.amax(dim=1, keepdim=True)


def _official_start(cls, **kw):
    torch.manual_seed(0)  # the official initialisation: the untrained residual is not zero
    return cls(**(TINY if cls is DiffIRS1 else TINY2), identity_init=False, **kw)


@pytest.mark.parametrize("cls", [DiffIRS1, DiffIRS2])
def test_gate_keeps_unclipped_pixels_and_blends_by_the_ldr_level(cls):
    lq, cond, level = _inputs()
    gated, plain = _official_start(cls, highlight_gate=GATE).eval(), _official_start(cls).eval()
    assert list(gated.state_dict()) == list(plain.state_dict())  # no new keys: official files load unchanged
    args = (lq, lq) if cls is DiffIRS1 else (lq,)
    with torch.no_grad():
        torch.manual_seed(3)
        out = gated(*args, cond=cond)
        torch.manual_seed(3)
        free = plain(*args, cond=cond)
    alpha = ((level - 0.7) / 0.3).clamp(0, 1)
    below = (level < 0.7).expand_as(lq)
    assert torch.equal(out[below], lq[below])  # below the threshold the output is the inverse tone mapping
    assert (free[below] - lq[below]).abs().max() > 1e-3  # ... which the ungated network changes
    torch.testing.assert_close(out, lq + alpha * (free - lq), atol=1e-6, rtol=0)
    assert (out - lq)[:, :, :8].abs().max() > 1e-3  # clipped pixels are the network's


def test_gate_in_training_mode_tiles_and_self_ensemble():
    lq, cond, level = _inputs(48, 48)
    below = (level < 0.7).expand_as(lq)
    ipr = torch.randn(2, 256)
    out, _ = _official_start(DiffIRS2, highlight_gate=TRAIN_GATE).train()(lq, ipr, cond=cond)
    assert torch.equal(out[below], lq[below])  # in_training: the loss sees the gated output
    net = _official_start(DiffIRS2, highlight_gate=GATE)
    free, _ = net.train()(lq, ipr, cond=cond)
    assert (free[below] - lq[below]).abs().max() > 1e-3  # by default training fits every pixel
    net.eval()
    whole = restore_ldr_only(net, lq, cond, seed=1)
    tiled = restore_ldr_only(net, lq, cond, seed=1, tile=32, overlap=8)
    flips = restore_ldr_only(net, lq, cond, seed=1, ensemble=8)
    for result in (whole, tiled, flips):
        assert torch.allclose(result[below], lq[below], atol=1e-6)
    assert (tiled - whole).abs().max() < 0.05


def test_gate_needs_dgain_and_checks_its_options():
    lq, cond, _ = _inputs()
    net = _official_start(DiffIRS1, highlight_gate=True).eval()
    with pytest.raises(ValueError, match="dataroot_dgain"):
        net(lq, lq)
    assert build_highlight_gate(None, "x") is None and build_highlight_gate(False, "x") is None
    assert build_highlight_gate({"threshold": 0.8, "lq_linearize": False}, "x").config() == {
        "threshold": 0.8, "tone_curve": "log", "hdr_max": 1000.0, "lq_linearize": False}
    gate = build_highlight_gate({"lq_linearize": False}, "x")
    ldr = torch.tensor([0.5, 0.85, 1.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    assert torch.allclose(gate.weight(ldr, None), torch.ones(1, 1, 2, 2))  # the brightest channel counts
    for bad, msg in (({"threshold": 1.0}, "threshold"), ({"treshold": 0.7}, "unknown highlight_gate key"),
                     ({"tone_curve": "gamma"}, "tone_curve"), (0.7, "mapping")):
        with pytest.raises((ValueError, OptionError), match=msg):
            build_network(dict(TINY_NET, highlight_gate=bad))


def test_gate_in_another_tone_domain_than_the_data_is_refused(tmp_path):
    opt = yaml.safe_load(train_options(tmp_path).read_text())
    opt["network_g"]["highlight_gate"] = {"threshold": 0.7, "tone_curve": "log"}
    for d in opt["datasets"].values():
        d["tone_curve"] = "mu_law"
    errors = value_errors(opt, training=True)
    assert any("network_g:highlight_gate:tone_curve" in e and "mu_law" in e for e in errors), errors
    opt["network_g"]["highlight_gate"]["tone_curve"] = "mu_law"
    assert not [e for e in value_errors(opt, training=True) if "highlight_gate" in e]


def test_checkpoint_records_the_gate_and_loading_it_without_the_gate_is_refused(tmp_path):
    yml = train_options(tmp_path, name="gated", total_iter=3)
    opt = yaml.safe_load(yml.read_text())
    opt["network_g"]["highlight_gate"] = GATE
    yml.write_text(yaml.safe_dump(opt))
    train_pipeline(str(tmp_path), ["-opt", str(yml)])
    path = tmp_path / "experiments" / "gated" / "models" / "net_g_latest.pth"
    ckpt = load_file(str(path))
    assert ckpt["network"]["highlight_gate"] == {"threshold": 0.7, "tone_curve": "log", "hdr_max": 1000.0,
                                                 "lq_linearize": True}
    check_network_record(ckpt, build_network(dict(TINY_NET, highlight_gate=GATE)), str(path))
    with pytest.raises(CheckpointMismatch, match="highlight_gate") as err:
        check_network_record(ckpt, build_network(dict(TINY_NET)), str(path))
    assert '"threshold": 0.7' in str(err.value) and str(path) in str(err.value)
    # official and older files carry no record and are not judged; an ungated run records null
    check_network_record({"params": {}}, build_network(dict(TINY_NET, highlight_gate=GATE)), "official.pth")
    with pytest.raises(CheckpointMismatch, match="no highlight_gate"):
        check_network_record({"network": {"highlight_gate": None}}, build_network(dict(TINY_NET, highlight_gate=GATE)),
                             "plain.pth")


def test_inference_refuses_gated_weights_for_an_ungated_network(tmp_path):
    from DiffIR.inference_pipeline import load_stage2_network
    from DiffIR.utils.checkpoint import network_record

    net = DiffIRS2(**TINY2, highlight_gate=GATE)
    path = tmp_path / "net_g_5.pth"
    torch.save({"params": net.state_dict(), "network": network_record(net)}, path)
    loaded = load_stage2_network(str(path), dict(TINY_S2, highlight_gate=GATE), "params", "net.yml",
                                 torch.device("cpu"))
    assert loaded.gate is not None
    with pytest.raises(CheckpointMismatch, match="network_g of net.yml"):
        load_stage2_network(str(path), dict(TINY_S2), "params", "net.yml", torch.device("cpu"))


def test_inference_without_options_takes_the_gate_the_checkpoint_records(tmp_path):
    from DiffIR.inference_pipeline import OFFICIAL_S2_WHERE, load_stage2_network
    from DiffIR.utils.checkpoint import network_record

    net = DiffIRS2(**TINY2, highlight_gate=GATE)
    path = tmp_path / "net_g_5.pth"
    torch.save({"params": net.state_dict(), "network": network_record(net)}, path)
    loaded = load_stage2_network(str(path), dict(TINY_S2), "params", OFFICIAL_S2_WHERE, torch.device("cpu"))
    assert loaded.gate is not None and loaded.gate.config() == net.gate.config()
