"""Classify videos (or frame folders, or .npy arrays) with a trained run.

    python predict.py --run-dir runs/demo/20260101-120000 [--top-k 5] [--threshold 0.5]
                      [--json] ITEM ...

Each ITEM is decoded exactly as the run's data was prepared (sampling, frames, resize read
from RUN_DIR/data_manifest.json), cut into the run's clips_per_video clips and centre-cropped
to the model's input; the softmax is averaged over the clips. A directory that holds frame
images is one item; any other directory stands for the items directly inside it.

Prints the top-k class names and probabilities per item (a multi-label run: every label whose
sigmoid score, averaged over the clips, is above `--threshold`, default 0.5), or with `--json`
one JSON object `{"results": [{"path", "predictions": [{"label", "probability"}]}, ...],
"errors": [{"path", "error"}, ...]}`: every item that was classified, in order, and every
failure with its reason (an item whose timeline failed is in both).

Items are decoded in a worker process (data_prep.workers), the next one while the model
scores the current one: a decoder that crashes (a segfault in FFmpeg or OpenCV), hangs
longer than `--item-timeout` seconds (600) or runs out of memory costs that item only.

`--timeline` also slides the run's clip window over each item (training/timeline.py;
`--window-stride SECONDS`, default half a window; `--window-seconds`, default the run's clip
span) and prints, per window, its start and end in seconds and the top-k classes; in the JSON
each item gets `"timeline": [{"start_s", "end_s", "top_k": [{"class", "probability"}]}]`.
`--plot DIR` writes DIR/<item name>.timeline.png per item (classes over time).

`--class-map OUT.tif RASTER` (a run trained on raster patches, `layout: raster`) slides the
run's patch over the whole time-series RASTER and writes OUT.tif, the class value of every
pixel with RASTER's georeference (`--map-stride PIXELS`, `--confidence`: a second band,
percent); training/class_map.py.

`--stream SOURCE` classifies a live source instead of items: a camera index (0), a device
(/dev/video0), a video file, a FIFO, `-` (standard input) or a URL (rtsp://, http://, ...; anything OpenCV's
FFmpeg backend opens). The run's clip window is kept in a ring buffer and scored every
`--every` frames (default half a window); each prediction prints its position, top-k,
latency and frames/s (`--json`: one JSON object a line). A MoViNet stream variant
(`movinet_a<N>_stream`) keeps no window: it steps one frame at a time with its states, and
prints the top-k of every frame so far. Ctrl-C stops it cleanly (exit 0).
See training/stream.py and docs/DEPLOY.md.

A broken item prints `error: PATH: reason` to stderr and the others still run.
Exit code: 0 all items classified, 1 some item failed, 2 a usage mistake (bad --run-dir, ...)
or a full disk (`error: no space left on PATH`, a plot or the redirected stdout).

Without a run, from torchvision's Kinetics-400 weights (or any checkpoint of the same layout):

    python predict.py --model r2plus1d_18 --weights r2plus1d_18-91a641e6.pth video.mp4

builds the model with `--num-classes` logits (400), loads the file and prints Kinetics-400
class names (`--classes FILE` for others), preprocessing as torchvision's eval transform:
`--clips` clips of 16 consecutive frames, resized to 128x171 and centre-cropped to 112
(S3D: 256x256, 224).
"""

import argparse
import contextlib
import functools
import json
import os
import sys
import tempfile
import types

import cv2

from core.atomic import atomic_write
from core.disk_full import is_no_space, no_space_left, stdout_target
from data_prep.dates import days_since_epoch, iso_date
from data_prep.decode import (IMAGE_EXTENSIONS, DecodeError, is_media_item,
                              natural_sort_key)
# Importing `training` turns oneDNN on before TensorFlow loads (core.tensorflow_env).
from core.errors import UserError
from data_prep.shards import is_multi_label
from data_prep.workers import ITEM_TIMEOUT_SECONDS, first_line, worker_pool
from training.class_map import predict_class_map, write_class_map
from training.cli import import_tensorflow, run_cli
from training.run_dir import open_trained_run
from training.timeline import check_window_arguments, item_timeline
from training.views import preprocess_item, torchvision_views
from training.visuals import timeline_image


