"""What several test files share: the tiny networks, small option files, synthetic data folders, entry-script runs.

Plain constants and functions (the fixtures are in conftest.py). Everything that writes takes a folder, which the
tests give under tmp_path: no test writes into the repository.
"""
import glob
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Sequence, Tuple

import numpy as np
import torch
import yaml

from conftest import ROOT

# the smallest DiffIRS1 that runs every code path: one block per level, 8 channels
TINY_NET = {"type": "DiffIRS1", "n_encoder_res": 1, "inp_channels": 3, "out_channels": 3, "dim": 8,
            "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1, "heads": [1, 2, 4, 8],
            "ffn_expansion_factor": 2, "bias": False, "LayerNorm_type": "WithBias"}
# its stage-2 counterpart, with the official 4-step schedule (linear_start/linear_end of the official config)
TINY_S2 = dict(TINY_NET, type="DiffIRS2", n_denoise_res=1, linear_start=0.1, linear_end=0.99, timesteps=4)
PSNR = {"psnr": {"type": "calculate_psnr", "crop_border": 0, "test_y_channel": False}}


def write_yaml(path: Path, opt: Dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(opt, allow_unicode=True))
    return path


# ------------------------------------------------------------------ option files
def hdr_datasets(data: Path) -> Dict[str, Any]:
    """A train set (4 synthetic 48px images, 32px crops, batch 2) and a val set (2 images of 36px) under ``data``."""
    return {
        "train": {"name": "T", "type": "LDR_HDR_PairedDataset", "dataroot_gt": str(data / "tr/hdr"),
                  "dataroot_lq": str(data / "tr/jpg"), "dataroot_dgain": str(data / "tr/dgain_info"),
                  "synthetic": {"num_images": 4, "size": 48, "seed": 3}, "io_backend": {"type": "disk"},
                  "geometric_augs": True, "num_worker_per_gpu": 0, "batch_size_per_gpu": 2, "gt_size": 32,
                  "use_shuffle": True, "dataset_enlarge_ratio": 1},
        "val": {"name": "V", "type": "LDR_HDR_PairedDataset", "dataroot_gt": str(data / "va/hdr"),
                "dataroot_lq": str(data / "va/jpg"), "dataroot_dgain": str(data / "va/dgain_info"),
                "synthetic": {"num_images": 2, "size": 36, "seed": 4}, "io_backend": {"type": "disk"}},
    }


def train_options(tmp_path: Path, name: str = "tiny", total_iter: int = 6, **extra_train: Any) -> Path:
    """``tmp_path/NAME.yml``: a full HDR training run of TINY_NET on synthetic data in ``tmp_path/data``, with
    validation and checkpoints every 3 iterations and TensorBoard on."""
    opt = {
        "name": name, "model_type": "DiffIRS1Model", "scale": 1, "num_gpu": "auto", "manual_seed": 0,
        "datasets": hdr_datasets(tmp_path / "data"),
        "network_g": dict(TINY_NET),
        "path": {"pretrain_network_g": None, "param_key_g": "params_ema", "strict_load_g": True},
        "train": {"ema_decay": 0.9, "optim_g": {"type": "Adam", "lr": 1e-3, "betas": [0.9, 0.99]},
                  "scheduler": {"type": "CosineAnnealingWarmupRestarts", "first_cycle_steps": 10, "cycle_mult": 1.0,
                                "max_lr": 1e-3, "min_lr": 1e-5, "warmup_steps": 2, "gamma": 1.0},
                  "total_iter": total_iter, "warmup_iter": -1,
                  "pixel_opt": {"type": "L1Loss", "loss_weight": 1.0, "reduction": "mean"}, **extra_train},
        "val": {"val_freq": 3, "save_img": False, "metrics": PSNR},
        "logger": {"print_freq": 1, "save_checkpoint_freq": 3, "use_tb_logger": True, "tb_image_freq": 3},
    }
    return write_yaml(tmp_path / f"{name}.yml", opt)


