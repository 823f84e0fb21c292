"""data_prep.rasters: GeoTIFFs of any band count and dtype, read as they are."""

import numpy as np
import pytest

from data_prep.rasters import (RasterReadError, raster_info, read_raster, read_stack_frames,
                               select_bands, stack_frame_count, window_transform,
                               write_raster)

UTM_31N = "EPSG:32631"
TRANSFORM = (10.0, 0.0, 500000.0, 0.0, -10.0, 4800000.0)


@pytest.mark.parametrize("dtype,bands", [("uint8", 1), ("uint16", 13), ("int16", 6),
                                         ("float32", 6), ("float64", 2)])
def test_values_read_back_exactly_in_their_own_dtype(tmp_path, dtype, bands):
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "ui" else None
    if info is not None:
        array = rng.integers(info.min, info.max, (5, 7, bands), endpoint=True).astype(dtype)
    else:
        array = rng.normal(size=(5, 7, bands)).astype(dtype)
        array[0, 0, 0] = np.nan
    path = str(tmp_path / "frame.tif")
    write_raster(path, array)
    back = read_raster(path)
    assert back.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back.view(f"u{back.itemsize}"),
                                  array.view(f"u{array.itemsize}"))  # NaN bits included


def test_header_keeps_georeference_nodata_and_band_names(tmp_path):
    path = str(tmp_path / "s2.tif")
    write_raster(path, np.zeros((4, 6, 3), "uint16"), crs=UTM_31N, transform=TRANSFORM,
                 nodata=0, band_names=["B04", "B03", "B02"])
    info = raster_info(path)
    assert (info.count, info.height, info.width, info.dtype) == (3, 4, 6, "uint16")
    assert info.nodata == 0.0 and info.band_names == ("B04", "B03", "B02")
    assert info.transform == TRANSFORM and ("32631" in info.crs or "UTM" in info.crs)


def test_plain_tiff_has_no_georeference(tmp_path):
    path = str(tmp_path / "plain.tif")
    write_raster(path, np.ones((3, 3), "uint16"))
    info = raster_info(path)
    assert info.crs is None and info.transform is None and info.count == 1


def test_stack_dates_and_band_selection_by_index_and_name(tmp_path):
    dates, per_date, height, width = 4, 3, 5, 6
    # value = 100 * date + band: easy to see what was read
    array = np.zeros((height, width, dates * per_date), "uint16")
    for date in range(dates):
        for band in range(per_date):
            array[:, :, date * per_date + band] = 100 * date + band
    path = str(tmp_path / "stack.tif")
    write_raster(path, array, band_names=["nir", "red", "green"] * dates)
    info = raster_info(path)
    assert stack_frame_count(info, per_date) == dates and stack_frame_count(info) == 1
    frames = read_stack_frames(path, [3, 1], per_date)
    assert frames.shape == (2, height, width, per_date)
    assert frames[:, 0, 0, :].tolist() == [[300, 301, 302], [100, 101, 102]]
    chosen = read_stack_frames(path, [2], per_date, bands=["green", 0])
    assert chosen[0, 0, 0].tolist() == [202, 200]
    assert select_bands(info, None, per_date) == [0, 1, 2]


def test_window_reads_only_those_pixels_and_moves_the_transform(tmp_path):
    array = np.arange(8 * 10, dtype="float32").reshape(8, 10, 1)
    path = str(tmp_path / "grid.tif")
    write_raster(path, array, crs=UTM_31N, transform=TRANSFORM)
    window = (2, 3, 4, 5)
    np.testing.assert_array_equal(read_raster(path, window=window), array[2:6, 3:8])
    a, b, c, d, e, f = window_transform(raster_info(path), window)
    assert (c, f) == (500000.0 + 3 * 10.0, 4800000.0 - 2 * 10.0) and (a, e) == (10.0, -10.0)


@pytest.mark.parametrize("call,message", [
    (lambda path: read_raster(path, bands=[3]), "band 3"),
    (lambda path: read_raster(path, bands=["swir"]), "no band 'swir'"),
    (lambda path: read_raster(path, window=(0, 0, 9, 1)), "outside"),
    (lambda path: read_stack_frames(path, [0], 2), "whole number of dates"),
    (lambda path: read_stack_frames(path, [3], 1), "date index"),
])
def test_bad_requests_are_raster_read_errors(tmp_path, call, message):
    path = str(tmp_path / "three.tif")
    write_raster(path, np.zeros((4, 4, 3), "uint8"), band_names=["r", "g", "b"])
    with pytest.raises(RasterReadError, match=message):
        call(path)


@pytest.mark.parametrize("content", [b"", b"II*\x00garbage", b"not a tiff at all"])
def test_unreadable_files_are_raster_read_errors(tmp_path, content):
    path = tmp_path / "broken.tif"
    path.write_bytes(content)
    with pytest.raises(RasterReadError):
        raster_info(str(path))
