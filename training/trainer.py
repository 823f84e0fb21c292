"""One training run, in order: data, model, fit, evaluation, run directory.

`run_experiment(config, run_dir)` is what `train.py` calls. Its `_run` reads top to bottom
like the story of a run, one named step each: make sure the clips are prepared and check the
labels (`_prepare_run_data`), build the input pipelines (`_input_pipelines`), build and
compile the model under the distribution strategy (`_build_model`), fit with the callbacks
(`_fit_callbacks`: NaN stop, checkpoints, the TensorBoard views, history, backup; `_fit`),
save the model, evaluate on the test split averaging the softmax over every stored clip of a
video (`_evaluate`), and write metrics.json, curves.png and run.json (`_finish`). What the
run reports lives in `training.summaries`, its TensorBoard views in
`training.tensorboard_views`, its files in `training.run_dir`.
"""

import contextlib
import dataclasses
import logging
import math
import os
import shutil
import signal
import time

import keras
import tensorflow as tf
from tqdm.contrib.logging import logging_redirect_tqdm

from core import storage
from core.atomic import write_json_atomically
from core.disk_full import no_space_left
from core.errors import UserError
from data_prep.reader import read_manifest
from data_prep.verify import corrupted_data_error
from data_prep.shards import MANIFEST_NAME, is_multi_label
from models import build_model
from models.finetune import fine_tune
from models.pretrained import weights_sha256
from training import callbacks as run_callbacks
from training import input_pipeline, summaries, tensorboard_views, visuals
from training.config import ConfigError, dump_config
from training.distribution import (adapt_model_for_multi_worker, data_sharding, make_strategy,
                                   split_input_between_workers, wait_for_manifest)
from training.export import export_after_training
from training.metrics import compile_metrics
from training.optimizers import build_optimizer
from training.prepared_data import (check_labels, clip_inputs_of, clips_as_configured,
                                    ensure_prepared, extra_input_bands, model_normalization)
from training.run_dir import (attach_log_file, log_to_file, resume_command, update_run_status,
                              write_run_info)
from training.precision import choose_policy, set_policy, with_float32_logits
from training.schedules import schedule_from_config
from training.scoring import evaluate_video_level

logger = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """Training could not go on (e.g. the loss became NaN); the CLI prints it and exits 1."""


# --- model --------------------------------------------------------------------------------


def resumed_input_seed(seed, first_epoch):
    """The training input's seed for an attempt starting after `first_epoch` epochs.

    `seed` itself for a fresh run (so a seeded run is repeatable); a different, still
    deterministic seed for each resume point, so that the epochs after a resume see new
    shuffles, clips and crops, as the uninterrupted run's later epochs would.
    """
    return seed + 10007 * first_epoch




def prepare_fine_tuning(model, config):
    """Applies train.freeze_stages / train.freeze_bn (before compile); returns the
    learning-rate multipliers of train.lr_multipliers, {variable path: multiplier}
    (`models.finetune.fine_tune`). Raises UserError for a stage count the architecture
    does not have."""
    train = config.train
    try:
        frozen, lr_multipliers = fine_tune(
            model, config.model.name, freeze_stages=train.freeze_stages,
            freeze_batch_norm=train.freeze_bn, lr_multipliers=train.lr_multipliers)
    except ValueError as e:
        raise UserError(f"train.freeze_stages: {e}") from None
    if frozen:
        logger.info("frozen (not trainable) %d layers: %s", len(frozen),
                    ", ".join(frozen[:12]) + (", ..." if len(frozen) > 12 else ""))
    return lr_multipliers


