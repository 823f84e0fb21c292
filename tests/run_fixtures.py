"""A tiny finished run for the evaluate, export and predict tests: small3d trained on generated
videos of a bright bar moving or standing still (conftest's session fixture `run_path`)."""

import os

import cv2
import numpy as np

from training.config import config_from_dict
from training.run_dir import open_run_dir
from training.trainer import run_experiment

CLASSES = ("moving", "still")  # label = index (sorted names)
HEIGHT, WIDTH, VIDEO_FRAMES = 24, 32, 8  # not square: the spatial crops differ


def toy_frames(label, seed, *, frames=VIDEO_FRAMES, height=HEIGHT, width=WIDTH):
    """uint8 RGB (T, H, W, 3): a bright bar over a static textured background, moving 3 px a
    frame to the right or standing still: separable by motion alone, which every model
    (frame differences or not) sees."""
    rng = np.random.default_rng(seed)
    background = rng.integers(0, 60, (height, width, 3)).astype(np.uint8)
    colour = rng.integers(200, 256, 3)
    start = int(rng.integers(4, 9)) if label == "moving" else int(rng.integers(6, 23))
    clip = np.repeat(background[None], frames, axis=0)
    for t in range(frames):
        left = start + 3 * t if label == "moving" else start
        clip[t, :, left:left + 4] = colour
    return clip


def write_toy_video(path, label, seed):
    """`toy_frames` as a real MJPG .avi file."""
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (WIDTH, HEIGHT))
    assert writer.isOpened()
    for frame in toy_frames(label, seed):
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return str(path)


def toy_csv_source(root, *, per_class, train_per_class):
    """`per_class` toy videos of each class under `root` and csv lists (the first
    `train_per_class` of each class train, the rest test); returns the data config keys."""
    rows = {"train": [], "test": []}
    for label, name in enumerate(CLASSES):
        for index in range(per_class):
            write_toy_video(root / name / f"{index}.avi", name, seed=100 * label + index)
            rows["train" if index < train_per_class else "test"].append(
                f"{name}/{index}.avi,{name}")
    for split, lines in rows.items():
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return {"layout": "csv", "root": str(root),
            "lists": {split: str(root / f"{split}.csv") for split in rows}}


def tiny_run(tmp_path_factory):
    """A finished run (small3d, moving vs still, 4x16x16 clips, 2 per video, crop 12)."""
    base = tmp_path_factory.getbasetemp()
    run_path = base / "tiny_run" / "run"
    if (run_path / "metrics.json").exists():
        return str(run_path)
    source = toy_csv_source(base / "tiny_run" / "videos", per_class=6, train_per_class=4)
    config = _tiny_config(
        "tiny", {**source, "prepared_dir": str(base / "tiny_run" / "prepared")},
        # 40 steps: enough for batch norm's moving statistics (momentum 0.9) to settle.
        steps_per_epoch=20, views="3x2", confusion_matrix=False)
    run_experiment(config, open_run_dir(str(run_path)), verbose=0)
    return str(run_path)


def _tiny_config(name, data, *, steps_per_epoch, views, **tensorboard):
    """The tiny runs' config: small3d on 4x16x16 clips (2 a video), 12-pixel centre crops,
    2 epochs of Adam, the expensive TensorBoard views off."""
    return config_from_dict({
        "name": name,
        # v1 unless `data` says otherwise: the evaluate/predict tests compare the stored
        # clips with the decode-again path, which only v1 has.
        "data": {"format": "v1", **data, "frames": 4, "size": 16, "clips_per_video": 2,
                 "workers": 1},
        "model": {"name": "small3d"},
        "augment": {"horizontal_flip": False, "random_crop": False, "crop_size": 12},
        "train": {"epochs": 2, "steps_per_epoch": steps_per_epoch, "batch_size": 8,
                  "optimizer": "adam", "learning_rate": 0.003},
        "evaluate": {"views": views},
        "tensorboard": {"histograms": False, "graph": False, "clip_images": 0,
                        "deform_offsets": False, **tensorboard},
    })


def tiny_multi_label_run(tmp_path_factory):
    """A finished multi-label run: small3d on a few generated multi-label synth videos
    (`data.synth.multi_label`; 8 labels, 1 to 3 per video), 4x16x16 clips, 2 per video."""
    base = tmp_path_factory.getbasetemp() / "tiny_multi_label_run"
    run_path = base / "run"
    if (run_path / "metrics.json").exists():
        return str(run_path)
    config = _tiny_config(
        "tiny_multi_label",
        {"layout": "synth", "root": str(base / "videos"), "prepared_dir": str(base / "prepared"),
         "multi_label": True, "synth": {"multi_label": True, "videos_per_class": 2,
                                        "num_frames": 8, "frame_size": [24, 24], "seed": 0}},
        steps_per_epoch=5, views="3x1")
    run_experiment(config, open_run_dir(str(run_path)), verbose=0)
    return str(run_path)
