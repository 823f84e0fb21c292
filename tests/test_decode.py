"""Tests for data_prep.decode on real encoded videos, frame folders and .npy arrays."""

import os

import cv2
import numpy as np
import pytest

from data_prep import decode
from data_prep.decode import (DecodeError, decode_array, decode_frame_folder, decode_video,
                              load_clips, natural_sort_key, resize_frame, scale_array_to_uint8)
from data_prep.sampling import sample_frame_indices
from video_fixtures import (FFMPEG, HEIGHT, WIDTH, frame_index_of, write_array, write_broken,
                            write_frame_folder, write_video)

needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is not installed")
VIDEO_NAMES = ["clip.avi", "clip.mp4",
               pytest.param("clip.mkv", marks=needs_ffmpeg),
               pytest.param("clip.h264.mp4", marks=needs_ffmpeg)]


@pytest.mark.parametrize("name", VIDEO_NAMES)
def test_decode_video_counts_frames_keeps_rgb_order(tmp_path, name):
    path = write_video(tmp_path / name, 13)
    frames = decode_video(path)
    assert frames.shape == (13, HEIGHT, WIDTH, 3) and frames.dtype == np.uint8
    red = frames[0].reshape(-1, 3).mean(axis=0)
    assert red[0] > 200 and red[1] < 30 and red[2] < 30, red
    np.testing.assert_array_equal(frame_index_of(frames), np.arange(13))


@pytest.mark.parametrize("size,resize_short,shape", [
    (16, None, (16, 16)), (16, 20, (16, 16)), (48, None, (48, 48)), (None, None, (24, 32))])
def test_decode_video_resizes_at_decode(tmp_path, size, resize_short, shape):
    frames = decode_video(write_video(tmp_path / "v.avi", 5), size=size,
                          resize_short=resize_short)
    assert frames.shape == (5, *shape, 3)


def test_resize_short_then_centre_crop_equals_reference():
    frame = np.random.default_rng(0).integers(0, 256, (24, 32, 3), np.uint8)
    # Short side 24 -> 12 gives 12x16; the centre 8x8 crop starts at row 2, column 4.
    reference = cv2.resize(frame, (16, 12), interpolation=cv2.INTER_AREA)[2:10, 4:12]
    np.testing.assert_array_equal(resize_frame(frame, 8, resize_short=12), reference)


@pytest.mark.parametrize("bands", [1, 3, 4, 5, 10])
def test_resize_frame_any_band_count_equals_per_band_resize(bands):
    frame = np.random.default_rng(bands).integers(0, 256, (24, 32, bands), np.uint8)
    got = resize_frame(frame, 12)
    reference = np.stack([cv2.resize(frame[:, :, b], (12, 12), interpolation=cv2.INTER_AREA)
                          for b in range(bands)], axis=-1)
    assert got.shape == (12, 12, bands)
    np.testing.assert_array_equal(got, reference)


@pytest.mark.parametrize("kind", ["zero-byte", "garbage", "truncated"])
def test_broken_video_raises_decode_error(tmp_path, kind):
    path = write_broken(tmp_path / f"broken_{kind}.mp4", kind)
    with pytest.raises(DecodeError):
        decode_video(path)
    with pytest.raises(DecodeError):
        load_clips(path, lambda total: np.arange(2))


def test_missing_file_raises_decode_error(tmp_path):
    with pytest.raises(DecodeError, match="cannot read"):
        decode_video(str(tmp_path / "absent.avi"))


def test_natural_sort_puts_2_before_10():
    assert sorted(["10.png", "2.png", "1.png"], key=natural_sort_key) == \
        ["1.png", "2.png", "10.png"]


@pytest.mark.parametrize("grey,extension", [(False, ".png"), (True, ".png"), (False, ".jpg")])
def test_frame_folder_natural_order_and_bands(tmp_path, grey, extension):
    path = write_frame_folder(tmp_path / "item", 12, grey=grey, extension=extension)
    frames = decode_frame_folder(path)
    assert frames.shape == (12, HEIGHT, WIDTH, 1 if grey else 3)
    levels = frames[..., 0 if grey else 1].mean(axis=(1, 2))
    np.testing.assert_allclose(levels, 12 * np.arange(12), atol=3)
    if not grey:
        assert frames[0, ..., 0].min() > 240 and frames[0, ..., 2].max() < 15


def test_frame_folder_with_unreadable_image_raises(tmp_path):
    path = write_frame_folder(tmp_path / "item", 4)
    with open(os.path.join(path, "2.png"), "wb") as file:
        file.write(b"not a png")
    with pytest.raises(DecodeError, match="2.png"):
        decode_frame_folder(path)


