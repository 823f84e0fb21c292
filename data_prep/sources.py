"""Source layouts: turn a dataset on disk plus its split files into labelled items per split.

`resolve_source(layout, root, ...)` returns a `Source`: the class names (index = label id),
the items of each split sorted by their path relative to `root`, and the rows whose file is
absent (Kinetics only; other layouts treat a missing listed file as an error). Layouts:

- `folders`: ROOT/<class>/<item>; class names sorted; everything goes to split `train`,
  unless `lists` ({split: file}) name the items of each split, one `class/item` path a row
  (anything after a comma or the last space is ignored, so csv and MMAction2 lists work too).
- `ucf101`: `split_dir` holds `classInd.txt`, `trainlist0N.txt`, `testlist0N.txt`.
- `hmdb51`: `split_dir` holds `<class>_test_split<N>.txt` with rows `<file> <0|1|2>`.
- `csv`: `lists` of `path,label` rows (class names; an optional `path,label` header).
- `list`: `lists` of MMAction2 `path label` rows (0-based ids; names from `classes_file`).
- `rawframes`: `lists` of MMAction2 rawframe rows `frame_dir total_frames label` (or
  `frame_dir offset total_frames label`); the frames are `filename_template` formatted with
  `start_index + offset` .. `start_index + offset + total_frames - 1` (MMAction2's
  RawframeDataset and RawFrameDecode); other files in the folder are never read.
- `kinetics`: `lists` of the Kinetics CSVs; files `{youtube_id}_{start:06d}_{end:06d}.*`
  anywhere under ROOT.

`multi_label=True` (list, rawframes, csv) reads several labels a row (`path l1 [l2 ...]`;
csv: class names separated by `;` inside the label field); an item's label is then a sorted
tuple of ids. `only_present=True` keeps the listed items that exist and reports the others in
`Source.absent` instead of failing (the class list is unchanged).

The class of a path-labelled item is its folder, never its file stem (UCF101 spells
`HandstandPushups` in folders and `HandStandPushups` in stems). Every listed path must stay
inside ROOT: `../`, absolute paths outside ROOT and symlinks that lead out are errors naming
the entry (an absolute path inside ROOT is accepted).
Split files may use CRLF line ends and trailing spaces. This module never imports TensorFlow.
"""

import csv
import dataclasses
import logging
import os
import re

from core.errors import UserError
from core.untrusted_text import named_csv_errors, open_text, read_text_file

logger = logging.getLogger(__name__)

LAYOUTS = ("folders", "ucf101", "hmdb51", "csv", "list", "kinetics", "rawframes")
MULTI_LABEL_LAYOUTS = ("list", "rawframes", "csv")
# MMAction2's RawframeDataset defaults.
DEFAULT_FILENAME_TEMPLATE = "img_{:05}.jpg"
DEFAULT_START_INDEX = 1
# Separates the class names inside a multi-label csv row's label field.
CSV_LABEL_SEPARATOR = ";"
# At most this many absent items are listed by name (all are counted).
MAX_ABSENT_LISTED = 100
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_MAX_LISTED = 10


@dataclasses.dataclass(frozen=True)
class Item:
    """One video, frame folder or .npy array: where it is, its id and its label."""

    path: str  # on disk
    item_id: str  # relative to the source root, '/'-separated
    label: int | tuple  # an int; a sorted tuple of ids in a multi-label dataset
    # rawframes: (filename_template, first file index, total_frames); None for other items.
    frame_template: tuple | None = None


@dataclasses.dataclass
class Source:
    classes: list  # index = label id
    splits: dict  # split name -> [Item], sorted by item_id
    skipped: list  # [{"path", "reason", "split"}] rows whose file is absent (kinetics)
    description: dict  # how the source was given, for the manifest
    multi_label: bool = False
    # only_present: [{"path", "split"}] listed items not on disk (all of them, not bounded)
    absent: list = dataclasses.field(default_factory=list)


