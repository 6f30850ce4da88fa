"""Nothing lost, nothing silently wrong (issue 19): a validation set in another domain, HDR data far above hdr_max,
integer or grey data, a crop_border that leaves nothing, options that do nothing, Radiance files in other
orientations or in XYZE, files the folder scan skips, and an unbounded --tile are each refused or reported, naming
the file or key and the fix."""
import os
import unicodedata
from pathlib import Path
from typing import Dict

import cv2
import numpy as np
import pytest
import torch
import yaml

from DiffIR import inference_pipeline as ip
from DiffIR.data import build_dataset
from DiffIR.data.check_report import DatasetCheckError
from DiffIR.data.lmdb_writer import LmdbBuildError
from DiffIR.data.pairing import PairingError
from DiffIR.models.evaluation import check_crop_borders
from DiffIR.dataset_check_cli import check_options_file
from DiffIR.train_pipeline_hdr import train_pipeline
from DiffIR.utils.errors import OptionError
from DiffIR.utils.hdr_io import decode_hdr_bytes, read_hdr, read_image_info, read_image_size, write_ldr
from DiffIR.utils.image_common import ImageIOError
from DiffIR.config.loading import finalize_options, parse_options, validate_options

from conftest import ROOT
from helpers import (PSNR, build_lmdb, folder_set_options, hdr_datasets, make_hdr_folder, short_run_options,
                     train_options, write_yaml)


def _raises(exc, fn, *args, **kw) -> str:
    with pytest.raises(exc) as e:
        fn(*args, **kw)
    return str(e.value)


def _warnings(records) -> str:
    return "\n".join(r.getMessage() for r in records if r.levelname == "WARNING")


# ------------------------------------------------------------------ 1a. a validation set in another domain
def test_a_validation_set_in_another_domain_is_refused_naming_both_keys(tmp_path):
    datasets = hdr_datasets(tmp_path / "data")
    datasets["train"]["hdr_max"] = 1000
    datasets["val"].update(hdr_max=4000, tone_curve="PQ", lq_linearize=False)
    opt = short_run_options("dom", datasets)
    text = _raises(OptionError, validate_options, opt, "my.yml")
    assert "'datasets:val:hdr_max' is 4000.0 but 'datasets:train:hdr_max' is 1000" in text
    assert "'datasets:val:tone_curve' is 'pq' but 'datasets:train:tone_curve' is 'log' (the default)" in text
    assert "'datasets:val:lq_linearize' is False but 'datasets:train:lq_linearize' is True (the default)" in text
    assert "Fix: set datasets:val:hdr_max: 1000.0" in text
    # the same domain spelled differently (defaults written out, 1000 vs 1000.0, LOG vs log) passes
    datasets["val"].update(hdr_max=1000.0, tone_curve="LOG", lq_linearize=True)
    validate_options(short_run_options("dom", datasets), "my.yml")
    # a training run stops before anything is built
    datasets["val"]["hdr_max"] = 500
    yml = write_yaml(tmp_path / "dom.yml", short_run_options("dom", datasets))
    assert "'datasets:val:hdr_max' is 500" in _raises(OptionError, train_pipeline, str(tmp_path), ["-opt", str(yml)])
    assert not (tmp_path / "experiments").exists() and not (tmp_path / "data").exists()


