"""DDP on CPU (gloo): 2 processes × batch 1 must equal 1 process × batch 2, and rank-aware saving."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from DiffIR.models import build_model

from helpers import cli_run_options, entry_env, entry_script, model_options


def _opt(tmp, dist_on):
    return model_options(tmp, "ddp", {"ema_decay": 0, "optim_g": {"type": "Adam", "lr": 1e-3}, "total_iter": 1,
                                      "pixel_opt": {"type": "L1Loss", "loss_weight": 1.0}}, dist=dist_on)


def _batch():
    g = torch.Generator().manual_seed(7)
    return {"lq": torch.rand(2, 3, 16, 16, generator=g), "gt": torch.rand(2, 3, 16, 16, generator=g),
            "dgain": torch.tensor([2.0, 3.0]), "gamma": torch.tensor([2.2, 1.8])}


def _worker(rank, world, port, tmp):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        model = build_model(_opt(tmp, True))
        data = {k: v[rank:rank + 1] for k, v in _batch().items()}
        model.feed_data(data)
        model.optimize_parameters(1)
        model.save(0, 1)
        if rank == 0:
            torch.save({"weights": model.get_bare_model(model.net_g).state_dict(),
                        "loss": torch.tensor(model.log_dict["l_pix"])}, os.path.join(tmp, "..", "rank0.pt"))
        dist.barrier()  # both ranks done before teardown: one rank tearing gloo down early can abort the other
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_batch1_equal_one_process_batch2(tmp_path):
    torch.manual_seed(0)
    single = build_model(_opt(tmp_path / "single", False))
    single.feed_data(_batch())
    single.optimize_parameters(1)
    expected = single.get_bare_model(single.net_g).state_dict()

    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, str(tmp_path / "ddp"))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=180)
        assert p.exitcode == 0
    out = torch.load(tmp_path / "rank0.pt", weights_only=True)
    weights, loss = out["weights"], out["loss"].item()
    assert loss == pytest.approx(single.log_dict["l_pix"], rel=1e-5)  # logged loss is the mean over ranks
    for k, v in expected.items():
        torch.testing.assert_close(weights[k], v, rtol=1e-5, atol=1e-6, msg=k)
    # only rank 0 wrote files, and the state holds both ranks' RNG states
    files = sorted(os.listdir(tmp_path / "ddp"))
    assert files == ["1.state", "net_g_1.pth"]
    state = torch.load(tmp_path / "ddp" / "1.state", weights_only=True)
    assert state["world_size"] == 2 and len(state["rng"]) == 2


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["torch.distributed.run", "torch.distributed.launch"])
def test_training_summary_in_log_file_and_rank0_console_under_launchers(tmp_path, launcher):
    """torchrun (= torch.distributed.run) and the older torch.distributed.launch (passes --local-rank): the whole
    summary (train stats with world size 2, schedule, device, environment) is in the log file and printed once."""
    import glob
    import subprocess
    import sys

    import yaml

    yml, exp = cli_run_options(tmp_path, "ddplog", 1)
    opt = yaml.safe_load(yml.read_text())
    opt.update(num_gpu=0, dist_params={"backend": "gloo"})
    yml.write_text(yaml.safe_dump(opt))
    proc = subprocess.run([sys.executable, "-m", launcher, "--nproc_per_node=2", f"--master_port={_free_port()}",
                           str(entry_script(tmp_path)), "-opt", str(yml), "--launcher", "pytorch"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, env=entry_env())
    assert proc.returncode == 0, proc.stderr
    log = open(glob.glob(str(exp / "train_*.log"))[0], encoding="utf-8").read()
    summary = ("训练统计信息:", "训练图像数量: 4", "每GPU批次大小: 2", "世界大小(GPU数量): 2", "总迭代数: 1",
               "HDR训练配置:", "训练设备: cpu", "PyTorch: ")
    for words in summary:
        assert words in log, words
        assert words in proc.stderr, words
    assert proc.stderr.count("训练图像数量") == 1  # rank 0's console only, not once per rank
    assert not (exp.parent / f"{exp.name}.lock").exists()  # rank 0 held the experiment lock and released it