def _read_rows(path):
    """Non-blank lines of a text file, right-stripped; universal newlines handle CRLF."""
    try:
        lines = read_text_file(path).splitlines()  # UTF-8 (BOM ok), no NUL: else file, line
    except OSError as error:
        raise UserError(f"Cannot read split file {path}: {error.strerror}. "
                        f"Received: path={path!r}") from None
    return [(number, line.rstrip()) for number, line in enumerate(lines, 1) if line.strip()]


def _format_paths(paths):
    shown = ", ".join(paths[:_MAX_LISTED])
    more = len(paths) - _MAX_LISTED
    return shown + (f" and {more} more" if more > 0 else "")


class _Resolver:
    """Resolves listed entries under one root, refusing anything that leads outside it."""

    def __init__(self, root):
        self.root = os.path.abspath(root)
        self.real_root = os.path.realpath(root)

    def resolve(self, entry, where):
        entry = entry.strip()
        if re.match(r"^[A-Za-z]:[\\/]", entry) or entry.startswith("\\"):
            raise UserError(f"Expected list entries to be paths relative to the root "
                            f"{self.root}; {where} is a Windows absolute path. "
                            f"Received: entry={entry!r}")
        if os.path.isabs(entry):
            entry = self._relative_to_root(entry, where)
        normalised = os.path.normpath(entry.replace("\\", "/"))
        path = os.path.join(self.root, normalised)
        real = os.path.realpath(path)
        if normalised == ".." or normalised.startswith("../") or os.path.commonpath([real, self.real_root]) \
                != self.real_root:
            raise UserError(f"Expected list entries to stay inside the root {self.root}; "
                            f"{where} resolves to {real}. Received: entry={entry!r}")
        return path, normalised.replace(os.sep, "/")

    def _relative_to_root(self, entry, where):
        """An absolute entry as a path relative to the root, if it lies inside the root
        (spelled through the root as given, or through its real path)."""
        absolute = os.path.normpath(entry)
        for root in (self.root, self.real_root):
            if os.path.commonpath([absolute, root]) == root:
                return os.path.relpath(absolute, root)
        raise UserError(f"Expected list entries to stay inside the root {self.root}; {where} "
                        f"is an absolute path outside it. Received: entry={entry!r}")


def _folder_class(item_id):
    """The class named by the folder part of a path (its parent directory)."""
    parts = item_id.split("/")
    return parts[-2] if len(parts) >= 2 else None


def _class_directories(root):
    names = [name for name in os.listdir(root)
             if not name.startswith(".") and os.path.isdir(os.path.join(root, name))]
    return sorted(names)


def _check_root(root):
    if root is None or not os.path.isdir(root):
        raise UserError(f"Expected `root` to be a directory of videos. Received: root={root!r}")


def _check_lists(lists, layout, required):
    lists = dict(lists or {})
    if required and not lists:
        raise UserError(f"The `{layout}` layout needs split lists (--list SPLIT=FILE, e.g. "
                        f"--list train=train.csv). Received: lists={lists or None}")
    for name, path in lists.items():
        if not isinstance(name, str) or not _SPLIT_NAME.match(name):
            raise UserError(f"Expected split names made of letters, digits, '_', '-' or '.'. "
                            f"Received: split={name!r}")
        if not os.path.isfile(path):
            raise UserError(f"Split list {name} does not exist. Received: {name}={path!r}")
    return lists


def _check_split_dir(split_dir, layout):
    if split_dir is None or not os.path.isdir(split_dir):
        raise UserError(f"The `{layout}` layout needs --split-dir, the directory of its "
                        f"official split files. Received: split_dir={split_dir!r}")


def _read_classes_file(classes_file):
    names = [line.strip() for _, line in _read_rows(classes_file)]
    if len(set(names)) != len(names):
        raise UserError(f"Expected distinct class names in {classes_file}. "
                        f"Received: classes_file={classes_file!r}")
    return names


def _classes_or_sorted_labels(classes_file, labels):
    """The classes file's names in its order, else the distinct label names, sorted."""
    return _read_classes_file(classes_file) if classes_file else sorted(set(labels))


