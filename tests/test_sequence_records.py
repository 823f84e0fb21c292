"""Tests for data_prep.sequence_records: the v2 record, written and parsed, and its
interoperability with TF Model Garden's and DMVR's video records."""

import numpy as np
import pytest
import tensorflow as tf

from core.errors import UserError
from data_prep.clip_sampling import decode_frames
from data_prep.sequence_records import (SourceInfo, default_encoding, encode_frames,
                                        parse_sequence_record, read_item_frames,
                                        select_item_frames, sequence_example)
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


def test_raw_refuses_other_dtypes_until_any_sensor_lands():
    with pytest.raises(UserError, match="dtype"):
        encode_frames(np.zeros((1, 4, 4, 2), np.float32), "raw")


def test_no_frames_is_an_error():
    with pytest.raises(UserError, match="at least one frame"):
        sequence_example([], frame_shape=(4, 4, 3), encoding="jpeg", label=0, item_id="x")


@pytest.mark.parametrize("bands,expected", [(1, "jpeg"), (3, "jpeg"), (4, "raw"), (7, "raw")])
def test_default_encoding(bands, expected):
    assert default_encoding(bands) == expected


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
    frames, rate, source = read_item_frames(path, fps=5, size=16, resize_short=16)
    assert frames.shape == (4, 16, 16, 3)
    assert frame_index_of(frames).tolist() == [0, 5, 10, 15]
    assert rate == 5.0
    assert source == SourceInfo(height=24, width=32, frame_rate=25.0, frame_count=20)


def test_read_item_frames_resize_short_alone_keeps_the_aspect_ratio(tmp_path):
    path = write_video(tmp_path / "v.avi", 6)
    frames, rate, source = read_item_frames(path, resize_short=12, max_frames=3)
    assert frames.shape == (3, 12, 16, 3)
    assert frame_index_of(frames).tolist() == [1, 3, 5]
    assert rate == 12.5 and source.frame_count == 6
