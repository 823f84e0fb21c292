"""`read_torch_state_dict`: the tensors of a PyTorch `.pth` state_dict, read without torch.

A `.pth` file is a pickle, and unpickling runs whatever code the file names, so this never
calls `pickle.load`: `_StateDictUnpickler.find_class` resolves only the few names a
state_dict needs (`collections.OrderedDict`, torch's tensor rebuild functions and storage
types) and refuses every other one before anything is called. Tensors become numpy arrays
built from their storage, offset, size and stride.

Two container formats exist, told apart by their first bytes:

- zip (torch.save's default since 1.6): `<name>/data.pkl` is the pickle, each storage is a
  raw little-endian record `<name>/data/<key>`, `<name>/byteorder` says the byte order.
- legacy (before 1.6, or `_use_new_zipfile_serialization=False`): five concatenated items,
  a pickled magic number, a pickled protocol version, a pickled dict of system info, the
  state_dict pickle, a pickled list of storage keys, then each storage as an int64 element
  count and its raw bytes, in that key order.
"""

import collections
import io
import math
import os
import pickle
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from core.errors import UserError

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001
ZIP_SIGNATURE = b"PK\x03\x04"
PICKLE_PROTOCOL_2 = b"\x80\x02"

# torch storage type name -> numpy dtype of its elements ("bfloat16" has none in numpy).
STORAGE_DTYPES = {
    "FloatStorage": np.dtype("float32"),
    "DoubleStorage": np.dtype("float64"),
    "HalfStorage": np.dtype("float16"),
    "BFloat16Storage": "bfloat16",
    "LongStorage": np.dtype("int64"),
    "IntStorage": np.dtype("int32"),
    "ShortStorage": np.dtype("int16"),
    "CharStorage": np.dtype("int8"),
    "ByteStorage": np.dtype("uint8"),
    "BoolStorage": np.dtype("bool"),
}
# A state_dict pickle holds names and shapes, never tensor data: a few MB at most.
MAX_PICKLE_BYTES = 64 << 20
# torch and Keras store their members uncompressed; a deflated one (re-zipped by hand) may
# shrink a little, never like a run of zeros does.
MAX_INFLATION = 50
# Keys under which training scripts commonly wrap a state_dict.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")


class CheckpointError(UserError):
    """A `.pth` file that is not a readable state_dict; the message is one line naming it."""


class _StorageType:
    """What the pickle's `torch.<X>Storage` global resolves to: just the element dtype."""

    def __init__(self, name):
        self.name = name
        self.dtype = STORAGE_DTYPES[name]


class _Storage:
    """One storage, filled with its flat numpy data once the container has been read."""

    def __init__(self, key, storage_type, numel):
        self.key = key
        self.storage_type = storage_type
        self.numel = numel
        self.data = None


class _TensorRef:
    """A tensor as the pickle describes it, turned into an array by `_materialise`."""

    def __init__(self, storage, offset, size, stride):
        # Called by the pickle with whatever it holds: a wrong type is a corrupt file (the
        # TypeError becomes a CheckpointError in `_unpickle`), not a traceback later.
        if not isinstance(storage, _Storage):
            raise TypeError(f"a tensor whose storage is a {type(storage).__name__}")
        self.storage = storage
        self.offset = offset
        self.size = tuple(size)
        self.stride = tuple(stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


def _rebuild_parameter_with_state(data, requires_grad=False, backward_hooks=None, state=None):
    return data


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
}


class _StateDictUnpickler(pickle.Unpickler):
    """Unpickles a state_dict, resolving only allowlisted globals; storages come from
    `load_storage(pid)`."""

    def __init__(self, file, path, load_storage):
        super().__init__(file)
        self._path = path
        self._load_storage = load_storage

    def find_class(self, module, name):
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[(module, name)]
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise CheckpointError(
            f"{self._path}: refused to load `{module}.{name}`: a state_dict pickle may only name "
            "collections.OrderedDict, torch's tensor rebuild functions and storage types "
            "(a checkpoint naming anything else could run code)"
        )

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage":
            raise CheckpointError(f"{self._path}: unknown persistent id in the pickle. Received: pid={pid!r}")
        storage_type = pid[1]
        if not isinstance(storage_type, _StorageType):
            raise CheckpointError(f"{self._path}: a storage without a torch storage type. Received: pid={pid!r}")
        return self._load_storage(pid)


