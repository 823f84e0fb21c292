"""Tests for data_prep.sequence_records: the v2 record, written and parsed, and its
interoperability with TF Model Garden's and DMVR's video records."""

import numpy as np
import pytest
import tensorflow as tf

from core.errors import UserError
from data_prep.clip_sampling import decode_frames
from data_prep.decode import DecodeError
from data_prep.sequence_records import (RAW_DTYPES, SourceInfo, decode_frame, decode_mask,
                                        default_encoding, encode_frames, encode_mask,
                                        parse_sequence_record, read_item_frames,
                                        select_item_frames, sequence_example, to_uint8)
from sequence_fixtures import dmvr_style_example, frame_indices_of, marked_frames
from video_fixtures import frame_index_of, write_video

# The decoder spec of TF Model Garden's video input, copied from
# official/vision/dataloaders/video_input.py (class Decoder; IMAGE_KEY, LABEL_KEY).
MODEL_GARDEN_CONTEXT = {"clip/label/index": tf.io.VarLenFeature(tf.int64)}
MODEL_GARDEN_SEQUENCE = {"image/encoded": tf.io.FixedLenSequenceFeature((), tf.string)}


def textured_frames(num_frames, height=24, width=32, bands=3, seed=0):
    """Smooth gradients plus a per-frame level: realistic enough for jpeg, exact for png."""
    rng = np.random.default_rng(seed)
    rows = np.linspace(0, 1, height)[:, None, None]
    cols = np.linspace(0, 1, width)[None, :, None]
    weights = rng.uniform(40, 100, size=(1, 1, bands))
    base = rows * weights + cols * (140 - weights)
    frames = np.stack([base + 5 * t for t in range(num_frames)])
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8)


def write_one(frames, encoding, **kwargs):
    defaults = dict(label=2, item_id="walk/v_1.avi", item_index=7, frame_rate=12.5)
    defaults.update(kwargs)
    return sequence_example(encode_frames(frames, encoding), frame_shape=frames.shape[1:],
                            encoding=encoding, **defaults)


@pytest.mark.parametrize("encoding,bands", [("jpeg", 3), ("jpeg", 1), ("png", 3), ("png", 4),
                                            ("png", 1), ("raw", 3), ("raw", 5)])
def test_round_trip_gives_back_frames_and_context(encoding, bands):
    frames = textured_frames(6, bands=bands)
    source = SourceInfo(height=240, width=320, frame_rate=25.0, frame_count=12)
    record = write_one(frames, encoding, source=source, label_text=["walk"])
    parsed = parse_sequence_record(tf.constant(record))
    decoded = decode_frames(parsed["frames"], tf.range(6), encoding, channels=bands,
                            height=parsed["height"], width=parsed["width"]).numpy()
    assert decoded.shape == frames.shape and decoded.dtype == np.uint8
    if encoding == "jpeg":
        assert np.abs(decoded.astype(int) - frames).mean() < 2.0
    else:
        np.testing.assert_array_equal(decoded, frames)
    assert parsed["labels"].numpy().tolist() == [2]
    assert parsed["label_text"].numpy().tolist() == [b"walk"]
    assert parsed["item_id"].numpy() == b"walk/v_1.avi"
    assert int(parsed["item_index"]) == 7 and int(parsed["num_frames"]) == 6
    assert parsed["format"].numpy() == encoding.encode() and parsed["dtype"].numpy() == b"uint8"
    assert (int(parsed["height"]), int(parsed["width"]), int(parsed["channels"])) == \
        (24, 32, bands)
    assert float(parsed["frame_rate"]) == 12.5
    assert {key: float(value) for key, value in parsed["source"].items()} == \
        {"height": 240, "width": 320, "frame_rate": 25.0, "frame_count": 12}


def test_multi_label_item_stores_every_id():
    parsed = parse_sequence_record(tf.constant(write_one(textured_frames(2), "png",
                                                         label=(4, 0, 9))))
    assert parsed["labels"].numpy().tolist() == [4, 0, 9]


@pytest.mark.parametrize("encoding", ["jpeg", "png", "raw"])
def test_serialisation_is_byte_identical_on_rerun(encoding):
    frames = textured_frames(4)
    assert write_one(frames, encoding) == write_one(frames.copy(), encoding)
    assert write_one(frames, encoding) != write_one(frames, encoding, item_index=8)


