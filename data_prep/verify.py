"""Find the shards of a prepared dataset that fail their CRC or do not parse, and name them.

TensorFlow reports a damaged TFRecord as `DataLossError: corrupted record at 81920` (or a
parse error), without the file: from inside training or evaluation a user cannot tell which
of hundreds of shards to redo. `find_corrupted_shards` reads every record of every shard of
the named splits, CRC-checked and parsed by the format's one parser (`shards.clip_parser`, v2:
`sequence_records.parse_sequence_record`), one
shard at a time; `corrupted_data_error` turns a TensorFlow data error met anywhere into
`UserError("corrupted record in <shard> (...)")` after such a scan, and `inspect --verify`
runs the scan on demand. Deleting a named shard and rerunning the same `prepare` command
rewrites it (prepare redoes missing shards only).

`python -m data_prep verify DIR [--repair]` scans a dataset the same way; `--repair`
(`repair_dataset`) rewrites the damaged shards by itself: it rebuilds the `prepare_dataset`
call from the manifest (its recorded source and parameters), checks that this call plans
exactly the shards already there (every whole shard's sidecar fingerprint matches, so
nothing whole is redone and nothing is prepared with other parameters), deletes each damaged
shard with its sidecar and the manifest, and runs the call: prepare's resume rewrites only
those shards, byte-identical to the first run when the source items are unchanged.
"""

import logging
import os

from core import storage
from core.errors import UserError
from data_prep.sequence_records import SEQUENCE_FORMAT_VERSION, parse_sequence_record
from data_prep.shards import clip_parser

_BATCH = 64
logger = logging.getLogger(__name__)


def verify_shard(path, manifest):
    """None if every record of the shard at `path` passes its CRC and parses, else a short
    reason (the record number and TensorFlow's first line)."""
    import tensorflow as tf

    if manifest.get("format_version") == SEQUENCE_FORMAT_VERSION:
        # v2: CRC and structure of every record; frames are decoded when a clip draws them.
        parse = lambda record: parse_sequence_record(record)["num_frames"]  # noqa: E731
    else:
        parse = clip_parser(manifest, with_item_index=True)
    records = 0
    try:
        dataset = tf.data.TFRecordDataset(path).map(parse).batch(_BATCH)
        for batch in dataset:
            records += int(tf.nest.flatten(batch)[0].shape[0])
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError,
            tf.errors.NotFoundError, tf.errors.OutOfRangeError) as error:
        text = (error.message or type(error).__name__).strip().splitlines()
        return f"after record {records}: {text[0][:200] if text else type(error).__name__}"
    return None


def find_corrupted_shards(prepared_dir, manifest, splits=None):
    """[(shard path, reason)] of every damaged shard of `splits` (default all), in order."""
    bad = []
    for split, info in manifest["splits"].items():
        if splits is not None and split not in splits:
            continue
        for name in info["shards"]:
            path = storage.join(str(prepared_dir), name)
            reason = verify_shard(path, manifest)
            if reason is not None:
                bad.append((path, reason))
    return bad


def is_data_error(error):
    """True if a TensorFlow data error (CRC, parse, decode) is in `error`'s chain."""
    import tensorflow as tf

    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, (tf.errors.DataLossError, tf.errors.InvalidArgumentError)):
            return True
        error = error.__cause__ or error.__context__
    return False


def corrupted_message(bad, prepared_dir):
    path, reason = bad[0]
    more = f"; {len(bad) - 1} more shard(s) damaged" if len(bad) > 1 else ""
    return (f"corrupted record in {path} ({reason}){more}. Delete the damaged shard(s) and "
            f"rerun the same prepare command to rewrite them (`python -m data_prep inspect "
            f"--verify {prepared_dir}` lists them all)")


def corrupted_data_error(error, prepared_dir, manifest, splits=None):
    """A UserError naming the damaged shard if `error` is a TensorFlow data error and a shard
    of `splits` is damaged; None otherwise (the error is something else)."""
    if not is_data_error(error):
        return None
    bad = find_corrupted_shards(prepared_dir, manifest, splits)
    return UserError(corrupted_message(bad, prepared_dir)) if bad else None


# --- repair -----------------------------------------------------------------------------------


def _sidecar_path(shard_path):
    return os.path.splitext(shard_path)[0] + ".json"


def _prepare_calls(manifest, spec, source):
    """Candidate `(parameters, prepare_dataset keyword arguments)` that may have written
    this manifest's shards, from what it records. `parameters` is the dict prepare
    fingerprints; v2 records the encoding prepare chose, not whether the user gave it, so
    both are candidates."""
    from data_prep.prepare import sensor_options, statistics_split_of, whole_item_parameters

    if manifest["format_version"] == SEQUENCE_FORMAT_VERSION:
        resize = manifest["resize"]
        # v2 with resize_short records no size (it keeps the aspect ratio): any size up to
        # resize_short plans the same shards.
        size = resize["size"] or resize["resize_short"]
        arguments = {"format": "v2", "frames": None, "size": size,
                     "resize_short": resize["resize_short"], "fps": manifest.get("fps"),
                     "max_frames": manifest.get("max_frames")}
        calls = []
        for encoding in (None, manifest.get("encoding")):
            parameters = whole_item_parameters(
                encoding, resize, manifest.get("fps"), manifest.get("max_frames"),
                sensor_options(spec), statistics_split_of(source.splits))
            calls.append((parameters, {**arguments, "encoding": encoding}))
        return calls
    sampling, resize = manifest["sampling"], manifest["resize"]
    parameters = {"format_version": manifest["format_version"],
                  "encoding": manifest["encoding"], "sampling": sampling, "resize": resize}
    return [(parameters, {"format": "v1", "frames": sampling["frames"], "size": resize["size"],
                          "resize_short": resize["resize_short"],
                          "clips_per_video": sampling["clips_per_video"],
                          "sampling": sampling["method"],
                          "frame_stride": sampling["frame_stride"],
                          "encoding": manifest["encoding"]})]


