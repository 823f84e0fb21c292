"""What oneDNN buys: Conv3D and r3d_18 training with TensorFlow's oneDNN off and on, and PyTorch.

Two workloads, each timed in a fresh interpreter per implementation (TensorFlow reads
`TF_ENABLE_ONEDNN_OPTS` only when it is imported):
- Conv3D forward + backward (gradients w.r.t. input and kernel) at (4, 8, 28, 28, 128 -> 128),
  kernel 3x3x3, 'same', float32: `tf.nn.conv3d` in a `tf.function`; `torch.nn.functional.conv3d`;
- one r3d_18 training step, batch 4 of 16x112x112x3, 101 classes, SGD with momentum:
  `models.build_model` + `train_on_batch` (the step `fit` runs); torchvision's
  `models.video.r3d_18` with `loss.backward()` + `optimizer.step()`, channels-first
  (4, 3, 16, 112, 112).
Rounds alternate the implementations (TF off, TF on, PyTorch, then again), so a change in
the machine's load hits them alike; each process reports the median of its timed steps, the
table the median over rounds. PyTorch rows need `--torch-python` (a venv with torch and
torchvision, outside this project); it runs with `torch.set_num_threads(2)`.

    python bench/onednn.py [--rounds 3] [--torch-python /work/torchvenv/bin/python]
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONV_SHAPE = (4, 8, 28, 28, 128)  # (B, D, H, W, C), C -> C filters
CLIP_SHAPE = (4, 16, 112, 112, 3)  # (B, F, H, W, band)
NUM_CLASSES = 101


def tensorflow_worker(conv_steps, model_steps):
    """In a fresh interpreter whose environment already says oneDNN on or off."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, REPO)
    import numpy as np
    import tensorflow as tf

    import keras
    from core.tensorflow_env import onednn_enabled
    import models

    rng = np.random.default_rng(0)
    batch, depth, height, width, channels = CONV_SHAPE
    inputs = tf.constant(rng.standard_normal(CONV_SHAPE, dtype=np.float32))
    kernel = tf.constant(rng.standard_normal((3, 3, 3, channels, channels), dtype=np.float32) * 0.05)
    upstream = tf.constant(rng.standard_normal(CONV_SHAPE, dtype=np.float32))

    @tf.function
    def conv_step(inputs, kernel):
        with tf.GradientTape() as tape:
            tape.watch([inputs, kernel])
            outputs = tf.nn.conv3d(inputs, kernel, [1, 1, 1, 1, 1], "SAME")
            loss = tf.reduce_sum(outputs * upstream)
        return tape.gradient(loss, [inputs, kernel])

    def run_conv():
        grads = conv_step(inputs, kernel)
        _ = [g.numpy() for g in grads]

    keras.utils.set_random_seed(0)
    model = models.build_model("r3d_18", NUM_CLASSES, CLIP_SHAPE[1:])
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    clips = rng.integers(0, 256, CLIP_SHAPE, dtype=np.uint8)
    labels = rng.integers(0, NUM_CLASSES, CLIP_SHAPE[0])

    def run_model():
        model.train_on_batch(clips, labels)  # returns the loss as numpy: the step has finished

    return {"onednn": onednn_enabled(), "version": tf.__version__,
            "conv3d": time_steps(run_conv, 2, conv_steps),
            "r3d_18": time_steps(run_model, 2, model_steps)}


def torch_worker(conv_steps, model_steps):
    """In the torch venv's interpreter: the same two workloads, channels-first."""
    import torch
    import torchvision

    torch.set_num_threads(2)
    torch.manual_seed(0)
    batch, depth, height, width, channels = CONV_SHAPE
    inputs = torch.randn(batch, channels, depth, height, width, requires_grad=True)
    kernel = (torch.randn(channels, channels, 3, 3, 3) * 0.05).requires_grad_()
    upstream = torch.randn(batch, channels, depth, height, width)

    def run_conv():
        inputs.grad = kernel.grad = None
        torch.nn.functional.conv3d(inputs, kernel, padding=1).backward(upstream)

    model = torchvision.models.video.r3d_18(num_classes=NUM_CLASSES)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    b, f, h, w, c = CLIP_SHAPE
    clips = torch.rand(b, c, f, h, w)
    labels = torch.randint(0, NUM_CLASSES, (b,))

    def run_model():
        optimizer.zero_grad()
        loss = loss_fn(model(clips), labels)
        loss.backward()
        optimizer.step()
        loss.item()

    return {"version": f"torch {torch.__version__}, torchvision {torchvision.__version__}",
            "threads": torch.get_num_threads(),
            "conv3d": time_steps(run_conv, 2, conv_steps),
            "r3d_18": time_steps(run_model, 2, model_steps)}