class _SplitBuilder:
    """Collects items per split, rejecting duplicates and gathering missing files.

    A repeated row (MMAction2 lists repeat rows to oversample) is kept once, with a warning:
    an item id names one stored item, and oversampling is the training sampler's job.
    """

    def __init__(self, split_names=(), only_present=False):
        # Every named split appears in the result, even when its list is empty.
        self.splits = {name: {} for name in split_names}
        self.missing = {}
        self.only_present = only_present

    def add(self, split, path, item_id, label, frame_template=None):
        if not os.path.exists(path):
            self.missing.setdefault(split, []).append(item_id)
            return
        self.splits.setdefault(split, {})
        if item_id in self.splits[split]:
            logger.warning("%s is listed twice in split %s; keeping it once", item_id, split)
            return
        self.splits[split][item_id] = Item(path=path, item_id=item_id, label=label,
                                           frame_template=frame_template)

    @property
    def absent(self):
        """The missing items as `Source.absent` rows (only_present)."""
        return [{"path": item_id, "split": split}
                for split, item_ids in self.missing.items() for item_id in item_ids]

    def finish(self, where):
        if self.missing and self.only_present:
            count = sum(len(paths) for paths in self.missing.values())
            logger.warning("%d item(s) named by %s are not on disk; preparing the others "
                           "(only_present)", count, where)
        elif self.missing:
            described = "; ".join(f"{split}: {_format_paths(paths)}"
                                  for split, paths in self.missing.items())
            count = sum(len(paths) for paths in self.missing.values())
            raise UserError(f"Expected every file named by {where} to exist ({count} are "
                            f"missing; only_present / --only-present prepares those that "
                            f"are). Received: missing={described}")
        return {split: [items[key] for key in sorted(items)]
                for split, items in self.splits.items()}


@dataclasses.dataclass(frozen=True)
class _ListOptions:
    """How list rows are read (the flags beyond the layout's own files)."""

    only_present: bool = False
    multi_label: bool = False
    num_classes: int | None = None
    filename_template: str = DEFAULT_FILENAME_TEMPLATE
    start_index: int = DEFAULT_START_INDEX
    with_offset: bool = False


def _ends_in_another_number(entry):
    """`imgs 5` (what is left of `imgs 5 127` once the label is taken): a row with more
    numbers than its format has, e.g. a rawframe or multi-label list given as `list`."""
    return re.search(r"\s-?\d+$", entry) is not None


def _too_many_numbers(where, expected, line):
    return UserError(
        f"Expected rows `{expected}` in {where}; this row has more numbers after its path. "
        f"A rawframe list (`frame_dir total_frames label`) needs --layout rawframes "
        f"(--with-offset for `frame_dir offset total_frames label`), several labels a row "
        f"need --multi-label. Received: row={line!r}")


def _folders(root, lists, classes_file, options):
    classes = _read_classes_file(classes_file) if classes_file else _class_directories(root)
    if not classes:
        raise UserError(f"Expected class folders under the root (ROOT/<class>/<item>). "
                        f"Received: root={root!r}")
    index = {name: label for label, name in enumerate(classes)}
    builder = _SplitBuilder(("train",))
    if not lists:
        for name in classes:
            folder = os.path.join(root, name)
            if not os.path.isdir(folder):
                raise UserError(f"Class folder {folder} does not exist. Received: class={name!r}")
            for entry in os.listdir(folder):
                if not entry.startswith("."):
                    builder.add("train", os.path.join(folder, entry), f"{name}/{entry}",
                                index[name])
        return classes, builder.finish("the folders"), []
    resolver = _Resolver(root)
    builder = _SplitBuilder(lists, options.only_present)
    for split, list_path in lists.items():
        for number, line in _read_rows(list_path):
            entry = line.split(",")[0] if "," in line else line
            parts = entry.rsplit(None, 1)
            if len(parts) == 2 and parts[1].lstrip("-").isdigit():
                entry = parts[0]
            where = f"{list_path}:{number}"
            path, item_id = resolver.resolve(entry, where)
            if not os.path.exists(path) and _ends_in_another_number(entry):
                raise _too_many_numbers(where, "class/item [label]", line)
            name = _folder_class(item_id)
            if name not in index:
                raise UserError(f"Expected {where} to name ROOT/<class>/<item> with a class "
                                f"among {_format_paths(classes)}. Received: entry={entry!r}")
            builder.add(split, path, item_id, index[name])
    return classes, builder.finish("the lists"), builder.absent


