"""MoViNet parity with TF Model Garden beyond the committed A0 fixtures: A1, A2 (and A0 again).

Two steps, two environments (tf-models-official pins its own TensorFlow):

    /work/venvs/tfm/bin/python bench/make_movinet_fixtures.py --models a0 a1 a2 --out /tmp/movinet_parity
    python bench/movinet_parity.py /tmp/movinet_parity

For every `<name>.tar.gz` checkpoint there, it builds our model from it with `build_model(...,
weights=)`, compares the logits of the recorded clip with Model Garden's, and for the stream
variants also the logits after feeding the clip one frame at a time through `MovinetStream`.
Prints one row per model; docs/BENCHMARKS.md keeps the figures.
"""

import argparse
import sys
import json
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

# The repository before this folder, whose bench/models.py would shadow the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import build_model  # noqa: E402
from models.movinet import MovinetStream  # noqa: E402


def relative_error(actual, expected):
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", help="the --out directory of bench/make_movinet_fixtures.py")
    args = parser.parse_args()
    root = Path(args.directory)
    meta = json.loads((root / "parity.json").read_text())
    arrays = dict(np.load(root / "parity.npz"))
    clip = arrays["clip"]
    print(f"clip {clip.shape}, {meta['num_classes']} classes, Model Garden {meta['tf_models_official']}")
    print(f"{'model':<20} {'parameters':>10} {'max |diff|':>11} {'relative':>9} {'stream rel.':>11} {'ms/clip':>8}")
    with tempfile.TemporaryDirectory() as scratch:
        for archive in sorted(root.glob("*.tar.gz")):
            name = archive.name[: -len(".tar.gz")]
            with tarfile.open(archive) as tar:
                tar.extractall(scratch, filter="data")
            model = build_model(name, meta["num_classes"], clip.shape[1:], weights=str(Path(scratch) / name / "ckpt"))
            logits = np.asarray(model(clip, training=False))
            start = time.perf_counter()
            model(clip, training=False)
            milliseconds = 1000 * (time.perf_counter() - start)
            stream_error = "-"
            if name.endswith("_stream"):
                stream = MovinetStream(model)
                states = stream.init_states()
                for t in range(clip.shape[1]):
                    frame_logits, states = stream(clip[:, t:t + 1], states)
                stream_error = f"{relative_error(np.asarray(frame_logits), arrays[name]):.1e}"
            expected = arrays[name]
            print(f"{name:<20} {meta['parameters_at_600_classes'][name]:>10} "
                  f"{np.max(np.abs(logits - expected)):>11.2e} {relative_error(logits, expected):>9.1e} "
                  f"{stream_error:>11} {milliseconds:>8.0f}")


if __name__ == "__main__":
    main()
