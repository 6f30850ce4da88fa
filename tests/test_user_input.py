"""What a user gives the program is used exactly as meant or refused, naming the file or key and the fix (issue 19):
duplicate keys, strict numbers in data files, null sections, size bounds, file encodings, export targets and
implausible dgain values at inference."""
import pytest
import yaml

from DiffIR.data import build_dataset
from DiffIR.data.dgain import parse_dgain_text, read_dgain_file
from DiffIR.data.ldr_hdr_paired_dataset import DatasetCheckError
from DiffIR.utils.errors import OptionError
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
