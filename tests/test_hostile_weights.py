"""Weight files that would spend memory before they are checked: each is refused with one
line, and the reader's peak memory stays far below what the file asks for (the readers run
in a subprocess under RLIMIT_AS, without TensorFlow, except the .keras/.weights.h5 case)."""

import io
import pickle
import struct
import sys
import textwrap
import types
import zipfile

import h5py
import numpy as np
import pytest

from hostile_fixtures import PEAK_MB, REPO, assert_one_error_line, run_code

MEMORY_LIMIT_MB = 500
# Imports models.torch_checkpoint and models.weights_file_checks without models/__init__.py
# (which loads Keras and TensorFlow, 560 MB by themselves), then reads one file.
READER = """
    import sys, types, resource
    sys.path.insert(0, {repo!r})
    package = types.ModuleType("models")
    package.__path__ = [{repo!r} + "/models"]
    sys.modules["models"] = package
    from core.errors import UserError
    {body}
    try:
        read()
    except UserError as error:
        print("peak_mb", {peak})
        print(f"error: {{error}}", file=sys.stderr)
        sys.exit(2)
    print("read it")
"""


def run_reader(body, path, memory_mb=MEMORY_LIMIT_MB):
    code = textwrap.dedent(READER).format(
        repo=REPO, peak=PEAK_MB, body=textwrap.dedent(body).replace("PATH", repr(str(path))))
    return run_code(code, memory_mb=memory_mb, timeout=120)


def peak_mb(result):
    return int(result.stdout.split("peak_mb")[1].split()[0])


# --- .pth files written like torch.save does, without torch -----------------------------


class FakeStorage:
    """What torch.save pickles for a storage: a persistent id naming its type and key."""

    def __init__(self, key, numel, type_name="FloatStorage"):
        self.key, self.numel, self.type_name = key, numel, type_name


class FakeTensor:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, tuple(size), tuple(stride), False, {})

    def __reduce__(self):
        return (REBUILD, self.args)


def _fake_torch():
    """`torch._utils._rebuild_tensor_v2` and `torch.FloatStorage` as picklable globals."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called when pickling")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils = utils
    for name in ("FloatStorage", "LongStorage"):
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    return torch, utils


TORCH, TORCH_UTILS = _fake_torch()
REBUILD = TORCH_UTILS._rebuild_tensor_v2


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, FakeStorage):
            return ("storage", getattr(TORCH, obj.type_name), obj.key, "cpu", obj.numel)
        return None


def state_dict_pickle(tensors):
    saved = {name: sys.modules.get(name) for name in ("torch", "torch._utils")}
    sys.modules.update({"torch": TORCH, "torch._utils": TORCH_UTILS})
    try:
        buffer = io.BytesIO()
        _Pickler(buffer, protocol=2).dump(dict(tensors))
        return buffer.getvalue()
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def write_pth(path, tensors, records, compression=zipfile.ZIP_STORED):
    """A zip-format .pth: `records` maps storage key -> bytes (or an iterable of chunks)."""
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        archive.writestr("archive/data.pkl", state_dict_pickle(tensors))
        archive.writestr("archive/byteorder", "little")
        for key, data in records.items():
            info = zipfile.ZipInfo(f"archive/data/{key}")
            info.compress_type = compression
            with archive.open(info, "w", force_zip64=True) as member:
                for chunk in ([data] if isinstance(data, bytes) else data):
                    member.write(chunk)
    return str(path)


READ_PTH = """
    from models.torch_checkpoint import read_torch_state_dict
    def read():
        tensors = read_torch_state_dict(PATH)
        print({k: v.shape for k, v in tensors.items()})
"""


def one_float():
    return np.float32(1.5).tobytes()


@pytest.mark.slow
@pytest.mark.parametrize("side", [20000, 100000])
def test_a_zero_stride_view_of_one_float_is_refused_below_500_mb(tmp_path, side):
    """The issue's 522-byte file: one stored float viewed as side x side floats."""
    storage = FakeStorage("0", 1)
    path = write_pth(tmp_path / "zero_stride.pth",
                     {"fc.weight": FakeTensor(storage, 0, (side, side), (0, 0))}, {"0": one_float()})
    result = run_reader(READ_PTH, path)
    assert_one_error_line(result, "zero_stride.pth", "fc.weight",
                          "repeating the 1 elements of its storage")
    assert peak_mb(result) < MEMORY_LIMIT_MB