@pytest.mark.parametrize("encoding", ["jpeg", "raw"])
def test_our_records_parse_with_model_garden_decoder_keys(encoding):
    frames = textured_frames(5)
    context, sequence = tf.io.parse_single_sequence_example(
        write_one(frames, encoding, label=3), MODEL_GARDEN_CONTEXT, MODEL_GARDEN_SEQUENCE)
    assert tf.sparse.to_dense(context["clip/label/index"]).numpy().tolist() == [3]
    images = sequence["image/encoded"]
    assert images.shape == (5,)
    if encoding == "jpeg":  # Model Garden decodes with decode_jpeg (preprocess_ops_3d)
        assert tf.io.decode_jpeg(images[0], channels=3).shape == (24, 32, 3)


def test_dmvr_generator_records_parse_with_ours():
    frames = marked_frames(7, item=2)
    jpegs = [tf.io.encode_jpeg(frame).numpy() for frame in frames]
    record = dmvr_style_example(jpegs, 5, "jump", "videos/v_3.mp4").SerializeToString()
    parsed = parse_sequence_record(tf.constant(record))
    assert parsed["labels"].numpy().tolist() == [5]
    assert parsed["label_text"].numpy().tolist() == [b"jump"]
    assert parsed["item_id"].numpy() == b"videos/v_3.mp4"
    assert int(parsed["num_frames"]) == 7 and int(parsed["item_index"]) == -1
    assert parsed["format"].numpy() == b"" and int(parsed["height"]) == 0
    decoded = decode_frames(parsed["frames"], [6, 0], "jpeg").numpy()
    assert frame_indices_of(decoded).tolist() == [6, 0]


@pytest.mark.parametrize("encoding,bands,match", [
    ("jpeg", 4, "bands"), ("png", 2, "bands"), ("webp", 3, "encoding"),
])
def test_encodings_reject_what_they_cannot_store(encoding, bands, match):
    with pytest.raises(UserError, match=match):
        encode_frames(np.zeros((1, 4, 4, bands), np.uint8), encoding)


def test_raw_refuses_dtypes_outside_raw_dtypes():
    with pytest.raises(UserError, match="dtype"):
        encode_frames(np.zeros((1, 4, 4, 2), np.float64), "raw")


def test_no_frames_is_an_error():
    with pytest.raises(UserError, match="at least one frame"):
        sequence_example([], frame_shape=(4, 4, 3), encoding="jpeg", label=0, item_id="x")


@pytest.mark.parametrize("bands,expected", [(1, "jpeg"), (3, "jpeg"), (4, "raw"), (7, "raw")])
def test_default_encoding(bands, expected):
    assert default_encoding(bands) == expected


@pytest.mark.parametrize("bands,dtype,expected", [
    (1, "uint16", "png"), (3, "uint16", "png"), (4, "uint16", "png"), (13, "uint16", "raw"),
    (3, "int16", "raw"), (1, "float32", "raw"), (3, "float16", "raw"), (3, "uint8", "jpeg")])
def test_default_encoding_by_dtype(bands, dtype, expected):
    assert default_encoding(bands, dtype) == expected


def _sensor_values(dtype, bands, seed=0):
    """Values that use the dtype's range (and NaN for floats)."""
    rng = np.random.default_rng(seed)
    info = np.finfo(dtype) if np.dtype(dtype).kind == "f" else np.iinfo(dtype)
    low, high = (-3e4, 3e4) if np.dtype(dtype).kind == "f" else (info.min, info.max)
    values = rng.uniform(low, high, (3, 5, 7, bands)).astype(dtype)
    if np.dtype(dtype).kind == "f":
        values[0, 1, 2, 0] = np.nan
        values[1, 0, 0, -1] = np.float32(1e-7).astype(dtype)
    return values


