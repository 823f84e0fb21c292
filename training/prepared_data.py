"""A config's prepared data: prepared when missing, and checked against the config.

- `check_data_sources(data)`: train.py's early check, before TensorFlow loads and before a run
  directory exists: the source resolves (the same `SourceSpec` that prepares it, so no option
  is dropped) or the prepared manifest fits the config.
- `ensure_prepared(data)`: the data step of a run (and of `train.py --prepare-only`):
  generate the synthetic demo if asked, prepare the shards if no manifest is there, check it.
- `check_prepared_data(data, manifest)`, `check_labels(...)`: a manifest (and its stored
  labels) against the config.
- `clip_inputs_of(config, manifest)`: what the run's clips hold beyond the stored frames
  (dtype, masks, dates, extra bands) and how its model standardises them
  (`data.normalization` resolved to per-band numbers); the run keeps it in
  data_manifest.json (`clip_inputs`), so evaluate and predict need no config.

No TensorFlow is imported here at module level; `check_labels` reads records through
`data_prep.shards`, which loads it when called.
"""

import logging

import numpy as np

from core import storage
from core.errors import UserError
from data_prep.prepare import prepare_dataset
from data_prep.reader import clip_manifest, is_whole_items, read_manifest
from data_prep.record_index import index_records, record_files
from data_prep.shards import (MANIFEST_NAME, is_multi_label, num_classes_of,
                              read_record_fields, split_shard_paths)
from data_prep.sources import resolve_source
from data_prep.synth import generate_dataset
from training.config import ConfigError

logger = logging.getLogger(__name__)


def _check_root_given(data):
    if not data.root:
        raise ConfigError(f"data.root is required to prepare layout {data.layout} "
                          f"(data.prepared_dir {data.prepared_dir} holds no manifest.json). "
                          "Received: data.root=None")


def check_data_sources(data):
    """Raises UserError for a missing data.root, split file, list or classes file, a list
    that does not read as the config says, or prepared clips that do not fit the config.

    Checked by the reader that prepares (data_prep.sources, no TensorFlow) with the whole
    `SourceSpec`, so that a wrong path costs a second and leaves nothing behind. Data already
    prepared (manifest.json) is checked against the config instead; generated data (synth)
    needs no source.
    """
    if storage.exists(storage.join(data.prepared_dir, MANIFEST_NAME)):
        check_prepared_data(data, read_manifest(data.prepared_dir))
        return
    if data.layout == "synth":
        return
    if data.layout == "tfrecord":
        for split, pattern in (data.lists or {}).items():
            record_files(pattern, split)
        return
    _check_root_given(data)
    resolve_source(data.source_spec())


def ensure_prepared(data, *, show_progress=False):
    """Returns the manifest of data.prepared_dir, generating/preparing it first if needed.

    Raises:
        UserError: the prepared clips do not match the config, or preparing failed on the
            user's input (missing root, bad split files, ...).
    """
    if not storage.exists(storage.join(data.prepared_dir, MANIFEST_NAME)) and \
            data.layout == "tfrecord":
        # Records written elsewhere (Model Garden, DMVR): indexed where they are, no prepare.
        logger.info("indexing the TFRecords of %s into %s", data.lists, data.prepared_dir)
        index_records(data.prepared_dir, data.lists, classes_file=data.classes_file,
                      num_classes=data.num_classes, multi_label=data.multi_label)
    if not storage.exists(storage.join(data.prepared_dir, MANIFEST_NAME)):
        if data.layout == "synth":
            if not data.root:
                raise ConfigError("data.root is required for layout synth: where the demo "
                                  "videos are generated. Received: data.root=None")
            logger.info("generating the synthetic demo videos in %s", data.root)
            generate_dataset(data.root, show_progress=show_progress, **data.synth)
        _check_root_given(data)
        spec = data.source_spec()
        logger.info("preparing %s clips from %s into %s", spec.layout, spec.root,
                    data.prepared_dir)
        prepare_dataset(
            spec, data.prepared_dir, data.frames, data.size,
            resize_short=data.resize_short, clips_per_video=data.clips_per_video,
            sampling=data.sampling, frame_stride=data.frame_stride, workers=data.workers,
            encoding=data.encoding, show_progress=show_progress, format=data.format,
            **({"fps": data.fps, "max_frames": data.max_frames} if data.format == "v2"
               else {}),
        )
    manifest = read_manifest(data.prepared_dir)
    found = "v2" if is_whole_items(manifest) else "v1"
    if data.layout != "tfrecord" and found != data.format:
        # Either format reads; preparing again would throw away data that still works.
        logger.info("%s holds format %s data (the config says data.format %s): reading it "
                    "as it is; prepare into another data.prepared_dir for %s",
                    data.prepared_dir, found, data.format, data.format)
    check_prepared_data(data, manifest)
    return manifest