def _match_class(name, index, lowercase_index):
    if name in index:
        return index[name]
    return lowercase_index.get((name or "").lower())


def _ucf101(root, split_dir, split, options):
    _check_split_dir(split_dir, "ucf101")
    class_file = os.path.join(split_dir, "classInd.txt")
    numbered = []
    for number, line in _read_rows(class_file):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise UserError(f"Expected rows `<id> <class>` in {class_file}:{number}. "
                            f"Received: row={line!r}")
        numbered.append((int(parts[0]), parts[1]))
    classes = [name for _, name in sorted(numbered)]
    if [number for number, _ in sorted(numbered)] != list(range(1, len(classes) + 1)):
        raise UserError(f"Expected class ids 1..N in {class_file}. "
                        f"Received: ids={sorted(n for n, _ in numbered)[:_MAX_LISTED]}")
    index = {name: label for label, name in enumerate(classes)}
    lowercase_index = {name.lower(): label for label, name in enumerate(classes)}
    resolver = _Resolver(root)
    builder = _SplitBuilder(("train", "test"), options.only_present)
    for split_name, prefix in (("train", "trainlist"), ("test", "testlist")):
        list_path = os.path.join(split_dir, f"{prefix}{split:02d}.txt")
        for number, line in _read_rows(list_path):
            where = f"{list_path}:{number}"
            parts = line.split()
            if len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
                raise UserError(f"Expected rows `<class>/<file> [<class id>]` in {where}. "
                                f"Received: row={line!r}")
            path, item_id = resolver.resolve(parts[0], where)
            label = _match_class(_folder_class(item_id), index, lowercase_index)
            if label is None:
                raise UserError(f"Expected {where} to start with a class folder from "
                                f"{class_file}. Received: entry={parts[0]!r}")
            if len(parts) > 1 and parts[1].isdigit() and int(parts[1]) - 1 != label:
                logger.warning("%s: label %s disagrees with folder %s; using the folder",
                               where, parts[1], _folder_class(item_id))
            builder.add(split_name, path, item_id, label)
    return classes, builder.finish(f"the ucf101 split {split} lists"), builder.absent


def _hmdb51(root, split_dir, split, options):
    _check_split_dir(split_dir, "hmdb51")
    pattern = re.compile(rf"^(.+)_test_split{split}\.txt$")
    files = {}
    for name in os.listdir(split_dir):
        match = pattern.match(name)
        if match:
            files[match.group(1)] = os.path.join(split_dir, name)
    if not files:
        raise UserError(f"Expected <class>_test_split{split}.txt files in the split "
                        f"directory. Received: split_dir={split_dir!r}")
    classes = sorted(files)
    resolver = _Resolver(root)
    builder = _SplitBuilder(("train", "test"), options.only_present)
    for label, name in enumerate(classes):
        for number, line in _read_rows(files[name]):
            where = f"{files[name]}:{number}"
            parts = line.strip().rsplit(None, 1)
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise UserError(f"Expected rows `<file> <0|1|2>` in {where}. "
                                f"Received: row={line!r}")
            if parts[1] == "0":
                continue
            path, item_id = resolver.resolve(f"{name}/{parts[0]}", where)
            builder.add("train" if parts[1] == "1" else "test", path, item_id, label)
    return classes, builder.finish(f"the hmdb51 split {split} files"), builder.absent


