"""Data preparation: videos (or frame folders, .npy arrays) -> (F, H, W, band) clip shards.

`python -m data_prep prepare|synth|inspect`. The readers are exported here lazily, so
`import data_prep` does not import TensorFlow:

- `data_prep.load_split(prepared_dir, split, ...)` -> `tf.data.Dataset` (data_prep.reader)
- `data_prep.read_manifest(prepared_dir)` -> dict (data_prep.reader), format v1 or v2
- `data_prep.clip_manifest(manifest, frames=...)` -> the manifest as a reader of clips sees it
"""

__all__ = ["load_split", "read_manifest", "clip_manifest", "is_whole_items"]


def __getattr__(name):
    if name in __all__:
        from data_prep import reader

        return getattr(reader, name)
    raise AttributeError(f"module 'data_prep' has no attribute {name!r}")
