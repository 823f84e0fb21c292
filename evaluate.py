"""Evaluate a trained run with multi-view testing, or export it as a SavedModel.

    python evaluate.py --run-dir runs/demo/20260101-120000 [--split test] [--views 10x3]
                       [--out FILE.json] [--batch-size 8]
    python evaluate.py --run-dir runs/demo/20260101-120000 --export

Averages the softmax over C temporal clips x S spatial crops of every video (default: the
run's evaluate.views, 10x3) with the run's own preprocessing, then reports top-1, top-5,
mean class accuracy and clip- vs video-level accuracy. Writes FILE.json (default
RUN_DIR/evaluation/<split>-<CxS>.json), FILE-per_class.csv and FILE-confusion.png; see
docs/EVALUATION.md. A multi-label run averages the sigmoid scores instead and reports mean
average precision and F1, with FILE-per_class.csv holding each class's AP (no confusion
matrix). `--export` writes RUN_DIR/export/ (a SavedModel) and does not evaluate.
Mistakes print one line `error: ...` and exit 2.
"""

import argparse
import contextlib
import os
import sys

from core.disk_full import no_space_left
# Importing `training` turns oneDNN on before TensorFlow loads (core.tensorflow_env).
from core.errors import UserError
from data_prep.verify import corrupted_data_error
from data_prep.workers import ITEM_TIMEOUT_SECONDS
from training.cli import import_tensorflow, run_cli
from training.run_dir import open_trained_run
from training.views import parse_views


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Multi-view evaluation of a trained run (or --export it as a SavedModel).")
    parser.add_argument("--run-dir", required=True, help="a run directory written by train.py")
    parser.add_argument("--split", help="split of the run's data (default: its test split)")
    parser.add_argument("--views", help="CLIPSxCROPS, e.g. 10x3 (default: the run's "
                                        "evaluate.views)")
    parser.add_argument("--out", help="the JSON summary (default RUN_DIR/evaluation/"
                                      "<split>-<views>.json); CSV and PNG go beside it")
    parser.add_argument("--batch-size", type=int, default=8, help="views per forward pass")
    parser.add_argument("--workers", type=int,
                        help="processes decoding the videos again for views other than the "
                             "stored ones (default: every core)")
    parser.add_argument("--item-timeout", type=float, default=ITEM_TIMEOUT_SECONDS,
                        metavar="SECONDS",
                        help="items decoded again: skip one whose decoding takes longer (a "
                             f"hung decoder; {ITEM_TIMEOUT_SECONDS})")
    parser.add_argument("--export", action="store_true",
                        help="only write RUN_DIR/export/ (SavedModel) from model.keras")
    return parser.parse_args(argv)


def _headline(results):
    return (f"split {results['split']}, views {results['views']} ({results['source']}), "
            f"{results['videos']} videos, {results['clips']} views scored"
            + (f", {len(results['skipped'])} skipped" if results["skipped"] else ""))


def format_table(results, rows):
    """A readable summary: the headline metrics, then one row per class (`per_class_rows`)."""
    k = results["top5_k"]
    lines = [
        _headline(results),
        "",
        f"  {'video top-1':<24}{results['top1']:8.4f}",
        f"  {f'video top-{k}':<24}{results['top5']:8.4f}",
        f"  {'mean class accuracy':<24}{results['mean_class_accuracy']:8.4f}",
        f"  {'clip top-1 (one view)':<24}{results['clip_top1']:8.4f}",
        "",
    ]
    width = max(len("class"), *(len(row["class"]) for row in rows))
    lines.append(f"  {'id':>3}  {'class':<{width}}  {'videos':>6}  {'accuracy':>8}  "
                 "most confused with")
    for row in rows:
        accuracy = f"{row['accuracy']:.4f}" if row["accuracy"] != "" else "-"
        lines.append(f"  {row['class_id']:>3}  {row['class']:<{width}}  {row['videos']:>6}  "
                     f"{accuracy:>8}  {row['most_confused_with']}")
    return "\n".join(line.rstrip() for line in lines)