def _decode(raw, dtype, byteorder):
    if dtype == "bfloat16":
        # bfloat16 is the upper half of a float32.
        halves = np.frombuffer(raw, dtype=np.dtype("uint16").newbyteorder(byteorder))
        return (halves.astype(np.uint32) << 16).view(np.float32)
    return np.frombuffer(raw, dtype=dtype.newbyteorder(byteorder)).astype(dtype)


def _is_index(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _check_layout(ref, path, key, storage_numel):
    """Refuses a layout that reaches outside its storage or makes more elements than the
    storage holds (a zero or repeating stride: 522 bytes viewed as 100000 x 100000 floats
    would allocate 37 GiB); checked from the numbers alone, before any memory is spent."""
    size, stride, offset = ref.size, ref.stride, ref.offset
    if not (len(size) == len(stride) and _is_index(offset) and offset >= 0
            and all(_is_index(n) and n >= 0 for n in size)
            and all(_is_index(s) and s >= 0 for s in stride)):
        raise CheckpointError(
            f"{path}: tensor {key!r} has an invalid layout. Received: size={size}, "
            f"stride={stride}, offset={offset}"[:400]
        )
    numel = math.prod(size)
    if numel == 0:
        return
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= storage_numel:
        raise CheckpointError(
            f"{path}: tensor {key!r} reaches element {last} of a storage of {storage_numel} "
            "(a truncated or corrupt file)"
        )
    if numel > storage_numel:
        raise CheckpointError(
            f"{path}: tensor {key!r} of size {size} ({numel} elements) is a view repeating "
            f"the {storage_numel} elements of its storage (stride {stride}); a state_dict "
            "stores each element once. Received: a file that would need "
            f"{numel * _itemsize(ref.storage.storage_type.dtype)} bytes in memory"[:400]
        )


def _itemsize(dtype):
    return 2 if dtype == "bfloat16" else dtype.itemsize


def _materialise(ref, path, key):
    data = ref.storage.data
    if data is None:
        raise CheckpointError(f"{path}: the data of tensor {key!r} (storage {ref.storage.key!r}) is missing")
    _check_layout(ref, path, key, data.size)
    size, stride, offset = ref.size, ref.stride, ref.offset
    flat = data[offset:]
    itemsize = flat.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(flat, shape=size, strides=[s * itemsize for s in stride], writeable=False)
    return np.array(view, order="C")


def _select_state_dict(obj, path):
    """The dict of tensors: the object itself, or under one of `WRAPPER_KEYS`."""
    if isinstance(obj, dict):
        if obj and all(isinstance(v, _TensorRef) for v in obj.values()):
            return obj
        for key in WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, _TensorRef) for v in inner.values()):
                return inner
    raise CheckpointError(
        f"{path}: expected a state_dict (a dict of tensor names to tensors, possibly under "
        f"{list(WRAPPER_KEYS)}). Received: a {type(obj).__name__}"
        + (f" with keys {list(obj)[:5]}" if isinstance(obj, dict) else "")
    )


def _unpickle(data, path, load_storage, what):
    try:
        return _StateDictUnpickler(io.BytesIO(data) if isinstance(data, bytes) else data, path, load_storage).load()
    except CheckpointError:
        raise
    except Exception as error:  # any malformed pickle: EOFError, UnpicklingError, TypeError...
        raise CheckpointError(f"{path}: cannot read {what} (a truncated or corrupt file): {error}") from None


def _storage_bytes(numel, storage_type, path, key):
    if not _is_index(numel) or numel < 0:
        raise CheckpointError(f"{path}: storage {key!r} has an invalid element count. "
                              f"Received: numel={numel!r}"[:300])
    return numel * _itemsize(storage_type.dtype)


