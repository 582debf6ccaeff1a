"""The properties of issue 8, through the CLI, for every command test_properties.py does not run.

Each example builds a random machine (tests/strategies.py: the HF cache and a local_dir copy
made by the real client through LocalHub, with drawn copies, links, odd names, Ollama, LM
Studio, ModelScope and llama.cpp stores, interrupted downloads, corrupt metadata and, where they
bite, unreadable files and read-only folders), runs `python -m modelcache` in a subprocess (as
user nobody when the tests run as root, so that permission bits count) and checks:

1. list, verify and analyze report what an independent computation from the files says;
2. the read-only commands and every dry run change nothing (path, type, size, mtime, inode,
   link text, mode);
3. no path's bytes are lost: clean removes only garbage; apply of a saved plan keeps every
   path's bytes (or journals a removed copy whose bytes the cache keeps), never acts on a file
   that changed after the plan was saved, and undo gives back the exact tree; download adds
   the Hub's bytes and changes nothing else;
4. nothing outside the roots changes (a sentinel reachable only through symlinks);
5. no traceback: every exit code is a documented one, and every failure one line.

Example counts are CI-sized (see `examples`); the big profile: MODELCACHE_PROPERTY_EXAMPLES=200.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from modelcache.plan import Mode
from modelcache.testing import LocalHub

from .machine import (
    DOCUMENTED_EXITS,
    Result,
    assert_same_tree,
    assert_tidy,
    expected_figures,
    run_cli,
    snapshot_tree,
)
from .strategies import (
    CLI_USER,
    HUB_ONLY,
    PERMS_BITE,
    Machine,
    Spec,
    build,
    contents,
    examples,
    expected_garbage,
    hand_over,
    hf_repo_sizes,
    outside_state,
    specs,
)

MACHINES = specs(perms=PERMS_BITE)
FEW = {"deadline": None, "suppress_health_check": [HealthCheck.function_scoped_fixture]}


def cli(m: Machine, *args: str, env: dict[str, str] | None = None) -> Result:
    """Property 5 on every run: a documented exit code, no traceback, failures in one line."""
    result = run_cli(*args, env={**m.env, **(env or {})}, user=CLI_USER)
    assert_tidy(result, DOCUMENTED_EXITS, " ".join(args[:2]))
    return result


def machine(template: Path, spec: Spec) -> Machine:
    m = build(template, spec)
    hand_over(m)
    return m


def unchanged(m: Machine, tree: dict[str, tuple[Any, ...]], outside: tuple[Any, ...], what: str) -> None:
    """Properties 2 and 4: every path under the roots as it was, and the sentinel outside too."""
    now = snapshot_tree(*m.roots)
    assert now == tree, (what, {p for p in set(now) ^ set(tree)} | {p for p in tree if now.get(p) != tree[p]})
    assert outside_state(m) == outside, what


def under(path: str | Path, folders: list[Path]) -> bool:
    return any(Path(path).is_relative_to(f) for f in folders)


# -- list, verify, analyze and every dry run: read-only ---------------------------------------------------


EVERY_STORE = [("ollama", "A"), ("lmstudio", "A-hardlink"), ("modelscope", "B"), ("llamacpp", "SMALL")]
BIT_ROT = [("local-bitrot", "empty"), ("bitrot", "empty"), ("llamacpp-etag", "empty")]


@settings(max_examples=examples(10), **FEW)
@example(spec=Spec(stores=EVERY_STORE, corrupt=BIT_ROT))  # every corrupt file verify must name
@given(spec=MACHINES)
def test_read_only_commands_report_the_files_and_change_nothing(template: Path, spec: Spec) -> None:
    m = machine(template, spec)
    try:
        tree, outside = snapshot_tree(*m.roots), outside_state(m)
        hidden = [p for p in m.locked if p.is_dir() and p.stat().st_mode & 0o500 != 0o500]

        listed = cli(m, "list", "--json", *m.where())
        unchanged(m, tree, outside, "list")
        rows = listed.json()["repos"]
        if not any(under(p, [m.cache]) for p in m.locked):  # (permission faults in the cache hide some of it)
            assert {r["id"]: r["size_bytes"] for r in rows if r["store"] == "hf_cache"} == hf_repo_sizes(m)
        ollama = {r["id"] for r in rows if r["store"] == "ollama" and r["type"] == "model"}
        assert ollama == expected_ollama_models(m, hidden)
        lmstudio = {r["id"] for r in rows if r["store"] == "lmstudio"}
        assert lmstudio == expected_lmstudio_repos(m, hidden)

        event(f"list exit {listed.code}")
        verified = cli(m, "verify", "--all", "--json", *m.where())
        unchanged(m, tree, outside, "verify")
        corrupt = {c["path"] for c in verified.json()["corrupt"]}
        assert corrupt == {str(p) for p in m.corrupt if readable(p, m)}
        assert verified.code == (1 if corrupt or verified.json()["warnings"] else 0)

        analyzed = cli(m, "analyze", "--json", *m.where())
        unchanged(m, tree, outside, "analyze")
        figures = expected_figures(m.cache, [m.models], m.stores)
        report = analyzed.json()
        for key in ("duplicate_bytes", "total_bytes", "hf_cache_bytes", "local_bytes"):
            assert report[key] == figures[key], key

        for args in (["clean", "--dry-run"], ["consolidate", "--dry-run", "--plan-out", str(m.state / "plan.json")]):
            dry = cli(m, *args, "--json", *m.where())
            assert dry.code == 0, dry.err
            unchanged(m, tree, outside, args[0] + " --dry-run")
    finally:
        m.cleanup()


def readable(path: Path, m: Machine) -> bool:
    """Whether the files' owner can read `path` (every folder on the way searchable, the file readable)."""
    p = path
    while p != m.root:
        mode = p.stat().st_mode
        if (p == path and not mode & 0o400) or (p != path and mode & 0o100 == 0):
            return False
        p = p.parent
    return True


