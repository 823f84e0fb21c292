"""Every export is checked when it is written: its logits against the Keras model's.

The clips are the run's held-out ones (its test split, stored clips centre-cropped as
evaluation crops them); int8 calibration clips come from its training split. LiteRT and
ONNX files run through their own runtime in a fresh, isolated interpreter
(`training/export_runtime.py` as a script, `python -I`), so the latency is that of the
runtime alone and the report proves that TensorFlow was not imported there.

The check (printed by export.py and stored beside the file as `<file>.check.json`):

```
{"format", "file", "bytes", "clips", "max_abs_logit_difference", "top1_agreement",
 "keras_top1_accuracy", "export_top1_accuracy",          // single-label runs
 "latency_ms_median", "latency_ms_mean", "runtime", "tensorflow_imported",
 "machine", "date", "passed", "tolerance"}
```
`passed`: top-1 agreement 1.0 and |Δlogit| <= the tolerance (1e-4 float); an int8 file is
reported, not judged, as quantisation moves logits by design.
"""

import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf

from core.atomic import write_json_atomically
from core.errors import UserError
import data_prep
from data_prep.shards import is_multi_label
from training.input_pipeline import center_crop, read_split

FLOAT_TOLERANCE = 1e-4
RUNTIME_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "export_runtime.py")


def split_clips(run, split, count):
    """Up to `count` stored clips of a split of the run's data, centre-cropped to the model's
    input, with their label ids (None for a multi-label run), in file order.

    Returns:
        (clips (N, F, crop, crop, band) of the model's input dtype, int64 (N,) or None).
    """
    manifest = data_prep.read_manifest(run.prepared_dir)
    if split not in manifest["splits"]:
        raise UserError(f"Expected the run's prepared data to hold split {split!r}. Received: "
                        f"splits {sorted(manifest['splits'])} in {run.prepared_dir}")
    crop_size = run.input_shape[1]
    sampling = run.manifest.get("sampling") or {}
    dataset = read_split(run.prepared_dir, split, run.manifest.get("clip_inputs"),
                         clip_selection="all", shuffle_shards=False, num_parallel_reads=1,
                         num_frames=run.input_shape[0],
                         sampling=sampling.get("method", "uniform"),
                         frame_stride=sampling.get("frame_stride", 1))
    dataset = dataset.map(lambda clip, label: (center_crop(clip, crop_size), label))
    clips, labels = [], []
    for clip, label in dataset.take(count):
        clips.append(clip.numpy())
        labels.append(label.numpy())
    if not clips:
        raise UserError(f"The {split} split of {run.prepared_dir} holds no clips to check "
                        "the export on.")
    multi = is_multi_label(manifest)
    return np.stack(clips), (None if multi else np.asarray(labels, np.int64))


def run_in_runtime(kind, path, clips, num_threads=None):
    """Logits and the runtime report of `export_runtime.py` run in an isolated interpreter.

    Returns:
        (float32 logits (N, classes), report dict: latency_ms_median, latency_ms_mean,
        runtime, tensorflow_imported).
    """
    with tempfile.TemporaryDirectory(prefix="export-check-") as folder:
        clips_path = os.path.join(folder, "clips.npy")
        out_path = os.path.join(folder, "logits.npy")
        np.save(clips_path, clips)
        command = [sys.executable, "-I", RUNTIME_SCRIPT, kind, path, clips_path, out_path]
        if num_threads:
            command.append(str(num_threads))
        env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
        completed = subprocess.run(command, cwd=folder, env=env, capture_output=True,
                                   text=True, check=False)
        if completed.returncode != 0:
            raise RuntimeError(f"{kind} runtime failed on {path}:\n{completed.stderr[-2000:]}")
        report = json.loads(completed.stdout.strip().splitlines()[-1])
        return np.load(out_path), report


