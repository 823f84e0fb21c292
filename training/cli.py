"""What evaluate.py and predict.py share around their work: quiet logs and exit codes."""

import logging
import os
import sys

from core.cli import report_user_errors
from core.tensorflow_env import import_tensorflow_quietly
from data_prep.workers import quiet_video_logs


def import_tensorflow():
    """Loads TensorFlow for a CLI without its start-up noise; names the GPUs when there are.

    Call it where a CLI first imports a TensorFlow-heavy module (train.py, evaluate.py and
    predict.py defer those so that --help and config mistakes answer at once).
    """
    gpus = import_tensorflow_quietly()
    if gpus:
        print(f"TensorFlow uses {len(gpus)} GPU(s): {', '.join(gpus)}", file=sys.stderr,
              flush=True)


def run_cli(run, args):
    """Runs `run(args)` with quiet library logs; a `UserError` becomes one line and exit 2
    (`core.cli.report_user_errors`, as for every CLI).

    Returns:
        int, `run`'s exit code, or 2 for a user's mistake.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # An item that fails to decode is reported once, by us, not by FFmpeg as well.
    quiet_video_logs()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return report_user_errors(run)(args)