def short_run_options(name: str, datasets: Dict[str, Any]) -> Dict[str, Any]:
    """Two iterations of TINY_NET on ``datasets``: for runs that should stop at the data checks."""
    return {"name": name, "model_type": "DiffIRS1Model", "scale": 1, "num_gpu": 0, "manual_seed": 0,
            "datasets": datasets, "network_g": dict(TINY_NET),
            "path": {}, "train": {"optim_g": {"type": "Adam", "lr": 1e-3}, "total_iter": 2,
                                   "pixel_opt": {"type": "L1Loss", "loss_weight": 1.0}},
            "logger": {"print_freq": 1, "save_checkpoint_freq": 2, "use_tb_logger": False}}


def model_options(folder: Path, name: str, train: Dict[str, Any], dist: bool = False) -> Dict[str, Any]:
    """Options of an in-memory TINY_NET training model (no pipeline) that saves into ``folder``."""
    return {"name": name, "model_type": "DiffIRS1Model", "num_gpu": 0, "is_train": True, "dist": dist,
            "network_g": dict(TINY_NET), "path": {"models": str(folder), "training_states": str(folder)},
            "train": train}


def log_text(root: Path, name: str) -> str:
    """The newest training log of experiment ``name`` under ``root``."""
    logs = sorted(glob.glob(str(root / "experiments" / name / "train_*.log")))
    return open(logs[-1], encoding="utf-8").read()


