"""Benchmark: DeformConv3D against Conv3D (time and peak memory), and torchvision.

    python bench/deform_conv3d.py                         # all three shapes of issue 3
    python bench/deform_conv3d.py --shapes 2,16,28,28,64,64 --repeats 3
    python bench/deform_conv3d.py --torch-python /path/to/torch-venv/bin/python

Time: forward + backward (gradients w.r.t. everything that has one), median of
`--repeats` warm runs inside one tf.function, both sides measured side by side in this
process. Rows: the op (`deform_conv3d` with random offsets, ~N(0, 1) pixels) against
`tf.nn.conv3d`, and the layer (`DeformConv3D`, whose offset branch is itself a Conv3D,
given random weights) against `keras.layers.Conv3D`.

Peak memory: each (shape, implementation) runs in a fresh interpreter. It runs forward +
backward once to warm up (tracing, XLA compilation, thread pools), calls glibc's
`malloc_trim(0)` so that freed heap pages go back to the OS, reads VmRSS as the
baseline, resets VmHWM by writing 5 to /proc/self/clear_refs, runs forward + backward
once more and reports VmHWM - baseline: the memory a training step really adds on top of
its inputs and weights. Linux only.

torchvision: the same per-frame 2D work, (B*D, C, H, W) with a 3x3 kernel through
torchvision.ops.deform_conv2d on CPU, forward + backward, against deform_conv3d with a
(1, 3, 3) kernel. It runs in the interpreter given by --torch-python (or the
DEFORM_BENCH_TORCH_PYTHON environment variable), which needs torch and torchvision; the
row is skipped when none is given. torch is never a dependency of this project.
"""

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core.tensorflow_env import configure_tensorflow  # noqa: E402

# oneDNN on unless the user chose (the project's default), before anything imports TensorFlow.
configure_tensorflow()

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_SHAPES = ["2,16,28,28,64,64", "4,8,56,56,32,32", "1,16,56,56,64,64"]
IMPLEMENTATIONS = ("conv_op", "deform_op", "conv_layer", "deform_layer")

TORCH_SCRIPT = r"""
import json, statistics, sys, time
import torch, torchvision
torch.set_num_threads(int(sys.argv[7]))
b, d, h, w, c, f, threads, repeats = map(int, sys.argv[1:9])
gen = torch.Generator().manual_seed(0)
x = torch.randn(b * d, c, h, w, generator=gen, requires_grad=True)
offset = torch.randn(b * d, 18, h, w, generator=gen, requires_grad=True)
weight = (0.05 * torch.randn(f, c, 3, 3, generator=gen)).requires_grad_()
grad = torch.randn(b * d, f, h, w, generator=gen)
def step():
    x.grad = offset.grad = weight.grad = None
    y = torchvision.ops.deform_conv2d(x, offset, weight, padding=1)
    y.backward(grad)
step()
times = []
for _ in range(repeats):
    start = time.perf_counter(); step(); times.append(time.perf_counter() - start)
print(json.dumps({"median": statistics.median(times), "torch": torch.__version__,
                  "torchvision": torchvision.__version__}))
"""


def parse_shape(text):
    values = tuple(int(v) for v in text.split(","))
    if len(values) != 6:
        raise SystemExit(f"error: expected B,D,H,W,C,F. Received: shape={text}")
    return values


def build_step(implementation, shape, seed=0):
    """A tf.function running forward + backward of one implementation, and its inputs."""
    import keras
    import numpy as np
    import tensorflow as tf

    from models.deform_conv3d import DeformConv3D
    from models.deform_conv3d_ops import deform_conv3d

    batch, depth, height, width, channels, filters = shape
    rng = np.random.default_rng(seed)
    inputs = tf.constant(rng.normal(size=(batch, depth, height, width, channels)), tf.float32)
    kernel = tf.constant(rng.normal(scale=0.05, size=(3, 3, 3, channels, filters)), tf.float32)
    offsets = tf.constant(rng.normal(size=(batch, depth, height, width, 81)), tf.float32)
    grad_outputs = tf.constant(rng.normal(size=(batch, depth, height, width, filters)), tf.float32)

    if implementation in ("conv_op", "deform_op"):
        deform = implementation == "deform_op"

        @tf.function
        def step():
            watched = [inputs, kernel] + ([offsets] if deform else [])
            with tf.GradientTape() as tape:
                tape.watch(watched)
                if deform:
                    outputs = deform_conv3d(inputs, offsets, kernel, padding="same")
                else:
                    outputs = tf.nn.conv3d(inputs, kernel, [1] * 5, "SAME")
            return tape.gradient(outputs, watched, output_gradients=grad_outputs)

        return step

    if implementation == "deform_layer":
        layer = DeformConv3D(filters, 3, padding="same")
        layer.build(inputs.shape)
        # Random offset-branch weights, so the layer samples at random fractional places.
        layer.offset_conv.kernel.assign(
            rng.normal(scale=0.02, size=layer.offset_conv.kernel.shape)
        )
    else:
        layer = keras.layers.Conv3D(filters, 3, padding="same")
        layer.build(inputs.shape)

    @tf.function
    def layer_step():
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            outputs = layer(inputs)
        return tape.gradient(outputs, [inputs] + layer.trainable_weights,
                             output_gradients=grad_outputs)

    return layer_step


