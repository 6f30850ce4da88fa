"""Entry-point wrapper: configuration and data errors end the program with one clear line, not a traceback."""
from __future__ import annotations

import sys
from typing import Any, Callable

from DiffIR.utils.registry import OptionError


def run_cli(main: Callable[[], Any]) -> int:
    try:
        main()
    except (OptionError, FileNotFoundError) as e:
        print(f"\nERROR: {e}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("\nInterrupted.", file=sys.stderr)
        return 130
    return 0
