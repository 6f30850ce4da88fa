"""Option values are checked up front (types, ranges, numbers written as text), names are plain folder names, and a
bad value never archives an experiment; BasicSR's dataset spellings are accepted."""
import copy
import logging
import os

import pytest
import torch
import yaml

from DiffIR.data import build_dataset
from DiffIR.data.dgain import format_dgain_text, implausible_exposure
from DiffIR.models.lr_scheduler import get_scheduler
from DiffIR.run_setup import warn_archived_states
from DiffIR.train_pipeline_hdr import train_pipeline
from DiffIR.config.schema import coerce_numbers
from DiffIR.config.loading import apply_overrides, finalize_options, load_yaml, parse_options
from DiffIR.utils.errors import OptionError
from DiffIR.utils.registry import check_kwargs

from conftest import REFERENCE, ROOT
from helpers import run_entry, train_options
from test_dataset import _make_folder, _opt

BASE = {"name": "vals", "model_type": "DiffIRS1Model", "num_gpu": 0}


def _finalize(text_or_opt, tmp_path, is_train=True):
    opt = yaml.safe_load(text_or_opt) if isinstance(text_or_opt, str) else text_or_opt
    return finalize_options(opt, str(tmp_path), is_train=is_train, file="my.yml", require_training=False)


def _errors(opt, tmp_path, is_train=True):
    with pytest.raises(OptionError) as e:
        _finalize(opt, tmp_path, is_train)
    return str(e.value)


# ------------------------------------------------------------------ numbers written as text
def test_numbers_that_yaml_reads_as_text_become_numbers(tmp_path):
    text = """
name: vals
model_type: DiffIRS1Model
num_gpu: 0
train:
  total_iter: 3e5
  warmup_iter: '-1'
  ema_decay: '0.999'
  optim_g: {type: Adam, lr: 5e-4, weight_decay: 1e-4, betas: [0.9, 9.99e-1]}
  scheduler: {type: CosineAnnealingRestartCyclicLR, periods: [2e5, 1e5], restart_weights: [1, 1], eta_mins: [3e-4, 1e-6]}
  pixel_opt: {type: L1Loss, loss_weight: 1e0}
logger: {print_freq: 1e2, save_checkpoint_freq: 5e3}
val: {val_freq: 5e3}
"""
    assert isinstance(yaml.safe_load(text)["train"]["optim_g"]["lr"], str)  # what PyYAML does (YAML 1.1)
    train = _finalize(text, tmp_path)["train"]
    assert train["optim_g"]["lr"] == 0.0005 and isinstance(train["optim_g"]["lr"], float)
    assert train["optim_g"]["weight_decay"] == 1e-4 and train["optim_g"]["betas"] == [0.9, 0.999]
    assert train["total_iter"] == 300000 and isinstance(train["total_iter"], int)
    assert train["warmup_iter"] == -1 and train["ema_decay"] == 0.999
    assert train["scheduler"]["periods"] == [200000, 100000] and train["scheduler"]["eta_mins"] == [3e-4, 1e-6]
    assert train["pixel_opt"]["loss_weight"] == 1
    # every reader of option files (inference, benchmarks, check_dataset) gets numbers too
    (tmp_path / "o.yml").write_text(text)
    loaded = load_yaml(str(tmp_path / "o.yml"))
    assert loaded["train"]["optim_g"]["lr"] == 0.0005 and loaded["logger"]["print_freq"] == 100
    # names, types and paths stay text even when they look like numbers
    opt = {"name": "1e5", "model_type": "DiffIRS1Model", "datasets": {"val": {"name": "2e3", "dataroot_lq": "1e4"}},
           "path": {"pretrain_network_g": "5e3"}}
    coerce_numbers(opt)
    assert opt["name"] == "1e5" and opt["datasets"]["val"] == {"name": "2e3", "dataroot_lq": "1e4"}
    assert opt["path"]["pretrain_network_g"] == "5e3"


def test_text_where_a_number_belongs_is_refused_by_key(tmp_path):
    opt = dict(BASE, train={"total_iter": 10, "optim_g": {"type": "Adam", "lr": "abc"}})
    text = _errors(opt, tmp_path)
    assert "'train:optim_g:lr' is 'abc', not a number" in text and "Fix:" in text
    # component parameters outside the tables: refused by the signature check of the component
    with pytest.raises(OptionError, match=r"'train:scheduler:eta_min' is 'low', not a number"):
        check_kwargs(get_scheduler("CosineAnnealingRestartLR"), {"periods": [10], "eta_min": "low"}, "train:scheduler")
    with pytest.raises(OptionError, match=r"'train:scheduler:periods' is \[10, 'x'\], not a list of numbers"):
        check_kwargs(get_scheduler("CosineAnnealingRestartLR"), {"periods": [10, "x"]}, "train:scheduler")
    check_kwargs(get_scheduler("CosineAnnealingRestartLR"), {"periods": [10], "eta_min": 1e-7}, "train:scheduler")


