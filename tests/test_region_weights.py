"""train.region_weights: clipped and crushed LDR pixels weigh more, recovered from the network input."""
from __future__ import annotations

import pytest
import torch

from DiffIR.models import build_model
from DiffIR.models.region_weights import RegionWeights, training_tone_domain
from DiffIR.train_pipeline_hdr import train_pipeline
from DiffIR.utils.errors import OptionError
from DiffIR.utils.tone_mapping import ldr_to_network_input

from helpers import log_text, model_options, train_options, write_yaml

import yaml


def _inputs(levels, curve="log", dgain=(2.0, 0.5), gamma=(2.2, 1.8)):
    """A batch of two 1 x len(levels) images whose LDR (every channel) has the given levels, as network inputs."""
    ldr = torch.tensor(levels, dtype=torch.float32).view(1, 1, 1, -1).expand(2, 3, 1, -1).contiguous()
    d, g = torch.tensor(dgain), torch.tensor(gamma)
    return ldr_to_network_input(ldr, d, g, 1000.0, curve), torch.stack([d, g], dim=1)


@pytest.mark.parametrize("curve", ["log", "linear", "pu21", "pq", "mu_law"])
def test_weights_follow_the_ldr_levels_through_every_tone_curve(curve):
    # 0.02, not 0: the pu21 curve floors at 0.005 cd/m², i.e. at an LDR level of about 0.004 here
    lq, cond = _inputs([0.02, 0.025, 0.5, 0.95, 1.0], curve, dgain=(2.0, 2.0))
    rw = RegionWeights({"highlight": 5.0, "shadow": 3.0}, curve, 1000.0)
    w = rw(lq, cond)
    assert w.shape == (2, 1, 1, 5)
    assert torch.allclose(w.mean(), torch.tensor(1.0))
    ratio = w / w[..., 2:3]  # the mid-grey pixel has weight 1 before normalisation
    torch.testing.assert_close(ratio[0, 0, 0], torch.tensor([2.2, 2.0, 1.0, 3.0, 5.0]), atol=2e-3, rtol=0)


def test_the_brightest_channel_decides_and_an_unlinearised_input_is_the_ldr():
    ldr = torch.tensor([[0.5, 0.5, 1.0], [0.5, 0.5, 0.5]]).T.reshape(1, 3, 1, 2)  # pixel 0: blue clipped
    w = RegionWeights({}, lq_linearize=False)(ldr, None)
    assert w[0, 0, 0, 0] / w[0, 0, 0, 1] == pytest.approx(4.0)  # the default highlight weight


def test_a_linearised_input_needs_the_dgain_conditions():
    with pytest.raises(RuntimeError, match="dgain"):
        RegionWeights({})(torch.rand(1, 3, 4, 4), None)


@pytest.mark.parametrize("opt, match", [
    ({"highlite": 2.0}, "highlite' is not an option"),
    ({"highlight": 0.5}, "highlight' is 0.5.*>= 1"),
    ({"shadow_threshold": 1.5}, "shadow_threshold' is 1.5"),
    ({"highlight": "lots"}, "highlight' is 'lots'.*number"),
    ([1, 2], "mapping"),
])
def test_bad_options_name_the_key_and_the_fix(opt, match):
    with pytest.raises(OptionError, match=match):
        RegionWeights(opt)


def test_the_training_tone_domain_is_the_train_sets():
    assert training_tone_domain({}) == ("log", 1000.0, True)
    opt = {"datasets": {"train": {"tone_curve": "pq", "hdr_max": 4000, "lq_linearize": False}}}
    assert training_tone_domain(opt) == ("pq", 4000.0, False)


def _model(tmp_path, **train):
    opt = model_options(tmp_path, "rw", {"optim_g": {"type": "Adam", "lr": 1e-3}, "total_iter": 2, **train})
    opt["datasets"] = {"train": {"tone_curve": "pu21", "hdr_max": 1000}}
    return build_model(opt)


def test_the_model_weights_pixel_losses_and_gives_pu21_loss_the_train_domain(tmp_path):
    model = _model(tmp_path, pixel_opt={"type": "L1Loss"}, pu21_opt={"type": "PU21Loss"},
                   fft_opt={"type": "FFTLoss"}, region_weights={"highlight": 4.0})
    assert model.losses["pu21_opt"].curve == "pu21"
    assert model.weighted_losses == {"pixel_opt", "pu21_opt"}
    out, gt = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    lq, cond = torch.rand(2, 3, 8, 8), torch.tensor([[2.0, 2.2], [4.0, 2.0]])
    w = model.region_weights(lq, cond)
    _, logged = model.compute_losses(out, gt, weight=w)
    torch.testing.assert_close(logged["l_pix"], ((out - gt).abs() * w).mean())
    _, plain = model.compute_losses(out, gt)
    torch.testing.assert_close(plain["l_fft"], logged["l_fft"])  # FFT takes no pixel weights
    assert not torch.allclose(plain["l_pix"], logged["l_pix"])


def test_region_weights_without_a_pixel_loss_is_refused(tmp_path):
    with pytest.raises(OptionError, match="none of the configured losses takes per-pixel weights"):
        _model(tmp_path, fft_opt={"type": "FFTLoss"}, region_weights={})


def test_a_training_run_with_region_weights(tmp_path):
    yml = train_options(tmp_path, total_iter=3, region_weights={"highlight": 3.0, "shadow": 2.0})
    train_pipeline(str(tmp_path), ["-opt", str(yml)])
    assert "l_pix" in log_text(tmp_path, "tiny")
    opt = yaml.safe_load(yml.read_text())
    opt["train"]["region_weights"] = {"highligth": 3.0}
    with pytest.raises(OptionError, match="highligth. is not an option"):  # at option parsing, before any data
        train_pipeline(str(tmp_path), ["-opt", str(write_yaml(tmp_path / "bad.yml", opt))])
