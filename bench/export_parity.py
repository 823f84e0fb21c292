"""Export parity and latency: LiteRT float, LiteRT int8 and ONNX exports of finished runs,
each checked on the run's whole test split (export.py's own check), one table.

    python bench/export_parity.py --run-dirs runs/demo/small3d runs/demo/r3d_18 ...
        [--formats litert litert_int8 onnx saved_model] [--check-clips 100000] [--threads N]

Writes the exports under each RUN_DIR/export/ (as export.py does) and prints one row per
run and format: model, input, clips, max |dlogit|, top-1 agreement, top-1 accuracy of the
export and of Keras, latency per clip (median, batch 1) through the format's runtime,
whether TensorFlow was imported there, file size; then the machine, date and load. The
results, with date, machine and load, are in docs/DEPLOY.md ("Measured").
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core.tensorflow_env import import_tensorflow_quietly  # noqa: E402


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dirs", nargs="+", required=True)
    parser.add_argument("--formats", nargs="+", default=["litert", "litert_int8", "onnx"],
                        choices=["saved_model", "litert", "litert_int8", "onnx"])
    parser.add_argument("--check-clips", type=int, default=100000,
                        help="held-out clips per check (default: the whole test split)")
    parser.add_argument("--threads", type=int, default=None)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import_tensorflow_quietly()
    from training.export import export_format
    from training.run_dir import open_trained_run

    rows = []
    for run_dir in args.run_dirs:
        run = open_trained_run(run_dir)
        for fmt in args.formats:
            kind, _, quantize = fmt.partition("_")
            if kind == "saved":
                kind, quantize = "saved_model", ""
            started = time.perf_counter()
            _, check = export_format(run, kind, quantize=quantize or None,
                                     check_clips=args.check_clips, num_threads=args.threads)
            seconds = time.perf_counter() - started
            shape = "x".join(str(v) for v in run.input_shape)
            rows.append((run.info.get("name", ""), os.path.basename(os.path.normpath(run_dir)),
                         shape, check, seconds))
            print(f"{rows[-1][1]} {fmt}: done in {seconds:.0f} s", file=sys.stderr, flush=True)
    print("| run | input | format | clips | max abs dlogit | top-1 agreement | top-1 export "
          "(Keras) | ms/clip (median) | runtime | TF imported | MB | export + check s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for _, run_name, shape, check, seconds in rows:
        accuracy = (f"{100 * check['export_top1_accuracy']:.1f} % "
                    f"({100 * check['keras_top1_accuracy']:.1f} %)"
                    if "export_top1_accuracy" in check else "-")
        print(f"| {run_name} | {shape} | {check['format']} | {check['clips']} | "
              f"{check['max_abs_logit_difference']:.1e} | "
              f"{100 * check['top1_agreement']:.1f} % | {accuracy} | "
              f"{check['latency_ms_median']:.2f} | {check['runtime']} | "
              f"{'yes' if check['tensorflow_imported'] else 'no'} | "
              f"{check['bytes'] / 1e6:.1f} | {seconds:.0f} |")
    last = rows[-1][3]
    print(f"\n{last['date']}, {last['machine']}, load average {last['load_average']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