def _csv_rows(list_path):
    try:
        with open_text(list_path) as file:
            reader = csv.reader(file)
            with named_csv_errors(list_path, reader):
                rows = list(reader)
    except OSError as error:
        raise UserError(f"Cannot read split file {list_path}: {error.strerror}. "
                        f"Received: path={list_path!r}") from None
    numbered = [(number, [cell.strip() for cell in row])
                for number, row in enumerate(rows, 1) if any(cell.strip() for cell in row)]
    return numbered


def _csv_label_names(cell, multi_label):
    if not multi_label:
        return [cell]
    return [name.strip() for name in cell.split(CSV_LABEL_SEPARATOR) if name.strip()]


def _csv(root, lists, classes_file, options):
    table = {}
    expected = "path,label" if not options.multi_label else \
        f"path,label{CSV_LABEL_SEPARATOR}label..."
    for split, list_path in lists.items():
        rows = _csv_rows(list_path)
        if rows and [cell.lower() for cell in rows[0][1]] == ["path", "label"]:
            rows = rows[1:]
        for number, row in rows:
            if len(row) != 2 or not row[0] or not _csv_label_names(row[1], options.multi_label):
                raise UserError(f"Expected rows `{expected}` in {list_path}:{number}. "
                                f"Received: row={','.join(row)!r}")
        table[split] = (list_path, rows)
    classes = _classes_or_sorted_labels(
        classes_file, (name for _, rows in table.values() for _, row in rows
                       for name in _csv_label_names(row[1], options.multi_label)))
    _check_num_classes(options, classes, classes_file)
    index = {name: label for label, name in enumerate(classes)}
    resolver = _Resolver(root)
    builder = _SplitBuilder(table, options.only_present)
    for split, (list_path, rows) in table.items():
        for number, (entry, cell) in rows:
            where = f"{list_path}:{number}"
            names = _csv_label_names(cell, options.multi_label)
            for name in names:
                if name not in index:
                    raise UserError(f"Expected the label in {where} to be one of the classes "
                                    f"in {classes_file}. Received: label={name!r}")
            path, item_id = resolver.resolve(entry, where)
            label = tuple(sorted({index[name] for name in names})) if options.multi_label \
                else index[names[0]]
            builder.add(split, path, item_id, label)
    return classes, builder.finish("the lists"), builder.absent


def _check_num_classes(options, classes, classes_file):
    if options.num_classes is not None and options.num_classes != len(classes):
        raise UserError(f"Expected `num_classes` to equal the {len(classes)} classes of "
                        f"{classes_file or 'the lists'}. Received: "
                        f"num_classes={options.num_classes}")


def _integer_fields(fields):
    """The fields as ints, or None if one is not a (non-negative) integer."""
    return [int(field) for field in fields] if all(field.isdigit() for field in fields) \
        else None


def _numbered_list_rows(list_path, numbers, options):
    """`(line, path, [numbers...], labels)` rows of an MMAction2 list.

    Single-label rows are `path n1 .. nk label` (the path may hold spaces: the last k + 1
    fields are the numbers); multi-label rows are `path n1 .. nk l1 [l2 ...]`, fields split
    on whitespace as MMAction2 splits them (the path is the first field).
    """
    expected = " ".join(["path", *numbers, "label" if not options.multi_label
                         else "label [label ...]"])
    rows = []
    for number, line in _read_rows(list_path):
        where = f"{list_path}:{number}"
        if options.multi_label:
            parts = line.split()
            values = _integer_fields(parts[1:])
            if values is None or len(values) < len(numbers) + 1:
                raise UserError(f"Expected rows `{expected}` (0-based integer labels) in "
                                f"{where}. Received: row={line!r}")
            labels = tuple(sorted(set(values[len(numbers):])))
        else:
            parts = line.strip().rsplit(None, len(numbers) + 1)
            values = _integer_fields(parts[1:])
            if len(parts) != len(numbers) + 2 or values is None:
                raise UserError(f"Expected rows `{expected}` (0-based integer label) in "
                                f"{where}. Received: row={line!r}")
            labels = values[-1]
        rows.append((number, parts[0], values[:len(numbers)], labels))
    return rows


