"""Learning-rate schedulers used by the DiffIR / DiffIR-HDR training options.

Classes (all subclasses of :class:`torch.optim.lr_scheduler.LRScheduler`, stepped once per
training iteration, so ``last_epoch`` counts scheduler steps):

* :class:`MultiStepRestartLR` - BasicSR multi-step decay with restarts.
* :class:`CosineAnnealingRestartLR` - BasicSR cosine annealing with restarts.
* :class:`CosineAnnealingRestartCyclicLR` - Restormer/DiffIR variant with one ``eta_min`` per cycle.
* :class:`CosineAnnealingWarmupRestarts` - cosine cycles with linear warm-up, growing cycle lengths
  and decaying peaks (the scheduler of the HDR fork, originally from
  katsura-jp/pytorch-cosine-annealing-with-warmup), re-implemented with working
  ``get_last_lr()``, exact ``state_dict()`` resume and a stateless ``step(epoch)``.

The three BasicSR schedulers compute the learning rate in closed form from ``last_epoch`` and
``base_lrs`` (the optimiser's ``initial_lr``), so their sequential values equal BasicSR's whenever
nothing else writes the optimiser's ``lr``, and the base-class ``state_dict()`` resume is exact.

Look-up by YAML ``type``: :data:`SCHEDULERS` maps names to classes and :func:`get_scheduler`
/ :func:`build_scheduler` resolve them. ``MultiStepLR`` and ``CosineAnnealingLR`` resolve to
torch's own classes (``TrueCosineAnnealingLR``, the Restormer/DiffIR name for torch's cosine, too).

Warm-up
-------
BasicSR's ``train.warmup_iter`` is applied by the model, not by a scheduler. In
``BaseModel.update_learning_rate(current_iter, warmup_iter)`` at training iteration ``i``
(1-based):

1. if ``i > 1`` every scheduler gets one ``step()`` (so at iteration ``i`` a scheduler has made
   ``i - 1`` steps and iteration 1 trains with the value set by the constructor);
2. then, if ``i < warmup_iter``, every param group's ``lr`` is overwritten with
   ``initial_lr / warmup_iter * i``, where ``initial_lr`` is the group's ``initial_lr`` entry, i.e.
   the optimiser lr (``train.optim_g.lr``) at scheduler construction - *not* the scheduler's
   ``max_lr``/``min_lr``.

During the first ``warmup_iter - 1`` iterations the overwrite therefore masks whatever the
scheduler set, including the own warm-up of :class:`CosineAnnealingWarmupRestarts` (the HDR
config uses ``warmup_iter: 2000`` together with ``warmup_steps: 2000``: both are linear ramps, the
BasicSR one from 0 towards the optimiser lr, the scheduler's from ``min_lr`` to ``max_lr``). From
iteration ``warmup_iter`` on, the schedulers of this module show their own value again because
they compute it from their counters, not from the current ``lr``. torch's chainable
``MultiStepLR``/``CosineAnnealingLR`` (and BasicSR's original ``MultiStepRestartLR``) instead build
on the overwritten ``lr`` and carry the last warm-up value forward. :func:`warmup_lrs` computes
the overwrite and :func:`update_learning_rate` reproduces the whole BasicSR call.
"""
from __future__ import annotations

import bisect
import math
import warnings
from collections import Counter
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Type

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler, MultiStepLR

from DiffIR.utils.registry import lookup

__all__ = [
    "MultiStepRestartLR",
    "CosineAnnealingRestartLR",
    "CosineAnnealingRestartCyclicLR",
    "CosineAnnealingWarmupRestarts",
    "SCHEDULERS",
    "get_scheduler",
    "build_scheduler",
    "warmup_lrs",
    "update_learning_rate",
]


