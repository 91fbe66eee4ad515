"""The one error type for bad user input, and how it is reported.

A recipe run from the command line (`hf_transfer.cli.run_cli`) reports bad input as one line, `error: <what is wrong and
the fix>`, on stderr, and exits with status 2; argparse's own errors (unknown flag, bad choice, missing
value) take the same path. Where an error wraps another one (a library's OSError, a dataclass's
ValueError), the original is chained as its `__cause__`. Set the environment variable
`HF_TRANSFER_DEBUG=1` to print that whole chained traceback above the error line.
"""
from __future__ import annotations

import os
import sys
import traceback

DEBUG_VARIABLE = "HF_TRANSFER_DEBUG"


class HfTransferError(ValueError):
    """A problem with what the user asked for: the message names the problem and the fix, on one line."""


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_VARIABLE, "").strip().lower() in ("1", "true", "yes", "on")


def report_error(error: HfTransferError, file=None) -> None:
    """`error: <message>` on one line; with HF_TRANSFER_DEBUG=1, the chained traceback first."""
    file = sys.stderr if file is None else file
    if debug_enabled():
        traceback.print_exception(error, file=file)
    print(f"error: {error}", file=file, flush=True)
