"""What a user gives the program is used exactly as meant or refused, naming the file or key and the fix (issue 19):
duplicate keys, strict numbers in data files, null sections, size bounds, file encodings, export targets and
implausible dgain values at inference."""
import json
import os

import numpy as np
import pytest
import torch
import yaml

from DiffIR.cli_entry import export
from DiffIR.data import build_dataset
from DiffIR.data.check_report import implausible_exposure_entry, implausible_exposure_note
from DiffIR.data.dgain import parse_dgain_text, read_dgain_file
from DiffIR.data.ldr_hdr_paired_dataset import DatasetCheckError
from DiffIR.inference_pipeline import default_export_path
from DiffIR.utils.checkpoint import CheckpointError, extract_state_dict
from DiffIR.utils.errors import OptionError
from DiffIR.utils.hdr_io import read_image_size, write_hdr
from DiffIR.config.loading import StrictLoader, finalize_options, load_yaml, parse_options

from conftest import ROOT
from helpers import TINY_NET, folder_set_options, make_hdr_folder, save_tiny_s2, write_yaml

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


# ------------------------------------------------------------------ 3. sections that must be mappings
def _seed_options():
    return load_yaml(str(SEED_FILE))


@pytest.mark.parametrize("key, value", [
    ("network_g", None), ("network_g", "DiffIRS1"), ("network_S1", None), ("path", None), ("train", None),
    ("train", [1, 2]), ("logger", None), ("dist_params", 5), ("datasets", None), ("datasets:train", None),
    ("datasets:val", "folder"), ("train:optim_g", None), ("train:scheduler", None), ("train:pixel_opt", "L1Loss"),
    ("train:mixing_augs", "yes"), ("val", 3),
])
def test_a_section_that_is_not_a_mapping_is_refused_by_name(tmp_path, key, value):
    opt = _seed_options()
    *parents, last = key.split(":")
    node = opt
    for k in parents:
        node = node[k]
    node[last] = value
    msg = _raises(OptionError, finalize_options, opt, str(tmp_path), True, "my.yml", require_training=True)
    assert "my.yml" in msg and f"'{key}' is " in msg and "must be a mapping" in msg and "Fix:" in msg
    if value is None:
        assert "~ (empty)" in msg
    assert "Traceback" not in msg and msg.count(f"'{key}'") == 1, msg


def test_an_empty_loss_section_switches_the_loss_off_as_in_basicsr(tmp_path):
    opt = _seed_options()
    opt["train"]["perceptual_opt"] = None
    finalize_options(opt, str(tmp_path), True, "my.yml", require_training=True)
    assert opt["train"]["perceptual_opt"] is None


def test_an_empty_val_section_does_not_crash_the_checks(tmp_path):
    opt = _seed_options()
    opt["val"] = None
    finalize_options(opt, str(tmp_path), True, "my.yml", require_training=True)
    assert "val" in opt["datasets"]


def test_inference_options_without_a_network_mapping_are_refused(tmp_path):
    from DiffIR.inference_pipeline import build_arg_parser, run_inference

    root = make_hdr_folder(tmp_path / "d", size=(16, 16))
    opt_file = tmp_path / "o.yml"
    opt_file.write_text("network_g: ~\n")
    args = build_arg_parser().parse_args(["--input", str(root / "lq"), "--dgain", str(root / "dg"), "--model",
                                          str(tmp_path / "m.pth"), "--output", str(tmp_path / "out"),
                                          "--opt", str(opt_file), "--device", "cpu"])
    assert "has no network_g section" in _raises(OptionError, run_inference, args)


