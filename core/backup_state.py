"""The files of a run's resumable backup: each epoch's weights written whole beside the
previous epoch's, and found again newest first, each checked before it is trusted.

```
backup/latest.weights.h5        weights + optimizer state after the newest finished epoch
backup/training_metadata.json   {"epoch": E, "batch": 0, "weights_sha256": ...}
backup/previous.weights.h5      the same for the epoch before, kept until a newer one is whole
backup/previous_metadata.json
```

Keras's BackupAndRestore writes its files in place and falls back to its previous copy only
on `OSError`; a file half written when the disk filled up or the process was killed raises
`ValueError` or `JSONDecodeError` instead, and the run never resumes. Here a save writes a
temporary weights file and a temporary metadata file naming the weights' SHA-256 (both
fsynced), then renames: the pair it loaded or saved last becomes `previous`, the new pair
`latest`. A metadata file is trusted only with a weights file of its hash (wherever a kill
between two renames left it), so every state a crash can leave holds at least one whole
pair; `find_backups` lists them newest first with a reason for each one it skipped, and the
caller tries them in order (training.callbacks.SafeBackupAndRestore). A failed save (disk
full) deletes its temporary files, so the pairs already there stay as they were.
"""

import contextlib
import dataclasses
import gc
import hashlib
import json
import logging
import os
import sys

from core.atomic import TEMPORARY_PREFIX

logger = logging.getLogger(__name__)

# (weights, metadata) file names of the two slots, newest first.
SLOTS = {"latest": ("latest.weights.h5", "training_metadata.json"),
         "previous": ("previous.weights.h5", "previous_metadata.json")}
HASH_KEY = "weights_sha256"


@dataclasses.dataclass(frozen=True)
class Backup:
    """One whole (weights, metadata) pair: `epoch` epochs finished."""

    epoch: int
    weights: str  # path
    metadata: str  # path

    def describe(self):
        return f"{os.path.basename(self.weights)} (epoch {self.epoch})"


def sha256_file(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _paths(backup_dir, slot):
    return tuple(os.path.join(backup_dir, name) for name in SLOTS[slot])


def find_backups(backup_dir):
    """(backups, skipped): the whole pairs in `backup_dir`, newest epoch first, and one line
    for each metadata file that names no whole pair (unreadable, not JSON, weights missing or
    of another hash). Metadata written by Keras itself (no hash) pairs with its slot's
    weights."""
    weights_paths = [_paths(backup_dir, slot)[0] for slot in SLOTS]
    hashes = {}

    def digest(path):
        if path not in hashes:
            try:
                hashes[path] = sha256_file(path)
            except OSError:
                hashes[path] = None
        return hashes[path]

    backups, skipped = [], []
    for slot in SLOTS:
        slot_weights, metadata = _paths(backup_dir, slot)
        name = os.path.basename(metadata)
        try:
            with open(metadata, "rb") as f:
                info = json.loads(f.read(1 << 16).decode("utf-8"))
            epoch = info["epoch"]
            if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
                raise ValueError(f"epoch {epoch!r} is not a count")
        except FileNotFoundError:
            continue
        except (OSError, ValueError, KeyError, TypeError) as e:
            skipped.append(f"{name}: unreadable ({type(e).__name__}: {e})".splitlines()[0])
            continue
        wanted = info.get(HASH_KEY) if isinstance(info, dict) else None
        if wanted is None:  # written by keras.callbacks.BackupAndRestore
            found = slot_weights if os.path.isfile(slot_weights) else None
        else:
            found = next((p for p in weights_paths if digest(p) == wanted), None)
        if found is None:
            skipped.append(f"{name} (epoch {epoch}): its weights file is missing or "
                           "incomplete")
            continue
        backups.append(Backup(epoch, found, metadata))
    backups.sort(key=lambda backup: -backup.epoch)
    return backups, skipped


def saved_epoch(backup_dir):
    """Epochs finished by the newest whole backup in `backup_dir` (0 without one)."""
    backups, _ = find_backups(backup_dir)
    return backups[0].epoch if backups else 0


@contextlib.contextmanager
def _unraisable_to_log():
    """h5py reports a failed close (disk full) from a destructor, as 'Exception ignored'
    with a traceback on stderr; the save's own exception says it already."""
    previous = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: logger.debug(
        "ignored while saving: %s", unraisable.exc_value)
    try:
        yield
    except BaseException:
        gc.collect()  # run those destructors now, under this hook
        raise
    finally:
        sys.unraisablehook = previous


def _fsync_directory(path):
    with contextlib.suppress(OSError):
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def save_backup(backup_dir, write_weights, metadata, keep=None):
    """Writes a new `latest` pair; `keep` (the Backup loaded or saved last) becomes
    `previous`, anything else goes.

    Args:
        write_weights: callable(path) writing the weights to `path` (ends `.weights.h5`).
        metadata: dict with "epoch" (and Keras's "batch"); the weights' hash is added.
        keep: Backup or None.

    Returns:
        Backup, the new pair (pass it as `keep` next time).

    Raises:
        OSError (ENOSPC, ...) or whatever `write_weights` raises; the temporary files are
        gone then, the backups already there untouched.
    """
    os.makedirs(backup_dir, exist_ok=True)
    weights, info = _paths(backup_dir, "latest")
    previous_weights, previous_info = _paths(backup_dir, "previous")
    new_weights = os.path.join(backup_dir, TEMPORARY_PREFIX + os.path.basename(weights))
    new_info = os.path.join(backup_dir, TEMPORARY_PREFIX + os.path.basename(info))
    try:
        with _unraisable_to_log():
            write_weights(new_weights)
        with open(new_weights, "rb") as f:
            os.fsync(f.fileno())
        record = {**metadata, HASH_KEY: sha256_file(new_weights)}  # read back: verified
        with open(new_info, "w", encoding="utf-8") as f:
            f.write(json.dumps(record))
            f.flush()
            os.fsync(f.fileno())
        # Every rename below leaves a whole pair findable: `keep` until the last two.
        if keep is not None:
            if keep.weights != previous_weights:
                os.replace(keep.weights, previous_weights)
            if keep.metadata != previous_info:
                os.replace(keep.metadata, previous_info)
        for path in (weights, info) if keep is not None else ():
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        os.replace(new_weights, weights)
        os.replace(new_info, info)
        _fsync_directory(backup_dir)
    finally:
        for path in (new_weights, new_info):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
    return Backup(int(metadata["epoch"]), weights, info)
