"""The `--json` output of every command, against docs/json.md.

docs/json.md is read as the schema: each `## ` section names, in backticks in its heading, the
command forms it documents; its first table lists their top-level fields (after the envelope's),
and each further table, under a line naming a field path (`repos[]:`, `plan.actions[].target`),
the fields of the objects found there. A field's type is one of int, number, string, bool, object,
null, array, `array of T`, or `run` (an object with the fields of a run), or a choice `T or T`.

Every command that takes `--json` is run, in each of its forms, on one machine made by the real
huggingface_hub client through LocalHub (copies of it where a command changes files). Each output
must hold every documented field with its documented type and no field the doc does not name, at
the top level and in every documented nested object; and every nested table must be checked
against at least one object, so that no table is checked against an empty list only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from modelcache.testing import LocalHub
from modelcache.testing.builders import CLIENT_ENV, download_to_local_dir, ollama_manifest, random_bytes, write_tree

from .machine import Machine as BaseMachine
from .machine import Result, client_env, download_repos, keep_client_home, run_cli

DOC = Path(__file__).parent.parent / "docs" / "json.md"
OLD = 1_600_000_000  # seconds: older than clean's default --older-than
ALPHA = {
    "config.json": b'{"model_type": "alpha"}',
    "model.safetensors": random_bytes(120_000, "json-alpha"),
    "sub/adapter.safetensors": random_bytes(40_000, "json-adapter"),
}
BETA = {"config.json": b'{"model_type": "beta"}', "model.safetensors": random_bytes(90_000, "json-beta")}
DELTA = {"config.json": b'{"model_type": "delta"}', "model.safetensors": random_bytes(50_000, "json-delta")}
GAMMA = {"config.json": b'{"model_type": "gamma"}', "model.safetensors": BETA["model.safetensors"]}


@dataclass(frozen=True)
class Machine(BaseMachine):
    """The schema machine: no other tool's store is found but its own Ollama store."""

    @property
    def ollama(self) -> Path:
        return self.root / "ollama"

    def env(self) -> dict[str, str]:
        return {**super().env(), "HOME": str(self.root / "home"), "OLLAMA_MODELS": str(self.ollama), **CLIENT_ENV}

    def json(
        self, *args: str | os.PathLike[str], codes: tuple[int, ...] = (0,), env: dict[str, str] | None = None
    ) -> dict[str, Any]:
        result: Result = self.cli(*args, "--json", env=env)
        assert result.code in codes, f"{args}: exit {result.code}: {result.err}"
        data: dict[str, Any] = result.json()
        return data


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHub]:
    """One LocalHub for the module, with huggingface_hub kept off ~/.cache and the network (as `hf_home`)."""
    home = tmp_path_factory.mktemp("hf_home")
    with client_env() as mp:
        keep_client_home(home, mp)
        with LocalHub() as local_hub:
            mp.setenv("HF_ENDPOINT", local_hub.url)
            yield local_hub


@pytest.fixture(scope="module")
def machine(hub: LocalHub, tmp_path_factory: pytest.TempPathFactory) -> Machine:
    """Two repos in the cache, a local_dir copy of one, a local_dir download the cache lacks (to adopt), a plain
    folder with a copy, an Ollama store holding a copy, and a stale partial download."""
    m = Machine(tmp_path_factory.mktemp("json") / "m")
    download_repos(hub, m, {"org/alpha": ALPHA, "org/beta": BETA}, {"org/alpha": "alpha"})
    hub.add_commit("org/gamma", GAMMA)  # on the Hub only: `download` reuses beta's weights for it
    hub.add_commit("org/delta", DELTA)
    download_to_local_dir(hub, "org/delta", m.models / "delta", m.cache)  # the cache lacks it: to adopt
    write_tree(m.models / "mine", {"weights.bin": BETA["model.safetensors"], "notes.txt": b"mine"})
    sha = hashlib.sha256(ALPHA["model.safetensors"]).hexdigest()
    write_tree(m.ollama, {
        f"blobs/sha256-{sha}": ALPHA["model.safetensors"],
        f"blobs/sha256-{hashlib.sha256(b'{}').hexdigest()}": b"{}",
        "manifests/registry.ollama.ai/library/alpha/latest": ollama_manifest(
            [(ALPHA["model.safetensors"], "application/vnd.ollama.image.model")]),
    })  # fmt: skip
    partial = m.cache / "models--org--beta" / "blobs" / f"{'0' * 64}.incomplete"
    partial.write_bytes(b"half a download")
    os.utime(partial, (OLD, OLD))
    return m


