"""How batches are shaped over training: the one thing in which the two pipelines differ."""
from __future__ import annotations

from typing import Any, Dict, Optional

from DiffIR.utils.logger import Messages


class FixedBatchSchedule:
    """Every iteration uses the loader's batch and patch size unchanged (the HDR pipeline)."""

    def __init__(self, batch_size: int, gt_size: Optional[int], total_iter: int) -> None:
        self.batch_size = batch_size
        self.gt_size = gt_size
        self.total_iter = total_iter

    @classmethod
    def from_options(cls, opt: Dict[str, Any]) -> "FixedBatchSchedule":
        train = opt["datasets"]["train"]
        return cls(int(train["batch_size_per_gpu"]), train.get("gt_size"), int(opt["train"]["total_iter"]))

    def __call__(self, batch: Dict[str, Any], current_iter: int) -> Dict[str, Any]:
        return batch

    def summary(self, msg: Messages) -> str:
        return (f"{msg('hdr_config')}\n\t{msg('batch_size')}: {self.batch_size}"
                f"\n\t{msg('image_size')}: {self.gt_size}\n\t{msg('total_iters')}: {self.total_iter}")
