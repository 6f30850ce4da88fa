"""Crash safety: SIGTERM saves, kill -9 mid-save or mid-run always resumes, divergence guard, pruning."""
import glob
import re
import signal
import subprocess
import sys

import pytest
import torch
import yaml

from DiffIR.models import build_model
from DiffIR.train_pipeline_hdr import train_pipeline
from DiffIR.utils.checkpoint import list_training_states, load_file
from DiffIR.utils.errors import OptionError, TrainingStopped

from helpers import (cli_run_options, entry_env, log_text, model_options, start_entry, the_one_saved_iteration,
                     train_options, wait_for_first_iteration)


@pytest.mark.slow
def test_sigterm_saves_state_and_exits_143(tmp_path):
    yml, exp = cli_run_options(tmp_path, "term", 10000, save_checkpoint_freq=10000, print_freq=1)
    proc = start_entry(tmp_path, "train_hdr.py", "-opt", str(yml))
    wait_for_first_iteration(exp, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    the_one_saved_iteration(exp)


# A run that kills itself (SIGKILL: what `kill -9` or the kernel's OOM killer does) at one point given by name:
# "net_g_4.pth" / "8.state" once that file's bytes are written but before it is renamed into place (a kill mid-save),
# "step:11" right after the step of iteration 11 (between two checkpoints). A point, not a moment: no sleep decides
# where the kill lands.
_KILL_AT = """if True:
    import contextlib, os, signal, sys
    import DiffIR.utils.checkpoint as checkpoint
    from DiffIR.cli_entry import train_hdr
    from DiffIR.models.diffir_s1_model import DiffIRS1Model

    AT = sys.argv[1]
    atomic_open, optimize = checkpoint.atomic_open, DiffIRS1Model.optimize_parameters

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    @contextlib.contextmanager
    def open_then_die(path, *args, **kw):
        with atomic_open(path, *args, **kw) as f:
            yield f
            if os.path.basename(path) == AT:
                f.flush()
                die()

    def step(self, current_iter):
        optimize(self, current_iter)
        if AT == f"step:{current_iter}":
            die()

    checkpoint.atomic_open, DiffIRS1Model.optimize_parameters = open_then_die, step
    sys.exit(train_hdr(sys.argv[2:], os.getcwd()))
"""


@pytest.mark.slow
def test_kill9_at_save_and_step_points_always_resumes(tmp_path):
    yml, exp = cli_run_options(tmp_path, "kill", 40, save_checkpoint_freq=2, print_freq=1, keep_last_n=3)
    resumed_from = None
    # (kill point, the training states left): a state is saved every 2 iterations, the newest 3 are kept
    for at, states_left in (("net_g_4.pth", [2]), ("8.state", [6, 4, 2]), ("step:11", [10, 8, 6])):
        proc = subprocess.run([sys.executable, "-c", _KILL_AT, at, "-opt", str(yml), "--auto_resume"],
                              capture_output=True, text=True, cwd=tmp_path, env=entry_env(), timeout=300)
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        if resumed_from is not None:  # from the newest complete checkpoint, the unfinished write removed
            log = proc.stdout + proc.stderr
            assert f"恢复: 第 {resumed_from} 次迭代" in log, log
            assert re.search(r"Removed \S+/\.tmp_\S+: the unfinished write", log), log
        states = list_training_states(str(exp / "training_states"))
        assert [it for it, _ in states] == states_left
        for _, path in states:  # whatever the kill interrupted, every kept state (and its network) is readable
            state = load_file(path)
            load_file(str(exp / "models" / f"net_g_{state['iter']}.pth"))
        resumed_from = states_left[0]
    proc = start_entry(tmp_path, "train_hdr.py", "-opt", str(yml), "--auto_resume")
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    assert f"恢复: 第 {resumed_from} 次迭代" in err
    assert load_file(str(exp / "training_states" / "40.state"))["iter"] == 40
    assert (exp / "models" / "net_g_latest.pth").is_file()
    assert len(list_training_states(str(exp / "training_states"))) == 3  # keep_last_n
    assert not glob.glob(str(exp / "**" / ".tmp_*"), recursive=True)


def _model(tmp_path, **train):
    return build_model(model_options(tmp_path, "nan", {"ema_decay": 0.5, "optim_g": {"type": "Adam", "lr": 1e-3},
                                                        "total_iter": 10, "pixel_opt": {"type": "L1Loss"}, **train}))


def test_nonfinite_loss_skips_steps_then_stops(tmp_path):
    model = _model(tmp_path, max_nonfinite_steps=3)
    before = {k: v.clone() for k, v in model.net_g.state_dict().items()}
    ema_before = {k: v.clone() for k, v in model.net_g_ema.state_dict().items()}
    bad = {"lq": torch.full((1, 3, 16, 16), float("nan")), "gt": torch.rand(1, 3, 16, 16)}
    for i in range(2):
        model.feed_data(bad)
        model.optimize_parameters(i + 1)
    for k, v in model.net_g.state_dict().items():
        assert torch.equal(v, before[k]), k
    for k, v in model.net_g_ema.state_dict().items():
        assert torch.equal(v, ema_before[k]), k
    good = {"lq": torch.rand(1, 3, 16, 16), "gt": torch.rand(1, 3, 16, 16)}
    model.feed_data(good)
    model.optimize_parameters(3)  # a finite loss resets the run of bad steps
    assert not torch.equal(model.net_g.state_dict()["G.output.weight"], before["G.output.weight"])
    with pytest.raises(TrainingStopped, match="max_nonfinite_steps"):
        for i in range(3):
            model.feed_data(bad)
            model.optimize_parameters(4 + i)


def test_grad_clip_bounds_the_gradient_norm(tmp_path):
    model = _model(tmp_path, grad_clip=1e-3)
    model.feed_data({"lq": torch.rand(2, 3, 16, 16), "gt": torch.rand(2, 3, 16, 16)})
    seen = {}
    orig = model.optimizer_g.step

    def spy(*a, **k):
        seen["norm"] = torch.norm(torch.stack([p.grad.norm() for p in model.net_g.parameters() if p.grad is not None]))
        return orig(*a, **k)

    model.optimizer_g.step = spy
    model.optimize_parameters(1)
    assert seen["norm"].item() <= 1e-3 * 1.001


def test_changed_schedule_on_resume_is_reported(tmp_path):
    yml = train_options(tmp_path, name="sched", total_iter=3)
    train_pipeline(str(tmp_path), ["-opt", str(yml)])
    train_pipeline(str(tmp_path), ["-opt", str(yml), "--auto_resume", "--force_yml", "train:total_iter=4",
                                   "train:scheduler:first_cycle_steps=20", "train:optim_g:lr=0.01"])
    log = log_text(tmp_path, "sched")
    assert "first_cycle_steps" in log and "train:scheduler" in log
    assert "train:optim_g:lr is 0.01" in log


def test_resume_is_exact(tmp_path):
    """k iterations + --auto_resume to 2k ends with the same weights as 2k uninterrupted (k mid-epoch)."""
    def run(name, argvs):
        yml = train_options(tmp_path, name=name, total_iter=6)
        opt = yaml.safe_load(yml.read_text())
        opt["datasets"]["train"]["synthetic"]["num_images"] = 5  # 2 iterations/epoch with a leftover sample
        opt["train"]["mixing_augs"] = {"mixup": True, "mixup_beta": 1.2, "use_identity": True}
        opt["logger"].update(save_checkpoint_freq=3, use_tb_logger=False)
        opt["val"]["val_freq"] = 1000
        yml.write_text(yaml.safe_dump(opt))
        for extra in argvs:
            train_pipeline(str(tmp_path), ["-opt", str(yml), *extra])
        return load_file(str(tmp_path / "experiments" / name / "models" / "net_g_latest.pth"))

    straight = run("straight", [[]])
    resumed = run("resumed", [["--force_yml", "train:total_iter=3"], ["--auto_resume"]])
    for key in ("params", "params_ema"):
        for k, v in straight[key].items():
            torch.testing.assert_close(resumed[key][k], v, rtol=0, atol=0, msg=f"{key}:{k}")


def test_resume_loads_its_own_checkpoint_and_leaves_the_options_alone(tmp_path):
    """The resumed networks come from net_g_ITER.pth (params and params_ema); path:pretrain_network_g is neither
    read nor replaced by that file in the dumped options."""
    yml = train_options(tmp_path, name="own", total_iter=2)
    opt = yaml.safe_load(yml.read_text())
    opt["logger"].update(save_checkpoint_freq=2, use_tb_logger=False)
    opt["val"]["val_freq"] = 1000
    yml.write_text(yaml.safe_dump(opt))
    train_pipeline(str(tmp_path), ["-opt", str(yml)])
    exp = tmp_path / "experiments" / "own"
    missing = str(tmp_path / "moved_away.pth")  # the run's starting weights, gone since: a resume does not need them
    opt["path"]["pretrain_network_g"] = missing
    yml.write_text(yaml.safe_dump(opt))
    train_pipeline(str(tmp_path), ["-opt", str(yml), "--auto_resume", "--force_yml", "train:total_iter=3"])
    log = log_text(tmp_path, "own")
    net = exp / "models" / "net_g_2.pth"
    assert f"from {net} [params] (strict=True)" in log and f"from {net} [params_ema] (strict=True)" in log
    assert f"从训练状态 {exp / 'training_states' / '2.state'} 恢复: 第 2 次迭代" in log
    dumped = yaml.safe_load((exp / "options_own.yml").read_text())["path"]
    assert dumped["pretrain_network_g"] == missing and dumped["param_key_g"] == "params_ema"


def test_resume_compares_the_options_the_state_recorded(tmp_path, records):
    """The state records network_*, train:optim_g, train:scheduler and train:total_iter: a change the run cannot
    continue under is refused, every other change is a warning (key: old -> new), a state at total_iter says that
    there is nothing to train, and a state of an earlier version (no record) is still resumed, with a note."""
    yml = train_options(tmp_path, name="opts", total_iter=3)
    train_pipeline(str(tmp_path), ["-opt", str(yml)])
    state = tmp_path / "experiments" / "opts" / "training_states" / "3.state"
    assert load_file(str(state))["options"]

    records.clear()
    assert train_pipeline(str(tmp_path), ["-opt", str(yml), "--auto_resume"])["iter"] == 3
    messages = [r.getMessage() for r in records]
    assert any(m.startswith(f"无需训练: 训练状态 {state} 已在第 3 次迭代, 而 train:total_iter 为 3. 要继续训练, 调大 "
                            "train:total_iter, 例如 --auto_resume --force_yml train:total_iter=6") for m in messages)
    assert not any("开始训练" in m for m in messages)

    for change, expected in (("train:scheduler:type=CosineAnnealingRestartLR",
                              "train:scheduler:type: CosineAnnealingWarmupRestarts -> CosineAnnealingRestartLR"),
                             ("network_g:dim=16", "network_g:dim: 8 -> 16"),
                             ("train:optim_g:type=SGD", "train:optim_g:type: Adam -> SGD")):
        with pytest.raises(OptionError, match=f"Cannot resume from {re.escape(str(state))}: .*{re.escape(expected)}"
                                              f".*path:pretrain_network_g: .*net_g_3.pth"):
            train_pipeline(str(tmp_path), ["-opt", str(yml), "--auto_resume", "--force_yml", change])

    records.clear()
    train_pipeline(str(tmp_path), ["-opt", str(yml), "--force_yml", f"path:resume_state={state}", "train:total_iter=4",
                                   "train:optim_g:lr=0.01", "train:scheduler:first_cycle_steps=20"])
    warnings = [r.getMessage() for r in records if r.levelname == "WARNING"]
    for change in ("train:total_iter: 3 -> 4", "train:optim_g:lr: 0.001 -> 0.01",
                   "train:scheduler:first_cycle_steps: 10 -> 20"):
        assert f"Resuming with a changed option {change} (the saved run -> these options)" in warnings, warnings

    old = load_file(str(state))
    del old["options"]  # what an earlier version wrote
    torch.save(old, state)
    records.clear()
    assert train_pipeline(str(tmp_path), ["-opt", str(yml), "--auto_resume", "--force_yml",
                                          "train:total_iter=4"])["iter"] == 4
    assert any(r.getMessage().startswith(f"The training state {state} records no options (saved by an earlier "
                                         "version)") for r in records)
