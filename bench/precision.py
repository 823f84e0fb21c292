"""What bfloat16 buys: one training step in float32 and in bfloat16, TensorFlow and PyTorch.

Workloads (batch 4 of 16x112x112x3 clips, 101 classes, SGD with momentum 0.9, one step =
forward, loss, backward, update):
- small3d, r3d_18, r2plus1d_18, and r2plus1d_18 with stage 4 deformable (`deformable_stages:
  [4]`, the spatial 1x3x3 factors become DeformConv3D);
- ours: `models.build_model` + `train_on_batch` (the step `fit` runs), float32 or
  `mixed_bfloat16` as `train.mixed_precision` sets it (`training.precision`: float32 logits);
- PyTorch: torchvision's `r3d_18` / `r2plus1d_18`, a port of small3d (same layers), and for
  the deformable model torchvision's `deform_conv2d` applied frame by frame in layer4's
  spatial factors (torch has no 3-D deformable convolution: the nearest equivalent, not the
  same op); float32, or the step under `torch.autocast("cpu", torch.bfloat16)`.
Every implementation/precision runs in a fresh interpreter, rounds alternate them (TF float32,
TF bf16, torch float32, torch bf16, then again), so a change in the machine's load hits all
alike; a process reports the median of its timed steps per model, the table the median over
rounds, with the load average; beside the wall time each process reports its CPU time per
step (all threads), which other processes on the machine inflate less. Torch runs with
`torch.set_num_threads(os.cpu_count())` (or `--threads`) in a venv of its own
(`--torch-python` or TORCH_PYTHON), never a dependency of this project.

    python bench/precision.py [--rounds 3] [--steps 3] [--models r3d_18,...]
        [--torch-python /work/venvs/torch/bin/python] [--keras-bn] [--xla] [--threads N]
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
CLIP_SHAPE = (4, 16, 112, 112, 3)  # (B, F, H, W, band)
NUM_CLASSES = 101
MODELS = {
    # name: (build_model name, options)
    "small3d": ("small3d", {}),
    "r3d_18": ("r3d_18", {}),
    "r2plus1d_18": ("r2plus1d_18", {}),
    "r2plus1d_18_deform4": ("r2plus1d_18", {"deformable_stages": [4]}),
}
BF16_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx512_fp16")


def tensorflow_worker(models, precision, steps, xla, keras_batch_norm, threads):
    """In a fresh interpreter: each model's median step time under one Keras policy.

    `keras_batch_norm`: build the models with Keras's own BatchNormalization instead of
    models.batch_norm.FusedBatchNormalization (what the models used before), to measure it.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, REPO)
    from core.tensorflow_env import configure_tensorflow

    configure_tensorflow()
    import keras
    import numpy as np
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)

    from core.tensorflow_env import onednn_enabled
    import models as model_lib
    from models import resnet3d, small3d

    if keras_batch_norm:
        resnet3d.FusedBatchNormalization = small3d.FusedBatchNormalization = \
            keras.layers.BatchNormalization
    from training.precision import with_float32_logits

    rng = np.random.default_rng(0)
    clips = rng.integers(0, 256, CLIP_SHAPE, dtype=np.uint8)
    labels = np.eye(NUM_CLASSES, dtype="float32")[rng.integers(0, NUM_CLASSES, CLIP_SHAPE[0])]
    seconds = {}
    for name in models:
        builder, options = MODELS[name]
        keras.backend.clear_session()
        keras.mixed_precision.set_global_policy(precision)
        keras.utils.set_random_seed(0)
        model = with_float32_logits(
            model_lib.build_model(builder, NUM_CLASSES, CLIP_SHAPE[1:], **options))
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                      loss=keras.losses.CategoricalCrossentropy(from_logits=True),
                      jit_compile=xla)

        def step():
            model.train_on_batch(clips, labels)  # returns the loss as numpy: the step is done

        seconds[name] = time_steps(step, 2, steps)
    keras.mixed_precision.set_global_policy("float32")
    return {"onednn": onednn_enabled(), "version": f"tensorflow {tf.__version__}, keras "
                                                   f"{keras.__version__}", "seconds": seconds}


