"""The layout is the architecture: rules about folders, checked on the source, not hand-kept lists.

1. Nothing outside `act/` imports the acting package, except the CLI and the download entry point.
2. The acting package never imports the presentation (CLI, report, demo).
3. Every call that removes, renames, links, copies or changes the metadata of a file sits in
   `act/fsops.py` (the test helpers in `testing/` excepted): found in the syntax tree, so a new
   `os.unlink` anywhere else fails here.
4. The neutral modules import nothing of modelcache but each other.
5. No module is over 700 lines.
6. Every read of a file's bytes opens it through `common.open_quietly` (its access time kept): an
   `os.open` without a flag to write, create or open a folder, or a builtin `open` of a path in a
   binary read mode, found anywhere else fails here.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).parents[1] / "src" / "modelcache"
# Who may import the acting package from outside it: the commands, and the one module through
# which a download places reused bytes (`hub/fetch.py`, the download entry point).
MAY_IMPORT_ACT = {"cli.py", "cli_changes.py", "cli_download.py", "cli_report.py", "cli_prune.py", "hub/fetch.py"}
# The report renders what a run did: it names the acting side's result types in annotations only.
MAY_NAME_ACT_TYPES = {"report.py", "report_changes.py"}
PRESENTATION = {
    "cli", "cli_common", "cli_changes", "cli_download", "cli_list", "cli_report", "cli_prune",
    "report", "report_format", "report_changes", "report_text", "html_report", "html_assets", "demo",
}  # fmt: skip
NEUTRAL = {"common.py", "errors.py", "locks.py"}
WRITER = "act/fsops.py"
EXEMPT_WRITERS = ("testing/",)  # LocalHub and the builders make the trees the tests read

# os.* and shutil.* calls that remove, rename, link, copy or change a file.
OS_WRITES = {
    "unlink", "remove", "rmdir", "removedirs", "rename", "renames", "replace", "link", "symlink",
    "truncate", "ftruncate", "chmod", "fchmod", "lchmod", "chown", "fchown", "lchown", "utime",
    "copy_file_range", "sendfile",
}  # fmt: skip
SHUTIL_WRITES = {"rmtree", "move", "copy", "copy2", "copyfile", "copytree", "copymode", "copystat", "chown"}
# pathlib.Path methods; `replace` with one argument (str.replace takes two).
PATH_WRITES = {"unlink", "rmdir", "rename", "symlink_to", "hardlink_to", "link_to", "chmod", "lchmod", "touch"}


def modules() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(SRC.rglob("*.py")):
        yield path.relative_to(SRC).as_posix(), ast.parse(path.read_text(), str(path))


def type_checking_blocks(tree: ast.Module) -> set[ast.AST]:
    """The statements under `if TYPE_CHECKING:`: imported for annotations only, never at run time."""
    return {
        stmt
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
        for stmt in node.body
    }


def imported_modules(rel: str, tree: ast.Module, *, runtime_only: bool = False) -> set[str]:
    """Every modelcache module `rel` imports, as dotted names under `modelcache` (relative imports resolved);
    with `runtime_only`, not those imported for annotations only."""
    package = ["modelcache", *rel.split("/")[:-1]]
    found: set[str] = set()
    skipped = type_checking_blocks(tree) if runtime_only else set()
    for node in ast.walk(tree):
        if node in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "modelcache")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            if module.split(".")[0] != "modelcache":
                continue
            found.add(module)
            found.update(f"{module}.{a.name}" for a in node.names)  # `from . import fsops`
    return found


def test_only_the_commands_and_the_download_entry_point_import_the_acting_package() -> None:
    offenders = []
    for rel, tree in modules():
        if rel.startswith("act/") or rel in MAY_IMPORT_ACT:
            continue
        imported = imported_modules(rel, tree, runtime_only=rel in MAY_NAME_ACT_TYPES)
        acting = {m for m in imported if m == "modelcache.act" or m.startswith("modelcache.act.")}
        if acting:
            offenders.append(f"{rel} imports {sorted(acting)}")
    assert not offenders


def test_the_acting_package_never_imports_the_presentation() -> None:
    for rel, tree in modules():
        if rel.startswith("act/"):
            shown = {m for m in imported_modules(rel, tree) if m.split(".")[1:2] and m.split(".")[1] in PRESENTATION}
            assert not shown, f"{rel} imports {sorted(shown)}"


def test_neutral_modules_import_nothing_of_modelcache_but_each_other() -> None:
    neutral = {"modelcache." + n.removesuffix(".py") for n in NEUTRAL}
    for rel, tree in modules():
        if rel in NEUTRAL:
            assert imported_modules(rel, tree) <= neutral, rel


def file_changing_calls(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """(line, call) for every call that removes, renames, links, copies or changes a file."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        name, owner = node.func.attr, node.func.value
        owner_name = owner.id if isinstance(owner, ast.Name) else None
        if owner_name == "os" and name in OS_WRITES:
            yield node.lineno, f"os.{name}"
        elif owner_name == "shutil" and name in SHUTIL_WRITES:
            yield node.lineno, f"shutil.{name}"
        elif owner_name not in ("os", "shutil") and name in PATH_WRITES:
            yield node.lineno, f".{name}()"
        elif owner_name not in ("os", "shutil") and name == "replace" and len(node.args) == 1 and not node.keywords:
            yield node.lineno, ".replace(path)"


