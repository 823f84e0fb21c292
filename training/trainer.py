"""One training run, in order: data, model, fit, evaluation, run directory.

`run_experiment(config, run_dir)` is what `train.py` calls. It reads top to bottom like the
story of a run: make sure the clips are prepared, check the labels, build the input
pipelines, build and compile the model under the distribution strategy, fit with the
callbacks (backup, checkpoints, TensorBoard, NaN stop), save the model, evaluate on the test
split averaging the softmax over every stored clip of a video, and write metrics.json.
"""

import contextlib
import json
import logging
import math
import os
import shutil
import signal
import time

import cv2
import keras
import numpy as np
import tensorflow as tf
from tqdm.contrib.logging import logging_redirect_tqdm

import data_prep
from core.atomic import write_json_atomically
from core.errors import UserError
from data_prep.prepare import prepare_dataset
from data_prep.shards import MANIFEST_NAME, is_multi_label
from data_prep.synth import generate_dataset, prepare_arguments
from models import build_model
from models.finetune import freeze, variable_groups
from models.pretrained import weights_sha256
from training import callbacks as run_callbacks
from training import input_pipeline, summaries, visuals
from training.config import ConfigError, check_prepared_data, dump_config
from training.distribution import (adapt_model_for_multi_worker, data_sharding, make_strategy,
                                   split_input_between_workers, wait_for_manifest)
from training.export import export_after_training
from training.metrics import MeanAveragePrecision, MeanClassAccuracy
from training.optimizers import OPTIMIZERS
from training.precision import choose_policy, set_policy, with_float32_logits
from training.run_dir import read_history, update_run_status, write_run_info
from training.schedules import schedule_from_config
from training.scoring import evaluate_video_level

logger = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """Training could not go on (e.g. the loss became NaN); the CLI prints it and exits 1."""


# --- data ---------------------------------------------------------------------------------


def ensure_prepared(data, *, show_progress=False):
    """Returns the manifest of data.prepared_dir, generating/preparing it first if needed.

    Raises:
        UserError: the prepared clips do not match the config, or preparing failed on the
            user's input (missing root, bad split files, ...).
    """
    manifest_path = os.path.join(data.prepared_dir, MANIFEST_NAME)
    if not os.path.exists(manifest_path):
        layout, root, lists = data.layout, data.root, data.lists
        multi_label = data.multi_label
        if layout == "synth":
            if not root:
                raise ConfigError("data.root is required for layout synth: where the demo "
                                  "videos are generated. Received: data.root=None")
            logger.info("generating the synthetic demo videos in %s", root)
            generate_dataset(root, show_progress=show_progress, **data.synth)
            generated = prepare_arguments(root)
            layout, lists = generated["layout"], generated["lists"]
            multi_label = generated.get("multi_label", False)
        elif not root:
            raise ConfigError(f"data.root is required to prepare layout {layout} "
                              f"(data.prepared_dir {data.prepared_dir} holds no manifest.json). "
                              "Received: data.root=None")
        logger.info("preparing %s clips from %s into %s", layout, root, data.prepared_dir)
        prepare_dataset(
            layout, root, data.prepared_dir, data.frames, data.size,
            split_dir=data.split_dir, split=data.split, lists=lists,
            classes_file=data.classes_file, resize_short=data.resize_short,
            clips_per_video=data.clips_per_video, sampling=data.sampling,
            frame_stride=data.frame_stride, workers=data.workers, encoding=data.encoding,
            only_present=data.only_present, multi_label=multi_label,
            num_classes=data.num_classes,
            filename_template=data.filename_template, start_index=data.start_index,
            with_offset=data.with_offset, show_progress=show_progress,
        )
    manifest = data_prep.read_manifest(data.prepared_dir)
    check_prepared_data(data, manifest)
    return manifest


def check_labels(prepared_dir, manifest, splits):
    """Raises UserError if any stored label is outside [0, num_classes)."""
    num_classes = len(manifest["classes"])
    for split in splits:
        counts = input_pipeline.split_label_counts(prepared_dir, manifest, split)
        bad = sorted(label for label in counts if not 0 <= label < num_classes)
        if bad:
            raise UserError(
                f"{prepared_dir}: split {split} has labels outside [0, {num_classes}) "
                f"({len(manifest['classes'])} classes in manifest.json). Received: "
                f"labels={bad[:10]}"
            )
        missing = [manifest["classes"][c] for c in range(num_classes) if c not in counts]
        if missing:
            logger.warning("split %s has no clips of %d classes: %s", split, len(missing),
                           ", ".join(missing[:10]))


