"""HDR metrics against the reference test vectors (hdr_test_vectors.json, hdr_domain.md §2)."""
import json

import numpy as np
import pytest

from DiffIR.metrics import calculate_metric, check_metric_options, metric_domain
from DiffIR.metrics.pu21 import PU21_PARAMS, pu21_decode, pu21_encode
from DiffIR.utils.errors import OptionError


@pytest.fixture(scope="module")
def vectors():
    from conftest import REFERENCE

    path = REFERENCE / "hdr_test_vectors.json"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return json.loads(path.read_text())


def _pair(v, key):
    p = v[key]
    return np.array(p["test"], dtype=np.float64), np.array(p["ref"], dtype=np.float64), p


def _ssim_case():
    i, j = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    base = 10.0 ** (-1 + 4 * (32 * i + j) / 1023)
    ref = base[..., None] * np.array([1.0, 0.8, 0.6])
    test = ref * (1 + 0.1 * np.sin(0.7 * i + 1.3 * j)[..., None] * np.array([1.0, -1.0, 0.5]))
    return test, ref


def _m(test, ref, **opt):
    return calculate_metric({"img": test, "img2": ref}, opt)


def test_pu21_encoding_vectors(vectors):
    enc = vectors["pu21"]["encode_vectors"]
    y = enc["luminance_cd_m2"]
    assert set(enc["encoded"]) == set(PU21_PARAMS)
    for variant, expected in enc["encoded"].items():
        np.testing.assert_allclose(pu21_encode(y, variant), expected, rtol=0, atol=1e-9)
        np.testing.assert_allclose(pu21_encode(y, variant, clamp_negative=False),
                                   enc["encoded_without_nonneg_clamp"][variant], rtol=0, atol=1e-9)
    np.testing.assert_allclose(pu21_decode(pu21_encode(y)), enc["decode_roundtrip_banding_glare"], rtol=1e-12)
    extra = enc["extra_points_banding_glare"]
    got = pu21_encode([0.001, 20000, 80, 203])
    np.testing.assert_allclose(got, [extra["0.001(clamped)"], extra["20000(clamped)"], extra["80"], extra["203"]],
                               rtol=0, atol=1e-9)
    np.testing.assert_allclose(pu21_encode(np.array(_pair(vectors, "pair_A_with_clamping")[0])),
                               vectors["pair_A_with_clamping"]["pu_test"], rtol=0, atol=1e-9)


def test_pu21_psnr_vectors(vectors):
    for key in ("pair_A_with_clamping", "pair_B_in_range"):
        test, ref, p = _pair(vectors, key)
        assert _m(test, ref, type="calculate_pu21_psnr") == pytest.approx(p["pu21_psnr_rgb_peak256_official"], abs=1e-6)
        assert _m(test, ref, type="calculate_pu21_psnr", peak=530) == pytest.approx(
            p["pu21_psnr_rgb_peak530_fork_style"], abs=1e-6)
        assert _m(test, ref, type="calculate_pu21_psnr", test_y_channel=True) == pytest.approx(
            p["pu21_psnrY_peak256"], abs=1e-6)
    test, ref, p = _pair(vectors, "pair_B_in_range")
    assert _m(test, ref, type="calculate_pu21_psnr", lum_scale=4.0) == pytest.approx(
        p["pu21_psnr_rgb_peak256_after_x4_scaling_fork_inference"], abs=1e-6)
    test, ref = _ssim_case()
    s = vectors["ssim_case_32x32"]
    np.testing.assert_allclose(ref[31, 31], s["ref_corner_values"]["ref[31,31]"], rtol=1e-12)
    assert _m(test, ref, type="calculate_pu21_psnr") == pytest.approx(s["pu21_psnr_rgb_peak256"], abs=1e-6)
    assert _m(test, ref, type="calculate_pu21_psnr", test_y_channel=True) == pytest.approx(s["pu21_psnrY_peak256"],
                                                                                           abs=1e-6)
    assert _m(ref, ref, type="calculate_pu21_psnr") == float("inf")


