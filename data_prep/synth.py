"""A synthetic demo dataset: textured shapes whose eight classes differ only in how they move.

Each video shows one textured shape on a cluttered, static background. The classes are
motions: `move_left`, `move_right`, `move_up`, `move_down`, `rotate_cw`, `rotate_ccw`,
`grow`, `shrink`. Shape, colours, texture, size, start position, start angle, speed and
background are drawn per video from one distribution shared by every class, and the first
frame depends on that appearance only (never on the class), so one frame cannot tell the
class while a clip can.

Every shape starts fully inside the frame. Moving shapes wrap around the frame edges (they
leave on one side and come back on the other) rather than stop or bounce, which would let a
frame near an edge hint at the direction; a grown shape near an edge is clipped by it.

The videos are real files written with `cv2.VideoWriter`, alternating MJPG `.avi` and mp4v
`.mp4`, in the `folders` layout `OUT/<class>/<class>_<index>.<ext>`, with `OUT/train.csv`
and `OUT/test.csv` in the `csv` layout (rows `path,label`, no header row, paths relative to
OUT, labels are class names). Everything is deterministic for a seed: each video draws from
its own random stream seeded by (seed, class, index), so a rerun that skips the videos an
interrupted run already finished gives the same files as one uninterrupted run;
`OUT/synth.json` records the parameters, and a rerun with other ones is refused.

With `multi_label=True` (`--multi-label`) each video combines one to three motions, at most
one of each group of `MOTION_GROUPS`: a translation (a direction, or none), a rotation (cw,
ccw or none) and a scaling (grow, shrink or none); the eight names are its labels. The
groups are dealt independently so that in each split every label is on exactly a fifth of
the videos (see `draw_label_sets`); `videos_per_class` is then the number of videos each
label is on, so there are five times as many videos in all. Shapes travel less far
(`MULTI_LABEL_TRAVEL_FRACTION`), so that the turn of a moving shape stays visible. The
videos go to `OUT/train/video_<index>.<ext>` and `OUT/test/...`, and the list rows are the
csv layout's multi-label rows `path,name1;name2`; `prepare_arguments(OUT)` gives what
`prepare_dataset` needs to read either kind (csv, the lists, `multi_label`). The first
frame is still the same whatever the labels.

Mirroring a clip changes its label (a horizontal flip swaps move_left/move_right and
rotate_cw/rotate_ccw), so augmentations for this dataset must not flip.

    python -m data_prep synth --out data/synth_motion --seed 0
    python -m data_prep synth --out data/synth_multi_label --multi-label

`kind="multispectral"` (`--kind multispectral`) writes instead the 10-band uint16 field time
series of `data_prep.synth_multispectral` (`OUT/<class>/<class>_<index>.npy`, each with its
`.dates.json`), with the same lists, parameters file and resuming.

    python -m data_prep synth --kind multispectral --out data/synth_fields --size 16x16
"""

import argparse
import dataclasses
import json
import logging
import math
import os
import time
from pathlib import Path

import cv2
import numpy as np

from core.atomic import TEMPORARY_PREFIX, atomic_write, write_text_atomically
from core.errors import UserError
from data_prep import synth_multispectral
from data_prep.sources import CSV_LABEL_SEPARATOR

logger = logging.getLogger(__name__)

CLASSES = (
    "move_left",
    "move_right",
    "move_up",
    "move_down",
    "rotate_cw",
    "rotate_ccw",
    "grow",
    "shrink",
)
# The motions that exclude each other; a multi-label video has at most one of each group.
MOTION_GROUPS = (
    ("move_left", "move_right", "move_up", "move_down"),
    ("rotate_cw", "rotate_ccw"),
    ("grow", "shrink"),
)
# Multi-label: every label is on this share of a split's videos (the four directions then
# leave a fifth of the videos without translation, each group's "none" takes the rest).
LABEL_SHARE = 5
SPLITS = ("train", "test")
# What `generate_dataset(kind=...)` writes: these motion videos, or the multispectral fields
# of data_prep.synth_multispectral (the same lists, the same resuming).
KINDS = ("video", "multispectral")
DEFAULT_SIZES = {"video": "64x64", "multispectral": "16x16"}  # the CLI's --size
SHAPE_KINDS = ("ellipse", "rectangle", "triangle", "arrow", "l_shape", "cross")
# (fourcc, extension) by video index: a mix of the two codecs OpenCV's writer always has.
CONTAINERS = (("MJPG", ".avi"), ("mp4v", ".mp4"))
FRAMES_PER_SECOND = 25
PARAMETERS_FILE = "synth.json"
MARKER_COLOUR = np.array([245.0, 245.0, 245.0])

