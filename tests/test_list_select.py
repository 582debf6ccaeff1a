"""Selecting models as `hf cache ls` does: SIZE and AGE values, `list --filter/--sort/--limit/-q`.

The parsers are checked against huggingface_hub's own (`utils._parsing`, what `hf cache ls --filter`
uses): same value for every input both accept, and a clear one-line `InputError` for the rest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
from huggingface_hub import CachedRepoInfo
from huggingface_hub.cli.cache import compile_cache_filter, compile_cache_sort
from huggingface_hub.utils import _parsing as hf_parsing
from hypothesis import example, given
from hypothesis import strategies as st

from modelcache.errors import InputError
from modelcache.selection import AGE_UNITS, MAX_VALUE, SIZE_UNITS, Selection, parse_age, parse_size

# ---------------------------------------------------------------- SIZE and AGE


def test_units_are_huggingface_hubs() -> None:
    """Our unit tables are theirs: a huggingface_hub release that changes its units fails here."""
    assert SIZE_UNITS == hf_parsing.BYTE_UNITS
    assert AGE_UNITS == hf_parsing.TIME_UNITS


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("200G", 200_000_000_000),
        ("1.5T", 1_500_000_000_000),
        ("500MB", 500_000_000),
        ("500mb", 500_000_000),
        ("1GB", 1_000_000_000),
        ("4096", 4096),
        (" 7k ", 7000),
        ("0", 0),
        ("0.5k", 500),
        ("1.0009k", 1000),  # fractions of a byte are dropped
        ("2p", 2 * 10**15),
        (str(MAX_VALUE), MAX_VALUE),
    ],
)
def test_parse_size_examples(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", 30 * 86400.0),
        ("12h", 12 * 3600.0),
        ("2w", 14 * 86400.0),
        ("90", 90.0),
        ("5m", 300.0),  # minutes, as huggingface_hub reads an age
        ("1mo", 30 * 86400.0),
        ("1y", 365 * 86400.0),
        ("1.5h", 5400.0),
        ("0s", 0.0),
    ],
)
def test_parse_age_examples(text: str, expected: float) -> None:
    assert parse_age(text) == expected


BAD = [
    ("", "empty"),
    ("   ", "empty"),
    ("-1", "negative"),
    ("-5G", "negative"),
    ("+5", "does not parse"),
    ("nan", "does not parse"),
    ("NaN", "does not parse"),
    ("inf", "does not parse"),
    ("-inf", "negative"),
    ("1e9", "does not parse"),
    ("1_000", "does not parse"),
    ("5 G", "does not parse"),
    ("G", "does not parse"),
    ("1.", "does not parse"),
    (".5G", "does not parse"),
    ("1.2.3G", "does not parse"),
    ("10GiB", "unknown unit"),
    ("3 days", "does not parse"),
    ("\u0661\u0662G", "does not parse"),  # Arabic-Indic digits: int() would take them
    ("9" * 30, "too large"),
    ("9" * 5000 + "M", "too large"),
]


@pytest.mark.parametrize(("text", "why"), BAD)
def test_bad_values_are_one_clear_line(text: str, why: str) -> None:
    for parse in (parse_size, parse_age):
        with pytest.raises(InputError) as caught:
            parse(text)
        message = caught.value.message
        assert why in message, message
        assert "\n" not in message and len(message) < 200, message


def test_units_of_the_other_kind_are_refused() -> None:
    with pytest.raises(InputError, match="unknown unit 'd'"):
        parse_size("30d")
    with pytest.raises(InputError, match="unknown unit 'gb'"):
        parse_age("1GB")


def test_huge_with_unit_is_refused() -> None:
    assert parse_size("9223P") == 9223 * 10**15
    with pytest.raises(InputError, match="too large"):
        parse_size("9224P")
    with pytest.raises(InputError, match="too large"):
        parse_age("300000000000y")


WHOLE = st.integers(min_value=0, max_value=10**16)  # with a unit, past MAX_VALUE too


@given(WHOLE, st.sampled_from(["", *SIZE_UNITS]), st.sampled_from([str.lower, str.upper]))
@example(0, "", str.lower)
def test_size_matches_huggingface_hub(number: int, unit: str, case: object) -> None:
    """Every whole unsigned value huggingface_hub parses means the same bytes here."""
    text = f"{number}{unit}"
    text = case(text)  # type: ignore[operator]
    theirs = hf_parsing.parse_size(text)
    if theirs <= MAX_VALUE:
        assert parse_size(text) == theirs
    else:
        with pytest.raises(InputError, match="too large"):
            parse_size(text)


@given(WHOLE, st.sampled_from(["", *AGE_UNITS]))
def test_age_matches_huggingface_hub(number: int, unit: str) -> None:
    text = f"{number}{unit}"
    theirs = hf_parsing.parse_duration(text)
    if theirs <= MAX_VALUE:
        assert parse_age(text) == float(theirs)
    else:
        with pytest.raises(InputError, match="too large"):
            parse_age(text)


@given(st.decimals(min_value=0, max_value=10**6, places=3, allow_nan=False), st.sampled_from(sorted(SIZE_UNITS)))
def test_size_fractions_are_exact(number: Decimal, unit: str) -> None:
    """`1.5T` is exactly 1.5 x 10^12 bytes, rounded down to a whole byte: no float on the way."""
    exact = number * SIZE_UNITS[unit]
    if exact <= MAX_VALUE:
        assert parse_size(f"{number}{unit}") == int(exact)
    else:
        with pytest.raises(InputError, match="too large"):
            parse_size(f"{number}{unit}")


@given(st.text(max_size=12))
def test_any_text_parses_or_is_an_input_error(text: str) -> None:
    """Nothing but a value in range or an InputError: never a ValueError, a NaN or a negative number."""
    for parse in (parse_size, parse_age):
        try:
            value = parse(text)
        except InputError as error:
            assert "\n" not in error.message
        else:
            assert 0 <= value <= MAX_VALUE and not math.isnan(value)


# ---------------------------------------------------------------- --filter, --sort, --limit against huggingface_hub

TEXT_VALUES = {"type": ["model", "dataset", "space"]}


@dataclass(frozen=True)
class Row:
    """A `Selectable` made up for the property tests."""

    id: str
    name: str
    type: str
    size_bytes: int
    accessed: float | None
    modified: float | None
    store: str = "hf_cache"
    status: str = "complete"

    def as_hf(self) -> CachedRepoInfo:
        """The same row as huggingface_hub's scan would describe it."""
        return CachedRepoInfo(
            repo_id=self.name.split("/", 1)[1],
            repo_type=self.type,  # type: ignore[arg-type]
            repo_path=Path("/nowhere"),
            size_on_disk=self.size_bytes,
            nb_files=1,
            revisions=frozenset(),
            last_accessed=self.accessed,  # type: ignore[arg-type]
            last_modified=self.modified,  # type: ignore[arg-type]
        )


