"""The one Keras version whose private methods this package patches or calls.

`training.distribution` replaces `Model._maybe_symbolic_build` and calls `_symbolic_build`;
`training.callbacks` walks `Model._flatten_layers`. Private methods change without notice
between releases, so requirements.txt pins keras, and each patch site calls
`require_supported_keras` first: another version fails with one clear line instead of a
traceback deep inside Keras's trainer.
"""

import keras

from core.errors import UserError

SUPPORTED_KERAS_VERSION = "3.15.1"


def require_supported_keras(feature, installed=None):
    """Raises unless the installed Keras is `SUPPORTED_KERAS_VERSION`.

    Args:
        feature: str, what needs the private API (named in the message).
        installed: str or None, the version to check; None means `keras.__version__`.

    Raises:
        UserError: another Keras version is installed.
    """
    installed = keras.__version__ if installed is None else installed
    if installed != SUPPORTED_KERAS_VERSION:
        raise UserError(f"Expected keras=={SUPPORTED_KERAS_VERSION} for {feature} (it patches "
                        f"private Keras methods; pip install -r requirements.txt). "
                        f"Received: keras.__version__={installed!r}")