def _torch_small3d(torch, num_classes):
    """small3d (models/small3d.py) in torch: frame differences, 5 x (conv, BN, ReLU, pool)."""
    nn = torch.nn
    groups = ((16, (1, 2, 2), None), (32, (1, 1, 1), (1, 2, 2)), (64, (1, 1, 1), (2, 2, 2)),
              (128, (1, 1, 1), (2, 2, 2)), (128, (1, 1, 1), None))

    class Small3D(nn.Module):
        def __init__(self):
            super().__init__()
            layers, channels = [], 3
            for filters, stride, pool in groups:
                layers += [nn.Conv3d(channels, filters, 3, stride, 1, bias=False),
                           nn.BatchNorm3d(filters), nn.ReLU(inplace=True)]
                if pool:
                    layers.append(nn.MaxPool3d(pool, ceil_mode=True))
                channels = filters
            self.features = nn.Sequential(*layers)
            self.dropout = nn.Dropout(0.2)
            self.fc = nn.Linear(channels, num_classes)

        def forward(self, x):
            x = x[:, :, 1:] - x[:, :, :-1]
            x = self.features(x).mean(dim=(2, 3, 4))
            return self.fc(self.dropout(x))

    return Small3D()


def _torch_deformable_layer4(torch, torchvision, model):
    """layer4's spatial 1x3x3 factors as torchvision deform_conv2d, frame by frame."""
    nn = torch.nn

    class FrameDeformConv(nn.Module):
        def __init__(self, conv):
            super().__init__()
            self.stride = conv.stride[1:]
            self.padding = conv.padding[1:]
            self.weight = nn.Parameter(conv.weight.detach()[:, :, 0].clone())
            self.offset = nn.Conv2d(conv.in_channels, 18, 3, self.stride, self.padding)
            nn.init.zeros_(self.offset.weight)
            nn.init.zeros_(self.offset.bias)

        def forward(self, x):
            b, c, t, h, w = x.shape
            frames = x.transpose(1, 2).reshape(b * t, c, h, w)
            offsets = self.offset(frames)
            # Its CPU kernel has no bfloat16: float32 inside, as our DeformConv3D does.
            with torch.autocast("cpu", enabled=False):
                out = torchvision.ops.deform_conv2d(
                    frames.float(), offsets.float(), self.weight.float(), stride=self.stride,
                    padding=self.padding).to(x.dtype)
            return out.reshape(b, t, *out.shape[1:]).transpose(1, 2)

    for block in model.layer4:
        for conv in (block.conv1, block.conv2):
            conv[0][0] = FrameDeformConv(conv[0][0])
    return model


def torch_worker(models, precision, steps, threads):
    import torch
    import torchvision

    torch.set_num_threads(threads or os.cpu_count())
    torch.manual_seed(0)
    b, f, h, w, c = CLIP_SHAPE
    clips = torch.rand(b, c, f, h, w)
    labels = torch.randint(0, NUM_CLASSES, (b,))
    seconds = {}
    for name in models:
        if name == "small3d":
            model = _torch_small3d(torch, NUM_CLASSES)
        else:
            model = getattr(torchvision.models.video, MODELS[name][0])(num_classes=NUM_CLASSES)
            if name.endswith("_deform4"):
                model = _torch_deformable_layer4(torch, torchvision, model)
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        loss_fn = torch.nn.CrossEntropyLoss()

        def step():
            optimizer.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = loss_fn(model(clips), labels)
            loss.backward()
            optimizer.step()
            loss.item()

        seconds[name] = time_steps(step, 2, steps)
    return {"version": f"torch {torch.__version__}, torchvision {torchvision.__version__}",
            "threads": torch.get_num_threads(), "seconds": seconds}


def time_steps(step, warmup, steps):
    """Median seconds of `steps` calls after `warmup` untimed ones (the first traces):
    wall time, and the process's CPU time (all its threads), which a loaded machine inflates
    less than the wall time."""
    for _ in range(warmup):
        step()
    wall, cpu = [], []
    for _ in range(steps):
        start, start_cpu = time.perf_counter(), time.process_time()
        step()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def cpu_flags():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
            return set()
    except OSError:
        return set()


def cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load():
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def run_worker(python, kind, precision, models, steps, options=(), threads=0):
    command = [python, os.path.abspath(__file__), "--worker", kind, "--precision", precision,
               "--models", ",".join(models), "--steps", str(steps), "--threads", str(threads),
               *options]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        raise RuntimeError(f"{kind} {precision} worker failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (medians)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per model and process")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated, of: "
                        + ", ".join(MODELS))
    parser.add_argument("--torch-python", default=os.environ.get("TORCH_PYTHON"),
                        help="python of a venv with torch and torchvision (or TORCH_PYTHON)")
    parser.add_argument("--xla", action="store_true",
                        help="also time our bfloat16 step compiled with XLA (jit_compile)")
    parser.add_argument("--keras-bn", action="store_true",
                        help="also time ours with Keras's BatchNormalization (not fused)")
    parser.add_argument("--threads", type=int, default=0,
                        help="threads per process (TF intra- and inter-op, torch); 0 = cores")
    parser.add_argument("--worker", choices=["tensorflow", "torch"], help=argparse.SUPPRESS)
    parser.add_argument("--precision", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    models = [name for name in args.models.split(",") if name]
    unknown = [name for name in models if name not in MODELS]
    if unknown:
        parser.error(f"unknown model {unknown[0]}; choose among {', '.join(MODELS)}")
    if args.worker == "tensorflow":
        print(json.dumps(tensorflow_worker(models, args.precision, args.steps, args.xla,
                                           args.keras_bn, args.threads)))
        return 0
    if args.worker == "torch":
        print(json.dumps(torch_worker(models, args.precision, args.steps, args.threads)))
        return 0

    runs = [("TF float32", sys.executable, "tensorflow", "float32", ()),
            ("TF bf16", sys.executable, "tensorflow", "mixed_bfloat16", ())]
    if args.keras_bn:
        runs += [("TF f32 KerasBN", sys.executable, "tensorflow", "float32", ("--keras-bn",)),
                 ("TF bf16 KerasBN", sys.executable, "tensorflow", "mixed_bfloat16",
                  ("--keras-bn",))]
    if args.xla:
        runs.append(("TF bf16 XLA", sys.executable, "tensorflow", "mixed_bfloat16", ("--xla",)))
    if args.torch_python:
        runs += [("torch float32", args.torch_python, "torch", "float32", ()),
                 ("torch bf16", args.torch_python, "torch", "bf16", ())]
    flags = cpu_flags()
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {cpu_model()}, "
          f"{os.cpu_count()} cores, load average {load()}")
    print("CPU flags: " + (" ".join(flag for flag in BF16_FLAGS if flag in flags) or "none of "
                           + " ".join(BF16_FLAGS)), flush=True)
    results = {label: [] for label, *_ in runs}
    for round_index in range(args.rounds):
        for label, python, kind, precision, options in runs:
            result = run_worker(python, kind, precision, models, args.steps, options, args.threads)
            results[label].append(result)
            times = "  ".join(f"{m} {s:.3f} (cpu {c:.3f})"
                              for m, (s, c) in result["seconds"].items())
            print(f"round {round_index + 1} {label:13s} {times}  (load {load()})", flush=True)
    for label, *_ in runs:
        first = results[label][0]
        extra = f"oneDNN {'on' if first['onednn'] else 'off'}" if "onednn" in first \
            else f"{first['threads']} threads"
        print(f"{label}: {first['version']}, {extra}")

    columns = [label for label, *_ in runs]
    ratios = [("TF f32/bf16", "TF float32", "TF bf16")]
    if args.keras_bn:
        ratios.append(("bf16 KerasBN/fused", "TF bf16 KerasBN", "TF bf16"))
    if args.xla:
        ratios.append(("bf16/XLA", "TF bf16", "TF bf16 XLA"))
    if args.torch_python:
        ratios += [("torch bf16/TF bf16", "torch bf16", "TF bf16"),
                   ("torch f32/TF f32", "torch float32", "TF float32")]
    for index, what in enumerate(("wall", "CPU")):
        medians = {label: {m: statistics.median(r["seconds"][m][index] for r in results[label])
                           for m in models} for label in results}
        header = (f"{'median ' + what + ' s/step, ' + str(args.rounds) + ' rounds':30s}"
                  + "".join(f"{c:>16s}" for c in columns)
                  + "".join(f"{r:>20s}" for r, *_ in ratios))
        print(header)
        print("-" * len(header))
        for m in models:
            line = f"{m:30s}" + "".join(f"{medians[c][m]:16.3f}" for c in columns)
            line += "".join(f"{medians[a][m] / medians[b][m]:19.2f}x" for _, a, b in ratios)
            print(line)
    print(f"load average at the end: {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