def build_and_compile(config, num_classes, input_shape, steps_per_epoch, *, multi_label=False,
                      validation_clips=1, single_device=True, clip_inputs=None):
    """The model compiled for training; `clip_inputs` (`clip_inputs_of`) give its input
    dtype and normalisation (None: uint8 and the model's default)."""
    keywords = model_normalization(clip_inputs) if clip_inputs else {}
    try:
        model = build_model(config.model.name, num_classes, input_shape,
                            weights=config.model.weights,
                            **{**config.model.options, **keywords})
    except (ValueError, TypeError) as e:
        raise UserError(f"model: {e}") from None
    lr_multipliers = prepare_fine_tuning(model, config)
    model = with_float32_logits(model)
    schedule = schedule_from_config(config.train, steps_per_epoch)
    # Multi-label: a sigmoid per class, each class a binary decision (the model gives logits).
    loss_class = keras.losses.BinaryCrossentropy if multi_label \
        else keras.losses.CategoricalCrossentropy
    metrics, drawn_metric = compile_metrics(num_classes, multi_label, validation_clips,
                                            single_device)
    model.compile(
        optimizer=build_optimizer(config.train, schedule, lr_multipliers),
        loss=loss_class(from_logits=True, label_smoothing=config.train.label_smoothing),
        metrics=metrics,
    )
    return model, drawn_metric


# --- the run ------------------------------------------------------------------------------


def weights_record(path):
    """run.json's `weights`: where the run's starting weights came from, or None."""
    if path is None:
        return None
    try:
        digest = weights_sha256(path)
    except OSError as e:
        raise UserError(f"model.weights: cannot read the weights file {path}: {e.strerror}. "
                        f"Received: model.weights={path!r}") from None
    return {"path": os.path.abspath(path), "sha256": digest}


def _versions():
    return {"tensorflow": tf.__version__, "keras": keras.__version__}


def _one_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def corrupted_shard_error(error, data):
    """UserError naming the damaged shard behind a TensorFlow data error, or None."""
    try:
        manifest = read_manifest(data.prepared_dir)
    except UserError:
        return None
    return corrupted_data_error(error, data.prepared_dir, manifest,
                                splits=(data.train_split, data.test_split))


def run_experiment(config, run_dir, *, resume=False, show_progress=False, verbose=0,
                   extra_callbacks=(), worker_role=None, manifest_timeout_seconds=3600):
    """Trains and evaluates one config into `run_dir` (a RunDir from open_run_dir).

    `show_progress`: live bars (preparation, each epoch, each validation pass) for a
    terminal; the one line per epoch is logged either way. SIGINT and SIGTERM stop the run
    cleanly for the duration of the call (`callbacks.StopOnSignal`).

    Returns:
        dict, the metrics written to metrics.json.

    Raises:
        UserError: a mistake in the config or the data (the CLI prints one line, exits 2).
        TrainingError: training diverged (NaN loss).
        callbacks.RunInterrupted: SIGINT or SIGTERM; its `message` says after which epoch and
            how to resume; run.json says "interrupted" and train.log has the line. A failure
            records "failed" and its one-line reason the same way.

    With distribute.strategy multi_worker, `worker_role` (training.cluster.WorkerRole) says
    which task this process is; a non-chief gets a temporary `run_dir` of its own, waits for
    the chief to prepare the data, and otherwise runs exactly what the chief runs.
    """
    handler = attach_log_file(run_dir.train_log)
    stop = run_callbacks.StopOnSignal()
    stop.install()
    try:
        # Before any other TensorFlow op (see make_strategy).
        strategy = make_strategy(config.distribute)
        return _run(config, run_dir, strategy, resume=resume, show_progress=show_progress,
                    verbose=verbose, extra_callbacks=extra_callbacks, worker_role=worker_role,
                    manifest_timeout_seconds=manifest_timeout_seconds, stop=stop)
    except run_callbacks.RunInterrupted as interrupted:
        # What resume continues from: the backup of the last finished epoch.
        epochs = run_callbacks.SafeBackupAndRestore.saved_epoch(run_dir.backup)
        interrupted.message = (f"interrupted after epoch {epochs}; resume with: "
                               f"{resume_command(run_dir)}")
        log_to_file(handler, __name__, logging.WARNING,
                    f"{signal.Signals(interrupted.signal_number).name}: {interrupted.message}")
        update_run_status(run_dir, "interrupted", interrupted.message)
        raise
    except Exception as caught:
        # ENOSPC anywhere (a callback's write, h5py, TensorFlow): one line, how to resume.
        error = no_space_left(caught, run_dir.path, resume_command(run_dir)) or \
            corrupted_shard_error(caught, config.data) or caught
        reason = _one_line(error)
        log_to_file(handler, __name__, logging.ERROR, f"run failed: {reason}")
        update_run_status(run_dir, "failed", reason)
        if error is not caught:
            raise error from None
        raise
    finally:
        stop.uninstall()
        keras.mixed_precision.set_global_policy("float32")  # global in Keras: leave it clean
        logging.getLogger().removeHandler(handler)
        handler.close()


