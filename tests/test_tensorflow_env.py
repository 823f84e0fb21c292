"""core.tensorflow_env: oneDNN on by default, the user's choice kept, one line when too late.

Each case runs in a fresh interpreter: TensorFlow reads the variable only when it is imported,
and this test process imported it long ago.
"""

import os
import subprocess
import sys

import pytest

from core.tensorflow_env import is_tensorflow_noise

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
    "import os, sys; from core.tensorflow_env import onednn_enabled; "
    "print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'), onednn_enabled())"
)


@pytest.mark.parametrize("code", [
    # `import training` alone imports no TensorFlow, so import it afterwards, as its modules do.
    "import training, tensorflow",
    # `import models` does nothing; its first Keras-loading export configures TensorFlow.
    "import models; models.build_model",
])
@pytest.mark.parametrize("user_value, expected", [(None, "1 True"), ("0", "0 False")])
def test_import_sets_onednn_unless_user_chose(code, user_value, expected):
    stdout, stderr = run_python(f"{code}; {PRINT_STATE}", user_value)
    assert stdout.split() == expected.split()
    assert HINT not in stderr


def test_tensorflow_imported_first_with_onednn_off_logs_one_line():
    code = ("import logging; logging.basicConfig(); import tensorflow; import models, training; "
            "from core.tensorflow_env import configure_tensorflow; configure_tensorflow(); "
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
        "import sys, data_prep, core.tensorflow_env as env; env.configure_tensorflow(); "
        "env.configure_tensorflow(); import os; "
        "print('tensorflow' in sys.modules, os.environ['TF_ENABLE_ONEDNN_OPTS'], "
        "env.onednn_enabled())")
    assert stdout.split() == ["False", "1", "None"]



# The lines a CPU machine showed for `import tensorflow` and the first device listing.
NOISE_LINES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796138939.197033   19212 port.cc:153] oneDNN custom operations are on. You "
    "may see slightly different numerical results",
    "I0000 00:00:1796138939.197322   19212 cudart_stub.cc:31] Could not find cuda drivers on "
    "your machine, GPU will not be used.",
    "E0000 00:00:1796138941.870294   19212 cuda_platform.cc:52] failed call to cuInit: INTERNAL:"
    " CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
]


@pytest.mark.parametrize("line, noise", [
    *((line, True) for line in NOISE_LINES),
    ("E0000 00:00:1.0   1 op_kernel.cc:1] OP_REQUIRES failed: out of memory", False),
    ("Traceback (most recent call last):", False),
])
def test_is_tensorflow_noise_knows_the_start_up_lines_only(line, noise):
    assert is_tensorflow_noise(line) is noise


def test_quiet_import_drops_the_noise_and_keeps_other_lines():
    """Without TF_CPP_MIN_LOG_LEVEL: the noise is gone, a real line written to fd 2 (here by
    hand, while stderr is held back) still arrives."""
    code = ("import os\nfrom core import tensorflow_env as env\n"
            "with env.tensorflow_noise_filtered():\n"
            "    os.write(2, b'a real error line\\n')\n"
            "print(env.import_tensorflow_quietly())\n"
            "import tensorflow as tf\nprint(int(tf.constant(2) * 3))")
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = REPO
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == "6"
    assert result.stderr.strip().splitlines() == ["a real error line"], result.stderr
