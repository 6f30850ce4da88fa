"""What a training model writes and reads back, in one place: network checkpoints, training states, pruning, resume.

The files keep BasicSR's layout and keys: ``models/net_g_ITER.pth`` (``params``, plus ``params_ema`` with EMA;
``net_g_latest.pth`` at the end) and ``training_states/ITER.state``. With ``val.save_best`` the best validation
so far is ``models/net_g_best.pth`` (the same keys plus its record under ``best``; never pruned), and its record
travels in the training states so that a resumed run keeps it. The file I/O under them (atomic writes, safe
reads, the checks that a checkpoint fits a network) is :mod:`DiffIR.utils.checkpoint`.
"""
from __future__ import annotations

import json
import logging
import os
import os.path as osp
import warnings
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn

from DiffIR.config.sections import RunOptions
from DiffIR.metrics import improves
from DiffIR.utils.checkpoint import (CheckpointError, atomic_save, check_network_record, extract_state_dict,
                                     list_training_states, load_checked, load_file, network_record)
from DiffIR.utils.dist import all_gather_objects, get_dist_info
from DiffIR.utils.misc import capture_rng_state, restore_rng_state
from DiffIR.utils.errors import OptionError


#: the options a training state records (``options``, as JSON) and a resume compares: besides these, every network_*
RESUMED_OPTIONS = ("train:optim_g", "train:scheduler", "train:total_iter")
#: changes that a resumed run cannot continue under (the saved weights, optimizer or scheduler state would not fit)
_REFUSED_CHANGES = ("network_", "train:optim_g:type", "train:scheduler:type")


def recorded_options(opt: Dict[str, Any]) -> str:
    """The options a training state records (see :data:`RESUMED_OPTIONS`), as JSON text: loads with
    ``weights_only`` whatever the values, and compares the same way on resume."""
    record = {key: value for key, value in opt.items() if key.startswith("network_")}
    for key in RESUMED_OPTIONS:
        section, name = key.split(":", 1)
        record[key] = (opt.get(section) or {}).get(name)
    return json.dumps(record, sort_keys=True, default=str)


def _flat(value: Any, key: str) -> Dict[str, Any]:
    """``{key:sub:path: leaf}`` of a nested mapping (lists are leaves)."""
    if not isinstance(value, dict):
        return {key: value}
    out: Dict[str, Any] = {}
    for name, sub in value.items():
        out.update(_flat(sub, f"{key}:{name}"))
    return out


def check_resumed_options(state: Dict[str, Any], opt: Dict[str, Any], state_path: str, net_path: str,
                          logger: logging.Logger) -> None:
    """Compare the options recorded in a training state with this run's, before anything is built from them.

    A changed network, optimizer type or scheduler type cannot be continued: one :class:`OptionError` lists them.
    Every other changed value is a warning ``key: old -> new``. States of earlier versions record no options:
    a note says that nothing could be compared.
    """
    saved_text = state.get("options")
    if not isinstance(saved_text, str):
        logger.info(f"The training state {state_path} records no options (saved by an earlier version): changes of "
                    f"network_g, {', '.join(RESUMED_OPTIONS)} since then cannot be checked.")
        return
    saved, now = json.loads(saved_text), json.loads(recorded_options(opt))
    old: Dict[str, Any] = {}
    new: Dict[str, Any] = {}
    for key in sorted(set(saved) | set(now)):
        old.update(_flat(saved.get(key), key))
        new.update(_flat(now.get(key), key))
    changed = [(key, old.get(key, "(unset)"), new.get(key, "(unset)")) for key in sorted(set(old) | set(new))
               if old.get(key, "(unset)") != new.get(key, "(unset)")]
    refused = [f"{key}: {a} -> {b}" for key, a, b in changed if key.startswith(_REFUSED_CHANGES)]
    if refused:
        raise OptionError(
            f"Cannot resume from {state_path}: these options differ from the run that saved it (saved -> now), and "
            f"its network, optimizer or scheduler state cannot continue under them: {'; '.join(refused)}. Fix: restore "
            f"them, or start a new experiment (another name) from its weights with path:pretrain_network_g: "
            f"{net_path}.")
    for key, a, b in changed:
        logger.warning(f"Resuming with a changed option {key}: {a} -> {b} (the saved run -> these options)")


