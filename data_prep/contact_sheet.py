"""`inspect`: what a prepared dataset holds, in words and as a contact-sheet PNG.

The summary comes from `manifest.json` (with the per-band statistics of the training split
when it has them); the contact sheet shows a few clips per class, one row of frames per
clip, read through the reader training uses (`data_prep.reader.load_split`; v2 through
`data_prep.sequence_reader.load_items`, in the stored dtype), so what the sheet shows is
what the model will see. Bands other than 8-bit RGB are drawn in false colour
(`data_prep.false_colour`: `--rgb-bands`, stretched by the dataset's 2..98 % range), and
the values of the clips shown are drawn as per-band histograms beside the sheet.

    python -m data_prep inspect data/prepared     # writes data/prepared/contact_sheet.png
    python -m data_prep inspect data/prepared --split test --out sheet.png
    python -m data_prep inspect data/s2 --rgb-bands 3,2,1   # + data/s2/band_histograms.png
"""

import argparse
import logging
from pathlib import Path

import cv2
import numpy as np

from core.atomic import atomic_write
from core.errors import UserError
from data_prep import verify
from data_prep.false_colour import band_note, display_range, false_colour, parse_rgb_bands
from data_prep.reader import is_whole_items, load_split, read_manifest
from data_prep.shards import split_shard_paths

logger = logging.getLogger(__name__)

LABEL_WIDTH = 150
HEADER_HEIGHT = 40
GAP = 2
BACKGROUND = (32, 32, 32)
TEXT = (235, 235, 235)
FONT = cv2.FONT_HERSHEY_SIMPLEX
# Frames are scaled so that a tile's height falls in this range (pixels).
TILE_HEIGHT_RANGE = (64, 128)
MAX_SHARDS_READ_AT_ONCE = 64


def format_manifest_summary(manifest, prepared_dir, max_skipped=5, max_class_names=20):
    """The manifest as a few lines of text for a person.

    Args:
        manifest: dict, as read by `data_prep.reader.read_manifest`.
        prepared_dir: the directory it was read from (only printed).
        max_skipped: int, how many skipped items to list with their reasons.
        max_class_names: int, how many class names to list.

    Returns:
        str, lines separated by newlines, no trailing newline.
    """
    classes = manifest["classes"]
    names = ", ".join(classes[:max_class_names])
    if len(classes) > max_class_names:
        names += f", ... ({len(classes) - max_class_names} more)"
    lines = [f"prepared dataset: {prepared_dir}", f"classes ({len(classes)}): {names}"]
    whole_items = is_whole_items(manifest)
    if whole_items:
        height, width, bands = manifest["frame_shape"]
        lines.append(f"format v2 (whole items; clips drawn while training): frame_shape "
                     f"[{height}, {width}, {bands}] (height, width, band; null: items "
                     f"differ), encoding {manifest['encoding']}, fps {manifest.get('fps')}, "
                     f"max_frames {manifest.get('max_frames')}")
    else:
        frames, height, width, bands = manifest["clip_shape"]
        lines.append(
            f"clip_shape: [{frames}, {height}, {width}, {bands}] (frames, height, width, band), "
            f"encoding {manifest['encoding']}, {manifest['clips_per_video']} clip(s) per video")
    lines.extend(_value_lines(manifest))
    sampling, resize = manifest.get("sampling"), manifest.get("resize")
    if sampling:
        lines.append("sampling: " + ", ".join(f"{k}={v}" for k, v in sampling.items()))
    if resize:
        lines.append("resize: " + ", ".join(f"{k}={v}" for k, v in resize.items()))
    splits = manifest["splits"]
    name_width = max([len("split")] + [len(name) for name in splits])
    stored = "frames_stored" if whole_items else "clips"
    heading = "frames" if whole_items else "clips"
    lines.append(f"{'split':<{name_width}}  {'videos':>7}  {heading:>7}  {'shards':>6}")
    for name, split in splits.items():
        lines.append(
            f"{name:<{name_width}}  {split['videos']:>7}  {split[stored]:>7}  "
            f"{len(split['shards']):>6}"
        )
    for name, split in splits.items():
        per_class = split.get("items_per_class")
        if per_class is None:  # prepared before the manifest counted them
            continue
        counts = ", ".join(f"{class_name} ({count})" for class_name, count
                           in list(per_class.items())[:max_class_names])
        if len(per_class) > max_class_names:
            counts += f", ... ({len(per_class) - max_class_names} more)"
        lines.append(f"{name}: {len(per_class)} of {len(classes)} classes present"
                     + (f": {counts}" if counts else ""))
    if manifest.get("multi_label"):
        lines.append(f"multi-label: {manifest.get('num_classes', len(classes))} classes, "
                     "items counted once per label")
    absent = manifest.get("absent")
    if absent:
        lines.append(f"absent (listed, not on disk; --only-present): {absent['count']} ("
                     + ", ".join(f"{split} {count}" for split, count
                                 in absent["splits"].items()) + ")")
    ignored = manifest.get("ignored")
    if ignored:
        shown = ", ".join(entry["path"] for entry in ignored["items"][:max_skipped])
        lines.append(f"ignored (not videos, frame folders or arrays): {ignored['count']} ("
                     + ", ".join(f"{split} {count}" for split, count
                                 in ignored["splits"].items()) + f"): {shown}"
                     + (" ..." if ignored["count"] > max_skipped else ""))
    skipped = manifest.get("skipped", [])
    lines.append(f"skipped: {len(skipped)}")
    for entry in skipped[:max_skipped]:
        lines.append(f"  {entry['path']}: {entry['reason']}")
    if len(skipped) > max_skipped:
        lines.append(f"  ... and {len(skipped) - max_skipped} more (see manifest.json)")
    return "\n".join(lines)


