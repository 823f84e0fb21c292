"""What fresh clips buy: the same model and budget trained on prepared data v1 and v2.

v1 stores `clips_per_video` fixed clips per item and training draws one of them each epoch;
v2 stores the whole item and draws a new clip (a stride window at a random start) each
epoch. This runs the grid format x seed through `train.py --config ... --set ...`
subprocesses on the synthetic demo with videos several times longer than a clip's span (so
the clips of one video differ), the same generated videos for both formats (generated once
into OUT/videos, prepared once per format), and prints top-1 and loss of each run's
metrics.json with the mean and spread (sample standard deviation, and min..max) per format,
then v2's difference to the baseline v1, on the mean and seed by seed.

Both formats evaluate the same way: `clips_per_video` evenly spaced windows per test video
(v1: the stored clips, v2: the views drawn in evaluation), averaged per video.

    python bench/v1_vs_v2_training.py --out /tmp/v1v2 --seeds 0 1 2 --epochs 6
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORMATS = ("v1", "v2")


def common_sets(args):
    """The `--set` overrides shared by every run: data, clip and budget."""
    return [
        f"data.root={args.out}/videos",
        f"data.synth.num_frames={args.video_frames}",
        f"data.synth.videos_per_class={args.videos_per_class}",
        "data.synth.seed=0",
        f"data.frames={args.frames}",
        "data.sampling=stride",
        f"data.frame_stride={args.frame_stride}",
        f"data.clips_per_video={args.clips}",
        f"train.epochs={args.epochs}",
        f"model.name={args.model}",
    ]


def format_sets(args, data_format):
    return [f"data.format={data_format}", f"data.prepared_dir={args.out}/prepared_{data_format}"]


def run(command, log_path):
    """Runs one train.py command, its output in `log_path`; exits on failure."""
    with open(log_path, "w") as log:
        done = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode:
        sys.exit(f"failed ({done.returncode}): {' '.join(command)}; see {log_path}")


def spread(values):
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.3f} ± {std:.3f} ({min(values):.3f}..{max(values):.3f})"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="videos, prepared data and runs go here")
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--model", default="small3d")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--video-frames", type=int, default=64, help="frames per synth video")
    parser.add_argument("--videos-per-class", type=int, default=24)
    parser.add_argument("--frames", type=int, default=8, help="frames per clip")
    parser.add_argument("--frame-stride", type=int, default=2)
    parser.add_argument("--clips", type=int, default=3, help="v1 stored clips = eval views")
    args = parser.parse_args(argv)
    args.out = os.path.abspath(args.out)
    os.makedirs(args.out, exist_ok=True)
    train = [sys.executable, "train.py", "--config", args.config, "--quiet"]

    # Generate the videos once and prepare both formats, outside the timed runs.
    for data_format in FORMATS:
        sets = common_sets(args) + format_sets(args, data_format)
        start = time.perf_counter()
        run(train + ["--prepare-only"] + [f"--set={s}" for s in sets],
            f"{args.out}/prepare_{data_format}.log")
        print(f"prepared {data_format} in {time.perf_counter() - start:.0f} s", flush=True)

    results = {data_format: [] for data_format in FORMATS}
    for seed in args.seeds:
        for data_format in FORMATS:
            run_dir = f"{args.out}/runs/{data_format}_seed{seed}"
            metrics_path = Path(run_dir, "metrics.json")
            if not metrics_path.exists():  # a rerun keeps the finished runs
                sets = common_sets(args) + format_sets(args, data_format) + [f"train.seed={seed}"]
                start = time.perf_counter()
                run(train + ["--run-dir", run_dir, "--overwrite"] + [f"--set={s}" for s in sets],
                    f"{args.out}/train_{data_format}_seed{seed}.log")
                seconds = time.perf_counter() - start
            else:
                seconds = float("nan")
            metrics = json.loads(metrics_path.read_text())
            results[data_format].append(metrics)
            print(f"{data_format} seed {seed}: top-1 {metrics['top1']:.3f} "
                  f"loss {metrics['loss']:.3f} ({seconds:.0f} s)", flush=True)

    print()
    print(f"{args.model}, {args.epochs} epochs, synth {args.videos_per_class} videos/class x "
          f"{args.video_frames} frames, clips {args.frames} frames stride {args.frame_stride}, "
          f"{args.clips} clips (v1 stored) / eval views, seeds {args.seeds}")
    print("| format | runs | test top-1 mean ± std (min..max) | test loss mean ± std (min..max) |")
    print("|---|---|---|---|")
    for data_format in FORMATS:
        runs = results[data_format]
        print(f"| {data_format} | {len(runs)} | {spread([m['top1'] for m in runs])} | "
              f"{spread([m['loss'] for m in runs])} |")
    # The baseline is v1: v2's difference of the means, and per seed (same seed, same videos).
    for key in ("top1", "loss"):
        pairs = [(b[key], a[key]) for a, b in zip(results["v1"], results["v2"])]
        higher = sum(v2 > v1 for v2, v1 in pairs)
        lower = sum(v2 < v1 for v2, v1 in pairs)
        print(f"v2 - v1 {key}: {statistics.fmean(v2 - v1 for v2, v1 in pairs):+.3f} on the mean; "
              f"per seed v2 higher {higher}, equal {len(pairs) - higher - lower}, lower {lower}")


if __name__ == "__main__":
    main()
