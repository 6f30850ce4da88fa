"""Real (tiny) training runs through the HDR pipeline: checkpoints, logs, TensorBoard, resume, CLI errors."""
import glob
import os
import subprocess
import sys

import pytest
import torch
import yaml

from DiffIR.train_pipeline_hdr import train_pipeline
from DiffIR.utils.checkpoint import load_file
from DiffIR.utils.errors import OptionError

from conftest import ROOT

TINY_NET = {"type": "DiffIRS1", "n_encoder_res": 1, "inp_channels": 3, "out_channels": 3, "dim": 8,
            "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1, "heads": [1, 2, 4, 8],
            "ffn_expansion_factor": 2, "bias": False, "LayerNorm_type": "WithBias"}


def _options(tmp_path, name="tiny", total_iter=6, **extra_train):
    data = tmp_path / "data"
    opt = {
        "name": name, "model_type": "DiffIRS1Model", "scale": 1, "num_gpu": "auto", "manual_seed": 0,
        "datasets": {
            "train": {"name": "T", "type": "LDR_HDR_PairedDataset", "dataroot_gt": str(data / "tr/hdr"),
                      "dataroot_lq": str(data / "tr/jpg"), "dataroot_dgain": str(data / "tr/dgain_info"),
                      "synthetic": {"num_images": 4, "size": 48, "seed": 3}, "io_backend": {"type": "disk"},
                      "geometric_augs": True, "num_worker_per_gpu": 0, "batch_size_per_gpu": 2, "gt_size": 32,
                      "use_shuffle": True, "dataset_enlarge_ratio": 1},
            "val": {"name": "V", "type": "LDR_HDR_PairedDataset", "dataroot_gt": str(data / "va/hdr"),
                    "dataroot_lq": str(data / "va/jpg"), "dataroot_dgain": str(data / "va/dgain_info"),
                    "synthetic": {"num_images": 2, "size": 36, "seed": 4}, "io_backend": {"type": "disk"}},
        },
        "network_g": dict(TINY_NET),
        "path": {"pretrain_network_g": None, "param_key_g": "params_ema", "strict_load_g": True},
        "train": {"ema_decay": 0.9, "optim_g": {"type": "Adam", "lr": 1e-3, "betas": [0.9, 0.99]},
                  "scheduler": {"type": "CosineAnnealingWarmupRestarts", "first_cycle_steps": 10, "cycle_mult": 1.0,
                                "max_lr": 1e-3, "min_lr": 1e-5, "warmup_steps": 2, "gamma": 1.0},
                  "total_iter": total_iter, "warmup_iter": -1,
                  "pixel_opt": {"type": "L1Loss", "loss_weight": 1.0, "reduction": "mean"}, **extra_train},
        "val": {"val_freq": 3, "save_img": False,
                "metrics": {"psnr": {"type": "calculate_psnr", "crop_border": 0, "test_y_channel": False}}},
        "logger": {"print_freq": 1, "save_checkpoint_freq": 3, "use_tb_logger": True, "tb_image_freq": 3},
    }
    path = tmp_path / f"{name}.yml"
    path.write_text(yaml.safe_dump(opt, allow_unicode=True))
    return path


def _log_text(root, name):
    logs = sorted(glob.glob(str(root / "experiments" / name / "train_*.log")))
    return open(logs[-1], encoding="utf-8").read()


