"""Is the input pipeline ever the bottleneck? Clips/s it delivers vs clips/s the model trains on.

Both are measured in the same run on the same config (default configs/demo.yaml, whose data is
generated and prepared first if missing):

- input pipeline: `training.input_pipeline.train_dataset` exactly as train.py builds it
  (interleaved shard reads, shuffle, random clip per item, random crop, flip, batch,
  prefetch), iterated with nothing else running;
- model: the config's model taking optimizer steps (`train_on_batch`) on one batch already in
  memory, so it never waits for input.

The goal is a ratio >= 5: the pipeline could feed five models at once.

    python bench/input_pipeline.py [--config configs/demo.yaml] [--set key=value ...]
        [--batches 40] [--repeats 3]
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from core.tensorflow_env import configure_tensorflow  # noqa: E402

configure_tensorflow()


def time_pipeline(dataset, batches):
    """Clips/s over `batches` batches, after one warm-up batch (graph tracing, buffer fill)."""
    iterator = iter(dataset)
    next(iterator)
    clips = 0
    start = time.perf_counter()
    for _ in range(batches):
        clips += int(next(iterator)[0].shape[0])
    return clips / (time.perf_counter() - start)


def time_model(model, clips, labels, steps):
    model.train_on_batch(clips, labels)  # trace once
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(clips, labels)
    return steps * int(clips.shape[0]) / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY.PATH=VALUE", help="config override, as in train.py")
    parser.add_argument("--batches", type=int, default=40, help="batches timed per repeat")
    parser.add_argument("--model-steps", type=int, default=10, help="train steps per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    import keras

    from training import input_pipeline
    from training.config import load_config
    from training.prepared_data import ensure_prepared
    from training.trainer import build_and_compile

    config = load_config(args.config, overrides=args.overrides)
    manifest = ensure_prepared(config.data)
    num_classes = len(manifest["classes"])
    frames, _, _, bands = manifest["clip_shape"]
    crop = config.input_size
    batch_size = config.train.batch_size
    dataset = input_pipeline.train_dataset(
        config.data.prepared_dir, config.data.train_split, clip_shape=manifest["clip_shape"],
        num_classes=num_classes, batch_size=batch_size, crop_size=crop,
        random_crop_enabled=config.augment.random_crop,
        horizontal_flip=config.augment.horizontal_flip,
        temporal_jitter=config.augment.temporal_jitter,
        shuffle_buffer=config.train.shuffle_buffer, seed=config.train.seed, repeat=True)
    keras.utils.set_random_seed(0)
    model, _ = build_and_compile(config, num_classes, (frames, crop, crop, bands), 100)
    clips, labels = next(iter(dataset))

    pipeline_rates, model_rates = [], []
    for _ in range(args.repeats):
        pipeline_rates.append(time_pipeline(dataset, args.batches))
        model_rates.append(time_model(model, clips, labels, args.model_steps))
    pipeline_rate = statistics.median(pipeline_rates)
    model_rate = statistics.median(model_rates)

    overrides = "".join(f" --set {o}" for o in args.overrides)
    print(f"config {args.config}{overrides}: clips {frames}x{crop}x{crop}x{bands}, batch {batch_size}, "
          f"model {config.model.name}, tf.data threads: all cores ({os.cpu_count()})")
    print()
    print("| measured | clips/s (median of %d) | ratio to model |" % args.repeats)
    print("| --- | ---: | ---: |")
    print(f"| model training ({config.model.name}, input in memory) | {model_rate:.1f} | 1.00 |")
    print(f"| input pipeline (train_dataset) | {pipeline_rate:.1f} | "
          f"{pipeline_rate / model_rate:.2f} |")
    print()
    print("goal: ratio >= 5 -> " + ("met" if pipeline_rate >= 5 * model_rate else "NOT met"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
