"""`r3d_18`, `mc3_18`, `r2plus1d_18`: the ResNet-18 video family of Tran et al. 2018.

This follows torchvision's `torchvision/models/video/resnet.py` layer for layer: the same
stems, kernel sizes, strides, symmetric paddings, batch-norm placement (eps 1e-5, PyTorch
momentum 0.1 = Keras 0.9), no convolution biases, the R(2+1)D mid-plane formula, the
downsample shortcuts, and the same initialisation (Kaiming normal, fan-out, for convolutions;
N(0, 0.01) for the classifier). With 3 bands and 400 classes the trainable parameter counts
are torchvision's: r3d_18 33,371,472; mc3_18 11,695,440; r2plus1d_18 31,505,325.

Layer names are torchvision's state_dict prefixes, so weights map one to one: the Keras
layer `layer2.0.conv1.0` holds `layer2.0.conv1.0.weight`, `layer2.0.downsample.1` holds the
batch norm `layer2.0.downsample.1.{weight,bias,running_mean,running_var}`, `fc` holds
`fc.{weight,bias}` (docs/MODELS.md has the full mapping). Layers without weights get names
in the same scheme (`stem.2` is the ReLU at torchvision's index 2, `layer1.0.relu`), and the
padding a strided convolution needs is `<conv name>.pad`.
"""

import keras

from models.batch_norm import FusedBatchNormalization
from models.conv import conv3d

STEM_PLANES = 64
R2PLUS1D_STEM_MIDPLANES = 45
STAGE_PLANES = (64, 128, 256, 512)
STAGE_STRIDES = (1, 2, 2, 2)
BLOCKS_PER_STAGE = (2, 2, 2, 2)
NUM_STAGES = len(STAGE_PLANES)

# torchvision's initialisation: kaiming_normal_(mode="fan_out", nonlinearity="relu").
CONV_INITIALIZER = {
    "class_name": "VarianceScaling",
    "config": {"scale": 2.0, "mode": "fan_out", "distribution": "untruncated_normal"},
}
FC_INITIALIZER = {"class_name": "RandomNormal", "config": {"mean": 0.0, "stddev": 0.01}}


def _batch_norm(x, name):
    # PyTorch's BatchNorm3d defaults: eps 1e-5, momentum 0.1 (Keras counts it the other way).
    return FusedBatchNormalization(epsilon=1e-5, momentum=0.9, name=name)(x)


def _relu(x, name):
    return keras.layers.ReLU(name=name)(x)


def _conv(x, filters, kernel_size, strides, padding, name, deformable=False, **deform_options):
    return conv3d(
        x,
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=False,
        kernel_initializer=CONV_INITIALIZER,
        name=name,
        deformable=deformable,
        **deform_options,
    )


# The three conv builders of torchvision: (x, planes, midplanes, stride, name, ...) -> y, with
# the stride of the block's downsample shortcut.


def _conv3d_simple(x, planes, midplanes, stride, name, deformable, deform_options):
    """3x3x3, stride s in every axis (torchvision's Conv3DSimple)."""
    return _conv(x, planes, 3, stride, 1, name, deformable, **deform_options)


def _conv3d_no_temporal(x, planes, midplanes, stride, name, deformable, deform_options):
    """1x3x3, stride (1, s, s) (torchvision's Conv3DNoTemporal)."""
    return _conv(x, planes, (1, 3, 3), (1, stride, stride), (0, 1, 1), name, deformable, **deform_options)


def _conv2plus1d(x, planes, midplanes, stride, name, deformable, deform_options):
    """1x3x3 to `midplanes`, BN, ReLU, then 3x1x1 (torchvision's Conv2Plus1D, a Sequential).

    When deformable, the spatial 1x3x3 factor becomes a DeformConv3D (see docs/MODELS.md).
    """
    x = _conv(x, midplanes, (1, 3, 3), (1, stride, stride), (0, 1, 1), f"{name}.0", deformable, **deform_options)
    x = _batch_norm(x, f"{name}.1")
    x = _relu(x, f"{name}.2")
    return _conv(x, planes, (3, 1, 1), (stride, 1, 1), (1, 0, 0), f"{name}.3")


CONV_BUILDERS = {
    # name: (builder, downsample stride for a block stride s)
    "simple": (_conv3d_simple, lambda s: (s, s, s)),
    "no_temporal": (_conv3d_no_temporal, lambda s: (1, s, s)),
    "2plus1d": (_conv2plus1d, lambda s: (s, s, s)),
}

# Per model: stem kind and the conv builder of each of the four stages.
VIDEO_RESNETS = {
    "r3d_18": ("basic", ("simple",) * 4),
    "mc3_18": ("basic", ("simple",) + ("no_temporal",) * 3),
    "r2plus1d_18": ("r2plus1d", ("2plus1d",) * 4),
}