def saved_model_logits(path, clips):
    """Logits of a SavedModel export and its per-clip latency (TensorFlow's own runtime)."""
    serve = tf.saved_model.load(path).signatures["serving_default"]
    serve(clips=tf.constant(clips[:1]))
    logits, latencies = [], []
    for clip in clips:
        start = time.perf_counter()
        logits.append(serve(clips=tf.constant(clip[None]))["logits"].numpy()[0])
        latencies.append((time.perf_counter() - start) * 1000.0)
    return np.stack(logits), {"latency_ms_median": float(np.median(latencies)),
                              "latency_ms_mean": float(np.mean(latencies)),
                              "runtime": f"tensorflow {tf.__version__}",
                              "tensorflow_imported": True}


def compare(keras_logits, export_logits, labels=None):
    """Parity figures of two (N, classes) logit arrays (and accuracies against `labels`)."""
    keras_top1 = keras_logits.argmax(axis=1)
    export_top1 = export_logits.argmax(axis=1)
    figures = {
        "clips": int(len(keras_logits)),
        "max_abs_logit_difference": float(np.abs(keras_logits - export_logits).max()),
        "top1_agreement": float((keras_top1 == export_top1).mean()),
    }
    if labels is not None:
        figures["keras_top1_accuracy"] = float((keras_top1 == labels).mean())
        figures["export_top1_accuracy"] = float((export_top1 == labels).mean())
    return figures


def check_export(kind, path, model, clips, labels=None, *, quantized=False, num_threads=None):
    """Runs the export at `path` on `clips`, compares with `model`, writes `<path>.check.json`.

    Args:
        kind: "saved_model", "litert" or "onnx".
        path: the exported file (a directory for a SavedModel).
        model: the keras.Model it was made from (logits out).
        clips: uint8 (N, F, H, W, band) held-out clips.
        labels: int label ids (N,) or None (multi-label).
        quantized: bool, an int8 file: reported, not judged against the float tolerance.

    Returns:
        dict, the check (see the module docstring).
    """
    keras_logits = np.concatenate([model(clips[i:i + 8], training=False).numpy()
                                   for i in range(0, len(clips), 8)]).astype(np.float32)
    if kind == "saved_model":
        export_logits, report = saved_model_logits(path, clips)
    else:
        export_logits, report = run_in_runtime(kind, path, clips, num_threads)
    figures = compare(keras_logits, export_logits, labels)
    passed = (figures["top1_agreement"] == 1.0
              and figures["max_abs_logit_difference"] <= FLOAT_TOLERANCE)
    if kind != "saved_model" and report["tensorflow_imported"]:
        passed = False
    size = (os.path.getsize(path) if os.path.isfile(path) else
            sum(os.path.getsize(os.path.join(d, n)) for d, _, names in os.walk(path)
                for n in names))
    check = {
        "format": kind + ("_int8" if quantized else ""),
        "file": os.path.basename(os.path.normpath(path)),
        "bytes": size,
        **figures,
        **report,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or ''}"
                   .rstrip(", "),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "tolerance": None if quantized else FLOAT_TOLERANCE,
        "passed": None if quantized else passed,
    }
    write_json_atomically(check_path(path), check)
    return check


def check_path(path):
    return os.path.normpath(path) + ".check.json"


def format_check(check):
    """One readable line of a check."""
    line = (f"{check['format']}: {check['file']} ({check['bytes'] / 1e6:.2f} MB), "
            f"{check['clips']} held-out clips: max |dlogit| "
            f"{check['max_abs_logit_difference']:.2e}, top-1 agreement "
            f"{100 * check['top1_agreement']:.1f}%")
    if "export_top1_accuracy" in check:
        line += (f", top-1 {100 * check['export_top1_accuracy']:.1f}% (Keras "
                 f"{100 * check['keras_top1_accuracy']:.1f}%)")
    line += (f", {check['latency_ms_median']:.2f} ms/clip ({check['runtime']}, TensorFlow "
             f"{'imported' if check['tensorflow_imported'] else 'not imported'})")
    if check["passed"] is not None:
        line += ", PASSED" if check["passed"] else ", FAILED"
    return line
