"""Checkpoint file I/O: atomic writes and safe (``weights_only``) reads, in one place.

Reads accept BasicSR ``.pth`` containers (``torch.load(weights_only=True)``) and ``.safetensors`` weights (a bare
state_dict plus string metadata, see :func:`save_safetensors`). Every failure to read or fit a checkpoint raises
:class:`CheckpointError`, whose message names the file, what is wrong and what to do.
"""
from __future__ import annotations

import io
import json
import logging
import os
import pickletools
import re
import warnings
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn as nn

from DiffIR.utils.errors import DiffIRError
from DiffIR.utils.misc import atomic_open, atomic_write_bytes

SAFETENSORS_EXT = ".safetensors"


class CheckpointError(DiffIRError, ValueError, RuntimeError):
    """A checkpoint that cannot be read, is refused as unsafe, or does not fit the network.

    A :class:`~DiffIR.utils.errors.DiffIRError` so the entry scripts end with the message and exit status 2
    (``DiffIR.utils.cli``); a ``ValueError`` as before; also a ``RuntimeError``, what a failed load raised before, so
    callers that skip an unreadable training state still do.
    """


class CheckpointKeyError(CheckpointError, KeyError):
    """A checkpoint without the weights entry asked for (``path:param_key_g``); a ``KeyError`` as before."""

    __str__ = BaseException.__str__  # KeyError would quote the message


class CheckpointMismatch(CheckpointError):
    """A readable checkpoint whose tensors do not fit the network it is loaded into (another architecture)."""


def atomic_save(obj: Any, path: str) -> None:
    """``torch.save`` through :func:`atomic_open`: a crash mid-write leaves the previous file intact."""
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


_GLOBAL_RE = re.compile(r"GLOBAL ([\w.]+)")
_CODE_OPS = {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX", "BUILD"}


def _pickled_objects(data: bytes) -> Optional[List[str]]:
    """What a plain pickle stream would import or build (scanned, never executed).

    None when ``data`` is no pickle or builds no object (only numbers, strings, containers); else the names of the
    classes/functions it imports (possibly empty when it only calls what it built).
    """
    names: List[str] = []
    strings: List[str] = []
    code = False
    try:
        for op, arg, _ in pickletools.genops(io.BytesIO(data)):
            if isinstance(arg, str):
                strings.append(arg)
            if op.name in _CODE_OPS:
                code = True
                if op.name in ("GLOBAL", "INST"):
                    names.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    names.append(f"{strings[-2]}.{strings[-1]}")
    except ValueError:  # pickletools: unknown opcode / stream ends early → not a pickle
        return None
    return names if code else None


def _unreadable(path: str, what: str, err: BaseException, data: bytes) -> CheckpointError:
    """Classify a failed ``torch.load``: a pickle payload refused as unsafe, or a file that is no checkpoint."""
    text = str(err)
    is_zip = data.startswith(b"PK\x03\x04")
    unsafe: Optional[List[str]] = None
    # torch's safe unpickler names the import it refused ("Unsupported global: GLOBAL x.y", or "unsupported
    # GLOBAL posix.system whose module posix is blocked"); inside torch's zip container the payload cannot be
    # scanned like a plain pickle, so that refusal is what tells pickled code from a damaged file
    if "Weights only load failed" in text and _GLOBAL_RE.search(text):
        unsafe = _GLOBAL_RE.findall(text)
    elif not is_zip:
        unsafe = _pickled_objects(data)
    if unsafe is not None:
        named = ", ".join(dict.fromkeys(unsafe)) or "Python objects"
        return CheckpointError(
            f"Refused to load {what} '{path}': it holds pickled Python code or objects ({named}), which could run "
            "arbitrary code when loaded, so it is refused as unsafe. Only tensors, numbers, strings and plain "
            "containers are accepted. Use a checkpoint written by this program or an official DiffIR file; if you "
            "made this file, save only the weights: torch.save({'params': net.state_dict()}, path).")
    if not data:
        why = "it is empty (0 bytes)"
    elif is_zip:
        first = text.split(". ")[0] if text else type(err).__name__
        why = f"it is damaged or truncated ({first})"
    else:
        why = "it is not a PyTorch checkpoint, or it is truncated"
    return CheckpointError(
        f"Cannot read {what} '{path}': {why}. Check the path (a .pth written by torch.save, or a .safetensors file); "
        "if it was copied or downloaded, copy it again.")


def load_file(path: str, what: str = "checkpoint") -> Any:
    """Read a checkpoint on CPU: ``torch.load(weights_only=True)``, or the state_dict of a ``.safetensors`` file.

    Raises ``FileNotFoundError`` for a missing file and :class:`CheckpointError` for one that cannot be used.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    if path.endswith(SAFETENSORS_EXT):
        return _load_safetensors(path, what)[0]
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of a file it then refuses
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - classified and re-raised with the file named
        with open(path, "rb") as f:
            data = f.read()
        # from None: torch's own text would advise disabling the safety check, which we never suggest
        raise _unreadable(path, what, e, data) from None


def _load_safetensors(path: str, what: str) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    try:
        from safetensors import safe_open
    except ImportError:
        raise CheckpointError(f"Reading {what} '{path}' needs the safetensors package: pip install safetensors") from None
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except Exception as e:  # noqa: BLE001 - the library raises its own SafetensorError / OSError
        raise CheckpointError(f"Cannot read {what} '{path}': it is not a valid .safetensors file ({e}). If it was "
                              "copied or downloaded, copy it again; export it again with scripts/export_safetensors.py."
                              ) from None


def read_safetensors_metadata(path: str) -> Dict[str, Any]:
    """The metadata of a ``.safetensors`` file, with its JSON values (``network_g``, ``tone``) decoded."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights not found: {path}")
    meta = _load_safetensors(path, "weights")[1]
    out: Dict[str, Any] = dict(meta)
    for key in ("network_g", "tone"):
        if key in meta:
            try:
                out[key] = json.loads(meta[key])
            except json.JSONDecodeError:
                raise CheckpointError(f"'{path}': metadata '{key}' is not valid JSON; export the file again") from None
    return out


