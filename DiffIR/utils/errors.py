"""Errors that end a run with a message for people (see DiffIR.utils.cli), and the pre-emption signal flag."""
from __future__ import annotations

import difflib
import os
import re
import signal
import threading
from typing import Any, Iterable, Optional


class DiffIRError(Exception):
    """The root of the project's errors: the ones that end a run with a message for people.

    :func:`DiffIR.utils.cli.run_cli` prints such an error in one line (exit status 2, or 3 for a stopped run) and
    lets every other exception through with its traceback, so a bug never reads as a configuration mistake. Each
    subclass also keeps the builtin base its callers catch (``ValueError``, ``OSError``, ``RuntimeError``).
    """


class OptionError(DiffIRError, ValueError):
    """A configuration mistake, reported with the offending key and how to fix it."""


class OptionTypeError(OptionError, TypeError):
    """An option of the wrong kind (text where an integer belongs); a ``TypeError`` as such checks raised before."""


class MissingInputError(OptionError, RuntimeError):
    """The configuration needs a per-image input the data does not give (the dgain and gamma of each image, a
    ground truth); a ``RuntimeError`` too, as the forward pass that finds it raised before."""


def did_you_mean(name: Any, choices: Iterable[Any]) -> str:
    """`` (did you mean 'x'?)`` for the choice closest to a misspelt ``name``, else ``''``.

    A typo in a YAML key or ``type:`` is the most common configuration error, so every "unknown" message
    carries this hint.
    """
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


class TrainingStopped(DiffIRError, RuntimeError):
    """Training cannot continue sensibly (e.g. the loss diverged); the last good checkpoint is kept."""


class OutOfMemory(TrainingStopped):
    """A step, a validation or a test ran out of device memory; the message names the setting and what would fit.
    Nothing was being written (checkpoints are written whole or not at all)."""


class Preempted(TrainingStopped):
    """SIGTERM (cluster pre-emption), SIGHUP (a closed terminal) or Ctrl-C arrived; a training state was saved
    before stopping.

    ``exit_code`` is the shell's code for the signal: 143 for SIGTERM, 129 for SIGHUP, 130 for SIGINT (Ctrl-C).
    """

    def __init__(self, message: str, exit_code: int = 143) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class DataError(DiffIRError, ValueError):
    """A data file (an image, a dgain file) is unreadable or wrong; also what training raises for a file that broke
    after the up-front dataset check."""


class DiskFullError(DiffIRError, OSError):
    """The disk filled up while a file was written; the file it would have replaced is intact."""


class RunInUse(DiffIRError, OSError):
    """Another live process holds the lock of this experiment (or results) folder."""


_WORKER_HEADER = re.compile(r"^Caught (\w+) in DataLoader worker process \d+\.\nOriginal Traceback")


def worker_error_message(exc: BaseException) -> str:
    """The original message of an exception a DataLoader worker raised (or ``str(exc)`` for any other).

    torch re-raises a worker's exception in the main process as the same type whose message is
    "Caught X in DataLoader worker process N. Original Traceback ...": the useful sentence (the file
    and the fix) is the last line of that traceback, ``[module.]X: message``.
    """
    text = str(exc)
    head = _WORKER_HEADER.match(text)
    if not head:
        return text
    last = None
    for last in re.finditer(rf"^(?:[\w.]+\.)?{re.escape(head.group(1))}: ", text, flags=re.MULTILINE):
        pass
    return text[last.end():].strip() if last else text


#: the signals that stop a training run after saving: pre-emption (SIGTERM), Ctrl-C, a closed terminal or ssh
#: session (SIGHUP, unless ``nohup`` made the run ignore it); SIGHUP is missing on Windows
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, name))

#: torch's SIGCHLD handler while a stopped run ends (see :meth:`PreemptionFlag._quiet_child_deaths`); None: not parked
_parked_child_handler: Optional[list] = None


def _restore_child_handler() -> None:
    """Put back the SIGCHLD handler a stopped run parked (the next run of this process wants torch's again)."""
    global _parked_child_handler
    if _parked_child_handler is not None:
        signal.signal(signal.SIGCHLD, _parked_child_handler[0])
        _parked_child_handler = None


class PreemptionFlag:
    """Context manager turning SIGTERM, SIGHUP and SIGINT (Ctrl-C) into a flag the loop checks after each iteration.

    The loop then saves a training state and stops, so the run continues with ``--auto_resume``. A second
    Ctrl-C aborts at once (KeyboardInterrupt; atomic writes keep every file whole). A signal the run ignores at the
    start (``nohup`` ignores SIGHUP, ``&`` jobs SIGINT) stays ignored. Only installed in the main thread (signal
    handlers cannot be set elsewhere).

    A signal sent to the whole process group (a scheduler's pre-emption, a closed terminal) also ends the
    DataLoader workers. torch's SIGCHLD handler would raise "DataLoader worker (pid N) is killed by signal"
    wherever the main thread is (mid-step, even mid-save); once a stop is requested it is replaced by one that only
    records :attr:`children_ended`, so the last completed iteration is still saved.
    """

    def __init__(self, interrupt_notice: str = "") -> None:
        self._event = threading.Event()
        self._previous: dict = {}
        self.interrupt_notice = interrupt_notice
        self.signum: Optional[int] = None
        self.children_ended = False  # a child process (a DataLoader worker) ended after the stop was requested

    def is_set(self) -> bool:
        return self._event.is_set()

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as a shell reports a process ended by that signal."""
        return 128 + int(self.signum or signal.SIGTERM)

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum or signal.SIGTERM).name

    def _handle(self, signum: int, _frame: Any) -> None:
        if signum == signal.SIGINT and self._event.is_set():
            raise KeyboardInterrupt  # a second Ctrl-C: abort without waiting for the save
        if self.signum is None:
            self.signum = signum
            self._quiet_child_deaths()
        if signum == signal.SIGINT and self.interrupt_notice:
            os.write(2, f"\n{self.interrupt_notice}\n".encode("utf-8", "replace"))
        self._event.set()

    def _quiet_child_deaths(self) -> None:
        """From the stop on, a worker ending is expected: record it instead of raising (see the class docstring).

        The handler stays parked until the next flag of this process is entered, not only until this one exits:
        the run's loader (and its dead workers) lives on while the stop unwinds, and torch's handler would raise there.
        """
        global _parked_child_handler
        if hasattr(signal, "SIGCHLD") and _parked_child_handler is None:
            _parked_child_handler = [signal.signal(signal.SIGCHLD, self._child_ended)]

    def _child_ended(self, _signum: int, _frame: Any) -> None:
        self.children_ended = True

    def __enter__(self) -> "PreemptionFlag":
        if threading.current_thread() is threading.main_thread():
            _restore_child_handler()
            for sig in STOP_SIGNALS:
                if signal.getsignal(sig) is not signal.SIG_IGN:  # e.g. `nohup` jobs ignore SIGHUP: keep that
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}
