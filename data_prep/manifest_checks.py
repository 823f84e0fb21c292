"""A manifest is a file a user can edit: its values are checked before anything trusts them.

`python -m data_prep prepare` writes manifest.json; training, evaluation, prediction and
inspect read it back (`data_prep.reader.read_manifest`) and size tensors, parsers and
file paths from it. A hand-edited or damaged manifest (bands as a string, an unknown
encoding, eight classes of one name, a shard path naming another file) would fail deep
inside TensorFlow, or read a file it should not; `check_manifest` names the key instead.
"""

import math
import posixpath

from core.errors import UserError

ENCODINGS = ("raw", "png", "jpeg")
DTYPES = ("uint8", "uint16", "int16", "float16", "float32")  # sequence_records.RAW_DTYPES
STATISTICS_KEYS = ("count", "mean", "std", "min", "max", "p2", "p98", "valid_fraction")
SHARD_SUFFIX = ".tfrecord"
MAX_CLIP_VALUES = 1 << 31  # one clip's uint8 values: far above any real clip, below a bomb


def _is_count(value, minimum=1):
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value)


def _numbers(value, length):
    return isinstance(value, list) and len(value) == length and all(map(_is_number, value))


def check_sensor_keys(manifest, fail):
    """The stored-values keys (issue 20), each optional: an older manifest lacks them."""
    bands = (manifest.get("frame_shape") or manifest.get("clip_shape") or [None])[-1]
    if manifest.get("dtype", "uint8") not in DTYPES:
        fail("dtype", f"one of {', '.join(DTYPES)}")
    names = manifest.get("band_names")
    if names is not None and not (isinstance(names, list) and all(
            isinstance(name, str) for name in names) and (bands is None or len(names) == bands)):
        fail("band_names", "null or a list of one name per band")
    if manifest.get("nodata") is not None and not _is_number(manifest["nodata"]):
        fail("nodata", "null or a number")
    for key in ("mask", "dated"):
        if not isinstance(manifest.get(key, False), bool):
            fail(key, "true or false")
    rule = manifest.get("to_uint8")
    if rule is not None:
        if not (isinstance(rule, dict) and set(rule) == {"low", "high"} and bands
                and _numbers(rule["low"], bands) and _numbers(rule["high"], bands)
                and all(h > lo for lo, h in zip(rule["low"], rule["high"]))):
            fail("to_uint8", "null or {low: [...], high: [...]} with one number per band")
        if manifest.get("dtype", "uint8") != "uint8":
            fail("dtype", "uint8 when to_uint8 is set")
    stats = manifest.get("statistics")
    if stats is not None:
        if not (isinstance(stats, dict) and isinstance(stats.get("split"), str) and bands
                and all(_numbers(stats.get(key), bands) for key in STATISTICS_KEYS)):
            fail("statistics", f"{{split, {', '.join(STATISTICS_KEYS)}}} with one number "
                               "per band")
    geo = manifest.get("geo")
    if geo is not None:
        if not (isinstance(geo, dict) and all(
                isinstance(entry, dict) and isinstance(entry.get("crs"), str)
                and _numbers(entry.get("transform"), 6)
                and _is_count(entry.get("height")) and _is_count(entry.get("width"))
                for entry in geo.values())):
            fail("geo", "{item id: {crs, transform (6 numbers), height, width}}")


def check_manifest(manifest, path):
    """Raises UserError naming `path` and the key for a value a prepare never writes."""

    def fail(key, expected):
        value = repr(manifest.get(key))
        raise UserError(f"Expected {key} in {path} to be {expected} (the manifest was edited "
                        f"or damaged; prepare the data again). Received: {key}="
                        f"{value[:200]}")

    classes = manifest["classes"]
    if not isinstance(classes, list) or not classes or not all(
            isinstance(name, str) and name.strip() for name in classes):
        fail("classes", "a list of class names")
    if len(set(classes)) != len(classes):
        repeated = sorted({name for name in classes if classes.count(name) > 1})
        raise UserError(f"Expected distinct class names in {path}; a label would name two "
                        f"classes. Received: repeated={repeated[:10]}")
    if "frame_shape" in manifest:  # v2: whole items, clips drawn while reading
        shape = manifest["frame_shape"]
        if not (isinstance(shape, list) and len(shape) == 3
                and all(v is None or _is_count(v) for v in shape[:2]) and _is_count(shape[2])):
            fail("frame_shape", "[height, width, bands] of positive integers (null height "
                                "and width where items differ)")
        if math.prod(v or 1 for v in shape) > MAX_CLIP_VALUES:
            fail("frame_shape", f"a frame of at most {MAX_CLIP_VALUES} values")
    else:
        shape = manifest["clip_shape"]
        if not (isinstance(shape, list) and len(shape) == 4
                and all(_is_count(v) for v in shape[:3])
                and (shape[3] is None or _is_count(shape[3]))):
            fail("clip_shape", "[frames, height, width, bands] of positive integers")
        if math.prod(v or 1 for v in shape) > MAX_CLIP_VALUES:
            fail("clip_shape", f"a clip of at most {MAX_CLIP_VALUES} values")
        if not _is_count(manifest["clips_per_video"]):
            fail("clips_per_video", "a positive integer")
    if manifest["encoding"] not in ENCODINGS:
        fail("encoding", f"one of {', '.join(ENCODINGS)}")
    check_sensor_keys(manifest, fail)
    # `data.layout: tfrecord` indexes the user's own record files where they are, by the
    # absolute paths and names the user gave (data_prep.record_index).
    indexed_records = isinstance(manifest.get("source"), dict) and \
        manifest["source"].get("layout") == "tfrecord"
    splits = manifest["splits"]
    if not isinstance(splits, dict) or not all(isinstance(info, dict) for info in
                                               splits.values()):
        fail("splits", "a mapping of split names to their shards and counts")
    for split, info in splits.items():
        shards = info.get("shards")
        if not isinstance(shards, list) or not all(isinstance(s, str) for s in shards):
            raise UserError(f"Expected splits.{split}.shards in {path} to be a list of file "
                            f"names. Received: {repr(shards)[:200]}")
        for shard in shards if not indexed_records else ():
            # Relative, and a shard by name: `merge` names its parts' shards as `../part/...`.
            if posixpath.isabs(shard) or "\\" in shard or ":" in shard or \
                    not shard.endswith(SHARD_SUFFIX):
                raise UserError(f"Expected the shards of {path} to be {SHARD_SUFFIX} files "
                                f"named relative to its directory; splits.{split}.shards names "
                                f"another file. Received: {shard[:200]!r}")
        for key in ("videos", "clips"):
            if key in info and not _is_count(info[key], minimum=0):
                raise UserError(f"Expected splits.{split}.{key} in {path} to be a count. "
                                f"Received: {repr(info[key])[:200]}")
