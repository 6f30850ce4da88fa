"""Training speed options that touch torch's compiler and backends: ``train.compile`` and ``train.cudnn_benchmark``.

Kept apart from :class:`~DiffIR.models.base_model.BaseModel` because they change process-wide settings
(``torch._inductor.config``, ``torch._dynamo.config``, ``torch.backends.cudnn``) and work around compiler bugs of a
given torch version; the model only asks for a compiled training callable.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from DiffIR.utils.cpu_features import cpu_kind


def inductor_cpu_settings(kind: str, amp_dtype: Optional[torch.dtype]) -> Dict[str, Any]:
    """The ``torch._inductor.config`` settings a compiled half-precision CPU run needs, by :func:`cpu_kind`.

    - ``avx512`` and ``amx``: ``cpp.simdlen = 256``. With torch 2.13, inductor's 512-bit bf16 kernels for the
      DIRformer's attention (L2-normalised q/k feeding a transposed matmul) computed NaN on an AVX-512 CPU; 256-bit
      kernels are correct (reproducer in tests/test_speed_options.py, findings in docs/benchmarks.md). On AMX
      CPUs inductor would pick its ``VecAMX`` ISA, 512-bit as well, so the same limit applies; it leaves oneDNN's
      AMX convolutions and matmuls alone (they are ATen calls, not inductor kernels), so it cannot fix oneDNN's
      AMX bf16 matmul bug: the attention runs in fp32 under CPU autocast for that
      (``DiffIR.archs.dirformer.attention_in_fp32``).
    - ``avx2`` and others: nothing (256-bit or narrower already).
    """
    if amp_dtype is None or kind not in ("amx", "avx512"):
        return {}
    return {"cpp.simdlen": 256}


def avoid_inductor_cpu_half_precision_bug(device: torch.device, amp_dtype: Optional[torch.dtype],
                                          kind: Optional[str] = None) -> Optional[str]:
    """Apply :func:`inductor_cpu_settings` for this CPU (``kind`` from :func:`cpu_kind` unless given).

    Returns a notice for the log where a setting was changed, else None. A ``simdlen`` the user set is kept.
    """
    if device.type != "cpu" or amp_dtype is None:
        return None
    import torch._inductor.config as inductor_config

    kind = kind or cpu_kind()
    settings = inductor_cpu_settings(kind, amp_dtype)
    if not settings or inductor_config.cpp.simdlen is not None:
        return None
    inductor_config.cpp.simdlen = settings["cpp.simdlen"]
    what = {"amx": "an AMX", "avx512": "an AVX-512"}[kind]
    return (f"train:compile with train:amp on {what} CPU: inductor kernels limited to 256-bit vectors "
            "(its 512-bit half-precision kernels give NaN outputs for this network in torch 2.13)")


def prefer_channels_last_in_inductor_backward(device: torch.device) -> Optional[str]:
    """Let inductor lay out *backward* graphs for oneDNN on the CPU, as it already does forward graphs.

    Inductor's layout optimisation (channels-last buffers around convolutions) only switches on for graphs that
    contain a forward convolution. A backward graph holds convolution-backward ops only, so its fused kernels write
    channels-first or transposed buffers that are then copied to channels-last before every oneDNN convolution
    backward, which takes away most of what compiling gains (figures in docs/benchmarks.md). Returns a notice for
    the log where the setting was changed; an environment override (``TORCHINDUCTOR_FORCE_LAYOUT_OPT``) is kept.
    """
    if device.type != "cpu" or "TORCHINDUCTOR_FORCE_LAYOUT_OPT" in os.environ:
        return None
    import torch._inductor.config as inductor_config

    if inductor_config.force_layout_optimization:
        return None
    inductor_config.force_layout_optimization = True
    return "train:compile on the CPU: inductor lays out backward graphs channels-last too (force_layout_optimization)"


def apply_cudnn_benchmark(value: bool, device: torch.device) -> Optional[bool]:
    """Set ``torch.backends.cudnn.benchmark`` to ``value`` (``RunOptions.cudnn_benchmark``) for a CUDA run; returns
    the value set (None off CUDA, where the flag means nothing and is left as it is). Autotuning picks the fastest
    convolution algorithms for the first batch shape; with changing patch sizes (progressive training) each new
    shape is tuned once, so it pays off after a few iterations."""
    if device.type != "cuda":
        return None
    torch.backends.cudnn.benchmark = value
    return value


def repeated_blocks(net: nn.Module) -> List[nn.Module]:
    """The modules whose type a submodule of ``net`` lists in its ``repeated_blocks`` attribute (in module order)."""
    types = tuple({t for m in net.modules() for t in getattr(m, "repeated_blocks", ())})
    return [m for m in net.modules() if types and isinstance(m, types)]


def compile_for_training(net: nn.Module, blocks: List[nn.Module], device: torch.device,
                         amp_dtype: Optional[torch.dtype], logger: logging.Logger) -> Tuple[nn.Module, List[nn.Module]]:
    """The training callable for ``train.compile`` and the blocks compiled in place: ``(net, blocks)`` when
    ``blocks`` (:func:`repeated_blocks` of the bare network) are given, else ``(torch.compile(net), [])``.

    Regional compilation: where the network declares ``repeated_blocks`` (the DIRformer's transformer block),
    each such block is compiled in place, one static-shape graph per feature shape, shared by all blocks of
    that shape; the rest runs eagerly. It compiles in a fraction of the time the whole network takes, and its
    steps ran faster on the CPU (docs/benchmarks.md). Networks without the declaration are compiled whole.
    Checkpoint keys stay plain either way. Where compilation is unsupported, training continues eagerly with a
    notice: ``(net, [])``.
    """
    try:
        import torch._dynamo

        torch._dynamo.config.suppress_errors = True  # a graph that fails to compile runs eagerly
        for notice in (avoid_inductor_cpu_half_precision_bug(device, amp_dtype),
                       prefer_channels_last_in_inductor_backward(device)):
            if notice:
                logger.info(notice)
        if not blocks:
            compiled = torch.compile(net)
            logger.info("train:compile: the network is compiled on its first iterations (this takes minutes).")
            return compiled, []
        # Static shapes: a dynamic-shape graph of this block fails to compile in torch 2.13 (and would then run
        # eagerly). The progressive pipeline's patch and batch sizes need more graphs than dynamo's default 8.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        for block in blocks:
            block.compile(dynamic=False)
        logger.info(f"train:compile: {len(blocks)} {type(blocks[0]).__name__} modules compiled in place, one "
                    "graph per feature shape, on the first iterations and again when the patch or batch size changes.")
        return net, blocks
    except Exception as e:  # noqa: BLE001 - reported, then eager
        for block in blocks:
            block._compiled_call_impl = None  # undo a partial nn.Module.compile
        logger.warning(f"train:compile is not supported here ({type(e).__name__}: {e}); training eagerly.")
        return net, []
