"""Run an exported LiteRT or ONNX file through its own runtime, without TensorFlow.

This file imports numpy and the format's runtime (`ai_edge_litert`, `onnxruntime`) and
nothing of this project, so `training.export_check` runs it as a script in a fresh,
isolated interpreter (`python -I export_runtime.py ...`) and the parity and latency it
reports are those of a process where TensorFlow was never imported: the report says
whether `tensorflow` is in `sys.modules` at the end.

    python -I training/export_runtime.py litert RUN/export/model.tflite clips.npy out.npy

clips.npy holds uint8 clips (N, F, H, W, band); out.npy gets the float32 logits (N, classes),
one clip per call (batch 1, as on a device). Prints one JSON line: per-clip latency
(median and mean, ms, after one warm-up call), the runtime's version and
`tensorflow_imported`.
"""

import json
import sys
import time

import numpy as np


def litert_runner(path=None, num_threads=None, content=None):
    """callable(uint8 clip batch (1, F, H, W, band)) -> float32 logits (1, classes).

    Through `set_tensor`, not the signature runner: the runner resizes its input to any
    clip it is given (and fails deep in the graph), `set_tensor` refuses another shape with
    "Dimension mismatch" and the dimension's index.
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, model_content=content, num_threads=num_threads)
    signature = interpreter.get_signature_runner()
    clips_index = signature.get_input_details()["clips"]["index"]
    logits_index = signature.get_output_details()["logits"]["index"]
    del signature  # it holds views of the interpreter's buffers, which invoke() refuses
    interpreter.allocate_tensors()

    def run(clips):
        interpreter.set_tensor(clips_index, clips)
        interpreter.invoke()
        return interpreter.get_tensor(logits_index)

    return run


def onnx_runner(path, num_threads=None):
    """callable(uint8 clips (N, F, H, W, band)) -> float32 logits (N, classes)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if num_threads:
        options.intra_op_num_threads = num_threads
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def run(clips):
        return session.run(["logits"], {"clips": clips})[0]

    return run


RUNNERS = {"litert": litert_runner, "onnx": onnx_runner}


def runtime_version(kind):
    if kind == "litert":
        from importlib.metadata import version

        return f"ai-edge-litert {version('ai-edge-litert')}"
    import onnxruntime

    return f"onnxruntime {onnxruntime.__version__}"


def measure(kind, path, clips, num_threads=None):
    """(float32 logits (N, classes), per-clip latencies in ms) of `clips`, one at a time."""
    run = RUNNERS[kind](path, num_threads)
    run(clips[:1])  # warm-up: first-call allocation is not latency
    logits, latencies = [], []
    for clip in clips:
        start = time.perf_counter()
        logits.append(np.asarray(run(clip[None]), np.float32)[0])
        latencies.append((time.perf_counter() - start) * 1000.0)
    return np.stack(logits), latencies


def main(argv):
    kind, path, clips_path, out_path = argv[:4]
    num_threads = int(argv[4]) if len(argv) > 4 else None
    logits, latencies = measure(kind, path, np.load(clips_path), num_threads)
    np.save(out_path, logits)
    print(json.dumps({
        "latency_ms_median": float(np.median(latencies)),
        "latency_ms_mean": float(np.mean(latencies)),
        "runtime": runtime_version(kind),
        "tensorflow_imported": "tensorflow" in sys.modules,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
