"""docs/TRAINING.md's config reference table, generated from the schema.

The table (section "9. Config reference") is `reference_table()`: one row per key of
`training.config.config_reference()`. tests/test_config.py fails when the file's table
differs; after changing a key, its default or its help, regenerate it:

    python -m training.config_docs            (rewrites the table in docs/TRAINING.md)
"""

import os
import sys

from core.atomic import write_text_atomically
from training.config import config_reference

DOCS_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                         "TRAINING.md")
TABLE_HEADER = ("| key | default | accepts | meaning |", "| --- | --- | --- | --- |")


def _yaml_value(value):
    """A default as the YAML a user would write: null, true, 0.01, {}, img_{:05}.jpg."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def reference_table():
    """The config reference as Markdown table lines (header included)."""
    return [*TABLE_HEADER, *(f"| `{key}` | `{_yaml_value(default)}` | {accepts} | {meaning} |"
                             for key, default, accepts, meaning in config_reference())]


def table_span(lines):
    """(first, end) line indices of the reference table in the document's `lines`.

    Raises:
        ValueError: the document has no reference table.
    """
    try:
        first = lines.index(TABLE_HEADER[0])
    except ValueError:
        raise ValueError(f"no config reference table (a line {TABLE_HEADER[0]!r})") from None
    end = first
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return first, end


def documented_table(path=DOCS_PATH):
    """The reference table's lines as they are in `path`."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    first, end = table_span(lines)
    return lines[first:end]


def write_reference_table(path=DOCS_PATH):
    """Replaces the reference table in `path` with `reference_table()`; True if it changed."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    lines = text.splitlines()
    first, end = table_span(lines)
    new_lines = lines[:first] + reference_table() + lines[end:]
    new_text = "\n".join(new_lines) + ("\n" if text.endswith("\n") else "")
    if new_text == text:
        return False
    write_text_atomically(path, new_text)
    return True


if __name__ == "__main__":
    changed = write_reference_table(sys.argv[1] if len(sys.argv) > 1 else DOCS_PATH)
    print("rewrote the config reference table" if changed else "the table is up to date")