def test_every_bad_value_is_listed_at_once_with_its_key_and_fix(tmp_path):
    opt = dict(BASE, manual_seed=1.5,
               train={"total_iter": 0, "ema_decay": 1.0, "optim_g": {"type": "Adam", "lr": 1e-4, "betas": [0.9, 1.5]},
                      "pixel_opt": {"type": "L1Loss", "loss_weight": -1}},
               val={"val_freq": 0},
               logger={"print_freq": 0, "save_checkpoint_freq": -5, "tb_image_freq": "often", "wandb": "yes"},
               datasets={"train": {"gt_size": 250, "dataset_enlarge_ratio": 0, "batch_size_per_gpu": 0,
                                   "num_worker_per_gpu": 1.5, "use_shuffle": "true"},
                         "val": {"hdr_max": 0}})
    text = _errors(opt, tmp_path)
    for words in ("'manual_seed' is 1.5, not a whole number", "'train:total_iter' is 0",
                  "'train:ema_decay' is 1.0. Fix: use a number in [0, 1)", "'train:optim_g:betas[1]' is 1.5",
                  "'train:pixel_opt:loss_weight' is -1", "'val:val_freq' is 0", "'logger:print_freq' is 0",
                  "'logger:save_checkpoint_freq' is -5", "'logger:tb_image_freq' is 'often', not a number",
                  "'logger:wandb' is 'yes'",
                  "'datasets:train:gt_size' is 250. Fix: use a multiple of 8", "e.g. gt_size: 256",
                  "'datasets:train:dataset_enlarge_ratio' is 0", "'datasets:train:batch_size_per_gpu' is 0",
                  "'datasets:train:num_worker_per_gpu' is 1.5, not a whole number",
                  "'datasets:train:use_shuffle' is 'true', not true or false", "'datasets:val:hdr_max' is 0"):
        assert words in text, words
    assert text.count("\n  - ") == 16


def test_valid_edge_values_pass(tmp_path):
    opt = _finalize(dict(BASE, manual_seed=0, train={"total_iter": 1, "ema_decay": 0, "warmup_iter": -1},
                         logger={"keep_last_n": 0}, datasets={"train": {"gt_size": 8, "use_flip": 1}}), tmp_path)
    assert opt["datasets"]["train"]["use_flip"] is True


def test_training_run_needs_its_sections(tmp_path):
    opt = dict(BASE, train={"optim_g": {"type": "Adam", "lr": 1e-4}}, datasets={"train": {"gt_size": 64}})
    with pytest.raises(OptionError) as e:
        finalize_options(opt, str(tmp_path), is_train=True, require_training=True)
    for words in ("'train:total_iter' is missing", "'datasets:train:batch_size_per_gpu' is missing",
                  "'datasets:train:num_worker_per_gpu' is missing"):
        assert words in str(e.value)


def _stringify_numbers(node, key=""):
    """Every int/float of an option tree written as text, as PyYAML hands over '5e-4'."""
    if key == "path":
        return node
    if isinstance(node, dict):
        return {k: _stringify_numbers(v, k) for k, v in node.items()}
    if isinstance(node, list):
        return [_stringify_numbers(v, key) for v in node]
    if isinstance(node, (int, float)) and not isinstance(node, bool):
        mantissa, exponent = f"{node:.15e}".split("e")
        return mantissa.rstrip("0").rstrip(".") + "e" + exponent.lstrip("+")  # 300000 -> '3e05', 2e-4 -> '2e-04'
    return node


def _option_files():
    files = sorted((ROOT / "options").glob("*.yml"))
    files += sorted((REFERENCE / "origin_options").glob("*.yml")) if REFERENCE.is_dir() else []
    return files