def save_safetensors(state: Mapping[str, torch.Tensor], path: str, metadata: Mapping[str, Any]) -> None:
    """Write ``state`` as ``.safetensors`` atomically; dict/list metadata values are stored as JSON strings.

    Tensors that share storage (DiffIRS2's aliased ``diffusion.*`` copies) are written as separate copies, so the
    file loads into the network strictly.
    """
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    meta = {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in metadata.items()}
    atomic_write_bytes(path, save(tensors, metadata=meta))


#: above this share of the initial weights left in an EMA, loading ``params_ema`` is reported
EMA_INIT_SHARE_WARNING = 0.05


def ema_warning(ckpt: Any, path: str) -> Optional[str]:
    """The warning for ``params_ema`` that still hold much of the network's initialisation, or None.

    Our checkpoints record their EMA (``ema``: updates, ``init_share`` = the product of the decays so far); an EMA
    without warm-up after few updates is mostly the random start (0.999⁴⁰⁰ ≈ 67 %). Files without the record
    (official or older ones) are not judged.
    """
    record = ckpt.get("ema") if isinstance(ckpt, dict) else None
    if not isinstance(record, dict) or "init_share" not in record:
        return None
    share = float(record["init_share"])
    if share <= EMA_INIT_SHARE_WARNING:
        return None
    return (f"The EMA weights (params_ema) of '{path}' are the average of only {int(record.get('updates', 0))} "
            f"updates at ema_decay {record.get('decay')} and still hold {share:.0%} of the network's initial "
            "weights: they restore worse than the trained weights. Load 'params' instead (path:param_key_g: params, "
            "--param_key params) or train longer (train:ema_warmup: true, the default, avoids this).")


def network_record(net: nn.Module) -> Dict[str, Any]:
    """What a checkpoint records of a network's function beyond its weights: the settings of a parameter-free
    highlight gate (``gate.config()``, or None), which the state_dict cannot show."""
    gate = getattr(net, "gate", None)
    return {"highlight_gate": gate.config() if gate is not None else None}


def recorded_gate(ckpt: Any) -> Optional[Dict[str, Any]]:
    """The highlight-gate settings a checkpoint records (:func:`network_record`), or None (none, or no record)."""
    record = ckpt.get("network") if isinstance(ckpt, dict) else None
    gate = record.get("highlight_gate") if isinstance(record, dict) else None
    return dict(gate) if isinstance(gate, dict) else None


