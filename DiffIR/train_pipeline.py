"""Deblurring pipeline: the official progressive batch/patch schedule (the original ``train.py``).

The loop is :func:`DiffIR.train_loop.train`, shared with the HDR pipeline; only the batch schedule
differs (without the progressive keys it is the HDR pipeline's fixed one). Messages default to English
(``logger.language: zh`` switches).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from DiffIR.batch_schedule import schedule_from_options
from DiffIR.train_loop import train


def train_pipeline(root_path: str, argv: Optional[List[str]] = None) -> Dict[str, Any]:
    """Train with progressive ``mini_batch_sizes`` / ``gt_sizes`` over the cumulative ``iters`` stages."""
    return train(root_path, schedule_from_options, argv=argv, default_language="en")
