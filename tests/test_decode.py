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