# --- model --------------------------------------------------------------------------------


def resumed_input_seed(seed, first_epoch):
    """The training input's seed for an attempt starting after `first_epoch` epochs.

    `seed` itself for a fresh run (so a seeded run is repeatable); a different, still
    deterministic seed for each resume point, so that the epochs after a resume see new
    shuffles, clips and crops, as the uninterrupted run's later epochs would.
    """
    return seed + 10007 * first_epoch


def build_optimizer(train, schedule, lr_multipliers=None):
    """The configured optimizer; `lr_multipliers` = {variable path: multiplier} (see
    training/optimizers.py), from `learning_rate_multipliers`."""
    weight_decay = train.weight_decay or None
    clipnorm = train.gradient_clip_norm
    options = dict(clipnorm=clipnorm, lr_multipliers=lr_multipliers)
    if train.optimizer == "sgd":
        optimizer = OPTIMIZERS["sgd"](schedule, momentum=train.momentum, nesterov=train.nesterov,
                                      weight_decay=weight_decay, **options)
    elif train.optimizer == "adam":
        optimizer = OPTIMIZERS["adam"](schedule, weight_decay=weight_decay, **options)
    else:
        optimizer = OPTIMIZERS["adamw"](schedule, weight_decay=train.weight_decay, **options)
    if weight_decay:
        # Decay the kernels only: shrinking biases and normalisation scales does not regularise.
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return optimizer


def learning_rate_multipliers(model, group_multipliers):
    """{variable path: multiplier} of the trainable variables whose group (head, backbone,
    offsets: models.finetune.variable_groups) has a multiplier other than 1."""
    trainable = {variable.path for variable in model.trainable_variables}
    return {path: float(group_multipliers[group])
            for path, group in variable_groups(model).items()
            if path in trainable and float(group_multipliers.get(group, 1.0)) != 1.0}


def prepare_fine_tuning(model, config):
    """Applies train.freeze_stages / train.freeze_bn (before compile); returns the frozen
    layer names. Raises UserError for a stage count the architecture does not have."""
    train = config.train
    if train.freeze_stages is None and not train.freeze_bn:
        return []
    try:
        frozen = freeze(model, config.model.name, stages=train.freeze_stages,
                        batch_norm=train.freeze_bn)
    except ValueError as e:
        raise UserError(f"train.freeze_stages: {e}") from None
    logger.info("frozen (not trainable) %d layers: %s", len(frozen),
                ", ".join(frozen[:12]) + (", ..." if len(frozen) > 12 else ""))
    return frozen


def compile_metrics(num_classes, multi_label, validation_clips, single_device):
    """(metrics for compile, the metric TensorBoard draws each epoch, or None).

    Single-label: top-1, top-k and MeanClassAccuracy (its confusion matrix is drawn).
    Multi-label: MeanAveragePrecision holding the validation split's clips (its per-class AP
    is drawn); it keeps the clips of one device, so under a strategy only the final test
    evaluation reports mAP.
    """
    if multi_label:
        if not single_device:
            return [], None
        average_precision = MeanAveragePrecision(num_classes, capacity=validation_clips)
        return [average_precision], average_precision
    confusion = MeanClassAccuracy(num_classes)
    return [keras.metrics.CategoricalAccuracy(name="top1"),
            keras.metrics.TopKCategoricalAccuracy(k=min(5, num_classes), name="top5"),
            confusion], confusion


def build_and_compile(config, num_classes, input_shape, steps_per_epoch, *, multi_label=False,
                      validation_clips=1, single_device=True):
    try:
        model = build_model(config.model.name, num_classes, input_shape,
                            weights=config.model.weights, **config.model.options)
    except (ValueError, TypeError) as e:
        raise UserError(f"model: {e}") from None
    prepare_fine_tuning(model, config)
    lr_multipliers = learning_rate_multipliers(model, config.train.lr_multipliers)
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


def _hparams(config):
    """Scalars of the config for the HParams dashboard, under their config keys (model
    options one per key, other lists and dicts as text)."""
    flat = {}
    for section in ("data", "model", "augment", "train"):
        for key, value in vars(getattr(config, section)).items():
            if section == "data" and key in ("root", "split_dir", "lists", "classes_file",
                                             "prepared_dir", "workers", "synth"):
                continue
            if section == "model" and key == "weights" and value is None:
                value = "none"  # trained from scratch: a value to compare pretrained runs with
            if value is None:
                continue
            if section == "model" and key == "options":
                for option, option_value in sorted(value.items()):
                    flat[f"model.options.{option}"] = (
                        json.dumps(option_value, sort_keys=True)
                        if isinstance(option_value, (list, dict)) else option_value)
                continue
            if isinstance(value, (list, dict)):
                value = json.dumps(value, sort_keys=True)
            flat[f"{section}.{key}"] = value
    flat["distribute.strategy"] = config.distribute.strategy
    return flat


