"""Where a run's figures go besides its log file: scalars and images at a step, then ``close``.

The training loop owns the sinks (rank 0 only) and is the one place that writes to them; models return their
validation results instead of writing anywhere. A new tracker is one more :class:`LogSink` added to the
:class:`SinkGroup` the loop builds, without touching the models or the loop's steps.
"""
from __future__ import annotations

from typing import Iterable, List, Mapping, Protocol, runtime_checkable

import numpy as np

__all__ = ["LogSink", "SinkGroup", "TensorBoardSink"]


@runtime_checkable
class LogSink(Protocol):
    """What a tracker offers the loop: figures at a step, images as H x W x 3 RGB ``uint8`` arrays."""

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        ...

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        ...

    def close(self) -> None:
        ...


class SinkGroup:
    """Every sink of a run as one (none at all is a valid group: a debug run, a rank > 0, ``use_tb_logger: false``)."""

    def __init__(self, sinks: Iterable[LogSink] = ()) -> None:
        self.sinks: List[LogSink] = list(sinks)

    def __bool__(self) -> bool:
        return bool(self.sinks)

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        if values:
            for sink in self.sinks:
                sink.scalars(values, step)

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        for sink in self.sinks:
            sink.image(tag, image, step)

    def close(self) -> None:
        """Close every sink once (a second call does nothing)."""
        sinks, self.sinks = self.sinks, []
        for sink in sinks:
            sink.close()


class TensorBoardSink:
    """``tb_logger/<name>/`` event files (torch's SummaryWriter, imported only when a run asks for it)."""

    def __init__(self, log_dir: str) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=log_dir)

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        self.writer.add_image(tag, image, step, dataformats="HWC")

    def close(self) -> None:
        self.writer.close()
