"""Checkpoint file I/O: atomic writes and safe (``weights_only``) reads, in one place."""
from __future__ import annotations

import os
import re
import tempfile
from typing import Any, Dict, List, Optional, Tuple

import torch


def atomic_save(obj: Any, path: str) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, then rename.

    A crash mid-write leaves the previous file intact instead of a truncated one.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=os.path.basename(path), dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


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
