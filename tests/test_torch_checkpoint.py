"""read_torch_state_dict against files written by real torch (tests/data/torchvision_tiny,
made by bench/make_torchvision_fixtures.py), and the files it must refuse."""

import io
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from models.torch_checkpoint import LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION, CheckpointError, read_torch_state_dict

DATA = Path(__file__).parent / "data" / "torchvision_tiny"
FORMATS = ("", "_legacy")


@pytest.fixture(scope="module")
def expected():
    return np.load(DATA / "logits.npz")


@pytest.mark.parametrize("suffix", FORMATS)
def test_offsets_strides_and_dtypes_equal_torch(suffix, expected):
    tensors = read_torch_state_dict(DATA / f"layouts{suffix}.pth")
    names = ["transposed", "offset_row", "strided", "half", "double", "int64", "scalar"]
    assert list(tensors) == names
    for name in names:
        reference = expected[f"layout_{name}"]
        assert tensors[name].dtype == reference.dtype, name
        assert tensors[name].shape == reference.shape, name
        np.testing.assert_array_equal(tensors[name], reference)
        assert tensors[name].flags.writeable and tensors[name].flags.c_contiguous


@pytest.mark.parametrize("suffix", FORMATS)
def test_wrapped_dataparallel_state_dict_is_unwrapped(suffix, expected):
    tensors = read_torch_state_dict(DATA / f"wrapped{suffix}.pth")
    assert "transposed" in tensors and not any(k.startswith("module.") for k in tensors)
    np.testing.assert_array_equal(tensors["strided"], expected["layout_strided"])


@pytest.mark.parametrize("arch", ["r3d_18", "mc3_18", "r2plus1d_18"])
def test_zip_and_legacy_formats_read_the_same_tensors(arch):
    zipped = read_torch_state_dict(DATA / f"{arch}.pth")
    legacy = read_torch_state_dict(DATA / f"{arch}_legacy.pth")
    assert list(zipped) == list(legacy)
    assert zipped["stem.0.weight"].ndim == 5 and zipped["stem.0.weight"].shape[1] == 3
    assert zipped["stem.1.num_batches_tracked"].dtype == np.int64
    for key in zipped:
        np.testing.assert_array_equal(zipped[key], legacy[key])


def _truncated(tmp_path, name, fraction):
    data = (DATA / name).read_bytes()
    path = tmp_path / f"cut_{name}"
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda tmp: _truncated(tmp, "r3d_18.pth", 0.5), "truncated or corrupt"),
        (lambda tmp: _truncated(tmp, "r3d_18_legacy.pth", 0.5), "truncated"),
        (lambda tmp: _truncated(tmp, "r3d_18_legacy.pth", 0.01), "truncated or corrupt"),
        (lambda tmp: _write(tmp, np.random.default_rng(0).bytes(4096)), "not a PyTorch checkpoint"),
        (lambda tmp: _write(tmp, b""), "not a PyTorch checkpoint"),
        (lambda tmp: _write(tmp, pickle.dumps([1, 2, 3], protocol=2)), "not a torch checkpoint"),
        (lambda tmp: _zip(tmp, {"notes.txt": b"hello"}), "expected one `<name>/data.pkl`"),
        (lambda tmp: _legacy(tmp, [1.5, "x"]), "expected a state_dict"),
        (lambda tmp: tmp / "missing.pth", "cannot open"),
    ],
)
def test_unreadable_files_raise_one_line_errors_naming_the_file(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(CheckpointError, match=message) as info:
        read_torch_state_dict(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def _write(tmp_path, data, name="file.pth"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _zip(tmp_path, entries):
    path = tmp_path / "archive.pth"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def _legacy(tmp_path, obj_pickle):
    if not isinstance(obj_pickle, bytes):
        obj_pickle = pickle.dumps(obj_pickle, protocol=2)
    header = b"".join(
        pickle.dumps(v, protocol=2)
        for v in (LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION, {"little_endian": True})
    )
    return _write(tmp_path, header + obj_pickle + pickle.dumps([], protocol=2), "legacy.pth")


class _RunsCode:
    """Pickles to `os.system(command)`: what a malicious checkpoint does on plain pickle.load."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _hand_written_os_system(command):
    # GLOBAL 'os system', the argument, TUPLE1, REDUCE: the classic pickle exploit.
    encoded = command.encode()
    return b"\x80\x02cos\nsystem\nX" + len(encoded).to_bytes(4, "little") + encoded + b"\x85R."


@pytest.mark.parametrize("container", ["legacy", "zip", "bare"])
@pytest.mark.parametrize("writer", ["pickle_module", "by_hand"])
def test_a_pickle_that_imports_os_is_refused_without_running(tmp_path, container, writer):
    marker = tmp_path / "ran"
    command = f"touch {marker}"
    evil = pickle.dumps(_RunsCode(command), protocol=2) if writer == "pickle_module" else _hand_written_os_system(command)
    if container == "legacy":
        path = _legacy(tmp_path, evil)
    elif container == "zip":
        path = _zip(tmp_path, {"archive/data.pkl": evil, "archive/byteorder": b"little"})
    else:
        path = _write(tmp_path, evil)
    with pytest.raises(CheckpointError, match=r"refused to load `(os|posix)\.system`") as info:
        read_torch_state_dict(path)
    assert str(path) in str(info.value)
    assert not marker.exists()


def test_a_legacy_pickle_nesting_a_forbidden_global_in_a_state_dict_is_refused(tmp_path):
    # A dict whose value is a class outside the allowlist (harmless here, refused anyway).
    evil = pickle.dumps({"fc.weight": io.BytesIO}, protocol=2)
    with pytest.raises(CheckpointError, match=r"refused to load `_io\.BytesIO`"):
        read_torch_state_dict(_legacy(tmp_path, evil))


def test_a_storage_record_shorter_than_its_storage_is_refused(tmp_path):
    with zipfile.ZipFile(DATA / "layouts.pth") as source:
        entries = {info.filename: source.read(info.filename) for info in source.infolist()}
    # Storage 0 (the 24 floats of `base`) cut to 4 floats: refused by its size, before the
    # tensors are laid out (tests/test_hostile_weights.py covers layouts past a storage).
    prefix = "layouts/"
    entries[prefix + "data/0"] = entries[prefix + "data/0"][:16]
    path = _zip(tmp_path, entries)
    with pytest.raises(CheckpointError, match="data/0 holds 16 bytes where its tensor "
                                              "storage needs 96"):
        read_torch_state_dict(path)