@pytest.mark.slow
@pytest.mark.parametrize("case", ["negative_stride", "offset_past_the_end", "stride_past_the_end",
                                  "overlapping_rows", "size_not_a_number"])
def test_a_layout_that_does_not_fit_its_storage_is_refused(tmp_path, case):
    storage = FakeStorage("0", 12)
    size, stride, offset = {
        "negative_stride": ((3, 4), (4, -1), 3),
        "offset_past_the_end": ((3, 4), (4, 1), 10),
        "stride_past_the_end": ((3, 4), (40, 1), 0),
        "overlapping_rows": ((12, 12), (1, 1), 0),
        "size_not_a_number": (("3", 4), (4, 1), 0),
    }[case]
    path = write_pth(tmp_path / f"{case}.pth", {"w": FakeTensor(storage, offset, size, stride)},
                     {"0": np.zeros(12, np.float32).tobytes()})
    result = run_reader(READ_PTH, path)
    assert_one_error_line(result, f"{case}.pth", "'w'")


@pytest.mark.slow
@pytest.mark.parametrize("storage, size", [(5, (3,)), ("0", (3,)), (None, 3)],
                         ids=["storage_an_int", "storage_a_string", "size_an_int"])
def test_an_allowed_rebuild_call_with_wrong_argument_types_is_one_line(tmp_path, storage, size):
    tensor = FakeTensor(FakeStorage("0", 3), 0, (3,), (1,))
    tensor.args = (tensor.args[0] if storage is None else storage, 0, size, (1,), False, {})
    path = write_pth(tmp_path / "types.pth", {"w": tensor}, {"0": np.zeros(3, np.float32).tobytes()})
    result = run_reader(READ_PTH, path)
    assert_one_error_line(result, "types.pth", "cannot read archive/data.pkl")


@pytest.mark.slow
@pytest.mark.parametrize("numel_in_pickle", [1, 1 << 27], ids=["lying_count", "true_count"])
def test_a_zip_bomb_record_is_refused_before_inflating(tmp_path, numel_in_pickle):
    """A ~0.5 MB .pth whose deflated record inflates to 512 MiB of zeros."""
    storage = FakeStorage("0", numel_in_pickle)
    chunks = (bytes(1 << 24) for _ in range(32))  # 32 x 16 MiB
    path = write_pth(tmp_path / "bomb.pth",
                     {"w": FakeTensor(storage, 0, (numel_in_pickle,), (1,))}, {"0": chunks},
                     compression=zipfile.ZIP_DEFLATED)
    result = run_reader(READ_PTH, path)
    line = assert_one_error_line(result, "bomb.pth", "archive/data/0")
    assert ("zip bomb" in line) == (numel_in_pickle > 1), line
    assert peak_mb(result) < 200


@pytest.mark.slow
@pytest.mark.parametrize("case", ["encrypted", "unknown_compression"])
def test_an_encrypted_or_oddly_compressed_record_is_one_line(tmp_path, case):
    storage = FakeStorage("0", 3)
    path = write_pth(tmp_path / f"{case}.pth", {"w": FakeTensor(storage, 0, (3,), (1,))},
                     {"0": np.zeros(3, np.float32).tobytes()})
    data = bytearray(open(path, "rb").read())
    # Patch the flag (bit 0) or the method (99: AES) in both the local and central headers.
    for signature, flag_at, method_at in ((b"PK\x03\x04", 6, 8), (b"PK\x01\x02", 8, 10)):
        start = 0
        while (start := data.find(signature, start)) != -1:
            name_length = struct.unpack_from("<H", data, start + (26 if signature == b"PK\x03\x04" else 28))[0]
            name_at = start + (30 if signature == b"PK\x03\x04" else 46)
            if bytes(data[name_at:name_at + name_length]) == b"archive/data/0":
                if case == "encrypted":
                    data[start + flag_at] |= 1
                else:
                    struct.pack_into("<H", data, start + method_at, 99)
            start += 4
    open(path, "wb").write(bytes(data))
    result = run_reader(READ_PTH, path)
    assert_one_error_line(result, f"{case}.pth", "archive/data/0")


