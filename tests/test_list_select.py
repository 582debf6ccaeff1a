"""Selecting models as `hf cache ls` does: SIZE and AGE values, `list --filter/--sort/--limit/-q`.

The parsers are checked against huggingface_hub's own (`utils._parsing`, what `hf cache ls --filter`
uses): same value for every input both accept, and a clear one-line `InputError` for the rest.
"""

from __future__ import annotations

import math
from decimal import Decimal

import pytest
from huggingface_hub.utils import _parsing as hf_parsing
from hypothesis import example, given
from hypothesis import strategies as st

from modelcache.errors import InputError
from modelcache.selection import AGE_UNITS, MAX_VALUE, SIZE_UNITS, parse_age, parse_size

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