# ------------------------------------------------------------------ 4. sizes have upper bounds
@pytest.mark.parametrize("key, value, bound", [
    ("datasets:train:gt_size", 1099511627776, "8192"), ("datasets:train:batch_size_per_gpu", 10 ** 7, "1024"),
    ("datasets:train:num_worker_per_gpu", 4096, "256"), ("datasets:train:dataset_enlarge_ratio", 10 ** 9, "1000"),
    ("datasets:train:num_prefetch_queue", 10 ** 6, "64"), ("network_g:dim", 2 ** 40, "1024"),
    ("network_g:n_encoder_res", 10 ** 5, "64"), ("network_g:num_blocks[2]", 10 ** 6, "64"),
    ("network_g:heads[0]", 2 ** 31, "64"), ("val:tile_size", 2 ** 40, "16384"), ("val:window_size", 10 ** 6, "256"),
    ("val:metrics:psnr:crop_border", 10 ** 9, "8192"), ("datasets:train:synthetic:size", 2 ** 40, "16384"),
    ("datasets:train:synthetic:num_images", 10 ** 9, "100000"),
])
def test_sizes_beyond_any_real_use_are_refused_by_key(tmp_path, key, value, bound):
    opt = _seed_options()
    *parents, last = key.split(":")
    node = opt
    for k in parents:
        node = node[k]
    if last.endswith("]"):
        name, index = last[:-1].split("[")
        node[name][int(index)] = value
    else:
        node[last] = value
    msg = _raises(OptionError, finalize_options, opt, str(tmp_path), True, "my.yml", require_training=True)
    assert f"'{key}'" in msg and str(value) in msg and bound in msg, msg


def test_a_synthetic_size_as_height_and_width_is_checked_per_side(tmp_path):
    opt = _seed_options()
    opt["datasets"]["train"]["synthetic"]["size"] = [64, 10 ** 8]
    msg = _raises(OptionError, finalize_options, opt, str(tmp_path), True, "my.yml", require_training=True)
    assert "'datasets:train:synthetic:size[1]' is 100000000" in msg


def test_the_shipped_option_files_are_within_the_bounds(tmp_path):
    for path in sorted((ROOT / "options").glob("*.yml")):
        finalize_options(load_yaml(str(path)), str(tmp_path), "train" in path.name, str(path))


# ------------------------------------------------------------------ 5. encodings of files and paths
def test_an_option_file_that_is_not_utf8_names_the_place_and_the_fix(tmp_path):
    path = tmp_path / "latin1.yml"
    path.write_bytes("name: x\nmodel_type: DiffIRS1Model\nval: {suffix: café}\n".encode("latin-1"))
    msg = _raises(OptionError, load_yaml, str(path))
    assert str(path) in msg and "not UTF-8" in msg and "line 3, column 18" in msg and "byte offset 51" in msg
    assert "save the file as UTF-8" in msg
    path.write_bytes("name: x\n".encode("utf-16"))
    assert "UTF-16" in _raises(OptionError, load_yaml, str(path))
    path.write_bytes(b"\xef\xbb\xbfname: caf\xc3\xa9\n")  # UTF-8 with a byte-order mark is fine
    assert load_yaml(str(path)) == {"name": "café"}


def test_yaml_errors_name_the_option_file(tmp_path):
    path = tmp_path / "broken.yml"
    path.write_text("name: x\ntrain: [1\n", encoding="utf-8")
    msg = _raises(OptionError, load_yaml, str(path))
    assert msg.count(str(path)) >= 2 and "line 2" in msg  # in the sentence and in YAML's own position


def test_paths_that_cannot_be_encoded_are_named(tmp_path):
    bad = str(tmp_path / "opt\ud800.yml")
    msg = _raises(OptionError, load_yaml, bad)
    assert "option file path" in msg and "\\ud800" in msg and "file-system encoding" in msg and "not found" not in msg
    opt = _seed_options()
    opt["datasets"]["train"]["dataroot_gt"] = "/data/gt\udfff"
    opt["path"]["pretrain_network_g"] = "net\ud801.pth"
    msg = _raises(OptionError, finalize_options, opt, str(tmp_path), True, "my.yml", require_training=True)
    assert "'datasets:train:dataroot_gt' = '/data/gt\\udfff' cannot be encoded" in msg
    assert "'path:pretrain_network_g'" in msg


def test_a_dgain_file_that_is_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "d.txt"
    path.write_bytes(b"dgain: 2\n# r\xe9glage\ngamma: 2.2\n")
    msg = _raises(ValueError, read_dgain_file, path)
    assert str(path) in msg and "not UTF-8 text" in msg and "line 2" in msg and "save it as UTF-8" in msg