# What runs are compared on, shown by default (the dashboard ticks the first five; the rest,
# and every other config key, are a tick away); model options follow them.
SHOWN_HPARAMS = ("model.name", "train.learning_rate", "train.batch_size", "train.epochs",
                 "data.frames", "train.optimizer", "train.schedule", "train.warmup_epochs",
                 "data.size", "augment.crop_size", "model.weights")


def shown_hparams(hparams):
    """SHOWN_HPARAMS then the model options, those present in `hparams`."""
    options = [name for name in hparams if name.startswith("model.options.")]
    return [name for name in (*SHOWN_HPARAMS, *options) if name in hparams]


def trial_name(config, run_dir):
    """`<config name>/<run directory name>`, e.g. `demo/20260101-120000`."""
    return f"{config.name}/{os.path.basename(os.path.normpath(run_dir.path))}"


HPARAMS_METRICS = [("", "test/top1"), ("", "test/top5"), ("", "test/mean_class_accuracy"),
                   ("", "test/loss"), ("validation", "epoch_top1"), ("validation", "epoch_loss"),
                   ("train", "epoch_top1"), ("train", "epoch_loss")]


def learning_rate_every(steps_per_epoch, per_epoch=20):
    """Steps between `step_learning_rate` scalars: about `per_epoch` of them an epoch."""
    return max(1, steps_per_epoch // per_epoch)


def write_training_curves(run_dir, config, steps_per_epoch, points=400):
    """RUN_DIR/curves.png from history.csv, the rate drawn per step from the schedule (what
    the optimizer applied at each `optimizer.iterations`). A failure is only logged."""
    try:
        history = read_history(run_dir)
        if not history:
            return
        schedule = schedule_from_config(config.train, steps_per_epoch)
        total = config.train.epochs * steps_per_epoch
        steps = np.unique(np.linspace(0, total - 1, min(points, total)).round().astype(int))
        rates = keras.ops.convert_to_numpy(schedule(keras.ops.convert_to_tensor(steps, "int64")))
        image = visuals.training_curves_image(
            history, (steps / steps_per_epoch, rates),
            title=f"{config.name}: {config.model.name}, {run_dir.path}")
        if not cv2.imwrite(run_dir.curves, cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
            raise OSError(f"cannot write {run_dir.curves}")
    except (OSError, ValueError, KeyError) as e:
        logger.warning("no curves.png: %s", e)


# What a finished run reports, by label kind (key: multi-label or not): the metrics.json keys
# from the video-level results, and the headline (log name, key) pairs, also its test/ scalars.
TEST_RESULT_KEYS = {
    False: ("top1", "top5", "top5_k", "mean_class_accuracy", "loss", "clips", "videos",
            "clip_top1"),
    True: ("mean_average_precision", "micro_f1", "macro_f1", "threshold", "loss", "clips",
           "videos", "clip_mean_average_precision", "per_class_ap"),
}
TEST_HEADLINE = {
    False: (("top1", "top1"), ("top5", "top5"), ("mean class accuracy", "mean_class_accuracy"),
            ("loss", "loss")),
    True: (("mean average precision", "mean_average_precision"), ("micro F1", "micro_f1"),
           ("macro F1", "macro_f1"), ("loss", "loss")),
}


MULTI_LABEL_HPARAMS_METRICS = [
    ("", "test/mean_average_precision"), ("", "test/micro_f1"), ("", "test/macro_f1"),
    ("", "test/loss"), ("validation", "epoch_mean_average_precision"),
    ("validation", "epoch_loss"), ("train", "epoch_loss")]


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


def _attach_log_file(path):
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    return handler


def _log_to_file(handler, level, message):
    """One record into train.log only (the CLI prints its own line on the terminal)."""
    handler.handle(logging.LogRecord(__name__, level, __file__, 0, message, None, None))


def _one_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def resume_command(run_dir):
    return (f"python train.py --config {run_dir.config} --run-dir {run_dir.path} --resume")


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
    handler = _attach_log_file(run_dir.train_log)
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
        _log_to_file(handler, logging.WARNING, f"{signal.Signals(interrupted.signal_number).name}"
                                               f": {interrupted.message}")
        update_run_status(run_dir, "interrupted", interrupted.message)
        raise
    except Exception as error:
        reason = _one_line(error)
        _log_to_file(handler, logging.ERROR, f"run failed: {reason}")
        update_run_status(run_dir, "failed", reason)
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

    # Data: prepared shards (by the chief only), checked labels, the class list beside the run.
    if worker_role is not None and not worker_role.is_chief:
        wait_for_manifest(config.data.prepared_dir, timeout_seconds=manifest_timeout_seconds)
    manifest = ensure_prepared(config.data, show_progress=show_progress)
    prepared_dir = config.data.prepared_dir
    splits = (config.data.train_split, config.data.test_split)
    check_labels(prepared_dir, manifest, splits)
    shutil.copyfile(os.path.join(prepared_dir, MANIFEST_NAME), run_dir.data_manifest)
    class_names = list(manifest["classes"])
    num_classes = len(class_names)
    with open(run_dir.classes, "w", encoding="utf-8") as f:
        f.write("".join(f"{name}\n" for name in class_names))
    frames, height, width, bands = manifest["clip_shape"]
    crop = config.input_size
    if crop > min(height, width):
        raise UserError(f"augment.crop_size expects at most the stored size {min(height, width)}."
                        f" Received: augment.crop_size={crop}")
    input_shape = (frames, crop, crop, bands)
    weights = weights_record(config.model.weights)
    precision = choose_policy(config.train.mixed_precision)
    write_run_info(run_dir, config, manifest, input_shape, "running", _versions(), weights,
                   precision=precision.policy)

    # Input pipelines.
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
    pipeline = dict(clip_shape=manifest["clip_shape"], num_classes=num_classes, crop_size=crop)
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
        prepared_dir, config.data.test_split, batch_size=eval_batch_size, **pipeline)
    if worker_role is not None:
        train_data = train_data.with_options(sharding)
        # Validation by element: its every-clip count is asserted before the shard.
        validation_data = validation_data.with_options(data_sharding())

    # Model, under the strategy; the policy is global in Keras, so set it every run.
    keras.backend.clear_session()
    keras.utils.set_random_seed(config.train.seed)
    set_policy(precision)
    multi_label = is_multi_label(manifest)
    with strategy.scope():
        model, drawn_metric = build_and_compile(
            config, num_classes, input_shape, steps_per_epoch, multi_label=multi_label,
            validation_clips=test_clips,
            single_device=config.distribute.strategy == "none")
    if config.distribute.strategy == "multi_worker":
        # Keras 3.15.1's fit fails under this strategy (see training/distribution.py).
        adapt_model_for_multi_worker(model, strategy)
    logger.info("model %s: %d parameters, input %s, %d classes, %d steps/epoch",
                config.model.name, model.count_params(), input_shape, num_classes,
                steps_per_epoch)

    # Callbacks; order matters: EpochLog adds its values to the logs before TensorBoard and
    # the CSV history read them, and the backup goes last, so that a kill between callbacks
    # repeats an epoch (a duplicate history row) rather than loses its checkpoint and row.
    tensorboard = config.tensorboard
    count = tensorboard.clip_images
    sample_clips = {}
    if count:
        sample_clips = {
            "train": input_pipeline.sample_clips(input_pipeline.train_dataset(
                prepared_dir, config.data.train_split, batch_size=count, shuffle_buffer=1,
                seed=config.train.seed, **augment, **pipeline), count, with_labels=True),
            # The first clip of each of `count` videos (a video's clips are consecutive).
            "validation": input_pipeline.sample_clips(
                validation_data, count, every=int(manifest["clips_per_video"]),
                with_labels=True),
        }
    offset_sample = input_pipeline.sample_clips(validation_data, 1)
    nan_stop = run_callbacks.NanLossStop()
    tensorboard_logger = run_callbacks.TensorBoardLogger(
        run_dir.tensorboard, class_names=class_names, sample_clips=sample_clips,
        confusion_metric=drawn_metric if tensorboard.confusion_matrix and not multi_label
        else None,
        average_precision_metric=drawn_metric if multi_label else None,
        histograms=tensorboard.histograms, graph=tensorboard.graph,
        deform_offsets=tensorboard.deform_offsets,
        offset_sample=np.stack(offset_sample) if offset_sample else None,
        learning_rate_every=learning_rate_every(steps_per_epoch),
    )
    progress = []
    if show_progress:
        progress = [run_callbacks.ProgressBar(batch_size, steps_per_epoch, test_batches)]
    callback_list = [
        *progress,
        nan_stop,
        run_callbacks.EpochLog(clips_per_epoch),
        run_callbacks.RunCheckpoints(run_dir.checkpoints, nan_stop, monitor=(
            "val_mean_average_precision" if multi_label else "val_top1")),
        tensorboard_logger,
        keras.callbacks.CSVLogger(run_dir.history, append=True),
        *extra_callbacks,
        run_callbacks.SafeBackupAndRestore(run_dir.backup, nan_stop),
        stop,  # last: a signal stops after the epoch is backed up, or before it counts
    ]
    hparams = {**_hparams(config), "train.precision_policy": precision.policy}
    if not resume:  # a resumed run continues the session its first attempt started
        with tensorboard_logger.writer("").as_default():
            summaries.hparams_experiment(hparams, MULTI_LABEL_HPARAMS_METRICS if multi_label
                                         else HPARAMS_METRICS,
                                         description=f"{config.name}: {config.model.name}",
                                         shown=shown_hparams(hparams))
            summaries.hparams_session_start(hparams, model_uri=run_dir.checkpoints,
                                            trial_name=trial_name(config, run_dir))

    fit_started = time.perf_counter()
    try:
        with logging_redirect_tqdm() if show_progress else contextlib.nullcontext():
            model.fit(train_data, validation_data=validation_data, epochs=config.train.epochs,
                      steps_per_epoch=steps_per_epoch if repeat else None,
                      callbacks=callback_list, verbose=verbose, shuffle=False)
    except tf.errors.InvalidArgumentError as e:
        # e.g. shards replaced mid-run, or an op without a kernel for the chosen dtype.
        logger.error("training failed: %s", e.message)  # all of it, for train.log
        raise TrainingError(f"training failed: {e.message.splitlines()[0]}") from None
    finally:
        stop.fit_ended()
    fit_seconds = time.perf_counter() - fit_started
    if nan_stop.stopped_at is not None:
        where = nan_stop.stopped_at
        with tensorboard_logger.writer("").as_default():
            summaries.hparams_session_end(success=False)
        tensorboard_logger.close()
        message = (f"loss became {where['loss']} at epoch {where['epoch']}, batch "
                   f"{where['batch']}; training stopped (no checkpoint of the broken weights "
                   "was kept). Lower train.learning_rate, add train.gradient_clip_norm, or "
                   "check the data.")
        logger.error(message)
        write_training_curves(run_dir, config, steps_per_epoch)
        raise TrainingError(message)

    # The final model, then the video-level evaluation on the test split.
    run_callbacks.save_model_atomically(model, run_dir.model)
    test_data = input_pipeline.eval_dataset(
        prepared_dir, config.data.test_split, batch_size=eval_batch_size, with_item_index=True,
        **pipeline)
    results = evaluate_video_level(
        model, test_data, num_classes, multi_label, show_progress=show_progress,
        batches=test_batches)
    metrics = {
        "split": config.data.test_split,
        **({"multi_label": True} if multi_label else {}),
        **{key: results[key] for key in TEST_RESULT_KEYS[multi_label]},
        "epochs": config.train.epochs,
        "fit_seconds_this_attempt": round(fit_seconds, 2),
        "seconds_this_attempt": round(time.perf_counter() - started, 2),
    }
    headline, step = TEST_HEADLINE[multi_label], config.train.epochs
    with tensorboard_logger.writer("").as_default():
        for _, key in headline:
            summaries.scalar(f"test/{key}", metrics[key], step=step)
        if multi_label:
            for name, value in zip(class_names, metrics["per_class_ap"]):
                if value is not None:
                    summaries.scalar(f"test_per_class_ap/{name}", value, step=step)
        summaries.hparams_session_end(success=True)
    tensorboard_logger.close()
    write_json_atomically(run_dir.metrics, metrics)
    write_training_curves(run_dir, config, steps_per_epoch)
    write_run_info(run_dir, config, manifest, input_shape, "finished", _versions(), weights,
                   precision=precision.policy)
    # The backup only serves an unfinished run; metrics.json now marks this one finished.
    shutil.rmtree(run_dir.backup, ignore_errors=True)
    # RUN_DIR/export/ SavedModel; a failure is logged, never fatal (model.keras is saved).
    # Every worker exports (a non-chief into its temporary run_dir), like every other save.
    export_after_training(model, run_dir, class_names, multi_label=multi_label)
    logger.info("test (%s, %d videos, %d clips): %s", metrics["split"], metrics["videos"],
                metrics["clips"],
                ", ".join(f"{name} {metrics[key]:.4f}" for name, key in headline))
    return metrics