def _classes_for_ids(classes_file, options, labels):
    """The names of label ids 0..N-1: the classes file, else `0`, `1`, ..."""
    if classes_file:
        classes = _read_classes_file(classes_file)
        _check_num_classes(options, classes, classes_file)
        return classes
    if options.num_classes is not None:
        return [str(label) for label in range(options.num_classes)]
    if options.multi_label:
        raise UserError("Expected --num-classes N or --classes FILE for a multi-label list "
                        "(a list only names the classes it uses). Received: "
                        "num_classes=None, classes_file=None")
    return [str(label) for label in range(max(labels, default=-1) + 1)]


def _mmaction_items(root, lists, classes_file, options, numbers):
    """Classes, split names and `(split, where, path, item_id, numbers, labels)` rows of
    MMAction2 `path [numbers...] label(s)` lists, checked and resolved under `root`."""
    expected = " ".join(["path", *numbers, "label [label ...]" if options.multi_label
                         else "label"])
    table = {split: (list_path, _numbered_list_rows(list_path, numbers, options))
             for split, list_path in lists.items()}
    ids = [label for _, rows in table.values() for *_, labels in rows
           for label in (labels if options.multi_label else (labels,))]
    classes = _classes_for_ids(classes_file, options, ids)
    resolver = _Resolver(root)
    resolved = []
    for split, (list_path, rows) in table.items():
        for number, entry, values, labels in rows:
            where = f"{list_path}:{number}"
            for label in labels if options.multi_label else (labels,):
                if label >= len(classes):
                    raise UserError(f"Expected labels 0..{len(classes) - 1} (the "
                                    f"{len(classes)} classes of "
                                    f"{classes_file or '--num-classes'}) in {where}. "
                                    f"Received: label={label}")
            path, item_id = resolver.resolve(entry, where)
            if not options.multi_label and not os.path.exists(path) \
                    and _ends_in_another_number(entry):
                raise _too_many_numbers(where, expected, " ".join(
                    [entry, *map(str, values), str(labels)]))
            resolved.append((split, where, path, item_id, values, labels))
    return classes, list(table), resolved


def _mmaction_list(root, lists, classes_file, options):
    classes, split_names, rows = _mmaction_items(root, lists, classes_file, options, ())
    builder = _SplitBuilder(split_names, options.only_present)
    for split, _, path, item_id, _, labels in rows:
        builder.add(split, path, item_id, labels)
    return classes, builder.finish("the lists"), builder.absent


def _rawframes(root, lists, classes_file, options):
    numbers = ("offset", "total_frames") if options.with_offset else ("total_frames",)
    classes, split_names, rows = _mmaction_items(root, lists, classes_file, options, numbers)
    builder = _SplitBuilder(split_names, options.only_present)
    for split, _, path, item_id, values, labels in rows:
        offset, total = values if options.with_offset else (0, values[0])
        if options.with_offset:
            # One folder may hold several segments (rows with other offsets): each is an item.
            item_id = f"{item_id}@{offset}"
        template = (options.filename_template, options.start_index + offset, total)
        builder.add(split, path, item_id, labels, frame_template=template)
    return classes, builder.finish("the lists"), builder.absent


