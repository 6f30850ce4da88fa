"""DiffIR stage 2: official layout and outputs, KD loss, the two-phase training from a real stage-1 checkpoint
(one process and DDP), option files and the LDR-only inference CLI."""
from __future__ import annotations

import glob
import hashlib
import io
import json
import lzma
import os
import socket
from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from DiffIR.archs import build_network
from DiffIR.archs.diffir_s2_arch import DiffIRS2
from DiffIR.inference_pipeline import main as inference_main
from DiffIR.losses import build_loss
from DiffIR.models import build_model
from DiffIR.models.diffir_s2_model import DiffIRS2Model, restore_ldr_only
from DiffIR.train_pipeline_hdr import train_pipeline
from DiffIR.utils.checkpoint import CheckpointError, load_file
from DiffIR.utils.hdr_io import read_hdr, read_ldr
from DiffIR.config.loading import finalize_options, load_yaml
from DiffIR.utils.errors import OptionError

from conftest import REFERENCE, ROOT
from helpers import TINY_NET as TINY_S1
from helpers import TINY_S2, hdr_datasets, run_entry, save_tiny_s2, sine_images, write_yaml

GOLDEN = Path(__file__).parent / "data" / "diffir_s2_golden.pt"

OFFICIAL_S2 = dict(
    n_encoder_res=5, inp_channels=3, out_channels=3, dim=48, num_blocks=[3, 5, 6, 6], num_refinement_blocks=4,
    heads=[1, 2, 4, 8], ffn_expansion_factor=2, bias=False, LayerNorm_type="WithBias", n_denoise_res=1,
    linear_start=0.1, linear_end=0.99, timesteps=4,
)
# sha256 of the "key AxBxC" lines of diffir_s2_state_dict.json, so the layout check runs without the reference
S2_LAYOUT_SHA256 = "c7b9df0ab4c0cd6fda58418438a018689542b1c45afed089788e3f6e69f10ade"
# schedule of the official config (diffir_architecture.md §3.4), t = 0..3
SCHEDULE = {
    "betas": [0.100000, 0.294286, 0.590952, 0.990000],
    "alphas_cumprod": [0.900000, 0.635143, 0.259804, 0.002598],
    "sqrt_alphas_cumprod": [0.948683, 0.796959, 0.509709, 0.050971],
    "sqrt_one_minus_alphas_cumprod": [0.316228, 0.604034, 0.860347, 0.998700],
    "posterior_mean_coef1": [1.000000, 0.765187, 0.636270, 0.505927],
    "posterior_mean_coef2": [0.000000, 0.230246, 0.315256, 0.074212],
    "posterior_variance": [0.0, 0.080658, 0.291292, 0.734703],
}
# config of the golden file (tests/data/README.md)
GOLDEN_CFG = dict(OFFICIAL_S2, n_encoder_res=1, dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1,
                  identity_init=False)  # the official initialisation: outputs depend on the prior from the start

RECIPE = {"encoder_iter": 3, "lr_encoder": 1e-3, "lr_sr": 2e-4, "gamma_encoder": 0.5, "gamma_sr": 0.5,
          "lr_decay_encoder": 2, "lr_decay_sr": 2}
KD = {"type": "KDLoss", "loss_weight": 1, "temperature": 0.15}
PIX = {"type": "L1Loss", "loss_weight": 1.0, "reduction": "mean"}


def _layout_digest(items) -> str:
    return hashlib.sha256("\n".join(f"{k} {'x'.join(map(str, s))}" for k, s in items).encode()).hexdigest()


# ----------------------------------------------------------------------------------------------------------------
# Network: checkpoint layout, official outputs
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def full_net() -> DiffIRS2:
    torch.manual_seed(0)
    return build_network({"type": "DiffIRS2", **OFFICIAL_S2})