@pytest.mark.parametrize("bands", [1, 3, 10])
def test_uint8_array_any_band_count(tmp_path, bands):
    path = write_array(tmp_path / "a.npy", 9, bands)
    frames = decode_array(path, size=16)
    assert frames.shape == (9, 16, 16, bands) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames[:, 0, 0, :],
                                  12 * np.arange(9)[:, None] + np.arange(bands)[None, :])


def test_float_array_in_unit_range_is_multiplied_by_255():
    values = np.linspace(0, 1, 2 * 2 * 2 * 3).reshape(2, 2, 2, 3)
    np.testing.assert_array_equal(scale_array_to_uint8(values),
                                  np.rint(values * 255).astype(np.uint8))


def test_other_float_or_int_array_is_min_max_scaled_per_band():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(3, 4, 5, 2)) * np.array([10.0, 1000.0]) + np.array([0.0, 5e3])
    values[0, 0, 0, 0] = np.nan
    got = scale_array_to_uint8(values)
    for band in range(2):
        channel = values[..., band]
        low, high = np.nanmin(channel), np.nanmax(channel)
        expected = np.nan_to_num(np.rint((channel - low) / (high - low) * 255), nan=0)
        np.testing.assert_array_equal(got[..., band], expected.astype(np.uint8))
    counts = np.arange(24, dtype=np.uint16).reshape(1, 2, 3, 4) * 1000
    assert scale_array_to_uint8(counts).max() == 255 and scale_array_to_uint8(counts).min() == 0


def test_grey_array_without_band_axis_reads_as_one_band(tmp_path):
    path = tmp_path / "grey.npy"
    np.save(path, np.zeros((4, 8, 8), np.uint8))
    assert decode_array(str(path)).shape == (4, 8, 8, 1)


@pytest.mark.parametrize("shape", [(8, 8), (0, 8, 8, 3), (2, 3, 8, 8, 3)])
def test_badly_shaped_array_raises(tmp_path, shape):
    path = tmp_path / "bad.npy"
    np.save(path, np.zeros(shape, np.uint8))
    with pytest.raises(DecodeError, match="expected an array shaped"):
        decode_array(str(path))


def make_item(tmp_path, kind, num_frames):
    if kind == "frames":
        return write_frame_folder(tmp_path / "item", num_frames)
    if kind == "array":
        return write_array(tmp_path / "item.npy", num_frames, 3)
    return write_video(tmp_path / kind, num_frames)


class WrongFrameCountCapture:
    """A real capture whose CAP_PROP_FRAME_COUNT lies, as OpenCV's often does."""

    def __init__(self, capture, frame_count):
        self.capture, self.frame_count = capture, frame_count

    def get(self, prop):
        if prop == cv2.CAP_PROP_FRAME_COUNT:
            return self.frame_count
        return self.capture.get(prop)

    def __getattr__(self, name):
        return getattr(self.capture, name)


@pytest.mark.parametrize("kind", ["frames", "array", "v.avi", "v.mp4"])
@pytest.mark.parametrize("num_frames", [5, 19])
def test_load_clips_equals_decode_all_then_index(tmp_path, kind, num_frames):
    path = make_item(tmp_path, kind, num_frames)
    select = lambda total: sample_frame_indices(total, 8, num_clips=3)  # noqa: E731
    total, clips = load_clips(path, select, size=16)
    assert total == num_frames
    assert clips.shape == (3, 8, 16, 16, 3) and clips.dtype == np.uint8
    if kind == "frames":
        every = decode_frame_folder(path, size=16)
    elif kind == "array":
        every = decode_array(path, size=16)
    else:
        every = decode_video(path, size=16)
    np.testing.assert_array_equal(clips, every[select(num_frames)])


@pytest.mark.parametrize("claimed", [-1, 0, 9, 15])
def test_load_clips_samples_from_frames_that_decode_not_the_claimed_count(
        tmp_path, monkeypatch, claimed):
    path = write_video(tmp_path / "v.avi", 12)
    real_open = decode._open_video
    monkeypatch.setattr(decode, "_open_video",
                        lambda p: WrongFrameCountCapture(real_open(p), claimed))
    select = lambda total: sample_frame_indices(total, 4, num_clips=2)  # noqa: E731
    total, clips = load_clips(path, select)
    assert total == 12
    np.testing.assert_array_equal(frame_index_of(clips), select(12))


# --- format v2: frames in their own dtype (open_item_frames) --------------------------------

