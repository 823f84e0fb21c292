"""`SourceSpec`: where a dataset's items come from and how its lists read, as one value.

Every way into data preparation builds one: the experiment config's `data:` section
(`training.config.DataConfig.source_spec`), the `prepare` command's flags
(`source_spec_from_arguments`), and Python callers directly. `data_prep.sources.resolve_source`
and `data_prep.prepare.prepare_dataset` take it whole, so an option cannot be dropped on the
way (the bug of issue 18: a check that passed four of ten arguments).

A field's metadata describes it once for every front end: `help`, the bounds the config
checks (`minimum`, `maximum`), and the `prepare` flag (`flag`, `metavar`). A new option is a
field here plus the layout reader(s) in `data_prep/sources.py` that read it (named in their
`Layout.reads`); the config key and the flag follow from the field.

This module never imports TensorFlow.

Example:

>>> spec = SourceSpec(layout="list", root="videos", lists={"train": "train.txt"},
...                   multi_label=True, num_classes=5)
>>> spec.root_of("train")
'videos'
"""

import argparse
import dataclasses
import os
import re

from core.errors import UserError

# MMAction2's RawframeDataset defaults.
DEFAULT_FILENAME_TEMPLATE = "img_{:05}.jpg"
DEFAULT_START_INDEX = 1
SPLIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _field(default, help, *, minimum=None, maximum=None, flag=None, metavar=None, path=False,
           option=False, choices=None):
    """A field and what every front end needs of it. `path`: made absolute in the manifest;
    `option`: read only by the layouts that name it in `Layout.reads` (elsewhere it must
    keep its default); `choices`: the values a string may take."""
    return dataclasses.field(default=default, metadata={
        "help": help, "minimum": minimum, "maximum": maximum, "flag": flag,
        "metavar": metavar, "path": path, "option": option, "choices": choices})


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    """Where items come from and how lists read (see `data_prep.sources` for the layouts).

    Args:
        layout: str, a `data_prep.sources.LAYOUTS` name. Defaults to `"folders"`.
        root: str, the directory items (and list entries) are relative to; or
            {split name: directory}, one root per split (MMAction2's per-split
            `data_prefix`).
        split_dir: str or None, official split files (ucf101, hmdb51).
        split: int, official split number (ucf101, hmdb51). Defaults to 1.
        lists: dict {split name: list file} or None.
        classes_file: str or None, class names one a line (index = label id).
        only_present: bool, keep the listed items on disk and count the others.
        multi_label: bool, rows carry one or more labels (list, rawframes, csv).
        num_classes: int or None, class count of a list without `classes_file`.
        filename_template, start_index, with_offset: rawframes frame names, first frame
            number, and rows `frame_dir offset total_frames label`.
        nodata: number or None, pixels equal to it in any band are invalid (format v2).
        validity_band: int or None, 0-based band of each frame that is a validity mask
            (nonzero = valid), removed from the stored bands.
        date_pattern: str or None, a regex whose first group is a frame file's date
            (`data_prep.dates`).
        bands: list or None, bands kept: 0-based indices or raster band descriptions.
        bands_per_date: int or None, a single `.tif` item holds count / N dates of N bands.
        to_uint8: None, `[low, high]` or `{"low": [...], "high": [...]}` (one per band):
            store 8 bits by the fixed rule `clip(rint((v - low) / (high - low) * 255), 0,
            255)`, the only conversion of non-8-bit values (format v2).

    Raises:
        UserError: a value of the wrong type or out of range, naming the field.
    """

    layout: str = _field("folders", "how data.root is organised; synth generates the demo "
                                    "videos")
    root: str | dict | None = _field(
        None, "videos (or frame folders, .npy arrays) to prepare; or {split: directory}",
        metavar="DIR|SPLIT=DIR", path=True)
    split_dir: str | None = _field(None, "official split files (ucf101, hmdb51)",
                                     metavar="DIR", path=True)
    split: int = _field(1, "official split number", minimum=1, maximum=3, metavar="N")
    lists: dict | None = _field(None, "{split name: list file} for csv/list/kinetics",
                                flag="--list", metavar="SPLIT=FILE", path=True)
    classes_file: str | None = _field(None, "class names, one a line (ucf101 classInd)",
                                      flag="--classes", metavar="FILE", path=True)
    only_present: bool = _field(False, "prepare the listed items on disk, count the rest")
    multi_label: bool = _field(False, "several labels per item (list, rawframes, csv, synth): "
                                      "sigmoid outputs, binary cross-entropy, mAP",
                                 option=True)
    num_classes: int | None = _field(None, "class count for list/rawframes without "
                                           "classes_file", minimum=1, metavar="N",
                                     option=True)
    filename_template: str = _field(DEFAULT_FILENAME_TEMPLATE, "rawframes: frame file names",
                                   metavar="TEMPLATE", option=True)
    start_index: int = _field(DEFAULT_START_INDEX, "rawframes: number of the first frame file",
                              minimum=0, metavar="I", option=True)
    with_offset: bool = _field(False, "rawframes: rows carry a first-frame offset",
                                 option=True)
    # Sensor data (format v2; docs/DATA.md "Sensor data"): read by every layout.
    nodata: float | None = _field(None, "pixels equal to this value in any band are invalid "
                                        "(masked; NaN always is)", metavar="VALUE")
    validity_band: int | None = _field(None, "0-based band of each frame that is a validity "
                                             "mask (nonzero = valid), not stored as a band",
                                       minimum=0, metavar="INDEX")
    date_pattern: str | None = _field(None, "regex whose first group is a frame file's date "
                                            "(YYYYMMDD or YYYY-MM-DD)", metavar="REGEX")
    bands: list | None = _field(None, "bands kept: 0-based indices or raster band "
                                      "descriptions, e.g. 3,2,1", metavar="B,B,...")
    bands_per_date: int | None = _field(None, "a single .tif item is a stack of count / N "
                                              "dates of N bands (date-major)", minimum=1,
                                        metavar="N")
    to_uint8: list | dict | None = _field(
        None, "store 8 bits by a fixed rule: [low, high] or {low: [...], high: [...]} per "
              "band, clip(rint((v - low) / (high - low) * 255), 0, 255)", metavar="LOW,HIGH")
    # layout `raster`: patches of a labelled time-series raster (data_prep/raster_patches.py)
    raster: str | None = _field(None, "raster: the time series under root, a multi-date "
                                      "GeoTIFF stack or a folder of per-date GeoTIFFs",
                                metavar="PATH", option=True)
    label_raster: str | None = _field(None, "raster: a GeoTIFF of class values on the time "
                                            "series' grid", metavar="FILE", path=True,
                                      option=True)
    patch_size: int = _field(32, "raster: patch height and width in pixels", minimum=1,
                             metavar="PIXELS", option=True)
    patch_stride: int | None = _field(None, "raster: pixels between patches (null: "
                                            "patch_size)", minimum=1, metavar="PIXELS",
                                      option=True)
    label_rule: str = _field("centre", "raster: a patch's label, its centre pixel (centre) or "
                                       "its most frequent value (majority)",
                             choices=("centre", "majority"), option=True)
    ignore_value: int | None = _field(None, "raster: label value of unlabelled pixels; their "
                                            "patches are left out", metavar="VALUE",
                                      option=True)
    block_size: int | None = _field(None, "raster: side in pixels of the blocks split "
                                          "between train and test (null: 4 x patch_size)",
                                    minimum=1, metavar="PIXELS", option=True)
    test_fraction: float = _field(0.25, "raster: share of the blocks in split test",
                                  minimum=0.0, maximum=1.0, metavar="FRACTION", option=True)
    split_seed: int = _field(0, "raster: seed of the choice of test blocks", minimum=0,
                             metavar="SEED", option=True)

    def __post_init__(self):
        for field in dataclasses.fields(self):
            _check_field(field, getattr(self, field.name))
        # Own copies: a caller's dict changed later must not change the spec.
        for name in ("root", "lists", "bands", "to_uint8"):
            value = getattr(self, name)
            if isinstance(value, (dict, list)):
                object.__setattr__(self, name, type(value)(value))
        if self.to_uint8 is not None:
            to_uint8_bounds(self.to_uint8)  # raises for a rule that is no rule
        if self.date_pattern is not None:
            try:
                if re.compile(self.date_pattern).groups < 1:
                    raise re.error("no group")
            except re.error as error:
                raise UserError(f"Expected `date_pattern` to be a regular expression whose "
                                f"first group is the date, like '_(\\d{{8}})' ({error}). "
                                f"Received: date_pattern={self.date_pattern!r}") from None
        if isinstance(self.root, dict):
            for split, root in self.root.items():
                if not isinstance(split, str) or not SPLIT_NAME.match(split) \
                        or not isinstance(root, str):
                    raise UserError(f"Expected `root` to be a directory or {{split name: "
                                    f"directory}}. Received: root={self.root!r}")
            if not self.root:
                raise UserError("Expected at least one split in a per-split `root`. "
                                "Received: root={}")
        try:
            name = self.filename_template.format(self.start_index)
        except (AttributeError, IndexError, KeyError, ValueError):
            name = None
        if not name or name == self.filename_template or os.path.isabs(name) \
                or ".." in name.replace("\\", "/").split("/"):
            raise UserError(f"Expected `filename_template` to be a file name with one integer "
                            f"field, like {DEFAULT_FILENAME_TEMPLATE!r} (MMAction2's "
                            f"filename_tmpl). Received: "
                            f"filename_template={self.filename_template!r}")

    @property
    def per_split_roots(self):
        """True when `root` gives each split its own directory."""
        return isinstance(self.root, dict)

    def root_of(self, split):
        """The directory the entries of `split` are relative to."""
        if not self.per_split_roots:
            return self.root
        if split not in self.root:
            raise UserError(f"Expected a root for split {split!r} (root gives "
                            f"{', '.join(self.root)}). Received: root={self.root!r}")
        return self.root[split]

    def roots(self):
        """Every root directory (one, or one per split)."""
        return list(self.root.values()) if self.per_split_roots else [self.root]


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def to_uint8_bounds(value):
    """(low, high) of a `to_uint8` rule: two numbers, or two equal-length lists (per band).

    Raises:
        UserError: not `[low, high]` or `{low: [...], high: [...]}` with high > low.
    """
    if isinstance(value, dict) and set(value) == {"low", "high"}:
        low, high = value["low"], value["high"]
        ok = isinstance(low, list) and isinstance(high, list) and len(low) == len(high) \
            and len(low) > 0 and all(map(_is_number, low + high))
    else:
        ok = isinstance(value, list) and len(value) == 2 and all(map(_is_number, value))
        low, high = (value if ok else (None, None))
    if ok:
        pairs = zip(low, high) if isinstance(low, list) else [(low, high)]
        ok = all(float(b) > float(a) for a, b in pairs)
    if not ok:
        raise UserError(f"Expected `to_uint8` to be [low, high] or {{low: [...], high: [...]}} "
                        f"(one per band) with high > low. Received: to_uint8={value!r}")
    return low, high


