"""Video classifiers: `build_model(name, num_classes, input_shape, **options)`.

See docs/MODELS.md for the architectures, band handling, normalisation and deformable options.
"""

from models.build import MODEL_NAMES, build_model

# Imported for their registration with Keras: after `import models`, every saved model,
# deformable or not, reloads with `keras.models.load_model` in a fresh process.
from models.deform_conv3d import DeformConv3D
from models.preprocessing import ClipNormalization, FrameDifferences
from models.s3d import SymmetricMaxPooling3D

__all__ = [
    "MODEL_NAMES",
    "ClipNormalization",
    "DeformConv3D",
    "FrameDifferences",
    "SymmetricMaxPooling3D",
    "build_model",
]