def _value_lines(manifest):
    """What the stored values are (dtype, validity, dates, the 8-bit rule) and the per-band
    statistics table, when the manifest says (issue 20's keys; older manifests: none)."""
    facts = [f"dtype {manifest.get('dtype', 'uint8')}"]
    if manifest.get("nodata") is not None:
        facts.append(f"nodata {manifest['nodata']}")
    if manifest.get("mask"):
        facts.append("validity masks stored")
    if manifest.get("dated"):
        facts.append("dated frames")
    if manifest.get("to_uint8"):
        rule = manifest["to_uint8"]
        facts.append(f"to_uint8 low {rule['low']} high {rule['high']}")
    lines = ["values: " + ", ".join(facts)]
    statistics = manifest.get("statistics")
    if not statistics:
        return lines
    names = manifest.get("band_names") or [str(b) for b in range(len(statistics["mean"]))]
    columns = [key for key in ("mean", "std", "min", "max", "p2", "p98", "valid_fraction")
               if key in statistics]
    width = max([len("band")] + [len(str(name)) for name in names])
    lines.append(f"band statistics (split {statistics.get('split')}, stored units):")
    lines.append(f"  {'band':<{width}}" + "".join(f"  {key:>14}" for key in columns))
    for band, name in enumerate(names):
        lines.append(f"  {str(name):<{width}}" + "".join(
            f"  {_number(statistics[key][band]):>14}" for key in columns))
    return lines


def _number(value):
    return "null" if value is None else f"{value:.6g}"


def band_view(clip, rgb_bands=None, stretch=None):
    """Makes a (F, H, W, band) clip of any dtype displayable as RGB (`false_colour`).

    Returns:
        `(frames, note)`: uint8 (F, H, W, 3) RGB, and a str saying which bands are shown
        when that is not simply RGB or grey (else None).
    """
    return false_colour(clip, rgb_bands, stretch), band_note(clip.shape[-1], rgb_bands)


