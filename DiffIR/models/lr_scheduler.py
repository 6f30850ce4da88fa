"""Learning-rate schedulers used by the DiffIR / DiffIR-HDR training options: the look-up by name and BasicSR's
warm-up (the scheduler classes live in their own modules).

Classes (all subclasses of :class:`torch.optim.lr_scheduler.LRScheduler`, stepped once per
training iteration, so ``last_epoch`` counts scheduler steps):

* ``MultiStepRestartLR``, ``CosineAnnealingRestartLR`` and ``CosineAnnealingRestartCyclicLR`` (the
  Restormer/DiffIR variant with one ``eta_min`` per cycle): BasicSR's closed-form restart schedulers,
  :mod:`DiffIR.models.lr_restarts`.
* ``CosineAnnealingWarmupRestarts``: the HDR fork's cosine cycles with linear warm-up, growing cycle
  lengths and decaying peaks, :mod:`DiffIR.models.lr_warmup_restarts`.

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
scheduler set, including the own warm-up of ``CosineAnnealingWarmupRestarts`` (the HDR
config uses ``warmup_iter: 2000`` together with ``warmup_steps: 2000``: both are linear ramps, the
BasicSR one from 0 towards the optimiser lr, the scheduler's from ``min_lr`` to ``max_lr``). From
iteration ``warmup_iter`` on, the schedulers of this module show their own value again because
they compute it from their counters, not from the current ``lr``. torch's chainable
``MultiStepLR``/``CosineAnnealingLR`` (and BasicSR's original ``MultiStepRestartLR``) instead build
on the overwritten ``lr`` and carry the last warm-up value forward. :func:`warmup_lrs` computes
the overwrite and :func:`update_learning_rate` reproduces the whole BasicSR call.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Type

from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler, MultiStepLR

from DiffIR.models.lr_restarts import CosineAnnealingRestartCyclicLR, CosineAnnealingRestartLR, MultiStepRestartLR
from DiffIR.models.lr_warmup_restarts import CosineAnnealingWarmupRestarts
from DiffIR.utils.registry import lookup

__all__ = [
    "SCHEDULERS",
    "get_scheduler",
    "build_scheduler",
    "warmup_lrs",
    "update_learning_rate",
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
