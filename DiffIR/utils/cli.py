"""Entry-point wrapper: configuration and data errors end the program with one clear message, not a traceback."""
from __future__ import annotations

import os
import sys
import traceback
from typing import Any, Callable

from DiffIR.utils.registry import OptionError


def run_cli(main: Callable[[], Any]) -> int:
    """Run ``main``; option/file/data errors print ``ERROR: ...`` and exit with status 2.

    Set ``DIFFIR_TRACEBACK=1`` to see the full traceback of such an error.
    """
    try:
        main()
    except (OptionError, OSError, ValueError) as e:
        if os.environ.get("DIFFIR_TRACEBACK"):
            traceback.print_exc()
        print(f"\nERROR: {e}\n(set DIFFIR_TRACEBACK=1 for the full traceback)", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("\nInterrupted.", file=sys.stderr)
        return 130
    return 0
