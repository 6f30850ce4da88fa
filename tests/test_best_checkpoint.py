"""val.save_best: models/net_g_best.pth follows the best validation, survives pruning and resumes, and loads anywhere."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict

import pytest
import torch
import yaml

import DiffIR.inference_pipeline as ip
import DiffIR.models.base_model as base_model
from DiffIR import test_pipeline as tp
from DiffIR.models import build_model
from DiffIR.train_pipeline_hdr import train_pipeline
from DiffIR.utils.checkpoint import extract_state_dict, load_file
from DiffIR.utils.errors import OptionError

from helpers import PSNR, TINY_NET, TINY_S2, log_text, model_options, train_options, write_yaml


def _scripted_psnr(monkeypatch, by_iter: Dict[int, float]) -> None:
    """Validation reports ``by_iter[iteration]`` as its PSNR (the real loop runs; only the score is replaced)."""
    real = base_model.evaluate_dataset

    def evaluate(*a, **k):
        res = real(*a, **k)
        res.metrics["psnr"] = by_iter[int(k["suffix"])]
        return res

    monkeypatch.setattr(base_model, "evaluate_dataset", evaluate)


def _yml(tmp_path: Path, name: str, total_iter: int, **logger) -> Path:
    yml = train_options(tmp_path, name=name, total_iter=total_iter)
    opt = yaml.safe_load(yml.read_text())
    opt["val"].update(save_best="psnr", pbar=False, num_preview_images=0)
    opt["logger"].update(use_tb_logger=False, language="en", **logger)
    return write_yaml(yml, opt)


def _best(exp: Path) -> dict:
    return load_file(str(exp / "models" / "net_g_best.pth"))  # weights_only=True


def test_best_checkpoint_is_written_kept_by_pruning_and_loads_in_test_py(tmp_path, monkeypatch):
    _scripted_psnr(monkeypatch, {3: 25.0, 6: 20.0, 9: 22.0})
    train_pipeline(str(tmp_path), ["-opt", str(_yml(tmp_path, "best", 9, keep_last_n=1))])
    exp = tmp_path / "experiments" / "best"
    models = sorted(p.name for p in (exp / "models").iterdir())
    assert models == ["net_g_9.pth", "net_g_best.pth", "net_g_latest.pth"]  # net_g_3/6 pruned, the best kept
    best = _best(exp)
    assert set(best) == {"params", "params_ema", "ema", "network", "best"}
    assert best["best"] == {"metric": "psnr", "value": 25.0, "iter": 3, "dataset": "V"}
    latest = load_file(str(exp / "models" / "net_g_9.pth"))
    assert any(not torch.equal(v, latest["params"][k]) for k, v in best["params"].items())  # iteration 3's weights
    log = log_text(tmp_path, "best")
    assert log.count("New best psnr on V") == 1 and "25.0000 @ iter 3" in log
    assert load_file(str(exp / "training_states" / "9.state"))["best"] == best["best"]

    # test.py reads it like any checkpoint: params_ema picked, the record ignored
    assert extract_state_dict(best, "params_ema", "net_g_best.pth").keys() == best["params_ema"].keys()
    monkeypatch.undo()
    opt = {"name": "from_best", "model_type": "DiffIRS1Model", "num_gpu": 0, "manual_seed": 0,
           "datasets": {"val": yaml.safe_load((exp / "options_best.yml").read_text())["datasets"]["val"]},
           "network_g": dict(TINY_NET), "val": {"pbar": False, "metrics": PSNR},
           "path": {"pretrain_network_g": str(exp / "models" / "net_g_best.pth"), "param_key_g": "params_ema"},
           "logger": {"language": "en"}}
    out = tp.test_pipeline(str(tmp_path), ["-opt", str(write_yaml(tmp_path / "t.yml", opt))])
    assert math.isfinite(out["results"]["V"].metrics["psnr"])


def test_resumed_run_keeps_a_better_best(tmp_path, monkeypatch):
    """Iteration 6's state is saved before iteration 6's validation (the best, 30): a resume from it must not let
    iteration 9's 27 replace it, and a later 35 still does."""
    _scripted_psnr(monkeypatch, {3: 25.0, 6: 30.0, 9: 27.0, 12: 35.0})
    yml = _yml(tmp_path, "resume", 6)
    train_pipeline(str(tmp_path), ["-opt", str(yml)])
    exp = tmp_path / "experiments" / "resume"
    assert _best(exp)["best"]["iter"] == 6
    assert load_file(str(exp / "training_states" / "6.state"))["best"]["iter"] == 3
    weights_6 = _best(exp)["params_ema"]
    train_pipeline(str(tmp_path), ["-opt", str(yml), "--auto_resume", "--force_yml", "train:total_iter=9"])
    best = _best(exp)
    assert best["best"] == {"metric": "psnr", "value": 30.0, "iter": 6, "dataset": "V"}
    assert all(torch.equal(v, weights_6[k]) for k, v in best["params_ema"].items())
    assert load_file(str(exp / "training_states" / "9.state"))["best"]["iter"] == 6
    assert "Best psnr so far: 30.0000 @ iter 6" in log_text(tmp_path, "resume")
    train_pipeline(str(tmp_path), ["-opt", str(yml), "--auto_resume", "--force_yml", "train:total_iter=12"])
    assert _best(exp)["best"]["iter"] == 12