def rebuild_prepare_call(prepared_dir, manifest, damaged):
    """(SourceSpec, prepare_dataset keyword arguments) that plan exactly this dataset's
    shards, with every shard not in `damaged` finished under the same fingerprint.

    Raises:
        UserError: a merged multi-machine dataset, a source that no longer resolves, or no
            call that reproduces the shards (the source items or the preparation changed).
    """
    from data_prep import prepare as prepare_module
    from data_prep.source_spec import SourceSpec
    from data_prep.sources import resolve_source

    names = [name for info in manifest["splits"].values() for name in info["shards"]]
    if "part" in manifest or any(not storage.basename(name).startswith("shard-")
                                 for name in names):
        raise UserError(f"Expected a dataset prepared in one run to repair (one merged from "
                        f"the parts of an older version's `prepare --num-shards` is "
                        f"repaired by preparing it again). Received: {prepared_dir}")
    try:
        spec = SourceSpec(**manifest["source"])
    except TypeError as error:  # a key this version's SourceSpec does not know
        raise UserError(f"Cannot rebuild the preparation of {prepared_dir} from its "
                        f"manifest's source ({error}). Delete the damaged shards and rerun "
                        f"your prepare command. Received: source {manifest['source']}") from None
    source = resolve_source(spec)
    expected = sorted(storage.normpath(storage.join(str(prepared_dir), name))
                      for name in names)
    for parameters, arguments in _prepare_calls(manifest, spec, source):
        plans = prepare_module._plan_shards(str(prepared_dir), source, parameters,
                                            manifest["items_per_shard"])
        if sorted(storage.normpath(plan.tfrecord) for plan in plans) != expected:
            continue
        if all(prepare_module._finished_sidecar(plan) is not None for plan in plans
               if storage.normpath(plan.tfrecord) not in damaged):
            return spec, {**arguments, "items_per_shard": manifest["items_per_shard"]}
    raise UserError(f"Cannot rebuild the preparation of {prepared_dir} from its manifest: "
                    f"the source items or the preparation parameters changed since (the "
                    f"whole shards' fingerprints do not match). Delete the damaged shards "
                    f"and rerun your prepare command. Received: source {manifest['source']}")


def repair_dataset(prepared_dir, *, workers=None, show_progress=False):
    """Rewrites the damaged shards of a prepared dataset; returns [(shard, reason)] of those
    it rewrote (empty when every shard was whole).

    Raises:
        UserError: the dataset cannot be repaired (see `rebuild_prepare_call`; nothing is
            deleted then), or a shard is still damaged after the rewrite.
    """
    from data_prep import prepare as prepare_module
    from data_prep.reader import read_manifest

    manifest = read_manifest(prepared_dir)
    bad = find_corrupted_shards(prepared_dir, manifest)
    if not bad:
        return []
    damaged = {storage.normpath(path) for path, _ in bad}
    spec, arguments = rebuild_prepare_call(prepared_dir, manifest, damaged)
    for path, reason in bad:
        logger.info("repair: deleting %s (%s)", path, reason)
        for name in (path, _sidecar_path(path)):
            storage.remove(name)
    storage.remove(storage.join(str(prepared_dir), "manifest.json"))
    frames, size = arguments.pop("frames"), arguments.pop("size")
    prepare_module.prepare_dataset(spec, str(prepared_dir), frames, size, workers=workers,
                                   show_progress=show_progress, **arguments)
    still = find_corrupted_shards(prepared_dir, read_manifest(prepared_dir))
    if still:
        raise UserError(f"{still[0][0]} is still damaged after rewriting it ({still[0][1]}); "
                        f"check the disk it is on")
    return bad


def _run(args):
    from data_prep.reader import read_manifest

    if args.repair:
        rewritten = repair_dataset(args.prepared_dir, workers=args.workers,
                                   show_progress=not args.no_progress)
        for path, reason in rewritten:
            print(f"rewrote: {path} (was {reason})")
        print(f"{args.prepared_dir}: every shard whole"
              + (f" ({len(rewritten)} rewritten)" if rewritten else ""))
        return 0
    manifest = read_manifest(args.prepared_dir)
    bad = find_corrupted_shards(args.prepared_dir, manifest)
    for path, reason in bad:
        print(f"damaged: {path} ({reason})")
    if bad:
        raise UserError(corrupted_message(bad, args.prepared_dir).split(". Delete")[0]
                        + f". Rewrite it with: python -m data_prep verify "
                          f"{args.prepared_dir} --repair")
    shards = sum(len(info["shards"]) for info in manifest["splits"].values())
    print(f"{args.prepared_dir}: every shard whole ({shards} read, CRC and parse)")
    return 0


def register(subparsers):
    """Adds the `verify` sub-command to an argparse `subparsers` object."""
    parser = subparsers.add_parser(
        "verify", help="read every record of a prepared dataset; --repair rewrites the "
                       "damaged shards",
        description="Read every record of every shard (CRC and parse) and name the damaged "
                    "ones; with --repair, rewrite them from the source items with the "
                    "manifest's own preparation parameters.")
    parser.add_argument("prepared_dir", metavar="DIR", help="a directory written by `prepare`")
    parser.add_argument("--repair", action="store_true",
                        help="delete the damaged shards and prepare them again")
    parser.add_argument("--workers", type=int, default=None,
                        help="--repair: decoding processes (default: all cores)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=_run)
    return parser