# ------------------------------------------------------------------ data and checkpoints
def make_hdr_folder(root: Path, stems: Sequence[str] = ("a", "b", "c"), size: Tuple[int, int] = (40, 48),
                    gt_ext: str = ".exr", lq_ext: str = ".jpg", seed: int = 0, log10_range: Tuple[int, int] = (-2, 3),
                    dgain_of: Callable[[int], float] = lambda i: 1.0 + i, **dgain_text: Any) -> Path:
    """Deterministic AIM-ITM style folders ``root/{lq,gt,dg}``: random HDR images spanning ``log10_range`` decades,
    their LDR renderings (dgain ``dgain_of(i)``, gamma 2.2) and dgain files."""
    from DiffIR.data.dgain import format_dgain_text
    from DiffIR.utils.hdr_io import write_hdr, write_ldr
    from DiffIR.utils.tone_mapping import hdr_to_ldr

    rng = np.random.default_rng(seed)
    for sub in ("lq", "gt", "dg"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(stems):
        hdr = (10.0 ** rng.uniform(*log10_range, tuple(size) + (3,))).astype(np.float32)
        dgain, gamma = dgain_of(i), 2.2
        write_hdr(root / "gt" / f"{s}{gt_ext}", hdr)
        write_ldr(root / "lq" / f"{s}{lq_ext}", np.rint(hdr_to_ldr(hdr, dgain, gamma) * 255).astype(np.uint8))
        (root / "dg" / f"{s}.txt").write_text(format_dgain_text(dgain, gamma, **dgain_text))
    return root


def folder_set_options(root: Path, phase: str = "val", train_crop: int = 32, **kw: Any) -> Dict[str, Any]:
    """Dataset options over :func:`make_hdr_folder` (disk); a train set crops ``train_crop`` pixels, batch 2."""
    opt = {"name": "T", "type": "LDR_HDR_PairedDataset", "phase": phase, "dataroot_lq": str(root / "lq"),
           "dataroot_gt": str(root / "gt"), "dataroot_dgain": str(root / "dg"), "io_backend": {"type": "disk"}}
    if phase == "train":
        opt.update(gt_size=train_crop, geometric_augs=True, batch_size_per_gpu=2, num_worker_per_gpu=0)
    opt.update(kw)
    return opt


def build_lmdb(root: Path, out: Path, **kw: Any):
    """The three LMDBs of ``make_hdr_folder(root)`` in ``out``, quietly."""
    from DiffIR.data.lmdb_writer import create_lmdb_hdr

    return create_lmdb_hdr(str(root / "lq"), str(root / "gt"), str(root / "dg"), str(out), progress=False,
                           log=lambda m: None, **kw)


def save_tiny_s2(folder: Path, **train_data: Any) -> Path:
    """``folder/net_g_5.pth`` (a seeded TINY_S2 with the official initialisation, so its output is not its input)
    and its options ``folder/net.yml`` (``train_data`` as the train set's HDR options): what inference and test
    read."""
    from DiffIR.archs.diffir_s2_arch import DiffIRS2

    torch.manual_seed(0)
    net = DiffIRS2(**{k: v for k, v in TINY_S2.items() if k != "type"}, identity_init=False)
    ckpt = folder / "net_g_5.pth"
    torch.save({"params": net.state_dict(), "params_ema": net.state_dict()}, ckpt)
    write_yaml(folder / "net.yml", {"network_g": dict(TINY_S2), "datasets": {"train": train_data}})
    return ckpt


# ------------------------------------------------------------------ scripts and entry scripts
def import_scripts():
    """scripts/check_dataset.py and scripts/create_lmdb_hdr.py as modules."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import check_dataset
        import create_lmdb_hdr
    finally:
        sys.path.pop(0)
    return check_dataset, create_lmdb_hdr


def entry_script(tmp_path: Path, script: str = "train_hdr.py") -> Path:
    """The repository's entry script copied into ``tmp_path``: its root (experiments/, results/, tb_logger/) is the
    script's folder, so a run of the copy writes only there."""
    shutil.copy(ROOT / script, tmp_path / script)
    return tmp_path / script


def entry_env() -> Dict[str, str]:
    """The environment for an entry script copy: this checkout's DiffIR first on the path, one OpenMP thread."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


def run_entry(tmp_path: Path, script: str, *args: str, timeout: float = 120, **kw: Any):
    """Runs ``script`` (train_hdr.py, train.py, test.py, inference_hdr.py) as a user would, from its copy in
    ``tmp_path`` (see :func:`entry_script`), in ``tmp_path``."""
    return subprocess.run([sys.executable, str(entry_script(tmp_path, script)), *args], capture_output=True,
                          text=True, cwd=tmp_path, env=entry_env(), timeout=timeout, **kw)


def start_entry(tmp_path: Path, script: str, *args: str, **kw: Any) -> subprocess.Popen:
    """:func:`run_entry` without waiting: for tests that signal or kill the run."""
    return subprocess.Popen([sys.executable, str(entry_script(tmp_path, script)), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=entry_env(), **kw)


def cli_run_options(tmp_path: Path, name: str, total_iter: int, **logger: Any) -> Tuple[Path, Path]:
    """:func:`train_options` for an entry-script run (no TensorBoard, no validation, ``logger`` options added) and
    the experiment folder that the run of :func:`start_entry` writes."""
    yml = train_options(tmp_path, name=name, total_iter=total_iter)
    opt = yaml.safe_load(yml.read_text())
    opt["logger"].update(logger)
    opt["logger"]["use_tb_logger"] = False
    opt["val"]["val_freq"] = 1000
    return write_yaml(yml, opt), tmp_path / "experiments" / name


def wait_for_first_iteration(exp: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Returns once the run's log in ``exp`` shows a training iteration; fails if the run ends or times out first."""
    deadline = time.time() + timeout
    # the per-iteration line "[name..][epoch:  0, iter:       1, lr:(...)]"; the options dump ("total_iter: 6")
    # and the start message come before the loop, when a signal would still find no state to save
    line = re.compile(r"\]\[epoch:\s*\d+, iter:\s*[\d,]+, lr:")
    while not glob.glob(str(exp / "train_*.log")) or not line.search(open(glob.glob(str(exp / "train_*.log"))[0]).read()):
        assert time.time() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.2)


def sine_images(b: int = 2, h: int = 16, w: int = 16) -> Tuple[torch.Tensor, torch.Tensor]:
    """A deterministic (lq, gt) pair of smooth images in [0.1, 0.9], the same on every machine (no RNG)."""
    n = torch.arange(b * 3 * h * w, dtype=torch.float32).reshape(b, 3, h, w)
    return 0.5 + 0.4 * torch.sin(0.31 * n), 0.5 + 0.4 * torch.cos(0.17 * n)


def the_one_saved_iteration(exp: Path) -> int:
    """The iteration of the single training state a signalled run saved, checked to load with its network file."""
    from DiffIR.utils.checkpoint import list_training_states, load_file

    states = list_training_states(str(exp / "training_states"))
    assert len(states) == 1, states
    it = states[0][0]
    assert load_file(states[0][1])["iter"] == it and (exp / "models" / f"net_g_{it}.pth").is_file()
    return it