# ------------------------------------------------------------------ 1b-d. the data check: peak, integer GT, grey images
def test_the_data_check_reports_hdr_far_above_hdr_max(tmp_path, records):
    root = make_hdr_folder(tmp_path / "d", stems=("a", "b"), size=(16, 16), log10_range=(0, 4))  # peaks near 10^4
    peaks = {s: float(read_hdr(root / "gt" / f"{s}.exr").max()) for s in ("a", "b")}
    assert min(peaks.values()) > 2000
    build_dataset(folder_set_options(root))
    note = _warnings(records)
    assert "2 HDR image(s) of 'datasets:val' exceed hdr_max=1000" in note and "set hdr_max to the data's peak" in note
    assert f"(peak {max(peaks.values()):.6g})" in note and "a.exr" in note
    # the same check in scripts/check_dataset.py; a fitting hdr_max gives no note (cached facts are used again)
    opt = {"name": "x", "model_type": "DiffIRS1Model", "datasets": {"val": folder_set_options(root)}}
    lines = []
    assert check_options_file(str(write_yaml(tmp_path / "o.yml", opt)), log=lines.append)
    assert any(line.startswith("NOTE: 2 HDR image(s)") and "exceed hdr_max=1000" in line for line in lines)
    records.clear()
    build_dataset(folder_set_options(root, hdr_max=20000))
    assert "exceed hdr_max" not in _warnings(records)


def test_integer_npy_gt_is_not_linear_hdr(tmp_path):
    root = make_hdr_folder(tmp_path / "d", stems=("a", "b"), size=(16, 16))
    (root / "gt" / "b.exr").unlink()
    np.save(root / "gt" / "b.npy", np.full((16, 16, 3), 200, np.uint8))
    with pytest.raises(ImageIOError, match=r"b\.npy' holds uint8 values, not linear HDR.*Fix: save .* float32"):
        read_hdr(root / "gt" / "b.npy")
    for level in ("quick", "full"):
        text = _raises(DatasetCheckError, build_dataset, folder_set_options(root, check=level))
        assert "b.npy' holds uint8 values, not linear HDR" in text and "a.exr" not in text
    np.save(root / "gt" / "b.npy", np.full((16, 16, 3), 200, np.float16))  # half floats are HDR
    assert len(build_dataset(folder_set_options(root))) == 2


def _write_exr(path: Path, channels: Dict[str, np.ndarray]) -> None:
    import OpenEXR

    OpenEXR.File({"type": OpenEXR.scanlineimage, "compression": OpenEXR.ZIP_COMPRESSION}, channels).write(str(path))


def test_a_grey_image_paired_with_a_colour_one_is_reported_naming_the_pair(tmp_path):
    root = make_hdr_folder(tmp_path / "d", stems=("a", "b", "c"), size=(16, 16))
    write_ldr(root / "lq" / "a.jpg", np.full((16, 16), 90, np.uint8))  # a grey JPEG beside a colour EXR
    _write_exr(root / "gt" / "b.exr", {"Y": np.full((16, 16), 5.0, np.float32)})  # a Y-only EXR beside a colour JPEG
    assert read_image_info(root / "lq" / "a.jpg").channels == 1 and read_image_info(root / "gt" / "b.exr").channels == 1
    text = _raises(DatasetCheckError, build_dataset, folder_set_options(root, check="quick"))
    assert "2 pair(s) of a grey and a colour image" in text
    assert (f"LQ '{root / 'lq' / 'a.jpg'}' is grey (1 channel) but GT '{root / 'gt' / 'a.exr'}' is colour (3 channels)"
            in text)
    assert f"LQ '{root / 'lq' / 'b.jpg'}' is colour (3 channels) but GT '{root / 'gt' / 'b.exr'}' is grey" in text
    assert "c.jpg" not in text and "Fix: the LQ must be a rendering of its GT" in text
    # grey with grey is a pair; the LMDB writer refuses the mismatched pair like the check
    write_ldr(root / "lq" / "b.jpg", np.full((16, 16), 90, np.uint8))
    text = _raises(LmdbBuildError, build_lmdb, root, tmp_path / "lmdb")
    assert "1 pair(s) of a grey and a colour image" in text and "a.jpg" in text and "b.jpg" not in text


