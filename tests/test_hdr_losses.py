"""PU21Loss, FFTLoss, SSIMLoss: values against independent computations, gradients, autocast, option errors."""
import numpy as np
import pytest
import torch

from DiffIR.losses import build_loss
from DiffIR.metrics.pu21 import LUMINANCE_WEIGHTS, pu21_encode
from DiffIR.utils.errors import OptionError
from DiffIR.utils.tone_mapping import inverse_tone_curve


def _pair(shape=(2, 3, 24, 20), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g), torch.rand(shape, generator=g)


def _pu21_reference(out, gt, curve, hdr_max, luminance=False):
    """The loss's definition in NumPy float64: clamp, linearise, (luminance), PU21, normalise, mean |·|."""
    def enc(x, top):
        lin = inverse_tone_curve(np.clip(x.double().numpy(), 0.0, top), curve, hdr_max)
        if luminance:
            lin = np.tensordot(np.asarray(LUMINANCE_WEIGHTS), lin, axes=([0], [1]))
        return pu21_encode(lin) / pu21_encode(hdr_max)
    return float(np.mean(np.abs(enc(out, 1.0) - enc(gt, np.inf))))


@pytest.mark.parametrize("curve, hdr_max", [("log", 1000.0), ("pq", 1000.0), ("pu21", 500.0)])
def test_pu21_loss_matches_its_definition(curve, hdr_max):
    out, gt = _pair()
    out = out * 1.2 - 0.1  # some outputs outside [0, 1]: clamped like at inference
    loss = build_loss({"type": "PU21Loss", "loss_weight": 2.0}, "train:pu21_opt")
    assert loss.needs_tone_domain
    loss.set_tone_domain(curve, hdr_max)
    assert loss(out, gt).item() == pytest.approx(2.0 * _pu21_reference(out, gt, curve, hdr_max), rel=1e-4)
    lum = build_loss({"type": "PU21Loss", "channels": "luminance"})
    lum.set_tone_domain(curve, hdr_max)
    assert lum(out, gt).item() == pytest.approx(_pu21_reference(out, gt, curve, hdr_max, luminance=True), rel=1e-4)
    ch = build_loss({"type": "PU21Loss", "criterion": "charbonnier", "eps": 1e-6})
    ch.set_tone_domain(curve, hdr_max)
    assert ch(out, gt).item() > loss(out, gt).item() / 2.0
    assert build_loss({"type": "PU21Loss"})(gt, gt).item() == 0.0


def test_pu21_loss_weight_and_gradient_at_zero_and_above_one():
    loss = build_loss({"type": "PU21Loss"})
    gt = torch.full((1, 3, 4, 4), 0.5)
    out = torch.zeros(1, 3, 4, 4)
    out[..., :2, :] = 1.3  # above 1: clamped, but still pulled toward the GT
    out.requires_grad_(True)
    loss(out, gt).backward()
    assert torch.isfinite(out.grad).all() and (out.grad[..., :2, :] > 0).all()
    weight = torch.ones(1, 1, 4, 4)
    weight[..., :2, :] = 3.0
    per_pixel = build_loss({"type": "PU21Loss", "reduction": "none"})(out, gt)
    expected = (per_pixel * weight).mean()
    assert loss(out, gt, weight=weight).item() == pytest.approx(expected.item(), rel=1e-6)


def test_fft_loss_matches_numpy():
    out, gt = _pair()
    d = np.fft.rfft2(out.double().numpy(), norm="ortho") - np.fft.rfft2(gt.double().numpy(), norm="ortho")
    expected = np.mean(np.concatenate([np.abs(d.real), np.abs(d.imag)]))
    assert build_loss({"type": "FFTLoss", "loss_weight": 0.5})(out, gt).item() == pytest.approx(0.5 * expected, rel=1e-5)
    assert build_loss({"type": "FFTLoss"})(gt, gt).item() == 0.0


def test_ssim_loss_matches_skimage_and_is_zero_for_identical_images():
    from skimage.metrics import structural_similarity

    out, gt = _pair((1, 3, 32, 28))
    out = (0.6 * gt + 0.4 * out).requires_grad_(True)  # correlated, so SSIM is far from 0
    loss = build_loss({"type": "SSIMLoss"})
    ref = np.mean([structural_similarity(out[0, c].detach().double().numpy(), gt[0, c].double().numpy(),
                                         gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0)
                   for c in range(3)])
    value = loss(out, gt)
    assert value.item() == pytest.approx(1.0 - ref, abs=1e-3)
    value.backward()
    assert torch.isfinite(out.grad).all() and out.grad.abs().sum() > 0
    assert loss(gt, gt).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="at least 11"):
        loss(gt[..., :8, :8], gt[..., :8, :8])


@pytest.mark.parametrize("opt", [{"type": "PU21Loss"}, {"type": "FFTLoss"}, {"type": "SSIMLoss"}])
def test_losses_compute_in_fp32_under_autocast(opt):
    out, gt = _pair()
    out16, gt16 = out.bfloat16(), gt.bfloat16()
    loss = build_loss(opt)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(out16, gt16)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(loss(out16.float(), gt16.float()).item(), rel=1e-6)


def test_bad_options_name_the_key():
    with pytest.raises(OptionError, match=r"'train:pu21_opt:criterion' is 'l2'.*l1, charbonnier"):
        build_loss({"type": "PU21Loss", "criterion": "l2"}, "train:pu21_opt")
    with pytest.raises(OptionError, match=r"'train:pu21_opt:channels' is 'y'.*rgb, luminance"):
        build_loss({"type": "PU21Loss", "channels": "y"}, "train:pu21_opt")
    with pytest.raises(OptionError, match=r"'train:fft_opt:reduction' is 'avg'"):
        build_loss({"type": "FFTLoss", "reduction": "avg"}, "train:fft_opt")
    with pytest.raises(OptionError, match="datasets:train:tone_curve"):
        build_loss({"type": "PU21Loss"}).set_tone_domain("gamma", 1000.0)
