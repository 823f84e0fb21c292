"""`FactoredMaxPooling3D`: Keras's MaxPooling3D computed with 2-D max pools only.

LiteRT has no builtin kernel for a 3-D max pool (`tf.MaxPool3D` needs the Flex delegate),
but it has MAX_POOL_2D. A max over a (t, h, w) box is the max over t of the max over
(h, w), and TensorFlow's "same" padding is decided for each axis on its own, so a spatial
2-D pool of every frame followed by a temporal 2-D pool (a (t, 1) window over frames x
pixels) gives the same numbers, bit for bit: nothing is added or rounded, only compared.
`training.export` swaps it in for `keras.layers.MaxPooling3D` in the LiteRT graph.
"""

import keras
from keras import ops


class FactoredMaxPooling3D(keras.layers.Layer):
    """A 3-D max pool as a spatial then a temporal 2-D max pool (same numbers).

    Args:
        pool_size: tuple of 3 ints, (frames, height, width) of the window.
        strides: tuple of 3 ints, or None for `pool_size`.
        padding: "valid" or "same" (TensorFlow's rule, each axis on its own).

    Input shape:
        `(batch, frames, height, width, channels)`.

    Output shape:
        As `keras.layers.MaxPooling3D(pool_size, strides, padding)` gives.

    Example:

    >>> layer = FactoredMaxPooling3D((2, 2, 2), padding="same")
    >>> layer(np.zeros((1, 3, 5, 5, 4), "float32")).shape
    (1, 2, 3, 3, 4)
    """

    def __init__(self, pool_size, strides=None, padding="valid", **kwargs):
        super().__init__(**kwargs)
        self.pool_size = tuple(int(v) for v in pool_size)
        self.strides = tuple(int(v) for v in (strides or pool_size))
        self.padding = str(padding).lower()
        if len(self.pool_size) != 3 or len(self.strides) != 3:
            raise ValueError("Expected pool_size and strides of 3 ints each. Received: "
                             f"pool_size={pool_size}, strides={strides}")
        if self.padding not in ("valid", "same"):
            raise ValueError(f"Expected padding 'valid' or 'same'. Received: padding={padding}")

    @classmethod
    def from_max_pooling3d(cls, layer):
        """The replacement of a channels-last `keras.layers.MaxPooling3D`, same name."""
        if layer.data_format != "channels_last":
            raise ValueError("Expected a channels_last MaxPooling3D. Received: "
                             f"data_format={layer.data_format} ({layer.name})")
        return cls(layer.pool_size, layer.strides, layer.padding, name=layer.name)

    def call(self, inputs):
        frames, height, width, channels = inputs.shape[1:]
        (pt, ph, pw), (st, sh, sw) = self.pool_size, self.strides
        x = ops.reshape(inputs, (-1, height, width, channels))
        x = ops.max_pool(x, (ph, pw), (sh, sw), padding=self.padding)
        pooled_h, pooled_w = x.shape[1:3]
        x = ops.reshape(x, (-1, frames, pooled_h * pooled_w, channels))
        x = ops.max_pool(x, (pt, 1), (st, 1), padding=self.padding)
        return ops.reshape(x, (-1, x.shape[1], pooled_h, pooled_w, channels))

    def compute_output_shape(self, input_shape):
        return keras.layers.MaxPooling3D(self.pool_size, self.strides,
                                         self.padding).compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"pool_size": self.pool_size, "strides": self.strides,
                       "padding": self.padding})
        return config
