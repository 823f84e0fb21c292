"""Keras weight files (`.weights.h5`, `.keras`) checked before their data is read.

A 3 MB `.weights.h5` may declare a 4 GiB dataset (chunks of zeros compress to nothing, an
unwritten dataset reads as its fill value); reading it whole and then comparing shapes
spends the memory first. `dataset_value` compares a dataset's shape and type with the
variable it is for before reading a byte: only a dataset of the variable's own shape is
read (so at most the model's size), any other gets a stand-in of its shape that holds no
data (`np.broadcast_to` of one element), which is all the shape checks and their messages
need. `open_archive_member` gives h5py the weights inside a `.keras` zip as a stream,
instead of inflating the member into memory, and refuses members torch or Keras never
write (encrypted, an unknown compression, or inflating far past their stored size).
"""

import h5py
import numpy as np

from models.torch_checkpoint import CheckpointError, check_zip_member


def dataset_value(dataset, variable_shape, path, key):
    """The array of an h5py `dataset` if its shape is `variable_shape`, else a data-free
    stand-in of the dataset's shape (its `.shape` for the checks, nothing to assign).

    Raises:
        CheckpointError: the dataset is not numeric, or cannot be read.
    """
    if not isinstance(dataset, h5py.Dataset) or dataset.dtype.kind not in "biuf":
        raise CheckpointError(f"{path}: {key} is not a dataset of numbers (a corrupt or "
                              "foreign file)")
    shape = tuple(dataset.shape)
    if shape != tuple(variable_shape):
        return np.broadcast_to(np.zeros((), dtype=dataset.dtype), shape)
    try:
        return np.asarray(dataset[()])
    except (OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{path}: cannot read {key} (a truncated or corrupt file): "
                              f"{error}"[:400]) from None


def open_archive_member(archive, name, path):
    """`archive.open(name)` for h5py to read as a file, after checking what the zip says
    about the member. KeyError if it is missing."""
    info = archive.getinfo(name)
    check_zip_member(info, path)
    return archive.open(info)