def _as_int(name: str, value: Any) -> int:
    """Return ``value`` as an int; integral floats (``5.0``, YAML ``5.0e+4``) are accepted."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise TypeError(f"{name} must be an integer, got {value!r}")


def _cumulative(periods: Sequence[int]) -> List[int]:
    out, total = [], 0
    for p in periods:
        total += p
        out.append(total)
    return out


def _cycle_position(last_epoch: int, periods: Sequence[int], cumulative: Sequence[int]) -> Tuple[int, int, int]:
    """BasicSR ``get_position_from_periods``: index of the first cumulative period ``>= last_epoch``.

    Returns ``(idx, steps_since_restart, period)``. The boundary step ``cumulative[i]`` belongs to
    cycle ``i`` (its last value, the cycle minimum); cycle ``i + 1`` shows up one step later. Past
    the end of the last period BasicSR raises ``TypeError``; here the schedule stays at the end of
    the last cycle.
    """
    idx = bisect.bisect_left(cumulative, last_epoch)
    if idx >= len(cumulative):
        idx = len(cumulative) - 1
        return idx, periods[idx], periods[idx]
    start = 0 if idx == 0 else cumulative[idx - 1]
    return idx, last_epoch - start, periods[idx]


def _check_periods(periods: Sequence[Any]) -> List[int]:
    out = [_as_int("periods[i]", p) for p in periods]
    if not out or any(p <= 0 for p in out):
        raise ValueError(f"periods must be a non-empty list of positive integers, got {list(periods)!r}")
    return out


class MultiStepRestartLR(LRScheduler):
    """Multi-step decay with restarts (BasicSR ``MultiStepRestartLR``).

    At a restart step ``r`` the lr becomes ``initial_lr * restart_weight``; every milestone ``m`` after
    the latest restart (``r < m <= last_epoch``, counted with multiplicity) multiplies it by ``gamma``.
    A milestone on a restart step is ignored, as in BasicSR. Computed in closed form, so the values
    equal BasicSR's chained ones unless something else writes ``lr`` (e.g. BasicSR warm-up).

    Args:
        optimizer: Wrapped optimiser.
        milestones: Steps at which the lr is multiplied by ``gamma``.
        gamma: Decay factor. Default 0.1.
        restarts: Restart steps. Default ``(0,)``.
        restart_weights: lr multiplier at each restart. Default ``(1,)``.
        last_epoch: Index of the last step (``-1`` for a fresh schedule).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        milestones: Iterable[int],
        gamma: float = 0.1,
        restarts: Sequence[int] = (0,),
        restart_weights: Sequence[float] = (1,),
        last_epoch: int = -1,
    ) -> None:
        self.milestones = Counter(_as_int("milestones[i]", m) for m in milestones)
        self.gamma = gamma
        self.restarts = [_as_int("restarts[i]", r) for r in restarts]
        self.restart_weights = list(restart_weights)
        if len(self.restarts) != len(self.restart_weights):
            raise ValueError(
                f"restarts ({len(self.restarts)}) and restart_weights ({len(self.restart_weights)}) must have the same length"
            )
        super().__init__(optimizer, last_epoch)

    def _factor(self) -> float:
        epoch = self.last_epoch
        restart, weight = -1, 1.0
        for r, w in zip(self.restarts, self.restart_weights):
            # BasicSR uses restarts.index(epoch): the first occurrence of a duplicate restart wins.
            if r <= epoch and r > restart:
                restart, weight = r, w
        n = sum(c for m, c in self.milestones.items() if restart < m <= epoch)
        return weight * self.gamma**n

    def get_lr(self) -> List[Any]:
        """Learning rates at ``last_epoch`` (closed form, from ``base_lrs``)."""
        factor = self._factor()
        return [base_lr * factor for base_lr in self.base_lrs]

    def _get_closed_form_lr(self) -> List[Any]:
        return self.get_lr()


class _CosineRestarts(LRScheduler):
    """Cosine annealing with restarts, one ``eta_min`` per cycle: the two public schedulers below."""

    def __init__(self, optimizer: Optimizer, periods: Sequence[int], restart_weights: Sequence[float],
                 eta_mins: Optional[Sequence[float]], last_epoch: int) -> None:
        """``eta_mins=None``: ``self.eta_min`` (set by the subclass) in every cycle."""
        self.periods = _check_periods(periods)
        self.restart_weights = list(restart_weights)
        self.eta_mins = list(eta_mins) if eta_mins is not None else [self.eta_min] * len(self.periods)
        if len(self.periods) != len(self.restart_weights):
            raise ValueError("periods and restart_weights should have the same length.")
        if len(self.periods) != len(self.eta_mins):
            raise ValueError("periods and eta_mins should have the same length.")
        self.cumulative_period = _cumulative(self.periods)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> List[Any]:
        """Learning rates at ``last_epoch`` (closed form, from ``base_lrs``)."""
        idx, pos, period = _cycle_position(self.last_epoch, self.periods, self.cumulative_period)
        weight = self.restart_weights[idx]
        eta_min = self.eta_mins[idx]
        cos_term = 1 + math.cos(math.pi * (pos / period))
        return [eta_min + weight * 0.5 * (base_lr - eta_min) * cos_term for base_lr in self.base_lrs]

    def _get_closed_form_lr(self) -> List[Any]:
        return self.get_lr()


