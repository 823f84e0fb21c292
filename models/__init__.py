"""Video classifiers: `build_model(name, num_classes, input_shape, **options)`.

See docs/MODELS.md for the architectures, band handling, normalisation and deformable options.
Every model's facts are one row of `models.catalog.MODELS`.

`import models` imports nothing else: the names below are exported lazily, so
`import models.catalog` (what `training.config` reads) stays without Keras and TensorFlow.
The first use of an export configures TensorFlow (oneDNN on unless the user chose,
`core.tensorflow_env`) before it imports Keras:

- `models.build_model(...)` (models.build), `models.MODEL_NAMES`, `models.MODELS`
  (models.catalog)
- the layers a saved model may hold: `models.ClipNormalization`, `models.FrameDifferences`,
  `models.DeformConv3D`, `models.FusedBatchNormalization`, `models.SymmetricMaxPooling3D`

A saved `.keras` model reloads with `keras.saving.load_model(path)` once
`models.register_layers()` has run (the loaders of `training` call it).
"""

import importlib

from core.tensorflow_env import configure_tensorflow

# export -> the module that defines it.
_EXPORTS = {
    "build_model": "models.build",
    "MODEL_NAMES": "models.catalog",
    "MODELS": "models.catalog",
    "ClipNormalization": "models.preprocessing",
    "FrameDifferences": "models.preprocessing",
    "DeformConv3D": "models.deform_conv3d",
    "FusedBatchNormalization": "models.batch_norm",
    "SymmetricMaxPooling3D": "models.s3d",
}

__all__ = [*_EXPORTS, "register_layers"]


def register_layers():
    """Registers with Keras every custom layer a saved model may hold, by importing its module.

    Each layer class is `@keras.saving.register_keras_serializable`, which takes effect when
    its module is imported: these are `ClipNormalization` and `FrameDifferences` (every
    model's first layers), `DeformConv3D`, `FusedBatchNormalization`, and whatever each catalog row's builder module
    defines (`SymmetricMaxPooling3D`, a new model's own layers). After this call
    `keras.saving.load_model(path, safe_mode=True)` reloads any model `build_model` made.
    """
    configure_tensorflow()  # before Keras loads
    from models import batch_norm, build, catalog, deform_conv3d  # noqa: F401  (build: preprocessing)

    for spec in catalog.MODELS.values():
        spec.build_function()


def __getattr__(name):
    if name in _EXPORTS:
        if _EXPORTS[name] != "models.catalog":
            configure_tensorflow()  # before the module imports Keras, so TensorFlow
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")
