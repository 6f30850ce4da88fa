"""The network-domain tone curves (log, linear, pu21, pq, mu_law): values, inverses, dtypes, dataset and evaluation."""
import numpy as np
import pytest
import torch

from DiffIR.data import build_dataset
from DiffIR.metrics.pu21 import pu21_encode
from DiffIR.models.evaluation import ToneDomain
from DiffIR.utils.hdr_io import read_hdr
from DiffIR.utils.tone_mapping import (TONE_CURVES, apply_tone_curve, inverse_tone_curve, ldr_to_network_input,
                                       network_input_to_ldr, pq_encode)

from helpers import folder_set_options, make_hdr_folder

CURVES = sorted(TONE_CURVES)


@pytest.mark.parametrize("curve", CURVES)
@pytest.mark.parametrize("hdr_max", [1000.0, 400.0])
def test_round_trip_ends_and_dtypes(curve, hdr_max):
    x = np.geomspace(0.01, hdr_max, 200)
    for dtype, rtol in ((np.float64, 1e-9), (np.float32, 1e-5)):
        xs = x.astype(dtype)
        y = apply_tone_curve(xs, curve, hdr_max)
        assert y.dtype == dtype and np.all(np.diff(y) > 0)
        back = inverse_tone_curve(y, curve, hdr_max)
        assert back.dtype == dtype
        np.testing.assert_allclose(back, xs, rtol=rtol)
    ends = apply_tone_curve(np.array([0.0, hdr_max]), curve, hdr_max)
    assert abs(ends[0]) < 1e-5 and ends[1] == pytest.approx(1.0, abs=1e-9)
    for dtype in (torch.float32, torch.float64):  # torch agrees with numpy and keeps its dtype
        t = torch.tensor(x, dtype=dtype)
        y = apply_tone_curve(t, curve, hdr_max)
        assert y.dtype == dtype and inverse_tone_curve(y, curve, hdr_max).dtype == dtype
        np.testing.assert_allclose(y.double().numpy(), apply_tone_curve(x, curve, hdr_max),
                                   rtol=5e-5 if dtype == torch.float32 else 1e-9, atol=1e-7)


def test_known_values():
    assert pq_encode(0.1) == pytest.approx(0.7518, abs=1e-4)  # PQ of 1000 cd/m², unnormalised
    assert pq_encode(1.0) == pytest.approx(1.0, abs=1e-12)
    assert apply_tone_curve(np.array(1000.0), "mu_law", 1000.0) == pytest.approx(1.0, abs=1e-12)
    assert apply_tone_curve(np.array(500.0), "mu_law", 1000.0) == pytest.approx(np.log1p(2500) / np.log1p(5000))
    assert apply_tone_curve(np.array(100.0), "pu21", 1000.0) == pytest.approx(pu21_encode(100.0) / pu21_encode(1000.0))
    assert apply_tone_curve(np.array(1e-4), "pu21", 1000.0) == apply_tone_curve(np.array(0.005), "pu21", 1000.0)


@pytest.mark.parametrize("curve", CURVES)
def test_inverse_gradient_finite_at_zero_and_above_one(curve):
    y = torch.tensor([0.0, 1e-8, 0.5, 1.0, 1.2], dtype=torch.float32, requires_grad=True)
    inverse_tone_curve(y, curve, 1000.0).sum().backward()
    assert torch.isfinite(y.grad).all()


@pytest.mark.parametrize("curve", ["pu21", "pq", "mu_law"])
def test_dataset_and_evaluation_use_the_curve(tmp_path, curve):
    root = make_hdr_folder(tmp_path, stems=("a",), size=(16, 24), gt_ext=".exr", lq_ext=".png", log10_range=(-1, 3))
    item = build_dataset(folder_set_options(root, tone_curve=curve))[0]
    hdr = read_hdr(root / "gt" / "a.exr")
    np.testing.assert_allclose(item["gt"].numpy().transpose(1, 2, 0), apply_tone_curve(hdr, curve), rtol=1e-5, atol=1e-6)
    dataset = build_dataset(folder_set_options(root, tone_curve=curve.upper()))
    domain = ToneDomain.from_dataset(dataset)
    assert domain == ToneDomain(curve, 1000.0)
    np.testing.assert_allclose(domain.to_linear(item["gt"], clip_top=False), hdr, rtol=1e-4)
    # the network input goes back to its LDR wherever the linearisation did not saturate (and, for pu21, above the
    # encoder's 0.005 cd/m² floor)
    ldr = np.random.default_rng(0).uniform(0.05, 1, (4, 4, 3))
    net_in = ldr_to_network_input(ldr, 2.0, 2.2, 1000.0, curve)
    np.testing.assert_allclose(network_input_to_ldr(net_in, 2.0, 2.2, 1000.0, curve), ldr, atol=1e-6)
