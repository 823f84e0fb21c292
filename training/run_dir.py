"""The run directory: where one training run keeps everything a later tool needs.

```
RUN_DIR/config.yaml          resolved config; `train.py --config RUN_DIR/config.yaml` reruns it
RUN_DIR/run.json             status, classes, input shape, prepared data path, versions
RUN_DIR/data_manifest.json   copy of the prepared data's manifest (sampling, resize, classes)
RUN_DIR/classes.txt          class names, one a line, line number = label id
RUN_DIR/train.log            the log of every attempt (appended on resume)
RUN_DIR/history.csv          one row per epoch: losses, metrics, learning rate, clips/s
RUN_DIR/curves.png           loss, top-1 (train vs validation) and learning rate, drawn
RUN_DIR/checkpoints/         best.keras (+ best.json), last.keras
RUN_DIR/backup/              BackupAndRestore state while the run is unfinished
RUN_DIR/tensorboard/         train/, validation/ and the run's own hparams + test metrics
RUN_DIR/model.keras          the final model
RUN_DIR/metrics.json         video-level evaluation on the test split (written last)
```

Writing (`open_run_dir`, `write_run_info`, `attach_log_file`) and reading (`open_trained_run`,
`read_history`) live here together, so a file's name and content are decided in one place.
"""

import contextlib
import csv
import dataclasses
import datetime
import json
import logging
import os
import shutil
import sys
import time

from core import storage
from core.atomic import write_json_atomically
from core.disk_full import trim_partial_last_line, write_json_in_place
from core.errors import UserError
from core.lock import RUN_LOCK_NAME, lock_run_dir


class RunDir:
    """Paths inside one run directory (nothing is created until `open_run_dir`)."""

    def __init__(self, path):
        self.path = str(path)
        join = lambda *parts: os.path.join(self.path, *parts)  # noqa: E731
        self.config = join("config.yaml")
        self.run_info = join("run.json")
        self.data_manifest = join("data_manifest.json")
        self.classes = join("classes.txt")
        self.train_log = join("train.log")
        self.history = join("history.csv")
        self.curves = join("curves.png")
        self.checkpoints = join("checkpoints")
        self.backup = join("backup")
        self.tensorboard = join("tensorboard")
        self.model = join("model.keras")
        self.metrics = join("metrics.json")
        self.lock = None  # core.lock.DirectoryLock while open_run_dir's caller runs in it

    def is_finished(self):
        return os.path.exists(self.metrics)

    def __repr__(self):
        return f"RunDir({self.path!r})"


def default_run_path(name, runs_root="runs", now=None):
    """`runs/<name>/<YYYYmmdd-HHMMSS>` (local time, to the second)."""
    now = now or datetime.datetime.now()
    return os.path.join(runs_root, name, now.strftime("%Y%m%d-%H%M%S"))


def open_run_dir(path, *, resume=False, overwrite=False):
    """Creates (or, for `resume`, checks) a run directory, and locks it (`run_dir.lock`,
    core.lock.lock_run_dir: released with `run_dir.lock.release()`, when the RunDir is
    collected, or when the process ends, however it ends).

    Raises:
        UserError: resume of a missing, foreign or finished run; an existing run without
            `--resume` or `--overwrite`; a directory that cannot be created; a directory
            another live process holds (`<path> is in use by pid N`), checked first.
    """
    run_dir = RunDir(path)
    if resume and overwrite:
        raise UserError("--resume and --overwrite exclude each other: resume continues the run, "
                        f"overwrite deletes it. Received: --run-dir {path}")
    if resume:
        if not os.path.isfile(run_dir.config):
            raise UserError(f"Expected a run directory with config.yaml to resume. "
                            f"Received: --run-dir {path}")
        if run_dir.is_finished():
            raise UserError(f"Run {path} has already finished (metrics.json exists); nothing to "
                            "resume. Start a new run, or pass --overwrite to redo this one.")
        if not os.access(path, os.W_OK | os.X_OK):
            raise UserError("Expected --run-dir to be a directory that can be written, to resume "
                            f"the run in it: Permission denied. Received: --run-dir {path}")
        run_dir.lock = lock_run_dir(path)
        trim_partial_last_line(run_dir.history)  # a row cut off by a full disk
        return run_dir
    if os.path.isdir(path):  # another run in it is named before anything else is said
        with contextlib.suppress(OSError):  # unwritable: said below
            run_dir.lock = lock_run_dir(path)
    exists = os.path.exists(path) and (
        not os.path.isdir(path) or set(os.listdir(path)) - {RUN_LOCK_NAME})
    if exists and not overwrite:
        raise UserError(f"Run directory already exists: pass --resume to continue it or "
                        f"--overwrite to replace it. Received: --run-dir {path}")
    try:
        if exists:  # --overwrite
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
        os.makedirs(path, exist_ok=True)
        if run_dir.lock is None or not os.path.exists(run_dir.lock.path):
            if run_dir.lock is not None:
                run_dir.lock.release()
            run_dir.lock = lock_run_dir(path)
        # Written now rather than at the first checkpoint: a read-only place fails at once.
        probe = os.path.join(path, ".write-test")
        with open(probe, "w") as f:
            f.write("")
        os.remove(probe)
    except OSError as e:
        raise UserError(f"Expected --run-dir to be a directory that can be created and written: "
                        f"{e.strerror}. Received: --run-dir {path}") from None
    return run_dir


