"""`c3d`: the C3D network of Tran et al. 2015 ("Learning Spatiotemporal Features with 3D
Convolutional Networks").

Eight 3x3x3 convolutions with biases (64, 128, 256, 256, 512, 512, 512, 512), each followed
by a ReLU; pool1 is 1x2x2 (keeps early temporal detail), pool2..pool5 are 2x2x2; then fc6
and fc7 (4096, ReLU, dropout) and fc8. The paper's network has no batch norm and neither
does this one. Pools use Keras's `padding="same"`: at 16x112x112 pool5 then sees 2x7x7 and
gives 1x4x4, the 8192 features fc6 of the original C3D expects (Caffe's pool5 rounds up the
same way), and small test clips still pool down to at least 1x1x1. fc6's input size, and so
its parameter count, follows the clip size (8192 x 4096 at 16x112x112).

Layer names are the paper's (Caffe's): `conv1a`, `conv2a`, `conv3a`, `conv3b`, ..., `pool1`
.. `pool5`, `fc6`, `fc7`, `fc8`. Deformable "stages" are the five conv groups
(1: conv1a, 2: conv2a, 3: conv3a-b, 4: conv4a-b, 5: conv5a-b).
"""

import keras

from models.conv import conv3d

# One row per conv group: (conv names and filters, pool size after the group).
C3D_GROUPS = (
    ((("conv1a", 64),), (1, 2, 2)),
    ((("conv2a", 128),), (2, 2, 2)),
    ((("conv3a", 256), ("conv3b", 256)), (2, 2, 2)),
    ((("conv4a", 512), ("conv4b", 512)), (2, 2, 2)),
    ((("conv5a", 512), ("conv5b", 512)), (2, 2, 2)),
)
NUM_GROUPS = len(C3D_GROUPS)
FC_UNITS = 4096


def c3d(x, num_classes, *, dropout=0.5, deformable_stages=(), offset_groups=1, modulated=False):
    """Builds C3D on the normalised clip `x` and returns the logits.

    Args:
        x: float tensor `(batch, frames, height, width, bands)` with static sizes (fc6's
            input size depends on them).
        num_classes: int, number of logits.
        dropout: float in [0, 1), dropout after fc6 and after fc7 (the paper's 0.5).
        deformable_stages: 1-based conv groups (1..5) whose 3x3x3 convolutions become
            `DeformConv3D`.
        offset_groups: int, offset groups of the deformable convolutions.
        modulated: bool, modulated (DCNv2) deformable convolutions.

    Returns:
        Logits tensor `(batch, num_classes)`.
    """
    for group, (convs, pool_size) in enumerate(C3D_GROUPS, start=1):
        for name, filters in convs:
            x = conv3d(
                x,
                filters,
                3,
                padding=1,
                use_bias=True,
                name=name,
                deformable=group in deformable_stages,
                offset_groups=offset_groups,
                modulated=modulated,
            )
            x = keras.layers.ReLU(name=f"{name}.relu")(x)
        x = keras.layers.MaxPooling3D(pool_size, padding="same", name=f"pool{group}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    for name in ("fc6", "fc7"):
        x = keras.layers.Dense(FC_UNITS, activation="relu", name=name)(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"{name}.dropout")(x)
    return keras.layers.Dense(num_classes, name="fc8")(x)
