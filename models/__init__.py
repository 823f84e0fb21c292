"""Video classifiers: `build_model(name, num_classes, input_shape, **options)`.

See docs/MODELS.md for the architectures, band handling, normalisation and deformable options.
"""

# Before anything here imports Keras (and so TensorFlow): oneDNN on unless the user chose.
from core.tensorflow_env import configure_tensorflow

configure_tensorflow()

from models.build import build_model  # noqa: E402
from models.catalog import MODEL_NAMES  # noqa: E402

# Imported for their registration with Keras: after `import models`, every saved model,
# deformable or not, reloads with `keras.models.load_model` in a fresh process.
from models.batch_norm import FusedBatchNormalization  # noqa: E402
from models.deform_conv3d import DeformConv3D  # noqa: E402
from models.preprocessing import ClipNormalization, FrameDifferences  # noqa: E402
from models.s3d import SymmetricMaxPooling3D  # noqa: E402

__all__ = [
    "MODEL_NAMES",
    "ClipNormalization",
    "DeformConv3D",
    "FusedBatchNormalization",
    "FrameDifferences",
    "SymmetricMaxPooling3D",
    "build_model",
]
