"""Training throughput of every model: clips/s for forward + backward + update on this CPU.

Each model trains on random uint8 clips (batch 8 of 16x112x112x3 by default) with SGD through
`model.train_on_batch` (the same compiled train step `fit` uses): a few warm-up steps (the
first one traces the graph), then the median of the timed steps. The baseline is
`frames_as_channels`, measured in the same run; the last column is each model's clips/s over
the baseline's.

    python bench/models.py                       # every model, 2 warm-up + 5 timed steps
    python bench/models.py --models small3d r3d_18 --steps 3
    python bench/models.py --models small3d --deformable --interleave   # steps taken in turn
    python bench/models.py --deformable          # also small3d [5], [4, 5] and r2plus1d_18 [4], [3, 4]
                                                 # deformable; "vs plain": its s/step over the plain model's
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core.tensorflow_env import configure_tensorflow  # noqa: E402

configure_tensorflow()  # before keras imports TensorFlow

import numpy as np  # noqa: E402

import keras  # noqa: E402

import models  # noqa: E402

BASELINE = "frames_as_channels"
# Extra rows for --deformable: (label, model name, options).
DEFORMABLE_ROWS = (
    ("small3d deformable [5]", "small3d", {"deformable_stages": [5]}),
    ("small3d deformable [4, 5]", "small3d", {"deformable_stages": [4, 5]}),
    ("r2plus1d_18 deformable [4]", "r2plus1d_18", {"deformable_stages": [4]}),
    ("r2plus1d_18 deformable [3, 4]", "r2plus1d_18", {"deformable_stages": [3, 4]}),
)


def build_for_training(name, options, input_shape, num_classes):
    keras.utils.set_random_seed(0)
    model = models.build_model(name, num_classes, input_shape, **options)
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def fits(row, input_shape, num_classes):
    """False (and a printed line) for a model the clip is too small for (s3d needs 13x209x209)."""
    label, name, options = row
    try:
        models.build_model(name, num_classes, input_shape, **options)
    except ValueError as error:
        print(f"{label:30s} skipped: {error}", flush=True)
        return False
    finally:
        keras.backend.clear_session()
    return True


def time_interleaved(rows, clips, labels, num_classes, warmup, steps):
    """All rows' models built at once and stepped in turn, so load changes hit them alike."""
    built = [build_for_training(name, options, clips.shape[1:], num_classes) for _, name, options in rows]
    for model in built:
        for _ in range(warmup):
            model.train_on_batch(clips, labels)
    seconds = [[] for _ in built]
    for _ in range(steps):
        for model, times in zip(built, seconds):
            start = time.perf_counter()
            model.train_on_batch(clips, labels)
            times.append(time.perf_counter() - start)
    return [(model.count_params(), times) for model, times in zip(built, seconds)]


def time_training_steps(name, options, clips, labels, num_classes, warmup, steps):
    """Builds and compiles one model; returns (parameter count, list of step seconds)."""
    model = build_for_training(name, options, clips.shape[1:], num_classes)
    for _ in range(warmup):
        model.train_on_batch(clips, labels)
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        model.train_on_batch(clips, labels)  # returns the loss as numpy: the step has finished
        seconds.append(time.perf_counter() - start)
    return model.count_params(), seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(models.MODEL_NAMES), choices=models.MODEL_NAMES)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--bands", type=int, default=3)
    parser.add_argument("--classes", type=int, default=101)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps (the first traces)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps; the median is reported")
    parser.add_argument("--deformable", action="store_true",
                        help="add the deformable rows of the models in --models")
    parser.add_argument("--interleave", action="store_true",
                        help="build every row's model first, then time their steps in turn "
                             "(fair ratios on a loaded machine; needs the memory of all of them)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    clips = rng.integers(0, 256, (args.batch, args.frames, args.size, args.size, args.bands), dtype=np.uint8)
    labels = rng.integers(0, args.classes, args.batch)
    # The baseline first, so every later row has its ratio.
    rows = [(BASELINE, BASELINE, {})] + [(name, name, {}) for name in args.models if name != BASELINE]
    if args.deformable:
        rows += [row for row in DEFORMABLE_ROWS if row[1] in args.models]
    rows = [row for row in rows if fits(row, clips.shape[1:], args.classes)]

    print(
        f"training clips/s, batch {args.batch} of {args.frames}x{args.size}x{args.size}x{args.bands}, "
        f"{args.classes} classes, {args.warmup} warm-up + median of {args.steps} steps",
        flush=True,
    )
    header = (f"{'model':30s} {'params':>12s} {'s/step':>8s} {'min':>8s} {'max':>8s} {'clips/s':>8s} "
              f"{'vs ' + BASELINE:>22s} {'vs plain':>9s}")
    print(header)
    print("-" * len(header), flush=True)
    baseline_rate = None
    plain_seconds = {}
    if args.interleave:
        timings = iter(time_interleaved(rows, clips, labels, args.classes, args.warmup, args.steps))
    for label, name, options in rows:
        if args.interleave:
            params, seconds = next(timings)
        else:
            params, seconds = time_training_steps(
                name, options, clips, labels, args.classes, args.warmup, args.steps
            )
        median = statistics.median(seconds)
        rate = args.batch / median
        if label == BASELINE:
            baseline_rate = rate
        ratio = f"{rate / baseline_rate:.3f}x" if baseline_rate else "-"
        if not options:
            plain_seconds[name] = median
        vs_plain = f"{median / plain_seconds[name]:.3f}x" if options and name in plain_seconds else ""
        print(
            f"{label:30s} {params:12,d} {median:8.3f} {min(seconds):8.3f} {max(seconds):8.3f} "
            f"{rate:8.2f} {ratio:>22s} {vs_plain:>9s}",
            flush=True,
        )
        keras.backend.clear_session()
    return 0


if __name__ == "__main__":
    sys.exit(main())