def flip_a_byte(path: Path) -> None:
    """Flip one byte in place and put the mtime back (a newer mtime would make the local_dir metadata stale,
    and the file unverifiable rather than corrupt)."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.fixture(scope="module")
def outputs(machine: Machine, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The `--json` output of every command form, by the name of its case (each on a copy of the machine)."""
    root = tmp_path_factory.mktemp("runs")
    out: dict[str, dict[str, Any]] = {}

    m = machine.copy(root / "read")  # read-only commands, with a leftover temporary file to warn about
    write_tree(m.models / "mine", {".modelcache-20260101T000000.000000Z-abcdef-0000.tmp": b"left by a kill"})
    out["analyze"] = m.json("analyze", *m.roots(), codes=(1,))
    out["analyze --fast"] = m.json("analyze", "--fast", *m.roots(), codes=(1,))
    out["list"] = m.json("list", *m.roots(), codes=(1,))
    out["stores"] = m.json("stores", "--cache-dir", m.cache, "--models", m.models)
    out["path"] = m.json("path", "org/alpha", "--cache-dir", m.cache)
    out["path --file"] = m.json("path", "org/alpha", "--file", "sub/adapter.safetensors", "--cache-dir", m.cache)
    flip_a_byte(m.models / "alpha" / "model.safetensors")
    out["verify"] = m.json("verify", "--all", *m.roots(), codes=(1,))
    out["verify --repair"] = m.json("verify", "--all", "--repair", *m.roots())

    m = machine.copy(root / "apply")
    plan = root / "plan.json"
    adopt = ("--adopt", "--mode", "hardlink")  # as root, auto adopts nothing on ext4
    out["consolidate --dry-run"] = m.json("consolidate", "--dry-run", *adopt, "--plan-out", plan, *m.roots())
    out["apply"] = m.json("apply", "--yes", plan)

    m = machine.copy(root / "consolidate")
    out["consolidate"] = m.json(
        "consolidate", "--yes", "--mode", "delete", "--remove-empty-dirs", *m.roots(), codes=(0,)
    )
    out["undo --list"] = m.json("undo", "--list")
    out["undo"] = m.json("undo")

    m = machine.copy(root / "clean")
    (m.cache / "models--org--beta" / "blobs" / hashlib.sha256(BETA["model.safetensors"]).hexdigest()).unlink()
    out["clean --dry-run"] = m.json("clean", "--dry-run", "--repair", *m.roots())
    out["clean"] = m.json("clean", "--yes", "--repair", *m.roots())
    out["clean, nothing to remove"] = m.json("clean", "--yes", *m.roots())

    m = machine.copy(root / "prune")
    out["prune --dry-run"] = m.json("prune", "--older-than", "0", "--dry-run", "--cache-dir", m.cache)
    out["prune, nothing to remove"] = m.json("prune", "--max-size", "1T", "--yes", "--cache-dir", m.cache)
    out["prune"] = m.json("prune", "--older-than", "0", "--keep", "org/beta", "--yes", "--cache-dir", m.cache)

    m = machine.copy(root / "download")
    out["download"] = m.json("download", "org/gamma", "--cache-dir", m.cache, "--models", m.models)
    offline = {"HF_HUB_OFFLINE": "1"}
    out["download, offline"] = m.json("download", "org/alpha", "--cache-dir", m.cache, env=offline)
    return out


# -- docs/json.md, read as the schema ------------------------------------------------------------------------

Fields = dict[str, str]  # field -> type, as the doc writes it


@dataclass(frozen=True)
class Section:
    heading: str
    forms: tuple[str, ...]  # the command forms its heading names
    fields: Fields  # its first table
    tables: dict[str, Fields]  # nested path (`repos[]`, `plan.header`, `totals.*`) -> its fields

    @property
    def type_name(self) -> str | None:
        """`A run: ...` defines the type `run`."""
        found = re.match(r"A (\w+):", self.heading)
        return found.group(1) if found else None


CODE = re.compile(r"`([^`]+)`")
LABEL = re.compile(r"^(`[^`]+`(?:, `[^`]+`)*)(?: \(.*\))?:$")


