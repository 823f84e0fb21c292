"""Helpers of the hostile-input suite (tests/test_hostile_*.py): run a CLI in a subprocess
(optionally under a memory limit) and check that it ended the way docs/RELIABILITY.md
promises: exit 2, one line `error: ...`, no traceback."""

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def quiet_env(**extra):
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": REPO, **extra}


def run_python(args, *, memory_mb=None, timeout=300, cwd=REPO, env=None):
    """`python *args` in a subprocess; `memory_mb` caps its address space (RLIMIT_AS), so a
    file that makes it allocate more dies of MemoryError instead of taking the machine."""
    def limit_memory():
        import resource

        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    preexec = limit_memory if memory_mb is not None else None
    started = time.perf_counter()
    result = subprocess.run([sys.executable, *args], cwd=cwd, env=env or quiet_env(),
                            capture_output=True, text=True, timeout=timeout,
                            preexec_fn=preexec)
    result.seconds = time.perf_counter() - started
    return result


def run_code(code, **kwargs):
    """`run_python(["-c", code])` with the code dedented."""
    return run_python(["-c", textwrap.dedent(code)], **kwargs)


# The peak resident memory of the process running this line, in MB. Not ru_maxrss: Linux
# keeps that across fork + exec, so a child started from a big pytest reports its parent's.
PEAK_MB = 'int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) // 1024'


def assert_one_error_line(result, *needles, exit_code=2):
    """Exit `exit_code`, no traceback, and exactly one stderr line starting `error:` that
    contains every needle. Returns that line."""
    stderr = result.stderr
    assert result.returncode == exit_code, (result.returncode, stderr[-3000:])
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr[-3000:]
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    assert len(errors[0]) < 2000, errors[0][:300]
    return errors[0]


def tiny_config(tmp_path, name="tiny", **sections):
    """A 4x16x16 synthetic run of small3d (8 classes x 3 videos), one quick epoch."""
    config = {
        "data": {"layout": "synth", "root": str(tmp_path / "videos"),
                 "prepared_dir": str(tmp_path / "prepared"), "frames": 4, "size": 16,
                 "clips_per_video": 2, "workers": 1,
                 "synth": {"videos_per_class": 3, "num_frames": 8, "frame_size": [24, 24]}},
        "model": {"name": "small3d"},
        "augment": {"horizontal_flip": False, "crop_size": 14},
        "train": {"epochs": 1, "batch_size": 8, "optimizer": "adam", "learning_rate": 0.003},
        "tensorboard": {"clip_images": 0, "histograms": False, "graph": False},
    }
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def misbehaving_decoder(path, decode):
    """A decoding worker's function for the per-item isolation tests: an item named
    `crash*` kills its process (SIGSEGV, as a crashing FFmpeg does), `hang*` never returns,
    `oom*` runs out of memory; any other is `decode(path)`."""
    name = os.path.basename(path)
    if name.startswith("crash"):
        os.kill(os.getpid(), signal.SIGSEGV)
    if name.startswith("hang"):
        time.sleep(3600)
    if name.startswith("oom"):
        raise MemoryError
    return decode(path)


def views_of_five_bands(task):
    """What `training.evaluation.decode_item_views` answers for an item of the wrong band
    count (a user's mistake that stops the evaluation), for a decoding worker to import."""
    return "user_error", f"Expected items with 3 band(s). Received: band=5 ({task[0]})"


@contextlib.contextmanager
def small_disk(path, size="48m"):
    """A tmpfs of `size` mounted at `path` (skips the test unless root can mount one)."""
    os.makedirs(path)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("needs root and tmpfs to fill a disk (mount -t tmpfs failed)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path])


def fill(path):
    """Writes `path/filler` until the disk is full."""
    with open(os.path.join(path, "filler"), "wb") as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * (1 << 16))
                f.flush()
    with contextlib.suppress(OSError):  # the last bytes a page at a time
        with open(os.path.join(path, "filler-tail"), "wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()


def tree_bytes(directory):
    """{relative path: bytes} of every file under `directory`."""
    files = {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            files[os.path.relpath(path, directory)] = open(path, "rb").read()
    return files


def misbehaving_prepare_item(task):
    """`data_prep.prepare.prepare_item`, through `misbehaving_decoder` (by the item's name)."""
    from data_prep.prepare import prepare_item

    return misbehaving_decoder(task.path, lambda _: prepare_item(task))
