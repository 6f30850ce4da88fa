"""How much memory a training step needs, from the network's size and the batch: for planning and for messages.

Activations dominate a DIRformer step and grow with the pixels of the batch and, per transformer block, with its
width and resolution. :func:`activation_units` counts ``dim`` times the blocks weighted by their channels and
pixels relative to level 1 (a level-2 block has 2x the channels at 1/4 the pixels: 0.5); a step then needs about
``STEP_BYTES[mode]`` bytes per pixel of the batch and activation unit, plus the network, its EMA copy and the
optimizer state. The coefficients are measured by ``benchmarks/bench_memory.py`` (docs/benchmarks.md "Memory").
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

import torch

from DiffIR.utils.errors import OutOfMemory

__all__ = ["OFFICIAL_NET", "STEP_BYTES", "activation_units", "estimate_step_bytes", "mode_of", "fitting_settings",
           "is_out_of_memory", "device_memory", "available_memory", "training_oom_message", "inference_oom_message",
           "setting_text", "out_of_memory_stops", "memory_short_warning"]

#: the official DiffIR stage-1 network (options/train_DiffIRs1_hdr.yml)
OFFICIAL_NET: Dict[str, Any] = {"dim": 48, "num_blocks": [4, 6, 6, 8], "num_refinement_blocks": 4}

#: bytes per pixel of the batch and activation unit, by (amp, checkpointing): the slopes bench_memory.py fitted at
#: the seed network size on the CPU (batch 1-2, 64²-128²; 2026-12-03, docs/benchmarks.md "Memory"). CUDA's caching
#: allocator adds its fragmentation on top, hence the 0.85 of the device memory the messages plan with.
STEP_BYTES: Dict[Tuple[str, bool], float] = {("fp32", False): 135.0, ("bf16", False): 79.4,
                                              ("fp32", True): 26.7, ("bf16", True): 16.9}


def activation_units(net: Mapping[str, Any]) -> float:
    """``dim`` x the resolution-weighted block count of a DIRformer's options (encoder, latent, decoder,
    refinement; decoder level 1 and the refinement run at 2·dim)."""
    dim = int(net.get("dim", 48))
    n = list(net.get("num_blocks", [4, 6, 6, 8]))
    refine = int(net.get("num_refinement_blocks", 4))
    encoder = n[0] + n[1] / 2 + n[2] / 4 + n[3] / 8
    decoder = n[2] / 4 + n[1] / 2 + 2 * n[0] + 2 * refine
    return dim * (encoder + decoder)


def mode_of(amp: str, grad_checkpoint: int) -> Tuple[str, bool]:
    """The :data:`STEP_BYTES` key of a run's ``train.amp`` and ``train.grad_checkpoint`` (fp16 as bf16)."""
    return ("fp32" if amp in ("none", "", None) else "bf16"), bool(grad_checkpoint)


def estimate_step_bytes(net: Mapping[str, Any], pixels: int, amp: str = "none", grad_checkpoint: int = 0) -> float:
    """Activation bytes of one training step over ``pixels`` = batch x H x W (the network and optimizer aside)."""
    return STEP_BYTES[mode_of(amp, grad_checkpoint)] * activation_units(net) * pixels


def fitting_settings(net: Mapping[str, Any], budget_bytes: float, batch: int, patch: int
                     ) -> List[Tuple[str, int, int]]:
    """Settings that would fit ``budget_bytes``: ``(modes, batch, patch)`` — the same batch and patch with bf16
    and/or checkpointing first, then smaller batches and patches (multiples of 8) in fp32 with checkpointing."""
    out: List[Tuple[str, int, int]] = []
    for amp, ckpt, label in (("bf16", 0, "train:amp: bf16"), ("none", 1, "train:grad_checkpoint: true"),
                             ("bf16", 1, "train:amp: bf16 + train:grad_checkpoint: true")):
        if estimate_step_bytes(net, batch * patch * patch, amp, ckpt) <= budget_bytes:
            out.append((label, batch, patch))
    b, p = batch, patch
    while not out and (b > 1 or p > 64):
        b, p = (max(1, b // 2), p) if b > 1 else (b, max(64, (p // 2) // 8 * 8))
        if estimate_step_bytes(net, b * p * p, "bf16", 1) <= budget_bytes:
            out.append(("train:amp: bf16 + train:grad_checkpoint: true", b, p))
    return out


def is_out_of_memory(exc: BaseException) -> bool:
    """A CUDA out-of-memory error, or the CPU allocator's "can't allocate memory"."""
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc))


def device_memory(device: torch.device) -> Tuple[Optional[float], Optional[float]]:
    """``(peak bytes this process reached, total bytes of the device)``; None where unknown."""
    if device.type == "cuda":
        return float(torch.cuda.max_memory_allocated(device)), float(torch.cuda.get_device_properties(device).total_memory)
    return _meminfo_kb("/proc/self/status", "VmHWM"), _meminfo_kb("/proc/meminfo", "MemTotal")