def read_doc(text: str) -> list[Section]:
    """The sections of docs/json.md with their tables; a table that follows no label, past a section's first,
    is an error (the doc must stay readable as a schema)."""
    sections: list[Section] = []
    heading, labels, rows, in_table = "", None, None, False
    for line in [*text.splitlines(), ""]:
        if line.startswith("## "):
            heading = line[3:].strip()
            forms = tuple(CODE.findall(re.sub(r"\(.*?\)", "", heading)))  # not those in parentheses
            sections.append(Section(heading, forms, {}, {}))
            labels = None
        elif (label := LABEL.match(line)) and sections:
            labels = CODE.findall(label.group(1))
        elif line.startswith("|") and sections:
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not in_table:
                in_table, rows = True, {}
                continue  # the header row
            if set(cells[0]) <= set("-: "):
                continue
            assert rows is not None and len(cells) == 3, f"{heading}: a row that is not field | type | meaning: {line}"
            for name in CODE.findall(cells[0]):
                rows[name] = cells[1]
        elif in_table:
            in_table = False
            section = sections[-1]
            assert rows is not None
            if labels is None:
                assert not section.fields, f"{heading}: a second table with no label line (`path[]`:) above it"
                section.fields.update(rows)
            else:
                for path in labels:
                    section.tables[path] = rows
                labels = None
    return sections


SIMPLE_TYPES: dict[str, Callable[[Any], bool]] = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}


def type_matches(value: Any, kind: str) -> bool:
    """Whether a JSON value has the doc's type `kind` (a named type, like `run`, is an object here)."""
    for choice in (c.strip() for c in kind.split(" or ")):
        if choice.startswith("array of "):
            inner = choice.removeprefix("array of ")
            if isinstance(value, list) and all(type_matches(v, inner) for v in value):
                return True
        elif SIMPLE_TYPES.get(choice, SIMPLE_TYPES["object"])(value):
            return True
    return False


Tables = dict[str, tuple[str, Fields]]  # nested path -> (the heading of the section documenting it, its fields)


def tables_of(*sections: Section) -> Tables:
    return {path: (s.heading, fields) for s in sections for path, fields in s.tables.items()}


@dataclass
class Checker:
    """Checks outputs against the doc; collects what is wrong, and which tables saw at least one object."""

    sections: list[Section]
    errors: list[str] = dataclasses.field(default_factory=list)
    seen: set[tuple[str, str]] = dataclasses.field(default_factory=set)  # (section heading, table path)

    def section(self, form: str) -> Section:
        found = [s for s in self.sections if form in s.forms]
        assert len(found) == 1, f"docs/json.md has {len(found)} sections for `{form}`"
        return found[0]

    def named(self, kind: str) -> Section | None:
        """The section defining a named type among the choices of `kind` (`run or null`: the run section)."""
        choices = {c.strip() for c in kind.split(" or ")}
        return next((s for s in self.sections if s.type_name in choices), None)

    def check(self, data: dict[str, Any], form: str) -> list[str]:
        """The errors of one output."""
        self.errors = []
        section = self.section(form)
        envelope = next(s for s in self.sections if s.heading.startswith("Envelope"))
        self.object(data, {**envelope.fields, **section.fields}, tables_of(envelope, section), "")
        return self.errors

    def object(
        self, data: Any, fields: Fields, tables: Tables, path: str
    ) -> None:
        where = path or "the top level"
        if not isinstance(data, dict):
            self.errors.append(f"{where}: not an object: {data!r:.80}")
            return
        for name in sorted(set(fields) - set(data)):
            self.errors.append(f"{where}: documented field `{name}` is missing")
        for name in sorted(set(data) - set(fields)):
            self.errors.append(f"{where}: field `{name}` is not documented")
        for name in sorted(set(fields) & set(data)):
            kind, value, at = fields[name], data[name], f"{path}.{name}" if path else name
            known = all(c.strip().removeprefix("array of ") in SIMPLE_TYPES for c in kind.split(" or "))
            if not known and self.named(kind) is None:
                self.errors.append(f"{at}: the doc's type {kind!r} is not a type")
            elif not type_matches(value, kind):
                self.errors.append(f"{at}: {type(value).__name__} {value!r:.80}, documented as {kind}")
            self.nested(value, kind, tables, at)

    def nested(self, value: Any, kind: str, tables: Tables, at: str) -> None:
        """Check what the doc says of the objects in `value`: a named type, or the tables `at` (the object
        itself), `at[]` (each item) and `at.*` (each value)."""
        named = self.named(kind)
        if named is not None and isinstance(value, dict):
            self.seen.add((named.heading, ""))
            self.object(value, named.fields, tables_of(named), "")
        found = {
            "": [value] if isinstance(value, dict) else [],
            "[]": value if isinstance(value, list) else [],
            ".*": list(value.values()) if isinstance(value, dict) else [],
        }
        for suffix, items in found.items():
            if at + suffix in tables:
                heading, fields = tables[at + suffix]
                for item in items:
                    self.seen.add((heading, at + suffix))
                    self.object(item, fields, tables, at + suffix)