def collect_examples(prepared_dir, split, clips_per_class, num_classes, labels=None,
                     num_frames=None):
    """The first clip of up to `clips_per_class` items of each class in `labels`.

    Args:
        labels: label ids to show; None shows the first `num_classes` labels that turn up
            (any ids: a sparse label space, e.g. a subset of Kinetics-400, shows what is
            there). A multi-label item counts for each of its labels; it is shown once.
        num_frames: int, v2 (whole items): the clip drawn of each item, `num_frames`
            evenly spaced frames (the evaluation's centre clip); v1 shows its first stored
            clip.

    Reads shards round-robin so that, in a dataset stored class by class, every class
    turns up early and reading stops long before the end.

    Returns:
        dict label -> list of `(item_index, clip (F, H, W, band))`, clips of the stored dtype.
    """
    manifest = read_manifest(prepared_dir)
    shards = split_shard_paths(prepared_dir, manifest, split)
    if is_whole_items(manifest):
        from data_prep.sequence_reader import load_items  # TensorFlow, when called

        dataset = load_items(manifest, shards,
                             num_frames=num_frames, with_item_index=True)
    else:
        dataset = load_split(prepared_dir, split, with_item_index=True,
                             num_parallel_reads=max(1, min(len(shards),
                                                           MAX_SHARDS_READ_AT_ONCE)))
    examples = {label: [] for label in labels} if labels is not None else {}
    wanted = len(examples) if labels is not None else num_classes
    seen_items = set()
    for clip, label, item_index in dataset.as_numpy_iterator():
        item_index = int(item_index)
        if item_index in seen_items:
            continue
        item_labels = np.flatnonzero(label).tolist() if np.ndim(label) else [int(label)]
        for one in item_labels:
            if one not in examples and labels is None and len(examples) < num_classes:
                examples[one] = []
            if one in examples and len(examples[one]) < clips_per_class:
                seen_items.add(item_index)
                examples[one].append((item_index, clip))
                break
        if len(examples) == wanted and all(len(clips) == clips_per_class
                                           for clips in examples.values()):
            break
    return examples


def _common_shape(examples, num_frames, bands):
    """v2: the [F, H, W, band] every example is centre-cropped to in place (items kept
    their aspect ratio, so widths may differ; a sheet has one tile size)."""
    clips = [clip for items in examples.values() for _, clip in items]
    height = min((clip.shape[1] for clip in clips), default=1)
    width = min((clip.shape[2] for clip in clips), default=1)
    for items in examples.values():
        for position, (index, clip) in enumerate(items):
            top, left = (clip.shape[1] - height) // 2, (clip.shape[2] - width) // 2
            items[position] = (index, clip[:, top:top + height, left:left + width])
    return [num_frames, height, width, bands]


def _frame_indices(num_frames, max_frames):
    if num_frames <= max_frames:
        return np.arange(num_frames)
    return np.round(np.linspace(0, num_frames - 1, max_frames)).astype(int)


