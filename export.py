"""Export a trained run for deployment, and check the export on the run's held-out clips.

    python export.py --run-dir runs/demo/20260101-120000 [--format saved_model|litert|onnx]
                     [--quantize int8] [--check-clips 256] [--calibration-clips 64]
                     [--threads N]

Writes under RUN_DIR/export/ (training/export.py): the SavedModel (saved_model.pb, ...),
model.tflite (LiteRT, builtin ops only), model_int8.tflite (--quantize int8, calibrated on
the run's training split) or model.onnx, and preprocessing.json (classes, frames, sampling,
resize and crop sizes, normalisation, label kind). Then runs the file through its own
runtime (LiteRT's interpreter, onnxruntime; in a process without TensorFlow) on the run's
test split and prints max |logit difference| against the Keras model, top-1 agreement and
latency per clip; the same figures go to <file>.check.json beside it. Exit code 1 when a
float export does not match (top-1 agreement below 100% or |dlogit| > 1e-4). See
docs/DEPLOY.md. Mistakes print one line `error: ...` and exit 2.
"""

import argparse
import sys

# Importing `training` turns oneDNN on before TensorFlow loads (core.tensorflow_env).
from training.cli import import_tensorflow, run_cli
from training.run_dir import open_trained_run

FORMATS = ("saved_model", "litert", "onnx")  # training.export.FORMATS, without TensorFlow


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Export a trained run (SavedModel, LiteRT or ONNX) and check it.")
    parser.add_argument("--run-dir", required=True, help="a run directory written by train.py")
    parser.add_argument("--format", default="saved_model", choices=FORMATS,
                        help="what to write under RUN_DIR/export/ (saved_model)")
    parser.add_argument("--quantize", choices=("int8",),
                        help="litert only: int8 post-training quantisation")
    parser.add_argument("--check-clips", type=int, default=256,
                        help="held-out clips (the run's test split) to check the export on "
                             "(256)")
    parser.add_argument("--calibration-clips", type=int, default=64,
                        help="--quantize int8: training clips to calibrate on (64)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads of the runtime for the latency (its default)")
    return parser.parse_args(argv)


def run(args):
    # TensorFlow loads only now, so that --help and argument mistakes answer at once.
    import_tensorflow()
    from training.export import export_format
    from training.export_check import format_check

    trained = open_trained_run(args.run_dir)
    path, check = export_format(trained, args.format, quantize=args.quantize,
                                check_clips=args.check_clips,
                                calibration_clips=args.calibration_clips,
                                num_threads=args.threads)
    print(f"exported {path}")
    print(format_check(check))
    return 1 if check["passed"] is False else 0


def main(argv=None):
    return run_cli(run, parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
