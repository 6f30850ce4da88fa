"""What the CPU offers for the speed options: AMX, AVX-512 (with bf16), AVX2.

The kinds matter because torch picks different kernels for each: oneDNN runs bf16 convolutions and matmuls on AMX
tiles where the CPU has them, inductor vectorises for the widest ISA it finds (``torch._inductor.cpu_vec_isa``),
and ATen's own kernels follow ``torch.backends.cpu.get_cpu_capability()``. Benchmarks print this, and the speed
options choose their workarounds from :func:`cpu_kind`.
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from typing import Iterable, Optional, Set

import torch

__all__ = ["cpu_flags", "cpu_kind", "describe_cpu", "onednn_isa"]

_REPORTED = ("amx_tile", "amx_bf16", "amx_fp16", "avx512f", "avx512_bf16", "avx512_vnni", "avx512_fp16", "avx2")


def cpu_flags(path: str = "/proc/cpuinfo") -> Set[str]:
    """The feature flags of the first CPU in ``path`` (empty where the file does not exist, e.g. not Linux)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except FileNotFoundError:
        pass
    return set()


def _torch_has(name: str) -> bool:
    probe = getattr(torch.cpu, name, None)  # private probes of torch.cpu; absent in some builds
    return bool(probe()) if callable(probe) else False


def cpu_kind(flags: Optional[Iterable[str]] = None, capability: Optional[str] = None) -> str:
    """``"amx"``, ``"avx512"``, ``"avx2"`` or ``"other"`` for this CPU (or for the given flags and capability).

    AMX counts where both the CPU lists ``amx_bf16``/``amx_tile`` and torch sees them (torch's probe also checks
    that the kernel lets the process use the tiles). AVX-512 follows ATen's capability, which also honours
    ``ATEN_CPU_CAPABILITY``.
    """
    if flags is None:
        flags = cpu_flags()
        amx = _torch_has("_is_amx_tile_supported") and "amx_bf16" in flags
    else:
        flags = set(flags)
        amx = {"amx_tile", "amx_bf16"} <= flags
    capability = (capability or torch.backends.cpu.get_cpu_capability()).upper()
    if capability.startswith("AVX512"):
        return "amx" if amx else "avx512"
    if capability.startswith("AVX2"):
        return "avx2"
    return "other"


def describe_cpu() -> str:
    """One line for logs and benchmarks: model, kind, the relevant flags, ATen capability, threads, ISA overrides."""
    flags = cpu_flags()
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except FileNotFoundError:
        pass
    have = [f for f in _REPORTED if f in flags] or ["(flags unknown)"]
    overrides = [f"{k}={os.environ[k]}" for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
                 if k in os.environ]
    return (f"{model}; kind {cpu_kind()}; flags {' '.join(have)}; torch capability "
            f"{torch.backends.cpu.get_cpu_capability()}; {torch.get_num_threads()} threads"
            + (f"; {' '.join(overrides)}" if overrides else ""))


_ONEDNN_PROBE = ("import torch\n"
                 "x = torch.rand(1, 64, 32, 32).to(memory_format=torch.channels_last)\n"
                 "torch.nn.functional.conv2d(x, torch.rand(64, 64, 3, 3), padding=1)\n")


def onednn_isa(timeout: float = 120.0) -> Optional[str]:
    """oneDNN's version and the ISA it dispatches to here (as its verbose log says), e.g.
    ``"oneDNN v3.12.0: Intel AVX-512 with Intel DL Boost and bfloat16 support"``; None where it cannot be told.

    Asked in a child process, because oneDNN prints this once, on its first primitive, and only with
    ``ONEDNN_VERBOSE`` set before it starts; ``ONEDNN_MAX_CPU_ISA`` in the environment applies to the child too.
    """
    env = dict(os.environ, ONEDNN_VERBOSE="1")
    try:
        out = subprocess.run([sys.executable, "-c", _ONEDNN_PROBE], env=env, capture_output=True, text=True,
                             timeout=timeout).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    version = isa = None
    for line in out.splitlines():
        if ",info,oneDNN " in line:
            version = line.split(",info,", 1)[1].split(" (")[0]
        elif ",info,cpu,isa:" in line:
            isa = line.split(",info,cpu,isa:", 1)[1].strip()
    return f"{version or 'oneDNN'}: {isa}" if isa else None
