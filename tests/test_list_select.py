"""Selecting models as `hf cache ls` does: SIZE and AGE values, `list --filter/--sort/--limit/-q`.

The parsers are checked against huggingface_hub's own (`utils._parsing`, what `hf cache ls --filter`
uses): same value for every input both accept, and a clear one-line `InputError` for the rest.
"""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
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
from modelcache.selection import (
    AGE_UNITS,
    MAX_VALUE,
    SIZE_UNITS,
    Selection,
    parse_age,
    parse_filter,
    parse_limit,
    parse_size,
    parse_sort,
)
from modelcache.testing import LocalHub
from modelcache.testing.builders import (
    download_to_cache,
    download_to_local_dir,
    ollama_manifest,
    random_bytes,
    write_tree,
)

from .machine import NOBODY, Result, client_env, run_cli

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


# ---------------------------------------------------------------- `modelcache list` on a machine the real client built

DAYS = 86400


@dataclass(frozen=True)
class Listed:
    """A machine: an HF cache, a local_dir download, a plain folder and an Ollama store, each model last used
    (atime) and written (mtime) a known number of days ago."""

    root: Path
    accessed_days: dict[str, int]  # the id `-q` prints -> days since last access
    modified_days: dict[str, int]

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def ollama(self) -> Path:
        return self.root / "ollama"

    def args(self) -> list[str]:
        return [
            "--cache-dir", str(self.cache), "--models", str(self.root / "models"),
            "--store", f"ollama={self.ollama}", "--no-discover",
        ]  # fmt: skip

    def env(self) -> dict[str, str]:
        return {"MODELCACHE_INDEX": str(self.root / "state" / "digests.sqlite"), "HOME": str(self.root / "home")}

    def list(self, *args: str, code: int = 0) -> Result:
        result = run_cli("list", *self.args(), *args, env=self.env())
        assert "Traceback" not in result.err
        assert result.code == code, result.err
        return result

    def ids(self, *args: str) -> list[str]:
        return self.list(*args, "-q").out.splitlines()


def age(paths: list[Path], accessed_days: int, modified_days: int, now: float) -> None:
    """Every regular file under `paths` last read `accessed_days` and written `modified_days` ago (symlinks
    are not followed: a snapshot's links lead to the repo's own blobs, which are under it too)."""
    for top in paths:
        for path in [top, *top.rglob("*")] if top.is_dir() else [top]:
            if path.is_file() and not path.is_symlink():
                os.utime(path, (now - accessed_days * DAYS, now - modified_days * DAYS), follow_symlinks=False)


@pytest.fixture(scope="module")
def listed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Listed]:
    root = tmp_path_factory.mktemp("listed")
    cache, models, ollama = root / "cache", root / "models", root / "ollama"
    layer = random_bytes(300_000, "ollama layer")
    with client_env(), LocalHub() as hub:
        hub.add_commit("org/old", {"model.safetensors": random_bytes(50_000, "old"), "config.json": b"{}"})
        hub.add_commit("org/mid", {"model.safetensors": random_bytes(2_000_000, "mid"), "config.json": b"{}"})
        hub.add_commit("org/new", {"model.safetensors": random_bytes(1_500_000, "new"), "config.json": b"{}"})
        hub.add_commit("org/part", {"model.safetensors": random_bytes(700_000, "part"), "config.json": b"[]"})
        hub.add_commit("org/data", {"train.csv": random_bytes(900_000, "data")}, repo_type="dataset")
        for repo in ("org/old", "org/mid", "org/new"):
            download_to_cache(hub, repo, cache)
        download_to_cache(hub, "org/part", cache, allow_patterns=["*.json"])
        download_to_cache(hub, "org/data", cache, repo_type="dataset")
        download_to_local_dir(hub, "org/mid", models / "mid-copy", cache)
    write_tree(models / "plain", {"weights.bin": random_bytes(80_000, "plain")})
    write_tree(ollama, {
        f"blobs/sha256-{hashlib.sha256(layer).hexdigest()}": layer,
        f"blobs/sha256-{hashlib.sha256(b'{}').hexdigest()}": b"{}",
        "manifests/registry.ollama.ai/library/tiny/latest": ollama_manifest(
            [(layer, "application/vnd.ollama.image.model")]),
    })  # fmt: skip
    now = time.time()
    # id -> (files, days since read, days since written); all distinct, so every sort has one answer.
    plan = {
        "model/org/old": ([cache / "models--org--old"], 120, 200),
        "model/org/mid": ([cache / "models--org--mid"], 40, 60),
        "model/org/new": ([cache / "models--org--new"], 0, 10),
        "model/org/part": ([cache / "models--org--part"], 10, 11),
        "dataset/org/data": ([cache / "datasets--org--data"], 95, 96),
        str(models / "mid-copy"): ([models / "mid-copy"], 100, 101),
        str(models / "plain"): ([models / "plain"], 200, 300),
        "tiny:latest": ([ollama], 365, 366),
    }
    for paths, accessed_days, modified_days in plan.values():
        age(paths, accessed_days, modified_days, now)
    yield Listed(root, {k: v[1] for k, v in plan.items()}, {k: v[2] for k, v in plan.items()})


