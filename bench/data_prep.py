"""Benchmark: `python -m data_prep prepare`, today's worker pool against the Beam local runner.

The baseline is the code at `--baseline-ref` (default `fb5e086`, the last commit whose
`prepare` runs on the home-made worker pool of `data_prep/workers.py`), extracted with
`git archive REF core data_prep` into a temporary directory. The candidate is this working
tree (the repository holding this file), whatever `prepare` runs on there.

On the same generated videos (a `folders` layout: one class per codec, `--videos` MJPG .avi
and `--videos` mp4v .mp4, textured and moving), each tree runs

    python -m data_prep prepare --layout folders --root ROOT --out OUT --size 112 \
        --workers W --no-progress

as a subprocess (cwd and PYTHONPATH = that tree; format v2: whole items, jpeg frames), into a
fresh OUT each time. Runs interleave (baseline w1, candidate w1, baseline w2, candidate w2,
then again) for `--repeats` rounds, so machine noise hits both trees alike. Per run:
- wall seconds of the subprocess, Python and TensorFlow start-up included;
- prepare seconds, the steady figure: Z of the `decoded X frames of Y items in Z s` line that
  prepare logs to stderr (printed with one decimal; absent from a tree that no longer logs
  it, then only wall figures exist). In the pool's code the clock starts after TensorFlow
  is imported and the workers started; a candidate that starts it elsewhere (before or
  after the Beam pipeline's start-up) makes this figure unfair, the wall figure stays fair;
- items/s = items / seconds, for both;
- peak RSS: the largest sum of RSS over the subprocess and all its descendants, polled
  every 50 ms from /proc (forked workers share pages, which the sum counts once per process).
The table shows medians per tree and worker count, and candidate/baseline ratios; the goal
is a candidate (Beam) at >= 0.8x the pool's items/s at the same worker count. Finally every
run's records are compared with the first baseline run's: the SequenceExamples with the
context feature `clip/item_index` cleared (a tree may number items differently), sorted.

    python bench/data_prep.py                       # defaults: about 2 minutes on 2 cores
    python bench/data_prep.py --videos 2 --repeats 1
    python bench/data_prep.py --candidate-args "--some-beam-option X" --json runs.json
"""

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import cv2
import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from core.tensorflow_env import import_tensorflow_quietly  # noqa: E402  (imports no TF)

TREES = ("baseline", "candidate")
SUMMARY_LINE = re.compile(r"decoded (\d+) frames of (\d+) items in ([0-9.]+) s")
# The context keys that number items; `clip/item_index` is data_prep.sequence_records's.
ITEM_INDEX_KEYS = ("clip/item_index", "item_index")
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile")
POLL_SECONDS = 0.05
GOAL_RATIO = 0.8


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


# ---------------------------------------------------------------------------------------
# The two trees


