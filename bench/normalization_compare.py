"""Dataset normalisation vs per-item min-max scaling, side by side on the multispectral demo.

The items of `data_prep.synth_multispectral` (10-band uint16 field time series, cloudy pixels
0) are fed to the same model two ways, and top-1 on the held-out split is printed per seed:

- `dataset`: reflectances as measured, each band standardised with the mean and std of the
  training split's valid (cloud-free) pixels; cloudy pixels take the band's mean (0 after
  standardisation). What `data.normalization: dataset` with `data.nodata: 0` does.
- `per_item`: the rule `.npy` items met in `prepare` before issue 20: each item and band
  min-max scaled to 0..255 and rounded (`per_item_min_max`, a copy of `data_prep.decode`'s
  `_scaling` / `_scale_frames` for non-float arrays; cloud zeros count as values), then
  standardised with the dataset statistics of those scaled values, so that the per-item
  scaling is the only difference.

Default mode: in this process, with numpy and Keras only (no prepare, no train.py): the items
are loaded from the generated `.npy` files, the model is the architecture of
`models.build_model(MODEL, ...)` (small3d without frame differences, as the demo config) on
a float32 input that arrives standardised; all dates are the clip.

`--via-train`: the same comparison through `train.py`: it writes the per-item scaled items
(uint8 `.npy`, same dates and lists) beside the generated ones, two configs from
`configs/demo_multispectral.yaml` (the demo as it is, and the scaled copy read as a csv
layout), trains each seed with both and prints the `metrics.json` top-1. It needs the
issue-20 keys `data.nodata` and `data.normalization` (checked first).

    python bench/normalization_compare.py --out /tmp/ms_compare --seeds 0 1 2
    python bench/normalization_compare.py --out /tmp/ms_compare --seeds 0 1 2 --via-train
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from data_prep import synth, synth_multispectral  # noqa: E402

VARIANTS = ("dataset", "per_item")
CONFIG = ROOT / "configs" / "demo_multispectral.yaml"


def per_item_min_max(item):
    """The old `.npy` rule: each band of the item min-max scaled to 0..255, uint8."""
    values = item.astype(np.float64)
    low = values.min(axis=(0, 1, 2))
    high = values.max(axis=(0, 1, 2))
    spread = np.where(high > low, high - low, 1.0)
    return np.clip(np.rint((values - low) / spread * 255.0), 0, 255).astype(np.uint8)


def read_split(root, split, classes):
    """`(items, labels, paths)`: the uint16 arrays of `root/<split>.csv` and class indices."""
    items, labels, paths = [], [], []
    for line in (Path(root) / f"{split}.csv").read_text().splitlines():
        relative, name = line.split(",")
        paths.append(relative)
        items.append(np.load(Path(root) / relative))
        labels.append(classes.index(name))
    return np.stack(items), np.array(labels), paths


def band_statistics(items, valid):
    """Per-band mean and std over the valid pixels of (N, T, H, W, B) `items`."""
    values = items[valid].astype(np.float64)  # (pixels, B)
    return values.mean(axis=0), values.std(axis=0)


def dataset_inputs(train, test):
    """Both splits standardised per band with the training split's valid-pixel statistics;
    invalid (all bands 0) pixels set to 0, the band mean."""
    valid = [(items != synth_multispectral.NODATA).all(axis=-1) for items in (train, test)]
    mean, std = band_statistics(train, valid[0])
    return [np.where(ok[..., None], (items - mean) / std, 0.0).astype(np.float32)
            for items, ok in zip((train, test), valid)]


def per_item_inputs(train, test):
    """Both splits per-item min-max scaled, then standardised with the scaled training
    split's statistics (every pixel counts: the old rule had no nodata)."""
    scaled = [np.stack([per_item_min_max(item) for item in items]) for items in (train, test)]
    mean, std = band_statistics(scaled[0], np.ones(scaled[0].shape[:-1], bool))
    return [((items - mean) / std).astype(np.float32) for items in scaled]


