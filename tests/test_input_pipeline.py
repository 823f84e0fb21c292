"""Tests for training.input_pipeline: transforms eagerly and inside Dataset.map, and the
training/evaluation datasets over real prepared shards of generated videos."""

import numpy as np
import pytest
import tensorflow as tf

from training import input_pipeline
from training.prepared_data import split_label_counts

FRAMES, SIZE, BANDS, CROP = 4, 16, 3, 12


def make_clip(seed=0, frames=FRAMES, size=SIZE, bands=BANDS):
    return np.random.default_rng(seed).integers(0, 256, (frames, size, size, bands), np.uint8)


def in_map(function, clip, *args):
    """Runs `function(clip, *args)` inside tf.data's graph, as the pipeline does."""
    dataset = tf.data.Dataset.from_tensors(clip).map(lambda c: function(c, *args))
    return next(iter(dataset)).numpy()


@pytest.mark.parametrize("size, crop", [(16, 12), (16, 16), (15, 8), (9, 4)])
@pytest.mark.parametrize("graph", [False, True], ids=["eager", "map"])
def test_center_crop_matches_numpy(size, crop, graph):
    clip = make_clip(size=size)
    got = in_map(input_pipeline.center_crop, clip, crop) if graph else \
        input_pipeline.center_crop(tf.constant(clip), crop).numpy()
    top = (size - crop) // 2
    np.testing.assert_array_equal(got, clip[:, top:top + crop, top:top + crop])


