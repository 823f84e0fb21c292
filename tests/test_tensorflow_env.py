"""data_prep.tensorflow_env: oneDNN on by default, the user's choice kept, one line when too late.

Each case runs in a fresh interpreter: TensorFlow reads the variable only when it is imported,
and this test process imported it long ago.
"""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HINT = "set TF_ENABLE_ONEDNN_OPTS=1 before importing TensorFlow"


def run_python(code, onednn=None):
    """Runs `code` in a fresh interpreter from the repository; returns (stdout, stderr)."""
    env = {key: value for key, value in os.environ.items() if key != "TF_ENABLE_ONEDNN_OPTS"}
    env.update(PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    if onednn is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = onednn
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout, result.stderr


PRINT_STATE = (
    "import os, sys; from data_prep.tensorflow_env import onednn_enabled; "
    "print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'), onednn_enabled())"
)


@pytest.mark.parametrize("package", ["models", "training"])
@pytest.mark.parametrize("user_value, expected", [(None, "1 True"), ("0", "0 False")])
def test_import_sets_onednn_unless_user_chose(package, user_value, expected):
    # `import training` alone imports no TensorFlow, so import it afterwards, as its modules do.
    stdout, stderr = run_python(f"import {package}, tensorflow; {PRINT_STATE}", user_value)
    assert stdout.split() == expected.split()
    assert HINT not in stderr


def test_tensorflow_imported_first_with_onednn_off_logs_one_line():
    code = ("import logging; logging.basicConfig(); import tensorflow; import models, training; "
            "from data_prep.tensorflow_env import configure_tensorflow; configure_tensorflow(); "
            + PRINT_STATE)
    stdout, stderr = run_python(code, "0")
    assert stdout.split() == ["0", "False"]
    lines = [line for line in stderr.splitlines() if HINT in line]
    assert len(lines) == 1, stderr
    assert "TF_ENABLE_ONEDNN_OPTS=0" in lines[0]


def test_tensorflow_imported_first_with_onednn_on_logs_nothing():
    stdout, stderr = run_python(
        "import logging; logging.basicConfig(); import tensorflow; import models; " + PRINT_STATE,
        "1")
    assert stdout.split() == ["1", "True"]
    assert HINT not in stderr


def test_data_prep_and_configure_import_no_tensorflow():
    stdout, _ = run_python(
        "import sys, data_prep, data_prep.tensorflow_env as env; env.configure_tensorflow(); "
        "env.configure_tensorflow(); import os; "
        "print('tensorflow' in sys.modules, os.environ['TF_ENABLE_ONEDNN_OPTS'], "
        "env.onednn_enabled())")
    assert stdout.split() == ["False", "1", "None"]