def expected_ollama_models(m: Machine, hidden: list[Path]) -> set[str]:
    """Each manifest that is a JSON object naming its layers: `registry.ollama.ai/library/X/latest` is `X:latest`."""
    found = set()
    root = m.stores.get("ollama")
    manifests = root / "manifests" / "registry.ollama.ai" / "library" if root else None
    if manifests is None or not manifests.is_dir() or under(manifests, hidden) or root in hidden:
        return found
    for model in manifests.iterdir():
        try:
            data = json.loads((model / "latest").read_bytes())
            assert all(str(layer["digest"]).startswith("sha256:") for layer in data["layers"])
            [int(layer["size"]) for layer in data["layers"]]
        except (ValueError, KeyError, TypeError, AssertionError):
            continue
        found.add(f"{model.name}:latest")
    return found


def expected_lmstudio_repos(m: Machine, hidden: list[Path]) -> set[str]:
    root = m.stores.get("lmstudio")
    if root is None or root in hidden:
        return set()
    return {f"pub/{r.name}" for r in (root / "pub").iterdir() if r not in hidden} if (root / "pub").is_dir() else set()


# -- clean -------------------------------------------------------------------------------------------------


@settings(max_examples=examples(15), **FEW)
@example(spec=Spec(corrupt=[("ref", "truncated")]), older_than="1h", revisions=True)
@given(spec=MACHINES, older_than=st.sampled_from(["1h", "0"]), revisions=st.booleans())
def test_clean_removes_only_garbage(template: Path, spec: Spec, older_than: str, revisions: bool) -> None:
    m = machine(template, spec)
    try:
        tree, outside, before = snapshot_tree(*m.roots), outside_state(m), contents(*m.roots)
        garbage = expected_garbage(m, 3600 if older_than == "1h" else 0, revisions)
        assert {str(p) for p in m.old_garbage} <= garbage  # the independent computation sees what was drawn
        options = ["--older-than", older_than, *(["--revisions"] if revisions else []), "--json", *m.where()]
        cli(m, "clean", "--dry-run", *options)
        unchanged(m, tree, outside, "clean --dry-run")
        result = cli(m, "clean", "--yes", *options)
        after = contents(*m.roots)
        gone = set(before) - set(after)
        event(f"clean removed {'nothing' if not gone else 'something'}, exit {result.code}")
        assert gone <= garbage, gone - garbage
        assert set(after) <= set(before)  # clean adds nothing
        for path in after:
            assert after[path] == before[path], path  # every path left reads its old bytes
        for path in m.young_garbage if older_than == "1h" else []:
            assert str(path) in after, f"young {path} removed"
        if result.code == 0:  # nothing failed or was skipped: everything old that the user can reach is gone
            locked_dirs = [p for p in m.locked if p.is_dir()]
            for path in m.old_garbage:
                assert str(path) not in after or under(path, locked_dirs), path
        assert outside_state(m) == outside
    finally:
        m.cleanup()


