"""The argument checks the 3-D layers share (Keras's `argument_validation`, for three axes).

`standardize_triple` turns `kernel_size`, `strides`, `dilation_rate`, `pool_size` and
`padding` arguments into 3 ints for `DeformConv3D`, `SymmetricMaxPooling3D` and
`models.conv.conv3d`; `standardize_padding` checks a Keras padding name. Both raise a
`ValueError` that quotes the value, as Keras's layers do.
"""

import numbers

PADDINGS = ("valid", "same")


def standardize_triple(value, name, minimum=1):
    """An int or 3 ints -> a tuple of 3 ints, each >= `minimum`.

    >>> standardize_triple(3, "kernel_size"), standardize_triple([1, 3, 3], "kernel_size")
    ((3, 3, 3), (1, 3, 3))
    >>> standardize_triple((1, 0, 1), "strides")
    Traceback (most recent call last):
    ...
    ValueError: `strides` must be an int or a tuple of 3 ints, each >= 1. Received: strides=(1, 0, 1)
    """
    values = (value,) * 3 if isinstance(value, numbers.Integral) else value
    if (
        not isinstance(values, (list, tuple))
        or len(values) != 3
        or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= minimum
                   for v in values)
        or isinstance(value, bool)
    ):
        raise ValueError(f"`{name}` must be an int or a tuple of 3 ints, each >= {minimum}. "
                         f"Received: {name}={value!r}")
    return tuple(int(v) for v in values)


def standardize_padding(padding):
    """`"valid"` or `"same"`, in any case -> lower case; ValueError for anything else."""
    normalized = padding.lower() if isinstance(padding, str) else padding
    if normalized not in PADDINGS:
        raise ValueError(f"The `padding` argument must be one of {', '.join(map(repr, PADDINGS))}. "
                         f"Received: padding={padding!r}")
    return normalized
