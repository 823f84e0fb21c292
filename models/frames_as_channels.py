"""`frames_as_channels`: the Conv2D baseline that folds the frames into the channels.

A clip `(F, H, W, band)` becomes an image `(H, W, F*band)`, so only the first convolution
sees time, all at once. This is the design the project exists to improve on; it is kept for
ablations. Its widths are chosen so it has about as many parameters as `small3d`
(0.77M vs 0.73M at 16 frames x 3 bands), which makes the comparison about the architecture.

Layer names: `fold_frames.permute`, `fold_frames.reshape`, then `conv{i}` / `bn{i}` for the
five conv groups (i = 1..5), `dropout`, `fc`.
"""

import keras

# (filters, conv strides, pool size after the group or None), one row per conv group.
FRAMES_AS_CHANNELS_GROUPS = (
    (32, 2, None),
    (64, 1, 2),
    (128, 1, 2),
    (192, 1, 2),
    (256, 1, None),
)


def frames_as_channels(x, num_classes, *, dropout=0.2):
    """Builds the baseline's layers on the normalised clip `x` and returns the logits.

    Args:
        x: float tensor `(batch, frames, height, width, bands)` with static frames and bands.
        num_classes: int, number of logits.
        dropout: float in [0, 1), dropout before the classifier.

    Returns:
        Logits tensor `(batch, num_classes)`.
    """
    frames, height, width, bands = x.shape[1:]
    # (F, H, W, b) -> (H, W, F, b) -> (H, W, F*b): channel index f*b + band, frame-major.
    x = keras.layers.Permute((2, 3, 1, 4), name="fold_frames.permute")(x)
    x = keras.layers.Reshape((height, width, frames * bands), name="fold_frames.reshape")(x)
    for index, (filters, strides, pool_size) in enumerate(FRAMES_AS_CHANNELS_GROUPS, start=1):
        x = keras.layers.Conv2D(
            filters,
            3,
            strides=strides,
            padding="same",
            use_bias=False,
            kernel_initializer="he_normal",
            name=f"conv{index}",
        )(x)
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"bn{index}")(x)
        x = keras.layers.ReLU(name=f"relu{index}")(x)
        if pool_size is not None:
            x = keras.layers.MaxPooling2D(pool_size, padding="same", name=f"pool{index}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    return keras.layers.Dense(num_classes, name="fc")(x)