def run(step):
    import tensorflow as tf

    return [g.numpy() for g in tf.nest.flatten(step())]


def median_time(step, repeats):
    run(step)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(step)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def proc_status_mb(key):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"{key} not in /proc/self/status")


def memory_worker(implementation, shape):
    """Runs in a fresh interpreter: prints the peak-memory growth of one step, in MB."""
    step = build_step(implementation, shape)
    run(step)
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    baseline = proc_status_mb("VmRSS")
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    run(step)
    print(json.dumps({"growth_mb": proc_status_mb("VmHWM") - baseline}))


def peak_memory_growth(implementation, shape):
    command = [sys.executable, os.path.abspath(__file__), "--memory-worker", implementation,
               "--shapes", ",".join(map(str, shape))]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    return json.loads(result.stdout.strip().splitlines()[-1])["growth_mb"]


def torchvision_time(torch_python, shape, repeats):
    batch, depth, height, width, channels, filters = shape
    threads = os.cpu_count()
    result = subprocess.run(
        [torch_python, "-c", TORCH_SCRIPT, *map(str, (batch, depth, height, width, channels,
                                                       filters, threads, repeats))],
        capture_output=True, text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def per_frame_deform_step(shape, seed=0):
    """deform_conv3d doing torchvision's per-frame 2D work: a (1, 3, 3) kernel, dt = 0."""
    import numpy as np
    import tensorflow as tf

    from models.deform_conv3d_ops import deform_conv3d

    batch, depth, height, width, channels, filters = shape
    rng = np.random.default_rng(seed)
    inputs = tf.constant(rng.normal(size=(batch, depth, height, width, channels)), tf.float32)
    kernel = tf.constant(rng.normal(scale=0.05, size=(1, 3, 3, channels, filters)), tf.float32)
    offsets = rng.normal(size=(batch, depth, height, width, 9, 3))
    offsets[..., 0] = 0.0
    offsets = tf.constant(offsets.reshape(batch, depth, height, width, 27), tf.float32)
    grad_outputs = tf.constant(rng.normal(size=(batch, depth, height, width, filters)), tf.float32)

    @tf.function
    def step():
        watched = [inputs, offsets, kernel]
        with tf.GradientTape() as tape:
            tape.watch(watched)
            outputs = deform_conv3d(inputs, offsets, kernel, padding="same")
        return tape.gradient(outputs, watched, output_gradients=grad_outputs)

    return step


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", default=DEFAULT_SHAPES,
                        help="B,D,H,W,C,F of each configuration (kernel 3, 'same').")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    parser.add_argument("--torch-python", default=os.environ.get("DEFORM_BENCH_TORCH_PYTHON"),
                        help="interpreter with torch + torchvision for the comparison row")
    parser.add_argument("--memory-worker", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    shapes = [parse_shape(text) for text in args.shapes]
    if args.memory_worker:
        memory_worker(args.memory_worker, shapes[0])
        return 0

    print("shape B,D,H,W,C->F   | what            | fwd+bwd median s | ratio | peak growth MB | ratio")
    print("-" * 98)
    for shape in shapes:
        label = "{},{},{},{},{}->{}".format(*shape)
        for deform, baseline in (("deform_op", "conv_op"), ("deform_layer", "conv_layer")):
            base_time = median_time(build_step(baseline, shape), args.repeats)
            deform_time = median_time(build_step(deform, shape), args.repeats)
            if args.no_memory:
                memory = ("-", "-", "-")
            else:
                base_mem = peak_memory_growth(baseline, shape)
                deform_mem = peak_memory_growth(deform, shape)
                memory = (f"{base_mem:.1f}", f"{deform_mem:.1f}", f"{deform_mem / base_mem:.2f}x")
            print(f"{label:<21}| {baseline:<15} | {base_time:16.3f} |       | {memory[0]:>14} |")
            print(f"{label:<21}| {deform:<15} | {deform_time:16.3f} | "
                  f"{deform_time / base_time:4.1f}x | {memory[1]:>14} | {memory[2]}")
        if args.torch_python and os.path.exists(args.torch_python):
            ours = median_time(per_frame_deform_step(shape), args.repeats)
            theirs = torchvision_time(args.torch_python, shape, args.repeats)
            print(f"{label:<21}| tv deform_conv2d | {theirs['median']:16.3f} |       |"
                  f"                | torch {theirs['torch']}, torchvision {theirs['torchvision']}")
            print(f"{label:<21}| ours (1,3,3)    | {ours:16.3f} | "
                  f"{theirs['median'] / ours:4.1f}x faster than torchvision")
        else:
            print(f"{label:<21}| torchvision row skipped (no --torch-python)")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
