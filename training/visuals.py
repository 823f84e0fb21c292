"""Pictures drawn with numpy and OpenCV (no plotting dependency): frame strips with
captions, confusion matrices and DeformConv3D offset fields for TensorBoard and evaluate.py,
the training curves of RUN_DIR/curves.png and predict.py's timelines. All return uint8 RGB
(H, W, 3) arrays.

Clips of any band count and dtype are drawn in false colour (`data_prep.false_colour`):
`picture_options` gives the bands and the stretch a run's pictures use."""

import cv2
import numpy as np

from core.errors import UserError
from data_prep.false_colour import display_range, false_colour

BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)


def picture_options(statistics, dtype, bands, rgb_bands=None):
    """The `frame_strip` keywords (`rgb_bands`, `stretch`) of a run's clips.

    Args:
        statistics: dict or None, the manifest's `statistics`.
        dtype: str, the stored dtype; bands: int, the stored bands (extra input bands, a mask
            or the day of year, are never drawn).
        rgb_bands: list of 1 or 3 band indices, or None: the first three (one: grey).

    Returns:
        dict: 8-bit data is drawn as stored (a 0..255 stretch, also once the clips are float
        with extra bands); other data by the dataset's p2..p98 (None without statistics:
        each clip by its own).

    Raises:
        UserError: a band index outside the stored bands.
    """
    if rgb_bands is not None and any(not 0 <= band < bands for band in rgb_bands):
        raise UserError(f"Expected tensorboard.rgb_bands among the stored bands 0..{bands - 1}. "
                        f"Received: rgb_bands={list(rgb_bands)}")
    stretch = display_range(statistics, dtype, bands)
    if dtype == "uint8" and stretch is None:
        stretch = ([0.0] * bands, [255.0] * bands)
    return {"rgb_bands": None if rgb_bands is None else list(rgb_bands), "stretch": stretch}


def _as_rgb(frame, rgb_bands=None, stretch=None):
    """(H, W, band) frame of any dtype as uint8 RGB (`false_colour`: 8-bit 3 bands as they
    are; the first three bands, or one as grey, otherwise)."""
    frame = np.asarray(frame)
    if frame.ndim == 2:
        frame = frame[..., None]
    return false_colour(frame, rgb_bands, stretch)


def frame_strip(clip, min_height=96, gap=2, columns=None, *, rgb_bands=None, stretch=None):
    """A clip (F, H, W, band) as rows of its frames, each enlarged (nearest neighbour, so
    pixels stay pixels) by a whole factor to at least `min_height` pixels.

    Args:
        columns: int, frames per row; None = all in one row.
        rgb_bands, stretch: the false colour of clips other than 8-bit RGB
            (`picture_options`); the whole clip shares one stretch.

    Example:

    >>> frame_strip(np.zeros((4, 16, 16, 3), np.uint8)).shape
    (96, 390, 3)
    >>> frame_strip(np.zeros((4, 16, 16, 3), np.uint8), columns=2).shape
    (194, 194, 3)
    """
    clip = _as_rgb(clip, rgb_bands, stretch)
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
            frame, (tile_w, tile_h), interpolation=cv2.INTER_NEAREST)
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