def parse_args(argv):
    parser = argparse.ArgumentParser(description="Classify videos with a trained run.")
    parser.add_argument("--run-dir", help="a run directory written by train.py")
    parser.add_argument("--model", help="without --run-dir: a torchvision model name (r3d_18, "
                                        "mc3_18, r2plus1d_18, s3d) to build for --weights")
    parser.add_argument("--weights", help="without --run-dir: the weights file (.pth) to load")
    parser.add_argument("--num-classes", type=int, default=400,
                        help="with --model: logits of the checkpoint's head (400)")
    parser.add_argument("--classes", help="with --model: class names, one a line (default: "
                                          "Kinetics-400's for 400 classes)")
    parser.add_argument("--clips", type=int, default=1,
                        help="with --model: clips per item, softmax averaged (1)")
    parser.add_argument("--top-k", type=int, default=5, help="classes shown per item (5)")
    parser.add_argument("--json", action="store_true",
                        help='print JSON: {"results": [...], "errors": [...]}')
    parser.add_argument("--item-timeout", type=float, default=ITEM_TIMEOUT_SECONDS,
                        metavar="SECONDS",
                        help="skip an item whose decoding takes longer (a hung decoder; "
                             f"{ITEM_TIMEOUT_SECONDS})")
    parser.add_argument("--timeline", action="store_true",
                        help="also score each window of the clip length along the item")
    parser.add_argument("--window-stride", type=float, default=None, metavar="SECONDS",
                        help="--timeline: seconds between window starts (half a window)")
    parser.add_argument("--window-seconds", type=float, default=None, metavar="SECONDS",
                        help="--timeline: window length (the run's clip span)")
    parser.add_argument("--plot", default=None, metavar="DIR",
                        help="--timeline: write DIR/<item>.timeline.png per item")
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="multi-label runs: show the labels scoring above it (0.5)")
    parser.add_argument("--stream", metavar="SOURCE",
                        help="classify a live source (camera index, device, file, FIFO, -, URL) "
                             "instead of items")
    parser.add_argument("--every", type=int, default=None, metavar="FRAMES",
                        help="--stream: frames between predictions (half a clip window)")
    parser.add_argument("--max-frames", type=int, default=None,
                        help="--stream: stop after this many frames")
    parser.add_argument("--class-map", metavar="OUT.tif",
                        help="a run trained on raster patches: write the class map GeoTIFF "
                             "of the one raster given (docs/DATA.md, Labelled rasters)")
    parser.add_argument("--map-stride", type=int, default=None, metavar="PIXELS",
                        help="--class-map: pixels between patches (the run's patch_stride)")
    parser.add_argument("--confidence", action="store_true",
                        help="--class-map: add a band of the class's probability in percent")
    parser.add_argument("items", nargs="*", metavar="VIDEO_OR_DIR",
                        help="video files, frame-image folders, .npy arrays, or directories "
                             "of them")
    return parser.parse_args(argv)


def expand_items(paths):
    """Each argument as items: a frame folder stays one item; other directories list their
    videos, frame folders and arrays (`is_media_item`): the other files in them (a README,
    notes.txt) are skipped and counted on stderr, never classified."""
    items = []
    for path in paths:
        if not os.path.isdir(path):
            items.append(path)
            continue
        names = sorted((name for name in os.listdir(path) if not name.startswith(".")),
                       key=natural_sort_key)
        if any(name.lower().endswith(IMAGE_EXTENSIONS) for name in names) or not names:
            items.append(path)
            continue
        entries = [os.path.join(path, name) for name in names]
        skipped = [name for name, entry in zip(names, entries) if not is_media_item(entry)]
        items.extend(entry for entry in entries if is_media_item(entry))
        if skipped:
            print(f"skipped {len(skipped)} file(s) in {path} that are not videos, frame "
                  f"folders or arrays: {', '.join(skipped[:5])}"
                  + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""),
                  file=sys.stderr, flush=True)
    return items


class ItemFailed:
    """An item whose decoding failed in its worker: broken, crashed, hung or out of memory."""

    def __init__(self, reason):
        self.reason = reason


# What a broken item raises while decoding: it is skipped with its reason (any other error
# in a worker is a bug and stops predict).
ITEM_ERRORS = (DecodeError, UserError, OSError, cv2.error)


# Manifest keys that grow with the dataset (shard lists, skipped items, georeference per
# item) and that decoding one item never reads.
PER_ITEM_MANIFEST_KEYS = ("splits", "skipped", "absent", "ignored", "geo")


