"""Tests of the learning-rate schedulers (DiffIR.models.lr_scheduler, lr_restarts, lr_warmup_restarts) against the
stored reference values and BasicSR semantics."""
from __future__ import annotations

import copy
import io
import json
import math
import warnings
from pathlib import Path
from typing import Dict, List

import pytest
import torch

from DiffIR.models.lr_restarts import CosineAnnealingRestartCyclicLR, CosineAnnealingRestartLR, MultiStepRestartLR
from DiffIR.models.lr_scheduler import (
    SCHEDULERS,
    build_scheduler,
    get_scheduler,
    update_learning_rate,
    warmup_lrs,
)
from DiffIR.models.lr_warmup_restarts import CosineAnnealingWarmupRestarts
from DiffIR.utils.errors import OptionError

REF_PATH = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "cosine_warmup_restarts_reference.json"
REL = 1e-12

# step(epoch) is deprecated in torch and warns, and torch warns once per scheduler when it is stepped
# before the optimiser; neither concerns the values under test.
pytestmark = [
    pytest.mark.filterwarnings("ignore:The epoch parameter in `scheduler.step\\(\\)`:UserWarning"),
    pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before:UserWarning"),
]


@pytest.fixture(scope="module")
def ref() -> dict:
    if not REF_PATH.is_file():
        pytest.skip(f"reference file not found: {REF_PATH} (shared/reference must sit beside the repository)")
    return json.loads(REF_PATH.read_text())


def make_opt(*lrs: float) -> torch.optim.Optimizer:
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in lrs]
    return torch.optim.SGD(groups, lr=lrs[0])


def advance(opt: torch.optim.Optimizer, sched, n: int = 1) -> None:
    """n training steps: optimizer.step() (a no-op without grads) then scheduler.step()."""
    for _ in range(n):
        opt.step()
        sched.step()


def lr0(opt: torch.optim.Optimizer) -> float:
    return opt.param_groups[0]["lr"]


def close(a: float, b: float, rel: float = REL) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=0.0)


def cawr(ref: dict, *lrs: float, **override) -> tuple:
    args = dict(ref["inputs"]["args"], **override)
    opt = make_opt(*(lrs or (ref["inputs"]["optimizer_lr_at_construction"],)))
    return opt, CosineAnnealingWarmupRestarts(opt, **args)


def state_of(s: CosineAnnealingWarmupRestarts) -> tuple:
    return (s.cycle, s.step_in_cycle, s.cur_cycle_steps, s.max_lr, s.last_epoch)


# --------------------------------------------------------------------------- CosineAnnealingWarmupRestarts
def test_sequential_values_and_state(ref):
    opt, s = cawr(ref)
    wanted = ref["outputs_with_state"]
    for k in range(max(map(int, wanted)) + 1):
        if k:
            advance(opt, s)
        if str(k) in wanted:
            w = wanted[str(k)]
            assert close(lr0(opt), ref["outputs"][str(k)]), k
            assert close(lr0(opt), w["lr"]), k
            assert (s.cycle, s.step_in_cycle, s.cur_cycle_steps, s.last_epoch) == (
                w["cycle"], w["step_in_cycle"], w["cur_cycle_steps"], w["last_epoch"]), k
            assert isinstance(s.cur_cycle_steps, int)
            assert close(s.max_lr, w["max_lr"]), k
            assert s.get_last_lr() == [lr0(opt)]


def test_cycle_boundaries(ref):
    opt, s = cawr(ref)
    starts = {b["first_k"]: b for b in ref["cycle_boundaries"]}
    for k in range(max(starts) + 1):
        if k:
            advance(opt, s)
        if k in starts:
            b = starts[k]
            assert (s.cycle, s.step_in_cycle, s.cur_cycle_steps) == (b["cycle"], 0, b["length"])
            assert close(s.max_lr, b["peak_lr"])


