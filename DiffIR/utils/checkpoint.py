"""Checkpoint file I/O: atomic writes and safe (``weights_only``) reads, in one place."""
from __future__ import annotations

import os
import re
from typing import Any, Dict, List, Optional, Tuple

import torch

from DiffIR.utils.misc import atomic_open


def atomic_save(obj: Any, path: str) -> None:
    """``torch.save`` through :func:`atomic_open`: a crash mid-write leaves the previous file intact."""
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def load_file(path: str, what: str = "checkpoint") -> Any:
    """``torch.load(weights_only=True)`` on CPU with an error that names the file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the file named
        raise RuntimeError(
            f"Cannot read {what} '{path}': {type(e).__name__}: {e}. The file may be truncated or not a "
            "PyTorch checkpoint (only tensors and plain containers are accepted; pickled code is refused)."
        ) from e


def extract_state_dict(ckpt: Any, param_key: Optional[str], path: str) -> Dict[str, torch.Tensor]:
    """Pick ``ckpt[param_key]`` from a BasicSR container and strip DDP's ``module.`` prefixes."""
    state = ckpt
    if isinstance(ckpt, dict) and param_key:
        if param_key in ckpt:
            state = ckpt[param_key]
        elif param_key == "params_ema" and "params" in ckpt:
            state = ckpt["params"]  # BasicSR saves only 'params' when EMA is off
        elif any(isinstance(v, torch.Tensor) for v in ckpt.values()):
            state = ckpt  # a bare state_dict
        else:
            raise KeyError(f"Checkpoint '{path}' has no '{param_key}' entry (it has: {', '.join(map(str, ckpt))}). "
                           "Set path.param_key_g to one of those.")
    if not isinstance(state, dict):
        raise TypeError(f"Checkpoint '{path}' does not hold a state_dict")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in state.items()}


_STATE_RE = re.compile(r"^(\d+)\.state$")


def list_training_states(folder: str) -> List[Tuple[int, str]]:
    """``(iteration, path)`` of every ``ITER.state`` in ``folder``, newest first."""
    if not os.path.isdir(folder):
        return []
    found = []
    for name in os.listdir(folder):
        m = _STATE_RE.match(name)
        if m:
            found.append((int(m.group(1)), os.path.join(folder, name)))
    return sorted(found, reverse=True)