def write_run_info(run_dir, config, manifest, input_shape, status, versions, weights=None,
                   precision=None):
    """run.json: what evaluate.py and predict.py read back with `open_trained_run`.

    Args:
        status: str, "running" or "finished" (`update_run_status` records "interrupted" and
            "failed", with their reason).
        versions: dict, e.g. {"tensorflow": ..., "keras": ...}, recorded as they are.
        weights: None, or `{"path": absolute path, "sha256": hex}` of the weights the run
            started from (model.weights); written as `"weights"` (null without).
        precision: str or None, the Keras dtype policy trained in (training/precision.py),
            written as `"precision"`.
    """
    info = {
        "name": config.name,
        "status": status,
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "prepared_dir": config.data.prepared_dir if storage.is_url(config.data.prepared_dir)
        else os.path.abspath(config.data.prepared_dir),
        "data_manifest": os.path.basename(run_dir.data_manifest),
        "classes": list(manifest["classes"]),
        "num_classes": len(manifest["classes"]),
        "input_shape": list(input_shape),
        "train_split": config.data.train_split,
        "test_split": config.data.test_split,
        "weights": weights,
        "precision": precision,
        **versions,
        "command": " ".join(sys.argv),
    }
    write_json_atomically(run_dir.run_info, info)


def update_run_status(run_dir, status, reason=None):
    """Sets run.json's status (and `reason`, one line) and keeps the rest; True if written.

    For how an attempt ended: "interrupted" or "failed". Before the run has written run.json
    (a mistake found while preparing the data) there is nothing to update.
    """
    try:
        with open(run_dir.run_info, encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError):
        return False
    info.update(status=status, updated=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    info.pop("reason", None)
    if reason:
        info["reason"] = reason
    write_json_in_place(run_dir.run_info, info)  # also on a full disk
    return True


def attach_log_file(path):
    """Sends the log (INFO and up) to RUN_DIR/train.log too; returns the handler to remove."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    return handler


def log_to_file(handler, logger_name, level, message):
    """One record into train.log only (the CLI prints its own line on the terminal)."""
    handler.handle(logging.LogRecord(logger_name, level, __file__, 0, message, None, None))


def resume_command(run_dir):
    return (f"python train.py --config {run_dir.config} --run-dir {run_dir.path} --resume")


def read_history(run_dir):
    """history.csv as a list of dicts of floats (epoch as int)."""
    with open(run_dir.history, newline="", encoding="utf-8") as f:
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()}
                for row in csv.DictReader(f)]


@dataclasses.dataclass
class TrainedRun:
    """What evaluation and prediction need from a run directory."""

    run_dir: RunDir
    info: dict  # run.json
    manifest: dict  # data_manifest.json: sampling, resize, classes, splits
    class_names: list
    input_shape: tuple  # (F, crop, crop, band) the model takes

    @property
    def prepared_dir(self):
        return self.info["prepared_dir"]


def _read_json(path, what, run_path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f"Expected a run directory written by train.py with {what} in it. "
                        f"Received: --run-dir {run_path}") from None
    except (OSError, ValueError) as e:
        raise UserError(f"Expected {path} to be readable JSON. Received: {e}") from None


def open_trained_run(run_path, *, need_model=True):
    """Reads run.json, data_manifest.json and classes.txt of a run directory.

    Raises:
        UserError: not a run directory, or (with `need_model`) model.keras is missing.
    """
    if not os.path.isdir(run_path):
        raise UserError(f"Expected an existing run directory. Received: --run-dir {run_path}")
    run_dir = RunDir(run_path)
    info = _read_json(run_dir.run_info, "run.json", run_path)
    manifest = _read_json(run_dir.data_manifest, "data_manifest.json", run_path)
    if need_model and not os.path.isfile(run_dir.model):
        raise UserError(f"Expected a finished run with model.keras (train.py writes it after "
                        f"the last epoch). Received: --run-dir {run_path}")
    try:
        with open(run_dir.classes, encoding="utf-8") as f:
            class_names = [line.rstrip("\n") for line in f]
    except OSError:
        class_names = list(manifest["classes"])
    return TrainedRun(run_dir, info, manifest, class_names, tuple(info["input_shape"]))