def offset_field_image(frame, offsets, min_height=192, *, rgb_bands=None, stretch=None):
    """Mean spatial offset per output location drawn as arrows over a frame, with a legend.

    Args:
        frame: (H, W, band), the sample frame (the layer's input time covers it); drawn as
            `rgb_bands` and `stretch` say (`picture_options`).
        offsets: (H', W', points, 3) float, one output time step of a DeformConv3D layer's
            offsets in its input's pixels, last axis (dt, dy, dx).

    Returns:
        uint8 RGB image; arrows start at each output location's centre (black dot) and show
        the mean (dy, dx) over kernel points, scaled from feature pixels to frame pixels.
        Arrow colour goes from green (no temporal offset) to red (|dt| >= 1 frame). The band
        below says so, with the colour scale and the largest mean offset.
    """
    frame = _as_rgb(frame, rgb_bands, stretch)
    height, width = frame.shape[:2]
    scale = max(1, int(np.ceil(min_height / height)))
    canvas = cv2.resize(frame, (width * scale, height * scale), interpolation=cv2.INTER_NEAREST)
    canvas = (canvas * 0.6 + 255 * 0.4).astype(np.uint8)  # lighten so arrows stand out
    offsets = np.asarray(offsets, np.float64)
    grid_h, grid_w = offsets.shape[:2]
    mean = offsets.mean(axis=2)  # (H', W', 3)
    cell_y, cell_x = canvas.shape[0] / grid_h, canvas.shape[1] / grid_w
    # A diverged run's offsets may be NaN or inf: those locations get their dot, no arrow,
    # so the picture still tells where training broke instead of raising.
    finite = np.isfinite(mean).all(axis=-1)
    for i in range(grid_h):
        for j in range(grid_w):
            dt, dy, dx = mean[i, j]
            start = (int((j + 0.5) * cell_x), int((i + 0.5) * cell_y))
            if finite[i, j]:
                end = (int(start[0] + dx * cell_x), int(start[1] + dy * cell_y))
                cv2.arrowedLine(canvas, start, end, _dt_colour(dt), 1, cv2.LINE_AA,
                                tipLength=0.3)
            cv2.circle(canvas, start, 1, (0, 0, 0), -1)
    spatial = np.sqrt(mean[..., 1] ** 2 + mean[..., 2] ** 2)[finite]
    temporal = np.abs(mean[..., 0])[finite]
    return _with_offset_legend(canvas, float(spatial.max(initial=0.0)),
                               float(temporal.max(initial=0.0)))


def _dt_colour(dt):
    red = int(255 * min(abs(dt), 1.0))
    return (red, 200 - red // 2, 0)


def _with_offset_legend(canvas, max_spatial, max_temporal):
    lines = ["arrow: mean (dy, dx) offset of the kernel points from",
             "each output location (dot), drawn to the frame's scale",
             f"largest {max_spatial:.2f} input px; |dt| up to {max_temporal:.2f} frames"]
    width = max(canvas.shape[1], max(_text_width(line, 0.4) for line in lines) + 10)
    band = np.full((18 * len(lines) + 34, width, 3), 255, np.uint8)
    for index, line in enumerate(lines):
        _put(band, line, (4, 18 * index + 15), 0.4)
    top, bar_left, bar_width = 18 * len(lines) + 6, 60, 120
    _put(band, "|dt| 0", (4, top + 13), 0.4)
    for x in range(bar_width):
        cv2.line(band, (bar_left + x, top + 2), (bar_left + x, top + 16),
                 _dt_colour(x / (bar_width - 1)), 1)
    _put(band, "1 frame", (bar_left + bar_width + 6, top + 13), 0.4)
    body = np.full((canvas.shape[0], width, 3), 255, np.uint8)
    body[:, :canvas.shape[1]] = canvas
    return np.concatenate([body, band])


# --- line charts --------------------------------------------------------------------------

SERIES_COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40))


def _nice_ticks(low, high, count=5, integer=False):
    """Round tick values covering [low, high] (whole numbers only with `integer`)."""
    if not high > low:
        high = low + (abs(low) or 1.0)
    raw = max((high - low) / count, 1.0 if integer else 0.0)
    magnitude = 10 ** np.floor(np.log10(raw))
    step = min((m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw),
               default=10 * magnitude)
    first = np.floor(low / step) * step
    return [first + i * step for i in range(int(np.ceil((high - first) / step - 1e-9)) + 1)]


def _tick_text(value):
    return f"{value:.3g}" if value else "0"


