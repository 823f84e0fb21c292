"""torchvision parity: full-size torchvision video models loaded into ours, logits compared.

    /work/venv/bin/python bench/torchvision_parity.py --torch-python /work/torchvenv/bin/python \\
        --models r3d_18 mc3_18 r2plus1d_18

Needs a Python with torch + torchvision (not project dependencies) for the reference side:
this script re-runs itself there with `--make DIR`, which builds each named model from
`torchvision.models.video` with random weights, randomises every batch norm's weight, bias
and running statistics and the classifier (`make_torchvision_fixtures.randomise`, so a
mis-mapped tensor cannot hide behind 1/0 defaults), saves the state_dict in torch's zip
format and the legacy format, and writes fixed uint8 clips and torch's float32 eval-mode
logits. Then, in this project's Python, `build_model(name, 400,
..., weights=<file>)` loads each file (Kinetics statistics by default) and the maximum
relative logit error `max|ours - torch| / max|torch|` and top-1 agreement are printed.
Any name `torchvision.models.video` and `models.build_model` both know works (`s3d` too,
with 224-pixel clips).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
# Eval crops of torchvision's presets: 112 for the ResNets, 224 for S3D.
CLIP_SIZE = {"s3d": 224}
DEFAULT_CLIP_SIZE = 112


def clip_shape(name, batch, frames):
    size = CLIP_SIZE.get(name, DEFAULT_CLIP_SIZE)
    return (batch, frames, size, size, 3)


def make_reference(out_dir, names, batch, frames, seed):
    """Runs under torch: writes <name>.pth, <name>_legacy.pth, <name>.npz (clips, logits)."""
    import torch
    from torchvision.models import video

    # The fixtures' randomisation (this script's folder is on sys.path when it runs).
    from make_torchvision_fixtures import randomise

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    for name in names:
        model = randomise(getattr(video, name)(weights=None, num_classes=400), generator)
        clips = np.random.default_rng(seed).integers(0, 256, clip_shape(name, batch, frames), dtype=np.uint8)
        x = torch.from_numpy(clips).permute(0, 4, 1, 2, 3).float() / 255.0
        x = (x - torch.tensor(KINETICS_MEAN).view(1, 3, 1, 1, 1)) / torch.tensor(KINETICS_STD).view(1, 3, 1, 1, 1)
        with torch.no_grad():
            logits = model(x).numpy()
        torch.save(model.state_dict(), out_dir / f"{name}.pth")
        torch.save(model.state_dict(), out_dir / f"{name}_legacy.pth", _use_new_zipfile_serialization=False)
        np.savez(out_dir / f"{name}.npz", clips=clips, logits=logits)
        print(f"torch: {name} written", flush=True)


def compare(out_dir, names):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import keras

    from models import build_model

    rows = []
    for name in names:
        reference = np.load(out_dir / f"{name}.npz")
        clips, expected = reference["clips"], reference["logits"]
        for suffix, label in (("", "zip"), ("_legacy", "legacy")):
            path = out_dir / f"{name}{suffix}.pth"
            start = time.perf_counter()
            model = build_model(name, 400, clips.shape[1:], weights=path)
            load_s = time.perf_counter() - start
            logits = np.asarray(model(clips, training=False))
            error = float(np.abs(logits - expected).max() / np.abs(expected).max())
            top1 = bool((logits.argmax(-1) == expected.argmax(-1)).all())
            rows.append((name, label, path.stat().st_size / 2**20, load_s, error, top1))
            keras.backend.clear_session()
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["r3d_18", "mc3_18", "r2plus1d_18", "s3d"])
    parser.add_argument("--torch-python", default=os.environ.get("TORCH_PYTHON"),
                        help="a Python with torch + torchvision (default: $TORCH_PYTHON)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--make", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make:
        make_reference(args.make, args.models, args.batch, args.frames, args.seed)
        return
    if not args.torch_python:
        parser.error("--torch-python (or TORCH_PYTHON) must name a Python with torch and torchvision")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [args.torch_python, __file__, "--make", tmp, "--models", *args.models, "--batch", str(args.batch),
             "--frames", str(args.frames), "--seed", str(args.seed)],
            check=True,
        )
        rows = compare(Path(tmp), args.models)
    print(f"clips: batch {args.batch}, {args.frames} frames, uint8 random; float32; Kinetics statistics")
    print("model        | format | file MB | build+load s | max rel logit error | top-1 equal")
    for name, label, size_mb, load_s, error, top1 in rows:
        print(f"{name:<12} | {label:<6} | {size_mb:7.1f} | {load_s:12.1f} | {error:19.2e} | {top1}")
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
