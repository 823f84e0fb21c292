"""Pictures for TensorBoard, drawn with numpy and OpenCV: frame strips, confusion matrices
and DeformConv3D offset fields. All return uint8 RGB (H, W, 3) arrays."""

import cv2
import numpy as np

BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)


def _as_rgb(frame):
    """(H, W, band) uint8 frame as RGB: 3 bands as they are, otherwise the first band as grey
    (a multispectral clip has no natural colour mapping)."""
    frame = np.asarray(frame)
    if frame.ndim == 2:
        frame = frame[..., None]
    if frame.shape[-1] == 3:
        return frame.astype(np.uint8)
    return np.repeat(frame[..., :1], 3, axis=-1).astype(np.uint8)


def frame_strip(clip, min_height=96, gap=2, columns=None):
    """A clip (F, H, W, band) as rows of its frames, each enlarged (nearest neighbour, so
    pixels stay pixels) by a whole factor to at least `min_height` pixels.

    Args:
        columns: int, frames per row; None = all in one row.

    Example:

    >>> frame_strip(np.zeros((4, 16, 16, 3), np.uint8)).shape
    (96, 390, 3)
    >>> frame_strip(np.zeros((4, 16, 16, 3), np.uint8), columns=2).shape
    (194, 194, 3)
    """
    clip = np.asarray(clip)
    frames, height, width = clip.shape[:3]
    columns = min(columns or frames, frames)
    rows = -(-frames // columns)
    scale = max(1, int(np.ceil(min_height / height)))
    tile_h, tile_w = height * scale, width * scale
    strip = np.full((rows * tile_h + (rows - 1) * gap, columns * tile_w + (columns - 1) * gap,
                     3), 255, np.uint8)
    for index, frame in enumerate(clip):
        top, left = (index // columns) * (tile_h + gap), (index % columns) * (tile_w + gap)
        strip[top:top + tile_h, left:left + tile_w] = cv2.resize(
            _as_rgb(frame), (tile_w, tile_h), interpolation=cv2.INTER_NEAREST)
    return strip


FONT = cv2.FONT_HERSHEY_SIMPLEX


def _text_width(text, scale, thickness=1):
    return cv2.getTextSize(text, FONT, scale, thickness)[0][0]


def _put(image, text, origin, scale=0.45, colour=TEXT, thickness=1):
    cv2.putText(image, text, (int(origin[0]), int(origin[1])), FONT, scale, colour, thickness,
                cv2.LINE_AA)


def captioned(image, lines, scale=0.5, line_height=20):
    """`image` under a white band holding `lines` of text (one caption line each)."""
    image = np.asarray(image, np.uint8)
    width = max(image.shape[1], max((_text_width(line, scale) for line in lines), default=0) + 8)
    band = np.full((line_height * len(lines) + 6, width, 3), 255, np.uint8)
    for index, line in enumerate(lines):
        _put(band, line, (4, line_height * (index + 1) - 4), scale)
    body = np.full((image.shape[0], width, 3), 255, np.uint8)
    body[:, :image.shape[1]] = image
    return np.concatenate([band, body])


def pad_to_same_size(images):
    """(N, H, W, 3) of images padded with white on the right and bottom to the largest."""
    height = max(image.shape[0] for image in images)
    width = max(image.shape[1] for image in images)
    return np.stack([np.pad(image, ((0, height - image.shape[0]), (0, width - image.shape[1]),
                                    (0, 0)), constant_values=255) for image in images])


def _rate_colour(rate):
    """White (0) to dark blue (1), RGB."""
    return tuple(int(v) for v in (255 - 225 * rate, 255 - 170 * rate, 255 - 60 * rate))


def _vertical_labels(labels, cell, scale):
    """Labels written bottom-to-top in columns `cell` wide (cv2 draws only horizontal
    text: write them as rows, then turn the block a quarter to the left)."""
    length = max(_text_width(label, scale) for label in labels) + 8
    block = np.full((len(labels) * cell, length, 3), 255, np.uint8)
    for index, label in enumerate(labels):
        _put(block, label, (4, index * cell + (cell + 8 * scale / 0.35) / 2), scale)
    return np.ascontiguousarray(np.rot90(block))


def confusion_matrix_image(matrix, class_names, title=None):
    """A confusion matrix (rows true, columns predicted) as a labelled heat map.

    Colour is the row-normalised rate (white = 0, dark blue = 1), so rare classes read as
    clearly as common ones; counts are written in the cells while cells are wide enough
    (up to ~40 classes). Class names label both axes (the predicted ones turned upright),
    so the picture reads without a key at 101 classes (cells of 14 px, text 0.35).

    Args:
        matrix: (C, C) counts.
        class_names: C names.
        title: str or None, the line above the matrix (e.g. split, views, top-1).
    """
    matrix = np.asarray(matrix, np.float64)
    classes = matrix.shape[0]
    cell = int(np.clip(1400 // max(classes, 1), 14, 34))
    scale = 0.35 if cell < 22 else 0.45
    names = [str(name) for name in class_names]
    row_labels = np.full((classes * cell, max(_text_width(n, scale) for n in names) + 12, 3),
                         255, np.uint8)
    for row, name in enumerate(names):
        _put(row_labels, name, (row_labels.shape[1] - 6 - _text_width(name, scale),
                                row * cell + (cell + 8 * scale / 0.35) / 2), scale)
    column_labels = _vertical_labels(names, cell, scale)
    grid = np.full((classes * cell, classes * cell, 3), 255, np.uint8)
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    for row in range(classes):
        for column in range(classes):
            y, x, rate = row * cell, column * cell, rates[row, column]
            cv2.rectangle(grid, (x, y), (x + cell - 1, y + cell - 1), _rate_colour(rate), -1)
            cv2.rectangle(grid, (x, y), (x + cell - 1, y + cell - 1), (205, 205, 205), 1)
            count = int(matrix[row, column])
            if count and cell >= 22:
                text = str(count)
                _put(grid, text, (x + (cell - _text_width(text, scale)) / 2, y + cell / 2 + 5),
                     scale, (255, 255, 255) if rate > 0.55 else TEXT)
    left, header = row_labels.shape[1], 60
    top = header + column_labels.shape[0]
    key = "rows: true class, columns: predicted, colour: share of the row (white 0, blue 1)"
    width = max(left + grid.shape[1] + 10, _text_width(key, 0.42) + 12,
                _text_width(title or "", 0.6) + 12)
    image = np.full((top + grid.shape[0] + 10, width, 3), 255, np.uint8)
    image[top:top + grid.shape[0], :left] = row_labels
    image[header:top, left:left + grid.shape[1]] = column_labels
    image[top:top + grid.shape[0], left:left + grid.shape[1]] = grid
    if title:
        _put(image, title, (6, 22), 0.6, thickness=1)
    _put(image, key, (6, 46), 0.42)
    return image


def offset_field_image(frame, offsets, min_height=192):
    """Mean spatial offset per output location drawn as arrows over a frame.

    Args:
        frame: (H, W, band) uint8, the sample frame (the layer's input time covers it).
        offsets: (H', W', points, 3) float, one output time step of a DeformConv3D layer's
            offsets in its input's pixels, last axis (dt, dy, dx).

    Returns:
        uint8 RGB image; arrows start at each output location's centre and show the mean
        (dy, dx) over kernel points, scaled from feature pixels to frame pixels. Arrow colour
        goes from green (no temporal offset) to red (|dt| >= 1 frame).
    """
    frame = _as_rgb(frame)
    height, width = frame.shape[:2]
    scale = max(1, int(np.ceil(min_height / height)))
    canvas = cv2.resize(frame, (width * scale, height * scale), interpolation=cv2.INTER_NEAREST)
    canvas = (canvas * 0.6 + 255 * 0.4).astype(np.uint8)  # lighten so arrows stand out
    offsets = np.asarray(offsets, np.float64)
    grid_h, grid_w = offsets.shape[:2]
    mean = offsets.mean(axis=2)  # (H', W', 3)
    cell_y, cell_x = canvas.shape[0] / grid_h, canvas.shape[1] / grid_w
    for i in range(grid_h):
        for j in range(grid_w):
            dt, dy, dx = mean[i, j]
            start = (int((j + 0.5) * cell_x), int((i + 0.5) * cell_y))
            end = (int(start[0] + dx * cell_x), int(start[1] + dy * cell_y))
            red = int(255 * min(abs(dt), 1.0))
            cv2.arrowedLine(canvas, start, end, (red, 200 - red // 2, 0), 1, cv2.LINE_AA,
                            tipLength=0.3)
            cv2.circle(canvas, start, 1, (0, 0, 0), -1)
    return canvas