def train_and_evaluate(inputs, labels, num_classes, seed, args):
    """The test split's predicted classes by `args.model` trained on float32 `inputs`."""
    import keras

    from models.catalog import MODELS

    keras.utils.set_random_seed(seed)
    (x_train, x_test), (y_train, y_test) = inputs, labels
    # The architecture of models.build_model(args.model), on a float32 input: build_model's
    # input is uint8 before issue 20, which would wrap the standardised values.
    clip = keras.Input(shape=x_train.shape[1:], dtype="float32", name="clip")
    options = {"frame_differences": False} if args.model == "small3d" else {}
    model = keras.Model(clip, MODELS[args.model].build_function()(clip, num_classes, **options))
    steps = args.epochs * -(-len(x_train) // args.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(args.learning_rate, steps)
    model.compile(optimizer=keras.optimizers.Adam(schedule),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs, verbose=0,
              shuffle=True)
    return np.argmax(model.predict(x_test, batch_size=64, verbose=0), axis=-1)


def in_process(args, root):
    classes = list(synth_multispectral.CLASSES)
    train, y_train, _ = read_split(root, "train", classes)
    test, y_test, _ = read_split(root, "test", classes)
    print(f"{len(train)} train / {len(test)} test items of shape {train.shape[1:]} "
          f"{train.dtype}, {len(classes)} classes", flush=True)
    inputs = {"dataset": dataset_inputs(train, test), "per_item": per_item_inputs(train, test)}
    results = {variant: [] for variant in VARIANTS}
    recalls = {variant: [] for variant in VARIANTS}
    for seed in args.seeds:
        for variant in VARIANTS:
            start = time.perf_counter()
            predicted = train_and_evaluate(inputs[variant], (y_train, y_test), len(classes),
                                           seed, args)
            top1 = float(np.mean(predicted == y_test))
            results[variant].append(top1)
            recalls[variant].append([np.mean(predicted[y_test == k] == k)
                                     for k in range(len(classes))])
            print(f"{variant} seed {seed}: top-1 {top1:.3f} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    print()
    print(f"{args.model}, {args.epochs} epochs, batch {args.batch_size}, adam "
          f"{args.learning_rate} cosine; {args.items_per_class} items/class x {args.dates} "
          f"dates x {args.size}x{args.size} px x 10 bands; seeds {args.seeds}")
    report(results)
    print()
    print("per class, median over seeds of the share of its test items predicted right:")
    print("| input | " + " | ".join(classes) + " |")
    print("|---|" + "---|" * len(classes))
    for variant in VARIANTS:
        medians = np.median(np.array(recalls[variant]), axis=0)
        print(f"| {variant} | " + " | ".join(f"{value:.2f}" for value in medians) + " |")


def report(results):
    print("| input | runs | test top-1 median | min..max | per seed |")
    print("|---|---|---|---|---|")
    for variant in VARIANTS:
        values = results[variant]
        print(f"| {variant} | {len(values)} | {statistics.median(values):.3f} | "
              f"{min(values):.3f}..{max(values):.3f} | "
              f"{', '.join(f'{v:.3f}' for v in values)} |")


# --- the same through train.py (needs the issue-20 data keys) --------------------------------

def write_scaled_copy(root, scaled_root):
    """Per-item min-max scaled uint8 copies of the items under `root`, with their dates and
    the lists, in `scaled_root` (skipped if its lists are there)."""
    scaled_root = Path(scaled_root)
    if (scaled_root / "train.csv").exists():
        return
    for split in synth.SPLITS:
        for line in (Path(root) / f"{split}.csv").read_text().splitlines():
            relative = line.split(",")[0]
            target = scaled_root / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            np.save(target, per_item_min_max(np.load(Path(root) / relative)))
            shutil.copyfile(synth_multispectral.dates_path(Path(root) / relative),
                            synth_multispectral.dates_path(target))
    for split in synth.SPLITS:  # the lists last: their presence means the copy is complete
        shutil.copyfile(Path(root) / f"{split}.csv", scaled_root / f"{split}.csv")


def variant_sets(args, variant):
    """`--set` overrides of one variant: where its data is, how it is read."""
    sets = [f"data.root={args.out}/items", f"data.prepared_dir={args.out}/prepared_{variant}"]
    if variant == "per_item":
        sets = [f"data.root={args.out}/items_per_item",
                f"data.prepared_dir={args.out}/prepared_{variant}",
                "data.layout=csv",
                f"data.lists.train={args.out}/items_per_item/train.csv",
                f"data.lists.test={args.out}/items_per_item/test.csv",
                # The scaled copy has no nodata (a band's minimum is 0 in every item).
                "data.nodata=null"]
    return sets


def run(command, log_path):
    with open(log_path, "w") as log:
        done = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode:
        sys.exit(f"failed ({done.returncode}): {' '.join(command)}; see {log_path}")


def via_train(args):
    from training.config import DataConfig

    missing = [key for key in ("nodata", "normalization")
               if key not in DataConfig.__dataclass_fields__]
    if missing:
        sys.exit("--via-train needs the data keys " + ", ".join(f"data.{k}" for k in missing)
                 + " (issue 20's prepare and training sides), which this checkout lacks")
    train = [sys.executable, "train.py", "--config", str(CONFIG), "--quiet"]
    os.makedirs(args.out, exist_ok=True)
    run(train + ["--prepare-only"] + [f"--set={s}" for s in variant_sets(args, "dataset")],
        f"{args.out}/prepare_dataset.log")
    write_scaled_copy(f"{args.out}/items", f"{args.out}/items_per_item")
    run(train + ["--prepare-only"] + [f"--set={s}" for s in variant_sets(args, "per_item")],
        f"{args.out}/prepare_per_item.log")
    results = {variant: [] for variant in VARIANTS}
    for seed in args.seeds:
        for variant in VARIANTS:
            run_dir = Path(args.out, "runs", f"{variant}_seed{seed}")
            if not (run_dir / "metrics.json").exists():  # a rerun keeps the finished runs
                sets = variant_sets(args, variant) + [f"train.seed={seed}"]
                start = time.perf_counter()
                run(train + ["--run-dir", str(run_dir), "--overwrite"]
                    + [f"--set={s}" for s in sets], f"{args.out}/train_{variant}_seed{seed}.log")
                print(f"{variant} seed {seed}: {time.perf_counter() - start:.0f} s", flush=True)
            metrics = json.loads((run_dir / "metrics.json").read_text())
            results[variant].append(metrics["top1"])
            print(f"{variant} seed {seed}: top-1 {metrics['top1']:.3f}", flush=True)
    print()
    print(f"train.py --config {CONFIG.relative_to(ROOT)}; seeds {args.seeds}")
    report(results)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="items (and, --via-train, runs) go here")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--via-train", action="store_true",
                        help="run both sides through train.py and the demo config")
    in_process_options = parser.add_argument_group("in-process mode (ignored by --via-train, "
                                                   "which reads the demo config)")
    in_process_options.add_argument("--model", default="small3d")
    in_process_options.add_argument("--epochs", type=int, default=15)
    in_process_options.add_argument("--batch-size", type=int, default=16)
    in_process_options.add_argument("--learning-rate", type=float, default=0.003)
    in_process_options.add_argument("--items-per-class", type=int, default=60)
    in_process_options.add_argument("--dates", type=int, default=30)
    in_process_options.add_argument("--size", type=int, default=16)
    args = parser.parse_args(argv)
    args.out = os.path.abspath(args.out)
    if args.via_train:
        via_train(args)
        return
    root = Path(args.out, "items")
    synth.generate_dataset(root, kind="multispectral", seed=0,
                           videos_per_class=args.items_per_class, num_frames=args.dates,
                           frame_size=(args.size, args.size), show_progress=False)
    in_process(args, root)


if __name__ == "__main__":
    main()