def run_decoder(trained, views_of=None):
    """A picklable `path -> clips` for the worker: `views_of` (pretrained mode), or the
    run's own `preprocess_item` with the run's manifest minus its per-item lists (the task
    is pickled for every item; a list of what to keep dropped the sensor keys once)."""
    if views_of is not None:
        return views_of
    manifest = {key: value for key, value in trained.manifest.items()
                if key not in PER_ITEM_MANIFEST_KEYS}
    return functools.partial(preprocess_item, manifest=manifest,
                             input_shape=tuple(trained.input_shape))


def decoded_items(paths, decode, pool, item_timeout):
    """Yield (path, clips or ItemFailed) for each path, in order, decoded in `pool`'s worker
    process: a decoder that crashes, hangs past `item_timeout` seconds, or runs out of memory
    costs that item only (data_prep.workers). The worker decodes the next item while this
    process scores the current one."""
    existing = [path for path in paths if os.path.exists(path)]
    results = pool.map_ordered(decode, existing, item_timeout=item_timeout,
                               skip_errors=ITEM_ERRORS,
                               on_crash=lambda path, reason: ItemFailed(reason))
    existing = set(existing)
    for path in paths:
        yield path, (next(results) if path in existing
                     else ItemFailed("no such file or directory"))


def mean_probabilities(clips, probabilities_of):
    """The class probabilities of an item, averaged over its clips."""
    return probabilities_of(clips).numpy().mean(axis=0)


def predict_item(clips, trained, probabilities_of, top_k):
    """[(label, probability)] of the top_k classes, the softmax averaged over the clips."""
    mean = mean_probabilities(clips, probabilities_of)
    order = mean.argsort(kind="stable")[::-1][:top_k]
    return [(trained.class_names[index], float(mean[index])) for index in order]


def write_timeline_plot(directory, path, timeline, probabilities, class_names):
    """DIR/<item name>.timeline.png (classes over time) for one item, written whole or not
    at all (a full disk raises OSError ENOSPC and leaves no partial file)."""
    name = os.path.basename(os.path.normpath(path)) or "item"
    out = os.path.join(directory, f"{name}.timeline.png")
    if timeline and "start_date" in timeline[0]:  # a dated item: its axis is the calendar
        image = timeline_image(
            probabilities, [days_since_epoch(w["start_date"]) for w in timeline],
            [days_since_epoch(w["end_date"]) + 1 for w in timeline], class_names, title=path,
            tick_text=iso_date, unit="date")
    else:
        image = timeline_image(probabilities, [w["start_s"] for w in timeline],
                               [w["end_s"] for w in timeline], class_names, title=path)
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"cannot encode {out}")
    try:
        with atomic_write(out) as temporary, open(temporary, "wb") as file:
            file.write(encoded.tobytes())
    except OSError as e:  # a write's ENOSPC names no file: this one is the plot's
        raise OSError(e.errno, e.strerror, e.filename or out) from e
    return out


def print_timeline(timeline):
    for window in timeline:
        shown = ", ".join(f"{t['class']} {t['probability']:.3f}" for t in window["top_k"])
        if "start_date" in window:
            print(f"  {window['start_date']} to {window['end_date']}  {shown}")
        else:
            print(f"  {window['start_s']:8.2f}-{window['end_s']:<8.2f} {shown}")


def predict_labels_above(clips, trained, probabilities_of, threshold):
    """Multi-label: [(label, probability)] of the classes whose sigmoid score, averaged over
    the clips, is above `threshold`, highest first."""
    mean = mean_probabilities(clips, probabilities_of)
    order = [index for index in mean.argsort(kind="stable")[::-1] if mean[index] > threshold]
    return [(trained.class_names[index], float(mean[index])) for index in order]


def print_multi_label(path, predictions, threshold):
    print(path)
    if not predictions:
        print(f"  (no label above {threshold})")
    width = max((len(label) for label, _ in predictions), default=0)
    for label, probability in predictions:
        print(f"  {label:<{width}}  {probability:.4f}")
    sys.stdout.flush()