def line_chart(series, *, title, x_label, width=460, height=260, integer_x=False):
    """A chart of named (xs, ys) series with axes, ticks, a title and a legend.

    Args:
        series: list of (name, xs, ys); a series with no finite point is left out.
        title, x_label: str.
        integer_x: bool, whole-number ticks on x (epochs).

    Returns:
        uint8 RGB (height, width, 3).
    """
    image = np.full((height, width, 3), 255, np.uint8)
    series = [(name, np.asarray(xs, np.float64), np.asarray(ys, np.float64))
              for name, xs, ys in series]
    series = [(n, xs[np.isfinite(ys)], ys[np.isfinite(ys)]) for n, xs, ys in series]
    series = [s for s in series if len(s[1])]
    _put(image, title, (8, 20), 0.55)
    left, right, top, bottom = 62, width - 12, 34, height - 62
    if not series:
        _put(image, "no data", (left + 10, (top + bottom) // 2), 0.45)
        return image
    all_x = np.concatenate([xs for _, xs, _ in series])
    all_y = np.concatenate([ys for _, _, ys in series])
    x_ticks = _nice_ticks(all_x.min(), all_x.max(), integer=integer_x)
    y_ticks = _nice_ticks(all_y.min(), all_y.max())
    x0, x1, y0, y1 = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]

    def to_pixel(x, y):
        return (int(round(left + (x - x0) / (x1 - x0) * (right - left))),
                int(round(bottom - (y - y0) / (y1 - y0) * (bottom - top))))

    for value in y_ticks:
        _, y = to_pixel(x0, value)
        cv2.line(image, (left, y), (right, y), (232, 232, 232), 1)
        text = _tick_text(value)
        _put(image, text, (left - 6 - _text_width(text, 0.38), y + 4), 0.38)
    for value in x_ticks:
        x, _ = to_pixel(value, y0)
        cv2.line(image, (x, bottom), (x, bottom + 4), TEXT, 1)
        text = _tick_text(value)
        _put(image, text, (x - _text_width(text, 0.38) // 2, bottom + 18), 0.38)
    cv2.rectangle(image, (left, top), (right, bottom), (150, 150, 150), 1)
    _put(image, x_label, ((left + right - _text_width(x_label, 0.42)) // 2, bottom + 36), 0.42)
    legend_x = left
    for index, (name, xs, ys) in enumerate(series):
        colour = SERIES_COLOURS[index % len(SERIES_COLOURS)]
        points = np.array([to_pixel(x, y) for x, y in zip(xs, ys)], np.int32)
        if len(points) > 1:
            cv2.polylines(image, [points], False, colour, 2, cv2.LINE_AA)
        for point in points if len(points) <= 60 else ():
            cv2.circle(image, tuple(int(v) for v in point), 3, colour, -1, cv2.LINE_AA)
        cv2.line(image, (legend_x, height - 12), (legend_x + 22, height - 12), colour, 3)
        _put(image, name, (legend_x + 28, height - 7), 0.42)
        legend_x += 40 + _text_width(name, 0.42)
    return image


def training_curves_image(history, learning_rate=None, title=""):
    """RUN_DIR/curves.png: loss and top-1 (or, multi-label, mean average precision; train vs
    validation) by epoch, and the rate.

    Args:
        history: list of dicts, `run_dir.read_history` rows (epoch from 0, `loss`,
            `val_loss`, `top1`, `val_top1`, `learning_rate`).
        learning_rate: (epochs as floats, rates) per step, or None for the history's
            per-epoch `learning_rate`.
        title: str, the line above the charts.
    """
    # A resumed run may repeat an epoch's row: the last one counts.
    history = sorted({row["epoch"]: row for row in history}.values(), key=lambda r: r["epoch"])
    epochs = [row["epoch"] + 1 for row in history]

    def column(key):
        return [row.get(key, float("nan")) for row in history]

    if learning_rate is None:
        learning_rate = (epochs, column("learning_rate"))
    # A multi-label run's history has mean average precision where a single-label one has top-1.
    score, score_title = "top1", "top-1 (clips)"
    if any("mean_average_precision" in row for row in history):
        score, score_title = "mean_average_precision", "mean average precision (clips)"
    charts = [
        line_chart([("train", epochs, column("loss")),
                    ("validation", epochs, column("val_loss"))],
                   title="loss", x_label="epoch", integer_x=True),
        line_chart([("train", epochs, column(score)),
                    ("validation", epochs, column(f"val_{score}"))],
                   title=score_title, x_label="epoch", integer_x=True),
        line_chart([("learning rate", *learning_rate)], title="learning rate",
                   x_label="epoch"),
    ]
    row = np.concatenate(charts, axis=1)
    return captioned(row, [title], scale=0.6, line_height=26) if title else row


def timeline_image(probabilities, starts_s, ends_s, class_names, *, title="", max_rows=10,
                   width=720, tick_text=None, unit="seconds"):
    """Classes over time: one row per class that is ever among the top 3 (at most
    `max_rows`, the most probable first), colour = probability (white 0, dark blue 1); the
    top-1 class of each stretch is framed in its row and named on a band above (when the
    name fits).

    Args:
        probabilities: (windows, classes) float.
        starts_s, ends_s: window starts and ends in seconds; a stretch of time is drawn with
            the window whose centre is nearest.
        tick_text, unit: how an axis value reads (default: a number) and the axis' unit;
            a dated item passes days since 1970 with `data_prep.dates.iso_date` and "date".
    """
    probabilities = np.asarray(probabilities, np.float64)
    starts_s, ends_s = np.asarray(starts_s, np.float64), np.asarray(ends_s, np.float64)
    top3 = np.argsort(-probabilities, axis=1, kind="stable")[:, :3]
    candidates = np.unique(top3)
    rows = candidates[np.argsort(-probabilities[:, candidates].max(axis=0),
                                 kind="stable")][:max_rows]
    names = [str(class_names[i]) for i in rows]
    label_width = max(_text_width(n, 0.45) for n in names) + 16
    row_height, band, top = 24, 30, 40
    plot_width = width - label_width - 16
    height = top + band + len(rows) * row_height + 50
    image = np.full((height, width, 3), 255, np.uint8)
    if title:
        _put(image, title, (8, 22), 0.55)
    begin, end = float(starts_s.min()), float(ends_s.max())
    duration = max(end - begin, 1e-9)
    centres = (starts_s + ends_s) / 2
    column_time = begin + (np.arange(plot_width) + 0.5) / plot_width * duration
    window_of = np.abs(column_time[:, None] - centres[None]).argmin(axis=1)
    grid_top = top + band
    for r, class_index in enumerate(rows):
        y = grid_top + r * row_height
        _put(image, names[r], (label_width - 8 - _text_width(names[r], 0.45), y + 17), 0.45)
        for x in range(plot_width):
            rate = probabilities[window_of[x], class_index]
            cv2.line(image, (label_width + x, y + 1), (label_width + x, y + row_height - 2),
                     _rate_colour(rate), 1)
    # The top-1 band: a change of colour (class) marks where the top class changes.
    top1 = probabilities.argmax(axis=1)
    x = 0
    while x < plot_width:
        stop = x
        while stop < plot_width and top1[window_of[stop]] == top1[window_of[x]]:
            stop += 1
        best = int(top1[window_of[x]])
        colour = SERIES_COLOURS[best % len(SERIES_COLOURS)]
        # A white gap between stretches: two classes may share a colour.
        cv2.rectangle(image, (label_width + x, top + 4), (label_width + stop - 2, top + band - 6),
                      colour, -1)
        name = str(class_names[best])
        if _text_width(name, 0.4) < stop - x - 6:
            _put(image, name, (label_width + x + 4, top + band - 11), 0.4, (255, 255, 255))
        if best in rows:  # and a frame around the top-1 class's cells of the stretch
            y = grid_top + int(np.flatnonzero(rows == best)[0]) * row_height
            cv2.rectangle(image, (label_width + x, y + 1),
                          (label_width + stop - 2, y + row_height - 2), TEXT, 2)
        x = stop
    _put(image, "top-1", (label_width - 8 - _text_width("top-1", 0.45), top + band - 11), 0.45)
    axis_y = grid_top + len(rows) * row_height + 4
    for value in _nice_ticks(begin, end):
        if value < begin - 1e-9 or value > end + 1e-9:
            continue
        x = label_width + int(round((value - begin) / duration * (plot_width - 1)))
        cv2.line(image, (x, axis_y), (x, axis_y + 4), TEXT, 1)
        text = (tick_text or _tick_text)(value)
        _put(image, text, (x - _text_width(text, 0.38) // 2, axis_y + 18), 0.38)
    _put(image, f"{unit}; colour: probability (white 0, blue 1)",
         (label_width, axis_y + 38), 0.42)
    return image
