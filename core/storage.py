"""Files on the local disk or behind a URL: one home for where data is read and written.

A path is local (read with `os`, as always) or a URL (`gs://bucket/ucf101`, or any scheme
TensorFlow's `tf.io.gfile` knows: `s3://` and `hdfs://` once a plugin registers them, and
`ram://` in tests). URLs go through `tf.io.gfile` on purpose, on the prepare side too: a
dataset `prepare` can write is then one `train.py` can read, through the same file systems
(Beam's own FileSystems would let prepare write s3:// that TensorFlow cannot read).

Object stores have no directories and no atomic rename: a "directory" here is a prefix
other objects share, `rename` is a copy then a delete, and an object is whole once its
writer closes it (so `atomic_write` of a URL writes `.tmp-name` and renames it, leaving at
worst a `.tmp-` object that the next run deletes, as on a disk). There is no lock on a URL.

TensorFlow is imported only when a URL is used: `import core.storage` stays light, and
decoding sandboxes see local paths only (`local_copy`).

Example:

>>> import tempfile
>>> root = tempfile.mkdtemp()
>>> write_bytes(join(root, "a", "b.txt"), b"whole")
>>> listdir(join(root, "a")), read_bytes(join(root, "a", "b.txt"))
(['b.txt'], b'whole')
"""

import contextlib
import json
import os
import posixpath
import shutil
import tempfile

from core.atomic import TEMPORARY_PREFIX, write_json_atomically
from core.atomic import atomic_write as _local_atomic_write
from core.errors import UserError


def is_url(path):
    """True for `scheme://...` (a path `tf.io.gfile` reads), False for a local path."""
    return "://" in os.fspath(path)


def _gfile():
    import sys

    if "tensorflow" not in sys.modules:  # its start-up noise stays off the terminal
        from core.tensorflow_env import import_tensorflow_quietly

        import_tensorflow_quietly()
    import tensorflow as tf

    return tf.io.gfile


def _errors():
    _gfile()  # imported quietly, if not yet
    import tensorflow as tf

    return tf.errors


def _os_error(error, path):
    """A `tf.errors.OpError` as the OSError `os` would raise for the same fault."""
    import errno

    if isinstance(error, _errors().NotFoundError):
        return FileNotFoundError(errno.ENOENT, "No such file or directory", path)
    if isinstance(error, _errors().PermissionDeniedError):
        return PermissionError(errno.EACCES, "Permission denied", path)
    return OSError(errno.EIO, error.message.strip().splitlines()[0][:200], path)


@contextlib.contextmanager
def _as_os_errors(path):
    errors = _errors()
    try:
        yield
    except errors.OpError as error:
        raise _os_error(error, path) from None


def check_url(path, name="path"):
    """Raise UserError if `path` is a URL whose scheme TensorFlow cannot read.

    Args:
        path: str.
        name: what the path is, for the message (`--root`, `data.prepared_dir`).
    """
    if not is_url(path):
        return
    errors = _errors()
    try:
        _gfile().exists(path)
    except errors.UnimplementedError:
        scheme = os.fspath(path).split("://", 1)[0]
        raise UserError(f"Expected {name} to be a local path or a URL TensorFlow reads "
                        f"(gs://, or a scheme a tf.io.gfile plug-in adds); no file system "
                        f"handles {scheme}://. Received: {path}") from None
    except errors.OpError as error:
        raise UserError(f"Cannot reach {name} {path}: "
                        f"{error.message.strip().splitlines()[0][:200]}") from None


def join(base, *parts):
    """`os.path.join`, or for a URL its parts joined by `/`; a part that is a URL (or, on a
    local base, an absolute path) starts the path again, as in `os.path.join`."""
    path = os.fspath(base)
    for part in parts:
        if is_url(part) or not is_url(path):
            path = part if is_url(part) else os.path.join(path, part)
        else:
            path = path.rstrip("/") + "/" + part.lstrip("/") if part else path.rstrip("/") + "/"
    return path


def dirname(path):
    return posixpath.dirname(path) if is_url(path) else os.path.dirname(path)


def basename(path):
    return posixpath.basename(path.rstrip("/")) if is_url(path) else os.path.basename(path)


def normpath(path):
    """`os.path.normpath`; a URL keeps its scheme and bucket, `..` and `.` resolved."""
    if not is_url(path):
        return os.path.normpath(path)
    scheme, rest = os.fspath(path).split("://", 1)
    return f"{scheme}://{posixpath.normpath(rest)}".rstrip("/")


def exists(path):
    if not is_url(path):
        return os.path.exists(path)
    with _as_os_errors(path):
        return _gfile().exists(path)


def isdir(path):
    if not is_url(path):
        return os.path.isdir(path)
    with _as_os_errors(path):
        return _gfile().isdir(path)


def isfile(path):
    if not is_url(path):
        return os.path.isfile(path)
    with _as_os_errors(path):
        gfile = _gfile()
        return gfile.exists(path) and not gfile.isdir(path)


def listdir(path):
    """The names in directory `path` (no `.`/`..`; a URL's without a trailing `/`)."""
    if not is_url(path):
        return os.listdir(path)
    with _as_os_errors(path):
        return [name.rstrip("/") for name in _gfile().listdir(path)]