def open_pretrained(args):
    """The model, class names and preprocessing for `--model NAME --weights FILE`.

    Returns:
        (an object with `class_names`, the keras.Model, views_of(path) -> uint8 clips).

    Raises:
        UserError: a missing option, an unknown model, or weights that do not fit it
            (including a head with another class count than --num-classes).
    """
    from models import build_model
    from models.pretrained import (TORCHVISION_EVAL_TRANSFORMS, TORCHVISION_KINETICS_MEAN,
                                   TORCHVISION_KINETICS_STD, kinetics400_classes, load_weights,
                                   weights_format)

    if not args.model or not args.weights:
        raise UserError("Expected --run-dir, or --model NAME with --weights FILE. Received: "
                        f"--model {args.model} --weights {args.weights}")
    if args.model not in TORCHVISION_EVAL_TRANSFORMS:
        raise UserError(f"Expected --model one of {', '.join(TORCHVISION_EVAL_TRANSFORMS)} (the "
                        f"models with torchvision's preprocessing). Received: --model {args.model}")
    for option, value in (("--num-classes", args.num_classes), ("--clips", args.clips)):
        if value < 1:
            raise UserError(f"Expected {option} >= 1. Received: {option} {value}")
    if args.classes:
        try:
            with open(args.classes, encoding="utf-8") as file:
                class_names = [line.strip() for line in file if line.strip()]
        except OSError as e:
            raise UserError(f"cannot read --classes {args.classes}: {e.strerror}") from None
        if len(class_names) != args.num_classes:
            raise UserError(f"Expected {args.num_classes} class names in --classes (one a "
                            f"line, --num-classes). Received: {len(class_names)} in {args.classes}")
    elif args.num_classes == 400:
        class_names = kinetics400_classes()
    else:
        class_names = [str(index) for index in range(args.num_classes)]
    resize, crop_size, frames = TORCHVISION_EVAL_TRANSFORMS[args.model]
    options = {}
    if weights_format(args.weights) == "torchvision":
        options = {"mean": TORCHVISION_KINETICS_MEAN, "std": TORCHVISION_KINETICS_STD}
    model = build_model(args.model, args.num_classes, (frames, crop_size, crop_size, 3), **options)
    _, head_loaded = load_weights(model, args.weights)
    if not head_loaded:
        raise UserError(f"{args.weights}: its classifier does not have --num-classes "
                        f"{args.num_classes} classes; pass the checkpoint's class count. "
                        f"Received: --num-classes {args.num_classes}")
    # A partial, not a lambda: it is pickled to the decoding worker.
    views_of = functools.partial(torchvision_views, frames=frames, resize=resize,
                                 crop_size=crop_size, num_clips=args.clips)
    return types.SimpleNamespace(class_names=class_names), model, views_of


def run_stream(args, trained, model, probabilities_of, top_k, multi_label):
    """`--stream SOURCE`: a prediction line (or JSON line) every --every frames until the
    source ends or Ctrl-C. A MoViNet stream variant steps frame by frame with its states; any
    other model scores the run's clip window."""
    from training.stream import (format_prediction, is_stream_model, open_source,
                                 state_predictions, stream_predictions)
    from training.timeline import clip_span

    window = clip_span(trained.manifest["sampling"])
    every = args.every or max(1, window // 2)
    capture = open_source(args.stream)
    if is_stream_model(model):
        predictions = state_predictions(
            capture, trained.manifest, trained.input_shape, model, trained.class_names,
            every=every, top_k=top_k, max_frames=args.max_frames, multi_label=multi_label)
    else:
        predictions = stream_predictions(
            capture, trained.manifest, trained.input_shape, probabilities_of,
            trained.class_names, window_frames=window, every=every, top_k=top_k,
            max_frames=args.max_frames)
    frames = 0
    try:
        for prediction in predictions:
            frames = prediction["frame"]
            print(json.dumps(prediction) if args.json else format_prediction(prediction),
                  flush=True)
    except KeyboardInterrupt:
        print(f"stopped after {frames} frames", file=sys.stderr, flush=True)
    return 0


def check_stream_arguments(args):
    """Raises UserError for --stream mixed with items or modes it does not take."""
    if args.stream is None:
        if args.every is not None or args.max_frames is not None:
            raise UserError("Expected --stream with --every or --max-frames. Received: no "
                            "--stream")
        if not args.items:
            raise UserError("Expected video files or directories to classify (or --stream "
                            "SOURCE). Received: none")
        return
    if args.items or args.timeline or args.run_dir is None:
        raise UserError("Expected --stream SOURCE with --run-dir and no items or --timeline. "
                        f"Received: --stream {args.stream} with {len(args.items)} item(s)"
                        + (", --timeline" if args.timeline else "")
                        + ("" if args.run_dir else ", no --run-dir"))
    for option, value in (("--every", args.every), ("--max-frames", args.max_frames)):
        if value is not None and value < 1:
            raise UserError(f"Expected {option} >= 1. Received: {option} {value}")


def check_class_map_arguments(args):
    """Raises UserError unless --class-map has a run, one raster and no other mode."""
    if args.class_map is None:
        if args.map_stride is not None or args.confidence:
            raise UserError("Expected --class-map OUT.tif with --map-stride or --confidence. "
                            "Received: no --class-map")
        return
    if args.run_dir is None or len(args.items) != 1 or args.stream or args.timeline:
        raise UserError(f"Expected --class-map OUT.tif with --run-dir, one raster and no "
                        f"--stream or --timeline. Received: {len(args.items)} raster(s)"
                        + ("" if args.run_dir else ", no --run-dir"))
    if args.map_stride is not None and args.map_stride < 1:
        raise UserError(f"Expected --map-stride >= 1. Received: --map-stride {args.map_stride}")
    folder = os.path.dirname(os.path.abspath(args.class_map))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):  # before the long part
        raise UserError(f"Expected --class-map in a directory that exists and can be "
                        f"written. Received: --class-map {args.class_map}")


