"""The first layer of every model: raw clips in (as stored: uint8, 16-bit, float), normalised
float clips out.

Keeping the normalisation inside the model means an exported `.keras` file takes the same
raw clips the data pipeline stores, with no preprocessing to re-type at prediction time:
the per-band mean and std (the dataset's statistics for multispectral data) travel with it.
"""

import keras
from keras import ops

# torchvision's ImageNet statistics, in 0-255 units, for 3-band (RGB) clips.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
# Any other band count: map 0..255 to -1..1, a neutral choice when nothing is known.
NEUTRAL_MEAN = 127.5
NEUTRAL_STD = 127.5


def default_mean_std(bands):
    """Per-band `(mean, std)` defaults in 0-255 units for a clip with `bands` bands.

    Args:
        bands: int, number of bands (channels) of the clip.

    Returns:
        Two tuples of `bands` floats: ImageNet's statistics for 3 bands, 127.5/127.5 otherwise.
    """
    if bands == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    return (NEUTRAL_MEAN,) * bands, (NEUTRAL_STD,) * bands


def per_band_values(value, bands, name):
    """Broadcast a number or check a sequence to `bands` floats; `ValueError` otherwise."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (float(value),) * bands
    if isinstance(value, (list, tuple)) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    ):
        if len(value) != bands:
            raise ValueError(
                f"`{name}` must be one number or a list of {bands} numbers (one per band). "
                f"Received: {name}={list(value)}"
            )
        return tuple(float(v) for v in value)
    raise ValueError(
        f"`{name}` must be a number or a list of numbers (one per band, in stored units). "
        f"Received: {name}={value!r}"
    )


@keras.saving.register_keras_serializable(package="models")
class ClipNormalization(keras.layers.Layer):
    """Casts a clip to float and normalises each band: `(x - mean) / std`.

    A uint8 clip is cast to the compute dtype first (exact, as it always was). Any other
    dtype (16-bit, float) is standardised in float32, so a reflectance of 10000 keeps its
    precision under a bfloat16 policy, then cast; a NaN (an invalid pixel) becomes 0, the
    band's mean.

    Args:
        mean: list of floats, one per band, in stored units (0-255 for 8-bit).
        std: list of floats, one per band, in stored units; all > 0.

    Input shape:
        `(batch, frames, height, width, bands)`, any dtype (normally the stored one).

    Output shape:
        The same shape, in the layer's compute dtype (float32 by default).

    Raises:
        ValueError: if `mean` and `std` have different lengths, or a std is not positive, or
            the input's last axis does not have `len(mean)` bands.

    Example:

    >>> layer = ClipNormalization(mean=[127.5] * 2, std=[127.5] * 2)
    >>> layer(np.full((1, 4, 8, 8, 2), 255, "uint8")).shape
    (1, 4, 8, 8, 2)
    """

    def __init__(self, mean, std, **kwargs):
        super().__init__(**kwargs)
        mean = [float(v) for v in mean]
        std = [float(v) for v in std]
        if len(mean) != len(std):
            raise ValueError(
                "`mean` and `std` must have one value per band each. "
                f"Received: mean={mean}, std={std}"
            )
        if any(v <= 0 for v in std):
            raise ValueError(f"Every `std` must be > 0. Received: std={std}")
        self.mean = mean
        self.std = std

    def build(self, input_shape):
        if input_shape[-1] != len(self.mean):
            raise ValueError(
                f"ClipNormalization was given {len(self.mean)} per-band values but the input "
                f"has {input_shape[-1]} bands. Received: input_shape={input_shape}"
            )

    def call(self, inputs):
        if keras.backend.standardize_dtype(inputs.dtype) == "uint8":
            x = ops.cast(inputs, self.compute_dtype)
            mean = ops.convert_to_tensor(self.mean, dtype=self.compute_dtype)
            std = ops.convert_to_tensor(self.std, dtype=self.compute_dtype)
            return (x - mean) / std
        x = ops.cast(inputs, "float32")
        standardised = (x - ops.convert_to_tensor(self.mean, dtype="float32")) / \
            ops.convert_to_tensor(self.std, dtype="float32")
        standardised = ops.where(ops.isnan(standardised), ops.zeros_like(standardised),
                                 standardised)
        return ops.cast(standardised, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(inputs.shape, dtype=self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update({"mean": list(self.mean), "std": list(self.std)})
        return config


@keras.saving.register_keras_serializable(package="models")
class FrameDifferences(keras.layers.Layer):
    """Differences of consecutive frames: `x[:, 1:] - x[:, :-1]`.

    A static background, however cluttered, cancels out and what moves remains, which is all
    a motion classifier should look at; `small3d` starts with it.

    Input shape:
        `(batch, frames, height, width, bands)` with at least 2 frames.

    Output shape:
        `(batch, frames - 1, height, width, bands)`.

    Example:

    >>> FrameDifferences()(np.zeros((2, 8, 16, 16, 3), "float32")).shape
    (2, 7, 16, 16, 3)
    """

    def build(self, input_shape):
        if input_shape[1] is not None and input_shape[1] < 2:
            raise ValueError(
                f"FrameDifferences needs clips of at least 2 frames. Received: input_shape={input_shape}"
            )

    def call(self, inputs):
        # Cast first: a uint8 difference would wrap around below zero.
        x = ops.cast(inputs, self.compute_dtype)
        return x[:, 1:] - x[:, :-1]

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(self.compute_output_shape(inputs.shape), dtype=self.compute_dtype)

    def compute_output_shape(self, input_shape):
        frames = None if input_shape[1] is None else input_shape[1] - 1
        return (input_shape[0], frames, *input_shape[2:])
