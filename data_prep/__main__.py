"""`python -m data_prep {synth,prepare,inspect,verify} ...`: the data preparation
command line."""

import argparse
import logging
import os
import shlex
import sys

from core.cli import report_user_errors
from core.disk_full import no_space_left
from core.errors import JobFailed
from core.tensorflow_env import configure_tensorflow, import_tensorflow_quietly


class _ArgumentParser(argparse.ArgumentParser):
    """Bad arguments print one line, like every other user mistake."""

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {message}\n")


def build_parser():
    from data_prep import contact_sheet, prepare, synth, verify

    parser = _ArgumentParser(prog="python -m data_prep",
                             description="Prepare video datasets as (F, H, W, band) clip shards.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (synth, prepare, contact_sheet, verify):
        module.register(subparsers)
    return parser


@report_user_errors
def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    configure_tensorflow()  # prepare and inspect import TensorFlow
    parser = build_parser()
    # prepare passes what it does not know to Apache Beam (--runner=..., docs/DATA.md).
    args, pipeline_args = parser.parse_known_args(argv)
    if pipeline_args and args.command != "prepare":
        parser.error(f"unrecognized arguments: {' '.join(pipeline_args)}")
    args.pipeline_args = pipeline_args
    try:
        if args.command in ("inspect", "verify"):
            import_tensorflow_quietly()  # they read shards: TensorFlow, without its CUDA noise
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted (rerun the same command to resume)", file=sys.stderr)
        return 130
    except Exception as error:  # a full disk: one line; finished shards are kept (resume)
        command = "python -m data_prep " + shlex.join(sys.argv[1:] if argv is None else argv)
        named = no_space_left(error, getattr(args, "out", None) or os.getcwd(), command)
        if named is not None:
            raise named from None
        if isinstance(error, JobFailed):  # not the user's mistake: exit 1, in one line
            print(f"error: {error}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
