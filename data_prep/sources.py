"""Source layouts: turn a dataset on disk plus its split files into labelled items per split.

`resolve_source(spec)` (a `SourceSpec`) returns a `Source`: the class names (index = label
id), the items of each split sorted by their path relative to the split's root, and the rows
whose file is absent (Kinetics only; other layouts treat a missing listed file as an error).
The layouts are the rows of `LAYOUT_TABLE`, each a reader `(spec) -> _Found` and what it
needs and reads (a new layout is a reader and a row; see docs/DESIGN.md, "How to add"):

- `folders`: ROOT/<class>/<item>; class names sorted; everything goes to split `train`
  (with a root per split: each split from its root), unless `lists` ({split: file}) name the
  items of each split, one `class/item` path a row (anything after a comma or the last space
  is ignored, so csv and MMAction2 lists work too).
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
- `raster`: patches of one time-series raster (`raster` under ROOT: a multi-date GeoTIFF
  stack or a folder of per-date GeoTIFFs) labelled by `label_raster` (class values on the
  same grid), split train/test by spatial blocks (`data_prep.raster_patches`). Each item is
  a window of the raster (`Item.window`), id `<raster>@r<row>_c<col>`; the classes are the
  `classes_file` rows (`name`: line i names value i; or `value name`), else the label values
  the patches hold, sorted. The manifest's `source.patches` records each class's label value
  and the patches left out.

`multi_label=True` (list, rawframes, csv) reads several labels a row (`path l1 [l2 ...]`;
csv: class names separated by `;` inside the label field); an item's label is then a sorted
tuple of ids. `only_present=True` keeps the listed items that exist and reports the others in
`Source.absent` instead of failing (the class list is unchanged).

Only media are items (`data_prep.decode.is_media_item`: a directory, or a file named as a
video or an array): other files a folder walk finds or a list names (notes.txt, README) are
left out and listed in `Source.ignored`, since FFmpeg would render text as video.

The class of a path-labelled item is its folder, never its file stem (UCF101 spells
`HandstandPushups` in folders and `HandStandPushups` in stems). Every listed path must stay
inside its split's root: `../`, absolute paths outside it and symlinks that lead out are
errors naming the entry (an absolute path inside the root is accepted).
Split files may use CRLF line ends and trailing spaces.

A root, split directory, list or classes file may be a URL (`gs://bucket/ucf101`, or any
scheme `tf.io.gfile` reads; `core.storage`), for every layout but `raster`; the items'
paths are then URLs too. Under a URL an entry stays inside the root when its normalised path
does (an object store has no symlinks), and whether listed items exist is read from one
listing per folder, not asked item by item. This module never imports TensorFlow for local
paths.
"""

import csv
import dataclasses
import logging
import os
import posixpath
import re

from core import storage
from core.errors import UserError
from core.untrusted_text import named_csv_errors, open_text, read_text_file
from data_prep import raster_patches
from data_prep.dates import SIDECAR_SUFFIXES
from data_prep.decode import is_media_file, is_media_item
from data_prep.source_spec import SPLIT_NAME, SourceSpec

logger = logging.getLogger(__name__)
# Separates the class names inside a multi-label csv row's label field.
CSV_LABEL_SEPARATOR = ";"
# At most this many absent (or ignored) items are listed by name (all are counted).
MAX_ABSENT_LISTED = 100
_MAX_LISTED = 10


@dataclasses.dataclass(frozen=True)
class Item:
    """One video, frame folder or .npy array: where it is, its id and its label."""

    path: str  # on disk
    item_id: str  # relative to the source root, '/'-separated
    label: int | tuple  # an int; a sorted tuple of ids in a multi-label dataset
    # rawframes: (filename_template, first file index, total_frames); None for other items.
    frame_template: tuple | None = None
    # raster patches: (row_off, col_off, height, width) pixels of `path`; None: all of it.
    window: tuple | None = None


