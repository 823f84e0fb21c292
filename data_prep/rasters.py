"""Read and write GeoTIFF rasters (any band count, any dtype) with rasterio.

OpenCV reads at most 4 channels and refuses most float TIFFs; satellite image time series
have 4 to 13 bands per date in 16-bit or float. rasterio (GDAL, in its wheels) reads them as
they are: `read_raster` gives one (H, W, band) array in the file's own dtype, and
`read_stack_frames` the dates of a multi-date stack (one file holding T dates of N bands,
date-major: bands 0..N-1 are date 0). Both read only a `window` when given one, so patches
of a large raster never load the whole file.

Band selection (`select_bands`) takes 0-based indices or band descriptions (what GDAL calls
a band's description: "B04", "nir", ...). This module never imports TensorFlow; rasterio is
imported when a function is called, so `import data_prep` stays light.

Example:

>>> import numpy as np, tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "two_dates.tif")
>>> write_raster(path, np.arange(2 * 3 * 6, dtype="uint16").reshape(2, 3, 6),
...              band_names=["b", "g", "r"] * 2)
>>> read_stack_frames(path, [1], bands_per_date=3, bands=["r"]).shape
(1, 2, 3, 1)
"""

import dataclasses
import warnings

import numpy as np

RASTER_EXTENSIONS = (".tif", ".tiff")


class RasterReadError(Exception):
    """A raster that cannot be read (not a GeoTIFF, truncated, a bad band or window)."""


@dataclasses.dataclass(frozen=True)
class RasterInfo:
    """What a raster's header says, read without reading its pixels.

    Attributes:
        path: str.
        count: int, bands in the file (all dates of a stack).
        height, width: int, pixels.
        dtype: str, numpy name of the bands' type (`uint16`, `float32`, ...).
        nodata: float or None, the file's nodata value.
        band_names: tuple of `count` str (empty string where a band has no description).
        crs: str (WKT) or None when the file has no georeference.
        transform: tuple of 6 floats `(a, b, c, d, e, f)`, rasterio's `Affine` order
            (x = a * col + b * row + c, y = d * col + e * row + f), or None.
    """

    path: str
    count: int
    height: int
    width: int
    dtype: str
    nodata: float | None
    band_names: tuple
    crs: str | None
    transform: tuple | None


def _open(path):
    import rasterio

    try:
        with warnings.catch_warnings():
            # A plain TIFF has no georeference; that is fine for frames.
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            return rasterio.open(path)
    except (rasterio.errors.RasterioIOError, OSError) as error:
        raise RasterReadError(f"not a raster GDAL can read ({_first_line(error)})") from None


def _first_line(error):
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def _info_of(dataset, path):
    georeferenced = dataset.crs is not None
    nodata = dataset.nodata
    return RasterInfo(
        path=str(path), count=int(dataset.count), height=int(dataset.height),
        width=int(dataset.width), dtype=str(np.dtype(dataset.dtypes[0])),
        nodata=None if nodata is None else float(nodata),
        band_names=tuple(name or "" for name in dataset.descriptions),
        crs=dataset.crs.to_wkt() if georeferenced else None,
        transform=tuple(float(v) for v in tuple(dataset.transform)[:6])
        if georeferenced else None)


def raster_info(path):
    """The header of the raster at `path` (`RasterInfo`); raises `RasterReadError`."""
    with _open(path) as dataset:
        return _info_of(dataset, path)


def stack_frame_count(info, bands_per_date=None):
    """Dates in a raster: `count / bands_per_date`, or 1 without `bands_per_date`.

    Raises:
        RasterReadError: `count` is not a multiple of `bands_per_date`.
    """
    if bands_per_date is None:
        return 1
    if bands_per_date < 1 or info.count % bands_per_date:
        raise RasterReadError(f"{info.count} bands are not a whole number of dates of "
                              f"{bands_per_date} bands")
    return info.count // bands_per_date


def select_bands(info, bands, bands_per_date=None):
    """0-based indices, within one date, of the bands `bands` names.

    Args:
        info: `RasterInfo`.
        bands: None (every band of a date), or a list of 0-based ints and/or band
            descriptions; a description is looked up among the first date's bands.
        bands_per_date: int or None (the whole file is one date).

    Returns:
        list of ints in [0, bands_per_date).

    Raises:
        RasterReadError: an index out of range or a description the raster lacks.
    """
    per_date = bands_per_date or info.count
    if bands is None:
        return list(range(per_date))
    names = list(info.band_names[:per_date])
    chosen = []
    for band in bands:
        if isinstance(band, (int, np.integer)) and not isinstance(band, bool):
            if not 0 <= band < per_date:
                raise RasterReadError(f"band {band} is not in 0..{per_date - 1}")
            chosen.append(int(band))
        elif isinstance(band, str) and band in names:
            chosen.append(names.index(band))
        else:
            known = ", ".join(repr(name) for name in names if name) or "none"
            raise RasterReadError(f"no band {band!r} (band descriptions: {known})")
    return chosen


