"""Do the input pipeline's threads and TensorFlow's op pools oversubscribe the cores in `fit`?

Times `model.fit` on a config's real input pipeline (default configs/demo.yaml: its data is
generated and prepared first if missing) with TensorFlow's default thread pools against
explicit settings: `tf.config.threading.set_intra_op_parallelism_threads` /
`set_inter_op_parallelism_threads`, and the input pipeline's own pool
(`tf.data.Options().threading.private_threadpool_size`, `.max_intra_op_parallelism`).
Pools are fixed when TensorFlow starts, so each variant runs in a fresh interpreter; rounds
alternate the variants, each process reports the median epoch time after a warm-up epoch
(tracing), the table the median over rounds.

    python bench/threads.py [--config configs/demo.yaml] [--epochs 4] [--rounds 3]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from core.tensorflow_env import configure_tensorflow  # noqa: E402

# (label, intra-op threads, inter-op threads, tf.data private pool size, tf.data max intra-op);
# None keeps TensorFlow's default (every core, for each).
VARIANTS = {
    "default": (None, None, None, None),
    "intra 2, inter 1": (2, 1, None, None),
    "intra 2, inter 2": (2, 2, None, None),
    "intra 1, inter 2": (1, 2, None, None),
    "tf.data pool 1": (None, None, 1, None),
    "tf.data pool 2, max intra 1": (None, None, 2, 1),
}


def fit_worker(config_path, overrides, epochs, variant):
    """In a fresh interpreter: set the variant's pools, then time `fit` epoch by epoch."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    configure_tensorflow()
    import tensorflow as tf

    import keras
    from training import input_pipeline
    from training.config import load_config
    from training.prepared_data import ensure_prepared
    from training.trainer import build_and_compile

    intra, inter, data_pool, data_intra = VARIANTS[variant]
    if intra is not None:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
    if inter is not None:
        tf.config.threading.set_inter_op_parallelism_threads(inter)

    config = load_config(config_path, overrides=overrides)
    manifest = ensure_prepared(config.data)
    num_classes = len(manifest["classes"])
    frames, _, _, bands = manifest["clip_shape"]
    crop = config.input_size
    dataset = input_pipeline.train_dataset(
        config.data.prepared_dir, config.data.train_split, clip_shape=manifest["clip_shape"],
        num_classes=num_classes, batch_size=config.train.batch_size, crop_size=crop,
        random_crop_enabled=config.augment.random_crop,
        horizontal_flip=config.augment.horizontal_flip,
        temporal_jitter=config.augment.temporal_jitter,
        shuffle_buffer=config.train.shuffle_buffer, seed=config.train.seed)
    if data_pool is not None or data_intra is not None:
        options = tf.data.Options()
        if data_pool is not None:
            options.threading.private_threadpool_size = data_pool
        if data_intra is not None:
            options.threading.max_intra_op_parallelism = data_intra
        dataset = dataset.with_options(options)
    steps = int(dataset.cardinality())
    keras.utils.set_random_seed(0)
    model, _ = build_and_compile(config, num_classes, (frames, crop, crop, bands), steps)

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.start)

    seconds = []
    model.fit(dataset, epochs=epochs, verbose=0, callbacks=[EpochTimer()])
    return {"epoch_seconds": statistics.median(seconds[1:]), "steps": steps,
            "batch_size": config.train.batch_size, "model": config.model.name,
            "clips": [frames, crop, crop, bands],
            "pools": [tf.config.threading.get_intra_op_parallelism_threads(),
                      tf.config.threading.get_inter_op_parallelism_threads()]}


def run_worker(args, variant):
    command = [sys.executable, os.path.abspath(__file__), "--worker", variant,
               "--config", args.config, "--epochs", str(args.epochs)]
    for override in args.overrides:
        command += ["--set", override]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        raise RuntimeError(f"{variant} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def load():
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY.PATH=VALUE", help="config override, as in train.py")
    parser.add_argument("--epochs", type=int, default=4, help="per process; the first is warm-up")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--worker", choices=list(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(fit_worker(args.config, args.overrides, args.epochs, args.worker)))
        return 0

    print(f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, {os.cpu_count()} cores, "
          f"TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS')}, "
          f"load average {load()}", flush=True)
    run_worker(args, "default")  # prepares the data if missing, outside the timed rounds
    times = {variant: [] for variant in args.variants}
    for round_index in range(args.rounds):
        for variant in args.variants:
            result = run_worker(args, variant)
            times[variant].append(result["epoch_seconds"])
            print(f"round {round_index + 1} {variant:28s} {result['epoch_seconds']:.3f} s/epoch "
                  f"(pools {result['pools']}, load {load()})", flush=True)
    print(f"config {args.config}: model {result['model']}, clips {'x'.join(map(str, result['clips']))}, "
          f"batch {result['batch_size']}, {result['steps']} steps per epoch, "
          f"median of epochs 2-{args.epochs} per process")
    header = f"{'variant':28s} {'s/epoch':>8s} {'min':>8s} {'max':>8s} {'vs default':>11s}"
    print(header)
    print("-" * len(header))
    baseline = statistics.median(times["default"]) if "default" in times else None
    for variant, values in times.items():
        median = statistics.median(values)
        ratio = f"{baseline / median:.3f}x" if baseline else "-"
        print(f"{variant:28s} {median:8.3f} {min(values):8.3f} {max(values):8.3f} {ratio:>11s}")
    print(f"load average at the end: {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