@dataclasses.dataclass
class Source:
    classes: list  # index = label id
    splits: dict  # split name -> [Item], sorted by item_id
    skipped: list  # [{"path", "reason", "split"}] rows whose file is absent (kinetics)
    description: dict  # how the source was given, for the manifest
    multi_label: bool = False
    # only_present: [{"path", "split"}] listed items not on disk (all of them, not bounded)
    absent: list = dataclasses.field(default_factory=list)
    # [{"path", "split"}] files that are not media (notes.txt, README): never items
    ignored: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class _Found:
    """What a layout's reader finds: classes, items per split, and what it left out."""

    classes: list
    splits: dict
    absent: list = dataclasses.field(default_factory=list)
    skipped: list = dataclasses.field(default_factory=list)
    ignored: list = dataclasses.field(default_factory=list)
    # What the manifest's `source` records beyond the spec (raster: `patches`).
    notes: dict = dataclasses.field(default_factory=dict)


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


def _outside_root(root, where, how, entry):
    return UserError(f"Expected list entries to stay inside the root {root}; {where} {how}. "
                     f"Received: entry={entry!r}")


def _plain_entry(entry, root, where):
    """The entry without surrounding blanks; a Windows absolute path is an error."""
    entry = entry.strip()
    if re.match(r"^[A-Za-z]:[\\/]", entry) or entry.startswith("\\"):
        raise UserError(f"Expected list entries to be paths relative to the root "
                        f"{root}; {where} is a Windows absolute path. "
                        f"Received: entry={entry!r}")
    return entry


def _is_escape(normalised):
    return normalised == ".." or normalised.startswith("../")


class _Resolver:
    """Resolves listed entries under one local root, refusing anything that leads outside
    it (`..`, absolute paths, URLs, symlinks)."""

    def __init__(self, root):
        self.root = os.path.abspath(root)
        self.real_root = os.path.realpath(root)

    def resolve(self, entry, where):
        entry = _plain_entry(entry, self.root, where)
        if storage.is_url(entry):  # os would read `gs://b/x` as a folder named `gs:`
            raise _outside_root(self.root, where, "is a URL outside it", entry)
        if os.path.isabs(entry):
            entry = self._relative_to_root(entry, where)
        normalised = os.path.normpath(entry.replace("\\", "/"))
        path = os.path.join(self.root, normalised)
        real = os.path.realpath(path)
        if _is_escape(normalised) or os.path.commonpath([real, self.real_root]) \
                != self.real_root:
            raise _outside_root(self.root, where, f"resolves to {real}", entry)
        return path, normalised.replace(os.sep, "/")

    def _relative_to_root(self, entry, where):
        """An absolute entry as a path relative to the root, if it lies inside the root
        (spelled through the root as given, or through its real path)."""
        absolute = os.path.normpath(entry)
        for root in (self.root, self.real_root):
            if os.path.commonpath([absolute, root]) == root:
                return os.path.relpath(absolute, root)
        raise _outside_root(self.root, where, "is an absolute path outside it", entry)


class _UrlResolver:
    """`_Resolver` for a URL root: an object store has no symlinks, so an entry stays inside
    the root when its normalised path does; a full URL inside the root is accepted like an
    absolute path inside a local root."""

    def __init__(self, root):
        self.root = storage.normpath(root)

    def resolve(self, entry, where):
        entry = _plain_entry(entry, self.root, where)
        relative = entry.replace("\\", "/")
        if storage.is_url(relative):
            relative = self._relative_to_root(relative, entry, where)
        elif relative.startswith("/"):
            raise _outside_root(self.root, where, "is an absolute path outside it", entry)
        normalised = posixpath.normpath(relative)
        if _is_escape(normalised):
            resolved = storage.normpath(storage.join(self.root, normalised))
            raise _outside_root(self.root, where, f"resolves to {resolved}", entry)
        return storage.join(self.root, normalised), normalised

    def _relative_to_root(self, url, entry, where):
        normalised = storage.normpath(url)
        if normalised == self.root:
            return "."
        if normalised.startswith(self.root + "/"):
            return normalised[len(self.root) + 1:]
        raise _outside_root(self.root, where, "is a URL outside it", entry)


def _resolver(root):
    """The resolver of entries under `root`, a local directory or a URL."""
    return _UrlResolver(root) if storage.is_url(root) else _Resolver(root)


