"""Makes the MoViNet parity fixtures with TF Model Garden itself (tests/data/movinet/).

Run with the separate reference environment, never the project's (tf-models-official pins its
own TensorFlow and Keras 2):

    python3.11 -m venv /work/venvs/tfm && /work/venvs/tfm/bin/pip install tf-models-official==2.20.0
    /work/venvs/tfm/bin/python bench/make_movinet_fixtures.py                 # A0, committed
    /work/venvs/tfm/bin/python bench/make_movinet_fixtures.py --models a1 a2 \\
        --out /tmp/movinet_parity                                             # for bench/movinet_parity.py
    /work/venvs/tfm/bin/python bench/make_movinet_fixtures.py --stream-conv-type 3d_2plus1d \\
        --out /tmp/movinet_3d_2plus1d       # stream checkpoints in Model Garden's training layout

For each model (base: Model Garden's defaults; stream: the README's causal (2+1)D settings) it
builds `MovinetClassifier`, gives every variable random non-trivial values (batch-norm
statistics, the zero-initialised rezero scales included), writes a `tf.train.Checkpoint`
(`<name>/ckpt.index`, `<name>/ckpt.data-*`, packed in `<name>.tar.gz`), and records the logits of a fixed random uint8 clip (fed as clip / 255, the
[0, 1] input Model Garden expects) in `parity.npz`, plus every variant's parameter count at 600
classes in `parity.json`. Values are multiples of 1/8 of a per-variable power-of-two scale, so
the checkpoints compress well in git.
"""

import argparse
import json
import os
import tarfile
import tempfile
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from official.projects.movinet.modeling import movinet, movinet_model  # noqa: E402

CLIP_SHAPE = (1, 8, 64, 64, 3)
NUM_CLASSES = 10
SEED = 22


def build(model_id, stream, num_classes, stream_conv_type="2plus1d"):
    if stream:
        backbone = movinet.Movinet(model_id=model_id, causal=True, conv_type=stream_conv_type,
                                   se_type="2plus3d", activation="hard_swish",
                                   gating_activation="hard_sigmoid",
                                   use_positional_encoding=False, use_external_states=False)
    else:
        backbone = movinet.Movinet(model_id=model_id, causal=False, use_external_states=False)
    model = movinet_model.MovinetClassifier(backbone, num_classes=num_classes, output_states=False)
    model.build(CLIP_SHAPE)
    return model


def randomise(model, rng):
    for variable in model.variables:
        name = variable.name
        shape = variable.shape.as_list()
        if "moving_variance" in name or "gamma" in name:
            value = rng.integers(4, 13, size=shape) / 8.0          # 0.5 .. 1.5
        elif "rezero" in name or name.endswith("scale:0"):
            value = rng.integers(4, 9, size=shape) / 8.0           # 0.5 .. 1.0, not Model Garden's 0
        elif "moving_mean" in name or "beta" in name or "bias" in name:
            value = rng.integers(-2, 3, size=shape) / 16.0
        else:  # kernels: He-like scale rounded to a power of two
            fan_in = int(np.prod(shape[:-1])) if "depthwise" not in name else int(np.prod(shape[:-2]))
            if len(shape) == 5 and shape[-2] == 1:  # a grouped (depthwise) Conv3D kernel
                fan_in = int(np.prod(shape[:3]))
            scale = 2.0 ** np.round(np.log2(np.sqrt(2.0 / max(fan_in, 1))))
            value = rng.integers(-12, 13, size=shape) / 8.0 * scale
        variable.assign(value.astype(np.float32))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["a0"], choices=["a0", "a1", "a2"])
    parser.add_argument("--stream-conv-type", default="2plus1d", choices=["2plus1d", "3d_2plus1d"],
                        help="the stream checkpoints' layout: '3d_2plus1d' is the one Model Garden trains in")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "tests/data/movinet"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    clip = rng.integers(0, 256, size=CLIP_SHAPE, dtype=np.uint8)
    arrays = {"clip": clip}
    counts = {}
    for model_id in ("a0", "a1", "a2"):
        for stream in (False, True):
            name = f"movinet_{model_id}{'_stream' if stream else ''}"
            counts[name] = int(build(model_id, stream, 600).count_params())
            if model_id not in args.models:
                continue
            model = build(model_id, stream, NUM_CLASSES, args.stream_conv_type)
            randomise(model, rng)
            logits = model(tf.constant(clip, tf.float32) / 255.0, training=False).numpy()
            arrays[name] = logits
            with tempfile.TemporaryDirectory() as scratch:
                tf.train.Checkpoint(model=model).write(str(Path(scratch) / "ckpt"))
                # gzip: random checkpoints of 8-18 MB shrink to a fifth (values on a grid).
                with tarfile.open(out / f"{name}.tar.gz", "w:gz") as archive:
                    for file in sorted(Path(scratch).glob("ckpt.*")):
                        archive.add(file, arcname=f"{name}/{file.name}")
            print(f"{name}: {model.count_params()} parameters, logits {logits[0, :4]}")
    np.savez(out / "parity.npz", **arrays)
    (out / "parity.json").write_text(json.dumps({
        "tf_models_official": "2.20.0", "tensorflow": tf.__version__, "clip_shape": CLIP_SHAPE,
        "num_classes": NUM_CLASSES, "seed": SEED, "stream_conv_type": args.stream_conv_type,
        "parameters_at_600_classes": counts,
    }, indent=1) + "\n")


if __name__ == "__main__":
    main()
