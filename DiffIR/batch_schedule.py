"""How batches are shaped over training: the one thing in which the two pipelines differ.

* :class:`FixedBatchSchedule`: the loader's batch, unchanged (``train_hdr.py``, and ``train.py`` without the
  progressive keys).
* :class:`ProgressiveBatchSchedule` (deblurring pipeline, ``train.py``): the official DiffIR / Restormer
  progressive patch training. The loader always delivers ``batch_size_per_gpu`` patches of ``gt_size``;
  the stage of an iteration is found from the cumulative ``iters`` boundaries, and that stage's
  ``mini_batch_sizes[k]`` samples (drawn without replacement) and one random ``gt_sizes[k]`` window
  (same offset for every sample and for LQ/GT) are kept.

:func:`schedule_from_options` is the one place that picks between them.
"""
from __future__ import annotations

import bisect
import itertools
import logging
import math
import random
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import torch

from DiffIR.data.paired_common import PROGRESSIVE_KEYS
from DiffIR.utils.logger import LOGGER_NAME, Messages
from DiffIR.utils.errors import OptionError

__all__ = ["FixedBatchSchedule", "ProgressiveBatchSchedule", "PROGRESSIVE_KEYS", "schedule_from_options"]

_WHERE = "datasets:train"


class FixedBatchSchedule:
    """Every iteration uses the loader's batch and patch size unchanged (one stage)."""

    num_stages = 1

    def __init__(self, batch_size: int, gt_size: Optional[int], total_iter: int) -> None:
        self.batch_size = batch_size
        self.gt_size = gt_size
        self.total_iter = total_iter

    @staticmethod
    def from_options(opt: Dict[str, Any]) -> "FixedBatchSchedule":
        """``train_hdr.py``'s schedule: it refuses the progressive keys rather than ignore them."""
        return schedule_from_options(opt, progressive=False)

    def sizes_at(self, current_iter: int) -> Tuple[int, Optional[int]]:
        return self.batch_size, self.gt_size

    def __call__(self, batch: Dict[str, Any], current_iter: int) -> Dict[str, Any]:
        return batch

    def summary(self, msg: Messages) -> str:
        return (f"{msg('hdr_config')}\n\t{msg('batch_size')}: {self.batch_size}"
                f"\n\t{msg('image_size')}: {self.gt_size}\n\t{msg('total_iters')}: {self.total_iter}")


def schedule_from_options(opt: Dict[str, Any], progressive: bool = True) -> Any:
    """The batch schedule ``datasets:train`` asks for: progressive when it sets the progressive keys, else fixed.

    ``progressive=False`` (``train_hdr.py``) refuses the keys: that pipeline would silently ignore them.
    """
    train = opt["datasets"]["train"]
    given = [k for k in PROGRESSIVE_KEYS if train.get(k) is not None]
    if not given:
        return FixedBatchSchedule(int(train["batch_size_per_gpu"]), train.get("gt_size"),
                                  int(opt["train"]["total_iter"]))
    if not progressive:
        raise OptionError(
            f"'{_WHERE}:{given[0]}' ({', '.join(given)}) configures progressive training, which this pipeline "
            f"(fixed batch and patch size) does not do. Fix: run train.py for progressive training, or remove "
            f"{', '.join(given)} from datasets:train.")
    if len(given) != len(PROGRESSIVE_KEYS):
        missing = [k for k in PROGRESSIVE_KEYS if k not in given]
        raise OptionError(f"'{_WHERE}' sets {', '.join(given)} but not {', '.join(missing)}: progressive training "
                          f"needs all of {', '.join(PROGRESSIVE_KEYS)}. Fix: add {', '.join(missing)}.")
    if train.get("gt_size") is None:
        raise OptionError(f"'{_WHERE}:gt_size' is missing: progressive training crops its patches from the "
                          "gt_size patches of the loader. Fix: set gt_size to the largest patch size, e.g. 512.")
    return ProgressiveBatchSchedule(train["batch_size_per_gpu"], train["gt_size"], train["mini_batch_sizes"],
                                    train["iters"], train["gt_sizes"], opt["train"]["total_iter"])


