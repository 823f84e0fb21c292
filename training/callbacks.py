"""Callbacks for model.fit: NaN stop, best/last checkpoints, a resumable backup, the epoch
line and progress bars, and the clean stop on a signal.

The TensorBoard views are callbacks of their own, in `training.tensorboard_views`.
"""

import csv
import io
import json
import logging
import math
import os
import signal
import sys
import threading
import time

import keras
import numpy as np
from tqdm import tqdm

from core import backup_state
from core.atomic import atomic_write, write_json_atomically, write_text_atomically
from core.errors import UserError

logger = logging.getLogger(__name__)


class NanLossStop(keras.callbacks.Callback):
    """Stops training at the first non-finite loss and remembers where (the trainer raises).

    Keras's TerminateOnNaN only prints; this one records epoch, batch and value so the run ends
    with a message that says what happened, and lets the checkpoint callbacks skip saving
    the broken weights.
    """

    def __init__(self):
        super().__init__()
        self.stopped_at = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.stopped_at = {"epoch": self._epoch + 1, "batch": batch + 1, "loss": float(loss)}
            self.model.stop_training = True


class SafeBackupAndRestore(keras.callbacks.BackupAndRestore):
    """BackupAndRestore that never backs up NaN weights, writes each backup whole beside the
    previous one, and resumes from the newest one that loads (core.backup_state).

    Keras's own callback falls back to its previous copy only on OSError; a half-written
    file raises ValueError or JSONDecodeError and the run never resumes. Here resume tries
    every whole backup, newest first, and skips one that fails to load for any reason,
    logging what it skipped; none loading is a UserError naming each.
    """

    def __init__(self, backup_dir, nan_stop):
        super().__init__(backup_dir, save_freq="epoch", delete_checkpoint=False)
        self.nan_stop = nan_stop
        self._kept = None  # the core.backup_state.Backup loaded or saved last

    def on_train_begin(self, logs=None):
        backups, skipped = backup_state.find_backups(self.backup_dir)
        for backup in backups:
            try:
                if self.model.optimizer is not None and not self.model.optimizer.built:
                    self.model.optimizer.build(self.model.trainable_variables)
                self.model.load_weights(backup.weights)
            except Exception as e:  # noqa: BLE001 - any unreadable backup is skipped alike
                text = str(e).strip().splitlines()
                skipped.append(f"{backup.describe()}: {type(e).__name__}: "
                               f"{text[0] if text else ''}"[:300])
                continue
            self.model._initial_epoch = backup.epoch
            self._kept = backup
            break
        for reason in skipped:
            logger.warning("backup: skipped %s", reason)
        if self._kept is None and skipped:
            raise UserError(f"Expected a backup that loads in {self.backup_dir} to resume; "
                            f"skipped {'; '.join(skipped)}. Move {self.backup_dir} away to "
                            "start the run over.")
        if self._kept is not None and skipped:
            logger.warning("backup: resuming after epoch %d from %s", self._kept.epoch,
                           self._kept.weights)

    def _save_model(self):
        self._kept = backup_state.save_backup(
            self.backup_dir, lambda path: self.model.save_weights(path, overwrite=True),
            {"epoch": self._current_epoch, "batch": self._last_batch_seen}, keep=self._kept)

    def on_epoch_end(self, epoch, logs=None):
        if self.nan_stop.stopped_at is None:
            super().on_epoch_end(epoch, logs)

    @staticmethod
    def saved_epoch(backup_dir):
        """Epochs the newest whole backup in `backup_dir` has finished (0 without one): where
        fit resumes, read before fit starts to seed the resumed input (on_train_begin may
        still skip that backup if its weights do not load)."""
        return backup_state.saved_epoch(backup_dir)


def plain_model(model):
    """A copy of `model` with its architecture and weights only: no optimizer, loss or metrics.

    What a run saves as .keras: `keras.models.load_model(path)` then needs only the layers
    `models.register_layers()` registers, not the training schedule and metric classes a
    compiled model would name. Resuming reads backup/ (weights and optimizer state), never
    these files.
    """
    plain = model.__class__.from_config(model.get_config())
    plain.set_weights(model.get_weights())
    return plain


