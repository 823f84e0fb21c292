"""Train a video classifier from one YAML experiment.

    python train.py --config configs/demo.yaml [--set key.path=value ...] [--run-dir DIR]
    python train.py --run-dir runs/demo/20260101-120000 --resume
    python train.py --config configs/demo.yaml --prepare-only   (only data.prepared_dir)

The run directory (default runs/<config name>/<timestamp>) receives the resolved config,
checkpoints, TensorBoard logs, train.log, model.keras and metrics.json; see docs/TRAINING.md.
Mistakes in the config or data print one line `error: ...` and exit 2; a diverged run
(NaN loss) prints one line and exits 1. Ctrl-C (SIGINT) or SIGTERM stops cleanly after the
current step, prints how to resume and exits 130 (143); a second one quits at once.
"""

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile

# Importing `training` turns oneDNN on before TensorFlow loads (core.tensorflow_env).
from core import storage
from core.cli import report_user_errors
from core.disk_full import NoSpaceLeft
from core.errors import UserError
from data_prep.shards import MANIFEST_NAME
from training.cli import import_tensorflow
from training.config import config_to_dict, load_config
from training.prepared_data import check_data_sources, ensure_prepared
from training.run_dir import RunDir, default_run_path, open_run_dir


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Train a video classifier from a YAML experiment config.")
    parser.add_argument("--config", help="experiment YAML (optional with --resume: the run's "
                                         "own config.yaml is used)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY.PATH=VALUE",
                        help="override a config key, value parsed as YAML (repeatable)")
    parser.add_argument("--run-dir", help="run directory (default runs/<name>/<timestamp>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the interrupted run in --run-dir")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete an existing --run-dir and start again")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bars or per-epoch lines on the terminal (train.log "
                             "keeps them)")
    parser.add_argument("--prepare-only", action="store_true",
                        help="only generate/prepare the config's data.prepared_dir (as a run "
                             "does first), then stop; no run directory")
    args = parser.parse_args(argv)
    if not args.resume and not args.config:
        parser.error("--config is required (unless --resume with --run-dir)")
    if args.prepare_only and (args.resume or args.run_dir or args.overwrite):
        parser.error("--prepare-only takes --config and --set only")
    return args


def _resolve_config(args):
    if args.resume and args.overwrite:
        raise UserError("--resume and --overwrite exclude each other: resume continues the "
                        "run, overwrite deletes it and starts again.")
    if args.resume:
        run_path = args.run_dir
        if run_path is None and args.config and os.path.basename(args.config) == "config.yaml":
            run_path = os.path.dirname(args.config) or "."
        if run_path is None:
            raise UserError("--resume needs the run to continue. Received: --run-dir not given")
        run_dir = open_run_dir(run_path, resume=True)
        config = load_config(run_dir.config)
        if args.config or args.overrides:
            asked = load_config(args.config or run_dir.config, overrides=args.overrides)
            asked.name = config.name
            if asked != config:
                saved, wanted = config_to_dict(config), config_to_dict(asked)
                changed = [f"{s}.{k}" for s in saved if isinstance(saved[s], dict)
                           for k in saved[s] if saved[s][k] != wanted[s][k]]
                raise UserError(f"--resume continues the run with its own config.yaml; these keys "
                                f"differ: {', '.join(changed) or 'name'}. Received: --config "
                                f"{args.config}")
        return config, run_dir
    config = load_config(args.config, overrides=args.overrides)
    check_data_sources(config.data)
    run_dir = open_run_dir(args.run_dir or default_run_path(config.name),
                           overwrite=args.overwrite)
    return config, run_dir


def _worker_run_dir(config, args, role):
    """A non-chief worker's own temporary run directory (deleted when it ends).

    Every worker runs the same callbacks and saves (reading synchronised variables is a
    collective op, so all must take part), but only the chief's land in --run-dir. On
    --resume the chief's backup/ is copied in so that all workers restart at the same epoch.
    """
    try:
        path = tempfile.mkdtemp(prefix=f"run-{role.task_type}{role.task_index}-")
    except OSError as e:
        raise UserError(f"Expected a temporary directory that can be written, for {role.name}'s "
                        f"own run directory: {e.strerror}. Received: "
                        f"TMPDIR={os.environ.get('TMPDIR')}") from None
    run_dir = open_run_dir(path)
    if args.resume:
        chief_backup = RunDir(args.run_dir).backup
        if not os.path.isdir(chief_backup):
            shutil.rmtree(path)
            raise UserError("--resume on a non-chief worker reads the chief's backup/, so the "
                            "run directory must be on a shared filesystem. Received: "
                            f"--run-dir {args.run_dir}")
        shutil.copytree(chief_backup, run_dir.backup)
    return run_dir