def available_memory(device: torch.device) -> Optional[float]:
    """Bytes a new allocation can still get: the free device memory on CUDA, MemAvailable on the CPU."""
    if device.type == "cuda":
        return float(torch.cuda.mem_get_info(device)[0])
    return _meminfo_kb("/proc/meminfo", "MemAvailable")


def _meminfo_kb(path: str, field: str) -> Optional[float]:
    try:
        with open(path) as f:
            return next(float(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))
    except (OSError, StopIteration, ValueError):
        return None


def _gb(value: Optional[float]) -> str:
    return "unknown" if value is None else f"{value / 2 ** 30:.1f} GB"


def setting_text(batch: int, patch: Optional[int], amp: str, grad_checkpoint: int) -> str:
    size = f"{patch}²" if patch else "whole images"
    ckpt = "off" if not grad_checkpoint else ("every block" if grad_checkpoint == 1 else f"every {grad_checkpoint}th block")
    return f"batch {batch} x {size} per GPU, train:amp {amp or 'none'}, train:grad_checkpoint {ckpt}"


def training_oom_message(net: Mapping[str, Any], device: torch.device, batch: int, patch: Optional[int], amp: str,
                         grad_checkpoint: int, iteration: int) -> str:
    """What a user needs after a training step ran out of memory: the setting, the peak and the device's memory,
    the estimate, and settings that would fit."""
    peak, total = device_memory(device)
    text = (f"Out of memory on {device} in training iteration {iteration} ({setting_text(batch, patch, amp, grad_checkpoint)}):"
            f" the step reached {_gb(peak)} of the device's {_gb(total)}.")
    if patch and total:
        need = estimate_step_bytes(net, batch * patch * patch, amp, grad_checkpoint)
        text += f" Such a step needs about {_gb(need)} of activations (docs/benchmarks.md \"Memory\")."
        fits = fitting_settings(net, 0.85 * total, batch, patch)
        if fits:
            text += " Fix: " + "; or ".join(f"{label}" + ("" if (b, p) == (batch, patch) else
                                                          f" with batch_size_per_gpu {b} and gt_size {p}")
                                             for label, b, p in fits[:3]) + "."
        else:
            text += " Fix: a smaller gt_size or batch_size_per_gpu, with train:amp: bf16 and train:grad_checkpoint: true."
    else:
        text += " Fix: lower batch_size_per_gpu or gt_size, or set train:amp: bf16 and train:grad_checkpoint: true."
    return text + " Nothing was half-written: the last saved checkpoint is intact (continue with --auto_resume)."


def inference_oom_message(device: torch.device, where: str, tile_size: Optional[int]) -> str:
    """After validation or a test ran out of memory on a whole image: tiling is the fix."""
    peak, total = device_memory(device)
    tiles = f"val:tile_size is {tile_size}: use a smaller one, e.g. {max(64, (tile_size // 2) // 8 * 8)}" if tile_size \
        else "set val:tile_size (e.g. 512) to run each image in tiles"
    return (f"Out of memory on {device} in {where}: it reached {_gb(peak)} of the device's {_gb(total)}. Fix: {tiles} "
            "(the prior is still taken from the whole image), or set val:self_ensemble: 0.")


@contextlib.contextmanager
def out_of_memory_stops(message: Callable[[], str]) -> Iterator[None]:
    """Turn an out-of-memory error inside the block into :class:`OutOfMemory` with ``message()`` (one line for
    people instead of an allocator traceback); the cached device memory is released first."""
    try:
        yield
    except (torch.OutOfMemoryError, RuntimeError) as e:
        if not is_out_of_memory(e):
            raise
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise OutOfMemory(message()) from None


def memory_short_warning(net: Mapping[str, Any], device: torch.device, batch: int, patch: Optional[int], amp: str,
                         grad_checkpoint: int) -> Optional[str]:
    """On the CPU, before the first step: a warning when the estimated step exceeds the available memory (the
    system would swap or kill the run), with settings that would fit; else None."""
    free = available_memory(device) if device.type == "cpu" else None
    if not patch or free is None:
        return None
    need = estimate_step_bytes(net, batch * patch * patch, amp, grad_checkpoint)
    if need <= free:
        return None
    fits = fitting_settings(net, 0.85 * free, batch, patch)
    advice = "; or ".join(label + ("" if (b, p) == (batch, patch) else f" with batch_size_per_gpu {b} and gt_size {p}")
                          for label, b, p in fits[:3])
    return (f"A training step of this run ({setting_text(batch, patch, amp, grad_checkpoint)}) needs about "
            f"{_gb(need)} of memory, but {_gb(free)} is available: it may swap or be killed."
            + (f" Settings that would fit: {advice}." if advice else " Lower batch_size_per_gpu or gt_size."))