from data_prep.rasters import write_raster  # noqa: E402


def _read_all(item):
    return np.stack([frame for frame, _ in item.read(range(item.count))])


def _uint16_frames(count=3, bands=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 65536, (count, 6, 8, bands)).astype(np.uint16)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
@pytest.mark.parametrize("bands", [1, 3, 4])
def test_16_bit_frames_keep_16_bits(tmp_path, suffix, bands):
    frames = _uint16_frames(bands=bands)
    for index, frame in enumerate(frames):
        path = str(tmp_path / f"{index}{suffix}")
        if suffix == ".png":  # OpenCV writes BGR(A); the reader gives RGB(A) back
            code = {3: cv2.COLOR_RGB2BGR, 4: cv2.COLOR_RGBA2BGRA}.get(bands)
            cv2.imwrite(path, cv2.cvtColor(frame, code) if code else frame[:, :, 0])
        else:
            write_raster(path, frame)
    item = decode.open_item_frames(str(tmp_path))
    assert item.count == 3 and item.dtype == "uint16"
    np.testing.assert_array_equal(_read_all(item), frames)
    # Format v1 keeps its 8-bit rule for the same folder.
    assert decode_frame_folder(str(tmp_path)).dtype == np.uint8


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32"])
def test_a_six_band_tiff_per_date_is_read_not_skipped(tmp_path, dtype):
    frames = (np.random.default_rng(1).normal(50, 20, (2, 5, 6, 6))).astype(dtype)
    for index, frame in enumerate(frames):
        write_raster(str(tmp_path / f"d{index}.tif"), frame)
    item = decode.open_item_frames(str(tmp_path))
    assert item.dtype == dtype
    np.testing.assert_array_equal(_read_all(item), frames)


def test_mask_files_are_masks_not_frames(tmp_path):
    frames = _uint16_frames(count=2, bands=1)
    for index, frame in enumerate(frames):
        cv2.imwrite(str(tmp_path / f"{index}.png"), frame[:, :, 0])
    cv2.imwrite(str(tmp_path / "1.mask.png"), np.full((6, 8), 255, np.uint8))
    item = decode.open_item_frames(str(tmp_path))
    assert item.count == 2 and item.frame_names == ["0.png", "1.png"]
    assert item.mask_files[0] is None and item.mask_files[1].endswith("1.mask.png")


def test_bands_and_validity_band_of_a_raster_stack(tmp_path):
    path = str(tmp_path / "stack.tif")
    values = np.arange(5 * 8 * 8, dtype=np.uint16).reshape(5, 8, 8)
    names = ["blue", "red", "nir", "valid"] * 2
    write_raster(path, values, band_names=names, crs="EPSG:32631",
                 transform=(10.0, 0.0, 500000.0, 0.0, -10.0, 4800000.0))
    item = decode.open_item_frames(path, bands=["nir", 1], validity_band=3, bands_per_date=4,
                                   window=(1, 2, 3, 4))
    assert item.count == 2 and item.band_names == ("nir", "red")
    assert item.transform == (10.0, 0.0, 500020.0, 0.0, -10.0, 4799990.0)
    (frame, valid), = item.read([1])
    np.testing.assert_array_equal(frame, values[1:4, 2:6][:, :, [6, 5]])
    np.testing.assert_array_equal(valid, values[1:4, 2:6, 7])


def test_npy_items_keep_their_dtype(tmp_path):
    values = np.random.default_rng(2).normal(0.5, 0.3, (3, 4, 5, 2)).astype(np.float16)
    path = str(tmp_path / "a.npy")
    np.save(path, values)
    item = decode.open_item_frames(path, bands=[1])
    assert item.dtype == "float16"
    np.testing.assert_array_equal(_read_all(item), values[..., 1:])


@pytest.mark.parametrize("dtype", ["float64", "int32", "bool"])
def test_dtypes_outside_the_stored_ones_are_named(tmp_path, dtype):
    path = str(tmp_path / "a.npy")
    np.save(path, np.zeros((2, 3, 3, 1), dtype))
    with pytest.raises(DecodeError, match=f"unsupported dtype {dtype}"):
        decode.open_item_frames(path)


def test_a_raster_item_is_media_but_not_for_v1(tmp_path):
    path = str(tmp_path / "field.tif")
    write_raster(path, np.zeros((4, 4, 2), np.uint16))
    assert decode.is_media_item(path) and decode.item_kind(path) == "raster"
    with pytest.raises(DecodeError, match="format v2"):
        load_clips(path, lambda total: np.arange(total))
