"""What evaluate.py and predict.py share around their work: quiet logs and exit codes."""

import logging
import os
import sys

from data_prep.errors import UserError
from data_prep.workers import quiet_video_logs


def run_cli(run, args):
    """Runs `run(args)` with quiet library logs; a `UserError` becomes one line and exit 2.

    Returns:
        int, `run`'s exit code, or 2 for a user's mistake.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # An item that fails to decode is reported once, by us, not by FFmpeg as well.
    quiet_video_logs()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    try:
        return run(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