def test_only_fsops_changes_files() -> None:
    offenders = [
        f"{rel}:{line}: {call}"
        for rel, tree in modules()
        if rel != WRITER and not rel.startswith(EXEMPT_WRITERS)
        for line, call in file_changing_calls(tree)
    ]
    assert not offenders, "only act/fsops.py may remove, rename, link or copy files:\n" + "\n".join(offenders)


@pytest.mark.parametrize(
    "code",
    [
        "import os\nos.unlink(p)",
        "import shutil\nshutil.rmtree(p)",
        "from pathlib import Path\nPath(p).unlink()",
        "path.replace(target)",
        "os.rename(a, b)",
        "os.link(a, b)",
    ],
)
def test_the_file_change_finder_finds_each_kind_of_call(code: str) -> None:
    assert list(file_changing_calls(ast.parse(code)))


def test_the_file_change_finder_leaves_string_replace_alone() -> None:
    assert not list(file_changing_calls(ast.parse("name.replace('-', '_')\nos.path.join(a, b)")))


def test_no_module_is_over_700_lines() -> None:
    long = {rel: n for rel, _ in modules() if (n := len((SRC / rel).read_text().splitlines())) > 700}
    assert not long


# Who may open a file to read it without `open_quietly`, and why: never a model file.
QUIET_READER = "common.py"
MAY_READ_PLAINLY = {
    "locks.py": "opens download lock files only to flock them; nothing is read",
    "act/journal.py": "reads modelcache's own journals",
}
NOT_A_READ = {"O_WRONLY", "O_RDWR", "O_CREAT", "O_DIRECTORY"}


def plain_reads(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """(line, call) for every open of a file to read its bytes that does not go through `open_quietly`."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == "open" and getattr(func.value, "id", "") == "os":
            flags = {n.attr for arg in node.args[1:2] for n in ast.walk(arg) if isinstance(n, ast.Attribute)}
            if not flags & NOT_A_READ:
                yield node.lineno, "os.open"
        elif isinstance(func, ast.Name) and func.id == "open" and node.args:
            modes = [*node.args[1:2], *(k.value for k in node.keywords if k.arg == "mode")]
            mode = modes[0] if modes else None
            text = mode.value if isinstance(mode, ast.Constant) and isinstance(mode.value, str) else "r"
            opens_a_path = not isinstance(node.args[0], ast.Call)  # open(open_quietly(path)) takes its descriptor
            if opens_a_path and "b" in text and not set(text) & set("wax+"):
                yield node.lineno, f"open(..., {text!r})"


def test_every_read_of_a_files_bytes_keeps_its_access_time() -> None:
    offenders = [
        f"{rel}:{line}: {call}"
        for rel, tree in modules()
        if rel != QUIET_READER and rel not in MAY_READ_PLAINLY and not rel.startswith(EXEMPT_WRITERS)
        for line, call in plain_reads(tree)
    ]
    assert not offenders, "open files to read through common.open_quietly:\n" + "\n".join(offenders)


@pytest.mark.parametrize(
    ("code", "found"),
    [
        ("os.open(p, os.O_RDONLY)", True),
        ("os.open(p, flags)", True),
        ("open(p, 'rb')", True),
        ("open(p, mode='rb', buffering=0)", True),
        ("os.open(p, os.O_WRONLY | os.O_CREAT)", False),
        ("os.open(p, os.O_RDONLY | os.O_DIRECTORY)", False),
        ("open(p, 'wb')", False),
        ("open(open_quietly(p), 'rb')", False),
        ("open(p, encoding='utf-8')", False),
    ],
)
def test_the_plain_read_finder(code: str, found: bool) -> None:
    assert bool(list(plain_reads(ast.parse(code)))) == found