def _index_tree(root):
    """{file stem: path relative to root} for every file under root (one walk)."""
    index = {}
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = sorted(d for d in subdirectories if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or name.endswith((".tmp", ".part")):
                continue
            stem = os.path.splitext(name)[0]
            relative = os.path.relpath(os.path.join(directory, name), root)
            index.setdefault(stem, relative)
    return index


def _kinetics(root, lists, classes_file):
    table = {}
    for split, list_path in lists.items():
        try:
            with open_text(list_path) as file:
                reader = csv.DictReader(file)
                with named_csv_errors(list_path, reader.reader):
                    fields = [field.strip() for field in reader.fieldnames or []]
                    reader.fieldnames = fields
                    rows = list(enumerate(reader, 2))
        except OSError as error:
            raise UserError(f"Cannot read split file {list_path}: {error.strerror}. "
                            f"Received: path={list_path!r}") from None
        required = {"label", "youtube_id", "time_start", "time_end"}
        if not required <= set(fields):
            raise UserError(f"Expected a Kinetics CSV header with {sorted(required)} in "
                            f"{list_path}. Received: header={fields}")
        for number, row in rows:
            # A short row leaves fields None; a long one puts the rest under the key None.
            if any(row.get(key) is None for key in required) or None in row:
                raise UserError(f"Expected rows `{','.join(fields)}` (as the header) in "
                                f"{list_path}:{number}. Received: row={dict(row)}")
        table[split] = (list_path, rows)
    classes = _classes_or_sorted_labels(
        classes_file, (row["label"].strip() for _, rows in table.values() for _, row in rows))
    index = {name: label for label, name in enumerate(classes)}
    files = _index_tree(root)
    resolver = _Resolver(root)
    builder = _SplitBuilder(table)
    skipped = []
    for split, (list_path, rows) in table.items():
        for number, row in rows:
            where = f"{list_path}:{number}"
            try:
                stem = (f"{row['youtube_id'].strip()}_{int(float(row['time_start'])):06d}"
                        f"_{int(float(row['time_end'])):06d}")
            except (TypeError, ValueError):
                raise UserError(f"Expected rows `label,youtube_id,time_start,time_end,...` "
                                f"with integer time_start and time_end in {where}. "
                                f"Received: row={dict(row)}") from None
            name = row["label"].strip()
            if name not in index:
                raise UserError(f"Expected the label in {where} to be one of the classes in "
                                f"{classes_file}. Received: label={name!r}")
            if stem not in files:
                # Kinetics always misses videos deleted from YouTube: skip, not an error.
                skipped.append({"path": stem, "reason": "missing file (no such clip under "
                                "the root)", "split": split})
                continue
            path, item_id = resolver.resolve(files[stem], where)
            builder.add(split, path, item_id, index[name])
    return classes, builder.finish("the lists"), skipped


def _list_options(layout, only_present, multi_label, num_classes, filename_template,
                  start_index, with_offset):
    if multi_label and layout not in MULTI_LABEL_LAYOUTS:
        raise UserError(f"Expected a layout among {list(MULTI_LABEL_LAYOUTS)} for multi-label "
                        f"lists. Received: layout={layout!r}, multi_label=True")
    if num_classes is not None and (isinstance(num_classes, bool)
                                    or not isinstance(num_classes, int) or num_classes < 1):
        raise UserError(f"Expected `num_classes` to be a positive integer. "
                        f"Received: num_classes={num_classes!r}")
    if isinstance(start_index, bool) or not isinstance(start_index, int) or start_index < 0:
        raise UserError(f"Expected `start_index` to be a non-negative integer. "
                        f"Received: start_index={start_index!r}")
    try:
        name = filename_template.format(start_index)
    except (AttributeError, IndexError, KeyError, ValueError):
        name = None
    if not name or name == filename_template or os.path.isabs(name) \
            or ".." in name.replace("\\", "/").split("/"):
        raise UserError(f"Expected `filename_template` to be a file name with one integer "
                        f"field, like {DEFAULT_FILENAME_TEMPLATE!r} (MMAction2's "
                        f"filename_tmpl). Received: filename_template={filename_template!r}")
    if (filename_template, start_index, with_offset) != (
            DEFAULT_FILENAME_TEMPLATE, DEFAULT_START_INDEX, False) and layout != "rawframes":
        raise UserError(f"Expected `filename_template`, `start_index` and `with_offset` only "
                        f"with the rawframes layout. Received: layout={layout!r}")
    return _ListOptions(only_present=bool(only_present), multi_label=bool(multi_label),
                        num_classes=num_classes, filename_template=filename_template,
                        start_index=start_index, with_offset=bool(with_offset))


def resolve_source(layout, root, *, split_dir=None, split=1, lists=None, classes_file=None,
                   only_present=False, multi_label=False, num_classes=None,
                   filename_template=DEFAULT_FILENAME_TEMPLATE,
                   start_index=DEFAULT_START_INDEX, with_offset=False):
    """Labelled items per split for one dataset on disk.

    Args:
        layout: str, one of `folders`, `ucf101`, `hmdb51`, `csv`, `list`, `kinetics`,
            `rawframes`.
        root: str, the directory the items (and list entries) are relative to.
        split_dir: str or None, official split files (ucf101, hmdb51).
        split: int, official split number (ucf101, hmdb51). Defaults to 1.
        lists: dict {split name: list file} or None (folders, csv, list, kinetics,
            rawframes).
        classes_file: str or None, class names one a line (index = label id).
        only_present: bool, keep the listed items that exist and list the others in
            `Source.absent`, instead of an error (kinetics always does). Defaults to False.
        multi_label: bool, rows carry one or more labels (list, rawframes, csv). Defaults
            to False.
        num_classes: int or None, the class count of a list or rawframes layout without
            `classes_file` (needed for multi-label; classes are named `0`, `1`, ...).
        filename_template: str, rawframes: the frame file name, formatted with the frame
            number. Defaults to `"img_{:05}.jpg"`.
        start_index: int, rawframes: the number of a folder's first frame. Defaults to 1.
        with_offset: bool, rawframes: rows are `frame_dir offset total_frames label`.
            Defaults to False.

    Returns:
        `Source` with classes, splits {name: [Item]} sorted by item id, `skipped`,
        `multi_label` and `absent`.

    Raises:
        UserError: unknown layout, missing root/split files, malformed rows, entries that
            resolve outside `root`, unknown classes, or listed files that do not exist
            (unless `only_present`).
    """
    if layout not in LAYOUTS:
        raise UserError(f"Expected `layout` to be one of {list(LAYOUTS)}. "
                        f"Received: layout={layout!r}")
    _check_root(root)
    if isinstance(split, bool) or not isinstance(split, int) or split < 1:
        raise UserError(f"Expected `split` to be a positive integer. Received: split={split!r}")
    if classes_file is not None and not os.path.isfile(classes_file):
        raise UserError(f"Classes file does not exist. Received: classes_file={classes_file!r}")
    options = _list_options(layout, only_present, multi_label, num_classes, filename_template,
                            start_index, with_offset)
    lists = _check_lists(lists, layout,
                         required=layout in ("csv", "list", "kinetics", "rawframes"))
    skipped = []
    absent = []
    if layout == "folders":
        classes, splits, absent = _folders(root, lists, classes_file, options)
    elif layout == "ucf101":
        classes, splits, absent = _ucf101(root, split_dir, split, options)
    elif layout == "hmdb51":
        classes, splits, absent = _hmdb51(root, split_dir, split, options)
    elif layout == "csv":
        classes, splits, absent = _csv(root, lists, classes_file, options)
    elif layout == "list":
        classes, splits, absent = _mmaction_list(root, lists, classes_file, options)
    elif layout == "rawframes":
        classes, splits, absent = _rawframes(root, lists, classes_file, options)
    else:
        classes, splits, skipped = _kinetics(root, lists, classes_file)
    if not any(splits.values()):
        raise UserError(f"Expected the {layout} source to name at least one item"
                        f"{' that exists' if absent else ''}. "
                        f"Received: root={root!r}, lists={lists or None}, "
                        f"split_dir={split_dir!r}")
    description = {"layout": layout, "root": os.path.abspath(root)}
    if layout in ("ucf101", "hmdb51"):
        description.update(split_dir=os.path.abspath(split_dir), split=split)
    if lists:
        description["lists"] = {name: os.path.abspath(path) for name, path in lists.items()}
    if classes_file:
        description["classes_file"] = os.path.abspath(classes_file)
    if layout == "rawframes":
        description.update(filename_template=options.filename_template,
                           start_index=options.start_index, with_offset=options.with_offset)
    if options.only_present:
        description["only_present"] = True
    return Source(classes=list(classes), splits=splits, skipped=skipped,
                  description=description, multi_label=options.multi_label, absent=absent)