def test_pu21_ssim_vectors(vectors):
    test, ref = _ssim_case()
    s = vectors["ssim_case_32x32"]
    assert _m(test, ref, type="calculate_pu21_ssim") == pytest.approx(s["pu21_ssim_lum_matlab_like_skimage"], abs=1e-6)
    assert _m(test, ref, type="calculate_pu21_ssim", gaussian_weights=False) == pytest.approx(
        s["pu21_ssim_lum_skimage_default_window7_range256"], abs=1e-6)
    assert _m(test, ref, type="calculate_pu21_ssim", gaussian_weights=False, data_range=600) == pytest.approx(
        s["pu21_ssim_lum_fork_style_range600"], abs=1e-6)
    assert _m(ref, ref, type="calculate_pu21_ssim") == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 11x11"):
        _m(test[:8, :8], ref[:8, :8], type="calculate_pu21_ssim")


def test_psnr_mu_and_psnr_l_vectors(vectors):
    test, ref, p = _pair(vectors, "pair_A_with_clamping")
    mu = p["mu_law"]
    assert _m(test, ref, type="calculate_psnr_mu") == pytest.approx(mu["B_ntire_tanh_p99_linear_inputs"]["psnr"], abs=1e-6)
    assert _m(test, ref, type="calculate_psnr_mu", norm="max_clip") == pytest.approx(
        mu["A_max_normalised_clip"]["psnr"], abs=1e-6)
    assert _m(test, ref, type="calculate_psnr_mu", gamma=2.24) == pytest.approx(
        mu["C_ntire_official_gamma224"]["psnr"], abs=1e-6)
    assert _m(test, ref, type="calculate_psnr_mu", norm="fixed", norm_value=1000) == pytest.approx(
        mu["D_fixed_1000_no_clip"]["psnr"], abs=1e-6)
    assert _m(test, ref, type="calculate_psnr_l") == pytest.approx(p["linear_psnr_norm_max_ref"]["psnr"], abs=1e-6)
    test, ref, p = _pair(vectors, "pair_B_in_range")
    assert _m(test, ref, type="calculate_psnr_mu") == pytest.approx(p["mu_law_B_tanh_p99_linear"]["psnr"], abs=1e-6)
    assert _m(test, ref, type="calculate_psnr_mu", norm="max_clip") == pytest.approx(p["mu_law_A_max_normalised_clip"],
                                                                                     abs=1e-6)
    assert _m(test, ref, type="calculate_psnr_mu", norm="fixed") == pytest.approx(p["mu_law_D_fixed_1000"], abs=1e-6)


def test_float32_inputs_and_crop_border(vectors):
    test, ref = _ssim_case()
    a = _m(test.astype(np.float32), ref.astype(np.float32), type="calculate_pu21_psnr")
    assert a == pytest.approx(vectors["ssim_case_32x32"]["pu21_psnr_rgb_peak256"], abs=1e-3)
    cropped = _m(test, ref, type="calculate_pu21_psnr", crop_border=4)
    assert cropped == pytest.approx(_m(test[4:-4, 4:-4], ref[4:-4, 4:-4], type="calculate_pu21_psnr"))
    with pytest.raises(ValueError, match="shapes differ"):
        _m(test, ref[:16], type="calculate_psnr_l")


def test_hdr_metric_options_are_checked_before_work():
    check_metric_options({"p": {"type": "calculate_pu21_psnr", "pu21_type": "banding", "lum_scale": 2.0},
                          "m": {"type": "calculate_psnr_mu", "norm": "max_clip", "better": "higher"}})
    with pytest.raises(OptionError, match="'val:metrics:p:pu21_type'.*banding_glare"):
        check_metric_options({"p": {"type": "calculate_pu21_psnr", "pu21_type": "banding-glare"}})
    with pytest.raises(OptionError, match="'val:metrics:m:norm'"):
        check_metric_options({"m": {"type": "calculate_psnr_mu", "norm": "tanh"}})
    with pytest.raises(OptionError, match="lum_scal.*did you mean 'lum_scale'"):
        check_metric_options({"s": {"type": "calculate_pu21_ssim", "lum_scal": 1}})
    with pytest.raises(OptionError, match="better"):
        check_metric_options({"s": {"type": "calculate_psnr_l", "better": "up"}})
    assert {metric_domain(t) for t in ("calculate_pu21_psnr", "calculate_pu21_ssim", "calculate_psnr_mu",
                                       "calculate_psnr_l")} == {"linear"}
    assert metric_domain("calculate_psnr") == metric_domain("calculate_ssim") == "network"
