"""The HDR fork's scheduler, :class:`CosineAnnealingWarmupRestarts` (cosine cycles with linear warm-up, growing cycle
lengths and decaying peaks, originally from katsura-jp/pytorch-cosine-annealing-with-warmup), re-implemented with
working ``get_last_lr()``, exact ``state_dict()`` resume and a stateless ``step(epoch)``. Its own file: its cycle
arithmetic and resume policy share nothing with BasicSR's closed-form schedulers (:mod:`DiffIR.models.lr_restarts`).
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from DiffIR.models.lr_restarts import as_int
from DiffIR.utils.errors import OptionError

__all__ = ["CosineAnnealingWarmupRestarts"]


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
        first_cycle_steps = as_int("first_cycle_steps", first_cycle_steps)
        warmup_steps = as_int("warmup_steps", warmup_steps)
        last_epoch = as_int("last_epoch", last_epoch)
        if not 0 <= warmup_steps < first_cycle_steps:
            raise OptionError(
                f"need 0 <= warmup_steps < first_cycle_steps, got warmup_steps={warmup_steps}, "
                f"first_cycle_steps={first_cycle_steps}"
            )
        if not cycle_mult > 0:
            raise OptionError(f"cycle_mult must be > 0, got {cycle_mult}")
        if last_epoch < -1:
            raise OptionError(f"last_epoch must be >= -1, got {last_epoch}")

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
            epoch = as_int("epoch", epoch)
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

        self.last_epoch = as_int("last_epoch", math.floor(self.last_epoch))
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