# Ranges of the motion per video, for the whole video; one "amount" in [0, 1] per video
# sets all three so that every class draws its speed from the same distribution.
TRAVEL_FRACTION = (0.45, 0.75)  # of the frame's width or height
# Multi-label: slower, so that a moving shape's turn is not swamped by its travel (with the
# single-label range a small3d tells cw from ccw on still shapes, not on moving ones).
MULTI_LABEL_TRAVEL_FRACTION = (0.2, 0.35)
# Under 90 degrees (where a 2-fold symmetric outline aliases) per step at 8 of 32 frames.
SPIN_DEGREES = (200.0, 320.0)
SCALE_FACTOR = (1.6, 2.1)  # grow: radius x factor; shrink: radius / factor
# Circumscribed radius of the shape at the first frame, as a fraction of the short side;
# at most 0.24 x 2.1 ~ 0.5 after growing, so a shape is never larger than the frame.
RADIUS_FRACTION = (0.16, 0.24)


@dataclasses.dataclass(frozen=True)
class Appearance:
    """Everything about one video except its motion: what the first frame shows.

    Attributes:
        background: uint8 (H, W, 3) RGB, static clutter.
        outline: float (N, 2) polygon in unit coordinates (inside the unit circle).
        stripe_colours: float (2, 3) RGB, the two colours of the stripe texture.
        stripe_period: stripe period in unit coordinates.
        stripe_angle: stripe direction in radians, in the shape's own frame.
        marker: (u, v, r) a light disc inside the outline, off its centre, in unit
            coordinates: a high-contrast spot that circles when the shape turns, which
            makes the direction of a turn visible even at 28 px.
        center: (x, y) position of the shape at the first frame, in pixels.
        radius: circumscribed radius at the first frame, in pixels.
        angle: orientation at the first frame, in degrees, clockwise on screen.
        amount: in [0, 1], how far/fast the shape moves, turns or scales over the video.
        noise_seed: seed of the per-frame sensor noise.
    """

    background: np.ndarray
    outline: np.ndarray
    stripe_colours: np.ndarray
    stripe_period: float
    stripe_angle: float
    marker: tuple
    center: tuple
    radius: float
    angle: float
    amount: float
    noise_seed: int


def parse_frame_size(text):
    """Parses `"WxH"` or `"S"` (square) into `(width, height)`.

    Raises:
        UserError: if the text is not of that form.
    """
    parts = str(text).lower().split("x")
    try:
        values = [int(part) for part in parts]
    except ValueError:
        values = []
    if len(values) == 1:
        values = values * 2
    if len(values) != 2:
        raise UserError(
            f"Expected a frame size `WxH` (e.g. 64x64) or `S`. Received: size={text!r}"
        )
    return values[0], values[1]


def _random_colour(rng, saturation, value):
    hue = rng.uniform(0.0, 180.0)
    hsv = np.array([[[hue, rng.uniform(*saturation) * 255, rng.uniform(*value) * 255]]])
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _outline_polygon(kind, rng):
    """A polygon inside the unit circle, as float (N, 2) in (u, v), v pointing down."""
    if kind == "ellipse":
        aspect = rng.uniform(0.45, 0.75)
        theta = np.linspace(0.0, 2.0 * np.pi, 48, endpoint=False)
        return np.stack([np.cos(theta), aspect * np.sin(theta)], axis=1)
    if kind == "rectangle":
        aspect = rng.uniform(0.4, 0.75)
        half_w = 1.0 / math.sqrt(1.0 + aspect**2)
        half_h = aspect * half_w
        return np.array(
            [[-half_w, -half_h], [half_w, -half_h], [half_w, half_h], [-half_w, half_h]]
        )
    if kind == "triangle":
        # Isosceles, not equilateral, so a third of a turn does not look like no turn.
        base = rng.uniform(0.45, 0.7)
        return np.array([[1.0, 0.0], [-0.8, -base], [-0.8, base]])
    if kind == "arrow":
        return np.array(
            [[1.0, 0.0], [0.3, -0.6], [0.3, -0.25], [-0.9, -0.25], [-0.9, 0.25], [0.3, 0.25],
             [0.3, 0.6]]
        )
    if kind == "l_shape":
        return np.array(
            [[-0.7, -0.7], [-0.2, -0.7], [-0.2, 0.2], [0.7, 0.2], [0.7, 0.7], [-0.7, 0.7]]
        )
    if kind == "cross":
        # A long arm on one side breaks the four-fold symmetry.
        return np.array(
            [[-0.2, -0.6], [0.2, -0.6], [0.2, -0.2], [0.95, -0.2], [0.95, 0.2], [0.2, 0.2],
             [0.2, 0.6], [-0.2, 0.6], [-0.2, 0.2], [-0.5, 0.2], [-0.5, -0.2], [-0.2, -0.2]]
        )
    raise ValueError(f"Unknown shape kind. Received: kind={kind!r}")