def format_multi_label_table(results, rows):
    """The headline metrics of a multi-label run, then each class's average precision."""
    lines = [
        _headline(results),
        "",
        f"  {'mean average precision':<28}{results['mean_average_precision']:8.4f}",
        f"  {'micro F1 @ ' + str(results['threshold']):<28}{results['micro_f1']:8.4f}",
        f"  {'macro F1 @ ' + str(results['threshold']):<28}{results['macro_f1']:8.4f}",
        f"  {'clip mAP (one view)':<28}{results['clip_mean_average_precision']:8.4f}",
        "",
    ]
    width = max(len("class"), *(len(row["class"]) for row in rows))
    lines.append(f"  {'id':>3}  {'class':<{width}}  {'videos':>6}  {'AP':>8}")
    for row in rows:
        value = f"{row['average_precision']:.4f}" if row["average_precision"] != "" else "-"
        lines.append(f"  {row['class_id']:>3}  {row['class']:<{width}}  {row['videos']:>6}  "
                     f"{value:>8}")
    return "\n".join(line.rstrip() for line in lines)


def report_multi_label(evaluation, results, class_names, paths):
    """Writes and prints a multi-label evaluation (JSON and per-class AP CSV)."""
    evaluation.write_multi_label_evaluation(results, class_names, paths)
    print(format_multi_label_table(results, evaluation.multi_label_rows(results, class_names)))
    print("\nwrote " + ", ".join(paths[:2]))
    return 0


@contextlib.contextmanager
def named_full_disk(directory):
    """A full disk inside the block (ENOSPC anywhere in the error's chain, TensorFlow's
    errors too) becomes one line `no space left on <path>` (core.disk_full); every file
    evaluate writes is written atomically, so none is left half written."""
    try:
        yield
    except Exception as error:
        named = no_space_left(error, directory, None)
        if named is None:
            raise
        raise named from None


def run(args):
    # TensorFlow loads only now, so that --help and argument mistakes answer at once.
    import_tensorflow()
    from training import evaluation
    from training.export import export_run
    from training.scoring import load_run_model

    if args.batch_size < 1:
        raise UserError(f"Expected --batch-size >= 1. Received: --batch-size {args.batch_size}")
    if args.workers is not None and args.workers < 1:
        raise UserError(f"Expected --workers >= 1. Received: --workers {args.workers}")
    if not args.item_timeout > 0:
        raise UserError(f"Expected --item-timeout > 0 seconds. Received: --item-timeout "
                        f"{args.item_timeout:g}")
    trained = open_trained_run(args.run_dir)
    if args.export:
        with named_full_disk(trained.run_dir.path):
            print(f"exported {export_run(trained)}")
        return 0
    views = parse_views(args.views or evaluation.default_views(trained))
    split = args.split or trained.info.get("test_split", "test")
    model = load_run_model(trained)
    try:
        results = evaluation.evaluate_run(trained, model, split, views,
                                          batch_size=args.batch_size, workers=args.workers,
                                          show_progress=sys.stderr.isatty(),
                                          item_timeout=args.item_timeout)
    except Exception as error:  # a damaged shard: named (data_prep.verify), not a traceback
        named = corrupted_data_error(error, trained.prepared_dir, trained.manifest, (split,))
        if named is None:
            raise
        raise named from None
    paths = evaluation.output_paths(trained, split, results["views"], args.out)
    if "mean_average_precision" in results:
        with named_full_disk(os.path.dirname(os.path.abspath(paths[0]))):
            return report_multi_label(evaluation, results, trained.class_names, paths)
    with named_full_disk(os.path.dirname(os.path.abspath(paths[0]))):
        evaluation.write_evaluation(results, trained.class_names, paths)
    print(format_table(results, evaluation.per_class_rows(results["confusion_matrix"],
                                                          trained.class_names)))
    print("\nwrote " + ", ".join(paths))
    return 0


def main(argv=None):
    return run_cli(run, parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
