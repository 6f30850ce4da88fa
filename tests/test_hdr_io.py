"""HDR/LDR file I/O (``DiffIR.utils.hdr_io``) and tone curves (``DiffIR.utils.tone_mapping``)."""
import json

import cv2
import numpy as np
import OpenEXR
import pytest
import torch

from DiffIR.utils.hdr_io import (decode_hdr_bytes, decode_ldr_bytes, encode_hdr_bytes, read_hdr, read_image_size,
                                 read_ldr, write_hdr, write_ldr)
from DiffIR.utils.image_common import ImageIOError
from DiffIR.utils.tone_mapping import (display_tone_map, hdr_to_ldr, inverse_log_tone_map, ldr_to_hdr,
                                       linear_tone_map, log_tone_map)

from conftest import REFERENCE

VECTORS = REFERENCE / "hdr_test_vectors.json"


def _vectors():
    if not VECTORS.is_file():
        pytest.skip(f"{VECTORS} not present")
    return json.loads(VECTORS.read_text())


def _random_hdr(h=24, w=32, seed=0, negative=False):
    rng = np.random.default_rng(seed)
    lum = 10.0 ** rng.uniform(-3, 4, (h, w, 1))
    img = (lum * rng.uniform(0.25, 1.0, (h, w, 3))).astype(np.float32)
    if negative:
        img[::3, ::4] *= -1
    return img


def _write_exr_channels(path, channels, compression):
    header = {"compression": compression, "type": OpenEXR.scanlineimage}
    OpenEXR.File(header, channels).write(str(path))


# ------------------------------------------------------------------ Radiance .hdr
def test_hdr_round_trip_within_rgbe_precision(tmp_path):
    img = _random_hdr()
    write_hdr(tmp_path / "a.hdr", img)
    back = read_hdr(tmp_path / "a.hdr")
    assert back.dtype == np.float32 and back.shape == img.shape
    # Ward's truncating encoder: error < 1/128 of the pixel's largest channel, never positive
    err = img - back
    assert np.all(err >= -1e-6 * np.abs(img))
    assert np.all(err <= img.max(axis=2, keepdims=True) / 128.0 + 1e-12)


def test_hdr_rgbe_reference_vector_and_channel_order(tmp_path):
    v = _vectors()["rgbe_radiance_hdr"]
    rgb = np.array(v["input_rgb_1x4x3"], dtype=np.float32)
    write_hdr(tmp_path / "v.hdr", rgb)
    np.testing.assert_array_equal(read_hdr(tmp_path / "v.hdr"), np.array(v["decoded_rgb"], np.float32))
    # red stays red, and is stored as R on disk (OpenCV's own reader returns BGR)
    red = np.zeros((4, 5, 3), np.float32)
    red[..., 0] = 500.0
    write_hdr(tmp_path / "red.hdr", red)
    assert read_hdr(tmp_path / "red.hdr")[..., 0].min() == 500.0
    assert read_hdr(tmp_path / "red.hdr")[..., 1:].max() == 0.0
    raw_bgr = cv2.imread(str(tmp_path / "red.hdr"), cv2.IMREAD_UNCHANGED)
    assert raw_bgr[..., 2].min() == 500.0 and raw_bgr[..., :2].max() == 0.0


def test_hdr_negative_values_written_as_zero(tmp_path):
    img = np.full((2, 3, 3), -5.0, np.float32)
    img[0, 0] = [1.0, 2.0, 4.0]
    write_hdr(tmp_path / "n.hdr", img)
    back = read_hdr(tmp_path / "n.hdr")
    assert back.min() == 0.0 and back[0, 0].tolist() == [1.0, 2.0, 4.0]


# ------------------------------------------------------------------ OpenEXR
def test_exr_float_round_trip_is_exact_including_negatives(tmp_path):
    img = _random_hdr(negative=True)
    write_hdr(tmp_path / "f.exr", img)
    back = read_hdr(tmp_path / "f.exr")
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, img)
    assert (back < 0).any()