def check_prepared_data(data, manifest):
    """Raises UserError if prepared clips (their manifest.json) do not fit the `data` config.

    No TensorFlow here: train.py checks this before the run directory exists. A v2
    dataset (whole items) fits any frames, sampling and clips_per_video: they are drawn
    while training; only its stored short side must hold data.size.
    """
    if is_whole_items(manifest):
        short = stored_short_side(manifest)
        if short < data.size:
            raise UserError(
                f"{data.prepared_dir} stores frames of short side {short} but the config asks "
                f"for data.size={data.size}; use another data.prepared_dir or set "
                f"data.size <= {short}. Received: data.size={data.size}")
        _check_dates(data, manifest)
        _check_splits_and_labels(data, manifest)
        return
    frames, height, width, _ = manifest["clip_shape"]
    expected = {"data.frames": (data.frames, frames), "data.size": (data.size, min(height, width)),
                "data.clips_per_video": (data.clips_per_video, manifest["clips_per_video"])}
    for key, (wanted, found) in expected.items():
        if wanted != found:
            raise UserError(
                f"{data.prepared_dir} was prepared with {key}={found} but the config asks for "
                f"{key}={wanted}; use another data.prepared_dir or set {key}={found}. "
                f"Received: {key}={wanted}"
            )
    _check_splits_and_labels(data, manifest)


def stored_short_side(manifest):
    """The short side of the stored frames of a v2 manifest (items may differ in width)."""
    height, width, _ = manifest["frame_shape"]
    known = [side for side in (height, width) if side is not None]
    resize = manifest.get("resize") or {}
    return min(known) if len(known) == 2 else (resize.get("resize_short") or min(known or [0]))


def clips_as_configured(data, manifest):
    """(the manifest as the run reads its clips, the stored short side): for v2 the clips
    drawn as `data.frames`, `data.sampling`, `data.frame_stride` say, with
    `data.clips_per_video` evaluation views (`data_prep.clip_manifest`)."""
    if not is_whole_items(manifest):
        _, height, width, _ = manifest["clip_shape"]
        return manifest, min(height, width)
    view = clip_manifest(manifest, frames=data.frames, sampling=data.sampling,
                         frame_stride=data.frame_stride, num_clips=data.clips_per_video)
    return view, stored_short_side(manifest)


# `data_prep.sequence_reader.DAY_OF_YEAR_INPUTS` (that module loads TensorFlow).
_DAY_OF_YEAR_BANDS = {"none": 0, "band": 1, "sinusoidal": 2}
# `data.normalization` names whose numbers are fixed (0-255 units, 3 bands).
_NAMED_STATISTICS = ("imagenet", "kinetics")


def extra_input_bands(options):
    """Bands appended after the stored ones: the mask band, the day-of-year band(s)."""
    return int(bool(options["mask_band"])) + _DAY_OF_YEAR_BANDS[options["day_of_year"]]


def _named_statistics(name):
    # Constants of `models` (imported when asked: they bring Keras).
    from models.preprocessing import IMAGENET_MEAN, IMAGENET_STD
    from models.pretrained import TORCHVISION_KINETICS_MEAN, TORCHVISION_KINETICS_STD

    return {"imagenet": (IMAGENET_MEAN, IMAGENET_STD),
            "kinetics": (TORCHVISION_KINETICS_MEAN, TORCHVISION_KINETICS_STD)}[name]