def test_training_run_writes_basicsr_layout_and_chinese_summary(tmp_path):
    yml = _options(tmp_path)
    out = train_pipeline(str(tmp_path), ["-opt", str(yml)])
    exp = tmp_path / "experiments" / "tiny"
    for it in (3, 6):
        ckpt = load_file(str(exp / "models" / f"net_g_{it}.pth"))
        assert set(ckpt) == {"params", "params_ema"}
        state = load_file(str(exp / "training_states" / f"{it}.state"))
        assert state["iter"] == it and len(state["optimizers"]) == 1 and len(state["schedulers"]) == 1
    latest = load_file(str(exp / "models" / "net_g_latest.pth"))
    assert not torch.equal(latest["params"]["G.output.weight"], latest["params_ema"]["G.output.weight"])
    log = _log_text(tmp_path, "tiny")
    for words in ("训练图像数量: 4", "数据集放大比例: 1", "每GPU批次大小: 2", "世界大小(GPU数量): 1",
                  "每轮次所需迭代数: 2", "总轮次: 3; 总迭代数: 6", "批次大小: 2", "图像尺寸: 32", "总迭代数: 6",
                  "eta:", "l_pix:", "# psnr:"):
        assert words in log, words
    assert "V" in out["results"] and out["results"]["V"]["psnr"] > 0
    assert out["baseline"]["V"]["psnr"] > 0
    events = glob.glob(str(tmp_path / "tb_logger" / "tiny" / "events.out.tfevents.*"))
    assert events
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(events[0], size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"train/lr", "losses/l_pix", "metrics/V/psnr"} <= set(tags["scalars"])
    assert "train/input_output_gt" in tags["images"]


def test_english_logs_and_auto_resume_continue_from_saved_iteration(tmp_path):
    yml = _options(tmp_path, name="res", total_iter=4)
    opt = yaml.safe_load(yml.read_text())
    opt["logger"]["language"] = "en"
    opt["logger"]["save_checkpoint_freq"] = 2
    yml.write_text(yaml.safe_dump(opt))
    train_pipeline(str(tmp_path), ["-opt", str(yml)])
    log = _log_text(tmp_path, "res")
    assert "Number of train images: 4" in log and "训练图像数量" not in log
    exp = tmp_path / "experiments" / "res"
    lr_at_4 = load_file(str(exp / "training_states" / "4.state"))["schedulers"][0]
    # continue to 8 iterations: resumes at iteration 4 with the same optimizer/scheduler state
    out = train_pipeline(str(tmp_path), ["-opt", str(yml), "--auto_resume", "--force_yml", "train:total_iter=8"])
    assert out["iter"] == 8
    log = _log_text(tmp_path, "res")
    assert "Resuming from training state" in log and "iter 4" in log
    assert "iter:       5" in log and "iter:       4," not in log
    state8 = load_file(str(exp / "training_states" / "8.state"))
    assert state8["iter"] == 8
    assert state8["schedulers"][0]["last_epoch"] == lr_at_4["last_epoch"] + 4
    assert state8["optimizers"][0]["state"][0]["step"].item() == 8


def test_auto_resume_skips_unreadable_newest_state(tmp_path):
    yml = _options(tmp_path, name="skip", total_iter=6)
    train_pipeline(str(tmp_path), ["-opt", str(yml)])
    states = tmp_path / "experiments" / "skip" / "training_states"
    (states / "6.state").write_bytes(b"garbage")
    out = train_pipeline(str(tmp_path), ["-opt", str(yml), "--auto_resume", "--force_yml", "train:total_iter=7"])
    assert out["iter"] == 7
    assert "Skipping training state" in _log_text(tmp_path, "skip")


def test_bad_config_fails_before_training(tmp_path):
    yml = _options(tmp_path, name="bad")
    with pytest.raises(OptionError, match="total_iterr"):
        train_pipeline(str(tmp_path), ["-opt", str(yml), "--force_yml", "train:total_iterr=3"])
    with pytest.raises(OptionError, match="DiffIRS1"):
        train_pipeline(str(tmp_path), ["-opt", str(yml), "--force_yml", "network_g:type=DifIRS1"])
    assert not glob.glob(str(tmp_path / "experiments" / "bad" / "models" / "*.pth"))


def test_cli_reports_config_error_in_one_line(tmp_path):
    yml = _options(tmp_path, name="cli")
    proc = subprocess.run([sys.executable, str(ROOT / "train_hdr.py"), "-opt", str(yml), "--force_yml",
                           "train:optim_g:type=Adamm"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "ERROR:" in proc.stderr and "optim_g:type" in proc.stderr and "Traceback" not in proc.stderr
