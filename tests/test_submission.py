"""Challenge outputs: ``inference_hdr.py --format npy`` (float32 cd/m² RGB arrays) and ``scripts/make_submission.py``
(a flat zip of them with a CodaLab readme.txt), on a tiny stage-2 network and three small images."""
from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path
from typing import List

import numpy as np
import pytest

import DiffIR.inference_pipeline as ip
from DiffIR.archs import build_network
from DiffIR.submission import README_NAME, main as submission_main, readme_text, write_submission_zip
from DiffIR.utils.cli import run_cli
from DiffIR.utils.errors import OptionError
from DiffIR.utils.hdr_io import read_hdr

from conftest import ROOT
from helpers import TINY_S2
from test_inference_safety import _args, s2_files  # noqa: F401,F811 (the tiny stage-2 model, 3 images, options)

STEMS = ["im_000001", "im_000002", "im_000003"]


def test_npy_outputs_are_float32_rgb_in_the_gt_units(s2_files: Path, tmp_path: Path) -> None:
    """np.load of each output gives H x W x 3 float32: the values of the lossless float32 EXR output (RGB, the GT
    files' units: linear, clamped to [0, hdr_max]), bit for bit."""
    npy = ip.main(str(ROOT), _args(s2_files, tmp_path / "npy", "--format", "npy"))
    exr = ip.main(str(ROOT), _args(s2_files, tmp_path / "exr", "--format", "exr"))
    assert [Path(p).name for p in npy] == [f"{s}.npy" for s in STEMS]
    for n, e in zip(npy, exr):
        arr = np.load(n, allow_pickle=False)
        assert arr.dtype == np.float32 and arr.shape == (24, 32, 3)
        assert np.array_equal(arr, read_hdr(e))  # read_hdr returns RGB
        assert 0.0 <= arr.min() and arr.max() <= 1000.0 * (1 + 1e-6) and arr.max() > 1.0  # cd/m², not [0, 1]
    # the same image as the default .hdr output, up to RGBE's rounding (< 0.8 % of a pixel's largest channel)
    hdr = read_hdr(ip.main(str(ROOT), _args(s2_files, tmp_path / "hdr"))[0])
    first = np.load(npy[0])
    assert np.all(np.abs(hdr - first) <= 0.008 * first.max(axis=2, keepdims=True) + 1e-6)


def _zip_names(path: Path) -> List[str]:
    with zipfile.ZipFile(path) as z:
        return z.namelist()


def test_submission_zip_is_flat_with_a_codalab_readme(s2_files: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "results" / "sub"
    zip_path = submission_main(_args(s2_files, out, "--extra_data", "1", "--description", "Trained on\nAIM only."))
    assert zip_path == str(out) + ".zip"
    names = _zip_names(Path(zip_path))
    assert sorted(names) == sorted([README_NAME] + [f"{s}.npy" for s in STEMS]) and not any("/" in n for n in names)
    with zipfile.ZipFile(zip_path) as z:
        readme = z.read(README_NAME).decode("utf-8")
        for stem in STEMS:  # the zipped arrays are the files inference wrote
            arr = np.load(io.BytesIO(z.read(f"{stem}.npy")), allow_pickle=False)
            assert np.array_equal(arr, np.load(out / f"{stem}.npy"))
    lines = readme.splitlines()
    assert len(lines) == 4
    runtime = re.fullmatch(r"runtime per image \[s\] : (\d+\.\d{3})", lines[0])
    assert runtime and float(runtime.group(1)) > 0
    assert lines[1] == "CPU[1] / GPU[0] : 1"  # this machine has no GPU: --device auto ran on the CPU
    assert lines[2] == "Extra Data [1] / No Extra Data [0] : 1"
    params = sum(p.numel() for p in build_network(dict(TINY_S2), "network_g").parameters())
    assert lines[3].startswith("Other description : DiffIR stage 2") and f"{params / 1e6:.2f} M parameters" in lines[3]
    assert "on CPU" in lines[3] and "prior noise seed 0" in lines[3] and lines[3].endswith("Trained on AIM only.")
    assert readme in capsys.readouterr().out


def test_submission_refusals_come_before_any_inference(s2_files: Path, tmp_path: Path, capsys) -> None:
    """An existing zip, a folder as --zip and a missing --extra_data stop the run before anything is written."""
    out = tmp_path / "sub"
    existing = tmp_path / "sub.zip"
    existing.write_bytes(b"keep")
    with pytest.raises(FileExistsError, match="sub.zip' already exists; choose another --zip or pass --overwrite"):
        submission_main(_args(s2_files, out, "--extra_data", "0"))
    with pytest.raises(OptionError, match="is a folder"):
        submission_main(_args(s2_files, out, "--extra_data", "0", "--zip", str(tmp_path)))
    assert existing.read_bytes() == b"keep" and not out.exists()
    with pytest.raises(SystemExit):
        submission_main(_args(s2_files, out))  # --extra_data is required: a checkpoint cannot tell
    assert "--extra_data" in capsys.readouterr().err
    # through the script's wrapper: one line, exit status 2
    assert run_cli(lambda: submission_main(_args(s2_files, out, "--extra_data", "0"))) == 2
    assert "ERROR: " in capsys.readouterr().err
    # --overwrite replaces it
    submission_main(_args(s2_files, out, "--extra_data", "0", "--overwrite"))
    assert README_NAME in _zip_names(existing)


def test_readme_and_zip_helpers(tmp_path: Path) -> None:
    text = readme_text(0.12345, on_gpu=True, extra_data=False, description="a\n b  c")
    assert text == ("runtime per image [s] : 0.123\nCPU[1] / GPU[0] : 0\n"
                    "Extra Data [1] / No Extra Data [0] : 0\nOther description : a b c\n")
    a, b = tmp_path / "x" / "im.npy", tmp_path / "y" / "im.npy"
    for f in (a, b):
        f.parent.mkdir()
        np.save(f, np.zeros((2, 2, 3), np.float32))
    with pytest.raises(OptionError, match="cannot hold im.npy twice"):
        write_submission_zip(str(tmp_path / "s.zip"), [str(a), str(b)], text)
    assert not (tmp_path / "s.zip").exists()


def test_make_submission_script_help(capsys) -> None:
    """scripts/make_submission.py answers -h with the inference options, npy by default."""
    import runpy
    import sys

    argv = sys.argv
    sys.argv = [str(ROOT / "scripts" / "make_submission.py"), "-h"]
    try:
        with pytest.raises(SystemExit) as done:
            runpy.run_path(sys.argv[0], run_name="__main__")
    finally:
        sys.argv = argv
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "readme.txt" in text and "--extra_data" in text and "(default: npy)" in text