def test_state_dict_matches_official_manifest(full_net: DiffIRS2) -> None:
    sd = full_net.state_dict()
    layout = [(k, tuple(v.shape)) for k, v in sd.items()]
    manifest = REFERENCE / "diffir_s2_state_dict.json"
    if manifest.is_file():
        m = json.loads(manifest.read_text())
        assert {k: v for k, v in m["network_g"].items() if k != "type"} == OFFICIAL_S2
        assert layout == [(e["key"], tuple(e["shape"])) for e in m["state_dict"]]  # keys, order and shapes
        assert sorted(k for k in sd if k.startswith("diffusion.") and "." not in k[10:]) == sorted(m["buffer_keys"])
        for a, b in m["aliased_keys"]:
            assert sd[a].data_ptr() == sd[b].data_ptr(), (a, b)  # the same tensor under two names
    assert _layout_digest(layout) == S2_LAYOUT_SHA256
    assert len(sd) == 588 and sum(v.numel() for v in sd.values()) == 28_154_542
    assert sum(p.numel() for p in full_net.parameters()) == 26_911_934
    assert [sum(p.numel() for p in getattr(full_net, m).parameters()) for m in ("G", "condition", "denoise")] == \
        [25_669_374, 1_045_184, 197_376]
    for name, values in SCHEDULE.items():
        assert torch.allclose(getattr(full_net.diffusion, name), torch.tensor(values), atol=2e-6), name


def test_official_checkpoint_loads_strictly(full_net: DiffIRS2, tmp_path: Path) -> None:
    """An official-style 588-entry BasicSR container (aliases and buffers included) loads strictly."""
    gen = torch.Generator().manual_seed(1)
    sd = full_net.state_dict()
    params = {k: (v.clone() if k.startswith("diffusion.") and "." not in k[10:] else torch.randn(v.shape, generator=gen))
              for k, v in sd.items() if not k.startswith(("diffusion.model.", "diffusion.condition."))}
    for k in sd:  # the official file holds the same values under both names
        if k.startswith("diffusion.model."):
            params[k] = params["denoise." + k[len("diffusion.model."):]]
        elif k.startswith("diffusion.condition."):
            params[k] = params["condition." + k[len("diffusion.condition."):]]
    path = tmp_path / "net_g_latest.pth"
    torch.save({"params": params, "params_ema": params}, path)
    loaded = torch.load(path, map_location="cpu", weights_only=True)["params_ema"]
    full_net.load_state_dict(loaded, strict=True)
    for key in ("G.latent.5.attn.temperature", "condition.E.0.weight", "denoise.resmlp.2.resmlp.0.bias"):
        assert torch.equal(full_net.state_dict()[key], params[key])
    assert full_net.diffusion.model is full_net.denoise and full_net.diffusion.condition is full_net.condition


def test_golden_equivalence_with_official_code() -> None:
    """Outputs of the official S2_arch.py + ddpm.py (tests/data/README.md): eval and training mode, same RNG use."""
    g = torch.load(GOLDEN, map_location="cpu", weights_only=True)
    sd = torch.load(io.BytesIO(lzma.decompress(g["state_dict_pt_xz"].numpy().tobytes())), weights_only=True)
    net = DiffIRS2(**GOLDEN_CFG)
    for k, v in net.state_dict().items():  # the schedule buffers are computed exactly as the official code does
        if k.startswith("diffusion.") and v.dim() == 1 and v.numel() == 4:
            assert torch.equal(v, sd[k]), k
    net.load_state_dict(sd, strict=True)
    assert list(net.state_dict()) == list(sd)

    net.eval()
    with torch.no_grad():
        torch.manual_seed(int(g["seed_eval"]))
        out = net(g["lq"])
        probe = torch.rand(8)  # the RNG stream after the forward: the official code draws 5 times
        torch.manual_seed(int(g["seed_eval"]))
        ipr = net(g["lq"], prior_only=True)
        out_2nd = net(g["lq"])
    assert (out - g["out_eval"]).abs().max() < 1e-5
    assert torch.equal(probe, g["probe_eval"])
    torch.testing.assert_close(ipr, g["ipr_eval"], rtol=1e-5, atol=1e-6)  # kernels differ across CPU kinds
    assert (out_2nd - g["out_eval_2nd"]).abs().max() < 1e-5

    net.train()
    torch.manual_seed(int(g["seed_train"]))
    out_t, iprs = net(g["lq"], g["ipr_s1"])
    probe_t = torch.rand(8)
    assert len(iprs) == 4
    torch.testing.assert_close(torch.stack(iprs), g["ipr_train"], rtol=1e-5, atol=1e-6)
    assert (out_t - g["out_train"]).abs().max() < 1e-5 and torch.equal(probe_t, g["probe_train"])
    loss = out_t.abs().mean() + iprs[-1].abs().mean() + 0.1 * iprs[0].square().mean()
    loss.backward()
    stats = torch.stack([torch.stack([p.grad.sum(), p.grad.abs().sum()]) for _, p in net.named_parameters()])
    ref = g["grad_stats"]
    assert ((stats - ref).abs() <= 1e-4 * ref[:, 1:].abs() + 1e-7).all()


