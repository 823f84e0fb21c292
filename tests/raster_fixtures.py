"""A small labelled time-series raster, generated: the raster layout's and class map's tests.

A 64 x 64 field map in 16-pixel squares: class values 1 and 2 alternate as a chequerboard,
the top-left square is unlabelled (0). The time series is 4 dates of 3 uint16 bands whose
reflectance rises over the dates on class 1 and falls on class 2 (phenology), with noise;
georeferenced in UTM 31N at 10 m.
"""

import os

import numpy as np

from data_prep.rasters import write_raster

HEIGHT = WIDTH = 64
DATES, BANDS = 4, 3
SQUARE = 16
UNLABELLED = 0
CRS = "EPSG:32631"
TRANSFORM = (10.0, 0.0, 500000.0, 0.0, -10.0, 4800000.0)


def field_labels(height=HEIGHT, width=WIDTH):
    """(H, W) uint8 class values: 1/2 chequerboard of SQUARE pixels, top-left square 0."""
    rows, cols = np.indices((height, width))
    labels = (1 + (rows // SQUARE + cols // SQUARE) % 2).astype(np.uint8)
    labels[:SQUARE, :SQUARE] = UNLABELLED
    return labels


def field_series(labels, seed=0):
    """(DATES, H, W, BANDS) uint16 reflectances: class 1 greens up, class 2 dries out,
    unlabelled ground stays flat."""
    rng = np.random.default_rng(seed)
    dates = np.arange(DATES)[:, None, None, None]
    bands = np.arange(BANDS)[None, None, None, :]
    trend = np.select([labels == 1, labels == 2], [1, -1], 0)[None, :, :, None]
    values = 3000 + 200 * bands + 600 * trend * dates \
        + rng.normal(0, 60, (DATES,) + labels.shape + (BANDS,))
    return np.clip(values, 0, 65535).astype(np.uint16)


def write_field_rasters(directory, *, as_folder=False, seed=0, labels=None):
    """Writes the time series (`field_stack.tif`, DATES x BANDS bands date-major, or with
    `as_folder` `field_dates/2024-0M-01.tif`, one per date) and `labels.tif` under
    `directory`; returns (time series path, label raster path, labels, series)."""
    directory = str(directory)
    os.makedirs(directory, exist_ok=True)
    labels = field_labels() if labels is None else labels
    series = field_series(labels, seed)
    if as_folder:
        path = os.path.join(directory, "field_dates")
        os.makedirs(path, exist_ok=True)
        for date, frame in enumerate(series):
            write_raster(os.path.join(path, f"2024-{date + 3:02d}-01.tif"), frame, crs=CRS,
                         transform=TRANSFORM, band_names=["nir", "red", "green"])
    else:
        path = os.path.join(directory, "field_stack.tif")
        stacked = np.concatenate(list(series), axis=-1)  # date-major bands
        write_raster(path, stacked, crs=CRS, transform=TRANSFORM,
                     band_names=["nir", "red", "green"] * DATES)
    label_path = os.path.join(directory, "labels.tif")
    write_raster(label_path, labels, crs=CRS, transform=TRANSFORM)
    return path, label_path, labels, series