@pytest.mark.parametrize("path", _option_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_option_file_validates_also_with_numbers_as_text(path, tmp_path):
    training = path.name.startswith(("train", "demo"))
    plain = load_yaml(str(path))
    as_text = _stringify_numbers(copy.deepcopy(plain))
    finalize_options(plain, str(tmp_path), is_train=training, file=str(path), require_training=training)
    finalize_options(as_text, str(tmp_path), is_train=training, file=str(path), require_training=training)
    assert as_text == plain


# ------------------------------------------------------------------ names, --force_yml
@pytest.mark.parametrize("name", ["/tmp/x", "", "  ", "..", ".", "a/b", "../up", "a\\b", " lead"])
@pytest.mark.parametrize("is_train", [True, False])
def test_name_must_be_a_plain_folder_name(tmp_path, name, is_train):
    text = _errors(dict(BASE, name=name), tmp_path, is_train)
    assert "'name' is" in text and "plain folder name" in text


def test_name_written_as_a_number_is_a_name(tmp_path):
    assert _finalize(dict(BASE, name=2024), tmp_path)["path"]["experiments_root"].endswith(os.sep + "2024")


def test_malformed_force_yml_value_names_the_override(tmp_path):
    yml = tmp_path / "o.yml"
    yml.write_text(yaml.safe_dump(dict(BASE)))
    with pytest.raises(OptionError) as e:
        parse_options(str(tmp_path), False, ["-opt", str(yml), "--force_yml", "val:suffix=[unclosed"])
    assert "--force_yml 'val:suffix=[unclosed'" in str(e.value) and "not valid YAML" in str(e.value)
    with pytest.raises(OptionError, match="not valid YAML"):
        apply_overrides({}, ["name=a: b: c"])
    opt = {}
    apply_overrides(opt, ["train:optim_g:lr=5e-4"])  # text here, a number once validated
    assert opt["train"]["optim_g"]["lr"] == "5e-4"


# ------------------------------------------------------------------ BasicSR dataset spellings, dgain ranges
def test_basicsr_flip_and_rotation_keys(tmp_path):
    root = _make_folder(tmp_path, stems=("a",), size=(32, 32))
    whole = build_dataset(_opt(root))[0]["lq"]
    hflipped = torch.flip(whole, dims=[-1])

    def variants(**aug):
        ds = build_dataset({**_opt(root, phase="train", geometric_augs=False), **aug})
        return ds, {tuple(ds[i % 1]["lq"].flatten()[:64].tolist()) for i in range(40)}

    ds, seen = variants(use_hflip=True, use_rot=False)  # BasicSR block: horizontal flips only
    assert (ds.aug_flip, ds.aug_rot) == (True, False)
    assert seen == {tuple(whole.flatten()[:64].tolist()), tuple(hflipped.flatten()[:64].tolist())}
    ds, seen = variants(use_hflip=True, use_rot=True)  # both: one of the 8 flips/rotations
    assert (ds.aug_flip, ds.aug_rot) == (True, True) and len(seen) > 2
    ds, seen = variants(use_hflip=False, use_rot=False)
    assert seen == {tuple(whole.flatten()[:64].tolist())}
    text = _errors(dict(BASE, datasets={"train": {"use_flip": True, "use_hflip": False}}), tmp_path)
    assert "use_hflip" in text and "disagree" in text


def test_implausible_dgain_and_gamma_are_reported_not_refused(tmp_path):
    assert implausible_exposure(2.5, 2.2) is None and implausible_exposure(64, 1.0) is None
    assert "dgain 100" in implausible_exposure(100, 2.2) and "gamma 0.45" in implausible_exposure(2, 0.45)
    root = _make_folder(tmp_path, stems=("a", "b"))
    (root / "dg" / "b.txt").write_text(format_dgain_text(200.0, 0.5))
    ds = build_dataset(_opt(root, check="quick"))
    assert len(ds) == 2
    notes = " ".join(ds.check_report.notes())
    assert "b.txt (dgain 200 outside [1/64, 64], gamma 0.5 outside [1, 4])" in notes and "a.txt" not in notes
    ds = build_dataset(_opt(root, check="quick"))  # the check cache keeps the warning
    assert "b.txt" in " ".join(ds.check_report.notes())


# ------------------------------------------------------------------ nothing archived by a bad value
@pytest.mark.slow
def test_bad_value_in_a_cli_run_exits_2_and_archives_nothing(tmp_path):
    yml = train_options(tmp_path, name="keep")
    exp = tmp_path / "experiments" / "keep"
    (exp / "training_states").mkdir(parents=True)
    (exp / "training_states" / "3.state").write_bytes(b"a real run's state")
    proc = run_entry(tmp_path, "train_hdr.py", "-opt", str(yml), "--force_yml", "train:optim_g:lr=abc",
                     "logger:print_freq=0")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "'train:optim_g:lr' is 'abc'" in proc.stderr and "'logger:print_freq' is 0" in proc.stderr
    assert (exp / "training_states" / "3.state").read_bytes() == b"a real run's state"
    assert sorted(p.name for p in (tmp_path / "experiments").iterdir()) == ["keep"]


def test_component_errors_are_found_before_data_and_folder(tmp_path):
    yml = train_options(tmp_path, name="comp")
    exp = tmp_path / "experiments" / "comp"
    exp.mkdir(parents=True)
    (exp / "marker").write_text("x")
    with pytest.raises(OptionError, match="eta_min"):
        train_pipeline(str(tmp_path), ["-opt", str(yml), "--force_yml", "train:scheduler={type: "
                                       "CosineAnnealingRestartLR, periods: [6], eta_min: low}"])
    assert (exp / "marker").is_file() and sorted(p.name for p in (tmp_path / "experiments").iterdir()) == ["comp"]
    assert not (tmp_path / "data").exists()  # the (synthetic) data was not even generated


def test_auto_resume_names_archived_states(tmp_path):
    exp = tmp_path / "experiments" / "run"
    for stamp, iters in (("20250101_000000", (2, 4)), ("20250102_000000", (6,)), ("20250103_000000", ())):
        states = tmp_path / "experiments" / f"run_archived_{stamp}" / "training_states"
        states.mkdir(parents=True)
        for it in iters:
            (states / f"{it}.state").write_bytes(b"")
    records = []
    logger = logging.getLogger("test_option_values")
    handler = logging.Handler()
    handler.emit = lambda r: records.append(r.getMessage())
    logger.addHandler(handler)
    try:
        found = warn_archived_states(str(exp), logger)
    finally:
        logger.removeHandler(handler)
    newest = str(tmp_path / "experiments" / "run_archived_20250102_000000" / "training_states" / "6.state")
    assert found[-1] == newest and len(found) == 2
    assert len(records) == 1 and "starts from iteration 1" in records[0]
    assert f"--force_yml path:resume_state={newest}" in records[0]
    assert warn_archived_states(str(tmp_path / "experiments" / "other"), logger) == []


def test_test_run_with_bad_data_keeps_the_previous_results_folder(tmp_path):
    from DiffIR import test_pipeline as tp
    from test_evaluation import _test_yml, _weights

    yml = _test_yml(tmp_path, _weights(tmp_path), name="again")
    opt = yaml.safe_load(open(yml))
    opt["datasets"]["test_1"].pop("synthetic")
    opt["datasets"]["test_1"]["dataroot_lq"] = str(tmp_path / "missing")
    open(yml, "w").write(yaml.safe_dump(opt))
    results = tmp_path / "results" / "again"
    results.mkdir(parents=True)
    (results / "metrics.csv").write_text("earlier results\n")
    with pytest.raises(OptionError, match="dataroot_lq"):
        tp.test_pipeline(str(tmp_path), ["-opt", yml])
    assert (results / "metrics.csv").read_text() == "earlier results\n"
    assert [p.name for p in (tmp_path / "results").iterdir()] == ["again"]


def test_val_and_dataset_values_are_checked_once_in_the_schema(tmp_path):
    """The ``val`` tiling/format checks run with the option file's other checks (all listed at once); a dataset or
    model built without the option parser runs the same schema check."""
    from DiffIR.data import build_dataset
    from DiffIR.config.sections import check_val_options

    text = _errors(dict(BASE, val={"tile_size": 100, "save_format": "png", "num_preview_images": None}), tmp_path)
    for words in ("'val:tile_size' must be a positive multiple of 8", "'val:save_format' is 'png'",
                  "'val:num_preview_images' is ~ (empty). Fix: use an integer >= 0"):
        assert words in text, words
    with pytest.raises(OptionError, match="'val:suffix'.*path separator"):
        check_val_options({"suffix": "a/b"})
    root = tmp_path / "set"
    _make_folder(root, stems=("a",))
    with pytest.raises(OptionError, match=r"'datasets:train:hdr_max' is 0\. Fix: use a number > 0"):
        build_dataset(_opt(root, phase="train", hdr_max=0))
    with pytest.raises(OptionError, match=r"'datasets:train:gt_size' is -8\. Fix: use a multiple of 8"):
        build_dataset(_opt(root, phase="train", gt_size=-8))
    with pytest.raises(OptionError, match=r"'datasets:val:num_prefetch_queue' is 0\."):
        build_dataset(_opt(root, num_prefetch_queue=0))
