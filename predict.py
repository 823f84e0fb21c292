"""Classify videos (or frame folders, or .npy arrays) with a trained run.

    python predict.py --run-dir runs/demo/20260101-120000 [--top-k 5] [--threshold 0.5]
                      [--json] ITEM ...

Each ITEM is decoded exactly as the run's data was prepared (sampling, frames, resize read
from RUN_DIR/data_manifest.json), cut into the run's clips_per_video clips and centre-cropped
to the model's input; the softmax is averaged over the clips. A directory that holds frame
images is one item; any other directory stands for the items directly inside it.

Prints the top-k class names and probabilities per item (a multi-label run: every label whose
sigmoid score, averaged over the clips, is above `--threshold`, default 0.5), or with `--json`
a JSON list of
`{"path", "predictions": [{"label", "probability"}]}` (a failed item has `"error"` and no
predictions).

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
Exit code: 0 all items classified, 1 some item failed, 2 a usage mistake (bad --run-dir, ...).

Without a run, from torchvision's Kinetics-400 weights (or any checkpoint of the same layout):

    python predict.py --model r2plus1d_18 --weights r2plus1d_18-91a641e6.pth video.mp4

builds the model with `--num-classes` logits (400), loads the file and prints Kinetics-400
class names (`--classes FILE` for others), preprocessing as torchvision's eval transform:
`--clips` clips of 16 consecutive frames, resized to 128x171 and centre-cropped to 112
(S3D: 256x256, 224).
"""

import argparse
import json
import os
import sys
import tempfile
import types

import cv2

from data_prep.decode import (IMAGE_EXTENSIONS, DecodeError, is_media_item,
                              natural_sort_key)
# Importing `training` turns oneDNN on before TensorFlow loads (core.tensorflow_env).
from core.errors import UserError
from data_prep.shards import is_multi_label
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
    parser.add_argument("--json", action="store_true", help="print a JSON list")
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


def mean_probabilities(path, trained, probabilities_of, views_of=None):
    """The class probabilities of an item, averaged over its clips.

    `views_of(path)` gives the clips; None means the run's own `preprocess_item`."""
    if not os.path.exists(path):
        raise FileNotFoundError("no such file or directory")
    clips = views_of(path) if views_of else preprocess_item(path, trained.manifest,
                                                            trained.input_shape)
    return probabilities_of(clips).numpy().mean(axis=0)


def predict_item(path, trained, probabilities_of, top_k, views_of=None):
    """[(label, probability)] of the top_k classes, the softmax averaged over the clips."""
    mean = mean_probabilities(path, trained, probabilities_of, views_of)
    order = mean.argsort(kind="stable")[::-1][:top_k]
    return [(trained.class_names[index], float(mean[index])) for index in order]


def write_timeline_plot(directory, path, timeline, probabilities, class_names):
    """DIR/<item name>.timeline.png (classes over time) for one item."""
    name = os.path.basename(os.path.normpath(path)) or "item"
    out = os.path.join(directory, f"{name}.timeline.png")
    image = timeline_image(probabilities, [w["start_s"] for w in timeline],
                           [w["end_s"] for w in timeline], class_names, title=path)
    if not cv2.imwrite(out, cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {out}")
    return out


def print_timeline(timeline):
    for window in timeline:
        shown = ", ".join(f"{t['class']} {t['probability']:.3f}" for t in window["top_k"])
        print(f"  {window['start_s']:8.2f}-{window['end_s']:<8.2f} {shown}")


def predict_labels_above(path, trained, probabilities_of, threshold):
    """Multi-label: [(label, probability)] of the classes whose sigmoid score, averaged over
    the clips, is above `threshold`, highest first."""
    mean = mean_probabilities(path, trained, probabilities_of)
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
    views_of = lambda path: torchvision_views(path, frames=frames, resize=resize,  # noqa: E731
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
    # TensorFlow loads only now, so that --help and argument mistakes answer at once.
    import_tensorflow()
    from training.scoring import clip_probabilities_function, load_run_model

    if args.top_k < 1:
        raise UserError(f"Expected --top-k >= 1. Received: --top-k {args.top_k}")
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
    results, failed = [], 0
    for path in expand_items(args.items):
        try:
            if multi_label:
                predictions = predict_labels_above(path, trained, probabilities_of,
                                                   args.threshold)
            else:
                predictions = predict_item(path, trained, probabilities_of, top_k, views_of)
        except (DecodeError, UserError, OSError, cv2.error, MemoryError) as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else (
                "out of memory (too large to decode)" if isinstance(e, MemoryError)
                else type(e).__name__)
            print(f"error: {path}: {reason}", file=sys.stderr, flush=True)
            failed += 1
            results.append({"path": path, "predictions": [], "error": reason})
            continue
        results.append({"path": path, "predictions": [
            {"label": label, "probability": probability} for label, probability in predictions]})
        if args.timeline:
            try:
                timeline, probabilities = item_timeline(
                    path, trained.manifest, trained.input_shape, probabilities_of,
                    trained.class_names, top_k=top_k, window_seconds=args.window_seconds,
                    stride_seconds=args.window_stride)
                results[-1]["timeline"] = timeline
                if args.plot:
                    write_timeline_plot(args.plot, path, timeline, probabilities,
                                        trained.class_names)
            except (DecodeError, UserError, OSError, cv2.error, MemoryError) as e:
                reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                print(f"error: {path}: timeline: {reason}", file=sys.stderr, flush=True)
                failed += 1
                results[-1]["error"] = f"timeline: {reason}"
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
    if args.json:
        print(json.dumps(results, indent=2))
    return 1 if failed else 0


def main(argv=None):
    return run_cli(run, parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