class _FolderListings:
    """Whether listed paths exist, asking each folder once under a URL root.

    An object store answers "what is in this folder" in one request (a page per thousand
    names) but "is this object there" in one request per object: UCF101 under gs:// is 101
    listings, not 13 320 checks. A local path is checked with `os.path.exists`, as always (a
    broken symlink is listed but absent).
    """

    def __init__(self):
        self._names = {}  # URL of a folder -> the names in it

    def listdir(self, folder):
        names = storage.listdir(folder)
        self._remember(folder, names)
        return names

    def walk(self, top):
        """`storage.walk(top)`, remembering each folder's names (pruning works as there)."""
        for directory, subdirectories, files in storage.walk(top):
            self._remember(directory, subdirectories + files)
            yield directory, subdirectories, files

    def _remember(self, folder, names):
        if storage.is_url(folder):
            self._names[folder.rstrip("/")] = set(names)

    def exists(self, path):
        folder, name = storage.dirname(path), storage.basename(path)
        if not storage.is_url(folder) or name in ("", ".", ".."):
            return storage.exists(path)
        if folder not in self._names:
            try:
                self.listdir(folder)
            except OSError:  # no such folder: nothing in it (os.path.exists says False too)
                self._names[folder] = set()
        return name in self._names[folder]


def _folder_class(item_id):
    """The class named by the folder part of a path (its parent directory)."""
    parts = item_id.split("/")
    return parts[-2] if len(parts) >= 2 else None


def _class_directories(root):
    names = [name for name in storage.listdir(root)
             if not name.startswith(".") and storage.isdir(storage.join(root, name))]
    return sorted(names)


def _check_root(root):
    if root is not None:
        storage.check_url(root, "`root`")
    if root is None or not storage.isdir(root):
        raise UserError(f"Expected `root` to be a directory of videos. Received: root={root!r}")


def _check_lists(lists, layout, required):
    lists = dict(lists or {})
    if required and not lists:
        raise UserError(f"The `{layout}` layout needs split lists (--list SPLIT=FILE, e.g. "
                        f"--list train=train.csv). Received: lists={lists or None}")
    for name, path in lists.items():
        if not isinstance(name, str) or not SPLIT_NAME.match(name):
            raise UserError(f"Expected split names made of letters, digits, '_', '-' or '.'. "
                            f"Received: split={name!r}")
        storage.check_url(path, f"split list {name}")
        if not storage.isfile(path):
            raise UserError(f"Split list {name} does not exist. Received: {name}={path!r}")
    return lists


def _check_split_dir(split_dir, layout):
    if split_dir is not None:
        storage.check_url(split_dir, "`split_dir`")
    if split_dir is None or not storage.isdir(split_dir):
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
        self.ignored = []
        self.only_present = only_present
        self.listings = _FolderListings()

    def add(self, split, path, item_id, label, frame_template=None):
        if not self.listings.exists(path):
            self.missing.setdefault(split, []).append(item_id)
            return
        if frame_template is None and path.lower().endswith(SIDECAR_SUFFIXES):
            return  # an item's dates (`x.npy` + `x.dates.json`), read with the item
        if frame_template is None and not is_media_item(path):
            # (a rawframe entry that is a file is skipped by the decoder, with its reason)
            self.ignored.append({"path": item_id, "split": split})
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

    def finish(self, classes, where):
        """The reader's `_Found`; an error for missing files unless `only_present`."""
        if self.ignored:
            logger.warning("%d file(s) named by %s are not videos, frame folders or arrays; "
                           "left out (first: %s)", len(self.ignored), where,
                           self.ignored[0]["path"])
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
        splits = {split: [items[key] for key in sorted(items)]
                  for split, items in self.splits.items()}
        return _Found(list(classes), splits, absent=self.absent, ignored=self.ignored)


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