def test_exr_half_round_trip(tmp_path):
    img = _random_hdr(negative=True, seed=1)
    img = np.clip(img, -6e4, 6e4)
    write_hdr(tmp_path / "h.exr", img, half=True)
    f = OpenEXR.File(str(tmp_path / "h.exr"), separate_channels=True)
    assert f.channels()["R"].pixels.dtype == np.float16
    back = read_hdr(tmp_path / "h.exr")
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, img, rtol=1e-3, atol=1e-7)


@pytest.mark.parametrize("compression", [OpenEXR.PIZ_COMPRESSION, OpenEXR.DWAA_COMPRESSION, OpenEXR.B44_COMPRESSION])
def test_exr_separate_half_channels_with_lossy_or_piz_compression(tmp_path, compression):
    h, w = 32, 40
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = (100.0 + 5 * xx).astype(np.float16)  # smooth data: lossy codecs stay close
    g = (10.0 + 0.5 * yy).astype(np.float16)
    b = np.full((h, w), -0.5, np.float16)  # negative values are kept
    a = np.ones((h, w), np.float16)
    path = tmp_path / "c.exr"
    _write_exr_channels(path, {"R": r, "G": g, "B": b, "A": a}, compression)
    back = read_hdr(path)
    assert back.shape == (h, w, 3) and back.dtype == np.float32
    exp = np.stack([r, g, b], -1).astype(np.float32)
    if compression == OpenEXR.PIZ_COMPRESSION:
        np.testing.assert_array_equal(back, exp)
    else:
        np.testing.assert_allclose(back, exp, rtol=0.05, atol=0.05)
    assert back[..., 0].min() > back[..., 1].max()  # red stays red


def test_exr_separate_float_channels_and_layers_and_luminance(tmp_path):
    img = _random_hdr(8, 9, seed=2)
    _write_exr_channels(tmp_path / "sep.exr", {"R": img[..., 0].copy(), "G": img[..., 1].copy(),
                                               "B": img[..., 2].copy()}, OpenEXR.ZIP_COMPRESSION)
    np.testing.assert_array_equal(read_hdr(tmp_path / "sep.exr"), img)
    _write_exr_channels(tmp_path / "layer.exr", {f"beauty.{c}": img[..., i].copy() for i, c in enumerate("RGB")},
                        OpenEXR.ZIP_COMPRESSION)
    np.testing.assert_array_equal(read_hdr(tmp_path / "layer.exr"), img)
    _write_exr_channels(tmp_path / "y.exr", {"Y": img[..., 1].copy()}, OpenEXR.ZIP_COMPRESSION)
    np.testing.assert_array_equal(read_hdr(tmp_path / "y.exr"), np.repeat(img[..., 1:2], 3, axis=2))
    _write_exr_channels(tmp_path / "z.exr", {"Z": img[..., 1].copy()}, OpenEXR.ZIP_COMPRESSION)
    with pytest.raises(ImageIOError, match=r"z\.exr.*channels \['Z'\].*Fix"):
        read_hdr(tmp_path / "z.exr")