class CosineAnnealingRestartLR(_CosineRestarts):
    """Cosine annealing with restarts (BasicSR ``CosineAnnealingRestartLR``).

    In cycle ``i`` (start ``s_i``, length ``p_i``):
    ``lr = eta_min + w_i * 0.5 * (base_lr - eta_min) * (1 + cos(pi * (last_epoch - s_i) / p_i))``.
    As in BasicSR the step ``s_i + p_i`` still belongs to cycle ``i`` (value ``eta_min``); the restart
    value appears one step later. Beyond ``sum(periods)`` (a ``TypeError`` in BasicSR) the lr stays at
    the end of the last cycle.

    Args:
        optimizer: Wrapped optimiser.
        periods: Length of each cycle in steps.
        restart_weights: Peak multiplier of each cycle (same length as ``periods``). Default ``(1,)``.
        eta_min: Minimum lr. Default 0.
        last_epoch: Index of the last step (``-1`` for a fresh schedule).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        periods: Sequence[int],
        restart_weights: Sequence[float] = (1,),
        eta_min: float = 0,
        last_epoch: int = -1,
    ) -> None:
        self.eta_min = eta_min
        super().__init__(optimizer, periods, restart_weights, None, last_epoch)


class CosineAnnealingRestartCyclicLR(_CosineRestarts):
    """Cosine annealing with restarts and one ``eta_min`` per cycle (Restormer / DiffIR).

    In cycle ``i``: ``lr = eta_min_i + w_i * 0.5 * (base_lr - eta_min_i) * (1 + cos(pi * (last_epoch - s_i) / p_i))``,
    with the same cycle boundaries as :class:`CosineAnnealingRestartLR` (step ``s_i + p_i`` gives
    ``eta_min_i``, the restart value ``eta_min_{i+1} + w_{i+1} * (base_lr - eta_min_{i+1})`` appears at
    ``s_i + p_i + 1``; beyond the last period the lr stays at the last cycle's end value,
    ``eta_mins[-1]``).

    ``eta_min_i`` may exceed ``base_lr``: the official DiffIR S1 config (periods [92000, 208000],
    eta_mins [2.85e-4, 1e-6], lr 2e-4) makes the lr *rise* from 2e-4 to 2.85e-4 over the first cycle,
    then restart near 2e-4 and decay to 1e-6. This is reproduced as is.

    Args:
        optimizer: Wrapped optimiser.
        periods: Length of each cycle in steps.
        restart_weights: Multiplier of each cycle (same length as ``periods``). Default ``(1,)``.
        eta_mins: Minimum lr of each cycle (same length as ``periods``). Default ``(0,)``.
        last_epoch: Index of the last step (``-1`` for a fresh schedule).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        periods: Sequence[int],
        restart_weights: Sequence[float] = (1,),
        eta_mins: Sequence[float] = (0,),
        last_epoch: int = -1,
    ) -> None:
        super().__init__(optimizer, periods, restart_weights, eta_mins, last_epoch)