@pytest.mark.slow
def test_a_legacy_storage_count_past_the_end_of_the_file_is_refused_before_reading(tmp_path):
    storage = FakeStorage("0", 1 << 40)
    header = b"".join(pickle.dumps(v, protocol=2) for v in (
        0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}))
    body = state_dict_pickle({"w": FakeTensor(storage, 0, (1 << 40,), (1,))})
    path = tmp_path / "legacy.pth"
    path.write_bytes(header + body + pickle.dumps(["0"], protocol=2)
                     + struct.pack("<q", 1 << 40) + bytes(16))
    result = run_reader(READ_PTH, path)
    assert_one_error_line(result, "legacy.pth", "storage '0'")
    assert peak_mb(result) < 200


# --- Keras weights ----------------------------------------------------------------------


def declare_huge_dataset(path, key, shape=(1 << 30,)):
    """A few-kB .weights.h5 whose `key` declares `shape` float32 (4 GiB), never written:
    reading it returns the fill value, all of it."""
    with h5py.File(path, "w") as file:
        file.create_dataset(key, shape=shape, dtype="float32", chunks=(1 << 20,),
                            compression="gzip")


@pytest.mark.slow
def test_an_h5_dataset_declaring_4_gib_is_compared_before_it_is_read(tmp_path):
    path = tmp_path / "huge.weights.h5"
    declare_huge_dataset(path, "layers/dense/vars/0")
    assert path.stat().st_size < 1 << 20
    result = run_reader("""
        import h5py
        from models.weights_file_checks import dataset_value
        def read():
            with h5py.File(PATH, "r") as file:
                value = dataset_value(file["layers/dense/vars/0"], (4, 3), PATH, "vars/0")
                print("stand-in", value.shape, value.nbytes)
                raise UserError(f"{PATH}: shape {value.shape}, model expects (4, 3)")
    """, path)
    assert_one_error_line(result, "huge.weights.h5", "(1073741824,)")
    assert "stand-in (1073741824,)" in result.stdout
    assert peak_mb(result) < MEMORY_LIMIT_MB


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["weights_h5", "keras_archive"])
def test_load_weights_refuses_a_huge_dataset_without_reading_it(tmp_path, kind):
    """Through models.pretrained.load_weights, as model.weights does (TensorFlow loaded, so
    the bound is on the memory the load adds, not on the process)."""
    h5 = tmp_path / "w.weights.h5"
    result = run_code(f"""
        import resource, sys, zipfile
        import h5py, keras
        sys.path.insert(0, {REPO!r})
        from core.errors import UserError
        from models.pretrained import load_weights
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="dense")])
        model.save_weights({str(h5)!r})
        with h5py.File({str(h5)!r}, "a") as file:
            del file["layers/dense/vars/0"]
            file.create_dataset("layers/dense/vars/0", shape=(1 << 30,), dtype="float32",
                                chunks=(1 << 20,), compression="gzip")
        path = {str(h5)!r}
        if {kind!r} == "keras_archive":
            path = {str(tmp_path / "m.keras")!r}
            with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                archive.writestr("metadata.json", "{{}}")
                archive.writestr("config.json", "{{}}")
                archive.write({str(h5)!r}, "model.weights.h5")
        before = {PEAK_MB}
        try:
            load_weights(model, path)
        except UserError as error:
            after = {PEAK_MB}
            print("added_mb", after - before)
            print(f"error: {{error}}", file=sys.stderr)
            sys.exit(2)
    """, timeout=300)
    assert_one_error_line(result, "first mismatch", "(1073741824,)")
    assert int(result.stdout.split("added_mb")[1].split()[0]) < 100