def run_class_map(args, trained, model, probabilities_of):
    """`--class-map OUT.tif RASTER`: the class of every pixel (training/class_map.py)."""
    class_map = predict_class_map(trained, args.items[0], probabilities_of,
                                  stride=args.map_stride, input_dtype=model.inputs[0].dtype)
    write_class_map(args.class_map, class_map, args.items[0],
                    with_confidence=args.confidence)
    pixels = class_map.pixels_per_class()
    if args.json:
        print(json.dumps({"path": args.items[0], "class_map": args.class_map,
                          "nodata": class_map.nodata, "patches": class_map.patches,
                          "classes": [{"label": name, "value": value, "pixels": pixels[name]}
                                      for name, value in zip(class_map.class_names,
                                                             class_map.class_values)]},
                         indent=2))
        return 0
    print(f"{args.class_map}: {class_map.patches} patches of {args.items[0]} (nodata "
          f"{class_map.nodata})")
    for name, value in zip(class_map.class_names, class_map.class_values):
        print(f"  {value:>6}  {name}  {pixels[name]} pixels")
    return 0


def run(args):
    with contextlib.ExitStack() as stack:
        pool = None
        if args.stream is None and args.items:
            # Started before TensorFlow loads: the worker's imports overlap with the model's.
            pool = stack.enter_context(worker_pool(1))
        return classify(args, pool)