# ------------------------------------------------------------------ 2. crop_border that leaves nothing
def test_a_crop_border_leaving_nothing_of_a_validation_image_is_refused_before_training(tmp_path):
    yml = train_options(tmp_path, name="crop")
    opt = yaml.safe_load(yml.read_text())
    opt["val"]["metrics"] = {"psnr": dict(PSNR["psnr"], crop_border=18)}  # the val images are 36 x 36
    write_yaml(yml, opt)
    text = _raises(OptionError, train_pipeline, str(tmp_path), ["-opt", str(yml)])
    assert "'val:metrics:psnr:crop_border' is 18, which leaves nothing of" in text and "(36x36 pixels" in text
    assert "smallest image of datasets:val" in text and "Fix: a crop_border of at most 17" in text
    assert not (tmp_path / "experiments" / "crop").exists()
    # 17 leaves 2 x 2 pixels; with check: off the sizes come from a header-only check
    val = build_dataset(dict(opt["datasets"]["val"], phase="val", check="off"))
    check_crop_borders({"psnr": {"crop_border": 17}}, val)
    with pytest.raises(OptionError, match="crop_border' is 18"):
        check_crop_borders({"psnr": {"crop_border": 18}}, val)


# ------------------------------------------------------------------ 3. options that do nothing
def _train_opt(tmp_path: Path, **top) -> Dict:
    opt = short_run_options("noop", hdr_datasets(tmp_path / "data"))
    opt.update(top)
    return opt


@pytest.mark.parametrize("val", [None, {}, "missing"])
def test_an_empty_val_section_with_a_validation_set_is_warned(tmp_path, records, val):
    opt = _train_opt(tmp_path)
    if val != "missing":
        opt["val"] = val
    finalize_options(opt, str(tmp_path), is_train=True, file="my.yml", require_training=True)
    text = _warnings(records)
    assert f"my.yml: 'val' is {'missing' if val == 'missing' else 'empty'}, so datasets:val is never scored" in text
    assert "validation is off" in text and "Fix: give val its metrics and val_freq" in text


def test_a_val_section_or_no_validation_set_gives_no_val_warning(tmp_path, records):
    finalize_options(_train_opt(tmp_path, val={"val_freq": 5, "metrics": PSNR}), str(tmp_path), True,
                     require_training=True)
    opt = _train_opt(tmp_path)
    del opt["datasets"]["val"]
    finalize_options(opt, str(tmp_path), True, require_training=True)
    assert "'val' is" not in _warnings(records)


