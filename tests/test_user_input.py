"""What a user gives the program is used exactly as meant or refused, naming the file or key and the fix (issue 19):
duplicate keys, strict numbers in data files, null sections, size bounds, file encodings, export targets and
implausible dgain values at inference."""
import json
import os

import numpy as np
import pytest
import yaml

from DiffIR.data import build_dataset
from DiffIR.data.dgain import parse_dgain_text, read_dgain_file
from DiffIR.data.ldr_hdr_paired_dataset import DatasetCheckError
from DiffIR.utils.errors import OptionError
from DiffIR.utils.hdr_io import read_image_size, write_hdr
from DiffIR.utils.options import StrictLoader, load_yaml, parse_options

from conftest import ROOT
from helpers import folder_set_options, make_hdr_folder

SEED_FILE = ROOT / "options" / "demo_DiffIRs1_hdr.yml"


def _raises(exc, fn, *args, **kw):
    with pytest.raises(exc) as e:
        fn(*args, **kw)
    return str(e.value)


# ------------------------------------------------------------------ 1. keys given twice
def test_a_key_given_twice_in_an_option_file_is_refused_with_both_lines(tmp_path):
    text = SEED_FILE.read_text(encoding="utf-8")
    assert "\ntrain:\n" in text
    lines = text.splitlines()
    where = lines.index("train:") + 1
    lines[where:where] = ["  total_iter: 10", "  total_iter: 20"]
    path = tmp_path / "twice.yml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    msg = _raises(OptionError, load_yaml, str(path))
    assert str(path) in msg and "'train:total_iter' is given twice" in msg
    assert f"lines {where + 1} and {where + 2}" in msg and "Fix: delete one" in msg
    # deeper, in a list, and at the top
    doc = "a: [{b: 1, c: {d: 1, d: 2}}]\n"
    assert "'a[0]:c:d'" in _raises(yaml.YAMLError, yaml.load, doc, Loader=StrictLoader)
    assert "'name'" in _raises(yaml.YAMLError, yaml.load, "name: x\nname: y\n", Loader=StrictLoader)


def test_merge_keys_and_overrides_still_work(tmp_path):
    doc = "base: &b {x: 1, y: 2}\nmine: {<<: *b, x: 3}\nagain: *b\n"
    assert yaml.load(doc, Loader=StrictLoader) == {"base": {"x": 1, "y": 2}, "mine": {"x": 3, "y": 2},
                                                  "again": {"x": 1, "y": 2}}
    opt, _ = parse_options(str(tmp_path), True, ["-opt", str(SEED_FILE), "--force_yml", "train:total_iter=7",
                                                 "datasets:train:batch_size_per_gpu=3"])
    assert opt["train"]["total_iter"] == 7 and opt["datasets"]["train"]["batch_size_per_gpu"] == 3
    msg = _raises(OptionError, parse_options, str(tmp_path), True,
                  ["-opt", str(SEED_FILE), "--force_yml", "train:optim_g={type: Adam, lr: 1, lr: 2}"])
    assert "--force_yml" in msg and "'lr' is given twice" in msg


def test_a_dgain_file_giving_a_value_twice(tmp_path):
    assert parse_dgain_text("dgain: 2.5\ngamma: 2.2\ndgain: 2.50\n") == {"dgain": 2.5, "gamma": 2.2}
    msg = _raises(ValueError, parse_dgain_text, "dgain: 2.5\ngamma: 2.2\n\nDgain: 4\n", source="x.txt")
    assert "'x.txt'" in msg and "'dgain' twice" in msg and "(line 1)" in msg and "(line 4)" in msg
    assert "Fix:" in msg
    # the same path as every other bad dgain entry: the dataset check lists it
    root = make_hdr_folder(tmp_path / "d", size=(16, 16))
    (root / "dg" / "b.txt").write_text("dgain: 2\ngamma: 2.2\ngamma: 1.8\n")
    msg = _raises(DatasetCheckError, build_dataset, folder_set_options(root))
    assert "b.txt" in msg and "'gamma' twice" in msg
    with pytest.raises(ValueError, match="twice"):
        read_dgain_file(root / "dg" / "b.txt")


# ------------------------------------------------------------------ 2. numbers in data files
@pytest.mark.parametrize("raw", ["1_0", "nan", "inf", "-Infinity", "0x10", "2,5", "\u0663", "1e", "2.5.1"])
def test_numbers_in_dgain_files_are_plain_decimals(tmp_path, raw):
    path = tmp_path / "im_7.txt"
    path.write_text(f"# exposure\ngamma: 2.2\ndgain: {raw}\n", encoding="utf-8")
    msg = _raises(ValueError, read_dgain_file, path)
    assert str(path) in msg and "line 3" in msg and f"'{raw}', not a number" in msg and "no '_'" in msg


def test_plain_decimals_in_dgain_files_are_read():
    for raw, value in [("2.5", 2.5), ("+3e2", 300.0), (".5", 0.5), ("4.", 4.0), (" 7 ", 7.0), ("1E-1", 0.1)]:
        assert parse_dgain_text(f"dgain: {raw}\ngamma: 2\n")["dgain"] == value


def test_a_dgain_file_read_by_older_rules_is_read_again(tmp_path):
    root = make_hdr_folder(tmp_path / "d", size=(16, 16))
    build_dataset(folder_set_options(root))  # caches every dgain entry
    cache = next((tmp_path / "check_cache").glob("*.json"))
    data = json.loads(cache.read_text())
    (root / "dg" / "b.txt").write_text("dgain: 1_0\ngamma: 2.2\n")
    st = os.stat(root / "dg" / "b.txt")
    for key, entry in data["files"].items():  # as an older version cached it: 1_0 read as 10
        if key == "dgain/b.txt":
            data["files"][key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "dgain": 10.0, "gamma": 2.2}
    cache.write_text(json.dumps(data))
    assert "'1_0', not a number" in _raises(DatasetCheckError, build_dataset, folder_set_options(root))


def test_radiance_resolution_line_must_be_plain_digits(tmp_path):
    path = tmp_path / "x.hdr"
    write_hdr(path, np.ones((4, 6, 3), np.float32))
    data = path.read_bytes()
    assert b"-Y 4 +X 6" in data
    path.write_bytes(data.replace(b"-Y 4 +X 6", b"-Y 4 +X 0_6"))
    assert "bad resolution line" in _raises(OSError, read_image_size, str(path))