def save_model_atomically(model, path):
    """The plain model (`plain_model`) saved to a temporary name, then renamed: a kill never
    leaves half a file."""
    with atomic_write(path) as temporary:  # `.tmp-name.keras`: Keras needs the extension
        plain_model(model).save(temporary)


class RunCheckpoints(keras.callbacks.Callback):
    """`last.keras` every epoch and `best.keras` when validation top-1 improves.

    The best value lives in `best.json` beside it, so a resumed run only replaces the best
    checkpoint with a better one (a fresh ModelCheckpoint would forget the old best).
    """

    def __init__(self, directory, nan_stop, monitor="val_top1"):
        super().__init__()
        self.directory = directory
        self.nan_stop = nan_stop
        self.monitor = monitor
        self.best_path = os.path.join(directory, "best.keras")
        self.last_path = os.path.join(directory, "last.keras")
        self.best_info_path = os.path.join(directory, "best.json")
        self.best = None
        if os.path.exists(self.best_info_path):
            with open(self.best_info_path, encoding="utf-8") as f:
                self.best = json.load(f)

    def on_epoch_end(self, epoch, logs=None):
        if self.nan_stop.stopped_at is not None:
            return
        logs = logs or {}
        os.makedirs(self.directory, exist_ok=True)
        save_model_atomically(self.model, self.last_path)
        value = logs.get(self.monitor)
        if value is None:
            return
        value = float(value)
        if self.best is None or value > self.best["value"]:
            save_model_atomically(self.model, self.best_path)
            self.best = {"monitor": self.monitor, "value": value, "epoch": epoch + 1}
            write_json_atomically(self.best_info_path, self.best)
            logger.info("epoch %d: new best %s %.4f -> %s", epoch + 1, self.monitor, value,
                        self.best_path)


def current_learning_rate(optimizer):
    """The rate the optimizer applies at its current step (schedules are called with it)."""
    rate = optimizer.learning_rate
    return float(keras.ops.convert_to_numpy(rate))


class EpochLog(keras.callbacks.Callback):
    """Adds `learning_rate`, `epoch_seconds` and `clips_per_second` to the epoch logs (so the
    CSV history and TensorBoard get them) and writes one line per epoch to the log."""

    def __init__(self, clips_per_epoch):
        super().__init__()
        self.clips_per_epoch = clips_per_epoch
        self._start = None
        self._last_train_batch = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._last_train_batch = None

    def on_train_batch_end(self, batch, logs=None):
        self._last_train_batch = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        now = time.perf_counter()
        train_seconds = (self._last_train_batch or now) - self._start
        logs["learning_rate"] = current_learning_rate(self.model.optimizer)
        logs["epoch_seconds"] = now - self._start
        logs["clips_per_second"] = self.clips_per_epoch / max(train_seconds, 1e-9)
        logger.info("epoch %d/%d: %s", epoch + 1, self.params.get("epochs", 0),
                    compact_epoch_summary(logs))


# Shown with a shorter name in the epoch line; the other logged metrics keep their own.
_SHORT_NAMES = {"mean_class_accuracy": "mca"}
# The epoch line shows validation's top-5 and mean class accuracy, not training's (which
# history.csv and TensorBoard keep): one line of what tells how the run goes.
_TRAIN_ONLY_IN_HISTORY = ("top5", "mean_class_accuracy")


