"""Acquisition dates of an item's frames: from file names or a sidecar, as days since 1970.

Satellite image time series are irregular (a date every 5 days, fewer in cloudy months), so
frames are ordered and sampled by date, not by index. A date comes from:

- a sidecar: `<item>.dates.json` beside a `.npy` or `.tif` item (`field.npy.dates.json`
  or `field.dates.json`), or `dates.json` inside a frame folder: a JSON list of ISO dates
  (`"2024-03-01"`), one per frame, in the item's frame order; or the same names ending in
  `.csv`: one row per frame, the date in the first column (a header row is skipped);
- `date_pattern`: a regular expression searched in each frame file's name whose first group
  is a date `YYYYMMDD` or `YYYY-MM-DD` (e.g. `S2_(\\d{8})_` for `S2_20240301_T31.tif`).

A sidecar wins over the pattern. Dates are stored as int64 days since 1970-01-01 (the
acquisition's UTC date), the record's `image/date`. This module never imports TensorFlow.

Example:

>>> days_since_epoch("2024-03-01"), days_since_epoch("20240301")
(19783, 19783)
>>> dates_from_names(["S2_20240311.tif", "S2_20240301.tif"], r"S2_(\\d{8})").tolist()
[19793, 19783]
"""

import datetime
import json
import os
import re

import numpy as np

FOLDER_SIDECARS = ("dates.json", "dates.csv")
SIDECAR_SUFFIXES = (".dates.json", ".dates.csv")
_EPOCH = datetime.date(1970, 1, 1)
_DATE = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})$")


class DateError(ValueError):
    """A date that does not parse, or a sidecar / pattern that does not fit the item."""


def days_since_epoch(text):
    """Days from 1970-01-01 to the date `YYYY-MM-DD` or `YYYYMMDD` (a longer ISO timestamp
    is cut to its date)."""
    text = str(text).strip()[:10] if "T" in str(text) else str(text).strip()
    match = _DATE.match(text)
    try:
        if not match:
            raise ValueError
        date = datetime.date(*(int(group) for group in match.groups()))
    except ValueError:
        raise DateError(f"not a date YYYY-MM-DD or YYYYMMDD: {text!r}") from None
    return (date - _EPOCH).days


def iso_date(days):
    """The ISO date `YYYY-MM-DD` of `days` since 1970-01-01 (inverse of `days_since_epoch`)."""
    return (_EPOCH + datetime.timedelta(days=int(days))).isoformat()


def dates_from_names(names, pattern):
    """The date of each file name, from the first group of `pattern` searched in it.

    Raises:
        DateError: a name the pattern does not match, or a group that is not a date.
    """
    try:
        regex = re.compile(pattern)
    except re.error as error:
        raise DateError(f"date pattern {pattern!r} is not a regular expression ({error})") \
            from None
    if regex.groups < 1:
        raise DateError(f"date pattern {pattern!r} has no group (put the date in (...))")
    days = []
    for name in names:
        match = regex.search(os.path.basename(name))
        if match is None:
            raise DateError(f"date pattern {pattern!r} does not match {os.path.basename(name)!r}")
        days.append(days_since_epoch(match.group(1)))
    return np.asarray(days, dtype=np.int64)


def sidecar_path(path):
    """The dates sidecar of the item at `path` if one exists, else None."""
    if os.path.isdir(path):
        candidates = [os.path.join(path, name) for name in FOLDER_SIDECARS]
    else:
        stem = os.path.splitext(path)[0]
        candidates = [base + suffix for suffix in SIDECAR_SUFFIXES for base in (path, stem)]
    return next((candidate for candidate in candidates if os.path.isfile(candidate)), None)


def read_dates_sidecar(path, count):
    """The `count` dates a sidecar lists (int64 days since 1970).

    Raises:
        DateError: unreadable, not a list of dates, or not `count` of them.
    """
    if path.lower().endswith(".csv"):
        values = _csv_dates(path)
    else:
        try:
            with open(path, encoding="utf-8") as file:
                values = json.load(file)
        except (OSError, ValueError) as error:
            raise DateError(f"{os.path.basename(path)} is not readable JSON ({error})") \
                from None
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise DateError(f"{os.path.basename(path)} is not a list of ISO dates")
    if len(values) != count:
        raise DateError(f"{os.path.basename(path)} lists {len(values)} dates for {count} "
                        "frames")
    return np.asarray([days_since_epoch(value) for value in values], dtype=np.int64)


def _csv_dates(path):
    """The first column of a CSV's rows (a first row that is not a date is a header)."""
    import csv

    try:
        with open(path, encoding="utf-8", newline="") as file:
            cells = [row[0].strip() for row in csv.reader(file) if row and row[0].strip()]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DateError(f"{os.path.basename(path)} is not a readable CSV ({error})") from None
    if cells:
        try:
            days_since_epoch(cells[0])
        except DateError:
            cells = cells[1:]
    return cells


def item_dates(path, count, frame_names=None, date_pattern=None):
    """The dates of an item's `count` frames in their stored order, or None when undated.

    Args:
        path: str, the item (a frame folder, a `.npy` or a `.tif`).
        count: int, frames of the item.
        frame_names: the frame files' names (frame folders), for `date_pattern`.
        date_pattern: str or None, see the module docstring.

    Raises:
        DateError: a sidecar or pattern that does not give `count` dates.
    """
    sidecar = sidecar_path(path)
    if sidecar is not None:
        return read_dates_sidecar(sidecar, count)
    if date_pattern and frame_names is not None:
        return dates_from_names(frame_names, date_pattern)
    return None


def date_order(dates):
    """Frame indices in date order (ties keep their stored order)."""
    return np.argsort(np.asarray(dates, dtype=np.int64), kind="stable")
