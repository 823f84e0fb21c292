"""A full disk ends a run with one line and loses nothing already saved.

`no_space_left(error, ...)` finds ENOSPC anywhere in an exception's chain (Python's
`OSError`, h5py's `OSError` whose text carries `errno = 28`, TensorFlow's errors, which
carry only the text) and turns it into `NoSpaceLeft`, a UserError that names the path and
how to resume: `no space left on <path>; free some space, then resume with: ...`.
`write_json_in_place` records the failure in run.json when even its temporary copy cannot
be written, and `trim_partial_last_line` cuts the half row an append left at the end of a
log (history.csv) before a resumed run appends to it.
"""

import errno
import json
import os
import re

from core.atomic import write_json_atomically
from core.errors import UserError

_NO_SPACE_TEXT = re.compile(r"No space left on device|errno = 28\b|ENOSPC")
_FILENAME_IN_TEXT = re.compile(r"filename = '([^']+)'")


class NoSpaceLeft(UserError):
    """The disk filled up; the run stopped and can be resumed once space is freed."""


def _chain(error):
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def is_no_space(error):
    """True if ENOSPC is the cause of `error` or of any exception in its chain."""
    return any((isinstance(e, OSError) and e.errno == errno.ENOSPC)
               or _NO_SPACE_TEXT.search(str(e)) for e in _chain(error))


def no_space_left(error, default_path, resume_command):
    """A NoSpaceLeft for `error` if ENOSPC caused it, else None.

    Args:
        default_path: str, named when the error names no file (a buffered write's flush).
        resume_command: str, the command that continues the run once space is freed; None
            for a command that is simply run again (evaluate, predict).
    """
    if isinstance(error, NoSpaceLeft) or not is_no_space(error):
        return error if isinstance(error, NoSpaceLeft) else None
    path = None
    for e in _chain(error):
        path = getattr(e, "filename", None) or next(iter(_FILENAME_IN_TEXT.findall(str(e))),
                                                    None)
        if path:
            break
    path = os.path.dirname(path) if path and os.path.basename(path).startswith(".tmp-") \
        else path
    then = (f"resume with: {resume_command}" if resume_command else
            "run the same command again")
    return NoSpaceLeft(f"no space left on {path or default_path}; free some space, then {then}")


def stdout_target():
    """What standard output is written to (a file's path), to name it when it fills up."""
    try:
        return os.readlink("/proc/self/fd/1")
    except OSError:
        return "standard output"


def write_json_in_place(path, value):
    """`value` as JSON in `path`: atomically if the disk allows, else over the old content
    in place (its blocks are allocated already; padding keeps a shorter text valid JSON)."""
    try:
        write_json_atomically(path, value)
        return
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
    text = json.dumps(value, indent=2) + "\n"
    old_size = os.path.getsize(path)
    data = text.encode("utf-8")
    data += b" " * max(0, old_size - len(data))  # no truncate: it would free, then need, blocks
    with open(path, "r+b") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def trim_partial_last_line(path):
    """Cuts `path` after its last newline (a row half written when the disk filled up);
    True if it cut anything. A missing file is left alone."""
    try:
        with open(path, "rb+") as f:
            data = f.read()
            if not data or data.endswith(b"\n"):
                return False
            f.truncate(data.rfind(b"\n") + 1)
            return True
    except FileNotFoundError:
        return False
