"""The one error type for bad user input, and the command-line wrapper that turns it into one line."""
from __future__ import annotations

import sys
from typing import Callable


class HfTransferError(ValueError):
    """A problem with what the user asked for: the message names the problem and the fix, on one line."""


def run_cli(main: Callable[[list[str] | None], object]) -> None:
    """Run a recipe's `main` as a command: bad input is one line on stderr and exit status 2, no traceback."""
    try:
        main(None)
    except HfTransferError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