def test_num_gpu_without_a_gpu_is_warned_and_runs_on_the_cpu(tmp_path, records, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for value in (0, "auto"):
        finalize_options(_train_opt(tmp_path, num_gpu=value, val={"metrics": PSNR}), str(tmp_path), True)
    assert "num_gpu" not in _warnings(records)
    finalize_options(_train_opt(tmp_path, num_gpu=2, val={"metrics": PSNR}), str(tmp_path), True, file="my.yml")
    text = _warnings(records)
    assert "my.yml: num_gpu is 2, but torch sees no GPU here" in text and "the run uses the CPU" in text
    assert "Fix: set num_gpu: 0" in text


def test_launcher_pytorch_without_a_launcher_runs_one_plain_process(tmp_path, records, monkeypatch):
    yml = write_yaml(tmp_path / "l.yml", _train_opt(tmp_path, val={"metrics": PSNR}))
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.setenv(key, "0")  # recorded, so that whatever parse_options sets is undone after the test
        monkeypatch.delenv(key)
    opt, _ = parse_options(str(tmp_path), True, ["-opt", str(yml), "--launcher", "pytorch"])
    text = _warnings(records)
    assert opt["launcher"] == "none" and "LOCAL_RANK" not in os.environ
    assert "--launcher pytorch, but RANK, WORLD_SIZE are not set" in text and "one plain process" in text
    assert "Fix: start it with torchrun --nproc_per_node=N" in text
    # started by a launcher: kept, no warning
    records.clear()
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    opt, _ = parse_options(str(tmp_path), True, ["-opt", str(yml), "--launcher", "pytorch"])
    assert opt["launcher"] == "pytorch" and "--launcher" not in _warnings(records)


# ------------------------------------------------------------------ 4. Radiance orientations and XYZE
H, W = 3, 5  # widths under 8: the scanlines are stored flat (no run-length encoding), written by hand here


def _coordinate(sign: str, axis: str, k: int) -> int:
    """The image row (Y) or column (X) of the k-th stored pixel along ``axis``: -Y runs top-down, +X left to right."""
    if axis == "Y":
        return k if sign == "-" else H - 1 - k
    return k if sign == "+" else W - 1 - k


def _radiance(resolution: str, rgbe: np.ndarray, fmt: str = "32-bit_rle_rgbe") -> bytes:
    """A flat Radiance file of the H x W x 4 RGBE image ``rgbe`` stored in the order ``resolution`` names."""
    (s1, a1), n1, (s2, a2), n2 = resolution.split()
    stored = bytearray()
    for i in range(int(n1)):
        for j in range(int(n2)):
            pos = {a1: _coordinate(s1, a1, i), a2: _coordinate(s2, a2, j)}
            stored += bytes(rgbe[pos["Y"], pos["X"]])
    head = (f"#?RADIANCE\nFORMAT={fmt}\n\n" if fmt else "#?RADIANCE\nEXPOSURE=1.0\n\n") + resolution + "\n"
    return head.encode("ascii") + bytes(stored)


def _rgbe_image() -> np.ndarray:
    mantissa = 10 + 3 * np.arange(H * W * 3, dtype=np.uint8).reshape(H, W, 3)  # every value different
    return np.concatenate([mantissa, np.full((H, W, 1), 130, np.uint8)], axis=2)


@pytest.mark.parametrize("resolution", ["+Y 3 +X 5", "-Y 3 -X 5", "+Y 3 -X 5", "+X 5 -Y 3", "+X 5 +Y 3",
                                        "-X 5 -Y 3", "-X 5 +Y 3"])
def test_radiance_files_in_other_orientations_are_read_as_displayed(tmp_path, resolution):
    rgbe = _rgbe_image()
    (tmp_path / "std.hdr").write_bytes(_radiance("-Y 3 +X 5", rgbe))
    reference = read_hdr(tmp_path / "std.hdr")
    assert reference.shape == (H, W, 3) and len(np.unique(reference)) == H * W * 3
    path = tmp_path / "other.hdr"
    path.write_bytes(_radiance(resolution, rgbe))
    assert read_image_size(path) == (H, W)
    np.testing.assert_array_equal(read_hdr(path), reference)
    np.testing.assert_array_equal(read_hdr(path, window=(1, 2, 2, 3)), reference[1:3, 2:5])
    np.testing.assert_array_equal(decode_hdr_bytes(path.read_bytes(), ".hdr", window=(0, 1, 1, 4)), reference[:1, 1:5])


def test_a_radiance_file_without_a_format_line_is_read(tmp_path):
    (tmp_path / "std.hdr").write_bytes(_radiance("-Y 3 +X 5", _rgbe_image()))
    (tmp_path / "bare.hdr").write_bytes(_radiance("+Y 3 +X 5", _rgbe_image(), fmt=""))
    np.testing.assert_array_equal(read_hdr(tmp_path / "bare.hdr"), read_hdr(tmp_path / "std.hdr"))


def test_xyze_radiance_is_refused_with_the_conversion_and_opencv_stays_quiet(tmp_path, capfd):
    path = tmp_path / "x.hdr"
    path.write_bytes(_radiance("-Y 3 +X 5", _rgbe_image(), fmt="32-bit_rle_xyze"))
    level = cv2.utils.logging.getLogLevel()
    for read in (read_hdr, read_image_size, lambda p: read_hdr(p, window=(0, 0, 1, 1))):
        text = _raises(ImageIOError, read, path)
        assert "x.hdr' stores its pixels as XYZE (FORMAT=32-bit_rle_xyze" in text and "ra_xyze -r x.hdr rgb.hdr" in text
    (tmp_path / "t.hdr").write_bytes(_radiance("-Y 3 +X 5", _rgbe_image())[:-20])  # truncated: OpenCV fails
    assert "truncated" in _raises(ImageIOError, read_hdr, tmp_path / "t.hdr")
    bad = tmp_path / "bad.hdr"
    bad.write_bytes(_radiance("-Y 3 +X 5", _rgbe_image()).replace(b"-Y 3 +X 5", b"-Y 3 +Z 5"))
    assert "bad resolution line b'-Y 3 +Z 5'" in _raises(ImageIOError, read_hdr, bad)
    assert cv2.utils.logging.getLogLevel() == level  # restored
    err = capfd.readouterr().err
    assert "imread_" not in err and "[ERROR" not in err and "RGBE" not in err
    # the data check names the file and the fix too
    root = make_hdr_folder(tmp_path / "d", stems=("a",), size=(H, W), gt_ext=".hdr")
    (root / "gt" / "a.hdr").write_bytes(path.read_bytes())
    assert "ra_xyze -r a.hdr" in _raises(DatasetCheckError, build_dataset, folder_set_options(root, check="quick"))


# ------------------------------------------------------------------ 5. files the folder scan skips
def test_files_the_folder_scan_skips_are_named_with_the_reason(tmp_path):
    nfc, nfd = unicodedata.normalize("NFC", "\u00e9t\u00e9"), unicodedata.normalize("NFD", "\u00e9t\u00e9")
    assert nfc != nfd
    root = make_hdr_folder(tmp_path / "d", stems=("a", "b", "c", nfc), size=(16, 16))
    (root / "gt" / "a.exr").rename(root / "gt" / "a.tiff")  # an extension the scan does not read
    (root / "gt" / "b.exr").unlink()
    os.symlink(tmp_path / "gone.exr", root / "gt" / "b.exr")  # a broken symbolic link
    (root / "lq" / f"{nfc}.jpg").rename(root / "lq" / f"{nfd}.jpg")  # the same name, decomposed
    text = _raises(PairingError, build_dataset, folder_set_options(root))
    assert "a.jpg (gt/a.tiff skipped: unsupported extension (.hdr, .exr, .npy))" in text
    gone = tmp_path / "gone.exr"
    assert f"b.jpg (gt/b.exr skipped: broken symbolic link (to '{gone}', which does not exist))" in text
    assert (f"{nfc}.exr (name differs from lq/{nfd}.jpg only in Unicode normalisation (NFC vs NFD): rename one)"
            in text)
    assert f"{nfd}.jpg (name differs from gt/{nfc}.exr only in Unicode normalisation" in text
    assert "c.jpg" not in text and "c.exr" not in text
    # a dgain file skipped for its extension is named too
    (root / "gt" / "a.tiff").rename(root / "gt" / "a.exr")
    (root / "dg" / "a.txt").rename(root / "dg" / "a.text")
    assert "a.txt (dg/a.text skipped: unsupported extension (.txt))" in _raises(PairingError, build_dataset,
                                                                               folder_set_options(root))


# ------------------------------------------------------------------ 6. inference --tile
def test_inference_tile_has_the_option_schemas_upper_bound(tmp_path):
    base = ["--input", str(tmp_path / "in"), "--dgain", str(tmp_path / "dg"), "--model", str(tmp_path / "m.pth"),
            "--output", str(tmp_path / "out")]
    for tile in ("16392", "-8", "100"):
        text = _raises(OptionError, ip.main, str(ROOT), base + ["--tile", tile])
        assert (f"'--tile' must be a positive multiple of 8 up to 16384, or 0 for whole-image inference, got {tile}"
                in text)
    for tile in ("16384", "0"):  # accepted: the run goes on to the (missing) inputs
        assert "--tile" not in _raises((OptionError, OSError), ip.main, str(ROOT), base + ["--tile", tile])