def _run(config, run_dir, strategy, *, resume, show_progress, verbose, extra_callbacks,
         worker_role, manifest_timeout_seconds, stop):
    started = time.perf_counter()
    logger.info("%s run %s (config %s)", "resuming" if resume else "starting", run_dir.path,
                config.name)
    if worker_role is not None:
        logger.info("task %s of %d workers%s", worker_role.name, worker_role.num_workers,
                    " (chief)" if worker_role.is_chief else "")
    if not resume or not os.path.exists(run_dir.config):
        dump_config(config, run_dir.config)
    run_data = _prepare_run_data(config, run_dir, worker_role, manifest_timeout_seconds,
                                 show_progress)
    inputs = _input_pipelines(config, run_data, run_dir, resume, worker_role)
    model, drawn_metric = _build_model(config, strategy, run_data, inputs)
    writers = tensorboard_views.Writers(run_dir.tensorboard)
    nan_stop = run_callbacks.NanLossStop()
    callback_list = [
        *([run_callbacks.ProgressBar(config.train.batch_size, inputs.steps_per_epoch,
                                     inputs.test_batches)] if show_progress else []),
        *_fit_callbacks(config, run_dir, run_data, inputs, nan_stop, writers, drawn_metric),
        *extra_callbacks,
        run_callbacks.SafeBackupAndRestore(run_dir.backup, nan_stop),
        stop,  # last: a signal stops after the epoch is backed up, or before it counts
    ]
    if not resume:  # a resumed run continues the session its first attempt started
        with writers("").as_default():
            summaries.start_hparams_session(config, run_dir, run_data.multi_label,
                                             precision=run_data.precision.policy)

    fit_seconds = _fit(model, config, inputs, callback_list, show_progress, verbose, stop)
    if nan_stop.stopped_at is not None:
        _stop_after_nan(nan_stop.stopped_at, config, run_dir, writers, inputs.steps_per_epoch)
    run_callbacks.save_model_atomically(model, run_dir.model)
    metrics = _evaluate(model, config, run_data, inputs, show_progress)
    metrics.update(fit_seconds_this_attempt=round(fit_seconds, 2),
                   seconds_this_attempt=round(time.perf_counter() - started, 2))
    _finish(model, config, run_dir, run_data, inputs, writers, metrics)
    return metrics


# --- the steps of a run, in order -----------------------------------------------------------


@dataclasses.dataclass
class RunData:
    """The prepared data a run trains on, as the later steps need it."""

    manifest: dict
    class_names: list
    input_shape: tuple
    multi_label: bool
    weights: dict | None  # run.json's record of model.weights
    precision: object  # training.precision's choice: the Keras policy and why
    clip_inputs: dict  # dtype, masks, dates, extra bands, normalisation (clip_inputs_of)
    picture: dict  # how TensorBoard draws its clips (visuals.picture_options)

    @property
    def num_classes(self):
        return len(self.class_names)