def _check_field(field, value):
    """Type and range of one field's value (what a layout accepts is data_prep.sources')."""
    if value is None and field.default is None:
        return
    minimum, maximum = field.metadata["minimum"], field.metadata["maximum"]
    if field.name == "to_uint8":
        return  # checked whole by to_uint8_bounds
    if field.type == float | None:
        ok, expected = _is_number(value) and value == value, "a number"
    elif field.name == "bands":
        ok = isinstance(value, list) and bool(value) and all(
            (isinstance(v, int) and not isinstance(v, bool) and v >= 0) or
            (isinstance(v, str) and v) for v in value)
        expected = "a list of 0-based band indices or band descriptions"
    elif field.type is bool:
        ok, expected = isinstance(value, bool), "true or false"
    elif field.type in (int, int | None):
        ok = isinstance(value, int) and not isinstance(value, bool) and (
            minimum is None or value >= minimum)
        expected = {1: "a positive integer", 0: "a non-negative integer"}.get(minimum,
                                                                              "an integer")
    elif field.type is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) \
            and minimum <= value <= maximum
        expected = f"a number in [{minimum}, {maximum}]"
    elif field.metadata["choices"]:
        ok = value in field.metadata["choices"]
        expected = f"one of {list(field.metadata['choices'])}"
    elif field.name == "root":
        ok, expected = isinstance(value, (str, dict)), "a directory or {split name: directory}"
    elif field.type == dict | None:
        ok, expected = isinstance(value, dict), "{split name: file}"
    else:
        ok, expected = isinstance(value, str), "a string"
    if not ok:
        raise UserError(f"Expected `{field.name}` to be {expected}. "
                        f"Received: {field.name}={value!r}")


