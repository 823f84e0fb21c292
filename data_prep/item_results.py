"""One decoded item's result as a file: what `prepare`'s decode step hands its shard writer.

The Beam pipeline of `data_prep.pipeline` decodes items in one step and writes shards in
the next, possibly on other machines; between them each item's result (`prepare_item`'s
dict: encoded frames, masks, raw clips, facts) waits in a file of its own under
`out/.work/`. A finished item file is also what a rerun reuses after a killed job.

The format is plain on purpose (never pickle: the file lies in a user's directory):

    MAGIC, then an 8-byte little-endian length and that many bytes of JSON (the result with
    each bytes value and array replaced by a reference), then the blobs, each an 8-byte
    length and its bytes.
"""

import contextlib
import json
import os
import struct

import numpy as np

from core import storage
from core.atomic import temporary_path
from data_prep.sequence_records import SourceInfo

MAGIC = b"VIDEOCLS-ITEM-1\n"
_LENGTH = struct.Struct("<Q")
# Result keys holding lists of bytes (frames, masks) or arrays (v1 raw clips).
_BYTES_LISTS = ("encoded", "masks")


class ItemFileError(ValueError):
    """An item file that is not whole or not ours: the item is decoded again."""


def write_item_result(path, result):
    """Write `result` (a `prepare_item` dict) to `path` atomically.

    Args:
        path: str, the item file.
        result: dict, JSON-able but for `source` (`SourceInfo`), `clips` (uint8 array
            (N, F, S, S, band)) and `encoded` / `masks` (a list of bytes, or a list of lists
            of bytes for v1 clips).
    """
    blobs = []

    def blob(data):
        blobs.append(bytes(data))
        return len(blobs) - 1

    meta = dict(result)
    for key in _BYTES_LISTS:
        value = meta.get(key)
        if value is not None:
            meta[key] = {"nested": [[blob(data) for data in clip] for clip in value]} \
                if value and isinstance(value[0], list) else {"flat": [blob(d) for d in value]}
    if meta.get("clips") is not None:
        clips = np.ascontiguousarray(meta["clips"])
        meta["clips"] = {"dtype": str(clips.dtype), "shape": list(clips.shape),
                         "blob": blob(clips.tobytes())}
    if isinstance(meta.get("source"), SourceInfo):
        source = meta["source"]
        meta["source"] = {"height": source.height, "width": source.width,
                          "frame_rate": source.frame_rate, "frame_count": source.frame_count}
    header = json.dumps(meta, sort_keys=True, default=_plain).encode()
    if storage.is_url(path):  # an object appears whole when its writer closes
        storage.write_bytes(path, b"".join(
            [MAGIC, _LENGTH.pack(len(header)), header]
            + [part for data in blobs for part in (_LENGTH.pack(len(data)), data)]))
        return
    # Renamed whole but not fsynced: a work file, not the dataset. After a power cut it
    # may read as cut short, and the item is decoded again.
    temporary = temporary_path(path)
    try:
        with open(temporary, "wb") as file:
            file.write(MAGIC + _LENGTH.pack(len(header)) + header)
            for data in blobs:
                file.write(_LENGTH.pack(len(data)))
                file.write(data)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise


def _plain(value):
    """numpy scalars (a nodata value, a frame rate) as the Python numbers they hold."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def read_item_result(path):
    """The result `write_item_result` wrote to `path`.

    Raises:
        ItemFileError: a file that is cut short, too long, or not an item file.
    """
    data = storage.read_bytes(path)
    size = len(data)
    if not data.startswith(MAGIC):
        raise ItemFileError(f"not an item file: {path}")
    position = len(MAGIC)

    def take():
        nonlocal position
        if position + _LENGTH.size > size:
            raise ItemFileError(f"cut short: {path}")
        (length,) = _LENGTH.unpack_from(data, position)
        start, position = position + _LENGTH.size, position + _LENGTH.size + length
        if position > size:
            raise ItemFileError(f"cut short: {path}")
        return data[start:position]

    try:
        meta = json.loads(take())
    except ValueError as error:
        raise ItemFileError(f"unreadable header ({error}): {path}") from None
    if not isinstance(meta, dict):
        raise ItemFileError(f"not an item file: {path}")
    blobs = []
    while position < size:
        blobs.append(take())
    try:
        for key in _BYTES_LISTS:
            value = meta.get(key)
            if value is not None:
                meta[key] = ([[blobs[i] for i in clip] for clip in value["nested"]]
                             if "nested" in value else [blobs[i] for i in value["flat"]])
        if meta.get("clips") is not None:
            clips = meta["clips"]
            meta["clips"] = np.frombuffer(blobs[clips["blob"]], dtype=np.dtype(
                clips["dtype"])).reshape(clips["shape"])
        if isinstance(meta.get("source"), dict):
            meta["source"] = SourceInfo(**meta["source"])
        if isinstance(meta.get("frame_shape"), list):
            meta["frame_shape"] = tuple(meta["frame_shape"])
    except (IndexError, KeyError, TypeError, ValueError) as error:
        raise ItemFileError(f"inconsistent ({type(error).__name__}: {error}): {path}") from None
    return meta