def test_param_groups_follow_same_curve(ref):
    chk = ref["param_groups_check"]
    opt, s = cawr(ref, *chk["initial_lr_entries"])
    advance(opt, s, 20)
    got = [g["lr"] for g in opt.param_groups]
    assert all(close(a, b) for a, b in zip(got, chk["group_lrs_after_20_steps"]))
    assert [g["initial_lr"] for g in opt.param_groups] == chk["initial_lr_entries"]
    assert s.get_last_lr() == got
    assert s.base_lrs == [ref["inputs"]["args"]["min_lr"]] * 2


def test_resume_is_exact(ref):
    rc = ref["resume_check"]
    opt, s = cawr(ref)
    advance(opt, s, 105)
    buf = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "sched": s.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf)  # weights_only default: the state must be plain data

    opt2, s2 = cawr(ref)
    assert close(lr0(opt2), rc["lr_after_fresh_construction"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # unchanged arguments: no warning
        opt2.load_state_dict(ckpt["opt"])
        s2.load_state_dict(ckpt["sched"])
    assert close(lr0(opt2), rc["lr_after_loading_optimizer_and_scheduler"])
    assert s2.get_last_lr() == s.get_last_lr()
    assert state_of(s2) == state_of(s)
    for _ in range(105, 299):
        advance(opt, s)
        advance(opt2, s2)
        assert lr0(opt2) == lr0(opt)
        assert state_of(s2) == state_of(s)
    assert s2.last_epoch == 299


def test_resume_scheduler_only_sets_lr_immediately(ref):
    rc = ref["resume_check"]
    opt, s = cawr(ref)
    advance(opt, s, 105)
    sd = copy.deepcopy(s.state_dict())
    opt2, s2 = cawr(ref)
    s2.load_state_dict(sd)
    # the reference left the fresh optimiser at min_lr (rc["lr_if_only_scheduler_state_loaded_before_next_step"])
    assert close(lr0(opt2), rc["lr_after_loading_optimizer_and_scheduler"])
    advance(opt2, s2)
    assert close(lr0(opt2), rc["lr_if_only_scheduler_state_loaded_after_next_step"])


def test_changed_structural_args_are_applied_and_reported(ref):
    opt, s = cawr(ref)
    advance(opt, s, 105)
    sd = s.state_dict()
    opt2, s2 = cawr(ref, gamma=0.5, first_cycle_steps=200)
    with pytest.warns(UserWarning, match=r"load_state_dict") as rec:
        s2.load_state_dict(sd)
    msg = " ".join(str(w.message) for w in rec)
    assert "gamma 0.8 -> 0.5" in msg and "first_cycle_steps 100 -> 200" in msg
    assert "recomputed" in msg
    for name in ("cycle_mult", "max_lr", "min_lr", "warmup_steps"):
        assert name not in msg
    assert (s2.gamma, s2.first_cycle_steps) == (0.5, 200)
    # continues on the schedule the new arguments describe, from the checkpoint's step count
    opt3, s3 = cawr(ref, gamma=0.5, first_cycle_steps=200)
    advance(opt3, s3, 105)
    assert state_of(s2) == state_of(s3) == (0, 105, 200, ref["inputs"]["args"]["max_lr"], 105)
    assert lr0(opt2) == lr0(opt3)
    for _ in range(300):
        advance(opt2, s2)
        advance(opt3, s3)
        assert lr0(opt2) == lr0(opt3)
        assert state_of(s2) == state_of(s3)


def test_changed_value_args_keep_position(ref):
    opt, s = cawr(ref)
    advance(opt, s, 130)  # cycle 1, cosine part
    sd = s.state_dict()
    opt2, s2 = cawr(ref, max_lr=1e-3, min_lr=1e-6)
    with pytest.warns(UserWarning) as rec:
        s2.load_state_dict(sd)
    msg = " ".join(str(w.message) for w in rec)
    assert "max_lr 0.0002 -> 0.001" in msg and "min_lr 1e-07 -> 1e-06" in msg
    assert "recomputed" not in msg and "gamma" not in msg
    assert (s2.cycle, s2.step_in_cycle, s2.cur_cycle_steps, s2.last_epoch) == (1, 30, 145, 130)
    assert close(s2.max_lr, 1e-3 * 0.8)
    pos, length, w = 30, 145, 10
    expect = 1e-6 + (0.8e-3 - 1e-6) * (1 + math.cos(math.pi * (pos - w) / (length - w))) / 2
    assert close(lr0(opt2), expect)


def test_explicit_epoch_is_consistent_with_sequential(ref):
    seq = {}
    opt, s = cawr(ref)
    for k in range(251):
        if k:
            advance(opt, s)
        seq[k] = (lr0(opt), state_of(s))
    opt2, s2 = cawr(ref)
    for k in [0, 1, 5, 10, 50, 99, 100, 101, 110, 159, 160, 250, 244, 245, 17]:
        s2.step(k)
        assert (lr0(opt2), state_of(s2)) == seq[k], k
        assert isinstance(s2.cur_cycle_steps, int)
        if str(k) in ref["outputs"]:
            assert close(lr0(opt2), ref["outputs"][str(k)])
    # the reference's explicit path used float cycle lengths 150.0/225.0 and differs from k=159 on
    assert not close(seq[159][0], ref["explicit_epoch_path"]["values"]["159"]["lr"])


def test_explicit_epoch_backwards_float_and_negative(ref):
    opt, s = cawr(ref)
    s.step(150)
    s.step(20)
    assert (s.cycle, s.max_lr, s.step_in_cycle) == (0, ref["inputs"]["args"]["max_lr"], 20)
    s.step(5.0)
    assert s.last_epoch == 5 and isinstance(s.last_epoch, int)
    with pytest.raises(ValueError):
        s.step(5.5)
    with pytest.raises(ValueError):
        s.step(-1)


@pytest.mark.parametrize(
    "args",
    [
        dict(first_cycle_steps=7, cycle_mult=1.0, warmup_steps=2),
        dict(first_cycle_steps=5, cycle_mult=2.3, warmup_steps=0),
        dict(first_cycle_steps=40, cycle_mult=0.5, warmup_steps=3),
        dict(first_cycle_steps=40, cycle_mult=0.5, warmup_steps=0),
        dict(first_cycle_steps=13, cycle_mult=1.7, warmup_steps=12),
    ],
)
def test_position_formula_matches_stepping(args):
    opt = make_opt(0.1)
    s = CosineAnnealingWarmupRestarts(opt, max_lr=1.0, min_lr=0.01, gamma=0.9, **args)
    opt_e = make_opt(0.1)
    s_e = CosineAnnealingWarmupRestarts(opt_e, max_lr=1.0, min_lr=0.01, gamma=0.9, **args)
    for k in range(1, 400):
        advance(opt, s)
        s_e.step(k)
        assert state_of(s) == state_of(s_e), k
        assert lr0(opt) == lr0(opt_e)
        assert s.cur_cycle_steps >= 1
        assert math.isfinite(lr0(opt))
        if k in (3, 57, 398):
            opt_c = make_opt(0.1)  # constructor last_epoch=k-1 lands on step k (torch convention)
            s_c = CosineAnnealingWarmupRestarts(opt_c, max_lr=1.0, min_lr=0.01, gamma=0.9, last_epoch=k - 1, **args)
            assert state_of(s_c) == state_of(s) and lr0(opt_c) == lr0(opt)


def test_warmup_steps_zero_starts_at_peak(ref):
    opt, s = cawr(ref, warmup_steps=0)
    assert lr0(opt) == ref["inputs"]["args"]["max_lr"]  # reference quirk gave min_lr here
    advance(opt, s)
    assert close(lr0(opt), ref["verified_quirks"]["warmup_steps_0"]["lr_k1"])


def test_constructor_validation():
    opt = make_opt(0.1)
    # option mistakes (the scheduler section of a user's file): OptionError, which the CLI reports in one line
    with pytest.raises(OptionError):
        CosineAnnealingWarmupRestarts(opt, first_cycle_steps=10, warmup_steps=10)
    with pytest.raises(OptionError):
        CosineAnnealingWarmupRestarts(opt, first_cycle_steps=10, cycle_mult=0)
    with pytest.raises(TypeError) as info:
        CosineAnnealingWarmupRestarts(opt, first_cycle_steps=10.5)
    assert isinstance(info.value, OptionError)
    s = CosineAnnealingWarmupRestarts(opt, first_cycle_steps=5.0e4, warmup_steps=2.0e3)
    assert (s.first_cycle_steps, s.warmup_steps) == (50000, 2000)


# --------------------------------------------------------------------------- BasicSR warm-up interplay
def simulate_basicsr(sched_factory, optim_lr: float, warmup_iter: int, iters: List[int]) -> Dict[int, float]:
    """BasicSR loop: at iteration i, step() if i > 1, then warm-up overwrite if i < warmup_iter."""
    opt = make_opt(optim_lr)
    sched = sched_factory(opt)
    out = {}
    for i in range(1, max(iters) + 1):
        if i > 1:
            sched.step()  # (no optimizer.step(): nothing to optimise, keeps 300k iterations fast)
        if i < warmup_iter:
            initial = [g["initial_lr"] for g in opt.param_groups]
            for g, lr in zip(opt.param_groups, warmup_lrs(initial, i, warmup_iter)):
                g["lr"] = lr
        if i in iters:
            out[i] = lr0(opt)
    return out


def test_basicsr_small_example(ref):
    ex = ref["basicsr_interplay"]["small_example"]
    args = ref["inputs"]["args"]
    iters = sorted(map(int, ex))
    factory = lambda o: CosineAnnealingWarmupRestarts(o, **args)  # noqa: E731
    runs = {
        "scheduler_only": simulate_basicsr(factory, 2e-4, -1, iters),
        "with_warmup_iter_10": simulate_basicsr(factory, 2e-4, 10, iters),
        "with_warmup_iter_10_optim_lr_1e_4": simulate_basicsr(factory, 1e-4, 10, iters),
    }
    for i in iters:
        for key, got in runs.items():
            assert close(got[i], ex[str(i)][key]), (i, key)


def test_basicsr_fork_config(ref):
    fc = ref["basicsr_interplay"]["fork_config"]
    iters = sorted(map(int, fc["lr_at_iteration"]))
    factory = lambda o: CosineAnnealingWarmupRestarts(o, **fc["args"])  # noqa: E731
    with_w = simulate_basicsr(factory, fc["optim_lr"], fc["warmup_iter"], iters)
    for i in iters:
        want = fc["lr_at_iteration"][str(i)]
        assert close(with_w[i], want["basicsr_with_warmup_iter_2000"]), i
    # scheduler alone: iteration i has i - 1 steps; check via the (tested) explicit-epoch path
    opt = make_opt(fc["optim_lr"])
    s = factory(opt)
    for i in iters:
        s.step(i - 1)
        assert close(lr0(opt), fc["lr_at_iteration"][str(i)]["scheduler_only"]), i
    for b in fc["cycle_boundaries_k"]:
        s.step(b["first_k"])
        assert (s.cycle, s.step_in_cycle, s.cur_cycle_steps) == (b["cycle"], 0, b["length"])


def test_update_learning_rate_matches_manual_loop(ref):
    args = ref["inputs"]["args"]
    manual = simulate_basicsr(lambda o: CosineAnnealingWarmupRestarts(o, **args), 1e-4, 10, list(range(1, 40)))
    opt = make_opt(1e-4)
    s = CosineAnnealingWarmupRestarts(opt, **args)
    for i in range(1, 40):
        if i > 1:
            opt.step()
        update_learning_rate([opt], [s], i, warmup_iter=10)
        assert lr0(opt) == manual[i], i


def test_warmup_lrs_helper():
    assert warmup_lrs([2e-4, 1e-3], 1, 10) == [2e-4 / 10 * 1, 1e-3 / 10 * 1]
    assert close(warmup_lrs([2e-4], 1000, 2000)[0], 1e-4)
    for bad in [(0, 10), (10, 10), (11, 10), (1, -1), (1, 0)]:
        with pytest.raises(ValueError):
            warmup_lrs([2e-4], *bad)


# --------------------------------------------------------------------------- BasicSR schedulers
def basicsr_multistep_restart(base: float, milestones, gamma, restarts, weights, n: int) -> List[float]:
    """Oracle: BasicSR's chained MultiStepRestartLR get_lr, epochs 0..n."""
    counts: Dict[int, int] = {}
    for m in milestones:
        counts[m] = counts.get(m, 0) + 1
    lr, out = base, []
    for epoch in range(n + 1):
        if epoch in restarts:
            lr = base * weights[list(restarts).index(epoch)]
        elif epoch in counts:
            lr = lr * gamma ** counts[epoch]
        out.append(lr)
    return out


@pytest.mark.parametrize(
    "milestones,restarts,weights",
    [
        ([3, 6, 6, 12], [0, 10], [1, 0.5]),
        ([0, 4, 10], [10, 15], [0.3, 0.7]),
        ([300000], [0], [1]),
    ],
)
def test_multistep_restart_matches_basicsr(milestones, restarts, weights):
    gamma, n = 0.5, 25
    oracle = basicsr_multistep_restart(2e-4, milestones, gamma, restarts, weights, n)
    opt = make_opt(2e-4)
    s = MultiStepRestartLR(opt, milestones, gamma=gamma, restarts=restarts, restart_weights=weights)
    got = [lr0(opt)]
    for _ in range(n):
        advance(opt, s)
        got.append(lr0(opt))
    assert all(close(a, b) for a, b in zip(got, oracle)), (got, oracle)
    opt2 = make_opt(2e-4)
    s2 = MultiStepRestartLR(opt2, milestones, gamma=gamma, restarts=restarts, restart_weights=weights)
    for k in [7, 0, 13, 25, 10]:
        s2.step(k)
        assert close(lr0(opt2), oracle[k]), k
    with pytest.raises(ValueError):
        MultiStepRestartLR(make_opt(1.0), [1], restarts=[0, 5], restart_weights=[1])


def basicsr_cosine(base: float, periods, weights, eta_mins, epoch: int) -> float:
    """Oracle: BasicSR/Restormer closed form with the '<=' cycle search."""
    total = 0
    for i, p in enumerate(periods):
        if epoch <= total + p:
            return eta_mins[i] + weights[i] * 0.5 * (base - eta_mins[i]) * (1 + math.cos(math.pi * ((epoch - total) / p)))
        total += p
    raise AssertionError("past the end")


def test_cosine_annealing_restart_matches_basicsr():
    periods, weights, eta_min = [10, 10, 10, 10], [1, 0.5, 0.5, 0.5], 1e-7
    opt = make_opt(1.0, 0.1)
    s = CosineAnnealingRestartLR(opt, periods, restart_weights=weights, eta_min=eta_min)
    for k in range(0, 41):
        if k:
            advance(opt, s)
        for g, base in zip(opt.param_groups, (1.0, 0.1)):
            assert close(g["lr"], basicsr_cosine(base, periods, weights, [eta_min] * 4, k)), k
    assert close(s.get_last_lr()[0], eta_min)  # step 40 = end of the last cycle
    advance(opt, s, 5)  # past the end (TypeError in BasicSR): stays at the end value
    assert close(lr0(opt), eta_min)
    opt2 = make_opt(1.0, 0.1)
    s2 = CosineAnnealingRestartLR(opt2, periods, restart_weights=weights, eta_min=eta_min)
    assert lr0(opt2) == 1.0
    s2.step(10)
    assert close(lr0(opt2), eta_min)  # boundary step still belongs to cycle 0
    s2.step(11)
    assert close(lr0(opt2), basicsr_cosine(1.0, periods, weights, [eta_min] * 4, 11))
    with pytest.raises(ValueError):
        CosineAnnealingRestartLR(make_opt(1.0), [10, 10], restart_weights=[1])


def test_cyclic_official_config():
    periods, weights, eta_mins = [92000, 208000], [1, 1], [0.000285, 0.000001]
    opt = make_opt(2e-4)
    s = CosineAnnealingRestartCyclicLR(opt, periods, restart_weights=weights, eta_mins=eta_mins)
    assert close(lr0(opt), 2e-4)  # step 0
    s.step(46000)
    assert close(lr0(opt), (2e-4 + 2.85e-4) / 2)  # rises: midpoint of 2e-4 and 2.85e-4
    s.step(92000)
    assert close(lr0(opt), 2.85e-4)  # BasicSR '<=': the boundary step is the top of the rise
    s.step(92001)
    assert close(lr0(opt), 2e-4, rel=1e-9)  # restart one step later, then decay
    assert lr0(opt) < 2e-4
    s.step(92000 + 104000)
    assert close(lr0(opt), (2e-4 + 1e-6) / 2)
    s.step(300000)
    assert close(lr0(opt), 1e-6)
    for k in [1, 45999, 92000, 92001, 150000, 299999]:
        s.step(k)
        assert close(lr0(opt), basicsr_cosine(2e-4, periods, weights, eta_mins, k)), k


def test_cyclic_sequential_and_resume():
    periods, weights, eta_mins = [92, 208], [1, 0.5], [2.85e-4, 1e-6]
    opt = make_opt(2e-4)
    s = CosineAnnealingRestartCyclicLR(opt, periods, restart_weights=weights, eta_mins=eta_mins)
    traj = [lr0(opt)]
    for k in range(1, 301):
        advance(opt, s)
        traj.append(lr0(opt))
        assert close(lr0(opt), basicsr_cosine(2e-4, periods, weights, eta_mins, k)), k
    # resume at 150 via the base-class state_dict
    opt = make_opt(2e-4)
    s = CosineAnnealingRestartCyclicLR(opt, periods, restart_weights=weights, eta_mins=eta_mins)
    advance(opt, s, 150)
    osd, ssd = copy.deepcopy(opt.state_dict()), copy.deepcopy(s.state_dict())
    opt2 = make_opt(2e-4)
    s2 = CosineAnnealingRestartCyclicLR(opt2, periods, restart_weights=weights, eta_mins=eta_mins)
    opt2.load_state_dict(osd)
    s2.load_state_dict(ssd)
    assert lr0(opt2) == traj[150]
    for k in range(151, 301):
        advance(opt2, s2)
        assert lr0(opt2) == traj[k]
    with pytest.raises(ValueError):
        CosineAnnealingRestartCyclicLR(make_opt(1.0), [10, 10], restart_weights=[1, 1], eta_mins=[0])


# --------------------------------------------------------------------------- look-up
def test_lookup_by_type():
    assert SCHEDULERS["MultiStepLR"] is torch.optim.lr_scheduler.MultiStepLR
    assert SCHEDULERS["CosineAnnealingLR"] is torch.optim.lr_scheduler.CosineAnnealingLR
    for name, cls in [
        ("MultiStepRestartLR", MultiStepRestartLR),
        ("CosineAnnealingRestartLR", CosineAnnealingRestartLR),
        ("CosineAnnealingRestartCyclicLR", CosineAnnealingRestartCyclicLR),
        ("CosineAnnealingWarmupRestarts", CosineAnnealingWarmupRestarts),
    ]:
        assert get_scheduler(name) is cls
    with pytest.raises(KeyError, match="CosineAnnealingWarmupRestarts"):
        get_scheduler("CosineAnnealingWarmupRestart")
    opt = make_opt(2e-4)
    s = build_scheduler(opt, {"type": "MultiStepLR", "milestones": [3], "gamma": 0.5})
    assert isinstance(s, torch.optim.lr_scheduler.MultiStepLR)
    advance(opt, s, 3)
    assert close(lr0(opt), 1e-4)
    opt = make_opt(2e-4)
    build_scheduler(opt, {"type": "CosineAnnealingWarmupRestarts", "first_cycle_steps": 100, "max_lr": 2e-4,
                          "min_lr": 1e-7, "warmup_steps": 10})
    assert close(lr0(opt), 1e-7)