# --- the prepare command's flags ----------------------------------------------------------


def _flag(field):
    return field.metadata["flag"] or "--" + field.name.replace("_", "-")


def _pair(text, what):
    name, separator, value = text.partition("=")
    if not separator or not name or not value:
        raise argparse.ArgumentTypeError(f"expected SPLIT={what}, got {text!r}")
    return name, value


def _root_argument(text):
    """`DIR` or `SPLIT=DIR` (a directory whose name holds `=` is taken whole when it exists)."""
    name, separator, value = text.partition("=")
    # A local check on purpose: `train=gs://b/v` is a split and its URL, and a URL holding
    # `=` (`gs://b/day=1`) has no split name before it, so it never reaches the isdir.
    if separator and SPLIT_NAME.match(name) and value and not os.path.isdir(text):
        return name, value
    return None, text


def _bands_argument(text):
    """`4,3,2` -> [4, 3, 2]; `B04,B03` -> ['B04', 'B03'] (indices and names may mix)."""
    parts = [part.strip() for part in text.split(",")]
    if not all(parts):
        raise argparse.ArgumentTypeError(f"expected B,B,... (indices or names), got {text!r}")
    return [int(part) if part.isdigit() else part for part in parts]


def _to_uint8_argument(text):
    """`LOW,HIGH` -> [low, high]."""
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH, got {text!r}") from None
    return [low, high]


