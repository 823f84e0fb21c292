"""One writer per directory: a second prepare into the same --out, or a second train.py in
the same run directory, stops at once.

Two prepares writing the same shards would delete each other's temporary files (each cleans
up what an interrupted run left) and race on the manifest; two runs in one run directory
would interleave history rows, checkpoints and TensorBoard events. `DirectoryLock` takes an
exclusive `flock` on a small file in the directory (it holds the owner's pid, for the
message) for as long as the owner runs, and removes the file when done. The kernel drops the
lock when the process ends, however it ends (SIGKILL included), so a crashed run leaves at
most the file, never a lock that blocks the next run, which takes the file over and removes
it. A prepare output has one lock (`hold_output_lock`: a Beam job's workers write under the
parent's), a run directory another (`lock_run_dir`).

On systems without `fcntl` (Windows) there is no lock.
"""

import contextlib
import os

from core.errors import UserError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK_PREFIX = ".prepare"
RUN_LOCK_NAME = ".run.lock"


def lock_path(out):
    """The lock file of a prepare into `out`."""
    return os.path.join(out, f"{LOCK_PREFIX}.lock")


class DirectoryLock:
    """An exclusive `flock` on `path`, held from construction until `release()` (or until
    the object is collected, or the process ends).

    Raises:
        UserError: another live process holds it; `refused(holder_pid)` makes the message.
    """

    def __init__(self, path, refused):
        self.path = path
        self._descriptor = None
        if fcntl is None:
            return
        while True:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip() or "?"
                os.close(descriptor)
                raise UserError(refused(holder)) from None
            try:
                current = os.stat(path).st_ino == os.fstat(descriptor).st_ino
            except FileNotFoundError:
                current = False
            if current:
                break
            # The last holder removed the file between our open and flock: lock the new one.
            os.close(descriptor)
        self._descriptor = descriptor
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)

    @property
    def held(self):
        return self._descriptor is not None

    def release(self):
        """Removes the file (still locked, so nobody takes over a file that is going away)
        and drops the lock; a second call does nothing."""
        if self._descriptor is None:
            return
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == os.fstat(self._descriptor).st_ino:
                os.remove(self.path)
        os.close(self._descriptor)
        self._descriptor = None

    def __del__(self):
        self.release()


@contextlib.contextmanager
def hold_output_lock(out):
    """Holds the exclusive lock of `out` while the block runs.

    Raises:
        UserError: another live process holds it; the message names that process.
    """
    lock = DirectoryLock(lock_path(out), lambda holder: (
        f"Another prepare (process {holder}) is writing it now; wait for it to finish or "
        f"choose another --out. Received: out={out!r}"))
    try:
        yield
    finally:
        lock.release()


def lock_run_dir(path):
    """The lock of the run directory `path` (which exists): a DirectoryLock on
    `path/.run.lock`, for the caller to release when the run ends.

    Raises:
        UserError: `<path> is in use by pid N`: another train.py runs in it now.
    """
    return DirectoryLock(os.path.join(path, RUN_LOCK_NAME), lambda holder: (
        f"{path} is in use by pid {holder} (another train.py runs in it); wait for it to end "
        f"or choose another --run-dir"))
