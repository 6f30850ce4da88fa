"""Errors that end a run with a message for people (see DiffIR.utils.cli), and the pre-emption signal flag."""
from __future__ import annotations

import signal
import threading
from typing import Any


class TrainingStopped(RuntimeError):
    """Training cannot continue sensibly (e.g. the loss diverged); the last good checkpoint is kept."""


class Preempted(TrainingStopped):
    """SIGTERM arrived (cluster pre-emption); a training state was saved before stopping."""


class PreemptionFlag:
    """Context manager turning SIGTERM into a flag the loop checks after each iteration.

    The loop then saves a training state and stops, so a pre-empted job resumes with ``--auto_resume``.
    Only installed in the main thread (signal handlers cannot be set elsewhere).
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._previous: Any = None

    def is_set(self) -> bool:
        return self._event.is_set()

    def __enter__(self) -> "PreemptionFlag":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, lambda *_: self._event.set())
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
