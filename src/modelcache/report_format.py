"""What every command's output is made of: a path or a reason for a terminal, a size in decimal
units, the versioned JSON envelope and its writer, and the line that says why an exit code is not 0.

Imports nothing of modelcache's reports: `report.py`, `report_changes.py` and the CLI modules build
on it (`report.py` re-exports every name, their import path since the start).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from . import __version__
from .common import display
from .inventory import Warning_

SCHEMA_VERSION = 1


_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F]}
_CONTROL.update({ord("\n"): "\\n", ord("\t"): "\\t", ord("\r"): "\\r"})


def shown(path: str) -> str:
    """A path for a terminal: undecodable bytes as `\\xNN`, control characters (a newline) escaped."""
    return display(path).translate(_CONTROL)


def one_line(reason: str | None) -> str | None:
    """A reason, in one line: it can hold a path, and a file name can hold a newline. Found by the
    property tests: a failure in a read-only folder named `line\\nbreak.bin` in two lines."""
    return None if reason is None else reason.translate(_CONTROL)


def format_size(n: int) -> str:
    """Bytes in decimal units, as the original solution document and `hf cache` print them.

    >>> format_size(166_300_000_000)
    '166.3GB'
    >>> format_size(512)
    '512B'
    """
    if n < 1000:
        return f"{n}B"
    value = float(n)
    for unit in ("KB", "MB", "GB", "TB", "PB"):
        value /= 1000
        if value < 999.95 or unit == "PB":
            return f"{value:.1f}{unit}"
    raise AssertionError("unreachable")


def envelope(command: str, status: str, body: dict[str, Any]) -> dict[str, Any]:
    """The JSON wrapper every command shares (docs/json.md); `warnings` is an empty list where `body` has none."""
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": "modelcache",
        "tool_version": __version__,
        "command": command,
        "status": status,
        "warnings": [],
        **body,
    }


def warning_json(w: Warning_) -> dict[str, str]:
    return {"path": w.path, "message": w.message}


# What made an exit code non-zero: (how many, what one is, what more are, the JSON field that lists them)
Counted = tuple[int, str, str, str]


def warnings_counted(n: int) -> Counted:
    return (n, "warning", "warnings", "warnings")


def outcomes_counted(failed: int, skipped: int) -> tuple[Counted, Counted]:
    return (failed, "change failed", "changes failed", "outcomes"), (
        skipped, "change skipped", "changes skipped", "outcomes")  # fmt: skip


def say_why(*counts: Counted) -> None:
    """Under --json, the one line on stderr that says why the exit code is not 0 (stdout holds the JSON
    alone): what made it so and where the JSON lists it, e.g. "2 warnings; see `warnings` in the JSON"."""
    shown = [(n, one if n == 1 else many, field) for n, one, many, field in counts if n]
    what = ", ".join(f"{n} {noun}" for n, noun, _ in shown)
    fields = ", ".join(dict.fromkeys(f"`{field}`" for _, _, field in shown))
    print(f"modelcache: {what}; see {fields} in the JSON" if shown else "modelcache: see the JSON", file=sys.stderr)


def print_json(data: dict[str, Any]) -> None:
    """One top-level key a line, and each item of a list on a line of its own.

    Written as it is encoded (the report of a million files is tens of MB, not held twice), and
    encoded by json's C encoder: with `indent=` json falls back to its pure-Python encoder, which
    took 0.9 s of a 4.4 s analyze of 2,000 repos.
    """
    encode = json.JSONEncoder().encode
    write = sys.stdout.write
    separator = "{\n"
    for key, value in data.items():
        write(f"{separator}  {encode(key)}: ")
        if isinstance(value, list) and value:
            item_separator = "[\n    "
            for item in value:
                write(item_separator)
                write(encode(item))
                item_separator = ",\n    "
            write("\n  ]")
        else:
            write(encode(value))
        separator = ",\n"
    write("{}\n" if separator == "{\n" else "\n}\n")
