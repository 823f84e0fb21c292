"""Classify videos (or frame folders, or .npy arrays) with a trained run.

    python predict.py --run-dir runs/demo/20260101-120000 [--top-k 5] [--json] ITEM ...

Each ITEM is decoded exactly as the run's data was prepared (sampling, frames, resize read
from RUN_DIR/data_manifest.json), cut into the run's clips_per_video clips and centre-cropped
to the model's input; the softmax is averaged over the clips. A directory that holds frame
images is one item; any other directory stands for the items directly inside it.

Prints the top-k class names and probabilities per item, or with `--json` a JSON list of
`{"path", "predictions": [{"label", "probability"}]}` (a failed item has `"error"` and no
predictions). A broken item prints `error: PATH: reason` to stderr and the others still run.
Exit code: 0 all items classified, 1 some item failed, 2 a usage mistake (bad --run-dir, ...).
"""

import argparse
import json
import os
import sys

import cv2

from data_prep.decode import IMAGE_EXTENSIONS, DecodeError, natural_sort_key
# Importing `training` turns oneDNN on before TensorFlow loads (data_prep.tensorflow_env).
from data_prep.errors import UserError
from training.cli import import_tensorflow, run_cli
from training.run_dir import open_trained_run
from training.views import preprocess_item


def parse_args(argv):
    parser = argparse.ArgumentParser(description="Classify videos with a trained run.")
    parser.add_argument("--run-dir", required=True, help="a run directory written by train.py")
    parser.add_argument("--top-k", type=int, default=5, help="classes shown per item (5)")
    parser.add_argument("--json", action="store_true", help="print a JSON list")
    parser.add_argument("items", nargs="+", metavar="VIDEO_OR_DIR",
                        help="video files, frame-image folders, .npy arrays, or directories "
                             "of them")
    return parser.parse_args(argv)


def expand_items(paths):
    """Each argument as items: a frame folder stays one item; other directories list theirs."""
    items = []
    for path in paths:
        if not os.path.isdir(path):
            items.append(path)
            continue
        names = sorted((name for name in os.listdir(path) if not name.startswith(".")),
                       key=natural_sort_key)
        if any(name.lower().endswith(IMAGE_EXTENSIONS) for name in names) or not names:
            items.append(path)
        else:
            items.extend(os.path.join(path, name) for name in names)
    return items


def predict_item(path, trained, probabilities_of, top_k):
    """[(label, probability)] of the top_k classes, the softmax averaged over the clips."""
    if not os.path.exists(path):
        raise FileNotFoundError("no such file or directory")
    clips = preprocess_item(path, trained.manifest, trained.input_shape)
    mean = probabilities_of(clips).numpy().mean(axis=0)
    order = mean.argsort(kind="stable")[::-1][:top_k]
    return [(trained.class_names[index], float(mean[index])) for index in order]


def run(args):
    # TensorFlow loads only now, so that --help and argument mistakes answer at once.
    import_tensorflow()
    from training.scoring import clip_probabilities_function, load_run_model

    if args.top_k < 1:
        raise UserError(f"Expected --top-k >= 1. Received: --top-k {args.top_k}")
    trained = open_trained_run(args.run_dir)
    model = load_run_model(trained)
    probabilities_of = clip_probabilities_function(model)
    top_k = min(args.top_k, len(trained.class_names))
    results, failed = [], 0
    for path in expand_items(args.items):
        try:
            predictions = predict_item(path, trained, probabilities_of, top_k)
        except (DecodeError, UserError, OSError, cv2.error) as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            print(f"error: {path}: {reason}", file=sys.stderr, flush=True)
            failed += 1
            results.append({"path": path, "predictions": [], "error": reason})
            continue
        results.append({"path": path, "predictions": [
            {"label": label, "probability": probability} for label, probability in predictions]})
        if not args.json:
            width = max(len(label) for label, _ in predictions)
            print(path)
            for rank, (label, probability) in enumerate(predictions, start=1):
                print(f"  {rank}. {label:<{width}}  {probability:.4f}")
            sys.stdout.flush()
    if args.json:
        print(json.dumps(results, indent=2))
    return 1 if failed else 0


def main(argv=None):
    return run_cli(run, parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
