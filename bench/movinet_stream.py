"""MoViNet stream latency per frame on this CPU: Keras (`MovinetStream`) and LiteRT.

    python bench/movinet_stream.py --model movinet_a0_stream --size 172 --frames 30

Builds the stream model (fresh weights: latency does not depend on them), feeds `--frames`
random frames one at a time after two warm-up frames, and prints milliseconds per frame and
frames per second for Keras and for the LiteRT flatbuffer (builtin ops, `--threads` threads;
Model Garden's README quotes 16 ms a frame for A0-stream at 172x172 on one x86 core), plus the
largest relative difference of their logits over the frames. docs/BENCHMARKS.md keeps results.
"""

import argparse
import sys
import time
from pathlib import Path

import keras
import numpy as np

# The repository before this folder, whose bench/models.py would shadow the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import build_model  # noqa: E402
from models.movinet import MovinetStream  # noqa: E402
from models.movinet_export import LiteRTStream, stream_to_litert  # noqa: E402


def time_stream(stream, frames, states):
    for frame in frames[:2]:  # warm-up
        _, states = stream(frame, states)
    all_logits = []
    start = time.perf_counter()
    for frame in frames[2:]:
        logits, states = stream(frame, states)
        all_logits.append(keras.ops.convert_to_numpy(logits))
    seconds = (time.perf_counter() - start) / (len(frames) - 2)
    return seconds, np.stack(all_logits)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="movinet_a0_stream")
    parser.add_argument("--size", type=int, default=172)
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--classes", type=int, default=600)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    model = build_model(args.model, args.classes, (args.frames, args.size, args.size, 3))
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (1, 1, args.size, args.size, 3), dtype=np.uint8) for _ in range(args.frames + 2)]
    keras_stream = MovinetStream(model)
    keras_seconds, keras_logits = time_stream(keras_stream, frames, keras_stream.init_states())
    start = time.perf_counter()
    flatbuffer = stream_to_litert(model)
    convert_seconds = time.perf_counter() - start
    litert = LiteRTStream(flatbuffer, num_threads=args.threads)
    litert_seconds, litert_logits = time_stream(litert, frames, litert.init_states())
    difference = float(np.max(np.abs(litert_logits - keras_logits)) / np.max(np.abs(keras_logits)))
    print(f"{args.model} at {args.size}x{args.size}, {args.frames} frames, {args.classes} classes; "
          f"LiteRT file {len(flatbuffer) / 1e6:.1f} MB, converted in {convert_seconds:.0f} s")
    print(f"{'runtime':<22} {'ms/frame':>9} {'frames/s':>9}")
    print(f"{'Keras (MovinetStream)':<22} {1000 * keras_seconds:>9.1f} {1 / keras_seconds:>9.1f}")
    print(f"{f'LiteRT ({args.threads} thread)':<22} {1000 * litert_seconds:>9.1f} {1 / litert_seconds:>9.1f}")
    print(f"largest relative logit difference LiteRT vs Keras over the frames: {difference:.1e}")


if __name__ == "__main__":
    main()