def check_zip_member(info, path):
    """Refuses a zip member (a `zipfile.ZipInfo`) that torch or Keras never write, from its
    header alone: encrypted, compressed by another method than deflate, or inflating far
    past its stored size (a zip bomb)."""
    name = info.filename
    if info.flag_bits & 0x1:
        raise CheckpointError(f"{path}: {name} is encrypted; torch and Keras files are not")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise CheckpointError(f"{path}: {name} uses zip compression method "
                              f"{info.compress_type}, which torch and Keras never write")
    if info.compress_type != zipfile.ZIP_STORED and \
            info.file_size > MAX_INFLATION * max(info.compress_size, 1) + (1 << 20):
        raise CheckpointError(f"{path}: {name} inflates {info.compress_size} bytes to "
                              f"{info.file_size} (a zip bomb?); torch and Keras store theirs")


def _read_member(archive, info, path, expected, exact=True):
    """The bytes of one zip member, compared to what the pickle says it holds before any is
    inflated: a record that would inflate past `expected` bytes (a zip bomb), or far past
    its compressed size, or is encrypted or compressed in a way torch never writes, is
    refused."""
    name = info.filename
    if exact and info.file_size != expected:
        raise CheckpointError(f"{path}: {name} holds {info.file_size} bytes where its tensor "
                              f"storage needs {expected} (a corrupt or hostile file)")
    if info.file_size > expected:
        raise CheckpointError(f"{path}: {name} declares {info.file_size} bytes, more than "
                              f"{expected} (a corrupt or hostile file)")
    check_zip_member(info, path)
    try:
        with archive.open(info) as member:
            data = member.read(expected)  # zipfile stops at file_size and checks the CRC
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError,
            zlib.error) as error:
        raise CheckpointError(f"{path}: cannot read {name} (a truncated or corrupt file): "
                              f"{error}"[:400]) from None
    if exact and len(data) != expected:
        raise CheckpointError(f"{path}: {name} ends after {len(data)} of {expected} bytes "
                              "(a truncated file)")
    return data


def _read_zip(path):
    try:
        archive = zipfile.ZipFile(path)
        names = archive.namelist()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise CheckpointError(f"{path}: not a readable zip archive (a truncated or corrupt file): {error}") from None
    with archive:
        infos = {info.filename: info for info in archive.infolist()}
        pickles = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise CheckpointError(
                f"{path}: a zip file but not a torch checkpoint (expected one `<name>/data.pkl`). "
                f"Received: entries={names[:5]}"
            )
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = "<"
        if prefix + "byteorder" in names:
            order = archive.read(prefix + "byteorder").decode("ascii", "replace").strip()
            if order not in ("little", "big"):
                raise CheckpointError(f"{path}: unknown byte order. Received: byteorder={order!r}")
            byteorder = "<" if order == "little" else ">"
        storages = {}

        def load_storage(pid):
            _, storage_type, key, _location, numel = pid[:5]
            if key not in storages:
                storage = _Storage(key, storage_type, numel)
                record = f"{prefix}data/{key}"
                if record not in names:
                    raise CheckpointError(f"{path}: storage record {record!r} is missing")
                expected = _storage_bytes(numel, storage_type, path, key)
                raw = _read_member(archive, infos[record], path, expected)
                storage.data = _decode(raw, storage_type.dtype, byteorder)
                storages[key] = storage
            return storages[key]

        info = infos[pickles[0]]
        data = _read_member(archive, info, path, min(info.file_size, MAX_PICKLE_BYTES),
                            exact=False)
        return _unpickle(data, path, load_storage, pickles[0])