def _folders(spec):
    """ROOT/<class>/<item> (each split from its own root if `root` is per split), or the
    `class/item` rows of `lists`."""
    split_roots = spec.root if spec.per_split_roots and not spec.lists else {"train": spec.root}
    if spec.classes_file:
        classes = _read_classes_file(spec.classes_file)
    else:
        classes = sorted({name for root in split_roots.values()
                          for name in _class_directories(root)})
    if not classes:
        raise UserError(f"Expected class folders under the root (ROOT/<class>/<item>). "
                        f"Received: root={spec.root!r}")
    index = {name: label for label, name in enumerate(classes)}
    if not spec.lists:
        builder = _SplitBuilder(split_roots)
        for split, root in split_roots.items():
            for name in classes:
                folder = storage.join(root, name)
                if not storage.isdir(folder):
                    if len(split_roots) > 1:  # a split may lack a class the others have
                        continue
                    raise UserError(f"Class folder {folder} does not exist. "
                                    f"Received: class={name!r}")
                for entry in builder.listings.listdir(folder):
                    if not entry.startswith("."):
                        builder.add(split, storage.join(folder, entry), f"{name}/{entry}",
                                    index[name])
        return builder.finish(classes, "the folders")
    builder = _SplitBuilder(spec.lists, spec.only_present)
    for split, list_path in spec.lists.items():
        resolver = _resolver(spec.root_of(split))
        for number, line in _read_rows(list_path):
            entry = line.split(",")[0] if "," in line else line
            parts = entry.rsplit(None, 1)
            if len(parts) == 2 and parts[1].lstrip("-").isdigit():
                entry = parts[0]
            where = f"{list_path}:{number}"
            path, item_id = resolver.resolve(entry, where)
            if _ends_in_another_number(entry) and not builder.listings.exists(path):
                raise _too_many_numbers(where, "class/item [label]", line)
            name = _folder_class(item_id)
            if name not in index:
                raise UserError(f"Expected {where} to name ROOT/<class>/<item> with a class "
                                f"among {_format_paths(classes)}. Received: entry={entry!r}")
            builder.add(split, path, item_id, index[name])
    return builder.finish(classes, "the lists")


def _match_class(name, index, lowercase_index):
    if name in index:
        return index[name]
    return lowercase_index.get((name or "").lower())


def _ucf101(spec):
    split_dir, split = spec.split_dir, spec.split
    _check_split_dir(split_dir, "ucf101")
    class_file = storage.join(split_dir, "classInd.txt")
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
    builder = _SplitBuilder(("train", "test"), spec.only_present)
    for split_name, prefix in (("train", "trainlist"), ("test", "testlist")):
        resolver = _resolver(spec.root_of(split_name))
        list_path = storage.join(split_dir, f"{prefix}{split:02d}.txt")
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
    return builder.finish(classes, f"the ucf101 split {split} lists")


def _hmdb51(spec):
    split_dir, split = spec.split_dir, spec.split
    _check_split_dir(split_dir, "hmdb51")
    pattern = re.compile(rf"^(.+)_test_split{split}\.txt$")
    files = {}
    for name in storage.listdir(split_dir):
        match = pattern.match(name)
        if match:
            files[match.group(1)] = storage.join(split_dir, name)
    if not files:
        raise UserError(f"Expected <class>_test_split{split}.txt files in the split "
                        f"directory. Received: split_dir={split_dir!r}")
    classes = sorted(files)
    resolvers = {name: _resolver(spec.root_of(name)) for name in ("train", "test")}
    builder = _SplitBuilder(("train", "test"), spec.only_present)
    for label, name in enumerate(classes):
        for number, line in _read_rows(files[name]):
            where = f"{files[name]}:{number}"
            parts = line.strip().rsplit(None, 1)
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise UserError(f"Expected rows `<file> <0|1|2>` in {where}. "
                                f"Received: row={line!r}")
            if parts[1] == "0":
                continue
            split_name = "train" if parts[1] == "1" else "test"
            path, item_id = resolvers[split_name].resolve(f"{name}/{parts[0]}", where)
            builder.add(split_name, path, item_id, label)
    return builder.finish(classes, f"the hmdb51 split {split} files")


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