def compact_epoch_summary(logs):
    """One short line of an epoch's logs, e.g.
    `loss 1.23 top1 0.5 | val loss 1.1 top1 0.55 top5 0.91 mca 0.5 | lr 0.003 27.3 s 150.2 clips/s`
    (mca: mean class accuracy): training metrics, validation's, then rate, time, throughput.
    """
    numbers = {k: float(v) for k, v in logs.items() if isinstance(v, (int, float, np.floating))}
    timing = [k for k in ("learning_rate", "epoch_seconds", "clips_per_second") if k in numbers]
    train = [k for k in numbers if not k.startswith("val_") and k not in timing
             and k not in _TRAIN_ONLY_IN_HISTORY]
    validation = [k for k in numbers if k.startswith("val_")]

    def show(keys, prefix=""):
        return " ".join(f"{_SHORT_NAMES.get(k[len(prefix):], k[len(prefix):])} "
                        f"{numbers[k]:.3g}" for k in keys)

    parts = [show(train)] if train else []
    if validation:
        parts.append("val " + show(validation, "val_"))
    timing_formats = {"learning_rate": "lr {:.3g}", "epoch_seconds": "{:.1f} s",
                      "clips_per_second": "{:.1f} clips/s"}
    if timing:
        parts.append(" ".join(timing_formats[k].format(numbers[k]) for k in timing))
    return " | ".join(parts)


class HistoryCSV(keras.callbacks.Callback):
    """history.csv, one row per epoch, the columns of Keras's CSVLogger; the whole file is
    rewritten atomically (core.atomic) after each epoch instead of appended to, so a kill or
    a full disk leaves the previous epoch's file whole, never a torn row.

    On resume the rows already there are kept, except those of epochs this attempt trains
    again (a kill after the row but before the backup): the new row replaces the old one.
    """

    def __init__(self, path):
        super().__init__()
        self.path = path
        self._header = None
        self._rows = []  # the text of each row, without its line end

    def on_train_begin(self, logs=None):
        self._header, self._rows = None, []
        try:
            with open(self.path, newline="", encoding="utf-8") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return
        if lines:
            self._header = next(csv.reader([lines[0]]))
            self._rows = [line for line in lines[1:] if line]

    @staticmethod
    def _value(value):
        if isinstance(value, str):
            return value
        if isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray)
                                                and value.ndim > 0):
            return f"[{', '.join(map(str, value))}]"
        return value

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self._header is None:  # as Keras's CSVLogger orders them
            keys = sorted(logs)
            if keys and not any(key.startswith("val_") for key in keys):
                keys += [f"val_{key}" for key in keys]
            self._header = ["epoch"] + keys
        row = {"epoch": epoch, **{key: self._value(logs.get(key, "NA"))
                                  for key in self._header[1:]}}
        text = io.StringIO()
        csv.DictWriter(text, fieldnames=self._header, extrasaction="ignore",
                       lineterminator="\n").writerow(row)
        self._rows = [line for line in self._rows
                      if not _row_epoch_at_least(line, epoch)] + [text.getvalue().rstrip("\n")]
        header = io.StringIO()
        csv.writer(header, lineterminator="\n").writerow(self._header)
        write_text_atomically(self.path, header.getvalue() + "".join(
            row + "\n" for row in self._rows))


def _row_epoch_at_least(line, epoch):
    try:
        return int(line.split(",", 1)[0]) >= epoch
    except ValueError:
        return False


