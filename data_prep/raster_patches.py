"""Patches of a labelled raster: the grid, each patch's label, and a spatial train/test split.

A time-series raster (a multi-date GeoTIFF stack, or a folder of per-date GeoTIFFs) and a
label raster of the same grid become patch items: windows of `patch_size` pixels whose
top-left corners are `stride` apart (`patch_origins`), each labelled by the label raster's
pixel at its centre or by the value most of its pixels hold (`patch_label_values`; ties go
to the smaller value). A patch whose label is an ignored value (the `ignore_value`, the label
raster's nodata) is left out.

Neighbouring patches see almost the same pixels, so a random split would test on what the
model trained on. The split is by spatial blocks instead, as TorchGeo's samplers and the
satellite time-series papers do: the raster is tiled into `block_size` squares and a seeded
choice of `test_fraction` of them is the test area (`choose_test_blocks`). A patch lies in
one split when every pixel it covers lies in blocks of that split; a patch straddling blocks of
both splits is dropped (`patch_splits`), so no test patch shares a pixel with a training
patch. `plan_patches` does all of it and counts what it left out.

`time_series_grid` and `read_label_raster` read the rasters' headers and labels (through
`data_prep.rasters`); everything else is plain numpy. This module never imports TensorFlow.

Example:

>>> labels = np.zeros((8, 8), "uint8"); labels[:, 4:] = 1  # two classes, left and right
>>> plan = plan_patches(labels, patch_size=4, block_size=4, test_fraction=0.5, seed=0)
>>> plan.splits  # (row, col, label value) of each patch
{'train': [(0, 4, 1), (4, 4, 1)], 'test': [(0, 0, 0), (4, 0, 0)]}
>>> plan.counts
{'grid': 4, 'ignored': 0, 'straddling': 0, 'train': 2, 'test': 2}
"""

import dataclasses
import os

import numpy as np

from core.errors import UserError
from data_prep.rasters import RASTER_EXTENSIONS, RasterReadError, raster_info, read_raster

LABEL_RULES = ("centre", "majority")
# Split codes of `patch_splits`.
TRAIN, TEST, STRADDLING = 0, 1, -1


def grid_origins(length, patch_size, stride, *, cover_edge=False):
    """Start offsets of the patches along one axis of `length` pixels.

    Args:
        length: int, pixels along the axis.
        patch_size: int, pixels of one patch along it.
        stride: int, pixels between consecutive starts.
        cover_edge: bool, add a last patch flush with the end when the grid stops short of
            it, so every pixel is covered (a class map); training patches keep the plain
            grid. Defaults to False.

    Returns:
        list of ints, ascending; empty when `length < patch_size`.

    >>> grid_origins(10, 4, 3)
    [0, 3, 6]
    >>> grid_origins(11, 4, 3, cover_edge=True)
    [0, 3, 6, 7]
    """
    if length < patch_size:
        return []
    origins = list(range(0, length - patch_size + 1, stride))
    if cover_edge and origins[-1] + patch_size < length:
        origins.append(length - patch_size)
    return origins


def patch_origins(height, width, patch_size, stride, *, cover_edge=False):
    """(N, 2) int64 array of the patches' (row, col) top-left corners, row-major."""
    rows = grid_origins(height, patch_size, stride, cover_edge=cover_edge)
    cols = grid_origins(width, patch_size, stride, cover_edge=cover_edge)
    grid = np.array([(row, col) for row in rows for col in cols], np.int64)
    return grid.reshape(-1, 2)


def patch_label_values(labels, origins, patch_size, rule="centre"):
    """The label value of each patch.

    Args:
        labels: (H, W) integer array, the label raster.
        origins: (N, 2) (row, col) corners (`patch_origins`).
        patch_size: int.
        rule: `"centre"`: the pixel at (row + patch_size // 2, col + patch_size // 2) (for
            an even size, the lower right of the four central pixels); `"majority"`: the
            value most pixels of the patch hold, ignored values counted like any other (a
            mostly unlabelled patch is left out), ties to the smaller value.

    Returns:
        (N,) array of `labels.dtype`.
    """
    if rule not in LABEL_RULES:
        raise UserError(f"Expected `label_rule` to be one of {list(LABEL_RULES)}. "
                        f"Received: label_rule={rule!r}")
    origins = np.asarray(origins, np.int64).reshape(-1, 2)
    if rule == "centre":
        half = patch_size // 2
        return labels[origins[:, 0] + half, origins[:, 1] + half]
    # Codes 0..K-1 in value order: bincount's argmax then breaks ties to the smaller value.
    values, codes = np.unique(labels, return_inverse=True)
    codes = codes.reshape(labels.shape)
    chosen = np.empty(len(origins), np.int64)
    for index, (row, col) in enumerate(origins):
        window = codes[row:row + patch_size, col:col + patch_size]
        chosen[index] = np.bincount(window.ravel(), minlength=len(values)).argmax()
    return values[chosen]