def _csv(spec):
    lists, classes_file = spec.lists, spec.classes_file
    table = {}
    expected = "path,label" if not spec.multi_label else \
        f"path,label{CSV_LABEL_SEPARATOR}label..."
    for split, list_path in lists.items():
        rows = _csv_rows(list_path)
        if rows and [cell.lower() for cell in rows[0][1]] == ["path", "label"]:
            rows = rows[1:]
        for number, row in rows:
            if len(row) != 2 or not row[0] or not _csv_label_names(row[1], spec.multi_label):
                raise UserError(f"Expected rows `{expected}` in {list_path}:{number}. "
                                f"Received: row={','.join(row)!r}")
        table[split] = (list_path, rows)
    classes = _classes_or_sorted_labels(
        classes_file, (name for _, rows in table.values() for _, row in rows
                       for name in _csv_label_names(row[1], spec.multi_label)))
    _check_num_classes(spec, classes, classes_file)
    index = {name: label for label, name in enumerate(classes)}
    builder = _SplitBuilder(table, spec.only_present)
    for split, (list_path, rows) in table.items():
        resolver = _resolver(spec.root_of(split))
        for number, (entry, cell) in rows:
            where = f"{list_path}:{number}"
            names = _csv_label_names(cell, spec.multi_label)
            for name in names:
                if name not in index:
                    raise UserError(f"Expected the label in {where} to be one of the classes "
                                    f"in {classes_file}. Received: label={name!r}")
            path, item_id = resolver.resolve(entry, where)
            label = tuple(sorted({index[name] for name in names})) if spec.multi_label \
                else index[names[0]]
            builder.add(split, path, item_id, label)
    return builder.finish(classes, "the lists")


def _check_num_classes(spec, classes, classes_file):
    if spec.num_classes is not None and spec.num_classes != len(classes):
        raise UserError(f"Expected `num_classes` to equal the {len(classes)} classes of "
                        f"{classes_file or 'the lists'}. Received: "
                        f"num_classes={spec.num_classes}")


def _integer_fields(fields):
    """The fields as ints, or None if one is not a (non-negative) integer."""
    return [int(field) for field in fields] if all(field.isdigit() for field in fields) \
        else None


def _numbered_list_rows(list_path, numbers, spec):
    """`(line, path, [numbers...], labels)` rows of an MMAction2 list.

    Single-label rows are `path n1 .. nk label` (the path may hold spaces: the last k + 1
    fields are the numbers); multi-label rows are `path n1 .. nk l1 [l2 ...]`, fields split
    on whitespace as MMAction2 splits them (the path is the first field).
    """
    expected = " ".join(["path", *numbers, "label" if not spec.multi_label
                         else "label [label ...]"])
    rows = []
    for number, line in _read_rows(list_path):
        where = f"{list_path}:{number}"
        if spec.multi_label:
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


def _classes_for_ids(classes_file, spec, labels):
    """The names of label ids 0..N-1: the classes file, else `0`, `1`, ..."""
    if classes_file:
        classes = _read_classes_file(classes_file)
        _check_num_classes(spec, classes, classes_file)
        return classes
    if spec.num_classes is not None:
        return [str(label) for label in range(spec.num_classes)]
    if spec.multi_label:
        raise UserError("Expected --num-classes N or --classes FILE for a multi-label list "
                        "(a list only names the classes it uses). Received: "
                        "num_classes=None, classes_file=None")
    return [str(label) for label in range(max(labels, default=-1) + 1)]


def _mmaction_items(spec, numbers):
    """Classes, split names and `(split, where, path, item_id, numbers, labels)` rows of
    MMAction2 `path [numbers...] label(s)` lists, checked and resolved under their roots."""
    lists, classes_file = spec.lists, spec.classes_file
    expected = " ".join(["path", *numbers, "label [label ...]" if spec.multi_label
                         else "label"])
    table = {split: (list_path, _numbered_list_rows(list_path, numbers, spec))
             for split, list_path in lists.items()}
    ids = [label for _, rows in table.values() for *_, labels in rows
           for label in (labels if spec.multi_label else (labels,))]
    classes = _classes_for_ids(classes_file, spec, ids)
    resolved = []
    for split, (list_path, rows) in table.items():
        resolver = _resolver(spec.root_of(split))
        for number, entry, values, labels in rows:
            where = f"{list_path}:{number}"
            for label in labels if spec.multi_label else (labels,):
                if label >= len(classes):
                    raise UserError(f"Expected labels 0..{len(classes) - 1} (the "
                                    f"{len(classes)} classes of "
                                    f"{classes_file or '--num-classes'}) in {where}. "
                                    f"Received: label={label}")
            path, item_id = resolver.resolve(entry, where)
            if not spec.multi_label and _ends_in_another_number(entry) \
                    and not storage.exists(path):
                raise _too_many_numbers(where, expected, " ".join(
                    [entry, *map(str, values), str(labels)]))
            resolved.append((split, where, path, item_id, values, labels))
    return classes, list(table), resolved


