"""Prepared data v1 (N stored clips) against v2 (whole items, clips drawn while training).

On a generated UCF101-like set (320x240, 25 fps, 5-10 s per video, XVID .avi written with
cv2.VideoWriter, a few classes; textured background panning under a moving disc), measured
in the same run, median of --repeats:

- v1: `data_prep.prepare.prepare_dataset` (what `python -m data_prep prepare` runs) with
  --frames 16 --size 128 --resize-short 128 --clips-per-video 3 --encoding raw: bytes per
  item and items/s;
- v2 jpeg and png: every frame, short side resized to 128 (aspect kept), one
  `tf.train.SequenceExample` per item (`data_prep.sequence_records`; frames decoded by
  `data_prep.decode`): bytes per item and items/s;
- training input from v2 jpeg: `data_prep.sequence_reader.training_clips` (16 frames,
  uniform), random 112 crop and flip (`training.input_pipeline.augment_clip`), batch 8:
  clips/s with the default tf.data thread pool (all cores) and with a one-thread private
  pool, each also as clips per CPU second of the process (per busy core, measured rather
  than divided, and not diluted by other processes' load);
- the training consumption of --models (default small3d, r2plus1d_18) on random clips in
  memory (`train_on_batch`, batch 8, 101 classes), as clips/s and per CPU second, and the
  input's ratio to it (goal >= 5x r2plus1d_18's);
- Kinetics-400 at short side 128 extrapolated from v2 jpeg bytes per second of video.

Preparation runs in one process (`workers=1` for v1) so items/s compare like for like.

    python bench/input_v2.py                      # 24 items, about 3 minutes on 2 cores
    python bench/input_v2.py --items 8 --repeats 1
"""

import argparse
import glob
import os
import shutil
import statistics
import sys
import tempfile
import time

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from core.tensorflow_env import configure_tensorflow  # noqa: E402

configure_tensorflow()

import tensorflow as tf  # noqa: E402

from data_prep.prepare import prepare_dataset  # noqa: E402
from data_prep.sequence_reader import training_clips  # noqa: E402
from data_prep.sequence_records import (SourceInfo, encode_frames, read_item_frames,  # noqa: E402
                                        sequence_example)
from training.input_pipeline import augment_clip  # noqa: E402
from bench.models import build_for_training  # noqa: E402

# Kinetics-400 as published (Kay et al. 2017, arXiv:1705.06950, Table 1): 306,245 clips
# (246,245 train, 20,000 validation, 40,000 test), each about 10 s long.
KINETICS400_CLIPS = 306_245
KINETICS400_SECONDS_PER_CLIP = 10.0


