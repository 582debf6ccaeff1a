"""Selecting models: SIZE and AGE values, `--filter`, `--sort` and `--limit`, as `hf cache ls` has them.

`list` and `prune` share this module. Pure: parsing and selection over a small row interface
(`Selectable`), no file system, no clock (the caller passes `now`).

SIZE and AGE follow huggingface_hub's parsers (`huggingface_hub.utils._parsing.parse_size` and
`parse_duration`, which `hf cache ls --filter` uses): the same decimal units (`k`/`kb` = 1000,
`m`/`mb`, `g`/`gb`, `t`/`tb`, `p`/`pb`; `s`, `m` (minutes), `h`, `d`, `w`, `mo` (30 days),
`y` (365 days)), case-insensitive, no space between number and unit, a plain number is bytes or
seconds. Our own parser rather than huggingface_hub's, because:

- theirs lives in a private module (`utils/_parsing.py`), free to change in any release;
- theirs takes whole numbers only, and SIZE must take `1.5T` (issue 15): a number here may have
  a decimal fraction (a SIZE is then rounded down to whole bytes);
- theirs takes what `int()` takes for a plain number: `-5`, `+5`, `1_000`, non-ASCII digits.
  Here a value is ASCII digits, never negative, and at most `MAX_VALUE` (an int64: the largest
  file size or time span a file system holds), so that NaN, inf and huge values are refused
  (`nan`, `inf` and `1e9` do not parse in either).

Every value huggingface_hub accepts that is whole, unsigned and plain ASCII means the same here
(tests/test_list_select.py checks this against their functions).
"""

from __future__ import annotations

import re
from decimal import Decimal

from .errors import InputError

MAX_VALUE = 2**63 - 1

# huggingface_hub.utils._parsing.BYTE_UNITS and TIME_UNITS, as of huggingface_hub 2.4.
SIZE_UNITS: dict[str, int] = {
    "k": 1_000,
    "kb": 1_000,
    "m": 1_000_000,
    "mb": 1_000_000,
    "g": 1_000_000_000,
    "gb": 1_000_000_000,
    "t": 1_000_000_000_000,
    "tb": 1_000_000_000_000,
    "p": 1_000_000_000_000_000,
    "pb": 1_000_000_000_000_000,
}
AGE_UNITS: dict[str, int] = {
    "s": 1,
    "m": 60,
    "h": 60 * 60,
    "d": 24 * 60 * 60,
    "w": 7 * 24 * 60 * 60,
    "mo": 30 * 24 * 60 * 60,
    "y": 365 * 24 * 60 * 60,
}

# ASCII only (re.ASCII): `\d` would take other scripts' digits, which no user means here.
_NUMBER_WITH_UNIT = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]+)?)(?P<unit>[a-z]*)", re.IGNORECASE | re.ASCII)
_SHOWN = 40  # characters of a bad value quoted back: a line, never a screenful


def _quote(text: str) -> str:
    return repr(text if len(text) <= _SHOWN else text[:_SHOWN] + "...")


def _parse(text: str, units: dict[str, int], what: str, example: str) -> Decimal:
    stripped = text.strip()
    if not stripped:
        raise InputError(f"{what} is empty: give a number with an optional unit, e.g. {example}")
    match = _NUMBER_WITH_UNIT.fullmatch(stripped)
    if match is None:
        if stripped.startswith("-"):
            raise InputError(f"{what} {_quote(text)} is negative")
        raise InputError(f"{what} {_quote(text)} does not parse: give a number with an optional unit, e.g. {example}")
    unit = match["unit"].lower()
    if unit and unit not in units:
        raise InputError(f"{what} {_quote(text)} has an unknown unit {unit!r}: use one of {', '.join(units)}")
    # Decimal: exact, so that 1.5T is 1_500_000_000_000 bytes and not a float's neighbour of it.
    value = Decimal(match["number"]) * (units[unit] if unit else 1)
    if value > MAX_VALUE:
        raise InputError(f"{what} {_quote(text)} is too large (at most {MAX_VALUE:,})")
    return value


def parse_size(text: str) -> int:
    """Bytes in a SIZE: `200G`, `1.5T`, `500MB`, `4096` (decimal units, as `hf cache ls`)."""
    return int(_parse(text, SIZE_UNITS, "size", "200G, 1.5T, 500MB"))  # int() rounds down


def parse_age(text: str) -> float:
    """Seconds in an AGE: `30d`, `12h`, `2w`, `90` (units as `hf cache ls --filter accessed>30d`)."""
    return float(_parse(text, AGE_UNITS, "age", "30d, 12h, 2w"))