def _marker_inside(outline, rng):
    """A disc well inside the outline and away from its centre: `(u, v, radius)`."""
    contour = outline.astype(np.float32).reshape(-1, 1, 2)
    grid = np.linspace(-0.9, 0.9, 19)
    candidates = []
    for u in grid:
        for v in grid:
            inside = cv2.pointPolygonTest(contour, (float(u), float(v)), True)
            if inside >= 0.12 and math.hypot(u, v) >= 0.3:
                candidates.append((float(u), float(v), min(0.25, inside)))
    if not candidates:  # every outline above has some; keep a thin one working too
        return 0.0, 0.0, 0.0
    return candidates[rng.integers(len(candidates))]


def _cluttered_background(rng, width, height):
    """Low-saturation clutter: blurred noise plus random rectangles, discs and lines."""
    base = _random_colour(rng, (0.0, 0.25), (0.3, 0.7))
    noise = rng.normal(0.0, 1.0, size=(height // 4 + 2, width // 4 + 2, 1)).astype(np.float32)
    noise = cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)[..., None]
    image = np.clip(base + 18.0 * noise, 0, 255).astype(np.uint8)
    scale = min(width, height)
    for _ in range(rng.integers(8, 16)):
        colour = tuple(float(c) for c in _random_colour(rng, (0.0, 0.3), (0.15, 0.85)))
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        size = rng.uniform(0.04, 0.2) * scale
        kind = rng.integers(3)
        if kind == 0:
            p0 = (int(x - size), int(y - size * rng.uniform(0.3, 1.0)))
            p1 = (int(x + size), int(y + size * rng.uniform(0.3, 1.0)))
            cv2.rectangle(image, p0, p1, colour, thickness=-1, lineType=cv2.LINE_AA)
        elif kind == 1:
            cv2.circle(image, (int(x), int(y)), max(1, int(size * 0.7)), colour, -1, cv2.LINE_AA)
        else:
            angle = rng.uniform(0, np.pi)
            dx, dy = 2 * size * np.cos(angle), 2 * size * np.sin(angle)
            cv2.line(image, (int(x - dx), int(y - dy)), (int(x + dx), int(y + dy)), colour,
                     int(rng.integers(1, 3)), cv2.LINE_AA)
    return image


def draw_appearance(rng, frame_size):
    """Draws one video's appearance; the same distribution for every class.

    Args:
        rng: `np.random.Generator`.
        frame_size: `(width, height)` in pixels.

    Returns:
        An `Appearance`.
    """
    width, height = frame_size
    background = _cluttered_background(rng, width, height)
    kind = SHAPE_KINDS[rng.integers(len(SHAPE_KINDS))]
    outline = _outline_polygon(kind, rng)
    # Saturated shape colours on a low-saturation background keep the shape visible after
    # downscaling to 32 px; a bright and a dark colour keep the stripes visible too.
    first = _random_colour(rng, (0.7, 1.0), (0.75, 1.0))
    second = _random_colour(rng, (0.7, 1.0), (0.35, 0.6))
    marker = _marker_inside(outline, rng)
    short_side = min(width, height)
    radius = float(rng.uniform(*RADIUS_FRACTION) * short_side)
    return Appearance(
        background=background,
        outline=outline,
        stripe_colours=np.stack([first, second]),
        stripe_period=float(rng.uniform(0.45, 0.8)),
        stripe_angle=float(rng.uniform(0, np.pi)),
        marker=marker,
        # Inside the frame at the start (2 pixels spare for anti-aliasing), so the first
        # frame is the same for every class, wrapping or not.
        center=(float(rng.uniform(radius + 2, width - radius - 2)),
                float(rng.uniform(radius + 2, height - radius - 2))),
        radius=radius,
        angle=float(rng.uniform(0, 360)),
        amount=float(rng.uniform(0, 1)),
        noise_seed=int(rng.integers(2**31)),
    )


def _motion_names(motion):
    """`motion` (one name, or a collection of names) as a tuple, at most one per group."""
    motions = (motion,) if isinstance(motion, str) else tuple(motion)
    for name in motions:
        if name not in CLASSES:
            raise ValueError(f"Expected motions among {CLASSES}. Received: motion={motion!r}")
    for group in MOTION_GROUPS:
        if sum(name in group for name in motions) > 1:
            raise ValueError(f"Expected at most one motion of {group}. Received: motion={motion!r}")
    return motions


def pose_at(appearance, motion, progress, frame_size, travel_fraction=TRAVEL_FRACTION):
    """Where the shape is at `progress` in [0, 1] through the video.

    Args:
        appearance: an `Appearance`.
        motion: one of `CLASSES`, or a collection of them (at most one of each of
            `MOTION_GROUPS`), applied together; an empty one keeps the shape still.
        progress: float in [0, 1].
        frame_size: `(width, height)` in pixels.
        travel_fraction: `(low, high)`, the range of a translation over the whole video, as
            a fraction of the frame's width or height.

    Returns:
        `(x, y, angle_degrees_clockwise, radius_pixels)`; x and y are not wrapped.
    """
    width, height = frame_size
    x, y = appearance.center
    angle, radius = appearance.angle, appearance.radius
    amount = appearance.amount
    travel = np.interp(amount, (0, 1), travel_fraction) * progress
    spin = np.interp(amount, (0, 1), SPIN_DEGREES) * progress
    log_scale = math.log(np.interp(amount, (0, 1), SCALE_FACTOR)) * progress
    for name in _motion_names(motion):
        if name == "move_left":
            x -= travel * width
        elif name == "move_right":
            x += travel * width
        elif name == "move_up":
            y -= travel * height
        elif name == "move_down":
            y += travel * height
        elif name == "rotate_cw":
            angle += spin
        elif name == "rotate_ccw":
            angle -= spin
        elif name == "grow":
            radius *= math.exp(log_scale)
        else:  # shrink
            radius *= math.exp(-log_scale)
    return float(x), float(y), float(angle), float(radius)


def render_frame(appearance, pose, frame_index, wrap):
    """Renders one RGB frame: the shape at `pose` over the background, plus sensor noise.

    The shape is rendered on a small patch around it and pasted into the frame; with
    `wrap`, patch pixels past an edge land on the opposite side.

    Args:
        appearance: an `Appearance`.
        pose: `(x, y, angle_degrees_clockwise, radius_pixels)`, see `pose_at`.
        frame_index: int, seeds this frame's noise.
        wrap: bool, draw the shape on a torus (what leaves on one side comes back on the
            other) rather than clipped at the frame edges.

    Returns:
        uint8 (H, W, 3) RGB.
    """
    background = appearance.background
    height, width = background.shape[:2]
    x, y, angle_degrees, radius = pose
    if wrap:
        x, y = x % width, y % height
    angle = math.radians(angle_degrees)
    cos_a, sin_a = math.cos(angle), math.sin(angle)
    # The outline lies inside the unit circle: a patch of radius + 1 pixel holds it all.
    left, top = math.floor(x - radius) - 1, math.floor(y - radius) - 1
    patch_size = math.ceil(2 * radius) + 3

    # Coverage: the outline polygon, anti-aliased, at 1/16 pixel precision.
    unit = appearance.outline
    points = np.stack(
        [x - left + radius * (cos_a * unit[:, 0] - sin_a * unit[:, 1]),
         y - top + radius * (sin_a * unit[:, 0] + cos_a * unit[:, 1])],
        axis=1,
    )
    mask = np.zeros((patch_size, patch_size), np.uint8)
    cv2.fillPoly(mask, [np.round(points * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    coverage = mask.astype(np.float32)[..., None] / 255.0

    # Texture evaluated in the shape's own coordinates, so it turns and scales with it;
    # smooth stripes (a clipped sine) do not alias when the shape is small.
    offsets = np.arange(patch_size, dtype=np.float64) + 0.5
    rel_x = (left + offsets[None, :] - x) / radius
    rel_y = (top + offsets[:, None] - y) / radius
    u = cos_a * rel_x + sin_a * rel_y
    v = -sin_a * rel_x + cos_a * rel_y
    phase = u * math.cos(appearance.stripe_angle) + v * math.sin(appearance.stripe_angle)
    mix = np.clip(0.5 + 1.5 * np.sin(2 * np.pi * phase / appearance.stripe_period), 0, 1)[..., None]
    first, second = appearance.stripe_colours
    texture = mix * first + (1 - mix) * second
    marker_u, marker_v, marker_radius = appearance.marker
    marker_distance = np.hypot(u - marker_u, v - marker_v)
    marker = np.clip((marker_radius - marker_distance) * radius + 0.5, 0, 1)[..., None]
    texture = (texture * (1 - marker) + marker * MARKER_COLOUR).astype(np.float32)

    rows = np.arange(top, top + patch_size)
    cols = np.arange(left, left + patch_size)
    if wrap:
        keep_rows, keep_cols = slice(None), slice(None)
        rows, cols = rows % height, cols % width
    else:
        keep_rows, keep_cols = (rows >= 0) & (rows < height), (cols >= 0) & (cols < width)
        rows, cols = rows[keep_rows], cols[keep_cols]
    frame = background.astype(np.float32)
    region = np.ix_(rows, cols)
    patch_coverage = coverage[keep_rows][:, keep_cols]
    frame[region] = (
        frame[region] * (1 - patch_coverage) + texture[keep_rows][:, keep_cols] * patch_coverage
    )
    noise_rng = np.random.default_rng([appearance.noise_seed, frame_index])
    frame += noise_rng.standard_normal(size=frame.shape, dtype=np.float32) * 2.0
    return np.clip(np.round(frame), 0, 255).astype(np.uint8)


def render_clip(appearance, motion, num_frames, travel_fraction=TRAVEL_FRACTION):
    """Renders a whole video.

    Args:
        appearance: an `Appearance` (see `draw_appearance`).
        motion: one of `CLASSES`, or a collection of them (see `pose_at`).
        num_frames: number of frames, at least 2.
        travel_fraction: `(low, high)`, see `pose_at`.

    Returns:
        uint8 array (num_frames, H, W, 3), RGB. Frame 0 is the same for every motion.
    """
    height, width = appearance.background.shape[:2]
    motions = _motion_names(motion)
    wrap = any(name.startswith("move_") for name in motions)
    frames = []
    for index in range(num_frames):
        pose = pose_at(appearance, motions, index / (num_frames - 1), (width, height),
                       travel_fraction)
        frames.append(render_frame(appearance, pose, index, wrap=wrap))
    return np.stack(frames)


def video_rng(seed, class_index, video_index):
    """The random stream of one video: independent of every other video's.

    A multi-label video of split `s` (0 train, 1 test) uses `class_index = len(CLASSES) + s`.
    """
    return np.random.default_rng([seed, class_index, video_index])


def draw_label_sets(rng, num_videos):
    """Balanced motion sets for the `num_videos` videos of one multi-label split.

    Each group of `MOTION_GROUPS` is dealt independently of the others: its motions go to
    exactly a fifth of the videos each, shuffled, and the rest of the videos get none of the
    group. So every label is on exactly a fifth of the videos, and a video has 0 to 3
    labels. A video left with none (about 7%) takes the direction of a video that also
    turns or scales, which keeps the counts exact and gives every video 1 to 3 labels.

    Args:
        rng: `np.random.Generator`.
        num_videos: int, a multiple of 5.

    Returns:
        A list of `num_videos` tuples of class names, each in `CLASSES` order.
    """
    share = num_videos // LABEL_SHARE
    columns = []
    for group in MOTION_GROUPS:
        deck = [name for name in group for _ in range(share)]
        deck += [None] * (num_videos - len(deck))
        columns.append([deck[i] for i in rng.permutation(num_videos)])
    translation, others = columns[0], columns[1:]

    def turns_or_scales(i):
        return any(column[i] is not None for column in others)

    still = [i for i in range(num_videos) if translation[i] is None and not turns_or_scales(i)]
    donors = [i for i in rng.permutation(num_videos)
              if translation[i] is not None and turns_or_scales(i)]
    # Enough donors: with k = num_videos / 5, rotations and scalings fill 4k slots; the
    # k - e unmoving videos that are not still hold at most 2(k - e) of them, so moving
    # videos hold at least 2k + 2e, two at most each: k + e donors for e still videos.
    for i, donor in zip(still, donors, strict=False):
        translation[i], translation[donor] = translation[donor], None
    return [tuple(name for name in CLASSES if name in {column[i] for column in columns})
            for i in range(num_videos)]


def write_video_atomically(path, frames_rgb, fourcc):
    """Writes RGB frames to `path` via a hidden temporary name, renamed when complete.

    An interrupted write leaves only a `.tmp-*` file, which the next run removes.
    """
    height, width = frames_rgb.shape[1:3]
    # The temporary name keeps the extension, from which OpenCV picks the muxer.
    with atomic_write(path) as temp_path:
        writer = cv2.VideoWriter(
            str(temp_path), cv2.VideoWriter_fourcc(*fourcc), FRAMES_PER_SECOND, (width, height)
        )
        if not writer.isOpened():
            raise RuntimeError(f"OpenCV could not open a {fourcc} writer for {temp_path}")
        try:
            for frame in frames_rgb:
                writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        finally:
            writer.release()


def _validate(videos_per_class, num_frames, frame_size, test_fraction, kind, multi_label):
    if kind not in KINDS:
        raise UserError(f"Expected a synthetic dataset kind among {KINDS}. Received: kind={kind!r}")
    if kind == "multispectral":
        if multi_label:
            raise UserError("Expected multi_label false for kind multispectral (its fields have "
                            "one class each). Received: multi_label=True")
        if not 2 <= num_frames <= synth_multispectral.MAX_DATES:
            raise UserError(
                f"Expected 2 to {synth_multispectral.MAX_DATES} dates per item (5-day revisits in "
                f"one year). Received: num_frames={num_frames}")
    width, height = frame_size
    if kind == "multispectral":
        if width < 4 or height < 4:
            raise UserError("Expected a patch width and height of at least 4 pixels. "
                            f"Received: frame_size={width}x{height}")
    elif width < 16 or height < 16 or width % 2 or height % 2:
        raise UserError(
            "Expected an even frame width and height of at least 16 pixels (the video "
            f"codecs round odd sizes down). Received: frame_size={width}x{height}"
        )
    if num_frames < 2:
        raise UserError(f"Expected at least 2 frames per video. Received: num_frames={num_frames}")
    if not 0.0 < test_fraction < 1.0:
        raise UserError(
            f"Expected a test fraction between 0 and 1. Received: test_fraction={test_fraction}"
        )
    if videos_per_class < 2:
        raise UserError(
            "Expected at least 2 videos per class (one for train.csv, one for test.csv). "
            f"Received: videos_per_class={videos_per_class}"
        )
    # At least one of each, so that both lists name every class.
    num_test = min(max(round(videos_per_class * test_fraction), 1), videos_per_class - 1)
    return num_test


def generate_dataset(
    out,
    *,
    seed=0,
    videos_per_class=60,
    num_frames=32,
    frame_size=(64, 64),
    test_fraction=0.25,
    multi_label=False,
    kind="video",
    show_progress=True,
):
    """Writes the synthetic motion dataset (or the multispectral one) to `out`, resuming an
    interrupted run.

    Args:
        out: output directory (created if missing).
        seed: int, the dataset is a function of the seed and the other arguments.
        videos_per_class: int, videos per class, split between train and test; with
            `multi_label`, the videos each label is on (5 x as many videos in all).
        num_frames: int, frames per video.
        frame_size: `(width, height)` in pixels, both even.
        test_fraction: float in (0, 1), the share of each class held out for `test.csv`.
        multi_label: bool, each video combines up to one translation, one rotation and
            one scaling (see `draw_label_sets`), and its list row names them all
            (`path,name1;name2`); videos go to `OUT/train/` and `OUT/test/`.
        kind: `"video"` (the motion videos above) or `"multispectral"` (the fields of
            `data_prep.synth_multispectral`: `videos_per_class` items per class, of
            `num_frames` dates, `frame_size` pixels, in
            `OUT/<class>/<class>_<index>.npy` with their `.dates.json`; the same lists).
        show_progress: bool, show a progress bar.

    Returns:
        A dict summary: `out`, `classes`, `videos`, `train`, `test`, `written`,
        `already_present`, `seconds`, `label_counts` (`{split: {class: videos}}`), and the
        generation parameters.

    Raises:
        UserError: for bad arguments, or if `out` holds a synthetic dataset made with
            other parameters (delete it or pick another directory).
    """
    start = time.perf_counter()
    frame_size = tuple(int(v) for v in frame_size)
    num_test = _validate(videos_per_class, num_frames, frame_size, test_fraction, kind,
                         multi_label)
    classes = synth_multispectral.CLASSES if kind == "multispectral" else CLASSES
    out = Path(out)
    parameters = {
        "seed": int(seed),
        "videos_per_class": int(videos_per_class),
        "num_frames": int(num_frames),
        "frame_size": list(frame_size),
        "test_fraction": float(test_fraction),
        "classes": list(classes),
        "multi_label": bool(multi_label),
    }
    if kind != "video":  # the motion videos' synth.json stays as it always was
        parameters = {"kind": kind, **parameters}
    out.mkdir(parents=True, exist_ok=True)
    parameters_path = out / PARAMETERS_FILE
    # Skipping finished videos is only right if they were made with the same parameters.
    if parameters_path.exists():
        # Files written before the multi-label mode (or other kinds) existed are
        # single-label videos.
        previous = {"kind": "video", "multi_label": False,
                    **json.loads(parameters_path.read_text())}
        parameters = {"kind": kind, **parameters}
        if previous != parameters:
            keys = [key for key in {**previous, **parameters}
                    if previous.get(key) != parameters.get(key)]
            made = ", ".join(f"{key}={previous.get(key)}" for key in keys)
            asked = ", ".join(f"{key}={parameters.get(key)}" for key in keys)
            raise UserError(
                f"Expected {out} to be empty or to hold a synthetic dataset made with the same "
                f"parameters, but its {PARAMETERS_FILE} says {made}; delete it or choose "
                f"another directory. Received: {asked}"
            )
    else:
        write_text_atomically(parameters_path, json.dumps(parameters, indent=2) + "\n")
    parameters = {**parameters, "kind": kind}

    if kind == "multispectral":
        jobs, rows = _multispectral_jobs(out, seed, videos_per_class, num_test)
    elif multi_label:
        jobs, rows = _multi_label_jobs(out, seed, videos_per_class, num_test)
    else:
        jobs, rows = _single_label_jobs(out, seed, videos_per_class, num_test)
    label_counts = {split: {name: sum(name in labels for _, labels in split_rows)
                            for name in classes} for split, split_rows in rows.items()}

    written = 0
    progress = None
    if show_progress:
        from tqdm import tqdm

        progress = tqdm(total=len(jobs), desc="synth", unit="item")
    travel_fraction = MULTI_LABEL_TRAVEL_FRACTION if multi_label else TRAVEL_FRACTION
    for stream_index, motion, video_index, fourcc, path in jobs:
        if not path.exists():
            rng = video_rng(seed, stream_index, video_index)
            if kind == "multispectral":
                width, height = frame_size
                frames, dates = synth_multispectral.render_item(rng, motion, num_frames,
                                                                (height, width))
                synth_multispectral.write_item(path, frames, dates)
            else:
                appearance = draw_appearance(rng, frame_size)
                clip = render_clip(appearance, motion, num_frames, travel_fraction)
                write_video_atomically(path, clip, fourcc)
            written += 1
        if progress is not None:
            progress.update(1)
    if progress is not None:
        progress.close()

    # The lists go last: their presence means every video they name is complete.
    for split, split_rows in rows.items():
        lines = [f"{relative},{CSV_LABEL_SEPARATOR.join(labels)}"
                 for relative, labels in split_rows]
        write_text_atomically(out / f"{split}.csv", "\n".join(lines) + "\n")
    seconds = time.perf_counter() - start
    logger.debug("synth: %d videos (%d written) in %s in %.1f s", len(jobs), written, out, seconds)
    return {
        "out": str(out),
        "videos": len(jobs),
        "train": len(rows["train"]),
        "test": len(rows["test"]),
        "written": written,
        "already_present": len(jobs) - written,
        "seconds": seconds,
        "label_counts": label_counts,
        **parameters,
    }


def _fresh_dir(path):
    """Creates `path` if needed and removes the temporary files an interrupted run left."""
    path.mkdir(exist_ok=True)
    for stale in path.glob(TEMPORARY_PREFIX + "*"):
        stale.unlink()


def _single_label_jobs(out, seed, videos_per_class, num_test):
    """Videos `OUT/<class>/<class>_<index>.<ext>`, one motion each.

    Returns:
        `(jobs, rows)`: jobs `(stream_index, motion, video_index, fourcc, path)`, rows
        `{split: [(relative path, label names)]}`.
    """
    jobs = []
    rows = {split: [] for split in SPLITS}
    for class_index, class_name in enumerate(CLASSES):
        _fresh_dir(out / class_name)
        # A seeded choice of test videos per class (the videos are i.i.d., this only
        # keeps the split from following the codec alternation).
        test_indices = set(
            np.random.default_rng([seed, class_index]).permutation(videos_per_class)[:num_test]
        )
        for video_index in range(videos_per_class):
            fourcc, extension = CONTAINERS[video_index % len(CONTAINERS)]
            relative = f"{class_name}/{class_name}_{video_index:03d}{extension}"
            split = "test" if video_index in test_indices else "train"
            rows[split].append((relative, (class_name,)))
            jobs.append((class_index, class_name, video_index, fourcc, out / relative))
    return jobs, rows


def _multispectral_jobs(out, seed, items_per_class, num_test):
    """Items `OUT/<class>/<class>_<index>.npy` of `data_prep.synth_multispectral`; as
    `_single_label_jobs` (fourcc None)."""
    jobs = []
    rows = {split: [] for split in SPLITS}
    for class_index, class_name in enumerate(synth_multispectral.CLASSES):
        _fresh_dir(out / class_name)
        test_indices = set(
            np.random.default_rng([seed, class_index]).permutation(items_per_class)[:num_test]
        )
        for item_index in range(items_per_class):
            relative = f"{class_name}/{class_name}_{item_index:03d}.npy"
            split = "test" if item_index in test_indices else "train"
            rows[split].append((relative, (class_name,)))
            jobs.append((class_index, class_name, item_index, None, out / relative))
    return jobs, rows


def _multi_label_jobs(out, seed, videos_per_class, num_test):
    """Videos `OUT/<split>/video_<index>.<ext>` with 1-3 motions each; as `_single_label_jobs`."""
    jobs = []
    rows = {split: [] for split in SPLITS}
    sizes = {"train": videos_per_class - num_test, "test": num_test}
    for split_index, split in enumerate(SPLITS):
        _fresh_dir(out / split)
        # Streams after the single-label ones' (class indices 0..7).
        stream_index = len(CLASSES) + split_index
        label_sets = draw_label_sets(
            np.random.default_rng([seed, stream_index]), LABEL_SHARE * sizes[split]
        )
        for video_index, motions in enumerate(label_sets):
            fourcc, extension = CONTAINERS[video_index % len(CONTAINERS)]
            relative = f"{split}/video_{video_index:04d}{extension}"
            rows[split].append((relative, motions))
            jobs.append((stream_index, motions, video_index, fourcc, out / relative))
    return jobs, rows


def prepare_arguments(root):
    """The `prepare_dataset` arguments of a dataset this module wrote to `root`.

    The csv layout with `root/train.csv` and `root/test.csv`, multi-label if `root/synth.json`
    says the dataset is.

    Returns:
        A dict: `layout`, `lists` and, for a multi-label dataset, `multi_label=True`.

    Raises:
        UserError: if `root` holds no finished synthetic dataset (no `train.csv`).
    """
    root = Path(root)
    lists = {split: str(root / f"{split}.csv") for split in SPLITS}
    if not os.path.isfile(lists["train"]):
        raise UserError(f"Expected the demo videos in {root}; generate them with "
                        f"`python -m data_prep synth --out {root}`. Received: root={str(root)!r}")
    arguments = {"layout": "csv", "lists": lists}
    parameters_path = root / PARAMETERS_FILE
    if parameters_path.is_file() and json.loads(parameters_path.read_text()).get("multi_label"):
        arguments["multi_label"] = True
    return arguments


def _run(args):
    summary = generate_dataset(
        args.out,
        seed=args.seed,
        videos_per_class=args.videos_per_class,
        num_frames=args.frames,
        frame_size=parse_frame_size(args.size or DEFAULT_SIZES[args.kind]),
        test_fraction=args.test_fraction,
        multi_label=args.multi_label,
        kind=args.kind,
        show_progress=not args.no_progress,
    )
    width, height = summary["frame_size"]
    items, frames = ("videos", "frames") if args.kind == "video" else ("items", "dates")
    print(
        f"wrote {summary['videos']} {items} ({summary['written']} new, "
        f"{summary['already_present']} already there) of {summary['num_frames']} {frames} at "
        f"{width}x{height}, {len(summary['classes'])} classes, to {summary['out']} "
        f"in {summary['seconds']:.1f} s"
    )
    print(f"train.csv: {summary['train']} {items}, test.csv: {summary['test']} {items}")
    if summary["multi_label"]:
        counts = summary["label_counts"]
        print("videos per label (train/test): " + ", ".join(
            f"{name} {counts['train'][name]}/{counts['test'][name]}" for name in CLASSES))
    return 0


def register(subparsers):
    """Adds the `synth` sub-command to an argparse `subparsers` object."""
    parser = subparsers.add_parser(
        "synth",
        help="write a synthetic demo dataset (motion videos or multispectral fields + "
             "train/test lists)",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument(
        "--kind", choices=KINDS, default="video",
        help="video: the motion videos; multispectral: 10-band uint16 field time series "
             "(data_prep.synth_multispectral)")
    parser.add_argument("--videos-per-class", type=int, default=60,
                        help="videos (items) per class")
    parser.add_argument("--frames", type=int, default=32, help="frames (dates) per item")
    parser.add_argument("--size", default=None,
                        help="frame size WxH (video: both even); default 64x64 for video, "
                             "16x16 for multispectral")
    parser.add_argument(
        "--test-fraction", type=float, default=0.25, help="share of each class in test.csv"
    )
    parser.add_argument(
        "--multi-label", action="store_true",
        help="each video combines a translation, a rotation and a scaling (1-3 labels); "
             "--videos-per-class is then the videos per label",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=_run)
    return parser