@pytest.mark.parametrize("dtype", RAW_DTYPES)
@pytest.mark.parametrize("bands", [1, 3, 13])
def test_each_dtype_is_stored_bit_identical(dtype, bands):
    frames = _sensor_values(dtype, bands)
    encoding = default_encoding(bands, dtype)
    encoding = "png" if encoding == "jpeg" else encoding  # jpeg is lossy by design
    record = write_one(frames, encoding, dtype=dtype)
    parsed = parse_sequence_record(tf.constant(record))
    assert parsed["dtype"].numpy().decode() == dtype
    back = np.stack([decode_frame(data, encoding, frames.shape[1:], dtype)
                     for data in parsed["frames"].numpy()])
    assert back.dtype == frames.dtype
    np.testing.assert_array_equal(back.view(f"u{frames.itemsize}"),
                                  frames.view(f"u{frames.itemsize}"))


@pytest.mark.parametrize("encoding,dtype", [("jpeg", "uint16"), ("png", "float32"),
                                            ("png", "int16")])
def test_image_codecs_refuse_what_they_cannot_hold(encoding, dtype):
    with pytest.raises(UserError, match="dtype"):
        encode_frames(np.zeros((1, 4, 4, 3), dtype), encoding)


def test_masks_fractions_and_dates_round_trip():
    frames = textured_frames(3)
    masks = np.ones((3, 24, 32), bool)
    masks[1, :12] = False
    record = write_one(frames, "png", encoded_masks=[encode_mask(m) for m in masks],
                       valid_fraction=[1.0, 0.5, 1.0], dates=[19783, 19788, 19800])
    parsed = parse_sequence_record(tf.constant(record))
    back = np.stack([decode_mask(data) for data in parsed["masks"].numpy()])
    np.testing.assert_array_equal(back, masks)
    assert parsed["valid_fraction"].numpy().tolist() == [1.0, 0.5, 1.0]
    assert parsed["dates"].numpy().tolist() == [19783, 19788, 19800]


def test_a_record_without_masks_or_dates_parses_all_valid_and_undated():
    parsed = parse_sequence_record(tf.constant(write_one(textured_frames(4), "jpeg")))
    assert parsed["masks"].shape == (0,) and parsed["dates"].shape == (0,)
    assert parsed["valid_fraction"].numpy().tolist() == [1.0] * 4
    assert parsed["dates"].dtype == tf.int64 and parsed["valid_fraction"].dtype == tf.float32


def test_masks_must_be_one_per_frame():
    with pytest.raises(UserError, match="one of the dates per frame"):
        write_one(textured_frames(3), "png", dates=[1, 2])


def test_to_uint8_is_one_fixed_rule_per_band():
    values = np.array([[[[0, 100], [5000, 300], [10000, 900]]]], np.uint16)
    got = to_uint8(values, [0, 100], [10000, 900])
    assert got.dtype == np.uint8 and got.tolist() == [[[[0, 0], [128, 64], [255, 255]]]]


@pytest.mark.parametrize("total,source_fps,fps,max_frames,expected,rate", [
    (10, 25.0, None, None, list(range(10)), 25.0),
    (10, 25.0, 12.5, None, [0, 2, 4, 6, 8], 12.5),
    (10, 30.0, 10.0, None, [0, 3, 6, 9], 10.0),
    (10, 25.0, 50.0, None, list(range(10)), 25.0),  # never adds frames
    (10, 25.0, None, 4, [1, 3, 6, 8], 10.0),
    (10, 25.0, 12.5, 2, [2, 6], 5.0),
    (3, None, None, 8, [0, 1, 2], None),
])
def test_select_item_frames(total, source_fps, fps, max_frames, expected, rate):
    indices, got_rate = select_item_frames(total, source_fps, fps, max_frames)
    assert indices.tolist() == expected
    assert got_rate == rate


def test_select_item_frames_needs_a_frame_rate_to_resample():
    with pytest.raises(UserError, match="frame rate"):
        select_item_frames(10, None, fps=5)


def test_read_item_frames_resamples_and_resizes_a_video(tmp_path):
    path = write_video(tmp_path / "v.avi", 20)
    item = read_item_frames(path, fps=5, size=16, resize_short=16)
    frames, rate, source = item.frames, item.frame_rate, item.source
    assert item.masks is None and item.dates is None and item.geo is None
    assert frames.shape == (4, 16, 16, 3)
    assert frame_index_of(frames).tolist() == [0, 5, 10, 15]
    assert rate == 5.0
    assert source == SourceInfo(height=24, width=32, frame_rate=25.0, frame_count=20)


