"""The tf.data input pipeline: prepared shards in, (clips, one-hot labels) batches out.

Training reads shards in parallel (data_prep.load_split interleaves them), shuffles items,
takes a random stored clip of each item per epoch (temporal jitter), a random crop and an
optional horizontal flip, then batches and prefetches. Evaluation reads every stored clip
through the same reader with a centre crop and no randomness. All randomness is stateless
and derived from one seed, so a seeded run sees the same batches again.

Shapes: clips (F, H, W, band) in, (B, F, crop, crop, band) out, in the stored dtype (uint8
for 8-bit video; uint16, int16, float16, float32 as prepared; float32 with extra bands, see
`data_prep.sequence_reader`); crops and flips move pixels, never change a value;
normalisation happens inside the model.
"""

import numpy as np
import tensorflow as tf

import data_prep
from data_prep import sequence_reader
from data_prep.shards import split_shard_paths

AUTOTUNE = tf.data.AUTOTUNE


def center_crop(clip, crop_size):
    """The centre `crop_size` x `crop_size` window of every frame of a (F, H, W, band) clip."""
    height, width = tf.shape(clip)[1], tf.shape(clip)[2]
    top = (height - crop_size) // 2
    left = (width - crop_size) // 2
    return clip[:, top:top + crop_size, left:left + crop_size, :]


def spatial_crops(clip, crop_size, num_crops):
    """`num_crops` `crop_size` windows of a (F, H, W, band) clip, evenly spaced along its
    long side (the first and last at the edges) and centred on its short side; one crop is
    the centre crop. MMAction2's ThreeCrop for 3. Returns (num_crops, F, crop, crop, band)."""
    if num_crops == 1:
        return center_crop(clip, crop_size)[None]
    height, width = tf.shape(clip)[1], tf.shape(clip)[2]
    wide = width >= height
    long_room = tf.where(wide, width, height) - crop_size
    short_offset = (tf.where(wide, height, width) - crop_size) // 2
    crops = []
    for index in range(num_crops):
        along = long_room * index // (num_crops - 1)
        top = tf.where(wide, short_offset, along)
        left = tf.where(wide, along, short_offset)
        crops.append(clip[:, top:top + crop_size, left:left + crop_size, :])
    return tf.stack(crops)


def random_crop(clip, crop_size, seed):
    """One random `crop_size` window, the same for every frame (a crop per frame would jitter).

    Args:
        clip: (F, H, W, band) tensor.
        crop_size: int, output height and width.
        seed: int32 tensor of shape (2,), for the stateless random offsets.
    """
    height, width = tf.shape(clip)[1], tf.shape(clip)[2]
    top = tf.random.stateless_uniform((), seed, 0, height - crop_size + 1, dtype=tf.int32)
    left = tf.random.stateless_uniform(
        (), seed + tf.constant([0, 1], seed.dtype), 0, width - crop_size + 1, dtype=tf.int32
    )
    return clip[:, top:top + crop_size, left:left + crop_size, :]


def random_horizontal_flip(clip, seed):
    """Mirrors every frame of the clip left-right with probability 1/2 (all frames together)."""
    flip = tf.random.stateless_uniform((), seed + tf.constant([1, 0], seed.dtype)) < 0.5
    return tf.cond(flip, lambda: tf.reverse(clip, axis=[2]), lambda: clip)


def augment_clip(clip, seed, *, crop_size, random_crop_enabled, horizontal_flip):
    """Training-time transform of one clip; `seed` is an int32/int64 (2,) tensor."""
    if random_crop_enabled:
        clip = random_crop(clip, crop_size, seed)
    else:
        clip = center_crop(clip, crop_size)
    if horizontal_flip:
        clip = random_horizontal_flip(clip, seed)
    return clip


def _as_target(label, num_classes):
    """One-hot of an int label; a multi-label dataset's float32 multi-hot passes as it is."""
    if label.dtype == tf.float32:
        return tf.ensure_shape(label, (num_classes,))
    return tf.one_hot(label, num_classes, dtype=tf.float32)