def test_modes_errors_and_dgain_extension() -> None:
    torch.manual_seed(0)
    net = DiffIRS2(**GOLDEN_CFG)
    lq, _ = sine_images(2, 16, 24)
    with pytest.raises(ValueError, match="stage-1 IPR"):
        net(lq)  # training mode needs ipr_s1
    with pytest.raises(ValueError, match=r"\(2, 256\)"):
        net(lq, torch.zeros(2, 8))
    with pytest.raises(ValueError, match="multiples of 8"):
        net.eval()(lq[..., :20])
    with torch.no_grad():
        a = restore_ldr_only(net, lq[..., :20], seed=3)
        b = restore_ldr_only(net, lq[..., :20], seed=3)
        c = restore_ldr_only(net, lq[..., :20], seed=4)
    assert a.shape == (2, 3, 16, 20) and torch.equal(a, b) and not torch.equal(a, c)  # padded; seeded noise

    cond_net = DiffIRS2(**GOLDEN_CFG, dgain_cond=True).eval()
    extra = [k for k in cond_net.state_dict() if k not in net.state_dict()]
    assert extra and all(k.startswith("cond_embed.") for k in extra)
    cond_net.load_state_dict(net.state_dict(), strict=False)
    cond = torch.tensor([[4.0, 2.2], [1.5, 1.8]])
    with torch.no_grad():
        torch.manual_seed(0)
        ref = net.eval()(lq)
        torch.manual_seed(0)
        assert torch.allclose(cond_net(lq, cond=cond), ref, atol=1e-6)  # zero-initialised offset
    with pytest.raises(ValueError, match="dgain_cond"):
        cond_net(lq)


def test_kd_loss_matches_official_formula() -> None:
    kd = build_loss(KD, "train:kd_opt")
    gen = torch.Generator().manual_seed(0)
    teacher, student = torch.randn(3, 256, generator=gen), torch.randn(3, 256, generator=gen).requires_grad_()
    kl, l1 = kd([teacher], [student])
    t = 0.15
    ref_kl = (F.softmax(teacher / t, 1) * (F.log_softmax(teacher / t, 1) - F.log_softmax(student / t, 1))).sum() / 3
    assert torch.allclose(kl, ref_kl, rtol=1e-5) and torch.allclose(l1, (student - teacher).abs().mean())
    kl2, l12 = kd(teacher, student)  # tensors work as well as lists
    assert torch.equal(kl, kl2) and torch.equal(l1, l12)
    teacher.requires_grad_()
    kd(teacher, student)[1].backward()
    assert teacher.grad is None and student.grad is not None  # the teacher is detached
    with pytest.raises(ValueError, match="equal shape"):
        kd(teacher, student[:, :8])


# ----------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s1_checkpoint(tmp_path_factory) -> Path:
    """A real stage-1 checkpoint: 4 iterations of the tiny stage-1 network through the HDR pipeline."""
    root = tmp_path_factory.mktemp("s1")
    opt = {"name": "s1", "model_type": "DiffIRS1Model", "num_gpu": 0, "manual_seed": 0,
           "datasets": hdr_datasets(root.parent / "data"), "network_g": dict(TINY_S1),
           "train": {"ema_decay": 0.5, "optim_g": {"type": "Adam", "lr": 1e-3}, "total_iter": 4, "pixel_opt": PIX},
           "logger": {"print_freq": 10, "save_checkpoint_freq": 100, "use_tb_logger": False}}
    train_pipeline(str(root), ["-opt", str(write_yaml(root / "s1.yml", opt))])
    return root / "experiments" / "s1" / "models" / "net_g_latest.pth"


