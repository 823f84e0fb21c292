"""core.storage: the same answers for a local path and a URL (TensorFlow's in-process
ram:// file system stands in for gs://: the same tf.io.gfile calls)."""

import itertools
import os

import pytest

from core import storage
from core.errors import UserError

_URLS = itertools.count()


@pytest.fixture(params=["local", "url"])
def base(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "base")
    return f"ram://storage-test-{next(_URLS)}/base"


def test_is_url_and_join():
    assert storage.is_url("gs://b/x") and not storage.is_url("/data/x")
    assert storage.join("gs://b/", "x", "y.txt") == "gs://b/x/y.txt"
    assert storage.join("/data", "x") == os.path.join("/data", "x")
    # a URL part starts again, as an absolute one does in os.path.join (indexed records)
    assert storage.join("/data", "gs://b/r.tfrecord") == "gs://b/r.tfrecord"
    assert storage.join("gs://a/index", "gs://b/r.tfrecord") == "gs://b/r.tfrecord"
    assert storage.normpath("gs://b/x/../y/") == "gs://b/y"
    assert storage.basename("gs://b/x/y.txt") == "y.txt"
    assert storage.dirname("gs://b/x/y.txt") == "gs://b/x"


def test_files_and_directories_answer_alike(base):
    storage.write_bytes(storage.join(base, "a", "one.bin"), b"1")
    storage.write_bytes(storage.join(base, "a", "sub", "two.bin"), b"22")
    storage.write_json(storage.join(base, "b.json"), {"k": [1]})
    assert sorted(storage.listdir(base)) == ["a", "b.json"]
    assert storage.isdir(storage.join(base, "a")) and not storage.isfile(storage.join(base, "a"))
    assert storage.isfile(storage.join(base, "b.json"))
    assert storage.read_json(storage.join(base, "b.json")) == {"k": [1]}
    assert storage.getsize(storage.join(base, "a", "sub", "two.bin")) == 2
    walked = [(os.path.relpath(directory, base), sorted(dirs), sorted(files))
              for directory, dirs, files in storage.walk(base)]
    assert sorted(walked) == [(".", ["a"], ["b.json"]), ("a", ["sub"], ["one.bin"]),
                              (os.path.join("a", "sub"), [], ["two.bin"])]
    storage.remove(storage.join(base, "b.json"))
    storage.remove(storage.join(base, "b.json"))  # missing: quietly
    with pytest.raises(FileNotFoundError):
        storage.remove(storage.join(base, "b.json"), missing_ok=False)
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(storage.join(base, "b.json"))
    with pytest.raises(FileNotFoundError):
        storage.open_read(storage.join(base, "b.json"))
    storage.rmtree(storage.join(base, "a"))
    assert not storage.exists(storage.join(base, "a", "one.bin"))
    storage.rmtree(storage.join(base, "a"))  # missing: quietly


def test_an_atomic_write_that_fails_leaves_neither_file_nor_temporary(base):
    storage.makedirs(base)
    path = storage.join(base, "shard.bin")
    with pytest.raises(RuntimeError):
        with storage.atomic_write(path) as temporary:
            with storage.open_write(temporary) as file:
                file.write(b"half")
            raise RuntimeError("stopped")
    assert storage.listdir(base) == []
    with storage.atomic_write(path) as temporary:
        with storage.open_write(temporary) as file:
            file.write(b"whole")
    assert storage.listdir(base) == ["shard.bin"] and storage.read_bytes(path) == b"whole"


def test_local_copy_of_a_file_with_its_sidecar_and_of_a_folder(base):
    storage.write_bytes(storage.join(base, "v.npy"), b"array")
    storage.write_bytes(storage.join(base, "v.dates.json"), b"[]")
    storage.write_bytes(storage.join(base, "frames", "img_00001.jpg"), b"f1")
    storage.write_bytes(storage.join(base, "frames", "deeper", "x.jpg"), b"f2")
    siblings = [storage.join(base, "v.dates.json"), storage.join(base, "v.dates.csv")]
    with storage.local_copy(storage.join(base, "v.npy"), siblings=siblings) as local:
        assert not storage.is_url(local)
        with open(local, "rb") as file:
            assert file.read() == b"array"
        if storage.is_url(base):  # beside it, under the same name: dates.sidecar_path finds it
            assert sorted(os.listdir(os.path.dirname(local))) == ["v.dates.json", "v.npy"]
    with storage.local_copy(storage.join(base, "frames")) as local:
        found = sorted(os.path.relpath(os.path.join(directory, name), local)
                       for directory, _, names in os.walk(local) for name in names)
        assert found == [os.path.join("deeper", "x.jpg"), "img_00001.jpg"]
    if storage.is_url(base):
        assert not os.path.exists(local)  # the temporary copy is gone


@pytest.mark.parametrize("url", ["s3://bucket/x", "nosuch://bucket/x"])
def test_a_scheme_no_file_system_handles_is_a_user_error(url):
    with pytest.raises(UserError, match=r"no file system handles \w+://\. Received: "):
        storage.check_url(url, "--root")


def test_a_local_path_is_never_checked_as_a_url(tmp_path):
    storage.check_url(str(tmp_path / "not-yet"), "--out")  # nothing to reach