def walk(top):
    """`os.walk(top)`: (directory, subdirectory names, file names), top down; as with
    `os.walk`, the caller may prune or reorder the subdirectory names in place."""
    if not is_url(top):
        yield from os.walk(top)
        return
    with _as_os_errors(top):
        for directory, subdirectories, files in _gfile().walk(top):
            names = [name.rstrip("/") for name in subdirectories]
            yield directory.rstrip("/"), names, list(files)
            # gfile.walk descends into its own list: hand it the caller's choice.
            spelled = {name.rstrip("/"): name for name in subdirectories}
            subdirectories[:] = [spelled[name] for name in names if name in spelled]


def glob(pattern):
    """The paths `pattern` (`*`, `?`, `[...]`) matches, sorted."""
    if not is_url(pattern):
        import glob as local_glob

        return sorted(local_glob.glob(pattern))
    with _as_os_errors(pattern):
        return sorted(_gfile().glob(pattern))


def getsize(path):
    if not is_url(path):
        return os.path.getsize(path)
    with _as_os_errors(path):
        return _gfile().stat(path).length


def makedirs(path):
    """`os.makedirs(path, exist_ok=True)` (on an object store: nothing to make)."""
    if not is_url(path):
        os.makedirs(path, exist_ok=True)
        return
    with _as_os_errors(path):
        _gfile().makedirs(path)


def remove(path, missing_ok=True):
    """Delete the file `path` (quietly if it is not there and `missing_ok`)."""
    try:
        if not is_url(path):
            os.remove(path)
            return
        with _as_os_errors(path):
            _gfile().remove(path)
    except FileNotFoundError:
        if not missing_ok:
            raise


def rmtree(path):
    """Delete directory `path` and all under it, if it is there."""
    if not is_url(path):
        shutil.rmtree(path, ignore_errors=True)
        return
    with contextlib.suppress(OSError), _as_os_errors(path):
        if _gfile().exists(path):
            _gfile().rmtree(path)


def read_bytes(path, max_bytes=None):
    """The content of `path` (at most `max_bytes` + 1 bytes if given)."""
    if not is_url(path):
        with open(path, "rb") as file:
            return file.read(-1 if max_bytes is None else max_bytes + 1)
    with _as_os_errors(path), _gfile().GFile(path, "rb") as file:
        return file.read(-1 if max_bytes is None else max_bytes + 1)


def open_read(path):
    """A binary file object for reading `path`."""
    if not is_url(path):
        return open(path, "rb")
    with _as_os_errors(path):
        gfile = _gfile()
        if not gfile.exists(path):  # GFile opens lazily: fail here, as open() would
            raise _errors().NotFoundError(None, None, f"{path} not found")
        return gfile.GFile(path, "rb")


@contextlib.contextmanager
def atomic_write(path):
    """Yields a temporary path to write (with `open_write`, or a TFRecordWriter) that
    becomes `path` whole on a normal exit (local: `core.atomic.atomic_write`, fsynced)."""
    if not is_url(path):
        with _local_atomic_write(path) as temporary:
            yield temporary
        return
    temporary = join(dirname(path), TEMPORARY_PREFIX + basename(path))
    try:
        yield temporary
        with _as_os_errors(path):
            _gfile().rename(temporary, path, overwrite=True)
    finally:
        with contextlib.suppress(Exception):
            if _gfile().exists(temporary):
                _gfile().remove(temporary)


def open_write(path):
    """A binary file object writing `path` (use inside `atomic_write`)."""
    if not is_url(path):
        return open(path, "wb")
    return _gfile().GFile(path, "wb")


def write_bytes(path, data):
    """`data` as the whole content of `path`, atomically; makes the parent directory."""
    makedirs(dirname(path) or ".")
    with atomic_write(path) as temporary:
        with _as_os_errors(path), open_write(temporary) as file:
            file.write(data)


def write_json(path, value):
    """`value` as indented JSON (one trailing newline) in `path`, atomically."""
    if not is_url(path):
        write_json_atomically(path, value)
        return
    write_bytes(path, (json.dumps(value, indent=2) + "\n").encode())


def read_json(path):
    """The JSON value in `path` (OSError if unreadable, ValueError if not JSON)."""
    return json.loads(read_bytes(path))


@contextlib.contextmanager
def local_copy(path, siblings=()):
    """Yields a local path holding `path`: `path` itself, or for a URL a temporary copy of
    the file or of the whole directory (deleted when the block ends), beside copies of
    those `siblings` (URLs in the same directory: a dates sidecar) that exist.

    Decoders (OpenCV, FFmpeg, GDAL, numpy) read local files; an item behind a URL is
    downloaded once, next to nothing else.
    """
    if not is_url(path):
        yield path
        return
    scratch = tempfile.mkdtemp(prefix="videocls-item-")
    try:
        local = os.path.join(scratch, basename(path) or "item")
        with _as_os_errors(path):
            gfile = _gfile()
            for sibling in siblings:
                if gfile.exists(sibling):
                    gfile.copy(sibling, os.path.join(scratch, basename(sibling)))
            if gfile.isdir(path):
                top = path.rstrip("/")
                for directory, _, files in gfile.walk(top):
                    relative = directory.rstrip("/")[len(top):].lstrip("/")
                    target = os.path.join(local, *relative.split("/")) if relative else local
                    os.makedirs(target, exist_ok=True)
                    for name in files:
                        gfile.copy(join(directory, name), os.path.join(target, name))
            else:
                gfile.copy(path, local)
        yield local
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