NOW = 1_700_000_000.0
DAY = 86400.0
WHEN = st.one_of(st.none(), st.floats(min_value=NOW - 400 * DAY, max_value=NOW, allow_nan=False))
ROWS = st.lists(
    st.builds(
        lambda n, t, size, acc, mod: Row(f"{t}/org/R{n}", f"{t}/org/R{n}", t, size, acc, mod),
        st.integers(0, 50),
        st.sampled_from(["model", "dataset", "space"]),
        st.integers(0, 5 * 10**9),
        WHEN,
        WHEN,
    ),
    max_size=12,
)
OPS = st.sampled_from(["=", "!=", ">", "<", ">=", "<="])
NUMBER_FILTERS = st.builds(
    lambda key, op, n, unit, space: f"{key}{space}{op}{space}{n}{unit}",
    st.sampled_from(["accessed", "modified", "ACCESSED"]),
    OPS,
    st.integers(0, 400),
    st.sampled_from(["", "s", "m", "h", "d", "w", "mo", "y", "D"]),
    st.sampled_from(["", " "]),
) | st.builds(
    lambda op, n, unit: f"size{op}{n}{unit}",
    OPS,
    st.integers(0, 6000),
    st.sampled_from(["", "k", "KB", "m", "mb", "g", "GB", "t"]),
)
TYPE_FILTERS = st.builds(lambda t: f"type={t}", st.sampled_from(["model", "dataset", "space", "Model"]))


@given(ROWS, st.lists(NUMBER_FILTERS | TYPE_FILTERS, max_size=3))
@example([Row("model/a", "model/a", "model", 5, None, None)], ["accessed>0s"])  # no time: matches no time filter
@example([Row("model/a", "model/a", "model", 1_000_000_000, NOW, NOW)], ["size>=1GB"])
def test_filters_select_what_hf_cache_ls_selects(rows: list[Row], filters: list[str]) -> None:
    """Every filter `hf cache ls --filter` takes selects the same rows here (huggingface_hub's own code decides)."""
    hf_tests = [compile_cache_filter(f, {}) for f in filters]
    theirs = [r for r in rows if all(t(r.as_hf(), None, NOW) for t in hf_tests)]
    assert Selection.parse(filters).apply(rows, NOW) == theirs


@given(
    ROWS,
    st.sampled_from(["accessed", "modified", "name", "size"]),
    st.sampled_from(["", ":asc", ":desc"]),
    st.none() | st.integers(0, 15),
)
def test_sort_and_limit_order_as_hf_cache_ls(rows: list[Row], key: str, order: str, limit: int | None) -> None:
    """The same order as `hf cache ls --sort` (theirs is stable too; ties keep the listing's order)."""
    sort_key, reverse = compile_cache_sort(key + order)
    theirs = sorted(rows, key=lambda r: sort_key((r.as_hf(), None)), reverse=reverse)
    if limit is not None:
        theirs = theirs[:limit]
    chosen = Selection.parse((), key + order, None if limit is None else str(limit)).apply(rows, NOW)
    assert chosen == theirs