def _model_default(config, bands):
    """The mean/std build_model would use (model.options over the model's defaults)."""
    from models.build import default_normalization
    from models.preprocessing import per_band_values

    mean, std = default_normalization(config.model.name, bands, config.model.weights)
    options = config.model.options
    return (list(per_band_values(options.get("mean", mean), bands, "mean")),
            list(per_band_values(options.get("std", std), bands, "std")))


def _dataset_statistics(data, manifest, bands):
    statistics = manifest.get("statistics")
    if not statistics:
        raise UserError(f"{data.prepared_dir} has no band statistics in its manifest.json "
                        "(prepared before they existed): prepare it again for "
                        "data.normalization: dataset, or choose imagenet, kinetics, none or "
                        "{mean: [...], std: [...]}. Received: data.normalization=dataset")
    mean, std = ([float(v) for v in statistics[key]] for key in ("mean", "std"))
    if len(mean) != bands or len(std) != bands:
        raise UserError(f"{data.prepared_dir}: expected statistics for {bands} bands in "
                        f"manifest.json. Received: {len(mean)} means, {len(std)} stds")
    # A constant band (std 0) or one without a valid pixel: centred, not scaled.
    mean = [v if np.isfinite(v) else 0.0 for v in mean]
    std = [v if np.isfinite(v) and v > 0 else 1.0 for v in std]
    return mean, std


def _check_dates(data, manifest):
    if not manifest.get("dated") and (data.sample_by == "date" or data.day_of_year != "none"):
        raise UserError(f"{data.prepared_dir} holds undated items (prepare with "
                        "--date-pattern or date sidecars): data.sample_by: date and "
                        f"data.day_of_year need dates. Received: data.sample_by="
                        f"{data.sample_by}, data.day_of_year={data.day_of_year}")


def clip_inputs_of(config, manifest):
    """The run's clip inputs: the read options of `data_prep.sequence_reader.read_options`
    (dtype, mask, dated, fill, min_valid_fraction, sample_by, mask_band, day_of_year) plus
    `normalization`: `{"name", "mean", "std"}`, the per-band numbers the model's
    `normalize` layer carries (stored bands, then 0 / 1 for each extra band), or mean and
    std None for the model's own default (8-bit 3-band data with `auto`: exactly as before
    issue 20).

    `auto` is `dataset` unless the data are 8-bit with 3 bands, or the manifest has no
    statistics, or model.options gives mean/std. Invalid pixels are filled with the
    normalisation's mean (0 after standardisation) when the items can have any (masks,
    float NaN).

    Raises:
        UserError: a normalisation that does not fit the data (imagenet on 5 bands, dataset
            without statistics, a mean/std list of the wrong length), v2-only options on v1
            data, date options on undated data.
    """
    data = config.data
    whole_items = is_whole_items(manifest)
    bands = manifest["frame_shape"][2] if whole_items else manifest["clip_shape"][3]
    dtype = manifest.get("dtype", "uint8")
    read = {"min_valid_fraction": data.min_valid_fraction, "mask_band": data.mask_band,
            "sample_by": data.sample_by, "day_of_year": data.day_of_year}
    if not whole_items and read != {"min_valid_fraction": 0.0, "mask_band": False,
                                    "sample_by": "index", "day_of_year": "none"}:
        raise UserError(f"{data.prepared_dir} holds format v1 clips: data.min_valid_fraction,"
                        " mask_band, sample_by and day_of_year need v2 (whole items). "
                        f"Received: {read}")
    mask, dated = bool(manifest.get("mask")), bool(manifest.get("dated"))
    _check_dates(data, manifest)
    extra = extra_input_bands(read)
    name = data.normalization if isinstance(data.normalization, str) else "given"
    if name == "auto":
        model_given = {"mean", "std"} & set(config.model.options)
        name = "model" if (dtype == "uint8" and bands == 3) or model_given or \
            not manifest.get("statistics") else "dataset"
    mean = std = None
    if name == "dataset":
        mean, std = _dataset_statistics(data, manifest, bands)
    elif name in _NAMED_STATISTICS:
        if bands != 3:
            raise UserError(f"data.normalization: {name} holds statistics of 3 (RGB) bands; "
                            f"the data have {bands}. Received: data.normalization={name}")
        mean, std = (list(v) for v in _named_statistics(name))
    elif name == "none":
        mean, std = [0.0] * bands, [1.0] * bands
    elif name == "given":
        mean, std = ([float(v) for v in data.normalization[key]] for key in ("mean", "std"))
        if len(mean) != bands:
            raise UserError(f"data.normalization expects one mean and std per stored band "
                            f"({bands}). Received: {len(mean)} values")
    needs_fill = mask or dtype.startswith("float")
    if name == "model" and (extra or needs_fill):
        mean, std = _model_default(config, bands)
    fill = mean if needs_fill else None
    if mean is not None:
        mean, std = mean + [0.0] * extra, std + [1.0] * extra
    return {"dtype": dtype, "mask": mask, "dated": dated, "fill": fill, **read,
            "normalization": {"name": name, "mean": mean, "std": std}}