def classify(args, pool):
    """`run` with the decoding worker `pool` (None for --stream)."""
    # TensorFlow loads only now, so that --help and argument mistakes answer at once.
    import_tensorflow()
    from training.scoring import clip_probabilities_function, load_run_model

    if args.top_k < 1:
        raise UserError(f"Expected --top-k >= 1. Received: --top-k {args.top_k}")
    if not args.item_timeout > 0:
        raise UserError(f"Expected --item-timeout > 0 seconds. Received: --item-timeout "
                        f"{args.item_timeout:g}")
    check_class_map_arguments(args)
    check_stream_arguments(args)
    if not 0.0 <= args.threshold <= 1.0:
        raise UserError(f"Expected --threshold in [0, 1]. Received: --threshold {args.threshold}")
    if not args.timeline and (args.plot or args.window_stride is not None
                              or args.window_seconds is not None):
        raise UserError("Expected --timeline with --plot, --window-stride or --window-seconds."
                        " Received: no --timeline")
    check_window_arguments(args.window_seconds, args.window_stride)
    if args.timeline and args.run_dir is None:
        raise UserError("Expected --run-dir with --timeline (windows follow the run's clip "
                        f"sampling). Received: --model {args.model} --weights {args.weights}")
    if args.timeline and args.plot:
        try:  # before any item is decoded: a place that cannot be written fails at once
            os.makedirs(args.plot, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=args.plot):
                pass
        except OSError as e:
            raise UserError(f"Expected --plot to be a directory that can be created and "
                            f"written: {e.strerror}. Received: --plot {args.plot}") from None
    views_of = None
    multi_label = False
    if args.run_dir is None:
        trained, model, views_of = open_pretrained(args)
    else:
        if args.model or args.weights:
            raise UserError("Expected either --run-dir or --model with --weights, not both. "
                            f"Received: --run-dir {args.run_dir} --model {args.model} "
                            f"--weights {args.weights}")
        trained = open_trained_run(args.run_dir)
        multi_label = is_multi_label(trained.manifest)
        model = load_run_model(trained)
    probabilities_of = clip_probabilities_function(model, multi_label)
    top_k = min(args.top_k, len(trained.class_names))
    if args.stream is not None:
        return run_stream(args, trained, model, probabilities_of, top_k, multi_label)
    if args.class_map is not None:
        return run_class_map(args, trained, model, probabilities_of)
    results, errors = [], []
    try:
        classify_items(args, trained, probabilities_of, top_k, multi_label,
                       run_decoder(trained, views_of), pool, results, errors)
        if args.json:
            print_json(results, errors)
    except OSError as error:  # a full disk (a plot, or stdout redirected to a file)
        named = no_space_left(error, stdout_target(), None)
        if named is None:
            raise
        if args.json and error.filename:  # a plot: what is done still goes out
            with contextlib.suppress(OSError):
                print_json(results, errors)
        if not error.filename:  # stdout's own write failed
            discard_unwritten_stdout()
        raise named from None
    return 1 if errors else 0


def print_json(results, errors):
    """`--json`: `{"results": [...], "errors": [{"path", "error"}]}` on stdout."""
    print(json.dumps({"results": results, "errors": errors}, indent=2))
    sys.stdout.flush()


def discard_unwritten_stdout():
    """Points stdout at /dev/null, so that text a full disk refused is not written again
    (and reported as "Exception ignored") when Python flushes it at exit."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def classify_items(args, trained, probabilities_of, top_k, multi_label, decode, pool,
                   results, errors):
    """Classifies every item (decoded in `pool`'s worker), appending each good result to
    `results` and each failure (`{"path", "error"}`) to `errors`; prints the text form of
    each result as it comes unless `--json`."""

    def fail(path, reason):
        print(f"error: {path}: {reason}", file=sys.stderr, flush=True)
        errors.append({"path": path, "error": reason})

    for path, clips in decoded_items(expand_items(args.items), decode, pool,
                                     args.item_timeout):
        if isinstance(clips, ItemFailed):
            fail(path, clips.reason)
            continue
        try:
            if multi_label:
                predictions = predict_labels_above(clips, trained, probabilities_of,
                                                   args.threshold)
            else:
                predictions = predict_item(clips, trained, probabilities_of, top_k)
        except MemoryError:
            fail(path, "out of memory (too large to score)")
            continue
        del clips
        results.append({"path": path, "predictions": [
            {"label": label, "probability": probability} for label, probability in predictions]})
        if args.timeline:
            try:
                timeline, probabilities = item_timeline(
                    path, trained.manifest, trained.input_shape, probabilities_of,
                    trained.class_names, top_k=top_k, window_seconds=args.window_seconds,
                    stride_seconds=args.window_stride)
            except (DecodeError, UserError, OSError, cv2.error, MemoryError) as e:
                reason = first_line(e) if not isinstance(e, MemoryError) else "out of memory"
                fail(path, f"timeline: {reason}")
            else:
                results[-1]["timeline"] = timeline
                if args.plot:
                    try:
                        write_timeline_plot(args.plot, path, timeline, probabilities,
                                            trained.class_names)
                    except OSError as e:
                        if is_no_space(e):  # stops predict: `classify` names the disk
                            raise
                        fail(path, f"timeline plot: {e.strerror or first_line(e)}")
        if args.json:
            continue
        if multi_label:
            print_multi_label(path, predictions, args.threshold)
        else:
            width = max(len(label) for label, _ in predictions)
            print(path)
            for rank, (label, probability) in enumerate(predictions, start=1):
                print(f"  {rank}. {label:<{width}}  {probability:.4f}")
        if "timeline" in results[-1]:
            print_timeline(results[-1]["timeline"])
        sys.stdout.flush()


def main(argv=None):
    return run_cli(run, parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
