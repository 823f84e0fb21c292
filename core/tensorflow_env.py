"""TensorFlow's process environment: the one place that turns oneDNN on.

TensorFlow reads `TF_ENABLE_ONEDNN_OPTS` once, when it is imported. On CPUs without
AVX-512 VNNI/BF16 (most AVX2 machines) its default is off, and there 3-D convolutions
train much slower than with oneDNN (docs/BENCHMARKS.md, "oneDNN"). So every entry point
(train.py, evaluate.py, predict.py, `python -m data_prep`, bench/, tests/conftest.py) and
`import models` / `import training` call `configure_tensorflow()` before TensorFlow loads:
oneDNN is on unless the user set the variable (`TF_ENABLE_ONEDNN_OPTS=0` turns it off).

`import_tensorflow_quietly()` imports TensorFlow without the lines its C++ start-up writes
to stderr on a machine without a GPU (CUDA driver probes, the absl preamble, cuInit), which
TF_CPP_MIN_LOG_LEVEL cannot hide because they come before TensorFlow reads it.

This module imports no TensorFlow at import, so `import data_prep` stays free of it.
"""

import contextlib
import logging
import os
import re
import sys
import tempfile

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"

logger = logging.getLogger(__name__)
_warned_onednn_off = False


def onednn_enabled():
    """Whether the imported TensorFlow runs oneDNN kernels; None if TensorFlow is not imported.

    Asks TensorFlow's own switch (it also knows the CPU-dependent default); falls back on
    the variable when that private module is missing.
    """
    if "tensorflow" not in sys.modules:
        return None
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:
        return os.environ.get(ONEDNN_VARIABLE, "1").lower() not in ("0", "false")
    return bool(_pywrap_util_port.IsMklEnabled())


def configure_tensorflow():
    """Turns oneDNN on for the TensorFlow this process is about to import; cheap, idempotent.

    Before TensorFlow is imported: sets `TF_ENABLE_ONEDNN_OPTS=1` unless the user has set it
    (any value, `0` included, is theirs and kept). After: TensorFlow can no longer change,
    so if oneDNN is off it logs one line, once per process, saying how to turn it on.
    """
    global _warned_onednn_off
    if "tensorflow" not in sys.modules:
        os.environ.setdefault(ONEDNN_VARIABLE, "1")
        return
    if _warned_onednn_off or onednn_enabled():
        return
    _warned_onednn_off = True
    if os.environ.get(ONEDNN_VARIABLE) is None:
        reason = "TensorFlow was imported first and this CPU's default is off"
    else:
        reason = f"{ONEDNN_VARIABLE}={os.environ[ONEDNN_VARIABLE]}"
    logger.warning(
        "TensorFlow runs without oneDNN (%s), so 3-D convolutions train slower: "
        "set %s=1 before importing TensorFlow to turn it on.", reason, ONEDNN_VARIABLE)


# What TensorFlow's start-up writes to stderr that says nothing to a user of this project:
# CUDA probes on a machine without one, the absl preamble, oneDNN's notice (on by choice,
# see above), CPU-instruction hints, and duplicate-registration notes of the CUDA plugins.
_NOISE = re.compile("|".join([
    r"All log messages before absl::InitializeLog\(\) is called",
    r"oneDNN custom operations are (on|off)",
    r"Could not find cuda drivers",
    r"failed call to cuInit",
    r"\] (retrieving CUDA diagnostic|hostname:|libcuda reported|kernel reported|"
    r"kernel driver does not appear|CUDA_ERROR)",
    r"Unable to register cu(DNN|FFT|BLAS) factory",
    r"computation placer already registered",
    r"TF-TRT Warning",
    r"This TensorFlow binary is optimized to use available CPU instructions",
    r"To enable the following instructions",
    r"Skipping registering GPU devices",
]))


def is_tensorflow_noise(line):
    """Whether a stderr line is one of TensorFlow's start-up messages listed in `_NOISE`."""
    return bool(_NOISE.search(line))


@contextlib.contextmanager
def tensorflow_noise_filtered():
    """Holds back stderr (file descriptor 2, so C++ writes too) and drops TensorFlow's noise.

    Inside the block fd 2 goes to a temporary file (not a pipe, which could fill and block);
    at the end every captured line that is not known noise (`is_tensorflow_noise`) is written
    to stderr again, so real errors still show, only later. For what loads TensorFlow: its
    import, the first device listing (when CUDA is probed), a worker's first task.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile(mode="w+b") as captured:
            os.dup2(captured.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                captured.seek(0)
                kept = [line for line in captured.read().decode("utf-8", "replace").splitlines()
                        if line.strip() and not is_tensorflow_noise(line)]
                if kept:
                    sys.stderr.write("\n".join(kept) + "\n")
                    sys.stderr.flush()
    finally:
        os.close(saved)


def import_tensorflow_quietly():
    """Imports TensorFlow and lists its devices, without its start-up noise on stderr.

    oneDNN is configured first (`configure_tensorflow`); see `tensorflow_noise_filtered`.

    Returns:
        list of str, the names of the GPUs TensorFlow will use (empty on a CPU machine).
    """
    configure_tensorflow()
    with tensorflow_noise_filtered():
        import tensorflow as tf

        gpus = [device.name for device in tf.config.list_physical_devices("GPU")]
    configure_tensorflow()  # the one-line oneDNN warning, if it applies
    return gpus
