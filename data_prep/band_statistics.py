"""Per-band statistics of a dataset, computed item by item and combined.

`prepare` writes the training split's per-band mean, std, min, max, 2nd and 98th
percentiles and valid fraction into the manifest (`statistics`), in stored units: the
model's input layer standardises each band with them, and pictures stretch bands by p2..p98.

The work is split like a combiner (Apache Beam's `CombineFn`): `item_partial` runs in the
worker that decoded an item, over the item's valid pixels only; `combine_partials` merges
any number of partials and is associative and commutative (sums, minima, maxima, and a
bottom-k sample: every sampled value carries a pseudo-random key and a combined sample keeps
the `STATISTICS_SAMPLE_SIZE` smallest keys, whatever order the merges happen in);
`finish_statistics` turns the combined partial into the manifest's numbers. A partial is a
plain dict of numbers and lists, JSON as it is, so it travels through item files and shard
sidecars (one combined partial per shard of the training split; `data_prep.pipeline`).

Determinism: an item's sample is drawn by a generator seeded with a hash of its id, so a
rerun (or a resumed run that reads the sidecars of finished shards) gives the same numbers.
This module never imports TensorFlow.

Example:

>>> import numpy as np
>>> frames = np.array([[[[1.0, 10.0]], [[3.0, np.nan]]]], dtype=np.float32)  # (1, 2, 1, 2)
>>> stats = finish_statistics(item_partial(frames, item_id="a"), split="train")
>>> stats["mean"], stats["count"], stats["valid_fraction"]
([2.0, 10.0], [2, 1], [1.0, 0.5])
"""

import hashlib

import numpy as np

# Values sampled per band from one item for the percentiles (a uniform draw of its valid
# pixels), and the most a combined sample keeps per band.
STATISTICS_SAMPLE_PER_ITEM = 1024
STATISTICS_SAMPLE_SIZE = 2048  # p2/p98 within about half a percentile point
# Sample keys keep 7 significant digits: a shard sidecar holds one combined sample, short.
_KEY_DIGITS = 7
PERCENTILES = (2.0, 98.0)


def _seed(item_id):
    return int.from_bytes(hashlib.sha256(str(item_id).encode()).digest()[:8], "little")


def empty_partial(bands):
    """The partial of no pixel (the identity of `combine_partials`)."""
    return {"bands": int(bands), "pixels": 0, "count": [0] * bands, "sum": [0.0] * bands,
            "sum_squares": [0.0] * bands, "min": [None] * bands, "max": [None] * bands,
            "sample_keys": [[] for _ in range(bands)],
            "sample_values": [[] for _ in range(bands)]}


def item_partial(frames, masks=None, *, item_id, sample_size=STATISTICS_SAMPLE_PER_ITEM):
    """The partial statistics of one item's stored frames.

    Args:
        frames: array (T, H, W, B) of stored values, any dtype.
        masks: None (all valid) or bool array (T, H, W): the item's validity mask. NaN and
            infinite values are invalid too (in their band).
        item_id: str, seeds the item's sample.
        sample_size: int, values sampled per band for the percentiles.

    Returns:
        dict (see `empty_partial`): per band the count of valid values, their sum and sum of
        squares (float64), min and max, and a keyed sample; `pixels` = T*H*W (the valid
        fraction's denominator).
    """
    frames = np.asarray(frames)
    bands = frames.shape[-1]
    partial = empty_partial(bands)
    partial["pixels"] = int(np.prod(frames.shape[:-1]))
    rng = np.random.default_rng(_seed(item_id))
    flat_mask = None if masks is None else np.asarray(masks, dtype=bool).reshape(-1)
    for band in range(bands):
        values = frames[..., band].reshape(-1)
        valid = np.ones(values.shape, bool) if flat_mask is None else flat_mask.copy()
        if values.dtype.kind == "f":
            valid &= np.isfinite(values)
        values = values[valid]
        count = int(values.size)
        chosen, keys = _bottom_keys(rng, count, sample_size)
        partial["count"][band] = count
        partial["sum"][band] = float(values.sum(dtype=np.float64))
        partial["sum_squares"][band] = float(np.square(values, dtype=np.float64).sum())
        partial["min"][band] = float(values.min()) if count else None
        partial["max"][band] = float(values.max()) if count else None
        partial["sample_keys"][band] = [float(f"{key:.{_KEY_DIGITS}g}") for key in keys]
        partial["sample_values"][band] = values[chosen].astype(np.float64).tolist()
    return partial