def _tile_size(height, width):
    low, high = TILE_HEIGHT_RANGE
    if height < low:
        scale = -(-low // height)  # whole multiples keep small frames' pixels crisp
    elif height > high:
        scale = high / height
    else:
        scale = 1
    return max(1, round(height * scale)), max(1, round(width * scale))


def render_contact_sheet(examples, classes, clip_shape, *, max_frames=16, title="",
                         rgb_bands=None, stretch=None):
    """Draws the contact sheet: per class, one row of frames per clip.

    Args:
        examples: dict label -> list of `(item_index, clip (F, H, W, band))`, any dtype.
        classes: list of class names, index = label.
        clip_shape: `[F, H, W, band]`.
        max_frames: int, at most this many frames per row, evenly spaced in time.
        title: str, drawn in the header.
        rgb_bands, stretch: the false colour (`data_prep.false_colour.false_colour`).

    Returns:
        `(image, note)`: uint8 (height, width, 3) RGB image and the band note (or None).
    """
    num_frames, height, width, bands = clip_shape
    frame_indices = _frame_indices(num_frames, max_frames)
    tile_h, tile_w = _tile_size(height, width)
    rows = [(label, item, clip) for label in sorted(examples) for item, clip in examples[label]]
    notes = {band_note(np.shape(clip)[-1], rgb_bands) for _, _, clip in rows}
    note = notes.pop() if len(notes) == 1 else None
    header = title if note is None else f"{title}   ({note})"
    shown = f"frames {', '.join(str(i) for i in frame_indices)} of {num_frames}"
    header_width = max(cv2.getTextSize(header, FONT, 0.45, 1)[0][0],
                       cv2.getTextSize(shown, FONT, 0.38, 1)[0][0]) + 12
    sheet_h = HEADER_HEIGHT + len(rows) * (tile_h + GAP)
    # Wide enough for the header: the band note must not be cut off on a narrow sheet.
    sheet_w = max(LABEL_WIDTH + len(frame_indices) * (tile_w + GAP), header_width)
    sheet = np.full((sheet_h, sheet_w, 3), BACKGROUND, np.uint8)
    previous_label = None
    for row, (label, item_index, clip) in enumerate(rows):
        top = HEADER_HEIGHT + row * (tile_h + GAP)
        frames, _ = band_view(np.asarray(clip), rgb_bands, stretch)
        for column, frame_index in enumerate(frame_indices):
            interpolation = cv2.INTER_NEAREST if tile_h >= height else cv2.INTER_AREA
            tile = cv2.resize(frames[frame_index], (tile_w, tile_h), interpolation=interpolation)
            left = LABEL_WIDTH + column * (tile_w + GAP)
            sheet[top:top + tile_h, left:left + tile_w] = tile
        if label != previous_label:
            cv2.line(sheet, (0, top - 1), (sheet_w, top - 1), (90, 90, 90), 1)
            _put_text(sheet, classes[label], (6, top + 16), 0.45, max_width=LABEL_WIDTH - 10)
            previous_label = label
        _put_text(sheet, f"item {item_index}", (6, top + 34), 0.38, max_width=LABEL_WIDTH - 10)
    _put_text(sheet, header, (6, 16), 0.45)
    _put_text(sheet, shown, (6, 33), 0.38)
    return sheet, note


def _put_text(image, text, origin, scale, max_width=None):
    """Draws one line of text; with `max_width`, cut to fit (a long class name must not
    run over the frames)."""
    if max_width is not None:
        while len(text) > 1 and cv2.getTextSize(text, FONT, scale, 1)[0][0] > max_width:
            text = text[:-2] + "~"
    cv2.putText(image, text, origin, FONT, scale, TEXT, 1, cv2.LINE_AA)


def write_contact_sheet(
    prepared_dir, out_path=None, *, split=None, clips_per_class=3, max_frames=16, max_classes=20,
    rgb_bands=None, histograms_path=None,
):
    """Writes a contact-sheet PNG of a prepared dataset.

    Args:
        prepared_dir: a directory written by `python -m data_prep prepare`.
        out_path: PNG path; defaults to `prepared_dir/contact_sheet.png`.
        split: split to show; defaults to `train` if present, else the first split.
        clips_per_class: int, clips (each from a different item) shown per class.
        max_frames: int, frames per row at most, evenly spaced in time.
        max_classes: int, classes shown at most: the first ones by label among the classes
            present in the split (the manifest's `items_per_class`).
        rgb_bands: list of 1 or 3 band indices drawn as RGB (None: the first three; one
            band: grey); bands other than 8-bit RGB are stretched by the manifest's p2..p98.
        histograms_path: PNG path for the per-band histograms of the values shown, or None
            for none.

    Returns:
        dict: `path`, `split`, `size` (width, height), `classes_shown`, `clips_shown`,
        `frames_per_row`, `note` (which bands are shown, or None), `histograms` (its path
        or None).

    Raises:
        UserError: no manifest, an unknown or empty split, or bad counts.
    """
    for name, value in (("clips_per_class", clips_per_class), ("max_frames", max_frames),
                        ("max_classes", max_classes)):
        if int(value) < 1:
            raise UserError(f"Expected `{name}` to be at least 1. Received: {name}={value}")
    manifest = read_manifest(prepared_dir)
    splits = manifest["splits"]
    if split is None:
        split = "train" if "train" in splits else next(iter(splits), None)
    if split not in splits:
        raise UserError(
            f"Expected a split among {sorted(splits)} in {prepared_dir}. Received: split={split!r}"
        )
    if splits[split]["videos"] == 0:
        raise UserError(
            f"Expected split {split!r} of {prepared_dir} to hold clips; it has none "
            f"(see `skipped` in its manifest.json). Received: split={split!r}"
        )
    classes = manifest["classes"]
    per_class = splits[split].get("items_per_class")
    if per_class is not None:
        index = {name: label for label, name in enumerate(classes)}
        present = [index[name] for name in per_class if per_class[name] > 0]
        labels = present[:int(max_classes)]
        num_classes = len(labels)
    else:  # an older manifest: show the first classes that turn up
        present, labels = None, None
        num_classes = min(len(classes), int(max_classes))
    whole_items = is_whole_items(manifest)
    examples = collect_examples(prepared_dir, split, int(clips_per_class), num_classes, labels,
                                num_frames=int(max_frames) if whole_items else None)
    clip_shape = manifest["clip_shape"] if not whole_items else _common_shape(
        examples, int(max_frames), manifest["frame_shape"][2])
    title = f"{Path(prepared_dir).name or prepared_dir} / {split}"
    if present is not None and len(present) < len(classes):
        title += f"   {len(present)} of {len(classes)} classes present"
        if num_classes < len(present):
            title += f", first {num_classes} shown"
    elif num_classes < len(classes):
        title += f"   first {num_classes} of {len(classes)} classes"
    bands = clip_shape[3]
    stretch = display_range(manifest.get("statistics"), manifest.get("dtype", "uint8"), bands)
    image, note = render_contact_sheet(
        examples, classes, clip_shape, max_frames=int(max_frames), title=title,
        rgb_bands=rgb_bands, stretch=stretch,
    )
    out_path = Path(out_path) if out_path is not None else Path(prepared_dir) / "contact_sheet.png"
    _write_png(image, out_path)
    logger.debug("contact sheet %s: %s", out_path, image.shape)
    if histograms_path is not None:
        clips = [clip for items in examples.values() for _, clip in items]
        _write_png(render_band_histograms(
            clips, manifest.get("statistics"), manifest.get("band_names"),
            title=f"{title}: values of the {len(clips)} clips shown"), histograms_path)
    return {
        "path": str(out_path),
        "split": split,
        "size": (image.shape[1], image.shape[0]),
        "classes_shown": sum(1 for clips in examples.values() if clips),
        "clips_shown": sum(len(clips) for clips in examples.values()),
        "frames_per_row": len(_frame_indices(clip_shape[0], int(max_frames))),
        "note": note,
        "histograms": str(histograms_path) if histograms_path is not None else None,
    }


def _write_png(image, path):
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {image.shape} PNG")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as temp_path:
        Path(temp_path).write_bytes(encoded.tobytes())


HISTOGRAM_BINS = 64
HISTOGRAM_SIZE = (110, 256)  # plot height, width (pixels) of one band's panel


def render_band_histograms(clips, statistics=None, band_names=None, *, title=""):
    """One histogram per band of the values of `clips` (NaN left out), a panel per band.

    Each panel spans the band's range (the manifest's min..max when known, else the values')
    and marks the dataset's p2 and p98 (blue, the false-colour stretch) and mean (red).

    Args:
        clips: list of (F, H, W, band) arrays of any dtype.
        statistics: dict or None, the manifest's `statistics`.
        band_names: list of str or None.
        title: str, the line above the panels.

    Returns:
        uint8 RGB image.
    """
    values = np.concatenate([np.asarray(clip, np.float64).reshape(-1, np.shape(clip)[-1])
                             for clip in clips])
    bands = values.shape[1]
    names = band_names or [f"band {band}" for band in range(bands)]
    plot_h, plot_w = HISTOGRAM_SIZE
    panel_h, panel_w = plot_h + 44, plot_w + 16
    columns = min(bands, 4)
    rows = -(-bands // columns)
    image = np.full((30 + rows * panel_h, max(columns * panel_w, 400), 3), BACKGROUND,
                    np.uint8)
    key = "   (lines: dataset p2 and p98 blue, mean red)" if statistics else ""
    _put_text(image, title + key, (6, 18), 0.45, max_width=image.shape[1] - 12)
    for band in range(bands):
        band_values = values[:, band][np.isfinite(values[:, band])]
        low, high = _histogram_range(band_values, statistics, band)
        counts, _ = np.histogram(band_values, HISTOGRAM_BINS, range=(low, high))
        top = 30 + (band // columns) * panel_h + 18
        left = (band % columns) * panel_w + 8
        cv2.rectangle(image, (left, top), (left + plot_w - 1, top + plot_h - 1), (60, 60, 60),
                      -1)
        bar_w = plot_w / HISTOGRAM_BINS
        tallest = max(int(counts.max()) if counts.size else 0, 1)
        for index, count in enumerate(counts):
            height = int(round(count / tallest * (plot_h - 4)))
            if height:
                x0 = left + int(index * bar_w)
                cv2.rectangle(image, (x0, top + plot_h - height),
                              (max(x0, left + int((index + 1) * bar_w) - 1), top + plot_h - 1),
                              (200, 200, 200), -1)
        marks = {}
        if statistics:
            marks = {"p2": (90, 150, 255), "p98": (90, 150, 255), "mean": (255, 90, 90)}
        for key, colour in marks.items():
            value = statistics[key][band] if key in statistics else None
            if value is not None and low <= value <= high:
                x = left + int((value - low) / (high - low) * (plot_w - 1))
                cv2.line(image, (x, top), (x, top + plot_h - 1), colour, 1)
        _put_text(image, str(names[band]), (left, top - 5), 0.4, max_width=plot_w)
        _put_text(image, f"{low:.4g}", (left, top + plot_h + 14), 0.35)
        label = f"{high:.4g}"
        _put_text(image, label, (left + plot_w - cv2.getTextSize(label, FONT, 0.35, 1)[0][0],
                                 top + plot_h + 14), 0.35)
    return image


def _histogram_range(values, statistics, band):
    """(low, high) of one band's panel: the dataset's min..max, else the values'; never empty."""
    if statistics and statistics.get("min") and statistics["min"][band] is not None:
        low, high = float(statistics["min"][band]), float(statistics["max"][band])
    elif values.size:
        low, high = float(values.min()), float(values.max())
    else:
        low, high = 0.0, 1.0
    return (low, high) if high > low else (low - 0.5, low + 0.5)


def _run(args):
    manifest = read_manifest(args.prepared_dir)
    print(format_manifest_summary(manifest, args.prepared_dir))
    if args.verify:  # every record's CRC and parse, before anything reads the clips
        bad = verify.find_corrupted_shards(args.prepared_dir, manifest)
        for path, reason in bad:
            print(f"damaged: {path} ({reason})")
        if bad:
            raise UserError(verify.corrupted_message(bad, args.prepared_dir))
        print(f"verified: every record of {sum(len(s['shards']) for s in manifest['splits'].values())}"
              " shard(s) passes its CRC and parses")
    try:
        sheet = write_contact_sheet(
            args.prepared_dir,
            args.out,
            split=args.split,
            clips_per_class=args.clips_per_class,
            max_frames=args.max_frames,
            max_classes=args.max_classes,
            rgb_bands=parse_rgb_bands(args.rgb_bands) if args.rgb_bands else None,
            histograms_path=args.histograms or Path(args.prepared_dir) / "band_histograms.png",
        )
    except Exception as error:  # a damaged shard: named, not a TensorFlow traceback
        named = verify.corrupted_data_error(error, args.prepared_dir, manifest)
        if named is None:
            raise
        raise named from None
    if sheet["note"]:
        print(f"note: {sheet['note']}")
    width, height = sheet["size"]
    print(
        f"contact sheet: {sheet['path']} ({width}x{height}; split {sheet['split']}, "
        f"{sheet['classes_shown']} classes, {sheet['clips_shown']} clips, "
        f"{sheet['frames_per_row']} frames per clip)"
    )
    print(f"band histograms: {sheet['histograms']} (values of the clips shown)")
    return 0


def register(subparsers):
    """Adds the `inspect` sub-command to an argparse `subparsers` object."""
    parser = subparsers.add_parser(
        "inspect",
        help="print a prepared dataset's summary and write a contact-sheet PNG",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("prepared_dir", metavar="DIR", help="a directory written by `prepare`")
    parser.add_argument("--out", default=None,
                        help="PNG path (default: DIR/contact_sheet.png)")
    parser.add_argument("--split", default=None,
                        help="split to show (default: train, else the first)")
    parser.add_argument("--clips-per-class", type=int, default=3, help="clips shown per class")
    parser.add_argument("--max-frames", type=int, default=16, help="frames per clip row at most")
    parser.add_argument("--max-classes", type=int, default=20, help="classes shown at most")
    parser.add_argument("--rgb-bands", default=None, metavar="R,G,B",
                        help="0-based bands drawn as red, green, blue (one band: grey); "
                             "default: the first three, stretched by the dataset's 2-98 %% "
                             "range unless 8-bit RGB")
    parser.add_argument("--histograms", default=None, metavar="PNG",
                        help="where to write the per-band histograms (default: "
                             "DIR/band_histograms.png)")
    parser.add_argument("--verify", action="store_true",
                        help="read every record of every shard first (CRC and parse) and "
                             "name the damaged shards (exit 2 if any)")
    parser.set_defaults(func=_run)
    return parser
