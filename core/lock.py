"""One writer per prepared output: a second `prepare` into the same --out stops at once.

Two prepares writing the same shards would delete each other's temporary files (each cleans
up what an interrupted run left) and race on the manifest. `hold_output_lock` takes an
exclusive `flock` on a small file in the output directory for as long as a prepare runs, and
removes the file when done. The kernel drops the lock when the process ends, however it ends
(SIGKILL included), so a crashed run leaves at most the file, never a lock that blocks the
next run, which takes the file over and removes it. Parts of a multi-machine prepare
(`--num-shards N --shard-index i`) lock only their own part, so they may share one --out.

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


def lock_path(out, prefix=""):
    """The lock file of one prepare into `out` (`prefix`: its part's shard-name prefix)."""
    return os.path.join(out, f"{LOCK_PREFIX}.{prefix}lock")


@contextlib.contextmanager
def hold_output_lock(out, prefix=""):
    """Holds the exclusive lock of `out` (or of one part of it) while the block runs.

    Raises:
        UserError: another live process holds it; the message names that process.
    """
    if fcntl is None:
        yield
        return
    path = lock_path(out, prefix)
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip() or "?"
            os.close(descriptor)
            what = "this part of it" if prefix else "it"
            raise UserError(f"Another prepare (process {holder}) is writing {what} now; wait "
                            f"for it to finish or choose another --out. Received: "
                            f"out={out!r}") from None
        try:
            current = os.stat(path).st_ino == os.fstat(descriptor).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        # The last holder removed the file between our open and flock: lock the new one.
        os.close(descriptor)
    try:
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        # Removed while still locked, so nobody can take over a file that is going away.
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        os.close(descriptor)
