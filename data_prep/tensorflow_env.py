"""TensorFlow's process environment: the one place that turns oneDNN on.

TensorFlow reads `TF_ENABLE_ONEDNN_OPTS` once, when it is imported. On CPUs without
AVX-512 VNNI/BF16 (most AVX2 machines) its default is off, and there 3-D convolutions
train much slower than with oneDNN (docs/BENCHMARKS.md, "oneDNN"). So every entry point
(train.py, evaluate.py, predict.py, `python -m data_prep`, bench/, tests/conftest.py) and
`import models` / `import training` call `configure_tensorflow()` before TensorFlow loads:
oneDNN is on unless the user set the variable (`TF_ENABLE_ONEDNN_OPTS=0` turns it off).

This module imports no TensorFlow, so `import data_prep` stays free of it.
"""

import logging
import os
import sys

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