def _positive_int(value: Any, key: str) -> int:
    """An integer >= 1 (integral floats such as ``!!float 5e3`` are accepted)."""
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or value != int(value) or value < 1):
        raise OptionError(f"'{key}' must be a positive integer, got {value!r}. Fix: use a whole number >= 1.")
    return int(value)


def _positive_int_list(value: Any, key: str) -> List[int]:
    if not isinstance(value, (list, tuple)) or not value:
        raise OptionError(f"'{key}' must be a non-empty list of positive integers, got {value!r}. "
                          f"Fix: e.g. {key.rsplit(':', 1)[-1]}: [8, 4, 2].")
    return [_positive_int(v, f"{key}[{i}]") for i, v in enumerate(value)]


class ProgressiveBatchSchedule:
    """Progressive batch/patch sizes by iteration, as the official DiffIR ``train_pipeline.py``.

    Stage ``k`` covers iterations ``sum(iters[:k]) + 1 .. sum(iters[:k+1])`` (``bisect_left`` on the
    cumulative boundaries); iterations past ``sum(iters)`` stay in the last stage. Random choices use
    Python's ``random`` module, as the official code does; its state is part of every training state, so
    a resumed run draws what the uninterrupted run would have drawn.
    """

    def __init__(self, batch_size: int, gt_size: int, mini_batch_sizes: Sequence[int], iters: Sequence[int],
                 gt_sizes: Sequence[int], total_iter: int, where: str = _WHERE) -> None:
        self.batch_size = _positive_int(batch_size, f"{where}:batch_size_per_gpu")
        self.gt_size = _positive_int(gt_size, f"{where}:gt_size")
        self.total_iter = _positive_int(total_iter, "train:total_iter")
        self.mini_batch_sizes = _positive_int_list(mini_batch_sizes, f"{where}:mini_batch_sizes")
        self.iters = _positive_int_list(iters, f"{where}:iters")
        self.gt_sizes = _positive_int_list(gt_sizes, f"{where}:gt_sizes")
        lengths = {len(self.mini_batch_sizes), len(self.iters), len(self.gt_sizes)}
        if len(lengths) != 1:
            raise OptionError(
                f"'{where}:mini_batch_sizes', 'iters' and 'gt_sizes' must have one entry per stage, but have "
                f"{len(self.mini_batch_sizes)}, {len(self.iters)} and {len(self.gt_sizes)} entries. Fix: give all "
                "three lists the same length.")
        for i, (mb, gs) in enumerate(zip(self.mini_batch_sizes, self.gt_sizes)):
            if gs > self.gt_size:
                raise OptionError(
                    f"'{where}:gt_sizes[{i}]' = {gs} is larger than '{where}:gt_size' = {self.gt_size}, the patch size "
                    f"the loader delivers. Fix: set gt_size to at least {max(self.gt_sizes)} or lower gt_sizes[{i}].")
            if mb > self.batch_size:
                raise OptionError(
                    f"'{where}:mini_batch_sizes[{i}]' = {mb} is larger than '{where}:batch_size_per_gpu' = "
                    f"{self.batch_size}, the batch the loader delivers. Fix: set batch_size_per_gpu to at least "
                    f"{max(self.mini_batch_sizes)} or lower mini_batch_sizes[{i}].")
        self.boundaries: List[int] = list(itertools.accumulate(self.iters))
        self._announced: Set[int] = set()
        self._msg = Messages("en")
        self._logger = logging.getLogger(LOGGER_NAME)

    @staticmethod
    def from_options(opt: Dict[str, Any]) -> Any:
        """``train.py``'s schedule (official schema); without the progressive keys it is the fixed one."""
        return schedule_from_options(opt)

    # ------------------------------------------------------------------ stages
    @property
    def num_stages(self) -> int:
        return len(self.iters)

    def stage_index(self, current_iter: int) -> int:
        """0-based stage of iteration ``current_iter`` (1-based, as the loop counts)."""
        return min(bisect.bisect_left(self.boundaries, current_iter), self.num_stages - 1)

    def sizes_at(self, current_iter: int) -> Tuple[int, int]:
        """``(mini_batch_size, patch_size)`` used at iteration ``current_iter``."""
        k = self.stage_index(current_iter)
        return self.mini_batch_sizes[k], self.gt_sizes[k]

    def stage_range(self, stage: int) -> Tuple[int, int]:
        """First and last iteration of ``stage`` (the last stage runs to the end of training)."""
        start = 1 + (self.boundaries[stage - 1] if stage > 0 else 0)
        end = self.boundaries[stage]
        if stage == self.num_stages - 1:
            end = max(end, self.total_iter)
        return start, end

    # ------------------------------------------------------------------ per iteration
    def __call__(self, batch: Dict[str, Any], current_iter: int) -> Dict[str, Any]:
        """This iteration's batch: a random subset of samples, one random window of every image tensor.

        Image tensors are the 4-D ``B x C x H x W`` entries (``lq``, ``gt``, ...); other per-sample
        entries (``dgain``/``gamma`` tensors, path lists) are subset with the same indices.
        """
        stage = self.stage_index(current_iter)
        mini_batch, patch = self.mini_batch_sizes[stage], self.gt_sizes[stage]
        if stage not in self._announced:
            self._announced.add(stage)
            start, end = self.stage_range(stage)
            self._logger.info(self._msg("progressive_switch", stage=stage + 1, stages=self.num_stages, start=start,
                                        end=end, patch=patch, batch=mini_batch))
        lq = batch["lq"]
        n, (h, w) = lq.shape[0], lq.shape[-2:]
        keep = mini_batch * max(1, n // self.batch_size)  # a loader batch of N x batch_size: N mini-batches
        out = dict(batch)
        if keep < n:
            indices = random.sample(range(n), k=keep)
            out = {key: _take(value, indices, n) for key, value in out.items()}
        if patch < h or patch < w:
            if patch > h or patch > w:
                raise OptionError(f"Progressive training: the batch holds {h}x{w} patches, smaller than this stage's "
                                  f"patch size {patch}. Fix: the dataset must crop gt_size >= every gt_sizes entry.")
            top = int((h - patch) * random.random())
            left = int((w - patch) * random.random())
            out = {key: _crop(key, value, top, left, patch, (h, w)) for key, value in out.items()}
        return out

    def summary(self, msg: Messages) -> str:
        """The stage table; also takes over the loop's language for the switch messages and warns on a
        ``sum(iters)`` that does not match ``train:total_iter``."""
        self._msg = msg
        lines = [msg("progressive_config", batch=self.batch_size, size=self.gt_size, total=self.total_iter)]
        for k in range(self.num_stages):
            start, end = self.stage_range(k)
            lines.append("\t" + msg("progressive_stage_line", stage=k + 1, start=start, end=end,
                                    batch=self.mini_batch_sizes[k], patch=self.gt_sizes[k]))
        total_planned = self.boundaries[-1]
        if total_planned < self.total_iter:
            self._logger.warning(msg("progressive_iters_short", sum=total_planned, total=self.total_iter,
                                     batch=self.mini_batch_sizes[-1], patch=self.gt_sizes[-1]))
        elif total_planned > self.total_iter:
            last = self.stage_index(self.total_iter)
            self._logger.warning(msg("progressive_iters_long", sum=total_planned, total=self.total_iter, stage=last + 1,
                                     skipped=self.num_stages - 1 - last))
        return "\n".join(lines)


def _take(value: Any, indices: List[int], n: int) -> Any:
    """``value`` restricted to ``indices`` if it holds one entry per sample; unchanged otherwise."""
    if torch.is_tensor(value):
        return value[indices] if value.dim() >= 1 and value.shape[0] == n else value
    if isinstance(value, (list, tuple)) and len(value) == n:
        return type(value)(value[i] for i in indices)
    return value


def _crop(key: str, value: Any, top: int, left: int, size: int, hw: Tuple[int, int]) -> Any:
    """The ``size x size`` window at ``(top, left)`` of a 4-D image tensor; other entries unchanged."""
    if not (torch.is_tensor(value) and value.dim() == 4):
        return value
    if tuple(value.shape[-2:]) != tuple(hw):
        raise ValueError(f"Progressive training crops every image tensor of a batch at the same place, but "
                         f"'{key}' is {tuple(value.shape[-2:])} while 'lq' is {tuple(hw)}.")
    return value[:, :, top:top + size, left:left + size]