def test_direction_nan_and_the_generic_extra_payload(tmp_path):
    opt = model_options(tmp_path, "dir", {"optim_g": {"type": "Adam", "lr": 1e-3}, "total_iter": 10,
                                           "pixel_opt": {"type": "L1Loss"}})
    opt["val"] = {"save_best": "err", "metrics": {"err": dict(PSNR["psnr"], better="lower")}}
    model = build_model(opt)
    written = [model.update_best_checkpoint("V", {"err": v}, it)
               for it, v in ((1, 5.0), (2, 6.0), (3, float("nan")), (4, 4.0), (5, 4.0))]
    assert written == [True, False, False, True, False]
    best = load_file(str(tmp_path / "net_g_best.pth"))
    assert set(best) == {"params", "network", "best"} and best["best"]["iter"] == 4  # no EMA: params only
    with pytest.raises(ValueError, match="would replace the weights"):
        model.save_network([model.net_g], "net_g", "x", ["params"], extra={"params": {}})


def test_inference_loads_a_stage2_best_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = build_model({"name": "s2", "model_type": "DiffIRS2Model", "num_gpu": 0, "is_train": False,
                         "network_g": dict(TINY_S2), "path": {"models": str(tmp_path)}})
    record = {"metric": "psnr", "value": 30.0, "iter": 7, "dataset": "V"}
    model.save_network([model.net_g], "net_g", "best", ["params"], extra={"best": record})
    net = ip.load_stage2_network(str(tmp_path / "net_g_best.pth"), dict(TINY_S2), "params_ema", "test",
                                 torch.device("cpu"))
    assert all(torch.equal(v, model.net_g.state_dict()[k]) for k, v in net.state_dict().items())


def test_bad_save_best_is_refused_before_training(tmp_path):
    yml = _yml(tmp_path, "bad", 3)
    for value, message in (("ssim", r"'val:save_best' is 'ssim'; it must name one of val:metrics: psnr"),
                           (3, r"'val:save_best' is 3; it must name one of val:metrics: psnr")):
        with pytest.raises(OptionError, match=message):
            train_pipeline(str(tmp_path), ["-opt", str(yml), "--force_yml", f"val:save_best={value}"])
    with pytest.raises(OptionError, match="val:metrics is empty"):
        train_pipeline(str(tmp_path), ["-opt", str(yml), "--force_yml", "val:metrics={}"])
    opt = yaml.safe_load(yml.read_text())
    del opt["datasets"]["val"]
    with pytest.raises(OptionError, match="no validation set"):
        train_pipeline(str(tmp_path), ["-opt", str(write_yaml(yml, opt))])
    assert not (tmp_path / "experiments").exists() and not (tmp_path / "data").exists()