def _mmaction_list(spec):
    classes, split_names, rows = _mmaction_items(spec, ())
    builder = _SplitBuilder(split_names, spec.only_present)
    for split, _, path, item_id, _, labels in rows:
        builder.add(split, path, item_id, labels)
    return builder.finish(classes, "the lists")


def _rawframes(spec):
    numbers = ("offset", "total_frames") if spec.with_offset else ("total_frames",)
    classes, split_names, rows = _mmaction_items(spec, numbers)
    builder = _SplitBuilder(split_names, spec.only_present)
    for split, _, path, item_id, values, labels in rows:
        offset, total = values if spec.with_offset else (0, values[0])
        if spec.with_offset:
            # One folder may hold several segments (rows with other offsets): each is an item.
            item_id = f"{item_id}@{offset}"
        template = (spec.filename_template, spec.start_index + offset, total)
        builder.add(split, path, item_id, labels, frame_template=template)
    return builder.finish(classes, "the lists")


def _index_tree(root, listings):
    """{file stem: path relative to root} for every video or array under root (one walk of
    `listings`, which then knows every folder's names); a `.txt` or `.json` beside a clip
    never stands for it."""
    index = {}
    top = root.rstrip("/") if storage.is_url(root) else root
    for directory, subdirectories, files in listings.walk(root):
        subdirectories[:] = sorted(d for d in subdirectories if not d.startswith("."))
        for name in sorted(files):
            # Named, not stat'ed: a walk's files are no folders.
            if name.startswith(".") or name.endswith((".tmp", ".part")) \
                    or not is_media_file(name):
                continue
            stem = os.path.splitext(name)[0]
            if storage.is_url(root):
                relative = storage.join(directory, name)[len(top):].lstrip("/")
            else:
                relative = os.path.relpath(os.path.join(directory, name), root)
            index.setdefault(stem, relative)
    return index


def _kinetics(spec):
    lists, classes_file = spec.lists, spec.classes_file
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
    trees = {}  # one walk per root
    builder = _SplitBuilder(table)
    skipped = []
    for split, (list_path, rows) in table.items():
        root = spec.root_of(split)
        files = trees[root] if root in trees else trees.setdefault(
            root, _index_tree(root, builder.listings))
        resolver = _resolver(root)
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
    found = builder.finish(classes, "the lists")
    found.skipped = skipped
    return found


def _raster_classes(classes_file, values):
    """(class names, {label value: label id}) of a labelled raster: the classes file's rows
    (`name`, line i naming value i; or `value name` rows), else the values, sorted."""
    if not classes_file:
        ordered = sorted(set(values))
        return [str(value) for value in ordered], {value: i for i, value in enumerate(ordered)}
    rows = [line.strip() for _, line in _read_rows(classes_file)]
    pairs = [re.match(r"^(-?\d+)[\s,]+(\S.*)$", row) for row in rows]
    if all(pairs):
        table = [(int(pair.group(1)), pair.group(2).strip()) for pair in pairs]
    else:
        table = list(enumerate(rows))
    names = [name for _, name in table]
    numbers = [value for value, _ in table]
    if len(set(names)) != len(names) or len(set(numbers)) != len(numbers):
        raise UserError(f"Expected distinct class names and values in {classes_file}. "
                        f"Received: classes_file={classes_file!r}")
    index = {value: label for label, value in enumerate(numbers)}
    unknown = sorted(set(values) - set(index))
    if unknown:
        raise UserError(f"Expected the label raster's values to be classes of {classes_file} "
                        f"(rows `name` for values 0, 1, ... or `value name`), or ignored "
                        f"(ignore_value). Received: values {unknown[:_MAX_LISTED]} have no row")
    return names, index