def choose_test_blocks(height, width, block_size, test_fraction, seed=0):
    """Which spatial blocks are the test area: a seeded choice of `test_fraction` of them.

    The raster is tiled into `block_size` squares from its top-left corner (the last row
    and column of blocks may be cut short by the raster's edge); round(test_fraction x
    blocks) of them, at least one when `test_fraction` > 0 and at most all but one when it
    is < 1, are drawn with `numpy.random.default_rng(seed)`.

    Returns:
        bool array (ceil(H / block_size), ceil(W / block_size)), True = test.

    Raises:
        UserError: a fraction outside [0, 1], or a raster of a single block to split.
    """
    if not 0.0 <= test_fraction <= 1.0:
        raise UserError(f"Expected `test_fraction` in [0, 1]. "
                        f"Received: test_fraction={test_fraction!r}")
    shape = (-(-height // block_size), -(-width // block_size))
    count = shape[0] * shape[1]
    chosen = int(round(test_fraction * count))
    if 0.0 < test_fraction < 1.0:
        if count < 2:
            raise UserError(f"Expected at least two spatial blocks to split train from test; "
                            f"the {height}x{width} raster is one block of {block_size} "
                            f"pixels. Received: block_size={block_size}")
        chosen = min(max(chosen, 1), count - 1)
    mask = np.zeros(count, bool)
    mask[np.random.default_rng(seed).permutation(count)[:chosen]] = True
    return mask.reshape(shape)


def patch_splits(origins, patch_size, test_blocks, block_size):
    """The split of each patch: `TRAIN`, `TEST`, or `STRADDLING` (it covers blocks of both).

    Args:
        origins: (N, 2) (row, col) corners.
        patch_size: int.
        test_blocks: bool array of blocks (`choose_test_blocks`).
        block_size: int.

    Returns:
        (N,) int8 array of split codes.
    """
    origins = np.asarray(origins, np.int64).reshape(-1, 2)
    first = origins // block_size
    last = (origins + patch_size - 1) // block_size
    # Test blocks in each patch's block range, from a summed-area table of the mask.
    table = np.zeros((test_blocks.shape[0] + 1, test_blocks.shape[1] + 1), np.int64)
    table[1:, 1:] = test_blocks.astype(np.int64).cumsum(0).cumsum(1)
    (r0, c0), (r1, c1) = first.T, last.T + 1
    tests = table[r1, c1] - table[r0, c1] - table[r1, c0] + table[r0, c0]
    blocks = (r1 - r0) * (c1 - c0)
    return np.where(tests == 0, TRAIN, np.where(tests == blocks, TEST, STRADDLING)) \
        .astype(np.int8)


@dataclasses.dataclass
class PatchPlan:
    """The patches `plan_patches` keeps, per split, and what it left out.

    Attributes:
        splits: {"train": [(row, col, label value)], "test": [...]} ("test" only when
            `test_fraction` > 0), row-major.
        counts: {"grid": patches on the grid, "ignored": left out for an ignored label,
            "straddling": left out for covering blocks of both splits, "train": kept,
            "test": kept}.
        test_blocks: the bool block mask (`choose_test_blocks`).
    """

    splits: dict
    counts: dict
    test_blocks: np.ndarray


def plan_patches(labels, *, patch_size, stride=None, rule="centre", ignore_values=(),
                 block_size=None, test_fraction=0.25, seed=0):
    """The patches of a label raster, labelled and split by spatial blocks.

    Args:
        labels: (H, W) integer array.
        patch_size: int, patch height and width in pixels.
        stride: int or None, pixels between patch corners; None = `patch_size` (patches
            side by side).
        rule: `"centre"` or `"majority"` (`patch_label_values`).
        ignore_values: values whose patches are left out (the ignore value, nodata).
        block_size: int or None, side of the split's blocks; None = 4 x `patch_size`.
        test_fraction: float in [0, 1], share of the blocks that are the test area.
        seed: int, the block draw's seed.

    Returns:
        `PatchPlan`.

    Raises:
        UserError: a raster smaller than one patch, or a bad fraction or rule.
    """
    height, width = labels.shape
    stride = stride or patch_size
    block_size = block_size or 4 * patch_size
    if height < patch_size or width < patch_size:
        raise UserError(f"Expected a raster of at least one patch ({patch_size}x{patch_size} "
                        f"pixels). Received: a {height}x{width} raster, "
                        f"patch_size={patch_size}")
    origins = patch_origins(height, width, patch_size, stride)
    values = patch_label_values(labels, origins, patch_size, rule)
    test_blocks = choose_test_blocks(height, width, block_size, test_fraction, seed)
    codes = patch_splits(origins, patch_size, test_blocks, block_size)
    ignored = np.isin(values, np.asarray(list(ignore_values), dtype=values.dtype)) \
        if len(ignore_values) else np.zeros(len(values), bool)
    names = ("train", "test") if test_fraction > 0 else ("train",)
    splits = {name: [] for name in names}
    for (row, col), value, code, skip in zip(origins.tolist(), values.tolist(),
                                             codes.tolist(), ignored.tolist()):
        if not skip and code != STRADDLING:
            splits[names[code]].append((row, col, value))
    counts = {"grid": len(origins), "ignored": int(ignored.sum()),
              "straddling": int(((codes == STRADDLING) & ~ignored).sum()),
              **{name: len(patches) for name, patches in splits.items()}}
    return PatchPlan(splits, counts, test_blocks)


def patch_item_id(raster_id, row, col):
    """`<raster id>@r<row>_c<col>`: the id of the patch whose top-left corner is (row, col)."""
    return f"{raster_id}@r{row}_c{col}"


# --- reading the rasters -------------------------------------------------------------------


def date_files(folder):
    """The per-date GeoTIFFs of a folder, sorted by name (mask files `*.mask.*` are not
    dates)."""
    return sorted(os.path.join(folder, name) for name in os.listdir(folder)
                  if name.lower().endswith(RASTER_EXTENSIONS) and not name.startswith(".")
                  and ".mask." not in name.lower())


def time_series_grid(path):
    """The `RasterInfo` of a time-series raster's grid: the stack's, or the first date's of
    a folder of per-date GeoTIFFs (every date must have its height and width).

    Raises:
        UserError: no GeoTIFF, an unreadable one, or dates of different sizes.
    """
    paths = date_files(path) if os.path.isdir(path) else [path]
    if not paths:
        raise UserError(f"Expected a GeoTIFF stack or a folder of per-date GeoTIFFs "
                        f"({', '.join(RASTER_EXTENSIONS)}). Received: raster={path!r}")
    infos = [_info(one) for one in paths]
    sizes = {(info.height, info.width) for info in infos}
    if len(sizes) > 1:
        raise UserError(f"Expected every date of {path} to have the same height and width. "
                        f"Received: sizes={sorted(sizes)}")
    return infos[0]


def _info(path):
    try:
        return raster_info(path)
    except RasterReadError as error:
        raise UserError(f"Cannot read the raster {path}: {error}. "
                        f"Received: path={path!r}") from None


def read_label_raster(path, grid):
    """The label raster as (H, W) integers and its nodata value (or None).

    Args:
        path: str, a single-band GeoTIFF of class values.
        grid: `RasterInfo` of the time series it labels.

    Raises:
        UserError: unreadable, more than one band, not integer, or not on the grid (another
            size, or another transform or CRS when both are georeferenced).
    """
    info = _info(path)
    if info.count != 1 or not np.issubdtype(np.dtype(info.dtype), np.integer):
        raise UserError(f"Expected a label raster of one band of integer class values. "
                        f"Received: {path} with {info.count} band(s) of {info.dtype}")
    if (info.height, info.width) != (grid.height, grid.width):
        raise UserError(f"Expected the label raster to have the time series' grid "
                        f"({grid.height}x{grid.width} pixels). Received: {path} is "
                        f"{info.height}x{info.width}")
    if info.transform is not None and grid.transform is not None and (
            not np.allclose(info.transform, grid.transform) or info.crs != grid.crs):
        raise UserError(f"Expected the label raster to have the time series' georeference "
                        f"(transform {list(grid.transform)}). Received: {path} has "
                        f"transform {list(info.transform)}"
                        + (", another CRS" if info.crs != grid.crs else ""))
    try:
        labels = read_raster(path)[:, :, 0]
    except RasterReadError as error:
        raise UserError(f"Cannot read the raster {path}: {error}. "
                        f"Received: path={path!r}") from None
    nodata = info.nodata
    return labels, (int(nodata) if nodata is not None and float(nodata).is_integer()
                    else None)
