"""What every command line shares: a user's mistake ends it with one line and exit code 2.

train.py, evaluate.py, predict.py (through `training.cli.run_cli`) and `python -m data_prep`
all wrap their `main` in `report_user_errors`, so the contract of docs/DESIGN.md ("Errors")
is kept in one place: `error: <message>` on one line of stderr, no traceback, exit 2.
"""

import functools
import sys

from core.errors import UserError

USER_ERROR_EXIT_CODE = 2


def one_line(message):
    """`message` with every run of whitespace (newlines too) as one space."""
    return " ".join(str(message).split())


def report_user_errors(main):
    """Decorates a CLI's `main(...) -> exit code`: a `UserError` it raises prints
    `error: <message>` (one line) to stderr and returns 2. Other exceptions, and
    KeyboardInterrupt, pass through unchanged.

    Example:

    >>> @report_user_errors
    ... def main(argv=None):
    ...     raise UserError("Expected --top-k >= 1. Received: --top-k 0")
    >>> main()  # prints "error: Expected --top-k >= 1. Received: --top-k 0" to stderr
    2
    """

    @functools.wraps(main)
    def main_reporting_user_errors(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as error:
            print(f"error: {one_line(error)}", file=sys.stderr, flush=True)
            return USER_ERROR_EXIT_CODE

    return main_reporting_user_errors