def add_source_arguments(parser, layouts):
    """Adds one flag per `SourceSpec` field to an argparse parser (`--layout` among
    `layouts`); `source_spec_from_arguments` reads them back."""
    for field in dataclasses.fields(SourceSpec):
        help_text = field.metadata["help"]
        metavar = field.metadata["metavar"]
        if field.name == "layout":
            parser.add_argument("--layout", choices=layouts, help="how --root is organised")
        elif field.name == "root":
            parser.add_argument("--root", action="append", type=_root_argument,
                                metavar=metavar, help="the directory of videos / frame "
                                "folders / .npy items; or SPLIT=DIR, repeated, one per split")
        elif field.name == "lists":
            parser.add_argument(_flag(field), dest="lists", action="append",
                                type=lambda text: _pair(text, "FILE"), metavar=metavar,
                                help="a split list (repeat per split)")
        elif field.type is bool:
            parser.add_argument(_flag(field), dest=field.name, action="store_true",
                                default=None, help=help_text)
        elif field.name in ("bands", "to_uint8") or field.type == float | None:
            parse = {"bands": _bands_argument, "to_uint8": _to_uint8_argument}.get(
                field.name, float)
            parser.add_argument(_flag(field), dest=field.name, type=parse, metavar=metavar,
                                help=help_text)
        else:
            kind = {int: int, int | None: int, float: float}.get(field.type, str)
            parser.add_argument(_flag(field), dest=field.name, type=kind, metavar=metavar,
                                choices=field.metadata["choices"], help=help_text)


def source_spec_from_arguments(args):
    """The `SourceSpec` of parsed `add_source_arguments` flags (unset flags: defaults)."""
    values = {}
    for field in dataclasses.fields(SourceSpec):
        value = getattr(args, field.name)
        if value is None:
            continue
        if field.name == "root":
            named = dict(pair for pair in value if pair[0] is not None)
            plain = [path for name, path in value if name is None]
            if (plain and named) or len(plain) > 1:
                given = " ".join(f"--root {name}={path}" if name else f"--root {path}"
                                 for name, path in value)
                raise UserError(f"Expected one --root DIR, or --root SPLIT=DIR for each split. "
                                f"Received: {given}")
            value = named or plain[0]
        elif field.name == "lists":
            value = dict(value)
        values[field.name] = value
    return SourceSpec(**values)
