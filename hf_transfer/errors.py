"""The one error type for bad user input, and the command-line wrapper that turns it into one line."""
from __future__ import annotations

import sys
from typing import Callable


class HfTransferError(ValueError):
    """A problem with what the user asked for: the message names the problem and the fix, on one line."""


def run_cli(main: Callable[[list[str] | None], object]) -> None:
    """Run a recipe's `main` as a command: bad input is one line on stderr and exit status 2, no traceback.

    A launched run (several processes) leaves its process group here, at the end of the process, and not in
    `main`, so a notebook or a chain of recipes in one process (dapt, compare) can call `main` again.
    """
    from .training import finish_processes

    try:
        main(None)
    except HfTransferError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    finish_processes()
