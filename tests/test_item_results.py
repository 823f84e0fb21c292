"""data_prep.item_results: an item's decode result survives its file unchanged, and a file
that is cut short or not ours is refused (the item is decoded again)."""

import numpy as np
import pytest

from data_prep.item_results import (MAGIC, ItemFileError, read_item_result,
                                    write_item_result)
from data_prep.sequence_records import SourceInfo

V2 = {"ok": True, "frames_available": 7, "band": 2, "dtype": "uint16",
      "encoded": [b"\x00\x01frame0", b"", b"frame2"], "encoding": "png", "frame_shape": (4, 5, 2),
      "frame_rate": 12.5, "source": SourceInfo(8, 10, 25.0, 7), "masks": [b"m0", b"m1", b"m2"],
      "valid_fraction": [1.0, 0.5, 0.25], "dates": [18000, 18010, 18020],
      "band_names": ["B4", "B8"], "nodata": np.float64(-9999.0), "geo": {"crs": "EPSG:4326"},
      "statistics": {"bands": 2, "sum": [1.5, 2.5]}}
V1_ENCODED = {"ok": True, "frames_available": 30, "band": 3,
              "encoded": [[b"a", b"bb"], [b"ccc", b"d"]]}
V1_RAW = {"ok": True, "frames_available": 9, "band": 1,
          "clips": np.arange(2 * 3 * 4 * 4, dtype=np.uint8).reshape(2, 3, 4, 4, 1)}
SKIPPED = {"ok": False, "reason": "cannot open: moov atom not found"}


@pytest.mark.parametrize("result", [V2, V1_ENCODED, V1_RAW, SKIPPED],
                         ids=["v2", "v1-encoded", "v1-raw", "skipped"])
def test_a_result_reads_back_as_written(tmp_path, result):
    path = str(tmp_path / "000001.item")
    write_item_result(path, result)
    back = read_item_result(path)
    assert sorted(back) == sorted(result)
    for key, value in result.items():
        if isinstance(value, np.ndarray):
            assert back[key].dtype == value.dtype and np.array_equal(back[key], value)
        else:
            assert back[key] == value, key
    assert [name for name in tmp_path.iterdir() if name.name.startswith(".tmp-")] == []


@pytest.mark.parametrize("damage", ["cut", "magic", "header", "blob-index"])
def test_a_damaged_file_is_refused(tmp_path, damage):
    path = tmp_path / "000000.item"
    write_item_result(str(path), V2)
    data = path.read_bytes()
    if damage == "cut":
        data = data[:-3]
    elif damage == "magic":
        data = b"PK" + data[2:]
    elif damage == "header":
        data = data[:len(MAGIC) + 8] + b"{not json" + data[len(MAGIC) + 17:]
    else:  # a header that names a blob the file does not hold
        data = data.replace(b'"flat": [0, 1, 2]', b'"flat": [0, 1, 9]')
    path.write_bytes(data)
    with pytest.raises(ItemFileError):
        read_item_result(str(path))