def _with_static_shape(clip, clip_shape, crop_size):
    frames = clip_shape[0]
    return tf.ensure_shape(clip, (frames, crop_size, crop_size, clip.shape[-1]))


def read_options_of(clip_inputs):
    """The `sequence_reader` read options of a run's clip inputs (its normalisation aside)."""
    return {key: value for key, value in (clip_inputs or {}).items()
            if key in sequence_reader.READ_DEFAULTS}


def read_split(prepared_dir, split, clip_inputs=None, **options):
    """`data_prep.load_split(prepared_dir, split, **options)`; a v2 split through
    `sequence_reader.load_items` with the run's clip inputs (dtype, masks, dates, extra
    bands; None: the manifest's dtype, nothing added)."""
    manifest = data_prep.read_manifest(prepared_dir)
    if not data_prep.is_whole_items(manifest):
        return data_prep.load_split(prepared_dir, split, **options)
    if split not in manifest["splits"]:
        return data_prep.load_split(prepared_dir, split, **options)  # its error
    shards = split_shard_paths(prepared_dir, manifest, split)
    options.pop("num_parallel_reads", None)
    options.pop("shuffle_shards", None)
    return sequence_reader.load_items(manifest, shards, options=read_options_of(clip_inputs),
                                      num_frames=options.pop("num_frames"), **options)


def train_dataset(prepared_dir, split, *, clip_shape, num_classes, batch_size, crop_size,
                  random_crop_enabled=True, horizontal_flip=False, temporal_jitter=True,
                  shuffle_buffer=256, seed=0, repeat=False, check_cardinality=True,
                  num_input_pipelines=1, input_pipeline_id=0, sampling="uniform",
                  frame_stride=1, clip_inputs=None):
    """The training dataset: shuffled, augmented (clips, one-hot labels) batches.

    Args:
        prepared_dir: str, a prepared dataset (manifest.json inside).
        split: str, e.g. "train".
        clip_shape: (F, H, W, band) of the stored clips (the manifest's clip_shape).
        num_classes: int, labels become one-hot vectors of this length (label smoothing needs
            them).
        batch_size: int.
        crop_size: int <= H, W: the model's input height and width.
        random_crop_enabled: bool, random crop window (else centre).
        horizontal_flip: bool, random left-right flips (off for direction-sensitive labels).
        temporal_jitter: bool, a random stored clip of each item per epoch; without it every
            stored clip is used every epoch.
        shuffle_buffer: int, items held by the shuffle.
        seed: int, for shard order, shuffle, clip choice, crops and flips.
        repeat: bool, repeat forever (for a fixed steps_per_epoch).
        check_cardinality: bool, assert the manifest's item count (off when the files are
            split between workers: each then sees only its part).
        num_input_pipelines, input_pipeline_id: int, this worker reads every
            `num_input_pipelines`-th shard file from `input_pipeline_id` on (see
            `data_prep.load_split`); 1 and 0 read them all.
        sampling, frame_stride: v2 (whole items): how the F frames of each fresh clip are
            drawn (`"uniform"`: a random frame per segment; `"stride"`: a window at a random
            start); without temporal jitter the centre clip. v1 stores its clips.
        clip_inputs: dict or None, v2: the run's clip inputs
            (`training.prepared_data.clip_inputs_of`; None: the manifest's dtype, nothing
            added).

    Returns:
        tf.data.Dataset of ((B, F, crop, crop, band) clips of the stored dtype, float32
        (B, num_classes)).
    """
    dataset = read_split(
        prepared_dir, split, clip_inputs,
        clip_selection="random" if temporal_jitter else "all",
        shuffle_shards=True, seed=seed, num_parallel_reads=AUTOTUNE,
        num_input_pipelines=num_input_pipelines, input_pipeline_id=input_pipeline_id,
        num_frames=clip_shape[0], sampling=sampling, frame_stride=frame_stride,
    )
    # A known length lets Keras size the epoch (and catches shards that disagree with the
    # manifest) instead of warning that the input "ran out of data".
    counts = data_prep.clip_manifest(data_prep.read_manifest(prepared_dir),
                                     frames=clip_shape[0])["splits"][split]
    if check_cardinality:
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(
            counts["videos"] if temporal_jitter else counts["clips"]))
    dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    # One stateless seed pair per element: reproducible, and independent of map parallelism.
    seeds = tf.data.Dataset.random(seed=seed).batch(2, drop_remainder=True)
    dataset = tf.data.Dataset.zip((dataset, seeds))

    def transform(element, element_seed):
        clip, label = element[0], element[1]
        clip = augment_clip(clip, tf.cast(element_seed, tf.int64), crop_size=crop_size,
                            random_crop_enabled=random_crop_enabled,
                            horizontal_flip=horizontal_flip)
        clip = _with_static_shape(clip, clip_shape, crop_size)
        return clip, _as_target(label, num_classes)

    dataset = dataset.map(transform, num_parallel_calls=AUTOTUNE)
    return dataset.batch(batch_size).prefetch(AUTOTUNE)


