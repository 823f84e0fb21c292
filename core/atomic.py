"""Atomic writes: a file appears whole under its name, or not at all.

Every writer of the project (shards, sidecars, manifests, run.json, checkpoints, videos,
images) goes through `atomic_write`: write to a temporary name in the same directory, fsync
it, rename it over the target (`os.replace`, atomic on POSIX within one file system), and
delete the temporary file if anything fails on the way. A SIGKILL can still leave the
temporary file; its name says so (`.tmp-` prefix, or the writer's own `temporary`), and the
next run deletes it.
"""

import contextlib
import json
import os
import shutil

TEMPORARY_PREFIX = ".tmp-"


def temporary_path(path):
    """`dir/.tmp-name.ext` beside `path`: same file system, same extension (OpenCV and Keras
    pick the format from it)."""
    directory, name = os.path.split(os.fspath(path))
    return os.path.join(directory, TEMPORARY_PREFIX + name)


def _fsync(path):
    if os.path.isdir(path):  # a directory written by a library (e.g. a SavedModel)
        for root, _, names in os.walk(path):
            for name in names:
                _fsync(os.path.join(root, name))
        return
    with open(path, "rb") as file:
        os.fsync(file.fileno())


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


@contextlib.contextmanager
def atomic_write(path, temporary=None):
    """Yields a temporary path to write; on a normal exit it is fsynced and renamed to `path`.

    Args:
        path: str or os.PathLike, the file to write.
        temporary: str or None, the temporary name; None means `temporary_path(path)`.

    An exception (or Ctrl-C) inside the block, or in the fsync or rename, deletes the
    temporary file and propagates.

    Example:

    >>> import tempfile
    >>> target = os.path.join(tempfile.mkdtemp(), "a.txt")
    >>> with atomic_write(target) as temporary:
    ...     _ = open(temporary, "w").write("whole")
    >>> open(target).read()
    'whole'
    """
    path = os.fspath(path)
    temporary = temporary_path(path) if temporary is None else temporary
    try:
        yield temporary
        _fsync(temporary)
        os.replace(temporary, path)
    finally:
        _remove(temporary)


def write_text_atomically(path, text):
    """`text` (str) as the whole content of `path`, UTF-8."""
    with atomic_write(path) as temporary:
        with open(temporary, "w", encoding="utf-8") as file:
            file.write(text)


def write_json_atomically(path, value):
    """`value` as indented JSON (one trailing newline) in `path`."""
    write_text_atomically(path, json.dumps(value, indent=2) + "\n")