def _prepare_run_data(config, run_dir, worker_role, manifest_timeout_seconds, show_progress):
    """Prepared shards (by the chief only), checked labels, the class list beside the run,
    and run.json saying "running"."""
    if worker_role is not None and not worker_role.is_chief:
        wait_for_manifest(config.data.prepared_dir, timeout_seconds=manifest_timeout_seconds)
    manifest = ensure_prepared(config.data, show_progress=show_progress)
    prepared_dir = config.data.prepared_dir
    splits = (config.data.train_split, config.data.test_split)
    check_labels(prepared_dir, manifest, splits)
    clip_inputs = clip_inputs_of(config, manifest)
    # v2 (whole items): the run keeps the clips it draws (frames, sampling, views) and what
    # they hold (dtype, masks, dates, extra bands, normalisation), so evaluate.py and
    # predict.py take the same ones without the config.
    manifest, stored_short = clips_as_configured(config.data, manifest)
    if manifest.get("format_version", 1) == 1:
        # bytes as prepared (the manifest may lie behind a URL)
        storage.write_bytes(run_dir.data_manifest,
                            storage.read_bytes(storage.join(prepared_dir, MANIFEST_NAME)))
    else:
        manifest = {**manifest, "clip_inputs": clip_inputs}
        write_json_atomically(run_dir.data_manifest, manifest)
    class_names = list(manifest["classes"])
    with open(run_dir.classes, "w", encoding="utf-8") as f:
        f.write("".join(f"{name}\n" for name in class_names))
    frames, _, _, bands = manifest["clip_shape"]
    crop = config.input_size
    if crop > stored_short:
        raise UserError(f"augment.crop_size expects at most the stored size {stored_short}."
                        f" Received: augment.crop_size={crop}")
    input_shape = (frames, crop, crop, bands + extra_input_bands(clip_inputs))
    picture = visuals.picture_options(manifest.get("statistics"), clip_inputs["dtype"], bands,
                                      config.tensorboard.rgb_bands)
    weights = weights_record(config.model.weights)
    precision = choose_policy(config.train.mixed_precision)
    write_run_info(run_dir, config, manifest, input_shape, "running", _versions(), weights,
                   precision=precision.policy)
    return RunData(manifest, class_names, input_shape, is_multi_label(manifest), weights,
                   precision, clip_inputs, picture)


@dataclasses.dataclass
class Inputs:
    """The training and validation pipelines and the counts that go with them."""

    train: tf.data.Dataset
    validation: tf.data.Dataset
    steps_per_epoch: int
    repeat: bool  # a repeated input with a fixed step count (fit gets steps_per_epoch)
    clips_per_epoch: int
    eval_batch_size: int
    test_clips: int
    test_batches: int
    pipeline: dict  # eval_dataset and train_dataset keywords: clip shape, classes, crop
    augment: dict  # train_dataset keywords: the training augmentation


