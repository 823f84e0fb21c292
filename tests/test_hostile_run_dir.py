"""One run per run directory: a second train.py in a directory another live process holds is
refused at once, before TensorFlow loads; a killed holder leaves no lock behind."""

import csv
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from core.errors import UserError
from core.lock import RUN_LOCK_NAME
from hostile_fixtures import REPO, assert_one_error_line, quiet_env, run_python, tiny_config
from training.run_dir import RunDir, open_run_dir

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="no flock on Windows")


def start_holder(run_path, resume=False):
    """A process that opens (and so locks) `run_path` like train.py does, until killed."""
    script = textwrap.dedent(f"""
        import time
        from training.run_dir import open_run_dir
        run_dir = open_run_dir({str(run_path)!r}, resume={resume})
        print("held", flush=True)
        time.sleep(600)
    """)
    process = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=quiet_env(),
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_open_run_dir_names_the_live_holder_and_a_killed_one_blocks_nothing(tmp_path):
    run_path = str(tmp_path / "run")
    holder = start_holder(run_path)
    try:
        for kwargs in ({}, {"overwrite": True}):
            with pytest.raises(UserError, match=rf"^{run_path} is in use by pid {holder.pid} "):
                open_run_dir(run_path, **kwargs)
        (tmp_path / "run" / "config.yaml").write_text("name: x\n")
        with pytest.raises(UserError, match=rf"^{run_path} is in use by pid {holder.pid} "):
            open_run_dir(run_path, resume=True)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert os.path.exists(os.path.join(run_path, RUN_LOCK_NAME))  # the file outlives it...
    run_dir = open_run_dir(run_path, resume=True)  # ...the lock does not
    with open(run_dir.lock.path) as f:
        assert f.read().strip() == str(os.getpid())
    run_dir.lock.release()
    assert sorted(os.listdir(run_path)) == ["config.yaml"]  # released: the file goes too


@pytest.mark.slow
@pytest.mark.parametrize("resume", [False, True], ids=["new", "resume"])
def test_a_second_train_py_is_refused_at_once_and_touches_nothing(tmp_path, resume):
    run_path = tmp_path / "run"
    run_path.mkdir()
    (run_path / "config.yaml").write_text("name: held\n")
    before = sorted(os.listdir(run_path))
    holder = start_holder(run_path, resume=True)
    try:
        args = ["--run-dir", str(run_path), "--resume"] if resume else \
            ["--config", tiny_config(tmp_path), "--run-dir", str(run_path)]
        result = run_python(["train.py", *args], timeout=120)
    finally:
        holder.kill()
        holder.wait()
    assert_one_error_line(result, f"error: {run_path} is in use by pid {holder.pid}")
    # At once: refused before TensorFlow loads (which alone takes seconds here).
    assert "tensorflow" not in result.stderr.lower()
    assert result.seconds < 15, result.seconds
    assert sorted(set(os.listdir(run_path)) - {RUN_LOCK_NAME}) == before


@pytest.mark.slow
def test_two_runs_started_together_one_is_refused_the_other_finishes_clean(tmp_path):
    """The issue's case: two train.py on one --run-dir within TensorFlow's import time."""
    config = tiny_config(tmp_path)
    run_path = str(tmp_path / "run")
    command = [sys.executable, "train.py", "--config", config, "--run-dir", run_path,
               "--quiet"]
    first = subprocess.Popen(command, cwd=REPO, env=quiet_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not os.path.exists(os.path.join(run_path, RUN_LOCK_NAME)) and time.time() < deadline:
        time.sleep(0.02)
    second = run_python(command[1:], timeout=120)
    first_out, first_err = first.communicate(timeout=600)
    assert first.returncode == 0, first_err[-3000:]
    assert_one_error_line(second, f"{run_path} is in use by pid {first.pid}")
    with open(RunDir(run_path).history, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][0] == "epoch" and [row[0] for row in rows[1:]] == ["0"]  # one header, one row
    assert not os.path.exists(os.path.join(run_path, RUN_LOCK_NAME))
