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
- `kinetics`: `lists` of the Kinetics CSVs; files `{youtube_id}_{start:06d}_{end:06d}.*`
  anywhere under ROOT.

The class of a path-labelled item is its folder, never its file stem (UCF101 spells
`HandstandPushups` in folders and `HandStandPushups` in stems). Every listed path must stay
inside ROOT: `../`, absolute paths and symlinks that lead out are errors naming the entry.
Split files may use CRLF line ends and trailing spaces. This module never imports TensorFlow.
"""

import csv
import dataclasses
import logging
import os
import re

from data_prep.errors import UserError

logger = logging.getLogger(__name__)

LAYOUTS = ("folders", "ucf101", "hmdb51", "csv", "list", "kinetics")
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_MAX_LISTED = 10


@dataclasses.dataclass(frozen=True)
class Item:
    """One video, frame folder or .npy array: where it is, its id and its label."""

    path: str  # on disk
    item_id: str  # relative to the source root, '/'-separated
    label: int


@dataclasses.dataclass
class Source:
    classes: list  # index = label id
    splits: dict  # split name -> [Item], sorted by item_id
    skipped: list  # [{"path", "reason", "split"}] rows whose file is absent
    description: dict  # how the source was given, for the manifest


def _read_rows(path):
    """Non-blank lines of a text file, right-stripped; universal newlines handle CRLF."""
    try:
        with open(path, encoding="utf-8-sig", newline=None) as file:
            lines = file.read().splitlines()
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
        if os.path.isabs(entry) or re.match(r"^[A-Za-z]:[\\/]", entry) or entry.startswith("\\"):
            raise UserError(f"Expected list entries to be paths relative to the root "
                            f"{self.root}; {where} is absolute. Received: entry={entry!r}")
        normalised = os.path.normpath(entry.replace("\\", "/"))
        path = os.path.join(self.root, normalised)
        real = os.path.realpath(path)
        if normalised == ".." or normalised.startswith("../") or os.path.commonpath([real, self.real_root]) \
                != self.real_root:
            raise UserError(f"Expected list entries to stay inside the root {self.root}; "
                            f"{where} resolves to {real}. Received: entry={entry!r}")
        return path, normalised.replace(os.sep, "/")


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
    """Collects items per split, rejecting duplicates and gathering missing files."""

    def __init__(self, split_names=()):
        # Every named split appears in the result, even when its list is empty.
        self.splits = {name: {} for name in split_names}
        self.missing = {}

    def add(self, split, path, item_id, label):
        if not os.path.exists(path):
            self.missing.setdefault(split, []).append(item_id)
            return
        self.splits.setdefault(split, {})
        if item_id in self.splits[split]:
            logger.warning("%s is listed twice in split %s; keeping it once", item_id, split)
            return
        self.splits[split][item_id] = Item(path=path, item_id=item_id, label=label)

    def finish(self, where):
        if self.missing:
            described = "; ".join(f"{split}: {_format_paths(paths)}"
                                  for split, paths in self.missing.items())
            count = sum(len(paths) for paths in self.missing.values())
            raise UserError(f"Expected every file named by {where} to exist; {count} are "
                            f"missing. Received: missing={described}")
        return {split: [items[key] for key in sorted(items)]
                for split, items in self.splits.items()}


def _folders(root, lists, classes_file):
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
        return classes, builder.finish("the folders")
    resolver = _Resolver(root)
    builder = _SplitBuilder(lists)
    for split, list_path in lists.items():
        for number, line in _read_rows(list_path):
            entry = line.split(",")[0] if "," in line else line
            parts = entry.rsplit(None, 1)
            if len(parts) == 2 and parts[1].lstrip("-").isdigit():
                entry = parts[0]
            where = f"{list_path}:{number}"
            path, item_id = resolver.resolve(entry, where)
            name = _folder_class(item_id)
            if name not in index:
                raise UserError(f"Expected {where} to name ROOT/<class>/<item> with a class "
                                f"among {_format_paths(classes)}. Received: entry={entry!r}")
            builder.add(split, path, item_id, index[name])
    return classes, builder.finish("the lists")


def _match_class(name, index, lowercase_index):
    if name in index:
        return index[name]
    return lowercase_index.get((name or "").lower())


def _ucf101(root, split_dir, split):
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
    builder = _SplitBuilder(("train", "test"))
    for split_name, prefix in (("train", "trainlist"), ("test", "testlist")):
        list_path = os.path.join(split_dir, f"{prefix}{split:02d}.txt")
        for number, line in _read_rows(list_path):
            where = f"{list_path}:{number}"
            parts = line.split()
            path, item_id = resolver.resolve(parts[0], where)
            label = _match_class(_folder_class(item_id), index, lowercase_index)
            if label is None:
                raise UserError(f"Expected {where} to start with a class folder from "
                                f"{class_file}. Received: entry={parts[0]!r}")
            if len(parts) > 1 and parts[1].isdigit() and int(parts[1]) - 1 != label:
                logger.warning("%s: label %s disagrees with folder %s; using the folder",
                               where, parts[1], _folder_class(item_id))
            builder.add(split_name, path, item_id, label)
    return classes, builder.finish(f"the ucf101 split {split} lists")


def _hmdb51(root, split_dir, split):
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
    builder = _SplitBuilder(("train", "test"))
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
    return classes, builder.finish(f"the hmdb51 split {split} files")


def _csv_rows(list_path):
    try:
        with open(list_path, encoding="utf-8-sig", newline="") as file:
            rows = list(csv.reader(file))
    except OSError as error:
        raise UserError(f"Cannot read split file {list_path}: {error.strerror}. "
                        f"Received: path={list_path!r}") from None
    numbered = [(number, [cell.strip() for cell in row])
                for number, row in enumerate(rows, 1) if any(cell.strip() for cell in row)]
    return numbered


def _csv(root, lists, classes_file):
    table = {}
    for split, list_path in lists.items():
        rows = _csv_rows(list_path)
        if rows and [cell.lower() for cell in rows[0][1]] == ["path", "label"]:
            rows = rows[1:]
        for number, row in rows:
            if len(row) != 2 or not row[0] or not row[1]:
                raise UserError(f"Expected rows `path,label` in {list_path}:{number}. "
                                f"Received: row={','.join(row)!r}")
        table[split] = (list_path, rows)
    classes = _classes_or_sorted_labels(
        classes_file, (row[1] for _, rows in table.values() for _, row in rows))
    index = {name: label for label, name in enumerate(classes)}
    resolver = _Resolver(root)
    builder = _SplitBuilder(table)
    for split, (list_path, rows) in table.items():
        for number, (entry, name) in rows:
            where = f"{list_path}:{number}"
            if name not in index:
                raise UserError(f"Expected the label in {where} to be one of the classes in "
                                f"{classes_file}. Received: label={name!r}")
            path, item_id = resolver.resolve(entry, where)
            builder.add(split, path, item_id, index[name])
    return classes, builder.finish("the lists")


def _mmaction_list(root, lists, classes_file):
    table = {}
    for split, list_path in lists.items():
        rows = []
        for number, line in _read_rows(list_path):
            parts = line.strip().rsplit(None, 1)
            if len(parts) != 2 or not parts[1].isdigit():
                raise UserError(f"Expected rows `path label` (0-based integer label) in "
                                f"{list_path}:{number}. Received: row={line!r}")
            rows.append((number, parts[0], int(parts[1])))
        table[split] = (list_path, rows)
    labels = [label for _, rows in table.values() for _, _, label in rows]
    if classes_file:
        classes = _read_classes_file(classes_file)
    else:
        classes = [str(label) for label in range(max(labels, default=-1) + 1)]
    resolver = _Resolver(root)
    builder = _SplitBuilder(table)
    for split, (list_path, rows) in table.items():
        for number, entry, label in rows:
            where = f"{list_path}:{number}"
            if label >= len(classes):
                raise UserError(f"Expected labels 0..{len(classes) - 1} (the lines of "
                                f"{classes_file}) in {where}. Received: label={label}")
            path, item_id = resolver.resolve(entry, where)
            builder.add(split, path, item_id, label)
    return classes, builder.finish("the lists")


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
            with open(list_path, encoding="utf-8-sig", newline="") as file:
                reader = csv.DictReader(file)
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
                raise UserError(f"Expected integer time_start and time_end in {where}. "
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


def resolve_source(layout, root, *, split_dir=None, split=1, lists=None, classes_file=None):
    """Labelled items per split for one dataset on disk.

    Args:
        layout: str, one of `folders`, `ucf101`, `hmdb51`, `csv`, `list`, `kinetics`.
        root: str, the directory the items (and list entries) are relative to.
        split_dir: str or None, official split files (ucf101, hmdb51).
        split: int, official split number (ucf101, hmdb51). Defaults to 1.
        lists: dict {split name: list file} or None (folders, csv, list, kinetics).
        classes_file: str or None, class names one a line (index = label id).

    Returns:
        `Source` with classes, splits {name: [Item]} sorted by item id, and `skipped`.

    Raises:
        UserError: unknown layout, missing root/split files, malformed rows, entries that
            resolve outside `root`, unknown classes, or listed files that do not exist.
    """
    if layout not in LAYOUTS:
        raise UserError(f"Expected `layout` to be one of {list(LAYOUTS)}. "
                        f"Received: layout={layout!r}")
    _check_root(root)
    if isinstance(split, bool) or not isinstance(split, int) or split < 1:
        raise UserError(f"Expected `split` to be a positive integer. Received: split={split!r}")
    if classes_file is not None and not os.path.isfile(classes_file):
        raise UserError(f"Classes file does not exist. Received: classes_file={classes_file!r}")
    lists = _check_lists(lists, layout, required=layout in ("csv", "list", "kinetics"))
    skipped = []
    if layout == "folders":
        classes, splits = _folders(root, lists, classes_file)
    elif layout == "ucf101":
        classes, splits = _ucf101(root, split_dir, split)
    elif layout == "hmdb51":
        classes, splits = _hmdb51(root, split_dir, split)
    elif layout == "csv":
        classes, splits = _csv(root, lists, classes_file)
    elif layout == "list":
        classes, splits = _mmaction_list(root, lists, classes_file)
    else:
        classes, splits, skipped = _kinetics(root, lists, classes_file)
    if not any(splits.values()):
        raise UserError(f"Expected the {layout} source to name at least one item. "
                        f"Received: root={root!r}, lists={lists or None}, "
                        f"split_dir={split_dir!r}")
    description = {"layout": layout, "root": os.path.abspath(root)}
    if layout in ("ucf101", "hmdb51"):
        description.update(split_dir=os.path.abspath(split_dir), split=split)
    if lists:
        description["lists"] = {name: os.path.abspath(path) for name, path in lists.items()}
    if classes_file:
        description["classes_file"] = os.path.abspath(classes_file)
    return Source(classes=list(classes), splits=splits, skipped=skipped,
                  description=description)