def time_steps(step, warmup, steps):
    """Median seconds of `steps` calls after `warmup` untimed ones (the first traces)."""
    for _ in range(warmup):
        step()
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def run_worker(python, kind, env_update, conv_steps, model_steps):
    env = {key: value for key, value in os.environ.items() if key != "TF_ENABLE_ONEDNN_OPTS"}
    env.update(env_update)
    command = [python, os.path.abspath(__file__), "--worker", kind,
               "--conv-steps", str(conv_steps), "--model-steps", str(model_steps)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        raise RuntimeError(f"{kind} worker failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def load():
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (medians over them)")
    parser.add_argument("--conv-steps", type=int, default=5, help="timed Conv3D steps per process")
    parser.add_argument("--model-steps", type=int, default=3, help="timed r3d_18 steps per process")
    parser.add_argument("--torch-python", help="python of a venv with torch and torchvision")
    parser.add_argument("--worker", choices=["tensorflow", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker = tensorflow_worker if args.worker == "tensorflow" else torch_worker
        print(json.dumps(worker(args.conv_steps, args.model_steps)))
        return 0

    runs = [("TF oneDNN off", sys.executable, "tensorflow", {"TF_ENABLE_ONEDNN_OPTS": "0"}),
            ("TF oneDNN on", sys.executable, "tensorflow", {"TF_ENABLE_ONEDNN_OPTS": "1"})]
    if args.torch_python:
        runs.append(("PyTorch", args.torch_python, "torch", {}))
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, load average {load()}", flush=True)
    results = {label: [] for label, *_ in runs}
    for round_index in range(args.rounds):
        for label, python, kind, env in runs:
            result = run_worker(python, kind, env, args.conv_steps, args.model_steps)
            results[label].append(result)
            print(f"round {round_index + 1} {label:14s} conv3d {result['conv3d']:.3f} s  "
                  f"r3d_18 {result['r3d_18']:.3f} s  (load {load()})", flush=True)
    for label, *_ in runs:
        if "onednn" in results[label][0]:
            print(f"{label}: IsMklEnabled() = {results[label][0]['onednn']}, tensorflow {results[label][0]['version']}")
        else:
            print(f"{label}: {results[label][0]['version']}, {results[label][0]['threads']} threads")

    medians = {label: {workload: statistics.median(r[workload] for r in results[label])
                       for workload in ("conv3d", "r3d_18")} for label in results}
    columns = [label for label, *_ in runs]
    header = f"{'median s over ' + str(args.rounds) + ' rounds':54s}" + "".join(f"{c:>15s}" for c in columns)
    if args.torch_python:
        header += f"{'off / torch':>13s}{'on / torch':>12s}"
    print(header)
    print("-" * len(header))
    names = {"conv3d": "Conv3D fwd+bwd, (4, 8, 28, 28, 128->128), 3x3x3",
             "r3d_18": "r3d_18 train step, batch 4 of 16x112x112x3"}
    for workload, name in names.items():
        line = f"{name:54s}" + "".join(f"{medians[c][workload]:15.3f}" for c in columns)
        if args.torch_python:
            torch_seconds = medians["PyTorch"][workload]
            line += (f"{medians['TF oneDNN off'][workload] / torch_seconds:12.2f}x"
                     f"{medians['TF oneDNN on'][workload] / torch_seconds:11.2f}x")
        print(line)
    print(f"load average at the end: {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