# -- consolidate --plan-out, then apply of the saved plan, then undo -------------------------------------

TAMPERING = st.sampled_from(["same-size", "append", "remove", "outside"])
# (which action, how, its target or the copy it keeps)
TAMPER = st.lists(st.tuples(st.integers(0, 20), TAMPERING, st.sampled_from(["target", "keep"])), max_size=2)


@settings(max_examples=examples(15), **FEW)
@example(  # copies in every store, bit rot, and a saved plan whose kept copy and a target changed
    spec=Spec(extras=[("copy", "A", "c.bin", "plain"), ("copy", "B", "d.bin", "deep/er")], stores=EVERY_STORE,
              corrupt=BIT_ROT),
    mode=Mode.AUTO, tamper=[(0, "same-size", "keep"), (1, "outside", "target")], direct=False, tidy=True,
)  # fmt: skip
@example(  # regression: a failure's reason named `line\nbreak.bin` in two lines (report.one_line)
    spec=Spec(extras=[("copy", "A", "line\nbreak.bin", "plain")], perms=[("read-only-dir", "models/plain")]),
    mode=Mode.DELETE, tamper=[], direct=False, tidy=False,
)  # fmt: skip
@given(spec=MACHINES, mode=st.sampled_from(list(Mode)), tamper=TAMPER, direct=st.booleans(), tidy=st.booleans())
def test_consolidate_and_apply_of_a_saved_plan_keep_every_byte_and_undo_restores(
    template: Path, spec: Spec, mode: Mode, tamper: list[tuple[int, str, str]], direct: bool, tidy: bool
) -> None:
    """`consolidate --yes` (direct), or `consolidate --dry-run --plan-out` then `apply` with drawn targets
    changed in between; with or without --remove-empty-dirs (tidy); then undo."""
    m = machine(template, spec)
    plan_file = m.state / "plan.json"
    options = ["--json", *(["--remove-empty-dirs"] if tidy else [])]
    try:
        tree, outside, before = snapshot_tree(*m.roots), outside_state(m), contents(*m.roots)
        changed: set[int] = set()
        if direct:
            result = cli(m, "consolidate", "--yes", "--mode", mode.value, "--plan-out", str(plan_file), *options,
                         *m.where())  # fmt: skip
        else:
            saved = cli(m, "consolidate", "--dry-run", "--json", "--mode", mode.value, "--plan-out", str(plan_file),
                        *m.where())  # fmt: skip
            assert saved.code == 0, saved.err
            unchanged(m, tree, outside, "consolidate --dry-run --plan-out")
            to_run = [a for a in json.loads(plan_file.read_text())["actions"] if a["kind"] != "skip"]
            changed = tamper_with(m, to_run, tamper)
            tree, before = snapshot_tree(*m.roots), contents(*m.roots)
            result = cli(m, "apply", "--yes", str(plan_file), *options)
        outcomes = {o["action"]: o for o in result.json()["outcomes"]}
        event(f"{'consolidate' if direct else 'apply'}: {'some' if result.json()['done'] else 'no'} change done")
        event(f"files changed after the plan: {'yes' if changed else 'no'}")
        after = contents(*m.roots)
        targets = {a["id"]: a["target"]["path"] for a in json.loads(plan_file.read_text())["actions"]}
        removed = {targets[i] for i, o in outcomes.items() if o["status"] == "done" and o["method"] == "delete"}
        cache_bytes = {data for p, (_k, data) in after.items() if p.startswith(str(m.cache))}
        for path, (_kind, data) in before.items():
            if path in removed:  # journaled, and its bytes are still in the cache
                assert not os.path.lexists(path) and data in cache_bytes, path
            elif data is not None:
                assert after[path][1] == data, path
        for action_id in changed:  # a file changed after the plan was saved is never acted on
            assert outcomes[action_id]["status"] != "done", outcomes[action_id]
        assert outside_state(m) == outside
        assert not [p for p in after if os.path.basename(p).startswith(".modelcache-")
                    and Path(p) not in m.drawn_temp_files]  # fmt: skip

        if result.json()["done"]:
            undone = cli(m, "undo", "--json")
            assert undone.code == 0, undone.out
        assert_same_tree(tree, snapshot_tree(*m.roots))
        assert contents(*m.roots) == before
        assert outside_state(m) == outside
    finally:
        m.cleanup()


