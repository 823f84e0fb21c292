"""Tiny real item files for the data_prep tests: encoded videos, frame folders, .npy arrays.

Frame t of every fixture is one solid colour, RGB (255, 12 * t, 0): frame 0 is pure red
(catches BGR/RGB mix-ups) and the green level tells which frame a clip holds.
"""

import os
import shutil
import subprocess

import cv2
import numpy as np

WIDTH, HEIGHT = 32, 24
FFMPEG = shutil.which("ffmpeg")


def frame_rgb(index, height=HEIGHT, width=WIDTH):
    frame = np.zeros((height, width, 3), np.uint8)
    frame[..., 0] = 255
    frame[..., 1] = (12 * index) % 256
    return frame


def frame_index_of(frames):
    """Recover the frame index from the green level of (..., H, W, 3) RGB frames."""
    return np.rint(frames[..., 1].astype(np.float64).mean(axis=(-1, -2)) / 12).astype(int)


def write_video(path, num_frames, *, codec=None, height=HEIGHT, width=WIDTH):
    """Write a real encoded video; `.avi` MJPG and `.mp4` mp4v via cv2, `.mkv` ffv1 and
    `.h264.mp4` libx264 via ffmpeg."""
    path = str(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if path.endswith(".mkv") or path.endswith(".h264.mp4"):
        codec_args = ["-c:v", "ffv1"] if path.endswith(".mkv") else \
            ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "10"]
        frames = b"".join(frame_rgb(t, height, width).tobytes() for t in range(num_frames))
        subprocess.run([FFMPEG, "-nostdin", "-loglevel", "error", "-y", "-f", "rawvideo",
                        "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", "25", "-i", "-",
                        *codec_args, path], input=frames, check=True)
        return path
    fourcc = codec or ("MJPG" if path.endswith(".avi") else "mp4v")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), 25, (width, height))
    assert writer.isOpened(), path
    for t in range(num_frames):
        writer.write(cv2.cvtColor(frame_rgb(t, height, width), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def write_frame_folder(path, num_frames, *, grey=False, extension=".png"):
    os.makedirs(path, exist_ok=True)
    for t in range(num_frames):
        image = frame_rgb(t)
        if grey:
            image = image[..., 1]
        else:
            image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        # No zero padding: natural sort must put 2.png before 10.png.
        cv2.imwrite(os.path.join(str(path), f"{t}{extension}"), image)
    return str(path)


def write_rawframes(path, num_frames, *, template="img_{:05}.jpg", start_index=1,
                    flow=True):
    """An MMAction2 rawframe folder: RGB frames `template.format(start_index + t)` showing
    `frame_rgb(t)`, and (flow=True) the grey optical-flow frames `x_{:05}.jpg`,
    `y_{:05}.jpg` of another size that extract_frames writes beside them."""
    os.makedirs(path, exist_ok=True)
    for t in range(num_frames):
        cv2.imwrite(os.path.join(str(path), template.format(start_index + t)),
                    cv2.cvtColor(frame_rgb(t), cv2.COLOR_RGB2BGR))
        if flow:
            for axis in "xy":
                cv2.imwrite(os.path.join(str(path), f"{axis}_{start_index + t:05d}.jpg"),
                            np.full((HEIGHT // 2, WIDTH // 2), 128, np.uint8))
    return str(path)


def write_array(path, num_frames, bands, dtype=np.uint8):
    """A (T, H, W, band) array whose band b of frame t is 12 * t + b (as uint8 values)."""
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    values = (12 * np.arange(num_frames)[:, None, None, None]
              + np.arange(bands)[None, None, None, :])
    array = np.broadcast_to(values, (num_frames, HEIGHT, WIDTH, bands)).astype(dtype)
    np.save(str(path), array)
    return str(path)


def write_broken(path, kind):
    """A broken item: `zero-byte`, `garbage` (random bytes) or `truncated` (half an mp4)."""
    path = str(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if kind == "zero-byte":
        open(path, "wb").close()
    elif kind == "garbage":
        with open(path, "wb") as file:
            file.write(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
    elif kind == "truncated":
        whole = write_video(path + ".whole.mp4", 12)
        with open(whole, "rb") as file:
            data = file.read()
        os.remove(whole)
        with open(path, "wb") as file:
            file.write(data[: len(data) // 2])
    else:
        raise ValueError(kind)
    return path


def make_folders_dataset(root, classes=("a", "b"), per_class=2, num_frames=10, kind="avi"):
    """ROOT/<class>/<item> of real items; item j of class i has num_frames + j frames."""
    paths = []
    for class_name in classes:
        for j in range(per_class):
            base = os.path.join(str(root), class_name, f"item{j}")
            if kind == "frames":
                paths.append(write_frame_folder(base, num_frames + j))
            elif kind == "npy":
                paths.append(write_array(base + ".npy", num_frames + j, 3))
            else:
                paths.append(write_video(f"{base}.{kind}", num_frames + j))
    return paths


def read_records(prepared_dir, split):
    """Every record of a split as a dict, parsed with protobuf only (the slow reference)."""
    import json

    import tensorflow as tf

    with open(os.path.join(str(prepared_dir), "manifest.json")) as file:
        manifest = json.load(file)
    records = []
    for shard in manifest["splits"][split]["shards"]:
        for serialized in tf.data.TFRecordDataset(os.path.join(str(prepared_dir), shard)):
            feature = tf.train.Example.FromString(serialized.numpy()).features.feature
            records.append({
                "clip": list(feature["clip"].bytes_list.value),
                # A multi-label record holds `labels` (an id list) instead of `label`.
                "label": (feature["label"].int64_list.value[0] if "label" in feature
                          else tuple(feature["labels"].int64_list.value)),
                "item_id": feature["item_id"].bytes_list.value[0].decode(),
                "item_index": feature["item_index"].int64_list.value[0],
                "clip_index": feature["clip_index"].int64_list.value[0],
            })
    return manifest, records


def raw_clip(record, clip_shape):
    return np.frombuffer(record["clip"][0], np.uint8).reshape(clip_shape)


def write_text(path, text, crlf=False):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(str(path), "w", newline="") as file:
        file.write(text.replace("\n", "\r\n") if crlf else text)
    return str(path)


def copy_to_url(local, url):
    """`local` (a file, or a folder and all under it) copied to `url` with tf.io.gfile, as a
    user uploads a dataset to a bucket (tests use TensorFlow's in-process ram://); returns
    `url`."""
    import tensorflow as tf

    local = str(local)
    if os.path.isfile(local):
        tf.io.gfile.makedirs(url.rsplit("/", 1)[0])
        tf.io.gfile.copy(local, url, overwrite=True)
        return url
    for directory, _, names in os.walk(local):
        relative = os.path.relpath(directory, local)
        target = url if relative == "." else f"{url}/{relative.replace(os.sep, '/')}"
        tf.io.gfile.makedirs(target)
        for name in names:
            tf.io.gfile.copy(os.path.join(directory, name), f"{target}/{name}", overwrite=True)
    return url


def swap_prefix(value, local, url):
    """`value` (paths in strings, lists, dicts, tuples) with the prefix `local` as `url`."""
    if isinstance(value, str):
        return url + value[len(local):].replace(os.sep, "/") if value.startswith(local) \
            else value
    if isinstance(value, (list, tuple)):
        return type(value)(swap_prefix(part, local, url) for part in value)
    if isinstance(value, dict):
        return {key: swap_prefix(part, local, url) for key, part in value.items()}
    return value