def test_read_item_frames_resize_short_alone_keeps_the_aspect_ratio(tmp_path):
    path = write_video(tmp_path / "v.avi", 6)
    item = read_item_frames(path, resize_short=12, max_frames=3)
    frames, rate, source = item.frames, item.frame_rate, item.source
    assert frames.shape == (3, 12, 16, 3)
    assert frame_index_of(frames).tolist() == [1, 3, 5]
    assert rate == 12.5 and source.frame_count == 6


def _georeferenced_stack(path, dates=2, bands=3, height=8, width=12):
    from data_prep.rasters import write_raster

    values = np.arange(height * width * dates * bands, dtype=np.uint16).reshape(
        height, width, dates * bands)
    write_raster(str(path), values, crs="EPSG:32631",
                 transform=(10.0, 0.0, 500000.0, 0.0, -10.0, 4800000.0))
    return values


def test_a_window_of_a_raster_reads_that_patch_with_its_georeference(tmp_path):
    values = _georeferenced_stack(tmp_path / "field_stack.tif")
    item = read_item_frames(str(tmp_path / "field_stack.tif"), bands_per_date=3,
                            window=(2, 4, 4, 6))
    assert item.frames.shape == (2, 4, 6, 3) and item.frames.dtype == np.uint16
    np.testing.assert_array_equal(item.frames[1], values[2:6, 4:10, 3:6])
    assert item.geo["transform"] == [10.0, 0.0, 500040.0, 0.0, -10.0, 4799980.0]
    assert (item.geo["height"], item.geo["width"]) == (4, 6)
    assert item.source.height == 4 and item.source.frame_count == 2
    assert item.masks is None and item.dates is None


def test_the_stored_georeference_follows_the_resize_and_crop(tmp_path):
    _georeferenced_stack(tmp_path / "s.tif")
    item = read_item_frames(str(tmp_path / "s.tif"), bands_per_date=3, size=4,
                            resize_short=4)
    # 8 x 12 -> 4 x 6 (pixels of 20 m), centre crop 4 x 4 starts one column in.
    assert item.frames.shape == (2, 4, 4, 3)
    assert item.geo["transform"] == [20.0, 0.0, 500020.0, 0.0, -20.0, 4800000.0]


def test_nan_and_nodata_make_the_mask_and_keep_their_values(tmp_path):
    values = np.full((2, 3, 4, 2), 7.0, np.float32)
    values[0, 0, 0, 1] = np.nan
    values[1, 2, 3, 0] = -1.0
    np.save(tmp_path / "a.npy", values)
    item = read_item_frames(str(tmp_path / "a.npy"), nodata=-1.0)
    np.testing.assert_array_equal(item.frames, values)  # NaN == NaN here
    assert not item.masks[0, 0, 0] and not item.masks[1, 2, 3]
    assert item.masks.sum() == 2 * 12 - 2 and item.nodata == -1.0
    np.testing.assert_allclose(item.valid_fraction, [11 / 12, 11 / 12])


def test_an_item_without_invalid_pixels_has_no_masks(tmp_path):
    np.save(tmp_path / "a.npy", np.ones((2, 3, 4, 2), np.int16))
    item = read_item_frames(str(tmp_path / "a.npy"))
    assert item.masks is None and item.valid_fraction.tolist() == [1.0, 1.0]


def test_frames_of_different_sizes_resized_alike_are_one_item(tmp_path):
    import cv2

    cv2.imwrite(str(tmp_path / "0.png"), np.zeros((10, 10, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "1.png"), np.zeros((12, 14, 3), np.uint8))
    assert read_item_frames(str(tmp_path), size=8).frames.shape == (2, 8, 8, 3)
    with pytest.raises(DecodeError, match="differ in size"):
        read_item_frames(str(tmp_path))


def test_an_item_above_the_memory_budget_is_skipped_with_its_reason(tmp_path, monkeypatch):
    from data_prep import sequence_records

    np.save(tmp_path / "a.npy", np.zeros((4, 16, 16, 2), np.float32))
    monkeypatch.setattr(sequence_records, "ITEM_MEMORY_BUDGET", 3 * 16 * 16 * 2 * 4)
    with pytest.raises(DecodeError, match="allowed per item"):
        read_item_frames(str(tmp_path / "a.npy"))
    assert len(read_item_frames(str(tmp_path / "a.npy"), max_frames=3).frames) == 3
