"""Entry-point wrapper: the project's errors and file-system errors end the program with one clear message.

Only :class:`~DiffIR.utils.errors.DiffIRError` (options, data, a stopped run, ...) and ``OSError`` (a missing or
unwritable file, a full disk) are such messages; any other exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import os
import sys
import traceback
from typing import Any, Callable

from DiffIR.utils.errors import DiffIRError, Preempted, TrainingStopped, worker_error_message


def run_cli(main: Callable[[], Any]) -> int:
    """Run ``main`` and map failures to exit codes: 2 options/files/data (a lock held by another run, a full
    disk), 3 training stopped, 143 pre-empted (SIGTERM), 129 hung up (SIGHUP) and 130 interrupted (Ctrl-C) after
    saving a state. Other exceptions propagate (a traceback and exit status 1).

    Set ``DIFFIR_TRACEBACK=1`` to see the full traceback of such an error.
    """
    try:
        main()
    except Preempted as e:
        print(f"\n{e}", file=sys.stderr, flush=True)
        return e.exit_code
    except (DiffIRError, OSError) as e:
        if os.environ.get("DIFFIR_TRACEBACK"):
            traceback.print_exc()
        # a DataLoader worker's error reads "Caught X in DataLoader worker ... Traceback": keep its own message
        print(f"\nERROR: {worker_error_message(e)}\n(set DIFFIR_TRACEBACK=1 for the full traceback)", file=sys.stderr,
              flush=True)
        return 3 if isinstance(e, TrainingStopped) else 2
    except KeyboardInterrupt:
        print("\nInterrupted.", file=sys.stderr)
        return 130
    return 0