def _input_pipelines(config, run_data, run_dir, resume, worker_role):
    manifest, prepared_dir = run_data.manifest, config.data.prepared_dir
    train_split = manifest["splits"][config.data.train_split]
    train_items = train_split["videos"] if config.augment.temporal_jitter else train_split["clips"]
    batch_size = config.train.batch_size
    steps_per_epoch = config.train.steps_per_epoch or math.ceil(train_items / batch_size)
    # Workers get unequal shares of the files; a repeated input with a fixed step count keeps
    # every worker in the same all-reduce (an exhausted one would hang the others).
    repeat = config.train.steps_per_epoch is not None or worker_role is not None
    clips_per_epoch = min(steps_per_epoch * batch_size, train_items) if not \
        config.train.steps_per_epoch else steps_per_epoch * batch_size
    eval_batch_size = config.train.eval_batch_size or batch_size
    # The test split serves validation each epoch and the final evaluation.
    test_clips = manifest["splits"][config.data.test_split]["clips"]
    test_batches = math.ceil(test_clips / eval_batch_size)
    pipeline = dict(clip_shape=manifest["clip_shape"], num_classes=run_data.num_classes,
                    crop_size=config.input_size, sampling=config.data.sampling,
                    frame_stride=config.data.frame_stride, clip_inputs=run_data.clip_inputs)
    augment = dict(random_crop_enabled=config.augment.random_crop,
                   horizontal_flip=config.augment.horizontal_flip,
                   temporal_jitter=config.augment.temporal_jitter)
    # A resumed attempt must not replay the first attempt's epochs: the input's shuffles,
    # clip choices and crops restart from their seed with every new pipeline, so it gets a
    # seed of its own, derived from where it resumes.
    first_epoch = run_callbacks.SafeBackupAndRestore.saved_epoch(run_dir.backup) if resume \
        else 0
    input_seed = resumed_input_seed(config.train.seed, first_epoch)
    if first_epoch:
        logger.info("resuming after epoch %d: the training input continues with seed %d "
                    "(a fresh order, not a replay of the first epochs)", first_epoch, input_seed)
    num_input_pipelines, input_pipeline_id, sharding = 1, 0, None
    if worker_role is not None:
        num_input_pipelines, input_pipeline_id, sharding = split_input_between_workers(
            len(train_split["shards"]), worker_role)
    train_data = input_pipeline.train_dataset(
        prepared_dir, config.data.train_split, batch_size=batch_size,
        shuffle_buffer=config.train.shuffle_buffer, seed=input_seed,
        repeat=repeat, check_cardinality=worker_role is None,
        num_input_pipelines=num_input_pipelines, input_pipeline_id=input_pipeline_id,
        **augment, **pipeline)
    validation_data = input_pipeline.eval_dataset(
        prepared_dir, config.data.test_split, batch_size=eval_batch_size,
        num_clips=manifest["clips_per_video"], **pipeline)
    if worker_role is not None:
        train_data = train_data.with_options(sharding)
        # Validation by element: its every-clip count is asserted before the shard.
        validation_data = validation_data.with_options(data_sharding())
    return Inputs(train_data, validation_data, steps_per_epoch, repeat, clips_per_epoch,
                  eval_batch_size, test_clips, test_batches, pipeline, augment)


def _build_model(config, strategy, run_data, inputs):
    """The compiled model under the strategy, and the metric TensorBoard draws (or None)."""
    # The policy is global in Keras, so set it every run.
    keras.backend.clear_session()
    keras.utils.set_random_seed(config.train.seed)
    set_policy(run_data.precision)
    with strategy.scope():
        model, drawn_metric = build_and_compile(
            config, run_data.num_classes, run_data.input_shape, inputs.steps_per_epoch,
            multi_label=run_data.multi_label, validation_clips=inputs.test_clips,
            single_device=config.distribute.strategy == "none", clip_inputs=run_data.clip_inputs)
    if config.distribute.strategy == "multi_worker":
        # Keras 3.15.1's fit fails under this strategy (see training/distribution.py).
        adapt_model_for_multi_worker(model, strategy)
    logger.info("model %s: %d parameters, input %s, %d classes, %d steps/epoch",
                config.model.name, model.count_params(), run_data.input_shape,
                run_data.num_classes, inputs.steps_per_epoch)
    return model, drawn_metric


def _fit_callbacks(config, run_dir, run_data, inputs, nan_stop, writers, drawn_metric):
    """The callbacks between the progress bar and the backup; order matters: EpochLog adds
    its values to the logs before TensorBoard and the CSV history read them, and the backup
    goes last, so that a kill between callbacks repeats an epoch (its history row replaced)
    rather than loses its checkpoint and row."""
    view_inputs = tensorboard_views.gather_view_inputs(
        config, writers, run_data.class_names, drawn_metric=drawn_metric,
        multi_label=run_data.multi_label, validation_data=inputs.validation,
        clips_per_video=int(run_data.manifest["clips_per_video"]),
        dataset_options={**inputs.augment, **inputs.pipeline},
        picture=run_data.picture)
    views = tensorboard_views.tensorboard_callbacks(
        config.tensorboard, view_inputs,
        learning_rate_every=tensorboard_views.learning_rate_every(inputs.steps_per_epoch))
    return [
        nan_stop,
        run_callbacks.EpochLog(inputs.clips_per_epoch),
        run_callbacks.RunCheckpoints(run_dir.checkpoints, nan_stop, monitor=(
            "val_mean_average_precision" if run_data.multi_label else "val_top1")),
        *views,
        run_callbacks.HistoryCSV(run_dir.history),  # rewritten atomically each epoch
    ]


