"""Reading files a user hands us as text: YAML configs and list files that cannot be bombed.

`open_text(path)` is a drop-in for `open(path, encoding="utf-8-sig", newline="")` that
checks the whole file first (`decode_text`) and also reads a URL (`core.storage`), and
`named_csv_errors` turns the csv module's own refusals (a field over
`csv.field_size_limit()`, 131072 characters) into one line with the file and line.

A config or list file is untrusted input: its mistakes and its malice must end in one line
naming the file and the line, in bounded time and memory. `decode_text` turns bytes into
text: UTF-8 (a BOM accepted), no NUL and no control character other than tab and newline,
a size cap; anything else is named with file and line. `SafeYamlLoader` is PyYAML's
SafeLoader without aliases (`*name`: an alias bomb expands a few hundred bytes into
gigabytes in every walk over the result, so a config writes its values out) and without
nesting deeper than `MAX_DEPTH` (PyYAML's composer recurses: deep `[[[...` is a
RecursionError); both are refused as a `yaml.MarkedYAMLError` with the line, before the
document is built.

Example:

>>> load_yaml_text("a: &x [1]\\nb: *x\\n", "c.yaml")
Traceback (most recent call last):
...
core.untrusted_text.RefusedYaml: ...aliases are not accepted...
"""

import contextlib
import csv
import io
import math
import re

import yaml

from core import storage
from core.errors import UserError

MAX_DEPTH = 32
MAX_TEXT_BYTES = 16 << 20
BOM = b"\xef\xbb\xbf"
# What YAML calls printable (PyYAML's Reader.NON_PRINTABLE), minus NEL and the separators
# a list file's line splitting would trip on: tab, LF and CR are the only controls allowed.
_NOT_PRINTABLE = re.compile("[^\x09\x0A\x0D\x20-\x7E\xA0-\u2027\u202A-\uD7FF\uE000-\uFFFD"
                            "\U00010000-\U0010FFFF]")


class RefusedYaml(yaml.MarkedYAMLError):
    """YAML that parses but is refused (an alias, nesting too deep); has `problem_mark`."""


def _line_of(data, offset):
    return data.count(b"\n", 0, offset) + 1 if isinstance(data, bytes) else \
        data.count("\n", 0, offset) + 1


def decode_text(data, path, *, error=UserError, max_bytes=MAX_TEXT_BYTES):
    """`data` (bytes, a whole file) as text, or `error` naming `path` and the line.

    Accepts UTF-8 with or without a BOM; refuses other encodings, NUL and control
    characters (other than tab, LF, CR), and more than `max_bytes`.
    """
    if len(data) > max_bytes:
        raise error(f"{path}: more than {max_bytes} bytes, more than a text file of this kind "
                    f"may hold. Received: {path}")
    if data.startswith(BOM):
        data = data[len(BOM):]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{path}: line {_line_of(data, e.start)} is not UTF-8 (byte "
                    f"0x{data[e.start]:02x}); save the file as UTF-8. Received: {path}") from None
    bad = _NOT_PRINTABLE.search(text)
    if bad:
        raise error(f"{path}: line {_line_of(text, bad.start())} holds the control character "
                    f"{bad.group()!r}, which a text file of this kind may not contain. "
                    f"Received: {path}")
    return text


def read_text_file(path, *, error=UserError, max_bytes=MAX_TEXT_BYTES):
    """The file at `path` (local, or a URL) through `decode_text` (OSError propagates, for
    the caller to name)."""
    data = storage.read_bytes(path, max_bytes=max_bytes)  # local: open(path, "rb"), as before
    return decode_text(data, path, error=error, max_bytes=max_bytes)


def open_text(path, *, error=UserError, max_bytes=MAX_TEXT_BYTES):
    """`read_text_file(path)` as a text stream (newline="": csv reads it as it reads a file)."""
    return io.StringIO(read_text_file(path, error=error, max_bytes=max_bytes), newline="")


@contextlib.contextmanager
def named_csv_errors(path, reader, error=UserError):
    """Inside the block, a csv.Error of `reader` becomes `error` naming `path` and the line."""
    try:
        yield
    except csv.Error as e:
        raise error(f"{path}: line {reader.line_num}: {e}. Received: {path}") from None


class SafeYamlLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases and nesting deeper than MAX_DEPTH (see module doc)."""

    _depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise RefusedYaml(problem=f"the alias *{event.anchor} is refused: aliases are not "
                                      "accepted in this file; write the value out",
                              problem_mark=event.start_mark)
        if self._depth >= MAX_DEPTH:
            event = self.peek_event()
            raise RefusedYaml(problem=f"nesting deeper than {MAX_DEPTH} levels",
                              problem_mark=event.start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def short_repr(value, limit=200):
    """`repr(value)`, cut to `limit` characters (a value quoted in a one-line error)."""
    text = repr(value) if not isinstance(value, (list, dict)) or len(value) < 1000 else \
        f"<{type(value).__name__} of {len(value)} items>"
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def load_yaml_text(text, name="<string>", loader=SafeYamlLoader):
    """One YAML document from `text` with `loader` (a SafeYamlLoader subclass)."""
    instance = loader(text)
    instance.name = name
    try:
        return instance.get_single_data()
    finally:
        instance.dispose()


def synth_value_problem(value, default):
    """What a keyword argument given as `value` (from YAML) should have been, judged by the
    type of its `default`; None if it fits. Bounds are the callee's to check; this keeps a
    string seed or a NaN fraction from reaching `int()` or the arithmetic."""
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "true or false"
    if isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2 ** 63
        return None if ok else "an integer >= 0"
    if isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and \
            math.isfinite(value)
        return None if ok else "a finite number"
    if isinstance(default, tuple):
        ok = isinstance(value, (list, tuple)) and len(value) == len(default) and all(
            isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 1 << 14 for v in value)
        return None if ok else f"a list of {len(default)} positive integers"
    return None