@pytest.fixture(scope="module")
def doc() -> list[Section]:
    return read_doc(DOC.read_text())


# -- the cases -----------------------------------------------------------------------------------------------

# case (as `outputs` names it) -> the command form docs/json.md documents it under
CASES = {
    "analyze": "analyze",
    "analyze --fast": "analyze",
    "list": "list",
    "stores": "stores",
    "path": "path",
    "path --file": "path",
    "verify": "verify",
    "verify --repair": "verify",
    "consolidate --dry-run": "consolidate --dry-run",
    "apply": "apply",
    "consolidate": "consolidate",
    "undo --list": "undo --list",
    "undo": "undo",
    "clean --dry-run": "clean --dry-run",
    "clean": "clean",
    "clean, nothing to remove": "clean --dry-run",
    "download": "download",
    "download, offline": "download",
    "prune --dry-run": "prune --dry-run",
    "prune, nothing to remove": "prune --dry-run",
    "prune": "prune",
}
# Findings: outputs that lack the envelope's `warnings` (docs/json.md: "every command"), and outputs whose
# envelope `status` the command's own `status` replaces.
@pytest.mark.parametrize("case", CASES)
def test_output_has_every_documented_field_with_its_type_and_no_other(
    case: str, outputs: dict[str, dict[str, Any]], doc: list[Section]
) -> None:
    errors = Checker(doc).check(outputs[case], CASES[case])
    assert not errors, f"{case} --json against docs/json.md:\n" + "\n".join(errors)


@pytest.mark.parametrize("case", CASES)
def test_every_output_has_the_envelopes_warnings(case: str, outputs: dict[str, dict[str, Any]]) -> None:
    assert isinstance(outputs[case].get("warnings"), list)


@pytest.mark.parametrize("case", CASES)
def test_the_envelope_says_what_it_documents(case: str, outputs: dict[str, dict[str, Any]]) -> None:
    data = outputs[case]
    version = run_cli("--version").out.split()[1]
    assert (data["schema_version"], data["tool"], data["tool_version"]) == (1, "modelcache", version)
    assert data["command"] == CASES[case].split()[0]
    assert data["status"] in ("success", "partial")


def test_every_documented_table_was_checked_against_an_object(
    outputs: dict[str, dict[str, Any]], doc: list[Section]
) -> None:
    checker = Checker(doc)
    for case, form in CASES.items():
        checker.check(outputs[case], form)
    forms = set(CASES.values())
    documented = {
        (s.heading, path) for s in doc for path in s.tables if forms & set(s.forms) or s.heading.startswith("Envelope")
    }
    documented |= {(s.heading, "") for s in doc if s.type_name}
    assert documented - checker.seen == set(), "tables no output had an object for (add a case that fills them)"
    assert {form for s in doc for form in s.forms} <= forms, "docs/json.md documents forms no case runs"


def test_every_command_that_takes_json_is_a_case() -> None:
    """A new command with `--json` needs a case here (and a section in docs/json.md)."""
    listing = run_cli("--help", env={"COLUMNS": "200"}).out
    commands = re.findall(r"^│ (\w+) ", listing, re.MULTILINE)
    assert "analyze" in commands and "path" in commands, listing
    with_json = {c for c in commands if "--json" in run_cli(c, "--help", env={"COLUMNS": "200"}).out}
    assert with_json == {form.split()[0] for form in CASES.values()}


def test_the_doc_reader_reads_the_doc(doc: list[Section]) -> None:
    """The reader itself: every section with a table, the tables docs/json.md has always had, read right."""
    by_heading = {s.heading: s for s in doc}
    assert by_heading["`analyze`"].tables["repos[]"]["revisions"] == "array of string"
    assert by_heading["`download`"].fields["offline"] == "string or null"
    assert by_heading["`path`"].fields["commit"] == "string"  # four fields in one row
    assert set(by_heading["`consolidate --dry-run`"].tables) >= {"plan.actions[].target", "plan.actions[].keep"}
    assert by_heading["A run: `consolidate`, `apply`, `undo`, `clean`, `prune`"].type_name == "run"
    assert all(s.fields for s in doc), [s.heading for s in doc if not s.fields]