class CheckpointingMixin:
    """Saving, loading and resuming for :class:`~DiffIR.models.base_model.BaseModel`, which provides the attributes
    below (``get_bare_model`` too)."""

    opt: Dict[str, Any]
    options: RunOptions
    logger: logging.Logger
    net_g: nn.Module
    net_g_ema: Optional[nn.Module]
    optimizers: List[torch.optim.Optimizer]
    schedulers: List[Any]
    scaler: Optional[torch.amp.GradScaler]
    best_checkpoint: Optional[Dict[str, Any]]
    ema_record: Callable[[], Dict[str, Any]]
    restore_ema_record: Callable[[Optional[Dict[str, Any]], int], None]

    def checkpoint_networks(self) -> Tuple[List[nn.Module], List[str], Dict[str, Any]]:
        """The networks a ``net_g_*.pth`` holds, their keys (``params``, + ``params_ema`` with EMA) and the plain-data
        entries beside them (``ema``: the EMA's record; ``network``: the gate settings the weights were trained
        with, :func:`~DiffIR.utils.checkpoint.network_record`)."""
        record = {"network": network_record(self.get_bare_model(self.net_g))}
        if self.net_g_ema is not None:
            return [self.net_g, self.net_g_ema], ["params", "params_ema"], {"ema": self.ema_record(), **record}
        return [self.net_g], ["params"], record

    def save(self, epoch: int, current_iter: int, extra: Optional[Dict[str, Any]] = None) -> None:
        """Network file first, then the training state that refers to it (called on every rank)."""
        nets, keys, entries = self.checkpoint_networks()
        self.save_network(nets, "net_g", current_iter, keys, extra=entries)
        self.save_training_state(epoch, current_iter, extra)

    def read_network_file(self, path: str) -> Any:
        """The checkpoint :meth:`load_network` reads; stage 2 overrides it to read a file once for several networks."""
        return load_file(path, "network checkpoint")

    def load_network(self, net: nn.Module, path: str, strict: bool = True, param_key: Optional[str] = "params",
                     check_record: bool = True) -> None:
        """Load a BasicSR checkpoint; non-strict loads skip (and report) missing or mis-shaped keys; weights trained
        with another highlight gate are refused unless ``check_record`` is false."""
        net = self.get_bare_model(net)
        ckpt = self.read_network_file(path)
        state = extract_state_dict(ckpt, param_key, path)
        if check_record:
            check_network_record(ckpt, net, path)
        self.logger.info(f"Loading {net.__class__.__name__} from {path} [{param_key}] (strict={strict})")
        own = net.state_dict()
        if not strict:
            missing = sorted(set(own) - set(state))
            extra = sorted(set(state) - set(own))
            wrong = [k for k in state if k in own and state[k].shape != own[k].shape]
            for k in wrong:
                self.logger.warning(f"Skip '{k}': shape {tuple(state[k].shape)} in file, "
                                    f"{tuple(own[k].shape)} in network")
                state.pop(k)
            if missing:
                self.logger.warning(f"{len(missing)} network keys not in the file (kept as initialised), "
                                    f"e.g. {missing[:3]}")
            if extra:
                self.logger.warning(f"{len(extra)} file keys not in the network (ignored), e.g. {extra[:3]}")
        load_checked(net, state, path, param_key, strict)  # another architecture → CheckpointError, exit status 2

    def save_network(self, nets: List[nn.Module], label: str, current_iter: Any, param_keys: List[str],
                     extra: Optional[Dict[str, Any]] = None) -> None:
        """``models/LABEL_ITER.pth`` (``LABEL_latest.pth`` for -1): each net's CPU state_dict under its key; rank 0.

        ``extra`` adds top-level entries beside the weights (e.g. ``ema``, ``best``: plain str/number data, so the file
        still loads with ``weights_only=True``); it cannot replace a weights key.
        """
        if get_dist_info()[0] != 0:
            return
        name = "latest" if current_iter == -1 else current_iter
        path = osp.join(self.options.context.paths.models, f"{label}_{name}.pth")
        payload: Dict[str, Any] = {k: {kk: v.detach().cpu() for kk, v in self.get_bare_model(n).state_dict().items()}
                                   for n, k in zip(nets, param_keys)}
        clash = sorted(set(extra or {}) & set(payload))
        if clash:
            raise ValueError(f"save_network: extra entries {clash} would replace the weights of the same key")
        payload.update(extra or {})
        atomic_save(payload, path)

    def update_best_checkpoint(self, dataset: str, metrics: Dict[str, float], current_iter: int) -> bool:
        """With ``val.save_best``: write ``models/net_g_best.pth`` if ``metrics`` (one validation of the first val
        set) beat the best so far in the metric's ``better`` direction; returns whether it did.

        Only rank 0 validates, so the other ranks get no metrics and write nothing.
        """
        val = self.options.val
        name = val.save_best
        if not name or name not in metrics:
            return False
        value = float(metrics[name])
        if not improves(value, None if self.best_checkpoint is None else self.best_checkpoint["value"],
                        val.metrics[name]):
            return False
        record = {"metric": str(name), "value": value, "iter": int(current_iter), "dataset": str(dataset)}
        nets, keys, entries = self.checkpoint_networks()
        self.save_network(nets, "net_g", "best", keys, extra={**entries, "best": record})
        self.best_checkpoint = record
        self.logger.info(f"New best {name} on {dataset}: {value:.4f} @ iter {current_iter}; saved "
                         f"{osp.join(self.options.context.paths.models, 'net_g_best.pth')}")
        return True

    def _restore_best(self, saved: Any) -> None:
        """The best-so-far of a resumed run: the training state's record, or that of ``net_g_best.pth`` when it is
        better (the state of an iteration is saved before that iteration's validation). Records of another metric
        than ``val.save_best`` are dropped: the first validation then starts a new best."""
        val = self.options.val
        name = val.save_best
        if not name:
            return
        for record in (saved, self._best_on_disk()):
            if (isinstance(record, dict) and record.get("metric") == name and improves(
                    float(record["value"]), None if self.best_checkpoint is None else self.best_checkpoint["value"],
                    val.metrics[name])):
                self.best_checkpoint = dict(record)
        if self.best_checkpoint is not None:
            b = self.best_checkpoint
            self.logger.info(f"Best {name} so far: {b['value']:.4f} @ iter {b['iter']} ({b['dataset']}); "
                             "net_g_best.pth is replaced only by a better one")

    def _best_on_disk(self) -> Optional[Dict[str, Any]]:
        """The ``best`` record of this experiment's ``models/net_g_best.pth``, if it exists and reads."""
        path = osp.join(self.options.context.paths.models, "net_g_best.pth")
        if not osp.isfile(path):
            return None
        try:
            record = load_file(path, "best checkpoint").get("best")
        except (CheckpointError, OSError, AttributeError) as e:
            self.logger.warning(f"Ignoring the record of {path} ({e}); the best so far is the training state's")
            return None
        return record if isinstance(record, dict) else None

    def save_training_state(self, epoch: int, current_iter: int, extra: Optional[Dict[str, Any]] = None) -> None:
        """``training_states/ITER.state``: optimizers, schedulers, counters and every rank's RNG states.

        Collective under DDP (all ranks call it; rank 0 writes). Plain tensors and numbers only, so it loads
        with ``weights_only=True``.
        """
        if current_iter == -1:
            return
        rng = all_gather_objects(capture_rng_state())
        if get_dist_info()[0] != 0:
            return
        state = {
            "epoch": epoch,
            "iter": current_iter,
            "optimizers": [o.state_dict() for o in self.optimizers],
            "schedulers": [s.state_dict() for s in self.schedulers],
            "rng": rng,
            "world_size": len(rng),
            "options": recorded_options(self.opt),
            **({"scaler": self.scaler.state_dict()} if self.scaler is not None else {}),
            **({"best": dict(self.best_checkpoint)} if self.best_checkpoint else {}),
            **({"ema": self.ema_record()} if self.net_g_ema is not None else {}),
            **(extra or {}),
        }
        atomic_save(state, osp.join(self.options.context.paths.training_states, f"{current_iter}.state"))
        self._prune_checkpoints(current_iter)

    def _prune_checkpoints(self, current_iter: int) -> None:
        """With ``logger.keep_last_n``, delete all but the newest n network/state pairs (never the new one)."""
        keep = self.options.logger.keep_last_n
        if not keep:
            return
        states = list_training_states(self.options.context.paths.training_states)
        for it, state_path in states[keep:]:
            if it == current_iter:
                continue
            os.remove(state_path)
            for name in os.listdir(self.options.context.paths.models):
                if name.endswith(f"_{it}.pth"):
                    os.remove(osp.join(self.options.context.paths.models, name))

    def resume_networks(self, path: str) -> None:
        """The networks of a resumed run from its ``net_g_ITER.pth``: ``params`` → net_g, ``params_ema`` → the EMA
        copy (strict: the file was written by this model)."""
        self.load_network(self.net_g, path, True, "params")
        if self.net_g_ema is not None:
            self.load_network(self.net_g_ema, path, True, "params_ema")

    def resume_training(self, state: Dict[str, Any]) -> None:
        """Restore optimizers, schedulers and this rank's RNG; report YAML changes that the state overrides."""
        if len(state["optimizers"]) != len(self.optimizers) or len(state["schedulers"]) != len(self.schedulers):
            raise OptionError("The training state's optimizers/schedulers do not match this model's options (was "
                              "train.scheduler added or removed since the state was saved?). Restore the options or "
                              "start a new experiment.")
        for o, s in zip(self.optimizers, state["optimizers"]):
            yaml_groups = [{k: v for k, v in g.items() if k != "params"} for g in o.param_groups]
            o.load_state_dict(s)
            self._report_optimizer_changes(yaml_groups, o.param_groups)
        for sch, s in zip(self.schedulers, state["schedulers"]):
            with warnings.catch_warnings(record=True) as caught:  # changed scheduler options: into the log
                warnings.simplefilter("always")
                sch.load_state_dict(s)
            for w in caught:
                self.logger.warning(f"train:scheduler: {w.message}")
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self._restore_best(state.get("best"))
        if self.net_g_ema is not None:
            self.restore_ema_record(state.get("ema"), int(state["iter"]))
        rng = state.get("rng")
        if isinstance(rng, list) and rng:
            rank, world = get_dist_info()
            if len(rng) != world:
                self.logger.warning(f"The training state was saved by {len(rng)} process(es), this run has {world}: "
                                    "random streams are re-derived, so the run is not bit-identical to an "
                                    "uninterrupted one.")
            restore_rng_state(rng[rank % len(rng)])

    def _report_optimizer_changes(self, yaml_groups: List[Dict[str, Any]], loaded: List[Dict[str, Any]]) -> None:
        """Warn about optimizer settings the YAML changed since the state was saved: the saved ones win on resume."""
        for i, (new, old) in enumerate(zip(yaml_groups, loaded)):
            for key in ("initial_lr", "betas", "weight_decay", "eps", "momentum"):
                if key in new and key in old and tuple(np.atleast_1d(new[key])) != tuple(np.atleast_1d(old[key])):
                    name = "lr" if key == "initial_lr" else key
                    self.logger.warning(f"train:optim_g:{name} is {new[key]} in the options but {old[key]} in the "
                                        f"training state (param group {i}); the resumed run keeps {old[key]}. Start a "
                                        "new experiment (or load the weights with path.pretrain_network_g) to change "
                                        "it.")
