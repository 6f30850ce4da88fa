"""What the program adds to a run besides the user's options: where it writes, which process it is, its seed.

These are not options — a user does not write them, and ``options_NAME.yml`` holds only what the user wrote — so
they live apart from the sections, in :class:`RunContext`; the weights each network loads are the user's
``path`` section (:class:`PathOptions`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

__all__ = ["RunPaths", "RunContext", "NetworkWeights", "PathOptions"]


@dataclass(frozen=True)
class RunPaths:
    """The folders of a run (``experiments/<name>/...`` for training, ``results/<name>/...`` for a test run)."""

    root: str = "."
    log: str = "."
    visualization: str = "visualization"
    experiments_root: Optional[str] = None
    models: Optional[str] = None
    training_states: Optional[str] = None
    results_root: Optional[str] = None

    @classmethod
    def from_path_section(cls, path: Optional[Mapping[str, Any]]) -> "RunPaths":
        path = path or {}
        return cls(**{k: str(path[k]) for k in cls.__dataclass_fields__ if path.get(k) is not None})


@dataclass(frozen=True)
class RunContext:
    """The process of a run: training or test, the launcher and process group, the GPUs, the seed, the folders."""

    is_train: bool = False
    launcher: str = "none"
    auto_resume: bool = False
    dist: bool = False
    rank: int = 0
    world_size: int = 1
    num_gpu: Any = 0  # resolved to a count by the loader ("auto" in option dicts made in code)
    seed: Optional[int] = None
    paths: RunPaths = RunPaths()

    @classmethod
    def from_opt(cls, opt: Mapping[str, Any]) -> "RunContext":
        """The context a pipeline recorded in the option dict (``finalize_options`` and the process group set
        these keys); defaults for an option dict made in code."""
        seed = opt.get("manual_seed")
        return cls(is_train=bool(opt.get("is_train", False)), launcher=str(opt.get("launcher") or "none"),
                   auto_resume=bool(opt.get("auto_resume", False)), dist=bool(opt.get("dist", False)),
                   rank=int(opt.get("rank", 0) or 0), world_size=int(opt.get("world_size", 1) or 1),
                   num_gpu=opt.get("num_gpu", 0),
                   seed=None if seed is None else int(seed), paths=RunPaths.from_path_section(opt.get("path")))


@dataclass(frozen=True)
class NetworkWeights:
    """``path:pretrain_network_<net>``, ``param_key_<net>`` and ``strict_load_<net>`` of one network."""

    path: Optional[str]
    param_key: str
    strict: bool


@dataclass(frozen=True)
class PathOptions:
    """The user's ``path`` section: the weights each network starts from, and an explicit resume state."""

    section: Mapping[str, Any]

    @property
    def resume_state(self) -> Optional[str]:
        return self.section.get("resume_state")

    def weights(self, net: str, param_key: str = "params") -> NetworkWeights:
        """The weights of ``network_<net>`` (``param_key``: the entry read when ``param_key_<net>`` is unset)."""
        return NetworkWeights(self.section.get(f"pretrain_network_{net}"),
                              str(self.section.get(f"param_key_{net}") or param_key),
                              bool(self.section.get(f"strict_load_{net}", True)))
