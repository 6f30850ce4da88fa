"""The non-finite-loss guard names the loss term that went non-finite first: in each skipped step's warning, and in
the stop (the first step of the run of bad steps), also for a term that went non-finite on another DDP rank."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from DiffIR.models import build_model
from DiffIR.models.base_model import nonfinite_terms
from DiffIR.utils.errors import TrainingStopped

from helpers import model_options

NAN = float("nan")


def _model(tmp_path, **train):
    """TINY_NET trained on L1 + FFT + SSIM (l_pix, l_fft, l_ssim)."""
    return build_model(model_options(tmp_path, "guard", {
        "optim_g": {"type": "Adam", "lr": 1e-3}, "total_iter": 10, "pixel_opt": {"type": "L1Loss"},
        "fft_opt": {"type": "FFTLoss", "loss_weight": 0.05}, "ssim_opt": {"type": "SSIMLoss", "loss_weight": 0.1},
        **train}))


def _poison(model, key, value=NAN):
    """Make the loss ``key`` (``fft_opt``, ...) return ``value``, keeping the others as they are."""
    real = model.losses[key]
    model.losses[key] = lambda output, gt, **kw: real(output, gt, **kw) * 0 + value


def _step(model, it, lq=None):
    model.feed_data({"lq": torch.rand(1, 3, 16, 16) if lq is None else lq, "gt": torch.rand(1, 3, 16, 16)})
    model.optimize_parameters(it)


def test_warning_and_stop_name_the_first_nonfinite_term(tmp_path, records):
    model = _model(tmp_path, max_nonfinite_steps=2)
    real_fft = model.losses["fft_opt"]
    _poison(model, "fft_opt")
    _step(model, 1)
    warning = [r.getMessage() for r in records if "Non-finite loss" in r.getMessage()][-1]
    assert "l_fft = nan went non-finite first" in warning and "l_pix" not in warning, warning
    model.losses["fft_opt"] = real_fft
    with pytest.raises(TrainingStopped) as stop:  # the second bad step: a NaN input, every term non-finite
        _step(model, 2, lq=torch.full((1, 3, 16, 16), NAN))
    warning = [r.getMessage() for r in records if "Non-finite loss" in r.getMessage()][-1]
    assert "l_pix = nan went non-finite first (then: l_fft = nan, l_ssim = nan)" in warning, warning
    # the stop reports where the run of bad steps began
    assert "in the first of them, l_fft = nan went non-finite first" in str(stop.value), stop.value


def test_an_infinite_term_and_a_sum_that_overflows(tmp_path, records):
    model = _model(tmp_path)
    _poison(model, "ssim_opt", float("inf"))
    _step(model, 1)
    assert any("l_ssim = inf went non-finite first" in r.getMessage() for r in records)
    finite = {"l_pix": torch.tensor(3e38), "l_fft": torch.tensor(3e38)}
    assert model.backward(finite["l_pix"] + finite["l_fft"], terms=finite) is False
    assert "every term was finite (l_pix, l_fft), their weighted sum was not" in records[-1].getMessage()
    assert model.backward(torch.tensor(NAN)) is False  # no terms given: the old message
    assert records[-1].getMessage().startswith("Non-finite loss (nan): step skipped")


def _rank_worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        terms = {"l_pix": torch.tensor(1.0), "l_kd_3": torch.tensor(NAN if rank == 1 else 2.0)}
        torch.save(nonfinite_terms(terms), os.path.join(out, f"{rank}.pt"))
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_a_term_nonfinite_on_another_rank_is_named_on_every_rank(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_rank_worker, args=(2, port, str(tmp_path)), nprocs=2, start_method="spawn")
    assert torch.load(tmp_path / "0.pt") == ["l_kd_3 (on another rank)"]
    assert torch.load(tmp_path / "1.pt") == ["l_kd_3 = nan"]