def _fit(model, config, inputs, callback_list, show_progress, verbose, stop):
    """model.fit over the configured epochs; returns its seconds."""
    fit_started = time.perf_counter()
    try:
        with logging_redirect_tqdm() if show_progress else contextlib.nullcontext():
            model.fit(inputs.train, validation_data=inputs.validation,
                      epochs=config.train.epochs,
                      steps_per_epoch=inputs.steps_per_epoch if inputs.repeat else None,
                      callbacks=callback_list, verbose=verbose, shuffle=False)
    except tf.errors.InvalidArgumentError as e:
        # e.g. shards replaced mid-run, or an op without a kernel for the chosen dtype.
        logger.error("training failed: %s", e.message)  # all of it, for train.log
        raise TrainingError(f"training failed: {e.message.splitlines()[0]}") from None
    finally:
        stop.fit_ended()
    return time.perf_counter() - fit_started


def _stop_after_nan(where, config, run_dir, writers, steps_per_epoch):
    """Ends a diverged run: a failed HParams session, the curves so far, TrainingError."""
    with writers("").as_default():
        summaries.hparams_session_end(success=False)
    writers.close()
    message = (f"loss became {where['loss']} at epoch {where['epoch']}, batch "
               f"{where['batch']}; training stopped (no checkpoint of the broken weights "
               "was kept). Lower train.learning_rate, add train.gradient_clip_norm, or "
               "check the data.")
    logger.error(message)
    summaries.write_training_curves(run_dir, config, steps_per_epoch)
    raise TrainingError(message)


def _evaluate(model, config, run_data, inputs, show_progress):
    """The video-level evaluation on the test split: metrics.json's numbers."""
    test_data = input_pipeline.eval_dataset(
        config.data.prepared_dir, config.data.test_split, batch_size=inputs.eval_batch_size,
        with_item_index=True, num_clips=run_data.manifest["clips_per_video"], **inputs.pipeline)
    multi_label = run_data.multi_label
    results = evaluate_video_level(
        model, test_data, run_data.num_classes, multi_label, show_progress=show_progress,
        batches=inputs.test_batches)
    return {
        "split": config.data.test_split,
        **({"multi_label": True} if multi_label else {}),
        **{key: results[key] for key in summaries.TEST_RESULT_KEYS[multi_label]},
        "epochs": config.train.epochs,
    }


def _finish(model, config, run_dir, run_data, inputs, writers, metrics):
    """The test scalars and the end of the HParams session, metrics.json, curves.png,
    run.json "finished", the export; the backup goes."""
    multi_label = run_data.multi_label
    with writers("").as_default():
        summaries.write_test_scalars(metrics, run_data.class_names, multi_label,
                                     step=config.train.epochs)
        summaries.hparams_session_end(success=True)
    writers.close()
    write_json_atomically(run_dir.metrics, metrics)
    summaries.write_training_curves(run_dir, config, inputs.steps_per_epoch)
    write_run_info(run_dir, config, run_data.manifest, run_data.input_shape, "finished",
                   _versions(), run_data.weights, precision=run_data.precision.policy)
    # The backup only serves an unfinished run; metrics.json now marks this one finished.
    shutil.rmtree(run_dir.backup, ignore_errors=True)
    # RUN_DIR/export/ SavedModel; a failure is logged, never fatal (model.keras is saved).
    # Every worker exports (a non-chief into its temporary run_dir), like every other save.
    export_after_training(model, run_dir, run_data.class_names, multi_label=multi_label)
    logger.info("test (%s, %d videos, %d clips): %s", metrics["split"], metrics["videos"],
                metrics["clips"], ", ".join(f"{name} {metrics[key]:.4f}"
                                             for name, key in summaries.TEST_HEADLINE[multi_label]))
