"""Video classifiers: `build_model(name, num_classes, input_shape, **options)`.

See docs/MODELS.md for the architectures, band handling, normalisation and deformable options.
"""

from models.build import MODEL_NAMES, build_model
from models.preprocessing import ClipNormalization

__all__ = ["MODEL_NAMES", "ClipNormalization", "build_model"]
