"""BasicSR's restart schedulers: multi-step decay and cosine annealing with restarts (one ``eta_min`` per cycle
in the Restormer/DiffIR variant), looked up by name through :data:`DiffIR.models.lr_scheduler.SCHEDULERS`.

They compute the learning rate in closed form from ``last_epoch`` and ``base_lrs`` (the optimiser's
``initial_lr``), so their sequential values equal BasicSR's whenever nothing else writes the optimiser's ``lr``,
and the base-class ``state_dict()`` resume is exact.
"""
from __future__ import annotations

import bisect
import math
from collections import Counter
from typing import Any, Iterable, List, Optional, Sequence, Tuple

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from DiffIR.utils.errors import OptionError, OptionTypeError

__all__ = ["MultiStepRestartLR", "CosineAnnealingRestartLR", "CosineAnnealingRestartCyclicLR", "as_int"]


def as_int(name: str, value: Any) -> int:
    """Return ``value`` as an int; integral floats (``5.0``, YAML ``5.0e+4``) are accepted (every scheduler
    checks its step counts this way)."""
    if isinstance(value, bool):
        raise OptionTypeError(f"{name} must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise OptionTypeError(f"{name} must be an integer, got {value!r}")


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
    out = [as_int("periods[i]", p) for p in periods]
    if not out or any(p <= 0 for p in out):
        raise OptionError(f"periods must be a non-empty list of positive integers, got {list(periods)!r}")
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
        self.milestones = Counter(as_int("milestones[i]", m) for m in milestones)
        self.gamma = gamma
        self.restarts = [as_int("restarts[i]", r) for r in restarts]
        self.restart_weights = list(restart_weights)
        if len(self.restarts) != len(self.restart_weights):
            raise OptionError(
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
            raise OptionError("periods and restart_weights should have the same length.")
        if len(self.periods) != len(self.eta_mins):
            raise OptionError("periods and eta_mins should have the same length.")
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