def read_worker_role(tf_config):
    """training.distribution.read_worker_role, imported (with TensorFlow) only when needed."""
    import_tensorflow()
    from training.distribution import read_worker_role as read

    return read(tf_config)


def _resolve_run(args):
    """(config, run_dir, role): role is None unless distribute.strategy is multi_worker."""
    if args.resume and args.run_dir and os.environ.get("TF_CONFIG"):
        # A non-chief must not open (or check) the chief's directory as its own.
        config = load_config(args.config or RunDir(args.run_dir).config,
                             overrides=args.overrides)
        if config.distribute.strategy == "multi_worker":
            role = read_worker_role(os.environ.get("TF_CONFIG"))
            if not role.is_chief:
                return config, _worker_run_dir(config, args, role), role
    if not args.resume and args.config:
        config = load_config(args.config, overrides=args.overrides)
        if config.distribute.strategy == "multi_worker":
            role = read_worker_role(os.environ.get("TF_CONFIG"))
            if not role.is_chief:
                return config, _worker_run_dir(config, args, role), role
    config, run_dir = _resolve_config(args)
    role = None
    if config.distribute.strategy == "multi_worker":
        role = read_worker_role(os.environ.get("TF_CONFIG"))
    return config, run_dir, role


@report_user_errors
def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.raiseExceptions = False  # a log line the disk cannot take is dropped, not a traceback
    if args.quiet:  # warnings and errors only on the terminal; train.log keeps every line
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr:
                handler.setLevel(logging.WARNING)
    if args.prepare_only:
        return _prepare_only(args)
    config, run_dir, role = _resolve_run(args)
    try:
        return _train(args, config, run_dir, role)
    finally:
        if role is not None and not role.is_chief:
            shutil.rmtree(run_dir.path, ignore_errors=True)
        if run_dir.lock is not None:  # taken by open_run_dir, before TensorFlow loaded
            run_dir.lock.release()


def _prepare_only(args):
    """The data step of a run alone: the experiment YAML read by the one config loader."""
    config = load_config(args.config, overrides=args.overrides)
    check_data_sources(config.data)  # as a run does: a wrong path answers at once
    import_tensorflow()  # once the config and its data sources are valid
    manifest = ensure_prepared(config.data, show_progress=sys.stderr.isatty())
    print(f"wrote {storage.join(config.data.prepared_dir, MANIFEST_NAME)}: "
          f"{len(manifest['classes'])} classes, "
          + (f"clip shape {manifest['clip_shape']}, " if "clip_shape" in manifest else
             f"whole items (v2), frame shape {manifest['frame_shape']}, ")
          + f"{len(manifest['skipped'])} skipped")
    return 0


def _remove_if_untrained(args, run_dir):
    """A new run that stopped on a user's mistake before its first epoch (weights that do not
    fit, data that cannot be prepared, ...) leaves no directory: there is nothing to resume."""
    if args.resume or os.path.exists(run_dir.backup) or os.path.exists(run_dir.history):
        return
    shutil.rmtree(run_dir.path, ignore_errors=True)


def _train(args, config, run_dir, role):
    # TensorFlow loads only now (here and in `read_worker_role`), so that --help and config
    # mistakes answer at once.
    try:
        import_tensorflow()
    except KeyboardInterrupt:  # before the run has started: nothing to resume or record
        print("interrupted", file=sys.stderr)
        return 130
    from training.callbacks import RunInterrupted
    from training.trainer import TrainingError, run_experiment

    try:
        if role is not None and not role.is_chief:
            print(f"run directory of {role.name} (temporary, deleted at the end): "
                  f"{run_dir.path}", flush=True)
        else:
            print(f"run directory: {run_dir.path}", flush=True)
        # A live bar per epoch on a terminal; one line per epoch (logged) everywhere.
        metrics = run_experiment(config, run_dir, resume=args.resume, worker_role=role,
                                 show_progress=sys.stderr.isatty() and not args.quiet)
    except RunInterrupted as e:
        print(e.message, file=sys.stderr, flush=True)
        return e.exit_code
    except UserError as e:  # `main` prints it
        if not isinstance(e, NoSpaceLeft):  # that one says how to resume: keep the run
            _remove_if_untrained(args, run_dir)
        raise
    except TrainingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    shown = ("mean_average_precision", "micro_f1", "macro_f1") if metrics.get("multi_label") \
        else ("top1", "top5", "mean_class_accuracy")
    print(json.dumps({k: metrics[k] for k in (*shown, "loss", "clips", "videos")}))
    print(f"tensorboard --logdir {run_dir.tensorboard}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
