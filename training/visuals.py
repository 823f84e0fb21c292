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


def frame_strip(clip, min_height=96, gap=2):
    """A clip (F, H, W, band) as one row of its frames, enlarged to at least `min_height`.

    Example:

    >>> frame_strip(np.zeros((4, 16, 16, 3), np.uint8)).shape
    (96, 390, 3)
    """
    clip = np.asarray(clip)
    frames, height, width = clip.shape[:3]
    scale = max(1, int(np.ceil(min_height / height)))
    tiles = [
        cv2.resize(_as_rgb(frame), (width * scale, height * scale),
                   interpolation=cv2.INTER_NEAREST)
        for frame in clip
    ]
    strip = np.full((height * scale, frames * width * scale + (frames - 1) * gap, 3), 255,
                    np.uint8)
    for index, tile in enumerate(tiles):
        left = index * (width * scale + gap)
        strip[:, left:left + width * scale] = tile
    return strip


def confusion_matrix_image(matrix, class_names, cell=30):
    """A confusion matrix (rows true, columns predicted) as a labelled heat map with counts.

    Colour is the row-normalised rate (white = 0, dark blue = 1), so rare classes read as
    clearly as common ones; the number in each cell is the count.
    """
    matrix = np.asarray(matrix, np.float64)
    classes = matrix.shape[0]
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.35
    label_width = max(cv2.getTextSize(f"{i} {n}", font, scale, 1)[0][0]
                      for i, n in enumerate(class_names)) + 10
    top = 34
    image = np.full((top + classes * cell + 20, label_width + classes * cell + 10, 3), 255,
                    np.uint8)
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    for row in range(classes):
        y = top + row * cell
        cv2.putText(image, f"{row} {class_names[row]}", (4, y + cell // 2 + 4), font, scale,
                    TEXT, 1, cv2.LINE_AA)
        for column in range(classes):
            x = label_width + column * cell
            rate = rates[row, column]
            colour = tuple(int(v) for v in (255 - 225 * rate, 255 - 170 * rate, 255 - 60 * rate))
            cv2.rectangle(image, (x, y), (x + cell - 1, y + cell - 1), colour, -1)
            cv2.rectangle(image, (x, y), (x + cell - 1, y + cell - 1), (200, 200, 200), 1)
            count = int(matrix[row, column])
            if count:
                ink = (255, 255, 255) if rate > 0.55 else TEXT
                text = str(count)
                width = cv2.getTextSize(text, font, scale, 1)[0][0]
                cv2.putText(image, text, (x + (cell - width) // 2, y + cell // 2 + 4), font,
                            scale, ink, 1, cv2.LINE_AA)
    for column in range(classes):
        x = label_width + column * cell
        cv2.putText(image, str(column), (x + cell // 3, top - 6), font, scale, TEXT, 1,
                    cv2.LINE_AA)
    cv2.putText(image, "predicted ->", (label_width, 12), font, scale, TEXT, 1, cv2.LINE_AA)
    cv2.putText(image, "true", (4, top - 6), font, scale, TEXT, 1, cv2.LINE_AA)
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