def test_inference_names_a_path_argument_that_cannot_be_encoded(tmp_path):
    from DiffIR.inference_pipeline import build_arg_parser, run_inference

    args = build_arg_parser().parse_args(["--input", str(tmp_path / "in\ud800"), "--dgain", str(tmp_path),
                                          "--model", "m.pth", "--output", str(tmp_path / "out")])
    msg = _raises(OptionError, run_inference, args)
    assert msg.startswith("--input '") and "cannot be encoded" in msg and "does not exist" not in msg


# ------------------------------------------------------------------ 6. export targets and training states
def _experiment(tmp_path):
    """experiments/X with a TINY_NET checkpoint of iteration 4, its training state and saved options."""
    from DiffIR.archs import build_network

    exp = tmp_path / "experiments" / "X"
    (exp / "models").mkdir(parents=True)
    (exp / "training_states").mkdir()
    net = build_network(dict(TINY_NET))
    torch.save({"params": net.state_dict()}, exp / "models" / "net_g_4.pth")
    torch.save({"epoch": 0, "iter": 4, "optimizers": [], "schedulers": []}, exp / "training_states" / "4.state")
    write_yaml(exp / "options_X.yml", {"name": "X", "model_type": "DiffIRS1Model", "network_g": dict(TINY_NET)})
    return exp


def test_an_export_never_replaces_the_checkpoint_or_writes_into_a_run_folder(tmp_path, capsys):
    exp = _experiment(tmp_path)
    model = exp / "models" / "net_g_4.pth"
    before = model.read_bytes()
    (tmp_path / "link.pth").symlink_to(model)
    for out in (model, tmp_path / "link.pth", exp / "models" / "net_g_4.safetensors",
                exp / "training_states" / "x.safetensors"):
        assert export(["--model", str(model), "--out", str(out), "--overwrite"]) == 2
        err = capsys.readouterr().err
        assert "--out" in err and ("is the --model file" in err or "only training writes to" in err), err
        assert "Traceback" not in err
    assert model.read_bytes() == before
    assert sorted(p.name for p in (exp / "models").iterdir()) == ["net_g_4.pth"]
    # without --out the export goes into the experiment folder, beside models/
    assert export(["--model", str(model)]) == 0
    assert (exp / "net_g_4.safetensors").is_file()
    assert default_export_path(str(tmp_path / "elsewhere" / "net.pth")) == str(tmp_path / "elsewhere" / "net.safetensors")


def test_a_training_state_given_as_weights_points_to_the_network_checkpoint(tmp_path, capsys):
    exp = _experiment(tmp_path)
    state = exp / "training_states" / "4.state"
    assert export(["--model", str(state), "--out", str(tmp_path / "x.safetensors"),
                   "--opt", str(exp / "options_X.yml")]) == 2
    err = capsys.readouterr().err
    assert "is a training state" in err and str(exp / "models" / "net_g_4.pth") in err and "KeyError" not in err
    msg = _raises(CheckpointError, extract_state_dict, torch.load(state), "params_ema", str(state))
    assert "models/net_g_4.pth" in msg


# ------------------------------------------------------------------ 7. implausible dgain values at inference
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # dgain 1e308 is used as it is
def test_inference_warns_about_implausible_dgain_values_as_training_does(tmp_path, capsys):
    from DiffIR.inference_pipeline import main as infer_main

    root = make_hdr_folder(tmp_path / "d", size=(16, 16))
    (root / "dg" / "b.txt").write_text("dgain: 1e308\ngamma: 2.2\n")
    model = save_tiny_s2(tmp_path)
    infer_main(str(tmp_path), ["--input", str(root / "lq"), "--dgain", str(root / "dg"), "--model", str(model),
                               "--opt", str(tmp_path / "net.yml"), "--output", str(tmp_path / "out"), "--tile", "0",
                               "--device", "cpu"])
    err = capsys.readouterr().err
    expected = implausible_exposure_note([implausible_exposure_entry("b.txt", 1e308, 2.2)], str(root / "dg"))
    assert f"WARNING: {expected}" in err and "dgain 1e+308 outside [1/64, 64]" in err
    assert "a.txt" not in err and "c.txt" not in err
    assert (tmp_path / "out" / "b.hdr").is_file()  # used as it is, like in training