class CosineAnnealingWarmupRestarts(LRScheduler):
    """Cosine annealing with linear warm-up, restarts, cycle growth and peak decay.

    Cycle ``c`` has length ``L_c`` (``L_0 = first_cycle_steps``,
    ``L_{c+1} = int((L_c - W) * cycle_mult) + W``, ``W = warmup_steps``; the warm-up part is not
    multiplied, ``int()`` truncates) and peak ``max_lr * gamma**c``. At position ``pos`` in the cycle:
    ``pos < W``: linear ramp ``min_lr -> peak``; otherwise
    ``min_lr + (peak - min_lr) * (1 + cos(pi * (pos - W) / (L_c - W))) / 2`` (the cycle's last value is
    at ``pos = L_c - 1``, just above ``min_lr``). Every param group follows this same curve (their own
    lrs are ignored; ``base_lrs`` is ``[min_lr] * n_groups``; ``initial_lr`` keeps the optimiser lr
    for BasicSR's warm-up). After construction the scheduler is at step 0 (lr ``min_lr`` when
    ``W > 0``). These sequential values equal the katsura-jp/HDR-fork implementation.

    Differences from that implementation (defects fixed):

    * ``get_last_lr()`` works.
    * The state (``cycle``, ``step_in_cycle``, ``cur_cycle_steps``) is a pure function of
      ``last_epoch`` and the structural arguments, so ``step(epoch)`` (explicit epoch) puts the
      scheduler exactly where ``epoch`` sequential steps from a fresh scheduler would have (integer
      cycle lengths, stepping backwards resets the cycle and peak). ``epoch`` must be a
      non-negative integer (an integral float is accepted); the original used float cycle lengths
      ``first_cycle_steps * cycle_mult**n`` on this path.
    * ``warmup_steps=0``: step 0 is the cycle's peak ``max_lr`` (as at every later restart); the
      original showed ``min_lr`` at step 0 because it reset the lrs after its constructor step.
    * ``last_epoch >= 0`` in the constructor works (positions the schedule like
      ``last_epoch + 1`` steps from fresh, torch's convention); a missing ``initial_lr`` is filled
      with the group's current ``lr`` instead of raising ``KeyError``.
    * Degenerate cycles: a cycle length never drops below 1 (with ``cycle_mult < 1`` and ``W = 0`` the
      original reached length 0 and divided by zero).
    * ``load_state_dict`` policy for resumed runs whose YAML changed: the *checkpoint* supplies the
      position (``last_epoch``, ``_step_count``) and the *constructor* supplies the
      hyper-parameters (``first_cycle_steps``, ``cycle_mult``, ``max_lr``, ``min_lr``,
      ``warmup_steps``, ``gamma``). Each argument that differs from the checkpoint is named in one
      ``UserWarning`` (old -> new). If a structural argument (``first_cycle_steps``, ``cycle_mult``,
      ``warmup_steps``) changed, the cycle position is recomputed from ``last_epoch`` under the new
      arguments, i.e. the run continues on the schedule the new YAML describes (this can make the lr
      jump). With unchanged arguments the resumed trajectory is identical to an uninterrupted
      one. In every case the lr for the restored position is written to all param groups at once,
      so even loading only the scheduler state gives the right lr before the next ``step()``.
      (The original silently restored the old hyper-parameters.)

    Args:
        optimizer: Wrapped optimiser.
        first_cycle_steps: Length of the first cycle in steps.
        cycle_mult: Growth factor of the cosine part of each cycle. Default 1.0.
        max_lr: Peak lr of the first cycle. Default 0.1.
        min_lr: Minimum lr (start of every warm-up). Default 0.001.
        warmup_steps: Linear warm-up steps at the start of every cycle (``< first_cycle_steps``).
        gamma: Peak decay per cycle. Default 1.0.
        last_epoch: Index of the last step (``-1`` for a fresh schedule).
    """

    #: Constructor arguments and the attribute each is stored in.
    _HPARAMS: Tuple[Tuple[str, str], ...] = (
        ("first_cycle_steps", "first_cycle_steps"),
        ("cycle_mult", "cycle_mult"),
        ("max_lr", "base_max_lr"),
        ("min_lr", "min_lr"),
        ("warmup_steps", "warmup_steps"),
        ("gamma", "gamma"),
    )
    _STRUCTURAL = ("first_cycle_steps", "cycle_mult", "warmup_steps")

    def __init__(
        self,
        optimizer: Optimizer,
        first_cycle_steps: int,
        cycle_mult: float = 1.0,
        max_lr: float = 0.1,
        min_lr: float = 0.001,
        warmup_steps: int = 0,
        gamma: float = 1.0,
        last_epoch: int = -1,
    ) -> None:
        first_cycle_steps = _as_int("first_cycle_steps", first_cycle_steps)
        warmup_steps = _as_int("warmup_steps", warmup_steps)
        last_epoch = _as_int("last_epoch", last_epoch)
        if not 0 <= warmup_steps < first_cycle_steps:
            raise ValueError(
                f"need 0 <= warmup_steps < first_cycle_steps, got warmup_steps={warmup_steps}, "
                f"first_cycle_steps={first_cycle_steps}"
            )
        if not cycle_mult > 0:
            raise ValueError(f"cycle_mult must be > 0, got {cycle_mult}")
        if last_epoch < -1:
            raise ValueError(f"last_epoch must be >= -1, got {last_epoch}")

        self.first_cycle_steps = first_cycle_steps
        self.cycle_mult = cycle_mult
        self.base_max_lr = max_lr
        self.max_lr = max_lr
        self.min_lr = min_lr
        self.warmup_steps = warmup_steps
        self.gamma = gamma
        # Position before the constructor's own step (which advances it by one).
        if last_epoch == -1:
            self.cycle, self.step_in_cycle, self.cur_cycle_steps = 0, -1, first_cycle_steps
        else:
            self.cycle, self.step_in_cycle, self.cur_cycle_steps = self._position(last_epoch)
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        super().__init__(optimizer, last_epoch)
        self.base_lrs = [self.min_lr] * len(self.optimizer.param_groups)

    # ----------------------------------------------------------------- cycle arithmetic
    def _next_cycle_steps(self, cur: int) -> int:
        nxt = int((cur - self.warmup_steps) * self.cycle_mult) + self.warmup_steps
        return max(nxt, 1)

    def _position(self, epoch: int) -> Tuple[int, int, int]:
        """``(cycle, step_in_cycle, cur_cycle_steps)`` after ``epoch`` sequential steps from fresh."""
        cycle, pos, length = 0, epoch, self.first_cycle_steps
        while pos >= length:
            nxt = self._next_cycle_steps(length)
            if nxt == length:  # fixed point (cycle_mult 1 or saturated): jump over the rest at once
                n = pos // length
                cycle += n
                pos -= n * length
                break
            pos -= length
            cycle += 1
            length = nxt
        return cycle, pos, length

    # ----------------------------------------------------------------- scheduler API
    def get_lr(self) -> List[float]:
        """Learning rate of every group at the current position."""
        pos, length, warm = self.step_in_cycle, self.cur_cycle_steps, self.warmup_steps
        low, peak = self.min_lr, self.max_lr
        if pos < 0:
            lr = low
        elif pos < warm:
            lr = (peak - low) * pos / warm + low
        else:
            lr = low + (peak - low) * (1 + math.cos(math.pi * (pos - warm) / (length - warm))) / 2
        return [lr] * len(self.optimizer.param_groups)

    def _get_closed_form_lr(self) -> List[float]:
        return self.get_lr()

    def step(self, epoch: Optional[int] = None) -> None:
        """Advance one step, or (deprecated in torch, kept for compatibility) jump to step ``epoch``.

        The explicit form is stateless: it gives exactly the state of ``epoch`` sequential steps from
        a fresh scheduler.
        """
        if epoch is None:
            self.step_in_cycle += 1
            if self.step_in_cycle >= self.cur_cycle_steps:
                self.cycle += 1
                self.step_in_cycle -= self.cur_cycle_steps
                self.cur_cycle_steps = self._next_cycle_steps(self.cur_cycle_steps)
        else:
            if isinstance(epoch, float) and not epoch.is_integer():
                raise ValueError(f"step(epoch) needs an integer epoch, got {epoch!r}")
            epoch = _as_int("epoch", epoch)
            if epoch < 0:
                raise ValueError(f"step(epoch) needs epoch >= 0, got {epoch}")
            self.cycle, self.step_in_cycle, self.cur_cycle_steps = self._position(epoch)
        self.max_lr = self.base_max_lr * (self.gamma**self.cycle)
        super().step(epoch)

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restore the position from ``state_dict``; hyper-parameters stay those of the constructor.

        Warns (``UserWarning``) naming every constructor argument that differs from the checkpoint;
        recomputes the cycle position from ``last_epoch`` if a structural argument changed; writes
        the resulting lr into every param group. See the class docstring.
        """
        state = dict(state_dict)
        current = {attr: getattr(self, attr) for _, attr in self._HPARAMS}
        changed: List[str] = []
        for arg, attr in self._HPARAMS:
            if attr in state and state[attr] != current[attr]:
                changed.append(f"{arg} {state[attr]!r} -> {current[attr]!r}")
        structural = any(
            attr in state and state[attr] != current[attr] for arg, attr in self._HPARAMS if arg in self._STRUCTURAL
        )
        for attr in current:
            state.pop(attr, None)
        for key in ("max_lr", "base_lrs", "cycle", "step_in_cycle", "cur_cycle_steps"):
            state.pop(key, None)
        super().load_state_dict(state)

        self.last_epoch = _as_int("last_epoch", math.floor(self.last_epoch))
        if self.last_epoch < 0:
            self.cycle, self.step_in_cycle, self.cur_cycle_steps = 0, -1, self.first_cycle_steps
        else:
            self.cycle, self.step_in_cycle, self.cur_cycle_steps = self._position(self.last_epoch)
        self.max_lr = self.base_max_lr * (self.gamma**self.cycle)
        self.base_lrs = [self.min_lr] * len(self.optimizer.param_groups)
        if changed:
            msg = (
                f"{type(self).__name__}.load_state_dict: constructor arguments differ from the checkpoint; "
                f"using the constructor values: {', '.join(changed)}"
            )
            if structural:
                msg += f" (cycle position recomputed from last_epoch={self.last_epoch} under the new arguments)"
            warnings.warn(msg, UserWarning, stacklevel=2)
        self._apply_lr()

    def _apply_lr(self) -> None:
        """Write ``get_lr()`` into the param groups and ``_last_lr``."""
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr
        self._last_lr = [
            g["lr"].clone() if isinstance(g["lr"], torch.Tensor) else g["lr"] for g in self.optimizer.param_groups
        ]


# --------------------------------------------------------------------------- look-up by name
#: YAML ``train.scheduler.type`` -> scheduler class.
SCHEDULERS: Dict[str, Type[LRScheduler]] = {
    "MultiStepLR": MultiStepLR,
    "MultiStepRestartLR": MultiStepRestartLR,
    "CosineAnnealingLR": CosineAnnealingLR,
    "TrueCosineAnnealingLR": CosineAnnealingLR,
    "CosineAnnealingRestartLR": CosineAnnealingRestartLR,
    "CosineAnnealingRestartCyclicLR": CosineAnnealingRestartCyclicLR,
    "CosineAnnealingWarmupRestarts": CosineAnnealingWarmupRestarts,
}


def get_scheduler(name: str, where: Optional[str] = None) -> Type[LRScheduler]:
    """Scheduler class for a YAML ``type`` name; an unknown one fails by :func:`~DiffIR.utils.registry.lookup` (a
    ``KeyError`` and an ``OptionError`` naming the option key ``where``)."""
    return lookup(SCHEDULERS, name, "scheduler", where)


def build_scheduler(optimizer: Optimizer, opt: Mapping[str, Any]) -> LRScheduler:
    """Build a scheduler from a YAML mapping such as ``{'type': 'MultiStepLR', 'milestones': [..]}``."""
    kwargs = dict(opt)
    if "type" not in kwargs:
        raise KeyError("scheduler options need a 'type' key")
    cls = get_scheduler(kwargs.pop("type"))
    return cls(optimizer, **kwargs)


# --------------------------------------------------------------------------- BasicSR warm-up
def warmup_lrs(initial_lrs: Sequence[float], current_iter: int, warmup_iter: int) -> List[float]:
    """BasicSR linear warm-up: ``initial_lr / warmup_iter * current_iter`` for every group.

    Valid only while BasicSR applies it, ``1 <= current_iter < warmup_iter`` (``ValueError``
    otherwise); ``initial_lrs`` are the groups' ``initial_lr`` entries (the optimiser lr).
    """
    if warmup_iter <= 0:
        raise ValueError(f"warm-up is off for warmup_iter={warmup_iter}")
    if not 1 <= current_iter < warmup_iter:
        raise ValueError(
            f"BasicSR applies the warm-up only for 1 <= current_iter < warmup_iter, got {current_iter} / {warmup_iter}"
        )
    return [v / warmup_iter * current_iter for v in initial_lrs]


def update_learning_rate(
    optimizers: Sequence[Optimizer],
    schedulers: Sequence[LRScheduler],
    current_iter: int,
    warmup_iter: int = -1,
) -> None:
    """BasicSR ``BaseModel.update_learning_rate``: step every scheduler if ``current_iter > 1``,
    then, if ``current_iter < warmup_iter``, overwrite each group's lr with :func:`warmup_lrs`."""
    if current_iter > 1:
        for scheduler in schedulers:
            scheduler.step()
    if current_iter < warmup_iter:
        for optimizer in optimizers:
            lrs = warmup_lrs([g["initial_lr"] for g in optimizer.param_groups], current_iter, warmup_iter)
            for group, lr in zip(optimizer.param_groups, lrs):
                group["lr"] = lr
