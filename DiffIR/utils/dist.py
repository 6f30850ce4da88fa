"""The one place that knows about torch.distributed: launch, rank queries, reductions."""
from __future__ import annotations

import functools
import os
import subprocess
import warnings
from typing import Callable, Tuple

import torch
import torch.distributed as dist


def init_dist(launcher: str, backend: str = "nccl", port: int = 29500) -> None:
    """Join the process group started by ``launcher`` ('pytorch' for torchrun/torch.distributed.launch, 'slurm').

    NCCL needs GPUs; without them we fall back to gloo with a notice, so multi-process runs also work on CPU.
    """
    if backend == "nccl" and not torch.cuda.is_available():
        warnings.warn("dist_params.backend is 'nccl' but no GPU is available: falling back to 'gloo'.")
        backend = "gloo"
    if launcher == "pytorch":
        rank = int(os.environ["RANK"]) if "RANK" in os.environ else int(os.environ.get("LOCAL_RANK", 0))
    elif launcher == "slurm":
        rank = int(os.environ["SLURM_PROCID"])
        world = int(os.environ["SLURM_NTASKS"])
        node_list = os.environ["SLURM_NODELIST"]
        addr = subprocess.getoutput(f"scontrol show hostname {node_list} | head -n1")
        os.environ.setdefault("MASTER_PORT", str(port))
        os.environ.setdefault("MASTER_ADDR", addr)
        os.environ["WORLD_SIZE"] = str(world)
        os.environ["RANK"] = str(rank)
        os.environ.setdefault("LOCAL_RANK", os.environ.get("SLURM_LOCALID", str(rank % max(1, torch.cuda.device_count()))))
    else:
        raise ValueError(f"Unknown launcher '{launcher}': use none, pytorch or slurm.")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(port))
    if backend == "nccl":
        torch.cuda.set_device(local_rank() % torch.cuda.device_count())
    dist.init_process_group(backend=backend, rank=rank, world_size=int(os.environ.get("WORLD_SIZE", 1)))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def get_dist_info() -> Tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    return get_dist_info()[0] == 0


def master_only(func: Callable) -> Callable:
    """Run ``func`` on rank 0 only (logging, file writes)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        if is_main_process():
            return func(*args, **kwargs)
        return None

    return wrapper


def reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Average a tensor over ranks (identity on one process)."""
    _, world = get_dist_info()
    if world > 1:
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        tensor /= world
    return tensor


def barrier() -> None:
    if get_dist_info()[1] > 1:
        dist.barrier()


def all_gather_objects(obj):
    """Every rank's ``obj`` as a list (``[obj]`` on one process); used to collect per-rank RNG states."""
    _, world = get_dist_info()
    if world == 1:
        return [obj]
    out = [None] * world
    dist.all_gather_object(out, obj)
    return out


def all_finite(value: torch.Tensor) -> bool:
    """True when ``value`` is finite on every rank (so all ranks take the same skip/step decision)."""
    flag = torch.isfinite(value.detach()).all().to(torch.float32).reshape(1)
    if get_dist_info()[1] > 1:
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item() > 0)


def any_rank(flag: bool) -> bool:
    """True when ``flag`` is true on any rank, so all ranks stop (and join the collective save) together."""
    if get_dist_info()[1] == 1:
        return flag
    # NCCL reduces CUDA tensors: "cuda" is this rank's device, which init_dist selected
    device = torch.device("cuda") if dist.get_backend() == "nccl" else None
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)
