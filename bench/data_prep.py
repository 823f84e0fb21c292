"""Benchmark: `data_prep prepare` decode throughput against `ffmpeg -threads 1 ... -f null -`.

Generates videos (MJPG .avi and mp4v .mp4, textured and moving, like the demo's but larger),
then measures on the same files, median of --repeats runs:
- ffmpeg: `ffmpeg -threads 1 -i X -f null -` on each file in turn (decode only, one thread;
  the wall time includes starting ffmpeg once per file), and two such loops at once;
- prepare: `prepare_dataset(...)` end to end (worker start-up, decode, resize, TFRecord
  writing) at 1 and 2 workers, TensorFlow imported beforehand.
Frames/s counts the frames that decode. "per worker / ffmpeg 1 proc" = (frames/s / workers)
/ (one ffmpeg process's frames/s): the goal is >= 0.7. "/ ffmpeg same procs" compares with
as many ffmpeg processes run at once, which is fairer when other work shares the cores.

    python bench/data_prep.py                      # defaults below, about a minute on 2 cores
    python bench/data_prep.py --videos 4 --repeats 1
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core.tensorflow_env import configure_tensorflow  # noqa: E402
from data_prep.prepare import prepare_dataset  # noqa: E402
from data_prep.source_spec import SourceSpec  # noqa: E402

configure_tensorflow()


def write_videos(root, count, num_frames, width, height, seed=0):
    """`count` videos per codec under root/<codec>/, a textured background panning under a
    moving disc (so the codecs have real work)."""
    rng = np.random.default_rng(seed)
    paths = []
    for codec, extension in (("MJPG", "avi"), ("mp4v", "mp4")):
        os.makedirs(os.path.join(root, codec), exist_ok=True)
        for index in range(count):
            texture = cv2.GaussianBlur(rng.integers(0, 256, (height, 2 * width, 3), np.uint8),
                                       (5, 5), 0)
            path = os.path.join(root, codec, f"v{index}.{extension}")
            writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*codec), 25, (width, height))
            for t in range(num_frames):
                frame = np.ascontiguousarray(texture[:, (2 * t) % width:(2 * t) % width + width])
                centre = (int(width / 2 + width / 3 * np.sin(t / 10)), height // 2)
                cv2.circle(frame, centre, height // 6, (0, 0, 255), -1)
                writer.write(frame)
            writer.release()
            paths.append(path)
    return paths


def ffmpeg_seconds(ffmpeg, paths):
    start = time.perf_counter()
    for path in paths:
        subprocess.run([ffmpeg, "-nostdin", "-v", "error", "-threads", "1", "-i", path,
                        "-f", "null", "-"], check=True)
    return time.perf_counter() - start


def ffmpeg_parallel_seconds(ffmpeg, paths, processes):
    """`processes` one-thread ffmpeg loops over disjoint halves of the files, at once."""
    groups = [paths[index::processes] for index in range(processes)]
    start = time.perf_counter()
    running = [subprocess.Popen([sys.executable, "-c",
                                 "import subprocess, sys\n"
                                 "for p in sys.argv[2:]:\n"
                                 "    subprocess.run([sys.argv[1], '-nostdin', '-v', 'error',"
                                 " '-threads', '1', '-i', p, '-f', 'null', '-'], check=True)",
                                 ffmpeg, *group]) for group in groups]
    for process in running:
        process.wait()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=6, help="videos per codec")
    parser.add_argument("--video-frames", type=int, default=300)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--frames", type=int, default=16, help="prepare --frames")
    parser.add_argument("--size", type=int, default=112, help="prepare --size")
    parser.add_argument("--resize-short", type=int, default=128, help="prepare --resize-short")
    parser.add_argument("--clips-per-video", type=int, default=1)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        sys.exit("error: ffmpeg is not installed (it is the baseline)")
    import tensorflow  # noqa: F401  (imported once, outside every timed run)

    work = tempfile.mkdtemp(prefix="bench_data_prep_")
    try:
        root = os.path.join(work, "videos")
        paths = write_videos(root, args.videos, args.video_frames, args.width, args.height)
        rows = []
        ffmpeg_times = [ffmpeg_seconds(ffmpeg, paths) for _ in range(args.repeats)]
        frames = None
        results = {}
        for workers in args.workers:
            times = []
            for repeat in range(args.repeats):
                out = os.path.join(work, f"out_{workers}_{repeat}")
                start = time.perf_counter()
                manifest = prepare_dataset(SourceSpec("folders", root), out, args.frames,
                                           args.size,
                                           resize_short=args.resize_short,
                                           clips_per_video=args.clips_per_video,
                                           workers=workers, show_progress=False)
                times.append(time.perf_counter() - start)
                frames = manifest["splits"]["train"]["frames_decoded"]
                shutil.rmtree(out)
            results[workers] = statistics.median(times)
        ffmpeg_rate = {1: frames / statistics.median(ffmpeg_times)}
        rows.append(("ffmpeg -threads 1 (1 process)", statistics.median(ffmpeg_times), 1))
        for processes in sorted(set(args.workers) - {1}):
            parallel = [ffmpeg_parallel_seconds(ffmpeg, paths, processes)
                        for _ in range(args.repeats)]
            ffmpeg_rate[processes] = frames / statistics.median(parallel)
            rows.append((f"ffmpeg -threads 1 ({processes} processes)",
                         statistics.median(parallel), processes))
        for workers, seconds in results.items():
            rows.append((f"prepare --workers {workers}", seconds, workers))

        items = len(paths)
        print(f"{items} videos ({args.videos} MJPG avi + {args.videos} mp4v mp4), "
              f"{args.width}x{args.height}, {frames} frames decoded per run; prepare "
              f"--frames {args.frames} --size {args.size} --resize-short {args.resize_short} "
              f"--clips-per-video {args.clips_per_video}; median of {args.repeats}")
        print(f"{'run':34} {'seconds':>8} {'frames/s':>9} {'items/s':>8} "
              f"{'per worker / ffmpeg 1 proc':>27} {'/ ffmpeg same procs':>20}")
        for name, seconds, workers in rows:
            rate = frames / seconds
            same = ffmpeg_rate.get(workers)
            print(f"{name:34} {seconds:8.2f} {rate:9.0f} {items / seconds:8.1f} "
                  f"{rate / workers / ffmpeg_rate[1]:26.2f}x "
                  f"{(f'{rate / same:.2f}x' if same else '-'):>20}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
