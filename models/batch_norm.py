"""`FusedBatchNormalization`: Keras's BatchNormalization computed by TensorFlow's fused kernel.

Keras 3 computes BatchNormalization from separate ops (mean, variance, normalise, scale,
shift: several passes over the activations) and, under a bfloat16/float16 policy, casts the
activations to float32 and back around them. `tf.nn.fused_batch_norm` (FusedBatchNormV3)
does it in one kernel that takes bfloat16/float16 activations and keeps the statistics,
scale and offset in float32, as PyTorch's BatchNorm does under autocast. For an r3d_18
training step in bfloat16 that took the time outside oneDNN's convolutions from 6.7 s to
2.3 s (docs/BENCHMARKS.md, "bfloat16").

One difference from Keras's layer, the one PyTorch makes too: the moving variance is updated
with the batch variance's unbiased estimate (n / (n - 1), what the fused kernel returns),
not the biased one; normalisation itself uses the biased variance in both.
Everything else (weights, their names, config, `trainable=False` running in inference mode)
is Keras's BatchNormalization, which this subclasses, so weights and checkpoints carry over.
"""

import keras
import tensorflow as tf

_FUSED_DTYPES = ("float32", "bfloat16", "float16")


@keras.saving.register_keras_serializable(package="models")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """BatchNormalization over the last axis of 4-D or 5-D inputs, by the fused kernel.

    Takes the arguments of `keras.layers.BatchNormalization`; inputs, masks, axes or options
    the fused kernel does not cover (a mask, another axis, renorm, synchronized) fall back
    to Keras's computation.

    Example:

    >>> layer = FusedBatchNormalization(epsilon=1e-5, momentum=0.9)
    >>> layer(np.zeros((2, 4, 8, 8, 3), "float32"), training=True).shape
    (2, 4, 8, 8, 3)
    """

    def _fusable(self, inputs, mask):
        rank = len(inputs.shape)
        return (mask is None and not self.renorm and not self.synchronized
                and rank in (4, 5) and self.axis in (-1, rank - 1)
                and inputs.shape[-1] is not None
                and keras.backend.standardize_dtype(inputs.dtype) in _FUSED_DTYPES)

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        data_format = "NDHWC" if len(inputs.shape) == 5 else "NHWC"
        channels = inputs.shape[-1]
        scale = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones(channels)
        offset = tf.cast(self.beta, tf.float32) if self.center else tf.zeros(channels)
        if training and self.trainable:
            outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                inputs, scale, offset, epsilon=self.epsilon, data_format=data_format,
                is_training=True)
            self.moving_mean.assign(
                self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(
                self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        else:
            outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
                inputs, scale, offset, mean=tf.cast(self.moving_mean, tf.float32),
                variance=tf.cast(self.moving_variance, tf.float32), epsilon=self.epsilon,
                data_format=data_format, is_training=False)
        return tf.cast(outputs, self.compute_dtype)