def _bottom_keys(rng, count, size):
    """(positions, keys): the `size` values of `count` whose i.i.d. uniform keys are
    smallest, without drawing `count` keys: a uniform subset of positions, with the
    smallest `size` order statistics of `count` uniforms (exponential spacings) as keys.
    The same law as keying every value and keeping the smallest, which `combine_partials`
    continues, at the cost of `size` draws."""
    if count <= size:
        return np.arange(count), rng.random(count)
    positions = rng.choice(count, size=size, replace=False)
    spacings = np.cumsum(rng.exponential(size=size))
    keys = spacings / (spacings[-1] + rng.gamma(count + 1 - size))
    return positions, keys


def _pick(function, a, b):
    if a is None:
        return b
    if b is None:
        return a
    return function(a, b)


def combine_partials(partials, sample_size=STATISTICS_SAMPLE_SIZE):
    """Merge partials of the same band count (associative and commutative).

    Raises:
        ValueError: partials of different band counts, or none.
    """
    partials = list(partials)
    if not partials:
        raise ValueError("Expected at least one partial to combine. Received: none")
    bands = {partial["bands"] for partial in partials}
    if len(bands) != 1:
        raise ValueError(f"Expected partials of one band count. Received: {sorted(bands)}")
    bands = bands.pop()
    total = empty_partial(bands)
    for partial in partials:
        total["pixels"] += partial["pixels"]
        for band in range(bands):
            total["count"][band] += partial["count"][band]
            total["sum"][band] += partial["sum"][band]
            total["sum_squares"][band] += partial["sum_squares"][band]
            total["min"][band] = _pick(min, total["min"][band], partial["min"][band])
            total["max"][band] = _pick(max, total["max"][band], partial["max"][band])
            total["sample_keys"][band] = total["sample_keys"][band] + partial["sample_keys"][band]
            total["sample_values"][band] = (total["sample_values"][band]
                                            + partial["sample_values"][band])
    for band in range(bands):
        keys = np.asarray(total["sample_keys"][band], dtype=np.float64)
        values = np.asarray(total["sample_values"][band], dtype=np.float64)
        # Smallest keys first, ties by value: the same sample whatever the merge order.
        order = np.lexsort((values, keys))[:sample_size]
        total["sample_keys"][band] = keys[order].tolist()
        total["sample_values"][band] = values[order].tolist()
    return total


def finish_statistics(partial, split):
    """The manifest's `statistics` of a combined partial (stored units, per band).

    Returns:
        dict: `split`, `count`, `mean`, `std` (population), `min`, `max`, `p2`, `p98`
        (from the sample), `valid_fraction` (valid values / pixels). A band without any
        valid value gets 0 for each number.
    """
    stats = {"split": split, "count": [], "mean": [], "std": [], "min": [], "max": [],
             "p2": [], "p98": [], "valid_fraction": []}
    for band in range(partial["bands"]):
        count = partial["count"][band]
        stats["count"].append(int(count))
        if count == 0:
            for key in ("mean", "std", "min", "max", "p2", "p98", "valid_fraction"):
                stats[key].append(0.0)
            continue
        mean = partial["sum"][band] / count
        variance = max(0.0, partial["sum_squares"][band] / count - mean * mean)
        sample = np.asarray(partial["sample_values"][band], dtype=np.float64)
        low, high = np.percentile(sample, PERCENTILES)
        stats["mean"].append(float(mean))
        stats["std"].append(float(np.sqrt(variance)))
        stats["min"].append(float(partial["min"][band]))
        stats["max"].append(float(partial["max"][band]))
        stats["p2"].append(float(low))
        stats["p98"].append(float(high))
        stats["valid_fraction"].append(float(count / max(1, partial["pixels"])))
    return stats
