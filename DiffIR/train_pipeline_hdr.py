"""HDR pipeline: fixed batch and patch size every iteration (the guide's ``train_hdr.py``)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from DiffIR.batch_schedule import FixedBatchSchedule
from DiffIR.train_loop import train


def train_pipeline(root_path: str, argv: Optional[List[str]] = None) -> Dict[str, Any]:
    return train(root_path, FixedBatchSchedule.from_options, argv=argv, default_language="zh")