def _s2_options(root: Path, s1: Path, name: str, total_iter: int = 6, **path_extra) -> Path:
    opt = {"name": name, "model_type": "DiffIRS2Model", "scale": 1, "num_gpu": "auto", "manual_seed": 0,
           "datasets": hdr_datasets(s1.parents[3] / "data"), "network_g": dict(TINY_S2), "network_S1": dict(TINY_S1),
           "path": {"pretrain_network_S1": str(s1), "param_key_g": "params_ema", "strict_load_g": False,
                    "ignore_resume_networks": "network_S1", **path_extra},
           "train": {"ema_decay": 0.9, "optim_g": {"type": "Adam", "lr": 2e-4, "betas": [0.9, 0.99]},
                     "scheduler": {"type": "MultiStepLR", "milestones": [300000], "gamma": 0.5},
                     "total_iter": total_iter, "warmup_iter": -1, **RECIPE, "pixel_opt": PIX, "kd_opt": KD},
           "val": {"val_freq": 3, "window_size": 8, "save_img": False,
                   "metrics": {"psnr": {"type": "calculate_psnr", "crop_border": 0, "test_y_channel": False}}},
           "logger": {"print_freq": 1, "save_checkpoint_freq": 2, "use_tb_logger": False, "language": "en"}}
    return write_yaml(root / f"{name}.yml", opt)


def test_s2_training_run_from_real_s1_checkpoint_and_resume(s1_checkpoint: Path, tmp_path: Path) -> None:
    yml = _s2_options(tmp_path, s1_checkpoint, "s2")
    out = train_pipeline(str(tmp_path), ["-opt", str(yml)])
    exp = tmp_path / "experiments" / "s2"
    s1 = load_file(str(s1_checkpoint))["params_ema"]
    ck2 = load_file(str(exp / "models" / "net_g_2.pth"))
    assert set(ck2) == {"params", "params_ema", "ema", "network"}
    params = ck2["params"]
    assert {"diffusion.betas", "diffusion.model.resmlp.0.weight", "condition.E.0.weight"} <= set(params)
    # iterations 1-2 trained only the prior: the DIRformer is still the teacher's, the prior branch moved
    g_keys = [k for k in params if k.startswith("G.")]
    assert g_keys and all(torch.equal(params[k], s1[k]) for k in g_keys)
    latest = load_file(str(exp / "models" / "net_g_latest.pth"))["params"]
    assert not torch.equal(latest["G.output.weight"], s1["G.output.weight"])  # phase B trains everything
    state = load_file(str(exp / "training_states" / "6.state"))
    assert len(state["optimizers"]) == 2  # [optimizer_g (all), optimizer_e (prior)]
    log = open(sorted(glob.glob(str(exp / "train_*.log")))[-1], encoding="utf-8").read()
    assert "l_kd_3" in log and "l_abs_3" in log and "l_pix" in log and "lr:(1.000e-03)" in log
    assert out["results"]["V"]["psnr"] > 0 and out["baseline"]["V"]["psnr"] > 0
    grid = read_ldr(str(exp / "visualization" / "V" / "preview_6.png"))  # validation previews: 2 images x 4 panels
    assert grid.shape == (2 * 36, 4 * 36, 3)

    # resume: the student comes from its own checkpoint, the teacher still from pretrain_network_S1
    out = train_pipeline(str(tmp_path), ["-opt", str(yml), "--auto_resume", "--force_yml", "train:total_iter=7"])
    assert out["iter"] == 7
    log = open(sorted(glob.glob(str(exp / "train_*.log")))[-1], encoding="utf-8").read()
    assert f"Stage-1 teacher loaded from {s1_checkpoint}" in log and "net_g_6.pth [params]" in log