def eval_dataset(prepared_dir, split, *, clip_shape, num_classes, batch_size, crop_size,
                 with_item_index=False, sampling="uniform", frame_stride=1, num_clips=None,
                 num_crops=1, clip_inputs=None):
    """Every stored clip in file order, centre-cropped, batched; no randomness.

    v2 (whole items): the `num_clips` evenly spaced clips of each item are drawn as
    `sampling` and `frame_stride` say (None: one), each in `num_crops` spatial crops
    (`spatial_crops`), an item's views consecutive. v1 reads its stored clips (`num_crops`
    crops of each too). `clip_inputs` as in `train_dataset`.

    Returns:
        tf.data.Dataset of (clips (B, F, crop, crop, band), float32 one-hot (B, C)), plus
        int32 item indices (B,) when `with_item_index` (clips of one item are averaged).
    """
    dataset = read_split(
        prepared_dir, split, clip_inputs, clip_selection="all", with_item_index=True,
        shuffle_shards=False, num_parallel_reads=AUTOTUNE, num_frames=clip_shape[0],
        sampling=sampling, frame_stride=frame_stride, num_clips=num_clips or 1,
    )
    manifest = data_prep.clip_manifest(data_prep.read_manifest(prepared_dir),
                                       frames=clip_shape[0], num_clips=num_clips or 1)
    clips = manifest["splits"][split]["clips"]
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(clips))

    def crops(clip, label, index):
        views = spatial_crops(clip, crop_size, num_crops)
        return tf.data.Dataset.from_tensor_slices((
            views, tf.repeat(label[None], num_crops, axis=0), tf.fill([num_crops], index)))

    if num_crops > 1:
        dataset = dataset.flat_map(crops).apply(
            tf.data.experimental.assert_cardinality(clips * num_crops))

    def transform(clip, label, index):
        clip = _with_static_shape(center_crop(clip, crop_size), clip_shape, crop_size)
        label = _as_target(label, num_classes)
        if with_item_index:
            return clip, label, index
        return clip, label

    dataset = dataset.map(transform, num_parallel_calls=AUTOTUNE)
    return dataset.batch(batch_size).prefetch(AUTOTUNE)


def sample_clips(dataset, count, *, every=1, with_labels=False):
    """Every `every`-th clip of a batched dataset, `count` of them, as uint8 numpy arrays (for
    images); `every` = clips_per_video takes them from different videos of an eval dataset.
    With `with_labels`, (clips, label ids)."""
    clips, labels, seen = [], [], 0
    for batch in dataset:
        for clip, label in zip(batch[0].numpy(), batch[1].numpy()):
            if seen % every == 0 and len(clips) < count:
                clips.append(clip)
                labels.append(int(np.argmax(label)) if np.ndim(label) else int(label))
            seen += 1
        if len(clips) >= count:
            break
    return (clips, labels) if with_labels else clips
