"""Acquisition dates: parsed from names or sidecars, as days since 1970, in date order."""

import json

import numpy as np
import pytest

from data_prep.dates import (DateError, date_order, dates_from_names, days_since_epoch,
                             item_dates, iso_date)


@pytest.mark.parametrize("text,days", [("1970-01-01", 0), ("19700102", 1),
                                       ("2024-03-01", 19783), ("2024-03-01T10:30:00Z", 19783)])
def test_days_since_epoch(text, days):
    assert days_since_epoch(text) == days
    assert days_since_epoch(iso_date(days)) == days


@pytest.mark.parametrize("text", ["2024-13-01", "01/03/2024", "", "2024031"])
def test_bad_dates_are_named(text):
    with pytest.raises(DateError, match="not a date"):
        days_since_epoch(text)


def test_dates_from_names_use_the_first_group():
    names = ["T31_20240311_B.tif", "T31_2024-03-01_B.tif"]
    assert dates_from_names(names, r"T31_([\d-]{8,10})_").tolist() == [19793, 19783]


@pytest.mark.parametrize("pattern,match", [(r"T31_\d{8}", "no group"),
                                           (r"X_(\d{8})", "does not match"),
                                           (r"T31_(\d{8}", "not a regular expression")])
def test_a_pattern_that_does_not_fit_is_named(pattern, match):
    with pytest.raises(DateError, match=match):
        dates_from_names(["T31_20240311_B.tif"], pattern)


@pytest.mark.parametrize("sidecar", ["field.npy.dates.json", "field.dates.json"])
def test_an_items_sidecar_wins_over_the_pattern(tmp_path, sidecar):
    item = tmp_path / "field.npy"
    item.write_bytes(b"")
    (tmp_path / sidecar).write_text(json.dumps(["2024-03-05", "2024-03-01"]))
    dates = item_dates(str(item), 2, ["a_20200101", "a_20200102"], r"a_(\d{8})")
    assert dates.tolist() == [19787, 19783]
    assert date_order(dates).tolist() == [1, 0]


def test_a_folders_sidecar_must_list_one_date_per_frame(tmp_path):
    (tmp_path / "dates.json").write_text(json.dumps(["2024-03-05"]))
    with pytest.raises(DateError, match="1 dates for 2 frames"):
        item_dates(str(tmp_path), 2)


def test_an_undated_item_has_no_dates(tmp_path):
    assert item_dates(str(tmp_path), 3, ["a.png", "b.png", "c.png"]) is None


def test_date_order_keeps_ties_in_stored_order():
    assert date_order(np.array([5, 1, 5, 1])).tolist() == [1, 3, 0, 2]


def test_a_csv_sidecar_gives_the_first_column_after_its_header(tmp_path):
    (tmp_path / "dates.csv").write_text("date,cloud\r\n2024-03-05,0.1\r\n20240301,0.9\r\n")
    assert item_dates(str(tmp_path), 2).tolist() == [19787, 19783]