def _raster(spec):
    """Patch items of `spec.raster` (under the root) labelled by `spec.label_raster`."""
    if spec.per_split_roots or not spec.raster or not spec.label_raster:
        raise UserError(f"The `raster` layout needs one root directory, `raster` (the time "
                        f"series under it) and `label_raster`. Received: root={spec.root!r}, "
                        f"raster={spec.raster!r}, label_raster={spec.label_raster!r}")
    path, raster_id = _Resolver(spec.root).resolve(spec.raster, "`raster`")
    if not os.path.exists(path):
        raise UserError(f"Expected `raster` to name a GeoTIFF stack or a folder of per-date "
                        f"GeoTIFFs under the root. Received: raster={spec.raster!r} "
                        f"({path} does not exist)")
    if not os.path.isfile(spec.label_raster):
        raise UserError(f"Label raster does not exist. "
                        f"Received: label_raster={spec.label_raster!r}")
    grid = raster_patches.time_series_grid(path)
    labels, nodata = raster_patches.read_label_raster(spec.label_raster, grid)
    ignored = [value for value in (spec.ignore_value, nodata) if value is not None]
    plan = raster_patches.plan_patches(
        labels, patch_size=spec.patch_size, stride=spec.patch_stride, rule=spec.label_rule,
        ignore_values=ignored, block_size=spec.block_size, test_fraction=spec.test_fraction,
        seed=spec.split_seed)
    classes, index = _raster_classes(
        spec.classes_file, [value for patches in plan.splits.values() for *_, value in patches])
    size = spec.patch_size
    splits = {split: sorted((Item(path=path, item_id=raster_patches.patch_item_id(
        raster_id, row, col), label=index[value], window=(row, col, size, size))
        for row, col, value in patches), key=lambda item: item.item_id)
        for split, patches in plan.splits.items()}
    counts = plan.counts
    logger.info("%s: %d patches on the grid; %d train, %d test; left out: %d with an ignored "
                "label, %d straddling train and test blocks", raster_id, counts["grid"],
                counts["train"], counts.get("test", 0), counts["ignored"],
                counts["straddling"])
    notes = {"patches": {**counts, "class_values": sorted(index, key=index.get),
                         "height": grid.height, "width": grid.width}}
    return _Found(classes, splits, notes=notes)


@dataclasses.dataclass(frozen=True)
class Layout:
    """One annotation format: its reader and what it needs from a `SourceSpec`.

    Attributes:
        read: callable (SourceSpec) -> `_Found`, every layout's reader has this shape.
        needs_lists: bool, the spec must name split lists.
        needs_split_dir: bool, the spec must name the official split files (recorded with
            the split number in the manifest).
        splits: tuple, the split names the format defines (ucf101, hmdb51); empty when the
            lists (or the per-split roots) name them.
        reads: tuple, the `SourceSpec` options (fields marked `option`) this reader reads;
            any other option set away from its default is an error, and these are recorded
            in the manifest's `source`.
        local_only: bool, the reader reads windows of one large file (a raster): a URL root
            (or option) is refused, since every window would download the file again.
    """

    read: object
    needs_lists: bool = False
    needs_split_dir: bool = False
    splits: tuple = ()
    reads: tuple = ()
    local_only: bool = False

    @property
    def multi_label_ok(self):
        return "multi_label" in self.reads


_LABEL_OPTIONS = ("multi_label", "num_classes")
# The one table of layouts: a new layout is a reader above and a row here.
LAYOUT_TABLE = {
    "folders": Layout(_folders),
    "ucf101": Layout(_ucf101, needs_split_dir=True, splits=("train", "test")),
    "hmdb51": Layout(_hmdb51, needs_split_dir=True, splits=("train", "test")),
    "csv": Layout(_csv, needs_lists=True, reads=_LABEL_OPTIONS),
    "list": Layout(_mmaction_list, needs_lists=True, reads=_LABEL_OPTIONS),
    "kinetics": Layout(_kinetics, needs_lists=True),
    "rawframes": Layout(_rawframes, needs_lists=True, reads=_LABEL_OPTIONS + (
        "filename_template", "start_index", "with_offset")),
    "raster": Layout(_raster, reads=(
        "raster", "label_raster", "patch_size", "patch_stride", "label_rule", "ignore_value",
        "block_size", "test_fraction", "split_seed"), local_only=True),
}
LAYOUTS = tuple(LAYOUT_TABLE)
MULTI_LABEL_LAYOUTS = tuple(name for name, layout in LAYOUT_TABLE.items()
                            if layout.multi_label_ok)


