import math
import os

import numpy as np
import pytest
import torch

from DiffIR.losses import build_loss
from DiffIR.metrics import calculate_metric, check_metric_options
from DiffIR.utils.checkpoint import atomic_save, extract_state_dict, list_training_states, load_file
from DiffIR.utils.errors import OptionError


def test_pixel_losses_values_and_weight():
    a = torch.tensor([[0.0, 1.0], [2.0, 4.0]])
    b = torch.zeros(2, 2)
    assert build_loss({"type": "L1Loss", "loss_weight": 2.0})(a, b).item() == pytest.approx(2 * 7 / 4)
    assert build_loss({"type": "MSELoss", "reduction": "sum"})(a, b).item() == pytest.approx(21.0)
    ch = build_loss({"type": "CharbonnierLoss", "eps": 1e-6})(a, b).item()
    assert ch == pytest.approx(np.mean(np.sqrt(np.array([0, 1, 4, 16]) + 1e-6)), rel=1e-6)
    with pytest.raises(OptionError, match="pixel_opt:wieght"):
        build_loss({"type": "L1Loss", "wieght": 1}, "train:pixel_opt")
    with pytest.raises(OptionError, match="L1Loss"):
        build_loss({"type": "L1loss"})


def test_perceptual_loss_without_weights_explains_the_fix(tmp_path):
    with pytest.raises(OptionError) as e:
        build_loss({"type": "PerceptualLoss", "layer_weights": {"conv5_4": 1},
                    "vgg_weights_path": str(tmp_path / "missing.pth")}, "train:perceptual_opt")
    assert "perceptual_opt" in str(e.value)


def test_psnr_ssim_basicsr_semantics():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)
    noisy = np.clip(img.astype(np.int32) + rng.integers(-5, 6, img.shape), 0, 255).astype(np.uint8)
    mse = np.mean((img.astype(np.float64) - noisy) ** 2)
    psnr = calculate_metric({"img": img, "img2": noisy}, {"type": "calculate_psnr", "crop_border": 0})
    assert psnr == pytest.approx(10 * math.log10(255 ** 2 / mse))
    assert calculate_metric({"img": img, "img2": img}, {"type": "calculate_psnr"}) == float("inf")
    assert calculate_metric({"img": img, "img2": img}, {"type": "calculate_ssim"}) == pytest.approx(1.0)
    s = calculate_metric({"img": img, "img2": noisy}, {"type": "calculate_ssim", "test_y_channel": True})
    assert 0.5 < s < 1.0
    from skimage.metrics import structural_similarity

    ref = np.mean([structural_similarity(img[..., c].astype(np.float64), noisy[..., c].astype(np.float64),
                                         data_range=255, gaussian_weights=True, sigma=1.5,
                                         use_sample_covariance=False) for c in range(3)])
    ours = calculate_metric({"img": img, "img2": noisy}, {"type": "calculate_ssim"})
    assert ours == pytest.approx(ref, abs=0.01)


def test_metric_options_checked_before_training():
    check_metric_options({"psnr": {"type": "calculate_psnr", "crop_border": 0, "test_y_channel": False}})
    with pytest.raises(OptionError, match="calculate_psnr"):
        check_metric_options({"psnr": {"type": "calculate_psnrr"}})
    with pytest.raises(OptionError, match="crop_boder"):
        check_metric_options({"psnr": {"type": "calculate_psnr", "crop_boder": 0}})


def test_atomic_save_keeps_old_file_on_failure(tmp_path):
    path = str(tmp_path / "net_g_5.pth")
    atomic_save({"params": {"w": torch.ones(2)}}, path)

    class Boom:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_save({"params": Boom()}, path)
    assert torch.equal(load_file(path)["params"]["w"], torch.ones(2))
    assert [f for f in os.listdir(tmp_path) if f.startswith(".tmp_")] == []


def test_load_file_refuses_pickled_code_and_names_file(tmp_path):
    import pickle

    bad = tmp_path / "evil.pth"
    with open(bad, "wb") as f:
        pickle.dump({"x": os.getcwd}, f)
    with pytest.raises(RuntimeError, match="evil.pth"):
        load_file(str(bad))
    trunc = tmp_path / "trunc.pth"
    torch.save({"a": torch.zeros(1000)}, trunc)
    trunc.write_bytes(trunc.read_bytes()[:100])
    with pytest.raises(RuntimeError, match="trunc.pth"):
        load_file(str(trunc))


def test_extract_state_dict_and_state_listing(tmp_path):
    sd = {"module.a": torch.zeros(1)}
    assert list(extract_state_dict({"params": sd}, "params_ema", "f")) == ["a"]
    with pytest.raises(KeyError, match="params_ema"):
        extract_state_dict({"foo": {"a": torch.zeros(1)}}, "params_ema", "f")
    for it in (5, 40, 10):
        (tmp_path / f"{it}.state").write_bytes(b"")
    (tmp_path / "junk.txt").write_bytes(b"")
    assert [i for i, _ in list_training_states(str(tmp_path))] == [40, 10, 5]


def test_build_metric_returns_a_checked_callable():
    from DiffIR.metrics import build_metric

    psnr = build_metric({"type": "calculate_psnr", "crop_border": 0})
    img = np.full((8, 8, 3), 100, np.uint8)
    assert psnr(img, img + 1) == pytest.approx(10 * math.log10(255 ** 2))
    with pytest.raises(OptionError, match="calculate_psnr"):
        build_metric({"type": "calculate_pnsr"})
