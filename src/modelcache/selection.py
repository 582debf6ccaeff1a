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

import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol, TypeVar

from .errors import InputError
from .inventory import RepoStatus

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


# ---------------------------------------------------------------- --filter, --sort, --limit


class Selectable(Protocol):
    """What a row must tell to be filtered and sorted: a `list` row (`analysis.ListRow`), a `prune` unit.

    Times are seconds since the epoch, None when unknown (a row without files): such a row
    matches no time filter and sorts as the oldest, as in `hf cache ls`.
    """

    @property
    def id(self) -> str: ...  # what `-q` prints
    @property
    def name(self) -> str: ...  # what `--sort name` orders by (case-insensitive): `type/name`, as hf
    @property
    def type(self) -> str: ...  # model, dataset, space, folder, ...
    @property
    def store(self) -> str: ...  # StoreKind value: hf_cache, ollama, ...
    @property
    def status(self) -> str: ...
    @property
    def size_bytes(self) -> int: ...
    @property
    def accessed(self) -> float | None: ...
    @property
    def modified(self) -> float | None: ...


R = TypeVar("R", bound=Selectable)

# huggingface_hub's grammar (cli/cache.py, `_FILTER_PATTERN`, `_SORT_PATTERN`): KEY OP VALUE, the key
# case-insensitive; `==` parses there and is then refused, as here.
_FILTER = re.compile(r"(?P<key>[a-zA-Z_]+)\s*(?P<op>==|!=|>=|<=|>|<|=)\s*(?P<value>.+)", re.ASCII)
_SORT = re.compile(r"(?P<key>[a-zA-Z_]+)(?::(?P<order>asc|desc))?", re.ASCII)
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
    ">=": operator.ge,
    "<=": operator.le,
}
_NUMBER_KEYS = ("accessed", "modified", "size")  # VALUE is an AGE (how long ago) or a SIZE
# huggingface_hub takes only `=` for its text key (`type`); `!=` here too (`status!=complete`).
_TEXT_KEYS = ("type", "store", "status")
FILTER_KEYS = _NUMBER_KEYS + _TEXT_KEYS
# As `hf cache ls`: the newest and largest first, names A to Z.
SORT_DEFAULT_ORDER = {"accessed": "desc", "modified": "desc", "name": "asc", "size": "desc"}


def _choices(key: str) -> tuple[str, ...]:
    """The values a text key can take: a typo is an error, not an empty list."""
    if key == "store":
        from .store_kind import StoreKind  # loads every store module: only when a store filter is given

        return tuple(kind.value for kind in StoreKind)
    if key == "status":
        return (*(s.value for s in RepoStatus), "corrupt")
    return ("model", "dataset", "space", "folder", "store", "cache")


@dataclass(frozen=True)
class Filter:
    """One `--filter KEY OP VALUE`; `matches(row, now)` applies it."""

    text: str
    key: str
    op: str
    number: float = 0.0  # seconds for accessed/modified, bytes for size
    word: str = ""  # lower case, for a text key

    def matches(self, row: Selectable, now: float) -> bool:
        if self.key in _TEXT_KEYS:
            same = str(getattr(row, self.key)).lower() == self.word
            return same if self.op == "=" else not same
        if self.key == "size":
            return _COMPARE[self.op](row.size_bytes, self.number)
        when = row.accessed if self.key == "accessed" else row.modified
        # `accessed>30d`: last accessed more than 30 days before now (huggingface_hub's reading).
        return when is not None and _COMPARE[self.op](now - when, self.number)


def parse_filter(text: str) -> Filter:
    """`accessed>30d`, `modified<=2w`, `size>1GB`, `type=model`, `store=ollama`, `status!=complete`."""
    match = _FILTER.fullmatch(text.strip())
    if match is None:
        raise InputError(f"filter {_quote(text)} does not parse: use KEY OP VALUE, e.g. accessed>30d or size>1GB")
    key, op, value = match["key"].lower(), match["op"], match["value"].strip()
    if key not in FILTER_KEYS:
        raise InputError(f"filter {_quote(text)}: unknown key {key!r}, use one of {', '.join(FILTER_KEYS)}")
    if op not in _COMPARE:
        raise InputError(f"filter {_quote(text)}: unknown operator {op!r}, use one of {' '.join(_COMPARE)}")
    if key in _NUMBER_KEYS:
        try:
            number = parse_size(value) if key == "size" else parse_age(value)
        except InputError as error:
            raise InputError(f"filter {_quote(text)}: {error.message}") from None
        return Filter(text, key, op, number=number)
    if op not in ("=", "!="):
        raise InputError(f"filter {_quote(text)}: {key} takes = or != only")
    word = value.lower()
    choices = _choices(key)
    if word not in choices:
        raise InputError(f"filter {_quote(text)}: unknown {key} {value!r}, use one of {', '.join(choices)}")
    return Filter(text, key, op, word=word)


@dataclass(frozen=True)
class Sort:
    """One `--sort KEY[:asc|:desc]`."""

    key: str
    descending: bool

    def sorted(self, rows: Iterable[R]) -> list[R]:
        """Stable: rows equal under the key keep their order (the listing's own, deterministic)."""
        return sorted(rows, key=self._value, reverse=self.descending)

    def _value(self, row: Selectable) -> str | float:
        if self.key == "name":
            return row.name.lower()
        if self.key == "size":
            return row.size_bytes
        when = row.accessed if self.key == "accessed" else row.modified
        return 0.0 if when is None else when  # unknown sorts as the oldest, as in `hf cache ls`


def parse_sort(text: str) -> Sort:
    """`accessed`, `size:asc`, `name:desc`, ...; without an order, huggingface_hub's default for the key."""
    match = _SORT.fullmatch(text.strip().lower())
    if match is None:
        raise InputError(f"sort {_quote(text)} does not parse: use KEY, KEY:asc or KEY:desc, e.g. accessed:asc")
    key = match["key"]
    if key not in SORT_DEFAULT_ORDER:
        raise InputError(f"sort {_quote(text)}: unknown key {key!r}, use one of {', '.join(SORT_DEFAULT_ORDER)}")
    return Sort(key, (match["order"] or SORT_DEFAULT_ORDER[key]) == "desc")


def parse_limit(text: str) -> int:
    """`--limit N`: a whole number, 0 or more."""
    stripped = text.strip()
    if not re.fullmatch(r"[0-9]+", stripped, re.ASCII):
        raise InputError(f"limit {_quote(text)} is not a whole number of 0 or more")
    if len(stripped) > 18:  # no listing holds 10^18 rows: past that, a limit limits nothing
        return MAX_VALUE
    return int(stripped)


@dataclass(frozen=True)
class Selection:
    """Filters (all must match), then the sort, then the limit: `hf cache ls`'s order of steps."""

    filters: tuple[Filter, ...] = ()
    sort: Sort | None = None
    limit: int | None = None

    @classmethod
    def parse(cls, filters: Iterable[str] = (), sort: str | None = None, limit: str | None = None) -> Selection:
        """From the command line's strings; every bad one is an `InputError` before anything is read."""
        return cls(
            tuple(parse_filter(f) for f in filters),
            None if sort is None else parse_sort(sort),
            None if limit is None else parse_limit(limit),
        )

    @property
    def narrows(self) -> bool:
        return bool(self.filters) or self.limit is not None

    def apply(self, rows: Iterable[R], now: float) -> list[R]:
        kept = [row for row in rows if all(f.matches(row, now) for f in self.filters)]
        if self.sort is not None:
            kept = self.sort.sorted(kept)
        return kept if self.limit is None else kept[: self.limit]