def check_network_record(ckpt: Any, net: nn.Module, path: str, what: str = "network_g") -> None:
    """Refuse weights trained with another highlight gate than ``net`` has (:func:`network_record`): the outputs
    would silently differ from the trained model's. Files without the record (official, older) are not judged."""
    record = ckpt.get("network") if isinstance(ckpt, dict) else None
    if not isinstance(record, dict) or "highlight_gate" not in record:
        return
    trained, own = recorded_gate(ckpt), network_record(net)["highlight_gate"]
    if trained == own:
        return
    fix = (f"highlight_gate: {json.dumps(trained)}" if trained is not None else "no highlight_gate (or null)")
    raise CheckpointMismatch(
        f"The checkpoint '{path}' was trained with network_g:highlight_gate {json.dumps(trained)}, but {what} "
        f"({type(net).__name__}) has {json.dumps(own)}: its outputs would not be the trained model's. Fix: give "
        f"{what} {fix}, as in the options the checkpoint was trained with.")


def training_state_message(path: str, iteration: Any) -> str:
    """Why a training state (``training_states/N.state``: optimizer, scheduler and RNG state) is not a network
    checkpoint, and the network checkpoint of the same iteration (``models/net_g_N.pth``) to use instead."""
    if not isinstance(iteration, int) or isinstance(iteration, bool):
        iteration = os.path.splitext(os.path.basename(path))[0]
    folder = os.path.dirname(os.path.normpath(path))
    models = os.path.join(os.path.dirname(folder) if os.path.basename(folder) == "training_states" else folder,
                          "models")
    return (f"'{path}' is a training state (optimizer, scheduler and random-number state of iteration {iteration} for "
            "--auto_resume), not network weights. Fix: use the network checkpoint of that iteration, "
            f"{os.path.join(models, f'net_g_{iteration}.pth')} (or net_g_latest.pth).")


def extract_state_dict(ckpt: Any, param_key: Optional[str], path: str) -> Dict[str, torch.Tensor]:
    """Pick ``ckpt[param_key]`` from a BasicSR container and strip DDP's ``module.`` prefixes.

    Loading ``params_ema`` that hold little training (:func:`ema_warning`) is logged as a warning.
    """
    state = ckpt
    if isinstance(ckpt, dict) and param_key:
        if param_key in ckpt:
            state = ckpt[param_key]
            warning = ema_warning(ckpt, path) if param_key == "params_ema" else None
            if warning:
                logging.getLogger("DiffIR").warning(warning)
        elif param_key == "params_ema" and "params" in ckpt:
            state = ckpt["params"]  # BasicSR saves only 'params' when EMA is off
        elif any(isinstance(v, torch.Tensor) for v in ckpt.values()):
            state = ckpt  # a bare state_dict
        elif "optimizers" in ckpt and "iter" in ckpt:
            raise CheckpointError(training_state_message(path, ckpt.get("iter")))
        else:
            raise CheckpointKeyError(f"Checkpoint '{path}' has no '{param_key}' entry (it has: "
                                     f"{', '.join(map(str, ckpt))}). Set path.param_key_g to one of those.")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"Checkpoint '{path}' [{param_key}] does not hold a state_dict (a mapping of names to "
                              "tensors): it is a training state or another kind of file. Use a network checkpoint, "
                              "e.g. experiments/NAME/models/net_g_latest.pth")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in state.items()}


def _few(keys: List[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def load_checked(net: nn.Module, state: Mapping[str, torch.Tensor], path: str, param_key: Optional[str] = None,
                 strict: bool = True, what: str = "network_g") -> None:
    """``net.load_state_dict(state)``; a checkpoint of another architecture → one :class:`CheckpointMismatch`.

    The message names the file, the network type, a few missing/unexpected/mis-shaped keys and what to check,
    instead of torch's list of every key.
    """
    own = net.state_dict()
    wrong = [f"{k} {tuple(v.shape)} in the file, {tuple(own[k].shape)} in the network"
             for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    missing = [k for k in own if k not in state] if strict else []
    extra = [k for k in state if k not in own] if strict else []
    if wrong or missing or extra:
        parts = [f"{label} {_few(keys)}" for label, keys in (("shapes differ:", wrong), ("missing in the file:", missing),
                                                             ("not in the network:", extra)) if keys]
        key = f" [{param_key}]" if param_key else ""
        raise CheckpointMismatch(
            f"The checkpoint '{path}'{key} does not fit {what} ({type(net).__name__}): {'; '.join(parts)}. It was "
            f"saved from a network of another type or size: check that {what} (type, dim, num_blocks, heads, ...) "
            "repeats the options the checkpoint was trained with, and that the path names the right file.")
    net.load_state_dict(dict(state), strict=strict)


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