def model_normalization(clip_inputs):
    """`build_model` keywords from a run's clip inputs: `input_dtype`, and `mean`/`std`
    unless the model keeps its default."""
    extra = extra_input_bands(clip_inputs)
    keywords = {"input_dtype": "float32" if extra else clip_inputs["dtype"]}
    normalization = clip_inputs["normalization"]
    if normalization["mean"] is not None:
        keywords.update(mean=normalization["mean"], std=normalization["std"])
    return keywords


def _check_splits_and_labels(data, manifest):
    for split in (data.train_split, data.test_split):
        if split not in manifest["splits"]:
            raise UserError(f"{data.prepared_dir} has no split {split!r} (it has "
                            f"{', '.join(manifest['splits'])}). Received: split={split}")
    _check_label_kind(data, manifest)


def _check_label_kind(data, manifest):
    """Raises UserError if the prepared data's multi_label or num_classes differ from the config.

    A dataset prepared single-label cannot train a multi-label config (nor the reverse): the
    records hold `label` or `labels`, and the loss and metrics follow the config.
    """
    found = is_multi_label(manifest)
    if found != data.multi_label:
        raise UserError(
            f"{data.prepared_dir} was prepared with multi_label={str(found).lower()} but the "
            f"config asks for data.multi_label={str(data.multi_label).lower()}; use another "
            f"data.prepared_dir or set data.multi_label={str(found).lower()}. "
            f"Received: data.multi_label={str(data.multi_label).lower()}")
    if data.num_classes is not None and num_classes_of(manifest) != data.num_classes:
        raise UserError(
            f"{data.prepared_dir} was prepared with num_classes={num_classes_of(manifest)} but "
            f"the config asks for data.num_classes={data.num_classes}; use another "
            f"data.prepared_dir or set data.num_classes={num_classes_of(manifest)}. "
            f"Received: data.num_classes={data.num_classes}")


def split_label_counts(prepared_dir, manifest, split):
    """Clips per label id in one split, reading only the `label` (`labels`) feature of each record.

    Used before training so that a label outside [0, num_classes) is a clear error up front
    rather than a crash deep inside the loss.
    """
    shards = split_shard_paths(prepared_dir, manifest, split)
    counts = {}
    if is_whole_items(manifest):
        from data_prep.sequence_reader import record_labels  # TensorFlow, when called

        for labels in record_labels(shards):
            for label in labels:  # an item counts once for each of its labels
                counts[int(label)] = counts.get(int(label), 0) + 1
        return counts
    key = "labels" if is_multi_label(manifest) else "label"
    # -1 is tf.data.AUTOTUNE (not imported here: this module stays TensorFlow-free).
    for fields in read_record_fields(shards, (key,), batch_size=1024, num_parallel_reads=-1):
        labels = fields[key]
        if key == "labels":  # each clip counts once for each of its labels
            labels = np.concatenate([*labels, np.zeros(0, np.int64)])
        for label, count in zip(*np.unique(labels, return_counts=True)):
            counts[int(label)] = counts.get(int(label), 0) + int(count)
    return counts


def check_labels(prepared_dir, manifest, splits):
    """Raises UserError if any stored label is outside [0, num_classes)."""
    num_classes = len(manifest["classes"])
    for split in splits:
        counts = split_label_counts(prepared_dir, manifest, split)
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