def _read_legacy(path):
    with open(path, "rb") as file:

        def no_storage(pid):
            raise CheckpointError(f"{path}: a storage in the header of a legacy checkpoint")

        magic = _unpickle(file, path, no_storage, "the magic number")
        if magic != LEGACY_MAGIC_NUMBER:
            raise CheckpointError(
                f"{path}: a pickle but not a torch checkpoint (expected torch's legacy magic number). "
                f"Received: {type(magic).__name__}"
            )
        protocol = _unpickle(file, path, no_storage, "the protocol version")
        if protocol != LEGACY_PROTOCOL_VERSION:
            raise CheckpointError(
                f"{path}: unsupported legacy checkpoint protocol. Expected {LEGACY_PROTOCOL_VERSION}. "
                f"Received: protocol={protocol!r}"
            )
        sys_info = _unpickle(file, path, no_storage, "the system info")
        byteorder = "<" if not isinstance(sys_info, dict) or sys_info.get("little_endian", True) else ">"
        storages = {}
        views = []

        def load_storage(pid):
            _, storage_type, key, _location, numel = pid[:5]
            view_metadata = pid[5] if len(pid) > 5 else None
            if key not in storages:
                storages[key] = _Storage(key, storage_type, numel)
            if view_metadata is None:
                return storages[key]
            # Pre-1.0 storage views: (view key, element offset, element count) of the root.
            view_key, view_offset, view_numel = view_metadata
            view = _Storage(view_key, storage_type, view_numel)
            views.append((view, storages[key], view_offset))
            return view

        result = _unpickle(file, path, load_storage, "the state_dict pickle")
        keys = _unpickle(file, path, no_storage, "the storage keys")
        if not isinstance(keys, list):
            raise CheckpointError(f"{path}: expected a list of storage keys. Received: {type(keys).__name__}")
        for key in keys:
            if key not in storages:
                raise CheckpointError(f"{path}: storage key {key!r} is not used by the pickle")
            storage = storages[key]
            header = file.read(8)
            if len(header) != 8:
                raise CheckpointError(f"{path}: the file ends before storage {key!r} (a truncated file)")
            (numel,) = struct.unpack("<q", header)
            itemsize = _itemsize(storage.storage_type.dtype)
            # Compared to the bytes left before reading: read(n) allocates n bytes first.
            left = os.fstat(file.fileno()).st_size - file.tell()
            if numel < 0 or numel * itemsize > left or numel != storage.numel:
                raise CheckpointError(f"{path}: storage {key!r} says {numel} elements, the "
                                      f"pickle {storage.numel!r}, and {left} bytes are left "
                                      "(a truncated or corrupt file)"[:400])
            raw = file.read(numel * itemsize)
            if len(raw) != numel * itemsize:
                raise CheckpointError(f"{path}: the file ends inside storage {key!r} (a truncated file)")
            storage.data = _decode(raw, storage.storage_type.dtype, byteorder)
        for view, root, offset in views:
            if root.data is not None:
                if not (_is_index(offset) and _is_index(view.numel) and offset >= 0
                        and view.numel >= 0 and offset + view.numel <= root.data.size):
                    raise CheckpointError(f"{path}: storage view {view.key!r} reaches outside "
                                          "its storage (a corrupt file)")
                view.data = root.data[offset : offset + view.numel]
    return result


def read_torch_state_dict(path):
    """Reads the tensors of a PyTorch state_dict file, without torch and without running code.

    Args:
        path: str or `Path` of a `.pth` file written by `torch.save(model.state_dict(), ...)`,
            in torch's zip format or the legacy (pre-1.6) pickle format. A state_dict wrapped
            as `{"state_dict": ...}`, `{"model_state_dict": ...}` or `{"model": ...}` is
            unwrapped, and DataParallel's `module.` prefix is stripped.

    Returns:
        A dict from torch key (`"layer1.0.conv1.0.weight"`) to a numpy array of the tensor's
        shape and dtype (float32/float16/float64/int64/...; bfloat16 becomes float32), in the
        file's order.

    Raises:
        CheckpointError: (a `UserError`) with a one-line message naming the file: not a
            checkpoint, truncated or corrupt, a pickle naming anything outside the allowlist
            (nothing it names is ever called), or a layout that does not fit its storage.
    """
    path = Path(path)
    try:
        with open(path, "rb") as file:
            head = file.read(4)
    except OSError as error:
        raise CheckpointError(f"{path}: cannot open the checkpoint: {error.strerror}") from None
    if head == ZIP_SIGNATURE:
        result = _read_zip(path)
    elif head.startswith(PICKLE_PROTOCOL_2):
        result = _read_legacy(path)
    else:
        raise CheckpointError(
            f"{path}: not a PyTorch checkpoint (expected a zip archive or torch's legacy pickle "
            f"format). Received: first bytes {head!r}"
        )
    state_dict = _select_state_dict(result, path)
    for key, ref in state_dict.items():  # every layout checked before any tensor is copied
        if ref.storage.data is not None:
            _check_layout(ref, path, key, ref.storage.data.size)
    tensors = {str(key): _materialise(ref, path, key) for key, ref in state_dict.items()}
    if tensors and all(key.startswith("module.") for key in tensors):
        tensors = {key[len("module."):]: value for key, value in tensors.items()}
    return tensors