# ------------------------------------------------------------------ .npy and bytes helpers
def test_npy_round_trip_and_bad_arrays(tmp_path):
    img = _random_hdr(5, 6, negative=True)
    write_hdr(tmp_path / "a.npy", img)
    np.testing.assert_array_equal(read_hdr(tmp_path / "a.npy"), img)
    np.save(tmp_path / "two.npy", np.zeros((4, 4, 2), np.float32))
    with pytest.raises(ImageIOError, match=r"two\.npy.*2 channels.*Fix"):
        read_hdr(tmp_path / "two.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ImageIOError, match=r"obj\.npy"):
        read_hdr(tmp_path / "obj.npy")


@pytest.mark.parametrize("ext", [".hdr", ".exr", ".npy"])
def test_hdr_bytes_helpers_match_file_reader(tmp_path, ext):
    img = _random_hdr(6, 7, seed=3)
    data = encode_hdr_bytes(img, ext)
    (tmp_path / f"x{ext}").write_bytes(data)
    np.testing.assert_array_equal(decode_hdr_bytes(data, ext), read_hdr(tmp_path / f"x{ext}"))


def test_ldr_bytes_helper(tmp_path):
    img = (np.arange(4 * 5 * 3).reshape(4, 5, 3) * 4).astype(np.uint8)
    write_ldr(tmp_path / "a.png", img)
    out = decode_ldr_bytes((tmp_path / "a.png").read_bytes())
    np.testing.assert_allclose(out, img.astype(np.float32) / 255.0, atol=1e-7)


# ------------------------------------------------------------------ LDR reading
def test_read_ldr_8bit_16bit_grey_alpha_and_colour_order(tmp_path):
    rgb8 = np.zeros((6, 7, 3), np.uint8)
    rgb8[..., 0] = 255  # pure red
    rgb8[0, 0] = [10, 20, 30]
    write_ldr(tmp_path / "red.png", rgb8)
    out = read_ldr(tmp_path / "red.png")
    assert out.dtype == np.float32 and out.shape == (6, 7, 3)
    assert out[1, 1].tolist() == [1.0, 0.0, 0.0]
    np.testing.assert_allclose(out[0, 0], np.array([10, 20, 30]) / 255.0, atol=1e-7)
    write_ldr(tmp_path / "red.jpg", rgb8, quality=95)
    j = read_ldr(tmp_path / "red.jpg")
    assert j[3, 4, 0] > 0.9 and j[3, 4, 1:].max() < 0.1

    rgb16 = np.full((3, 4, 3), 65535, np.uint16)
    rgb16[..., 1] = 32768
    cv2.imwrite(str(tmp_path / "16.png"), cv2.cvtColor(rgb16, cv2.COLOR_RGB2BGR))
    np.testing.assert_allclose(read_ldr(tmp_path / "16.png")[0, 0], [1.0, 32768 / 65535, 1.0], atol=1e-7)

    cv2.imwrite(str(tmp_path / "g.png"), np.full((3, 4), 51, np.uint8))
    g = read_ldr(tmp_path / "g.png")
    assert g.shape == (3, 4, 3) and np.allclose(g, 0.2)

    bgra = np.zeros((2, 2, 4), np.uint8)
    bgra[..., 2], bgra[..., 3] = 255, 7
    cv2.imwrite(str(tmp_path / "a.png"), bgra)
    a = read_ldr(tmp_path / "a.png")
    assert a.shape == (2, 2, 3) and a[0, 0].tolist() == [1.0, 0.0, 0.0]


# ------------------------------------------------------------------ error messages
def test_missing_files_name_the_path_and_the_fix(tmp_path):
    for fn, name in ((read_hdr, "nope.hdr"), (read_hdr, "nope.exr"), (read_ldr, "nope.jpg")):
        with pytest.raises(FileNotFoundError) as ei:
            fn(tmp_path / name)
        assert name in str(ei.value) and "does not exist" in str(ei.value) and "Fix" in str(ei.value)
    with pytest.raises(ImageIOError, match=r"unsupported extension '\.tga'"):
        read_hdr(tmp_path / "x.tga")


def test_corrupt_and_truncated_files_raise_with_the_name(tmp_path):
    img = _random_hdr(16, 16)
    write_hdr(tmp_path / "ok.hdr", img)
    write_hdr(tmp_path / "ok.exr", img)
    (tmp_path / "garbage.hdr").write_bytes(b"not an image at all" * 10)
    data = (tmp_path / "ok.hdr").read_bytes()
    (tmp_path / "trunc.hdr").write_bytes(data[: len(data) // 2])
    data = (tmp_path / "ok.exr").read_bytes()
    (tmp_path / "trunc.exr").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.exr").write_bytes(b"\x00" * 100)
    for name in ("garbage.hdr", "trunc.hdr", "trunc.exr", "garbage.exr"):
        with pytest.raises(ImageIOError) as ei:
            read_hdr(tmp_path / name)
        msg = str(ei.value)
        assert name in msg and "Fix" in msg, msg

    ldr = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    write_ldr(tmp_path / "ok.jpg", ldr)
    write_ldr(tmp_path / "ok.png", ldr)
    for src, dst in (("ok.jpg", "trunc.jpg"), ("ok.png", "trunc.png")):
        data = (tmp_path / src).read_bytes()
        (tmp_path / dst).write_bytes(data[: len(data) // 2])
        with pytest.raises(ImageIOError, match=dst.replace(".", r"\.") + ".*Fix"):
            read_ldr(tmp_path / dst)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageIOError, match=r"empty\.png"):
        read_ldr(tmp_path / "empty.png")


# ------------------------------------------------------------------ tone curves (hdr_domain.md §2.5)
def test_log_tone_map_reference_vector():
    v = _vectors()["fork_log_tone_mapping"]
    x = np.array(v["x"], np.float64)
    np.testing.assert_allclose(log_tone_map(x), v["y"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(inverse_log_tone_map(np.array(v["y"])), x, rtol=1e-9, atol=1e-9)
    assert abs(float(log_tone_map(np.array(1000.0))) - 0.99999999986) < 1e-11
    t = log_tone_map(torch.tensor(v["x"], dtype=torch.float64))
    np.testing.assert_allclose(t.numpy(), v["y"], atol=1e-12)


def test_fork_forward_and_inverse_reference_vectors():
    for case in _vectors()["fork_custom_tone_mapping"]["cases"]:
        h = np.array(case["hdr"], np.float64)
        ldr = hdr_to_ldr(h, case["dgain"], case["gamma"], 1000.0)
        np.testing.assert_allclose(ldr, case["ldr_float"], atol=1e-12)
        np.testing.assert_allclose(np.round(ldr * 255) / 255, case["ldr_8bit_over_255"], atol=1e-12)
        inv = ldr_to_hdr(np.array(case["ldr_8bit_over_255"]), case["dgain"], case["gamma"], 1000.0)
        np.testing.assert_allclose(inv, case["inverse_of_8bit"], rtol=1e-9, atol=1e-9)
        inv_f = ldr_to_hdr(np.array(case["ldr_float"]), case["dgain"], case["gamma"], 1000.0)
        np.testing.assert_allclose(inv_f, case["inverse_of_ldr_float"], rtol=1e-9, atol=1e-9)


def test_tone_functions_keep_float32_and_broadcast_per_image_parameters():
    x = np.linspace(0, 2000, 24, dtype=np.float32).reshape(2, 3, 2, 2)
    dg, gm = np.array([1.0, 4.0]), np.array([2.2, 1.6])  # float64 parameters must not promote
    for out in (log_tone_map(x), inverse_log_tone_map(x / 1000), linear_tone_map(x), hdr_to_ldr(x, np.float64(2.0), 2.2),
                hdr_to_ldr(x, dg, gm), ldr_to_hdr(x / 2000, dg, gm), display_tone_map(x), display_tone_map(x, "log")):
        assert out.dtype == np.float32
    per = hdr_to_ldr(x, dg, gm)
    np.testing.assert_allclose(per[1], hdr_to_ldr(x[1], 4.0, 1.6), rtol=1e-6)
    t = torch.from_numpy(x)
    tt = hdr_to_ldr(t, torch.tensor([1.0, 4.0]), torch.tensor([2.2, 1.6]))
    assert tt.dtype == torch.float32
    np.testing.assert_allclose(tt.numpy(), per, rtol=1e-6)
    back = ldr_to_hdr(tt, torch.tensor([1.0, 4.0]), torch.tensor([2.2, 1.6]))
    sat = np.array([1000.0, 250.0]).reshape(2, 1, 1, 1)
    np.testing.assert_allclose(back.numpy(), np.minimum(x, sat), rtol=1e-4, atol=1e-3)
    # negative LDR (e.g. a network output) does not give NaN
    assert np.isfinite(ldr_to_hdr(np.float32([-0.1, 0.5]), 2.0, 2.2)).all()


def test_display_tone_map_range_and_monotonic():
    x = np.float32([-1.0, 0.0, 1.0, 10.0, 100.0, 1000.0, 5000.0])
    for method in ("reinhard", "log", "gamma"):
        y = display_tone_map(x, method)
        assert y.min() >= 0 and y.max() <= 1 and np.all(np.diff(y) >= 0)
    assert display_tone_map(np.float32([1000.0]))[0] == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="unknown method"):
        display_tone_map(x, "aces")


# ------------------------------------------------------------------ crops and header sizes
@pytest.mark.parametrize("ext", [".hdr", ".exr", ".npy"])
def test_hdr_window_reads_equal_crops_of_the_full_image(tmp_path, ext):
    img = _random_hdr(20, 30, seed=4)
    write_hdr(tmp_path / f"x{ext}", img)
    full = read_hdr(tmp_path / f"x{ext}")
    np.testing.assert_array_equal(read_hdr(tmp_path / f"x{ext}", window=(3, 5, 7, 11)), full[3:10, 5:16])
    seen = []
    crop = read_hdr(tmp_path / f"x{ext}", window=lambda h, w: seen.append((h, w)) or (h - 4, w - 6, 4, 6))
    assert seen == [(20, 30)] and crop.flags["C_CONTIGUOUS"] and crop.dtype == np.float32
    np.testing.assert_array_equal(crop, full[16:, 24:])
    np.testing.assert_array_equal(decode_hdr_bytes(encode_hdr_bytes(img, ext), ext, window=(0, 0, 2, 3)),
                                  decode_hdr_bytes(encode_hdr_bytes(img, ext), ext)[:2, :3])
    with pytest.raises(ValueError, match="outside image"):
        read_hdr(tmp_path / f"x{ext}", window=(15, 0, 10, 10))


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_ldr_window_reads_and_header_sizes(tmp_path, ext):
    img = (np.random.default_rng(1).random((21, 34, 3)) * 255).astype(np.uint8)
    write_ldr(tmp_path / f"x{ext}", img)
    full = read_ldr(tmp_path / f"x{ext}")
    np.testing.assert_array_equal(read_ldr(tmp_path / f"x{ext}", window=(2, 3, 5, 7)), full[2:7, 3:10])
    assert read_image_size(tmp_path / f"x{ext}") == (21, 34)


def test_read_image_size_from_headers(tmp_path):
    img = _random_hdr(13, 17)
    for ext in (".hdr", ".exr", ".npy"):
        write_hdr(tmp_path / f"a{ext}", img)
        assert read_image_size(tmp_path / f"a{ext}") == (13, 17), ext
    data = (tmp_path / "a.npy").read_bytes()
    (tmp_path / "t.npy").write_bytes(data[:-10])
    with pytest.raises(ImageIOError, match=r"t\.npy.*truncated"):
        read_image_size(tmp_path / "t.npy")
    (tmp_path / "g.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ImageIOError, match=r"g\.jpg.*not a JPEG.*Fix"):
        read_image_size(tmp_path / "g.jpg")
    # an EXIF-like segment before the frame header is skipped
    write_ldr(tmp_path / "e.jpg", np.zeros((9, 11, 3), np.uint8))
    raw = (tmp_path / "e.jpg").read_bytes()
    app1 = b"\xff\xe1" + (5000).to_bytes(2, "big") + b"\x00" * 4998
    (tmp_path / "e2.jpg").write_bytes(raw[:2] + app1 + raw[2:])
    assert read_image_size(tmp_path / "e2.jpg") == (9, 11)


def test_float16_keeps_rgbe_values_exactly():
    """Why LMDB float16 storage costs nothing for .hdr sources: RGBE values have 8-bit mantissas."""
    img = _random_hdr(32, 32, seed=2) / np.float32(10.0)  # 1e-4 .. 1e3
    rgbe = decode_hdr_bytes(encode_hdr_bytes(img, ".hdr"), ".hdr")
    in_range = rgbe >= 7.6e-6
    np.testing.assert_array_equal(rgbe.astype(np.float16).astype(np.float32)[in_range], rgbe[in_range])