def windows(clip, crop):
    """Every crop window of the clip (same window on every frame): the slow reference."""
    size = clip.shape[1]
    return [clip[:, t:t + crop, l:l + crop] for t in range(size - crop + 1)
            for l in range(size - crop + 1)]


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "map"])
def test_random_crop_is_one_window_for_all_frames_and_seeded(graph):
    clip = make_clip()
    positions = set()
    for seed in range(12):
        seed_tensor = tf.constant([seed, 7], tf.int64)
        got = in_map(input_pipeline.random_crop, clip, CROP, seed_tensor) if graph else \
            input_pipeline.random_crop(tf.constant(clip), CROP, seed_tensor).numpy()
        matches = [i for i, w in enumerate(windows(clip, CROP)) if np.array_equal(w, got)]
        assert len(matches) == 1
        positions.add(matches[0])
        again = input_pipeline.random_crop(tf.constant(clip), CROP, seed_tensor).numpy()
        np.testing.assert_array_equal(got, again)  # same seed, same crop, eager or graph
    assert len(positions) > 3


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "map"])
def test_horizontal_flip_mirrors_whole_clip_or_nothing(graph):
    clip = make_clip()
    outcomes = set()
    for seed in range(16):
        seed_tensor = tf.constant([seed, 3], tf.int64)
        got = in_map(input_pipeline.random_horizontal_flip, clip, seed_tensor) if graph else \
            input_pipeline.random_horizontal_flip(tf.constant(clip), seed_tensor).numpy()
        if np.array_equal(got, clip):
            outcomes.add("kept")
        else:
            np.testing.assert_array_equal(got, clip[:, :, ::-1])
            outcomes.add("flipped")
    assert outcomes == {"kept", "flipped"}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A real prepared dataset: synthetic videos, decoded and written as shards."""
    from data_prep import read_manifest
    from data_prep.prepare import prepare_dataset
    from data_prep.source_spec import SourceSpec
    from data_prep.synth import generate_dataset

    root = tmp_path_factory.mktemp("videos")
    out = tmp_path_factory.mktemp("prepared")
    generate_dataset(str(root), seed=1, videos_per_class=4, num_frames=10, frame_size=(24, 24),
                     show_progress=False)
    spec = SourceSpec("csv", str(root), lists={"train": str(root / "train.csv"),
                                               "test": str(root / "test.csv")})
    prepare_dataset(spec, str(out), FRAMES, SIZE, clips_per_video=2, workers=1,
                    show_progress=False)
    return str(out), read_manifest(str(out))


def test_train_dataset_shapes_labels_and_seeded_order(prepared):
    prepared_dir, manifest = prepared
    num_classes = len(manifest["classes"])
    kwargs = dict(clip_shape=manifest["clip_shape"], num_classes=num_classes, batch_size=5,
                  crop_size=CROP, horizontal_flip=True, shuffle_buffer=64, seed=3)
    dataset = input_pipeline.train_dataset(prepared_dir, "train", **kwargs)
    assert dataset.element_spec[0].shape.as_list() == [None, FRAMES, CROP, CROP, 3]
    assert dataset.element_spec[0].dtype == tf.uint8
    batches = list(dataset)
    clips = np.concatenate([b[0].numpy() for b in batches])
    labels = np.concatenate([b[1].numpy() for b in batches])
    # One random stored clip per item per epoch.
    assert len(clips) == manifest["splits"]["train"]["videos"]
    np.testing.assert_array_equal(labels.sum(axis=1), 1.0)
    counts = split_label_counts(prepared_dir, manifest, "train")
    np.testing.assert_array_equal(labels.sum(axis=0) * 2, [counts[c] for c in range(num_classes)])
    # The same seed gives the same batches in a fresh pipeline.
    again = list(input_pipeline.train_dataset(prepared_dir, "train", **kwargs))
    for first, second in zip(batches, again):
        np.testing.assert_array_equal(first[0].numpy(), second[0].numpy())


def test_train_dataset_without_jitter_uses_every_clip_and_repeats(prepared):
    prepared_dir, manifest = prepared
    dataset = input_pipeline.train_dataset(
        prepared_dir, "train", clip_shape=manifest["clip_shape"],
        num_classes=len(manifest["classes"]), batch_size=4, crop_size=CROP,
        temporal_jitter=False, repeat=True)
    clips = manifest["splits"]["train"]["clips"]
    taken = sum(len(b[0]) for b in dataset.take(clips // 4 + 3))
    assert taken == 4 * (clips // 4 + 3)  # repeats past one epoch


def test_eval_dataset_is_every_clip_centre_cropped_in_order(prepared):
    import data_prep

    prepared_dir, manifest = prepared
    dataset = input_pipeline.eval_dataset(
        prepared_dir, "test", clip_shape=manifest["clip_shape"],
        num_classes=len(manifest["classes"]), batch_size=3, crop_size=CROP,
        with_item_index=True)
    clips, labels, items = (np.concatenate(part) for part in zip(
        *[(c.numpy(), l.numpy(), i.numpy()) for c, l, i in dataset]))
    reference = [(c.numpy(), int(l), int(i)) for c, l, i in
                 data_prep.load_split(prepared_dir, "test", with_item_index=True)]
    assert len(clips) == manifest["splits"]["test"]["clips"] == len(reference)
    top = (SIZE - CROP) // 2
    for got, label, item, (clip, ref_label, ref_item) in zip(clips, labels, items, reference):
        np.testing.assert_array_equal(got, clip[:, top:top + CROP, top:top + CROP])
        assert label.argmax() == ref_label and item == ref_item


@pytest.mark.parametrize("every", [1, 2, 3])
def test_sample_clips_takes_every_nth_clip_with_its_label(prepared, every):
    prepared_dir, manifest = prepared
    dataset = input_pipeline.eval_dataset(
        prepared_dir, "test", clip_shape=manifest["clip_shape"],
        num_classes=len(manifest["classes"]), batch_size=2, crop_size=CROP)
    all_clips = np.concatenate([b[0].numpy() for b in dataset])
    all_labels = np.concatenate([b[1].numpy() for b in dataset]).argmax(axis=1)
    count = min(3, -(-len(all_clips) // every))
    np.testing.assert_array_equal(
        np.stack(input_pipeline.sample_clips(dataset, 3, every=every)),
        all_clips[::every][:count])
    clips, labels = input_pipeline.sample_clips(dataset, 3, every=every, with_labels=True)
    assert labels == all_labels[::every][:count].tolist() and len(clips) == count


# --- issue 20: any stored dtype, the run's clip inputs --------------------------------------

@pytest.mark.parametrize("dtype", ["uint16", "int16", "float16", "float32"])
def test_augmentation_moves_values_of_any_dtype_unchanged(dtype):
    rng = np.random.default_rng(3)
    clip = (rng.uniform(-3e4 if dtype == "int16" else 0, 3e4, (4, 10, 10, 5))).astype(dtype)
    seed = tf.constant([7, 1], tf.int64)
    out = input_pipeline.augment_clip(tf.constant(clip), seed, crop_size=6,
                                      random_crop_enabled=True, horizontal_flip=True).numpy()
    assert out.dtype == np.dtype(dtype) and out.shape == (4, 6, 6, 5)
    # The crop is one of the clip's windows, maybe mirrored: its values exactly.
    found = [window for window in windows(clip, 6)
             if np.array_equal(out, window) or np.array_equal(out, window[:, :, ::-1])]
    assert found


def test_v2_datasets_read_with_the_runs_clip_inputs(tmp_path):
    from sequence_fixtures import write_prepared_v2

    frames = np.full((5, 8, 8, 2), 1000, np.uint16)
    frames[..., 1] = 50000
    masks = np.ones((5, 8, 8), bool)
    masks[0, 0, 0] = False
    items = [{"frames": frames, "masks": masks, "label": label} for label in (0, 1)]
    prepared = write_prepared_v2(tmp_path / "p", {"train": items, "test": items},
                                 classes=["a", "b"], mask=True)
    shape = (3, 8, 8, 2)
    plain = input_pipeline.eval_dataset(prepared, "test", clip_shape=shape, num_classes=2,
                                        batch_size=2, crop_size=8)
    clips, _ = next(iter(plain))
    assert clips.dtype == tf.uint16 and clips.shape == (2, 3, 8, 8, 2)
    inputs = {"dtype": "uint16", "mask": True, "fill": [7.0, 9.0], "mask_band": True,
              "normalization": {"name": "dataset"}}
    clips, _ = next(iter(input_pipeline.train_dataset(
        prepared, "train", clip_shape=shape, num_classes=2, batch_size=2, crop_size=8,
        random_crop_enabled=False, clip_inputs=inputs)))
    clips = clips.numpy()
    assert clips.dtype == np.float32 and clips.shape == (2, 3, 8, 8, 3)
    assert set(np.unique(clips[..., 0])) <= {7.0, 1000.0}
    assert set(np.unique(clips[..., 2])) <= {0.0, 1.0}
