"""The option table: typed, frozen sections built once from one row per key (DiffIR/config)."""
import dataclasses
from dataclasses import dataclass

import pytest
import yaml

from DiffIR.config.loading import TRAIN_KEYS, VAL_KEYS, parse_options, validate_options
from DiffIR.config.sections import RunOptions, TrainOptions, ValOptions, check_val_options
from DiffIR.config.table import Section, option
from DiffIR.utils.errors import OptionError

from helpers import train_options


def test_a_new_row_is_checked_defaulted_and_typed():
    """What "one row plus its one read" gives: the key set, the value check with its fix, the default, the type."""
    @dataclass(frozen=True)
    class Extra(Section):
        every: int = option(5, int, lo=1, example="every: 5")

    assert set(Extra.rows()) == {"every"}
    assert Extra.build({}).every == 5 and Extra.build({"every": None}).every == 5  # missing or ~: the default
    assert Extra.build({"every": "7"}).every == 7  # numeric text, as YAML 1.1 reads 7e0
    section, errors = Extra.parse({"every": 0}, "x:")
    assert errors == ["'x:every' is 0. Fix: use an integer >= 1, e.g. every: 5."]
    with pytest.raises(dataclasses.FrozenInstanceError):
        section.every = 3  # type: ignore[misc]


def test_the_key_sets_are_the_sections_rows():
    assert {"accum_iter", "amp", "encoder_iter", "lr_sr", "total_iter", "optim_g"} <= TRAIN_KEYS
    assert set(TrainOptions.rows()) == TRAIN_KEYS and set(ValOptions.rows()) == VAL_KEYS
    assert {"tile_size", "tile_overlap", "window_size"} <= VAL_KEYS  # the tiling group reads the same mapping


def test_run_options_apply_defaults_and_freeze_components():
    options = RunOptions.build({"name": "r", "model_type": "DiffIRS1Model",
                                "train": {"total_iter": 3, "pixel_opt": {"type": "L1Loss"}, "perceptual_opt": None,
                                          "optim_g": {"type": "Adam", "lr": 2e-4, "betas": [0.9, 0.99]}},
                                "val": {"tile_size": 64}})
    train, val, log = options.train, options.val, options.logger
    assert (train.speed.accum_iter, train.speed.amp, train.warmup_iter, train.max_nonfinite_steps) == (1, "none", -1, 10)
    assert list(train.losses) == ["pixel_opt"]  # ~ switches a loss off, as in BasicSR
    assert train.optim_g["betas"] == (0.9, 0.99)
    with pytest.raises(TypeError):
        train.optim_g["lr"] = 1.0  # one consumer cannot change what another reads
    assert (val.tiling.tile_size, val.tiling.tile_overlap, val.tiling.window_size, val.pbar) == (64, 32, 8, True)
    assert (log.print_freq, log.save_checkpoint_freq, log.image_freq, log.use_tb_logger) == (100, 5000, 5000, True)
    assert RunOptions.build({"train": {"amp": "BF16"}}).train.speed.amp == "bf16"  # as the model read it before


def test_every_bad_value_in_one_error_and_the_cross_key_checks():
    with pytest.raises(OptionError) as e:
        RunOptions.build({"train": {"accum_iter": 0, "amp": "fp8"}, "logger": {"print_freq": "often"}})
    text = str(e.value)
    assert "'train:accum_iter' is 0" in text and "'train:amp' is 'fp8'" in text and "'logger:print_freq'" in text
    with pytest.raises(OptionError, match="tile_overlap"):
        check_val_options({"tile_size": 64, "tile_overlap": 60})
    with pytest.raises(OptionError, match="crop_border"):
        check_val_options({"metrics": {"psnr": {"type": "calculate_psnr", "crop_border": -1}}})


def test_the_loader_and_the_sections_agree(tmp_path):
    """A file the loader accepts builds its sections without a second report; the derived entries and the process
    are the run context, not options."""
    opt, args = parse_options(str(tmp_path), True, ["-opt", str(train_options(tmp_path, name="cfg", total_iter=5)),
                                                    "--force_yml", "train:accum_iter=2"])
    options = RunOptions.build(opt)
    assert options.train.total_iter == 5 and options.train.speed.accum_iter == 2
    assert options.context.is_train and options.context.paths.models.endswith("experiments/cfg/models")
    user = args.user_options
    assert user["train"]["accum_iter"] == 2 and "models" not in (user.get("path") or {}) and "is_train" not in user


def test_training_saves_what_the_user_wrote(tmp_path):
    from DiffIR.train_pipeline_hdr import train_pipeline

    yml = train_options(tmp_path, name="mine", total_iter=2)
    written = yaml.safe_load(yml.read_text())
    train_pipeline(str(tmp_path), ["-opt", str(yml)])
    saved = yaml.safe_load((tmp_path / "experiments" / "mine" / "options_mine.yml").read_text())
    assert saved == written  # no rank, world size, derived paths or is_train
    validate_options(saved, "options_mine.yml", training=True)  # and it trains again as it is
