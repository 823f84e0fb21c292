"""`small3d`: a CPU-friendly Conv3D classifier (about 0.73M parameters) for the demo and tests.

Motion lives in the differences between neighbouring frames, so by default the network sees
only those (`FrameDifferences`): a static, cluttered background cancels out and cannot be
memorised; on the synthetic motion demo that took held-out accuracy from 81-93% to
90-100% (docs/MODELS.md). Every convolution, from the first one, spans 3 frames;
the first one also halves height and width, which keeps a 16x64x64 clip cheap. Batch norm
after each convolution lets it train from scratch at a high learning rate, and global
average pooling makes the head independent of the clip size.

Layer names: `frame_differences`, `conv{i}` / `bn{i}` for the five conv groups (i = 1..5),
`dropout`, `fc`.
"""

import keras

from models.batch_norm import FusedBatchNormalization
from models.conv import conv3d
from models.preprocessing import FrameDifferences

# (filters, conv strides, pool size after the group or None), one row per conv group.
SMALL3D_GROUPS = (
    (16, (1, 2, 2), None),
    (32, (1, 1, 1), (1, 2, 2)),
    (64, (1, 1, 1), (2, 2, 2)),
    (128, (1, 1, 1), (2, 2, 2)),
    (128, (1, 1, 1), None),
)
NUM_GROUPS = len(SMALL3D_GROUPS)


def small3d(
    x,
    num_classes,
    *,
    dropout=0.2,
    frame_differences=True,
    deformable_stages=(),
    offset_groups=1,
    modulated=False,
):
    """Builds small3d's layers on the normalised clip `x` and returns the logits.

    Args:
        x: float tensor `(batch, frames, height, width, bands)`, at least 2 frames when
            `frame_differences` is on.
        num_classes: int, number of logits.
        dropout: float in [0, 1), dropout before the classifier.
        frame_differences: bool, feed the differences of consecutive frames (F - 1 of them)
            instead of the frames themselves; turn it off when appearance matters.
        deformable_stages: 1-based conv groups (1..5) whose 3x3x3 convolution becomes a
            `DeformConv3D`.
        offset_groups: int, offset groups of the deformable convolutions.
        modulated: bool, modulated (DCNv2) deformable convolutions.

    Returns:
        Logits tensor `(batch, num_classes)`.
    """
    if frame_differences:
        x = FrameDifferences(name="frame_differences")(x)
    for index, (filters, strides, pool_size) in enumerate(SMALL3D_GROUPS, start=1):
        x = conv3d(
            x,
            filters,
            3,
            strides=strides,
            padding=1,
            use_bias=False,
            kernel_initializer="he_normal",
            name=f"conv{index}",
            deformable=index in deformable_stages,
            offset_groups=offset_groups,
            modulated=modulated,
        )
        # momentum 0.9 (PyTorch's 0.1): Keras's 0.99 leaves the moving statistics far behind
        # the weights in a few-minute CPU run, and evaluation then lags training.
        x = FusedBatchNormalization(momentum=0.9, name=f"bn{index}")(x)
        x = keras.layers.ReLU(name=f"relu{index}")(x)
        if pool_size is not None:
            # "same" so clips with few frames or small frames still pool to at least 1.
            x = keras.layers.MaxPooling3D(pool_size, padding="same", name=f"pool{index}")(x)
    x = keras.layers.GlobalAveragePooling3D(name="avgpool")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    return keras.layers.Dense(num_classes, name="fc")(x)