def _window(info, window):
    from rasterio.windows import Window

    if window is None:
        return None
    row, col, height, width = (int(v) for v in window)
    if row < 0 or col < 0 or height < 1 or width < 1 or row + height > info.height \
            or col + width > info.width:
        raise RasterReadError(f"window {tuple(window)} is outside the {info.height}x"
                              f"{info.width} raster")
    return Window(col, row, width, height)


def window_transform(info, window):
    """The affine transform (6-tuple) of `window` `(row, col, height, width)` of a raster,
    or `info.transform` for None; None for a raster without georeference."""
    if info.transform is None or window is None:
        return info.transform
    a, b, c, d, e, f = info.transform
    row, col = int(window[0]), int(window[1])
    return (a, b, a * col + b * row + c, d, e, d * col + e * row + f)


def _read_band_numbers(path, band_numbers, window):
    with _open(path) as dataset:
        info = _info_of(dataset, path)
        try:
            values = dataset.read(band_numbers, window=_window(info, window))
        except RasterReadError:
            raise
        except Exception as error:  # GDAL's read errors: truncated tiles, bad compression
            raise RasterReadError(f"cannot read its pixels ({_first_line(error)})") from None
    return np.moveaxis(values, 0, -1)


def read_raster(path, bands=None, window=None):
    """One raster as an (H, W, band) array in its own dtype.

    Args:
        path: str, a GeoTIFF (or any raster GDAL reads).
        bands: None or a list for `select_bands`.
        window: None or `(row, col, height, width)`: read only those pixels.

    Raises:
        RasterReadError: unreadable file, unknown band, window outside the raster.
    """
    info = raster_info(path)
    numbers = [index + 1 for index in select_bands(info, bands)]
    return _read_band_numbers(path, numbers, window)


def read_stack_frames(path, indices, bands_per_date, bands=None, window=None):
    """Dates `indices` of a multi-date stack as an (n, H, W, band) array, own dtype.

    Args:
        path: str, a raster of T * `bands_per_date` bands, date-major.
        indices: sequence of date indices in [0, T).
        bands_per_date: int, bands of one date.
        bands: None or a list for `select_bands` (within one date).
        window: None or `(row, col, height, width)`.

    Raises:
        RasterReadError: as `read_raster`, or a date index outside [0, T).
    """
    info = raster_info(path)
    total = stack_frame_count(info, bands_per_date)
    chosen = select_bands(info, bands, bands_per_date)
    indices = [int(index) for index in np.asarray(indices).ravel()]
    if any(not 0 <= index < total for index in indices):
        raise RasterReadError(f"date index outside 0..{total - 1}: {indices}")
    numbers = [index * bands_per_date + band + 1 for index in indices for band in chosen]
    values = _read_band_numbers(path, numbers, window)
    height, width = values.shape[:2]
    return np.moveaxis(values.reshape(height, width, len(indices), len(chosen)), 2, 0)


def write_raster(path, array, *, crs=None, transform=None, nodata=None, band_names=None,
                 compress="deflate"):
    """Write an (H, W, band) array as a tiled GeoTIFF in its own dtype.

    Args:
        path: str, the .tif to write.
        array: (H, W, band) or (H, W) array.
        crs: None, or anything rasterio takes (`"EPSG:32631"`, WKT).
        transform: None or a 6-tuple (`RasterInfo.transform`) or a rasterio `Affine`.
        nodata: None or a number.
        band_names: None or one description per band.
        compress: GDAL compression (`deflate`, lossless) or None.
    """
    import rasterio
    from rasterio.transform import Affine

    array = np.asarray(array)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"Expected an array shaped (H, W, band). Received: shape={array.shape}")
    height, width, count = array.shape
    profile = {"driver": "GTiff", "height": height, "width": width, "count": count,
               "dtype": array.dtype.name}
    if compress:
        profile["compress"] = compress
    if crs is not None:
        profile["crs"] = crs
    if transform is not None:
        profile["transform"] = transform if isinstance(transform, Affine) \
            else Affine(*transform[:6])
    if nodata is not None:
        profile["nodata"] = nodata
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dataset:
            dataset.write(np.moveaxis(array, -1, 0))
            for band, name in enumerate(band_names or [], start=1):
                dataset.set_band_description(band, str(name))