class ProgressBar(keras.callbacks.Callback):
    """A live bar inside each epoch on a terminal: step/total, loss, clips/s, elapsed and ETA;
    and one for each validation pass. The tqdm look of data preparation and evaluate.py.

    Args:
        batch_size: int, clips per step (for clips/s).
        steps_per_epoch: int, the bar's total when Keras does not know the epoch's length.
        validation_steps: int or None, the validation bar's total.
        file: where the bars go. Default: sys.stderr.
        mininterval: float, seconds between redraws (tqdm's). Default: 0.1.
    """

    def __init__(self, batch_size, steps_per_epoch, validation_steps=None, file=None,
                 mininterval=0.1):
        super().__init__()
        self.batch_size = batch_size
        self.steps_per_epoch = steps_per_epoch
        self.validation_steps = validation_steps
        self.file = file
        self.mininterval = mininterval
        self._bar = None

    def _open(self, description, total, unit):
        self._close()
        self._bar = tqdm(total=total, desc=description, unit=unit, leave=False,
                         file=self.file or sys.stderr, dynamic_ncols=True,
                         mininterval=self.mininterval)

    def _close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def on_epoch_begin(self, epoch, logs=None):
        self._open(f"epoch {epoch + 1}/{self.params.get('epochs', 0)}",
                   self.params.get("steps") or self.steps_per_epoch, "step")

    def on_train_batch_end(self, batch, logs=None):
        if self._bar is None:
            return
        self._bar.update(1)
        rate = self._bar.format_dict.get("rate")
        loss = (logs or {}).get("loss")
        postfix = [f"loss {float(loss):.4g}"] if loss is not None else []
        if rate:
            postfix.append(f"{rate * self.batch_size:.1f} clips/s")
        self._bar.set_postfix_str(", ".join(postfix), refresh=False)

    def on_test_begin(self, logs=None):
        self._open("validation", self.validation_steps, "batch")

    def on_test_batch_end(self, batch, logs=None):
        if self._bar is not None:
            self._bar.update(1)

    def on_test_end(self, logs=None):
        self._close()

    def on_epoch_end(self, epoch, logs=None):
        self._close()

    def on_train_end(self, logs=None):
        self._close()


class RunInterrupted(BaseException):
    """SIGINT or SIGTERM stopped the run (a BaseException, like KeyboardInterrupt, so that
    no `except Exception` on the way takes it for a failure)."""

    def __init__(self, signal_number):
        super().__init__(signal.Signals(signal_number).name)
        self.signal_number = signal_number

    @property
    def exit_code(self):
        """128 + the signal: 130 for SIGINT, 143 for SIGTERM, as a shell reports them."""
        return 128 + self.signal_number


class StopOnSignal(keras.callbacks.Callback):
    """Turns SIGINT (Ctrl-C) and SIGTERM (Slurm, Kubernetes) into a clean stop of the run.

    Installed (`install`) for a whole run. Outside `fit`, the first signal raises
    `RunInterrupted` at once; inside, it is raised at the next batch (or epoch) boundary from
    this callback, so no epoch is half recorded: the backup of the last finished epoch is
    what --resume continues from. Keras's own KeyboardInterrupt would come with a traceback
    from deep inside fit. A second signal ends the process immediately (every file the run
    writes is written atomically, so nothing is left half-written).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        super().__init__()
        self.signal_number = None
        self._in_fit = False
        self._previous = {}

    def install(self):
        """Takes over SIGINT and SIGTERM (main thread only; elsewhere a no-op)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for number in self.SIGNALS:
            self._previous[number] = signal.signal(number, self._handle)

    def uninstall(self):
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}

    def _handle(self, number, frame):
        if self.signal_number is not None:
            os.write(2, b"\ninterrupted again: quitting now\n")
            os._exit(128 + number)
        self.signal_number = number
        if not self._in_fit:
            raise RunInterrupted(number)
        os.write(2, f"\n{signal.Signals(number).name}: stopping at the end of this step "
                    "(again to quit at once)\n".encode())

    def _stop_if_signalled(self):
        if self.signal_number is not None:
            raise RunInterrupted(self.signal_number)

    def on_train_begin(self, logs=None):
        self._in_fit = True
        self._stop_if_signalled()

    def on_train_end(self, logs=None):
        self._in_fit = False

    def fit_ended(self):
        """Called by the trainer when fit returns or raises: signals stop it at once again."""
        self._in_fit = False

    def on_epoch_begin(self, epoch, logs=None):
        self._stop_if_signalled()

    def on_train_batch_end(self, batch, logs=None):
        self._stop_if_signalled()

    def on_test_batch_end(self, batch, logs=None):
        self._stop_if_signalled()

    def on_epoch_end(self, epoch, logs=None):
        # Last in the callback list: this epoch is recorded and backed up.
        self._stop_if_signalled()