def tamper_with(m: Machine, actions: list[dict[str, Any]], tamper: list[tuple[int, str, str]]) -> set[int]:
    """Change drawn files of a saved plan (a copy to replace, or the copy it keeps): other bytes of the
    same size and mtime, more bytes, the file gone, or the file swapped for a symlink to the sentinel
    outside the roots. Returns the actions whose files changed."""
    changed: set[int] = set()
    tampered: set[str] = set()
    for index, how, side in tamper:
        if not actions:
            break
        path = actions[index % len(actions)][side]["path"]
        if path in tampered or not os.path.isfile(path) or os.path.islink(path):
            continue  # changed already (twice would flip the byte back)
        tampered.add(path)
        st_ = os.lstat(path)
        if how == "same-size":
            data = bytearray(Path(path).read_bytes())
            data[0] ^= 0xFF
            os.chmod(path, st_.st_mode | 0o200)
            Path(path).write_bytes(bytes(data))
            os.chmod(path, st_.st_mode)
            os.utime(path, ns=(st_.st_atime_ns, st_.st_mtime_ns))
        elif how == "append":
            os.chmod(path, st_.st_mode | 0o200)
            with open(path, "ab") as f:
                f.write(b"more")
            os.chmod(path, st_.st_mode)
        elif how == "remove":
            os.remove(path)
        else:
            os.remove(path)
            os.symlink(m.sentinel, path)
        if CLI_USER is not None and os.path.lexists(path):
            os.chown(path, int(CLI_USER), int(CLI_USER), follow_symlinks=False)
        changed |= {a["id"] for a in actions if path in (a["target"]["path"], a["keep"]["path"])}
    return changed


# -- download from LocalHub into the generated cache ------------------------------------------------------


@settings(max_examples=examples(10), **FEW)
@example(spec=Spec(stores=EVERY_STORE, corrupt=[("ref", "garbage-json"), ("local-bitrot", "empty")]), repo="org/one",
         reuse=True)  # fmt: skip
@given(spec=MACHINES, repo=st.sampled_from(["org/four", "org/one", "org/three"]), reuse=st.booleans())
def test_download_adds_the_hubs_bytes_and_changes_nothing_else(
    template: Path, prop_hub: LocalHub, spec: Spec, repo: str, reuse: bool
) -> None:
    m = machine(template, spec)
    try:
        tree, outside, before = snapshot_tree(*m.roots), outside_state(m), contents(*m.roots)
        result = cli(m, "download", repo, "--json", "--cache-dir", str(m.cache), "--models", str(m.models),
                     *([] if reuse else ["--no-reuse"]), env={"HF_ENDPOINT": prop_hub.url})  # fmt: skip
        repo_dir = m.cache / ("models--" + repo.replace("/", "--"))
        event(f"download exit {result.code}")
        if result.code in (0, 1):
            snapshot = Path(result.json()["path"])
            commit = prop_hub.commit_sha(repo)
            assert snapshot == repo_dir / "snapshots" / commit
            files = HUB_ONLY if repo == "org/four" else {p: prop_hub.file(repo, p).content for p in hub_paths(repo)}
            for name, content in files.items():
                assert (snapshot / name).read_bytes() == content, name
        now, after = snapshot_tree(*m.roots), contents(*m.roots)
        own = [repo_dir, m.cache / ".locks" / repo_dir.name]
        for path, entry in tree.items():
            if under(path, [repo_dir / "refs"]):
                continue  # the download writes its ref (a corrupt one is made right)
            assert path in now, f"{path} gone"
            assert after[path][1] == before[path][1], path  # same bytes
            if not under(path, own) and not stat.S_ISDIR(entry[0]):  # outside the downloaded repo, the same entry
                assert now[path] == entry, path
        new = set(now) - set(tree)
        assert all(under(p, own) for p in new), sorted(p for p in new if not under(p, own))
        assert outside_state(m) == outside
    finally:
        m.cleanup()


def hub_paths(repo: str) -> list[str]:
    return {"org/one": ["a.safetensors", "config.json"], "org/three": ["b.bin", "config.json"]}[repo]
