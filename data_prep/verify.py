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
"""

import os

from core.errors import UserError
from data_prep.sequence_records import SEQUENCE_FORMAT_VERSION, parse_sequence_record
from data_prep.shards import clip_parser

_BATCH = 64


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
            path = os.path.join(str(prepared_dir), name)
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