def hf_ids(m: Listed, *args: str) -> list[str]:
    """`hf cache ls -q` (the real CLI, installed with huggingface_hub) on the machine's cache."""
    hf = Path(sys.executable).with_name("hf")
    done = subprocess.run(
        [str(hf), "cache", "ls", "--cache-dir", str(m.cache), *args, "-q"],
        capture_output=True, text=True, env={**os.environ, **m.env()}, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_every_store_has_an_id(listed: Listed) -> None:
    """-q prints one id per row: huggingface_hub's for the HF cache, the folder for local ones, Ollama's name."""
    assert sorted(listed.ids()) == sorted(listed.accessed_days)
    rows = listed.list("--json").json()["repos"]
    by_id = {r["store"] + ":" + r["id"]: r for r in rows}
    assert by_id["local_dir:org/mid"]["path"] == str(listed.root / "models" / "mid-copy")
    assert by_id["ollama:tiny:latest"]["type"] == "model"


@pytest.mark.parametrize(
    "selection",
    [
        ["--filter", "accessed>30d"],
        ["--filter", "accessed<=30d"],
        ["--filter", "accessed>90d", "--filter", "size<1MB"],
        ["--filter", "size>1MB"],
        ["--filter", "modified<3mo", "--filter", "type=model"],
        ["--filter", "type=dataset"],
        ["--sort", "accessed"],
        ["--sort", "accessed:asc", "--limit", "2"],
        ["--sort", "size"],
        ["--sort", "name:desc"],
        ["--sort", "modified:asc", "--filter", "accessed>5d", "--limit", "3"],
    ],
)
def test_the_hf_cache_selects_as_hf_cache_ls(listed: Listed, selection: list[str]) -> None:
    """On the HF cache, `list -q` with hf's options prints what `hf cache ls -q` prints, in its order."""
    ours = listed.ids("--filter", "store=hf_cache", *selection)
    theirs = hf_ids(listed, *selection)
    if "--sort" not in selection:
        ours, theirs = sorted(ours), sorted(theirs)  # hf lists by id, modelcache by name then store
    assert ours == theirs
    assert ours  # each case selects something


def test_filters_sort_and_limit_across_stores(listed: Listed) -> None:
    days = listed.accessed_days
    assert sorted(listed.ids("--filter", "accessed>90d")) == sorted(i for i, d in days.items() if d > 90)
    assert listed.ids("--filter", "store=ollama") == ["tiny:latest"]
    assert listed.ids("--filter", "status=incomplete") == ["model/org/part"]
    assert "model/org/part" not in listed.ids("--filter", "status!=incomplete")
    assert listed.ids("--filter", "type=folder") == [str(listed.root / "models" / "plain")]
    oldest_first = sorted(days, key=days.__getitem__, reverse=True)
    assert listed.ids("--sort", "accessed:asc") == oldest_first
    assert listed.ids("--sort", "accessed", "--limit", "3") == oldest_first[::-1][:3]
    assert listed.ids("--filter", "accessed>90d", "--sort", "accessed:asc", "--limit", "2") == oldest_first[:2]
    mod = listed.modified_days
    assert listed.ids("--sort", "modified:asc") == sorted(mod, key=mod.__getitem__, reverse=True)
    assert listed.ids("--limit", "0") == []
    assert listed.ids("--filter", "accessed>100y") == []


def test_json_holds_the_selected_rows_with_their_times(listed: Listed) -> None:
    out = listed.list("--json", "--filter", "accessed>30d", "--sort", "size:asc").json()
    rows = out["repos"]
    assert [r["size_bytes"] for r in rows] == sorted(r["size_bytes"] for r in rows)
    assert len(rows) == sum(1 for d in listed.accessed_days.values() if d > 30)
    now = time.time()
    for r in rows:
        key = r["path"] if r["store"] in ("local_dir", "plain") else r["id"] if r["store"] == "ollama" else None
        key = key or f"{r['type']}/{r['id']}"
        assert abs(now - r["last_access"] - listed.accessed_days[key] * DAYS) < 600, r
        assert abs(now - r["last_modified"] - listed.modified_days[key] * DAYS) < 600, r
    text = listed.list("--filter", "accessed>30d", "--sort", "size:asc")
    assert text.out.index("tiny:latest") < text.out.index("org/mid")  # 300 KB, then 2 MB (both copies)
    none = listed.list("--filter", "accessed>100y")
    assert "No models match" in none.out


def test_reading_refs_is_no_use(listed: Listed, tmp_path: Path) -> None:
    """`hf cache ls` reads every `refs/` file, giving it a new atime: models stay unused all the same, in
    `list` as in `hf cache ls` (both go by the model files)."""
    refs = listed.cache / "models--org--old" / "refs" / "main"
    age([refs], listed.accessed_days["model/org/old"], listed.modified_days["model/org/old"], time.time())
    before = refs.stat().st_atime
    hf_ids(listed)
    if refs.stat().st_atime == before:
        pytest.skip(f"reading {refs} did not move its atime (noatime, or read within the day)")
    assert "model/org/old" in listed.ids("--filter", "accessed>30d")
    assert "model/org/old" in hf_ids(listed, "--filter", "accessed>30d")


BAD_SELECTIONS = [
    (["--filter", "accessed>30x"], "unknown unit 'x'"),
    (["--filter", "accessed>-3d"], "negative"),
    (["--filter", "accessed>nan"], "does not parse"),
    (["--filter", "size>1e999"], "does not parse"),
    (["--filter", "size>99999999999999999999"], "too large"),
    (["--filter", "accessed"], "use KEY OP VALUE"),
    (["--filter", "accessed>"], "use KEY OP VALUE"),
    (["--filter", "owner=me"], "unknown key 'owner'"),
    (["--filter", "size==1G"], "unknown operator '=='"),
    (["--filter", "type>model"], "takes = or != only"),
    (["--filter", "store=olama"], "unknown store 'olama'"),
    (["--filter", "status=done"], "unknown status 'done'"),
    (["--filter", "type=models"], "unknown type 'models'"),
    (["--sort", "bogus"], "unknown key 'bogus'"),
    (["--sort", "size:up"], "does not parse"),
    (["--sort", ""], "does not parse"),
    (["--limit", "-1"], "not a whole number"),
    (["--limit", "ten"], "not a whole number"),
    (["--limit", "1.5"], "not a whole number"),
    (["-q", "--json"], "give one of them"),
]


@pytest.mark.parametrize(("args", "why"), BAD_SELECTIONS)
def test_a_bad_selection_is_one_line_and_exit_2(listed: Listed, args: list[str], why: str) -> None:
    result = listed.list(*args, code=2)
    assert result.out == ""
    assert result.err.count("\n") == 1 and result.err.startswith("modelcache: error: "), result.err
    assert why in result.err, result.err


def test_a_bad_selection_is_refused_before_anything_is_read(tmp_path: Path) -> None:
    """The selection is parsed first: a bad one is its own error even where the cache is not there."""
    result = run_cli("list", "--cache-dir", str(tmp_path / "nowhere"), "--filter", "size>lots")
    assert result.code == 2 and "filter 'size>lots': size 'lots' does not parse" in result.err, result.err


@given(st.text(max_size=20))
def test_any_filter_sort_or_limit_parses_or_is_an_input_error(text: str) -> None:
    for parse in (parse_filter, parse_sort, parse_limit):
        try:
            parse(text)
        except InputError as error:
            assert "\n" not in error.message and len(error.message) < 300


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the CLI as another user than the files' owner")
def test_listing_as_another_user_uses_nothing(local_hub: LocalHub, shared_tmp: Path) -> None:
    """Run by user nobody on root's files, `list` cannot keep the atimes of what it reads (O_NOATIME is
    the owner's): refs, file lists. Models it lists stay unused all the same, listing after listing."""
    if run_cli("--version", user=NOBODY).code != 0:
        pytest.skip("user nobody cannot run this Python")
    cache, state = shared_tmp / "cache", shared_tmp / "state"
    local_hub.add_commit("org/old", {"model.safetensors": random_bytes(50_000, "old"), "config.json": b"{}"})
    download_to_cache(local_hub, "org/old", cache)
    for path in cache.rglob("*"):  # a cache others may read (huggingface_hub writes file lists 0600)
        if path.is_file() and not path.is_symlink():
            path.chmod(0o644)
    age([cache], 60, 61, time.time())
    state.mkdir()
    os.chown(state, int(NOBODY), int(NOBODY))
    refs = cache / "models--org--old" / "refs" / "main"
    before = refs.stat().st_atime
    env = {"MODELCACHE_INDEX": str(state / "digests.sqlite")}
    args = ["list", "--cache-dir", str(cache), "--no-discover", "--models", str(shared_tmp / "none"), "-q"]
    os.mkdir(shared_tmp / "none")
    for _ in range(2):
        result = run_cli(*args, "--filter", "accessed>30d", env=env, user=NOBODY)
        assert (result.code, result.out) == (0, "model/org/old\n"), result.err
    if refs.stat().st_atime == before:
        pytest.skip("nobody's read of refs/main kept its atime here: nothing could fail")