def _model_opt(s1: Path, tmp: Path, dist_on: bool = False, **train_extra) -> Dict[str, Any]:
    return {"name": "m", "model_type": "DiffIRS2Model", "num_gpu": 0, "is_train": True, "dist": dist_on,
            "manual_seed": 0, "network_g": dict(TINY_S2), "network_S1": dict(TINY_S1),
            "path": {"pretrain_network_S1": str(s1), "models": str(tmp), "training_states": str(tmp)},
            "train": {"ema_decay": 0.9, "optim_g": {"type": "Adam", "lr": 2e-4}, "total_iter": 10, **RECIPE,
                      "pixel_opt": PIX, "kd_opt": KD, **train_extra}}


def _batch(n: int = 2, seed: int = 7) -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"lq": torch.rand(n, 3, 16, 16, generator=g), "gt": torch.rand(n, 3, 16, 16, generator=g),
            "dgain": torch.linspace(2.0, 3.0, n), "gamma": torch.linspace(2.2, 1.8, n)}


def test_kd_loss_decreases_in_the_prior_phase(s1_checkpoint: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(_model_opt(s1_checkpoint, tmp_path, encoder_iter=100, lr_decay_encoder=100, warmup_iter=4))
    assert isinstance(model, DiffIRS2Model) and model.schedulers == []
    model.feed_data(_batch())
    g_before = model.net_g.G.output.weight.detach().clone()
    torch.manual_seed(1)
    losses = []
    for it in range(1, 9):
        model.update_learning_rate(it, warmup_iter=4)  # the recipe overrides BasicSR's warm-up (official)
        model.optimize_parameters(it)
        losses.append(model.log_dict["l_abs_3"])
    assert losses[-1] < 0.7 * losses[0], losses
    assert torch.equal(model.net_g.G.output.weight, g_before)  # only the prior branch learns in phase A
    assert model.get_current_learning_rate() == [1e-3] and model.output is None
    assert "gt" not in model.get_current_visuals()  # no training preview without a restored image
    model.optimize_parameters(100)  # phase B: the whole network, lr_sr
    assert not torch.equal(model.net_g.G.output.weight, g_before)
    assert model.get_current_learning_rate() == [2e-4] and set(model.log_dict) == {"l_pix", "l_kd_3", "l_abs_3"}


def test_option_errors_before_training(s1_checkpoint: Path, tmp_path: Path) -> None:
    opt = _model_opt(s1_checkpoint, tmp_path)
    del opt["train"]["lr_sr"], opt["train"]["encoder_iter"]
    with pytest.raises(OptionError, match="encoder_iter, lr_sr"):
        build_model(opt)
    opt = _model_opt(s1_checkpoint, tmp_path)
    del opt["path"]["pretrain_network_S1"]
    with pytest.raises(OptionError, match="pretrain_network_S1"):
        build_model(opt)
    opt = _model_opt(s1_checkpoint, tmp_path)
    del opt["train"]["kd_opt"]
    with pytest.raises(OptionError, match="kd_opt"):
        build_model(opt)
    s2_file = tmp_path / "s2.pth"
    torch.save({"params_ema": DiffIRS2(**{k: v for k, v in TINY_S2.items() if k != "type"}).state_dict()}, s2_file)
    opt = _model_opt(s2_file, tmp_path)
    with pytest.raises(OptionError, match="stage-2 checkpoint"):
        build_model(opt)
    opt = {"name": "t", "model_type": "DiffIRS2Model", "num_gpu": 0, "is_train": False, "network_g": dict(TINY_S2),
           "path": {"pretrain_network_g": str(s1_checkpoint), "param_key_g": "params_ema", "strict_load_g": False}}
    with pytest.raises(OptionError, match="(?i)stage 1 builds its prior from the HDR ground truth"):
        build_model(opt)  # testing stage-1 weights in a stage-2 model would run with a random prior


def test_stage1_checkpoint_is_read_once(s1_checkpoint: Path, tmp_path: Path, monkeypatch) -> None:
    """The official configuration names the stage-1 file for the student, its EMA copy and the teacher."""
    import DiffIR.models.checkpointing as checkpointing  # where the model reads network files

    reads = []
    real = checkpointing.load_file
    monkeypatch.setattr(checkpointing, "load_file", lambda path, *a: reads.append(path) or real(path, *a))
    opt = _model_opt(s1_checkpoint, tmp_path)
    opt["path"].update(pretrain_network_g=str(s1_checkpoint), param_key_g="params_ema", strict_load_g=False)
    model = build_model(opt)
    assert reads == [str(s1_checkpoint)]
    s1 = load_file(str(s1_checkpoint))["params_ema"]
    for net in (model.net_g, model.net_g_ema, model.net_g_S1):
        assert torch.equal(net.state_dict()["G.output.weight"], s1["G.output.weight"])
    model.load_network(model.net_g_ema, str(s1_checkpoint), False, "params_ema")  # after building: read again
    assert len(reads) == 2


def _ddp_worker(rank: int, world: int, port: int, s1: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        model = build_model(_model_opt(Path(s1), Path(out), dist_on=True, encoder_iter=2))
        model.feed_data(_batch(2, seed=10 + rank))  # different data on each rank
        model.optimize_parameters(1)  # phase A: bare network, gradients averaged by hand
        model.optimize_parameters(2)  # phase B: through DDP
        torch.save(model.get_bare_model(model.net_g).state_dict(), os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_phase_training_under_ddp_keeps_ranks_in_sync(s1_checkpoint: Path, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, port, str(s1_checkpoint), str(tmp_path))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=180)
        assert p.exitcode == 0
    a, b = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    s1 = load_file(str(s1_checkpoint))["params_ema"]
    assert not torch.equal(a["G.output.weight"], s1["G.output.weight"])
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ----------------------------------------------------------------------------------------------------------------
# Option files
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["train_DiffIRs2_hdr.yml", "test_DiffIRs2_hdr.yml", "demo_DiffIRs2_hdr.yml"])
def test_option_files_are_accepted(name: str) -> None:
    opt = load_yaml(str(ROOT / "options" / name))
    finalize_options(opt, str(ROOT), is_train=name.startswith(("train", "demo")), file=name)
    assert opt["model_type"] == "DiffIRS2Model" and opt["network_g"]["type"] == "DiffIRS2"
    assert opt["network_S1"]["type"] == "DiffIRS1"
    s2 = {k: v for k, v in opt["network_g"].items() if k not in ("type", "n_denoise_res", "linear_start",
                                                                   "linear_end", "timesteps")}
    assert s2 == {k: v for k, v in opt["network_S1"].items() if k != "type"}  # same DIRformer as the teacher


def test_official_stage2_option_files_parse(reference_dir: Path) -> None:
    for name in ("train_DiffIRS2.yml", "test_DiffIRS2.yml"):
        opt = load_yaml(str(reference_dir / "origin_options" / name))
        finalize_options(opt, str(ROOT), is_train=name.startswith("train"), file=name)


def test_test_options_build_an_ldr_only_model() -> None:
    opt = load_yaml(str(ROOT / "options" / "test_DiffIRs2_hdr.yml"))
    finalize_options(opt, str(ROOT), is_train=False, file="test_DiffIRs2_hdr.yml")
    opt["path"]["pretrain_network_g"] = None
    opt["num_gpu"] = 0
    model = build_model(opt)
    assert not type(model).needs_gt_for_inference and not hasattr(model, "net_g_S1")
    lq, _ = sine_images(1, 16, 16)
    model.feed_data({"lq": lq, "dgain": torch.tensor([2.0]), "gamma": torch.tensor([2.2])})  # no GT
    model.test()
    assert model.output.shape == lq.shape


# ----------------------------------------------------------------------------------------------------------------
# LDR-only inference CLI
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ldr_folder(tmp_path_factory) -> Path:
    from DiffIR.data.synthetic_hdr import generate_dataset

    root = tmp_path_factory.mktemp("ldr")
    generate_dataset(root / "jpg", root / "hdr", root / "dgain", num_images=2, size=(36, 44), seed=5)
    generate_dataset(root / "big" / "jpg", root / "big" / "hdr", root / "big" / "dgain", num_images=1, size=80, seed=6)
    return root


def _tiny_s2_files(tmp: Path) -> Path:
    return save_tiny_s2(tmp, hdr_max=1000, tone_curve="log")


def test_inference_writes_readable_hdr_files(ldr_folder: Path, tmp_path: Path) -> None:
    ckpt = _tiny_s2_files(tmp_path)
    args = ["--input", str(ldr_folder / "jpg"), "--dgain", str(ldr_folder / "dgain"), "--model", str(ckpt),
            "--opt", str(tmp_path / "net.yml"), "--output", str(tmp_path / "out")]
    written = inference_main(str(ROOT), args)
    assert [Path(p).name for p in written] == ["im_000001.hdr", "im_000002.hdr"]
    for p in written:
        img = read_hdr(p)
        assert img.shape == (36, 44, 3) and np.isfinite(img).all() and img.min() >= 0 and img.max() <= 1000.5
    exr = inference_main(str(ROOT), args[:-1] + [str(tmp_path / "exr"), "--format", "exr"])
    assert read_hdr(exr[0]).shape == (36, 44, 3)

    # large images go through tiles under one whole-image prior; a tile covering the image = whole-image inference
    big = ["--input", str(ldr_folder / "big" / "jpg"), "--dgain", str(ldr_folder / "big" / "dgain"),
           "--model", str(ckpt), "--opt", str(tmp_path / "net.yml"), "--format", "exr"]
    whole = read_hdr(inference_main(str(ROOT), big + ["--output", str(tmp_path / "w"), "--tile", "0"])[0])
    same = read_hdr(inference_main(str(ROOT), big + ["--output", str(tmp_path / "s"), "--tile", "80"])[0])
    tiled = read_hdr(inference_main(str(ROOT), big + ["--output", str(tmp_path / "t"), "--tile", "32",
                                                      "--tile_overlap", "8"])[0])
    assert np.array_equal(whole, same) and tiled.shape == whole.shape == (80, 80, 3)
    assert np.isfinite(tiled).all() and not np.array_equal(tiled, whole)


@pytest.mark.slow
def test_inference_errors_name_the_problem(ldr_folder: Path, tmp_path: Path, s1_checkpoint: Path) -> None:
    ckpt = _tiny_s2_files(tmp_path)
    base = ["--input", str(ldr_folder / "jpg"), "--dgain", str(ldr_folder / "dgain"), "--output", str(tmp_path / "o")]
    with pytest.raises(OptionError, match="(?i)stage 1 builds its prior from the HDR ground truth.*Train stage 2"):
        inference_main(str(ROOT), base + ["--model", str(s1_checkpoint)])
    empty = tmp_path / "nodgain"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="im_000001.txt"):
        inference_main(str(ROOT), base[:2] + ["--dgain", str(empty)] + base[4:] + ["--model", str(ckpt)])
    bad = tmp_path / "baddgain"
    bad.mkdir()
    (bad / "im_000001.txt").write_text("dgain: 2.0\ngamma: 2.2\n")
    (bad / "im_000002.txt").write_text("dgain: abc\ngamma: 2.2\n")
    with pytest.raises(ValueError, match="im_000002.txt.*dgain"):
        inference_main(str(ROOT), base[:2] + ["--dgain", str(bad)] + base[4:] + ["--model", str(ckpt), "--opt",
                                                                                 str(tmp_path / "net.yml")])
    wrong = write_yaml(tmp_path / "wrong.yml", {"network_g": dict(TINY_S2, dim=16)})
    with pytest.raises(CheckpointError, match="does not fit"):
        inference_main(str(ROOT), base + ["--model", str(ckpt), "--opt", str(wrong)])
    assert not (tmp_path / "o").exists()  # nothing written when the inputs are wrong

    proc = run_entry(tmp_path, "inference_hdr.py", *base, "--model", str(s1_checkpoint))
    assert proc.returncode == 2 and "stage 2" in proc.stderr and "Traceback" not in proc.stderr
