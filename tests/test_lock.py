"""core.lock: one prepare per output, one run per run directory, never a stale lock."""

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from core.errors import UserError
from core.lock import hold_output_lock, lock_path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="no flock on Windows")


def start_holder(out):
    """A process that holds the lock until killed; returns once it holds it."""
    script = textwrap.dedent(f"""
        import sys, time
        from core.lock import hold_output_lock
        with hold_output_lock({str(out)!r}):
            print("held", flush=True)
            time.sleep(600)
    """)
    process = subprocess.Popen([sys.executable, "-c", script], cwd=REPO,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


@pytest.mark.slow
def test_a_second_prepare_is_refused_naming_the_first(tmp_path):
    holder = start_holder(tmp_path)
    try:
        with pytest.raises(UserError, match=rf"Another prepare \(process {holder.pid}\) is "
                                            r"writing it now.*Received: out="):
            with hold_output_lock(str(tmp_path)):
                pass
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    holder = start_holder(tmp_path)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert os.path.exists(lock_path(str(tmp_path)))  # the file stays; the lock does not
    with hold_output_lock(str(tmp_path)):
        with open(lock_path(str(tmp_path))) as f:
            assert f.read().strip() == str(os.getpid())
    assert os.listdir(tmp_path) == []  # the next run removes it


def test_released_after_the_block_even_on_errors(tmp_path):
    with pytest.raises(RuntimeError):
        with hold_output_lock(str(tmp_path)):
            raise RuntimeError("a failed prepare")
    with hold_output_lock(str(tmp_path)):
        pass
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_prepare_into_a_locked_output_is_exit_2_and_leaves_it_alone(tmp_path):
    root = tmp_path / "series"
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        np.save(root / label / "0.npy", np.zeros((4, 8, 8, 2), np.float32))
    out = tmp_path / "prepared"
    out.mkdir()
    (out / "manifest.json").write_text("{}")  # an earlier dataset that must survive
    holder = start_holder(out)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "data_prep", "prepare", "--layout", "folders",
             "--root", str(root), "--out", str(out), "--frames", "2", "--size", "8",
             "--workers", "1"],
            cwd=REPO, capture_output=True, text=True, timeout=120)
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 2, result.stderr[-2000:]
    error = result.stderr.strip().splitlines()
    assert error[-1].startswith("error: Another prepare") and "Traceback" not in result.stderr
    assert (out / "manifest.json").read_text() == "{}"
    assert set(os.listdir(out)) == {".prepare.lock", "manifest.json"}  # the holder's file
