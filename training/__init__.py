"""Config, input pipeline, callbacks, run directory and evaluation: see docs/TRAINING.md."""

# Before any training module imports TensorFlow: oneDNN on unless the user chose.
from core.tensorflow_env import configure_tensorflow

configure_tensorflow()