def _check_spec(spec, layout):
    """An option the layout does not read must keep its default (it would do nothing)."""
    for field in dataclasses.fields(SourceSpec):
        value = getattr(spec, field.name)
        if field.metadata.get("option") and field.name not in layout.reads \
                and value != field.default:
            users = [name for name, other in LAYOUT_TABLE.items() if field.name in other.reads]
            raise UserError(f"Expected `{field.name}` only with the layouts "
                            f"{', '.join(users)}. Received: layout={spec.layout!r}, "
                            f"{field.name}={value!r}")


def _check_local_paths(spec, layout):
    """A `local_only` layout's root and the paths among its options are no URLs."""
    named = [("root", root) for root in spec.roots()] + [
        (name, getattr(spec, name)) for name in layout.reads]
    for name, value in named:
        if isinstance(value, str) and storage.is_url(value):
            raise UserError(f"Expected a local (or mounted) root for the {spec.layout} layout: "
                            f"it reads windows of one large raster, and over a URL each "
                            f"window would download it again (mount the bucket, e.g. with "
                            f"gcsfuse). Received: {name}={value!r}")


def _check_split_roots(spec, layout):
    """A per-split root names exactly the splits the source has."""
    if not spec.per_split_roots:
        return
    names = list(layout.splits) or list(spec.lists or ())
    if names and sorted(names) != sorted(spec.root):
        raise UserError(f"Expected a root for each split of the source "
                        f"({', '.join(names)}) and no other. Received: root={spec.root!r}")


def _description(spec, layout):
    """The manifest's `source`: how the items were found, paths absolute."""
    description = {}
    for field in dataclasses.fields(SourceSpec):
        value = getattr(spec, field.name)
        recorded = field.name in ("layout", "root") or field.name in layout.reads \
            or value != field.default \
            or (layout.needs_split_dir and field.name in ("split_dir", "split"))
        if value is None or not recorded:
            continue
        if field.metadata.get("path"):
            value = ({key: _absolute(path) for key, path in value.items()}
                     if isinstance(value, dict) else _absolute(value))
        description[field.name] = value
    return description


def _absolute(path):
    return path if storage.is_url(path) else os.path.abspath(path)


def split_root(description, split):
    """The root directory of `split` in a manifest's `source` (one root, or one per split)."""
    root = description["root"]
    return root[split] if isinstance(root, dict) else root


def resolve_source(spec):
    """Labelled items per split for one dataset on disk.

    Args:
        spec: `SourceSpec`, where the items are and how the lists read.

    Returns:
        `Source` with classes, splits {name: [Item]} sorted by item id, `skipped`,
        `multi_label`, `absent` and `ignored` (files that are not media), and the
        `description` the manifest records.

    Raises:
        UserError: unknown layout, an option the layout does not read, missing root/split
            files, malformed rows, entries that resolve outside their root, unknown classes,
            or listed files that do not exist (unless `only_present`).
    """
    layout = LAYOUT_TABLE.get(spec.layout)
    if layout is None:
        raise UserError(f"Expected `layout` to be one of {list(LAYOUTS)}. "
                        f"Received: layout={spec.layout!r}")
    if layout.local_only:
        _check_local_paths(spec, layout)
    for root in spec.roots():
        _check_root(root)
    if spec.classes_file is not None:
        storage.check_url(spec.classes_file, "`classes_file`")
    if spec.classes_file is not None and not storage.isfile(spec.classes_file):
        raise UserError(f"Classes file does not exist. "
                        f"Received: classes_file={spec.classes_file!r}")
    _check_spec(spec, layout)
    _check_lists(spec.lists, spec.layout, required=layout.needs_lists)
    _check_split_roots(spec, layout)
    found = layout.read(spec)
    if not any(found.splits.values()):
        raise UserError(f"Expected the {spec.layout} source to name at least one item"
                        f"{' that exists' if found.absent else ''}. "
                        f"Received: root={spec.root!r}, lists={spec.lists or None}, "
                        f"split_dir={spec.split_dir!r}")
    return Source(classes=list(found.classes), splits=found.splits, skipped=found.skipped,
                  description={**_description(spec, layout), **found.notes},
                  multi_label=spec.multi_label,
                  absent=found.absent, ignored=found.ignored)
