"""Real (tiny) training runs through the HDR pipeline: checkpoints, logs, TensorBoard, resume, CLI errors."""
import glob

import pytest
import torch
import yaml

from DiffIR.train_pipeline_hdr import train_pipeline
from DiffIR.utils.checkpoint import load_file
from DiffIR.utils.errors import OptionError

from helpers import log_text, run_entry, train_options

def test_training_run_writes_basicsr_layout_and_chinese_summary(tmp_path):
    yml = train_options(tmp_path)
    out = train_pipeline(str(tmp_path), ["-opt", str(yml)])
    exp = tmp_path / "experiments" / "tiny"
    for it in (3, 6):
        ckpt = load_file(str(exp / "models" / f"net_g_{it}.pth"))
        assert set(ckpt) == {"params", "params_ema", "ema", "network"}
        state = load_file(str(exp / "training_states" / f"{it}.state"))
        assert state["iter"] == it and len(state["optimizers"]) == 1 and len(state["schedulers"]) == 1
    latest = load_file(str(exp / "models" / "net_g_latest.pth"))
    assert not torch.equal(latest["params"]["G.output.weight"], latest["params_ema"]["G.output.weight"])
    log = log_text(tmp_path, "tiny")
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
    yml = train_options(tmp_path, name="res", total_iter=4)
    opt = yaml.safe_load(yml.read_text())
    opt["logger"]["language"] = "en"
    opt["logger"]["save_checkpoint_freq"] = 2
    yml.write_text(yaml.safe_dump(opt))
    train_pipeline(str(tmp_path), ["-opt", str(yml)])
    log = log_text(tmp_path, "res")
    assert "Number of train images: 4" in log and "训练图像数量" not in log
    exp = tmp_path / "experiments" / "res"
    lr_at_4 = load_file(str(exp / "training_states" / "4.state"))["schedulers"][0]
    # continue to 8 iterations: resumes at iteration 4 with the same optimizer/scheduler state
    out = train_pipeline(str(tmp_path), ["-opt", str(yml), "--auto_resume", "--force_yml", "train:total_iter=8"])
    assert out["iter"] == 8
    log = log_text(tmp_path, "res")
    assert "Resuming from training state" in log and "iter 4" in log
    assert "iter:       5" in log and "iter:       4," not in log
    state8 = load_file(str(exp / "training_states" / "8.state"))
    assert state8["iter"] == 8
    assert state8["schedulers"][0]["last_epoch"] == lr_at_4["last_epoch"] + 4
    assert state8["optimizers"][0]["state"][0]["step"].item() == 8


def test_auto_resume_skips_unreadable_newest_state(tmp_path):
    yml = train_options(tmp_path, name="skip", total_iter=6)
    train_pipeline(str(tmp_path), ["-opt", str(yml)])
    states = tmp_path / "experiments" / "skip" / "training_states"
    (states / "6.state").write_bytes(b"garbage")
    out = train_pipeline(str(tmp_path), ["-opt", str(yml), "--auto_resume", "--force_yml", "train:total_iter=7"])
    assert out["iter"] == 7
    assert "Skipping training state" in log_text(tmp_path, "skip")


def test_bad_config_fails_before_training(tmp_path):
    yml = train_options(tmp_path, name="bad")
    with pytest.raises(OptionError, match="total_iterr"):
        train_pipeline(str(tmp_path), ["-opt", str(yml), "--force_yml", "train:total_iterr=3"])
    with pytest.raises(OptionError, match="DiffIRS1"):
        train_pipeline(str(tmp_path), ["-opt", str(yml), "--force_yml", "network_g:type=DifIRS1"])
    assert not glob.glob(str(tmp_path / "experiments" / "bad" / "models" / "*.pth"))


@pytest.mark.slow
def test_cli_reports_config_error_in_one_line(tmp_path):
    yml = train_options(tmp_path, name="cli")
    proc = run_entry(tmp_path, "train_hdr.py", "-opt", str(yml), "--force_yml", "train:optim_g:type=Adamm")
    assert proc.returncode == 2
    assert "ERROR:" in proc.stderr and "optim_g:type" in proc.stderr and "Traceback" not in proc.stderr