def write_ucf_like(root, items, classes, seed=0):
    """`items` XVID videos under root/class<k>/, 320x240, 25 fps, 125-250 frames; returns
    (paths, seconds of video)."""
    rng = np.random.default_rng(seed)
    paths, seconds = [], 0.0
    width, height = 320, 240
    for index in range(items):
        folder = os.path.join(root, f"class{index % classes}")
        os.makedirs(folder, exist_ok=True)
        num_frames = int(rng.integers(125, 251))
        # Noise blurred at two scales: broad shapes plus some fine texture, a rough stand-in
        # for natural footage (pure noise would flatter nothing, a flat colour everything).
        coarse = cv2.resize(rng.integers(0, 256, (height // 16, width // 8, 3), np.uint8),
                            (2 * width, height), interpolation=cv2.INTER_CUBIC)
        fine = cv2.GaussianBlur(rng.integers(0, 256, (height, 2 * width, 3), np.uint8), (7, 7), 0)
        texture = cv2.addWeighted(coarse, 0.8, fine, 0.2, 0)
        path = os.path.join(folder, f"v{index:03d}.avi")
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"XVID"), 25, (width, height))
        for t in range(num_frames):
            shift = (2 * t) % width
            frame = np.ascontiguousarray(texture[:, shift:shift + width])
            centre = (int(width / 2 + width / 3 * np.sin(t / 10)), height // 2)
            cv2.circle(frame, centre, height // 6, (0, 0, 255), -1)
            writer.write(frame)
        writer.release()
        paths.append(path)
        seconds += num_frames / 25.0
    return paths, seconds


def write_v2(paths, root, out_path, encoding, resize_short):
    """One v2 shard of every item (single process); returns the frames stored."""
    frames_stored = 0
    classes = sorted(os.listdir(root))
    with tf.io.TFRecordWriter(out_path) as writer:
        for index, path in enumerate(paths):
            item = read_item_frames(path, resize_short=resize_short)
            frames, rate, source = item.frames, item.frame_rate, item.source
            label = classes.index(os.path.basename(os.path.dirname(path)))
            writer.write(sequence_example(
                encode_frames(frames, encoding), frame_shape=frames.shape[1:],
                encoding=encoding, label=label, item_id=os.path.relpath(path, root),
                item_index=index, frame_rate=rate, source=source))
            frames_stored += len(frames)
    return frames_stored


def training_input(files, frames, crop, batch_size, seed, one_thread):
    dataset = training_clips(files, num_frames=frames, encoding="jpeg", seed=seed,
                             shuffle_buffer=16, repeat=True)
    seeds = tf.data.Dataset.random(seed=seed + 1).batch(2, drop_remainder=True)

    def augment(element, element_seed):
        clip, label = element
        clip = augment_clip(clip, element_seed, crop_size=crop, random_crop_enabled=True,
                            horizontal_flip=True)
        return tf.ensure_shape(clip, (frames, crop, crop, 3)), label

    dataset = tf.data.Dataset.zip((dataset, seeds)).map(augment,
                                                        num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    if one_thread:
        options = tf.data.Options()
        options.threading.private_threadpool_size = 1
        options.autotune.cpu_budget = 1
        dataset = dataset.with_options(options)
    return dataset


def clips_per_second(dataset, batches):
    """(clips per wall second, clips per CPU second of this process) over `batches` batches,
    after 3 warm-up batches. CPU seconds count every thread, so the second figure is a rate
    per busy core that other processes' load does not dilute."""
    iterator = iter(dataset)
    for _ in range(3):  # tracing, buffers
        next(iterator)
    clips = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(batches):
        clips += int(next(iterator)[0].shape[0])
    return (clips / (time.perf_counter() - start),
            clips / max(time.process_time() - cpu_start, 1e-9))


def model_consumption(name, frames, crop, batch_size, steps):
    """(clips per wall second, clips per CPU second) of `name` training on random clips held
    in memory (`train_on_batch`, as bench/models.py), after one warm-up step."""
    rng = np.random.default_rng(0)
    clips = rng.integers(0, 256, (batch_size, frames, crop, crop, 3), np.uint8)
    labels = rng.integers(0, 101, (batch_size,))
    model = build_for_training(name, {}, clips.shape[1:], 101)
    model.train_on_batch(clips, labels)
    walls, cpus = [], []
    for _ in range(steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        model.train_on_batch(clips, labels)
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu_start)
    return batch_size / statistics.median(walls), batch_size / statistics.median(cpus)


def directory_bytes(pattern):
    return sum(os.path.getsize(path) for path in glob.glob(pattern, recursive=True))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=24)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--resize-short", type=int, default=128)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--crop", type=int, default=112)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=20, help="batches timed per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="*", default=["small3d", "r2plus1d_18"],
                        help="models whose training consumption the input is compared with")
    parser.add_argument("--model-steps", type=int, default=3)
    args = parser.parse_args(argv)

    work = tempfile.mkdtemp(prefix="bench_input_v2_")
    try:
        root = os.path.join(work, "videos")
        paths, video_seconds = write_ucf_like(root, args.items, args.classes)
        video_bytes = sum(os.path.getsize(path) for path in paths)
        items = len(paths)
        rows = []

        times, stored = [], 0
        for repeat in range(args.repeats):
            out = os.path.join(work, f"v1_{repeat}")
            start = time.perf_counter()
            prepare_dataset("folders", root, out, args.frames, args.resize_short,
                            resize_short=args.resize_short, clips_per_video=3, encoding="raw",
                            workers=1, show_progress=False)
            times.append(time.perf_counter() - start)
            stored = directory_bytes(os.path.join(out, "**", "*.tfrecord"))
            shutil.rmtree(out)
        rows.append((f"v1 raw, 3 clips of {args.frames}x{args.resize_short}x"
                     f"{args.resize_short}", stored, statistics.median(times), None))

        v2_files = {}
        for encoding in ("jpeg", "png"):
            times = []
            for repeat in range(args.repeats):
                out_path = os.path.join(work, f"v2_{encoding}_{repeat}.tfrecord")
                start = time.perf_counter()
                frames_stored = write_v2(paths, root, out_path, encoding, args.resize_short)
                times.append(time.perf_counter() - start)
                if repeat:
                    os.remove(out_path)
            v2_files[encoding] = os.path.join(work, f"v2_{encoding}_0.tfrecord")
            rows.append((f"v2 {encoding}, every frame, short side {args.resize_short}",
                         os.path.getsize(v2_files[encoding]), statistics.median(times),
                         frames_stored))

        datasets = {one_thread: training_input([v2_files["jpeg"]], args.frames, args.crop,
                                               args.batch_size, 0, one_thread)
                    for one_thread in (False, True)}
        measured = {False: [], True: []}
        for _ in range(args.repeats):  # alternated, so drifting load hits both alike
            for one_thread, dataset in datasets.items():
                measured[one_thread].append(clips_per_second(dataset, args.batches))
        rates = {key: statistics.median(wall for wall, _ in values)
                 for key, values in measured.items()}
        cpu_rates = {key: statistics.median(cpu for _, cpu in values)
                     for key, values in measured.items()}

        consumption = {name: model_consumption(name, args.frames, args.crop, args.batch_size,
                                               args.model_steps) for name in args.models}

        cores = len(os.sched_getaffinity(0))
        print(f"{items} items, {args.classes} classes, 320x240 XVID 25 fps, "
              f"{video_seconds:.0f} s of video ({video_seconds / items:.1f} s per item), "
              f"{video_bytes / items / 1e6:.2f} MB per item as video; median of {args.repeats}; "
              f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}; {cores} cores")
        print()
        print("| format | bytes per item | vs v1 | items/s (1 process) | bytes per s of video |")
        print("| --- | ---: | ---: | ---: | ---: |")
        v1_bytes = rows[0][1] / items
        for name, total, seconds, _ in rows:
            print(f"| {name} | {total / items / 1e6:.2f} MB | {total / items / v1_bytes:.2f}x "
                  f"| {items / seconds:.2f} | {total / video_seconds / 1e3:.0f} kB |")
        jpeg_per_second = rows[1][1] / video_seconds
        kinetics = KINETICS400_CLIPS * KINETICS400_SECONDS_PER_CLIP
        print()
        print(f"training input, v2 jpeg -> {args.frames}x{args.crop}x{args.crop} clips "
              f"(uniform, random crop, flip), batch {args.batch_size}:")
        print(f"  all cores (tf.data default pool): {rates[False]:.1f} clips/s wall "
              f"({rates[False] / cores:.1f} per core, divided), "
              f"{cpu_rates[False]:.1f} clips per CPU second")
        print(f"  one-thread private pool:          {rates[True]:.1f} clips/s wall, "
              f"{cpu_rates[True]:.1f} clips per CPU second")
        per_core = min(cpu_rates.values())
        print(f"  goal >= 100 clips/s per core: {'met' if per_core >= 100 else 'NOT met'} "
              f"({per_core:.1f} clips per CPU second, the lower of the two)")
        for name, (wall, cpu) in consumption.items():
            print(f"  {name} training consumes {wall:.2f} clips/s wall, {cpu:.2f} per CPU "
                  f"second: input / model = {rates[False] / wall:.1f}x wall, "
                  f"{cpu_rates[False] / cpu:.1f}x per CPU second (goal >= 5x)")
        print(f"  goal v2 jpeg bytes per item <= v1 3 raw clips: "
              f"{'met' if rows[1][1] <= rows[0][1] else 'NOT met'}")
        print()
        print(f"Kinetics-400 at short side {args.resize_short}, v2 jpeg: "
              f"{KINETICS400_CLIPS:,} clips x {KINETICS400_SECONDS_PER_CLIP:.0f} s = "
              f"{kinetics / 3600:,.0f} h x {jpeg_per_second / 1e3:.0f} kB/s = "
              f"{kinetics * jpeg_per_second / 1e9:,.0f} GB")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