def git(*args, repo=REPO_ROOT):
    return subprocess.run(["git", "-C", repo, *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def extract_baseline(ref, directory):
    """`core` and `data_prep` as they were at `ref`, under `directory`; returns its short
    commit."""
    os.makedirs(directory)
    archive = subprocess.Popen(["git", "-C", REPO_ROOT, "archive", ref, "core", "data_prep"],
                               stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", directory], stdin=archive.stdout, check=True)
    archive.stdout.close()
    if archive.wait() != 0:
        sys.exit(f"error: `git archive {ref} core data_prep` failed in {REPO_ROOT}")
    return git("rev-parse", "--short", ref)


def candidate_commit():
    commit = git("rev-parse", "--short", "HEAD")
    return commit + (" (dirty)" if git("status", "--porcelain") else "")


# ---------------------------------------------------------------------------------------
# One measured run


def process_tree_rss_bytes(root_pid):
    """The summed RSS of `root_pid` and all its descendants, from one scan of /proc."""
    parents, rss_pages = {}, {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as stat:
                # Fields after the command name, which may hold spaces and parentheses.
                fields = stat.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue  # the process ended while we looked
        pid = int(name)
        parents[pid] = int(fields[1])
        rss_pages[pid] = int(fields[21])
    tree, frontier = set(), [root_pid]
    while frontier:
        pid = frontier.pop()
        if pid in rss_pages and pid not in tree:
            tree.add(pid)
            frontier.extend(child for child, parent in parents.items() if parent == pid)
    return sum(rss_pages[pid] for pid in tree) * os.sysconf("SC_PAGE_SIZE")


def run_measured(command, cwd, env, log_path):
    """Runs `command` with stdout and stderr into `log_path`; returns (wall seconds, peak
    RSS bytes of its process tree, return code)."""
    with open(log_path, "w") as log:
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
        peak = [0]

        def poll():
            while process.poll() is None:
                peak[0] = max(peak[0], process_tree_rss_bytes(process.pid))
                time.sleep(POLL_SECONDS)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        returncode = process.wait()
        wall = time.perf_counter() - start
        poller.join()
    return wall, peak[0], returncode


def prepare_run(tree, tree_dir, workers, repeat, root, work, extra_args, expected_items):
    """One `prepare` of `tree` at `workers` workers into a fresh directory; returns its
    measurements as a dict."""
    out = os.path.join(work, "out", f"{tree}_w{workers}_r{repeat}")
    log_path = out + ".log"
    os.makedirs(os.path.dirname(out), exist_ok=True)
    command = [sys.executable, "-m", "data_prep", "prepare", "--layout", "folders",
               "--root", root, "--out", out, "--size", "112", "--workers", str(workers),
               "--no-progress", *extra_args]
    env = dict(os.environ, PYTHONPATH=tree_dir)
    wall, peak_rss, returncode = run_measured(command, tree_dir, env, log_path)
    with open(log_path) as log:
        output = log.read()
    if returncode != 0:
        sys.exit(f"error: {tree} run failed (exit {returncode}): {shlex.join(command)}\n"
                 f"--- last lines of {log_path} ---\n" + "\n".join(output.splitlines()[-20:]))
    summary = SUMMARY_LINE.search(output)
    items = int(summary.group(2)) if summary else expected_items
    prepare_seconds = float(summary.group(3)) if summary else None
    return {
        "tree": tree, "workers": workers, "repeat": repeat, "command": shlex.join(command),
        "cwd": tree_dir, "out": out, "wall_seconds": wall, "prepare_seconds": prepare_seconds,
        "items": items, "frames": int(summary.group(1)) if summary else None,
        "items_per_second_wall": items / wall,
        "items_per_second_prepare": items / prepare_seconds if prepare_seconds else None,
        "peak_rss_bytes": peak_rss, "summary_line": summary.group(0) if summary else None,
    }


# ---------------------------------------------------------------------------------------
# Same records?


def comparable_records(out):
    """The sorted serialized SequenceExamples of every shard under `out`, item numbering
    cleared, and their sorted item ids."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # as `python -m data_prep` does
    import_tensorflow_quietly()  # only here: the timed runs are subprocesses
    import tensorflow as tf

    shards = sorted(os.path.join(folder, name) for folder, _, names in os.walk(out)
                    for name in names if name.endswith(".tfrecord"))
    records, item_ids = [], []
    for serialized in tf.data.TFRecordDataset(shards):
        example = tf.train.SequenceExample.FromString(serialized.numpy())
        for key in ITEM_INDEX_KEYS:
            if key in example.context.feature:
                del example.context.feature[key]
        media_id = (example.context.feature["clip/media_id"].bytes_list.value
                    if "clip/media_id" in example.context.feature else [b"?"])
        item_ids.append(media_id[0].decode())
        records.append(example.SerializeToString(deterministic=True))
    return sorted(records), sorted(item_ids)


def compare_records(runs):
    """Every run's records against the first baseline run's; returns {(tree, workers): {"same":
    bool, "records": count, "same_item_ids": bool}}."""
    reference_run = next(run for run in runs if run["tree"] == "baseline")
    reference, reference_ids = comparable_records(reference_run["out"])
    verdicts = {}
    for run in runs:
        records, item_ids = comparable_records(run["out"])
        run["records"] = len(records)
        run["same_records"] = records == reference
        run["same_item_ids"] = item_ids == reference_ids
        key = (run["tree"], run["workers"])
        verdict = verdicts.setdefault(key, {"same": True, "same_item_ids": True,
                                            "records": len(records)})
        verdict["same"] &= run["same_records"]
        verdict["same_item_ids"] &= run["same_item_ids"]
    return {"reference": reference_run["out"], "reference_records": len(reference),
            "verdicts": verdicts}


# ---------------------------------------------------------------------------------------
# Header and table


def cpu_facts():
    model, flags = "unknown", set()
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    return model, [flag for flag in CPU_FLAGS if flag in flags]


def beam_version():
    try:
        return importlib.metadata.version("apache-beam")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_header(baseline_ref, baseline_commit, load_before):
    model, flags = cpu_facts()
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
        "cpu": model, "cpu_flags": flags, "cores": len(os.sched_getaffinity(0)),
        # Unset ("default"): each tree's `python -m data_prep` sets it to 1 for itself.
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
        "load_before": load_before, "candidate_commit": candidate_commit(),
        "baseline": baseline_ref + ("" if baseline_ref == baseline_commit
                                    else f" ({baseline_commit})"),
        "python": platform.python_version(), "apache_beam": beam_version(),
    }


def median_or_none(values):
    values = [value for value in values if value is not None]
    return statistics.median(values) if values else None


def summarise(runs, workers_counts):
    """Median figures per (tree, workers): a list of dicts in table order."""
    rows = []
    for workers in workers_counts:
        for tree in TREES:
            mine = [run for run in runs if run["tree"] == tree and run["workers"] == workers]
            rows.append({
                "tree": tree, "workers": workers, "runs": len(mine),
                "wall_seconds": median_or_none([run["wall_seconds"] for run in mine]),
                "prepare_seconds": median_or_none([run["prepare_seconds"] for run in mine]),
                "items_per_second_wall": median_or_none(
                    [run["items_per_second_wall"] for run in mine]),
                "items_per_second_prepare": median_or_none(
                    [run["items_per_second_prepare"] for run in mine]),
                "peak_rss_mb": median_or_none([run["peak_rss_bytes"] / 2**20 for run in mine]),
            })
    return rows


def ratio(numerator, denominator):
    return numerator / denominator if numerator and denominator else None


def fmt(value, spec, missing="-"):
    return missing if value is None else format(value, spec)


def print_report(header, rows, records, settings):
    print(f"date (UTC)   {header['date_utc']}")
    print(f"cpu          {header['cpu']}; flags: {' '.join(header['cpu_flags']) or 'none'} "
          f"(of {', '.join(CPU_FLAGS)}); {header['cores']} core(s)")
    print(f"oneDNN       TF_ENABLE_ONEDNN_OPTS={header['onednn']}"
          + (" (prepare's configure_tensorflow sets 1)" if header["onednn"] == "default"
             else ""))
    print(f"load average before {' '.join(f'{x:.2f}' for x in header['load_before'])}, "
          f"after {' '.join(f'{x:.2f}' for x in header['load_after'])}")
    print(f"baseline     {header['baseline']} (core + data_prep, git archive)")
    print(f"candidate    {header['candidate_commit']} (working tree)"
          + (f", extra args: {settings['candidate_args']}" if settings["candidate_args"] else ""))
    print(f"python       {header['python']}; apache-beam {header['apache_beam']}")
    print(f"items        {settings['items']} videos ({settings['videos']} MJPG avi + "
          f"{settings['videos']} mp4v mp4, 2 classes), {settings['width']}x{settings['height']}, "
          f"{settings['frames_per_video']} frames each; prepare --size 112 (v2, jpeg); "
          f"median of {settings['repeats']} interleaved run(s)")
    print()
    columns = (f"{'tree':10} {'workers':>7} {'wall s':>7} {'prepare s':>9} {'items/s wall':>12} "
               f"{'items/s prepare':>15} {'peak RSS MB':>11} {'same records':>12}")
    print(columns)
    print("-" * len(columns))
    for row in rows:
        verdict = records["verdicts"].get((row["tree"], row["workers"]))
        same = "-" if verdict is None else ("yes" if verdict["same"] else
                                            "no (ids " + ("same)" if verdict["same_item_ids"]
                                                          else "differ)"))
        print(f"{row['tree']:10} {row['workers']:7d} {fmt(row['wall_seconds'], '7.2f'):>7} "
              f"{fmt(row['prepare_seconds'], '9.1f'):>9} "
              f"{fmt(row['items_per_second_wall'], '12.2f'):>12} "
              f"{fmt(row['items_per_second_prepare'], '15.2f'):>15} "
              f"{fmt(row['peak_rss_mb'], '11.0f'):>11} {same:>12}")
    for workers in sorted({row["workers"] for row in rows}):
        baseline, candidate = (next(row for row in rows if row["tree"] == tree
                                    and row["workers"] == workers) for tree in TREES)
        wall = ratio(candidate["items_per_second_wall"], baseline["items_per_second_wall"])
        steady = ratio(candidate["items_per_second_prepare"],
                       baseline["items_per_second_prepare"])
        memory = ratio(candidate["peak_rss_mb"], baseline["peak_rss_mb"])
        print(f"{'cand/base':10} {workers:7d} {'':7} {'':9} {fmt(wall, '11.2f') + 'x':>12} "
              f"{fmt(steady, '14.2f') + 'x':>15} {fmt(memory, '10.2f') + 'x':>11}")
    print(f"\nGoal: candidate items/s >= {GOAL_RATIO}x the baseline's at the same workers. "
          f"Records compared with {records['reference']} "
          f"({records['reference_records']} records, clip/item_index cleared).", flush=True)


# ---------------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-ref", default="fb5e086",
                        help="git ref of the baseline (the worker pool); default fb5e086")
    parser.add_argument("--candidate-args", default="",
                        help="extra prepare arguments for the candidate only (shell-split)")
    parser.add_argument("--videos", type=int, default=12, help="videos per codec (per class)")
    parser.add_argument("--frames-per-video", type=int, default=150)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", metavar="PATH", help="write every raw measurement here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()

    load_before = os.getloadavg()
    work = tempfile.mkdtemp(prefix="bench_data_prep_")
    try:
        baseline_dir = os.path.join(work, "baseline")
        trees = {"baseline": baseline_dir, "candidate": REPO_ROOT}
        baseline_commit = extract_baseline(args.baseline_ref, baseline_dir)
        header = machine_header(args.baseline_ref, baseline_commit, load_before)
        root = os.path.join(work, "videos")
        items = len(write_videos(root, args.videos, args.frames_per_video, args.width,
                                 args.height))
        extra = {"baseline": [], "candidate": shlex.split(args.candidate_args)}

        runs = []
        for repeat in range(args.repeats):
            for workers in args.workers:
                for tree in TREES:
                    run = prepare_run(tree, trees[tree], workers, repeat, root, work,
                                      extra[tree], items)
                    runs.append(run)
                    print(f"  {tree:9} w{workers} repeat {repeat}: wall "
                          f"{run['wall_seconds']:.2f} s, prepare {fmt(run['prepare_seconds'], '.1f')} s, peak RSS "
                          f"{run['peak_rss_bytes'] / 2**20:.0f} MB", file=sys.stderr)
        header["load_after"] = os.getloadavg()
        records = compare_records(runs)
        rows = summarise(runs, args.workers)
        settings = {"items": items, "videos": args.videos, "width": args.width,
                    "height": args.height, "frames_per_video": args.frames_per_video,
                    "repeats": args.repeats, "candidate_args": args.candidate_args}
        print_report(header, rows, records, settings)
        if args.json:
            with open(args.json, "w") as handle:
                json.dump({"header": header, "settings": settings, "runs": runs,
                           "medians": rows,
                           "records": {"reference": records["reference"],
                                       "reference_records": records["reference_records"],
                                       "verdicts": [{"tree": tree, "workers": workers, **v}
                                                    for (tree, workers), v
                                                    in records["verdicts"].items()]}},
                          handle, indent=2)
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