def _stem(x, kind, planes, midplanes):
    if kind == "basic":
        # 3x7x7 conv to 64, stride (1, 2, 2), padding (1, 3, 3); BN; ReLU.
        x = _conv(x, planes, (3, 7, 7), (1, 2, 2), (1, 3, 3), "stem.0")
        x = _batch_norm(x, "stem.1")
        return _relu(x, "stem.2")
    # R(2+1)D: a factored stem, 1x7x7 to 45 then 3x1x1 to 64.
    x = _conv(x, midplanes, (1, 7, 7), (1, 2, 2), (0, 3, 3), "stem.0")
    x = _batch_norm(x, "stem.1")
    x = _relu(x, "stem.2")
    x = _conv(x, planes, (3, 1, 1), 1, (1, 0, 0), "stem.3")
    x = _batch_norm(x, "stem.4")
    return _relu(x, "stem.5")


def _basic_block(x, inplanes, planes, stride, conv_kind, name, deformable, deform_options):
    builder, downsample_stride = CONV_BUILDERS[conv_kind]
    # torchvision computes the mid-planes once per block from (inplanes, planes), so both
    # factored convolutions of a block use it (it only matters for Conv2Plus1D).
    midplanes = (inplanes * planes * 3 * 3 * 3) // (inplanes * 3 * 3 + 3 * planes)
    out = builder(x, planes, midplanes, stride, f"{name}.conv1.0", deformable, deform_options)
    out = _batch_norm(out, f"{name}.conv1.1")
    out = _relu(out, f"{name}.conv1.2")
    out = builder(out, planes, midplanes, 1, f"{name}.conv2.0", deformable, deform_options)
    out = _batch_norm(out, f"{name}.conv2.1")
    if stride != 1 or inplanes != planes:
        shortcut = _conv(x, planes, 1, downsample_stride(stride), 0, f"{name}.downsample.0")
        shortcut = _batch_norm(shortcut, f"{name}.downsample.1")
    else:
        shortcut = x
    out = keras.layers.Add(name=f"{name}.add")([out, shortcut])
    return _relu(out, f"{name}.relu")


def video_resnet18(
    x,
    num_classes,
    *,
    arch,
    dropout=0.0,
    deformable_stages=(),
    offset_groups=1,
    modulated=False,
    stem_planes=STEM_PLANES,
    stem_midplanes=R2PLUS1D_STEM_MIDPLANES,
    stage_planes=STAGE_PLANES,
    blocks_per_stage=BLOCKS_PER_STAGE,
):
    """Builds one of torchvision's video ResNet-18s on the normalised clip `x`.

    Args:
        x: float tensor `(batch, frames, height, width, bands)`.
        num_classes: int, number of logits.
        arch: `"r3d_18"`, `"mc3_18"` or `"r2plus1d_18"`.
        dropout: float in [0, 1), dropout before `fc` (torchvision has none: default 0).
        deformable_stages: 1-based residual stages (1..4, torchvision's `layer1..layer4`)
            whose block convolutions (3x3x3, mc3's 1x3x3, or R(2+1)D's spatial 1x3x3
            factor) become `DeformConv3D`. The stem and the 1x1x1 shortcuts stay plain.
        offset_groups: int, offset groups of the deformable convolutions.
        modulated: bool, modulated (DCNv2) deformable convolutions.
        stem_planes: int, output channels of the stem (torchvision: 64).
        stem_midplanes: int, channels between R(2+1)D's two stem convolutions
            (torchvision: 45; other stems ignore it).
        stage_planes: 4 ints, output channels of each residual stage (torchvision:
            64, 128, 256, 512).
        blocks_per_stage: 4 ints, residual blocks per stage (torchvision: 2 each).
            The last three are for narrow test models built like torchvision's.

    Returns:
        Logits tensor `(batch, num_classes)`.
    """
    stem_kind, conv_kinds = VIDEO_RESNETS[arch]
    deform_options = {"offset_groups": offset_groups, "modulated": modulated}
    x = _stem(x, stem_kind, stem_planes, stem_midplanes)
    inplanes = stem_planes
    for stage, (planes, stride, blocks, conv_kind) in enumerate(
        zip(stage_planes, STAGE_STRIDES, blocks_per_stage, conv_kinds), start=1
    ):
        deformable = stage in deformable_stages
        for block in range(blocks):
            x = _basic_block(
                x,
                inplanes,
                planes,
                stride if block == 0 else 1,
                conv_kind,
                f"layer{stage}.{block}",
                deformable,
                deform_options,
            )
            inplanes = planes
    x = keras.layers.GlobalAveragePooling3D(name="avgpool")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    return keras.layers.Dense(num_classes, kernel_initializer=FC_INITIALIZER, name="fc")(x)


def r3d_18(x, num_classes, **options):
    """R3D-18: 3x3x3 convolutions in every stage. See `video_resnet18` for the options."""
    return video_resnet18(x, num_classes, arch="r3d_18", **options)


def mc3_18(x, num_classes, **options):
    """MC3-18: 3x3x3 in stage 1, 1x3x3 (no temporal) in stages 2-4. See `video_resnet18`."""
    return video_resnet18(x, num_classes, arch="mc3_18", **options)


def r2plus1d_18(x, num_classes, **options):
    """R(2+1)D-18: every 3x3x3 factored into 1x3x3 then 3x1x1. See `video_resnet18`."""
    return video_resnet18(x, num_classes, arch="r2plus1d_18", **options)
