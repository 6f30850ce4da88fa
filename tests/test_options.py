import os

import pytest
import torch

from DiffIR.config.loading import apply_overrides, finalize_options, load_yaml, parse_options, validate_options
from DiffIR.utils.errors import OptionError
from DiffIR.utils.registry import ARCH_REGISTRY, Registry, build_from_registry, lookup

from conftest import REFERENCE, ROOT


def _seed_files():
    files = [ROOT / "options" / "train_DiffIRs1_hdr.yml", ROOT / "options" / "demo_DiffIRs1_hdr.yml"]
    ref = REFERENCE / "origin_options" / "train_DiffIRs1_hdr.yml"
    if ref.is_file():
        files.append(ref)
    return files


@pytest.mark.parametrize("path", _seed_files(), ids=lambda p: p.name)
def test_every_seed_key_is_accepted(path, tmp_path):
    opt = load_yaml(str(path))
    finalize_options(opt, str(tmp_path), is_train=True, file=str(path))
    assert opt["num_gpu"] == torch.cuda.device_count()
    assert opt["path"]["experiments_root"] == os.path.join(str(tmp_path), "experiments", opt["name"])
    assert opt["datasets"]["train"]["phase"] == "train"
    assert opt["datasets"]["val"]["phase"] == "val"


def test_unknown_keys_are_reported_by_name():
    opt = {"name": "x", "model_type": "DiffIRS1Model", "train": {"totl_iter": 5, "pixel_opt": {}},
           "logger": {"print_freq": 1, "save_chekpoint_freq": 3}, "valid": {}}
    with pytest.raises(OptionError) as e:
        validate_options(opt, "my.yml")
    text = str(e.value)
    assert "my.yml" in text
    assert "'train:totl_iter'" in text and "did you mean 'total_iter'" in text
    assert "'logger:save_chekpoint_freq'" in text
    assert "'valid'" in text


def test_force_yml_nested_overrides():
    opt = {"train": {"total_iter": 10, "scheduler": {"type": "A"}}}
    apply_overrides(opt, ["train:total_iter=20", "train:scheduler:gamma=0.5", "name=abc", "val:metrics=~"])
    assert opt["train"]["total_iter"] == 20
    assert opt["train"]["scheduler"]["gamma"] == 0.5
    assert opt["name"] == "abc"
    assert opt["val"]["metrics"] is None
    with pytest.raises(OptionError):
        apply_overrides(opt, ["train:total_iter"])


def test_parse_options_cli_flags(tmp_path):
    path = ROOT / "options" / "train_DiffIRs1_hdr.yml"
    opt, args = parse_options(str(tmp_path), True, ["-opt", str(path), "--auto_resume", "--debug",
                                                    "--local-rank", "0", "--force_yml", "num_gpu=0"])
    assert args.auto_resume and opt["auto_resume"]
    assert opt["name"].startswith("debug_")
    assert opt["num_gpu"] == 0
    assert opt["logger"]["print_freq"] == 1
    _, args = parse_options(str(tmp_path), True, ["-opt", str(path), "--local_rank", "0", "--launcher", "none"])
    assert args.launcher == "none"


def test_registry_unknown_name_lists_registered():
    import DiffIR.archs  # noqa: F401

    with pytest.raises(OptionError) as e:
        build_from_registry(ARCH_REGISTRY, {"type": "DiffIRS11"}, "network_g")
    assert "DiffIRS1" in str(e.value) and "network_g:type" in str(e.value)
    with pytest.raises(OptionError) as e:
        build_from_registry(ARCH_REGISTRY, {"type": "DiffIRS1", "dimm": 8}, "network_g")
    assert "'network_g:dimm'" in str(e.value) and "did you mean 'dim'" in str(e.value)
    reg = Registry("thing")
    reg.register(int, name="a")
    with pytest.raises(KeyError):
        reg.register(float, name="a")


def test_one_lookup_names_the_key_the_closest_name_and_every_name():
    """Registries and plain tables (schedulers, optimizers, readers) fail the same way: an OptionError (exit 2 in
    the entry scripts) that code looking names up like a mapping can also catch as a KeyError."""
    table = {"MultiStepLR": 1, "CosineAnnealingLR": 2}
    with pytest.raises(OptionError) as e:
        lookup(table, "MultiStepLr", "scheduler", "train:scheduler:type")
    assert str(e.value) == ("'train:scheduler:type' = 'MultiStepLr' is not a known scheduler (did you mean "
                            "'MultiStepLR'?). Fix: use one of: CosineAnnealingLR, MultiStepLR.")
    assert isinstance(e.value, KeyError)
    with pytest.raises(OptionError, match=r"'\[1\]' is not a known scheduler\. Fix"):  # unhashable YAML value
        lookup(table, [1], "scheduler")
    with pytest.raises(OptionError, match="'network_g' needs a 'type' key naming one of: .*DiffIRS1"):
        ARCH_REGISTRY.get_type({"dim": 8}, "network_g")


def test_derived_paths_given_in_the_file_are_reported_not_silently_replaced(tmp_path):
    import logging

    from DiffIR.utils.logger import get_root_logger

    records = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    get_root_logger().addHandler(handler)
    try:
        base = {"name": "paths", "model_type": "DiffIRS1Model", "num_gpu": 0}
        opt = finalize_options(dict(base, path={"experiments_root": "/somewhere/else", "models": None}),
                               str(tmp_path), is_train=True, file="my.yml")
        assert opt["path"]["experiments_root"] == os.path.join(str(tmp_path), "experiments", "paths")
        assert len(records) == 1 and "my.yml: path:experiments_root is '/somewhere/else'" in records[0]
        assert "ignored" in records[0]
        records.clear()
        finalize_options(dict(base, path=dict(opt["path"])), str(tmp_path), is_train=True, file="dumped.yml")
        assert not records  # an options file dumped by a run repeats its own paths: no warning
    finally:
        get_root_logger().removeHandler(handler)
