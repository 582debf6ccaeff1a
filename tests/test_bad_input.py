"""Bad input gets a clear line and a documented exit code, never a traceback, and changes nothing."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelcache.testing import LocalHub
from modelcache.testing.builders import download_to_cache, download_to_local_dir, random_bytes, write_tree

from .machine import NOBODY, Result, assert_same_tree, expected_figures, run_cli, snapshot_tree

EXIT_OK, EXIT_WARNINGS, EXIT_ERROR = 0, 1, 2


@pytest.fixture(autouse=True)
def digest_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "index" / "digests.sqlite"
    monkeypatch.setenv("MODELCACHE_INDEX", str(path))
    return path


def analyze(cache: Path, *models: Path, user: str | None = None, env: dict[str, str] | None = None) -> Result:
    """Run analyze twice (text and JSON); both must agree on the exit code and never trace back."""
    args: list[str | os.PathLike[str]] = ["analyze", "--cache-dir", cache]
    for m in models:
        args += ["--models", m]
    text = run_cli(*args, user=user, env=env)
    as_json = run_cli(*args, "--json", user=user, env=env)
    for result in (text, as_json):
        assert "Traceback" not in result.err and "Traceback" not in result.out
    assert text.code == as_json.code, (text.err, as_json.err)
    if as_json.code in (EXIT_OK, EXIT_WARNINGS):
        json.loads(as_json.out)  # valid JSON whatever the file names
    return as_json


@pytest.fixture
def machine(local_hub: LocalHub, tmp_path: Path) -> tuple[Path, Path]:
    """A cache with two repos and a model folder with a local_dir copy of one of them."""
    cache, models = tmp_path / "cache", tmp_path / "models"
    local_hub.add_commit("org/good", {"model.safetensors": random_bytes(100_000, "good"), "config.json": b"{}"})
    local_hub.add_commit("org/hurt", {"model.safetensors": random_bytes(90_000, "hurt"), "config.json": b"[]"})
    download_to_cache(local_hub, "org/good", cache)
    download_to_cache(local_hub, "org/hurt", cache)
    download_to_local_dir(local_hub, "org/good", models / "good", cache)
    return cache, models


def test_missing_default_cache_folder_is_an_empty_report(tmp_path: Path) -> None:
    """Where huggingface_hub would put its cache (here HF_HUB_CACHE), nothing yet: an empty machine, not an error."""
    result = run_cli("analyze", "--json", "--no-discover", env={"HF_HUB_CACHE": str(tmp_path / "no-cache-yet")})
    assert result.code == EXIT_OK, result.err
    report = result.json()
    assert report["total_bytes"] == 0 and report["repos"] == [] and report["warnings"] == []
    assert report["hf_cache_dir"] == str(tmp_path / "no-cache-yet")


# Every command that takes the option, with what it needs to get as far as reading (or changing) files.
CACHE_DIR_COMMANDS = [
    ("analyze",),
    ("list",),
    ("consolidate", "--dry-run"),
    ("consolidate", "--yes"),
    ("clean", "--dry-run"),
    ("clean", "--yes", "--older-than", "0"),
    ("verify", "--all"),
    ("stores",),
    ("path", "org/good"),
]
STORE_COMMANDS = [c for c in CACHE_DIR_COMMANDS if c[0] != "path"]
MODELS_COMMANDS = [*STORE_COMMANDS, ("download", "org/good"), ("download", "org/good", "--no-reuse")]


def refused_alone(tmp_path: Path, args: list[str], missing: Path, message: str) -> None:
    """The command exits 2 with that one line, prints nothing on stdout, and changes nothing (not even by
    making the missing folder)."""
    env = {"MODELCACHE_STATE": str(tmp_path / "state"), "MODELCACHE_CONFIG": str(tmp_path / "no-config.toml")}
    before = snapshot_tree(tmp_path)
    for as_json in ((), ("--json",)):
        result = run_cli(*args, *as_json, env=env)
        assert (result.code, result.out) == (EXIT_ERROR, ""), (args, result.err, result.out)
        assert result.err.splitlines() == [f"modelcache: error: {message}: {missing}"], args
        assert_same_tree(before, snapshot_tree(tmp_path))  # not even modelcache's state, nor the missing folder


MISSING = [
    *(("--cache-dir", c) for c in CACHE_DIR_COMMANDS),
    *(("--store", c) for c in STORE_COMMANDS),
    *(("--models", c) for c in MODELS_COMMANDS),
]


def missing_folder(option: str, missing: Path) -> tuple[str, str]:
    """What to give `option` to name the folder `missing`, and the start of the error line that says so."""
    return {
        "--cache-dir": (str(missing), "HF cache folder not found (--cache-dir)"),
        "--store": (f"ollama={missing}", "store folder not found (--store ollama)"),
        "--models": (str(missing), "models folder not found (--models)"),
    }[option]


@pytest.mark.parametrize(("option", "command"), MISSING, ids=[f"{o} {' '.join(c)}" for o, c in MISSING])
def test_a_folder_given_explicitly_that_is_not_there_is_an_error(
    machine: tuple[Path, Path], option: str, command: tuple[str, ...]
) -> None:
    cache, models = machine
    missing = cache.parent / "typo"
    value, message = missing_folder(option, missing)
    given = {"--cache-dir": str(cache), **({"--models": str(models)} if command[0] != "path" else {})}
    given[option] = value  # in place of a folder that is there (--store: besides them)
    refused_alone(cache.parent, [*command, *(arg for pair in given.items() for arg in pair)], missing, message)


def test_download_makes_the_cache_folder_it_is_given(local_hub: LocalHub, tmp_path: Path) -> None:
    """The one command for which a --cache-dir that does not exist yet is no typo: it makes the cache."""
    local_hub.add_commit("org/new", {"config.json": b"{}"})
    cache = tmp_path / "new" / "hub"
    result = run_cli("download", "org/new", "--cache-dir", cache, env={"MODELCACHE_STATE": str(tmp_path / "state")})
    assert result.code == EXIT_OK, result.err
    assert Path(result.out.strip()).joinpath("config.json").read_bytes() == b"{}"
    assert Path(result.out.strip()).is_relative_to(cache)


def test_cache_path_that_is_a_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    result = analyze(tmp_path / "file")
    assert result.code == EXIT_ERROR
    assert len(result.err.strip().splitlines()) == 1 and "not a folder" in result.err


def test_broken_snapshot_symlink_reports_the_repo_with_its_damage(machine: tuple[Path, Path]) -> None:
    cache, models = machine
    snapshot = next((cache / "models--org--hurt" / "snapshots").iterdir())
    os.unlink(os.path.realpath(snapshot / "model.safetensors"))
    result = analyze(cache, models)
    assert result.code == EXIT_WARNINGS
    report = result.json()
    repos = {(r["id"], r["store"]): r for r in report["repos"]}
    hurt = repos[("org/hurt", "hf_cache")]
    assert hurt["status"] == "broken" and any("broken symlink" in p for p in hurt["problems"])
    assert repos[("org/good", "hf_cache")]["status"] == "complete"  # one broken link hides nothing else
    assert any("broken symlink" in w["message"] for w in report["warnings"])
    assert {k: report[k] for k in ("hf_cache_bytes", "duplicate_bytes")} == {
        k: expected_figures(cache, [models])[k] for k in ("hf_cache_bytes", "duplicate_bytes")
    }


def test_symlink_loop_and_dangling_link_in_a_model_folder(machine: tuple[Path, Path]) -> None:
    cache, models = machine
    loop = models / "loopy"
    loop.mkdir()
    os.symlink("b", loop / "a")
    os.symlink("a", loop / "b")
    os.symlink("/nonexistent/target", loop / "dangling.safetensors")
    os.symlink("..", loop / "parent-dir-link")  # a directory link: never entered
    result = analyze(cache, models)
    assert result.code == EXIT_WARNINGS
    messages = [w["message"] for w in result.json()["warnings"]]
    assert sum("symlink loop" in m for m in messages) >= 2
    assert result.json()["duplicate_bytes"] == expected_figures(cache, [models])["duplicate_bytes"]


def test_non_utf8_file_names(machine: tuple[Path, Path]) -> None:
    cache, models = machine
    odd = os.path.join(os.fsencode(models), b"odd", b"caf\xe9 \xff\n.safetensors")
    os.makedirs(os.path.dirname(odd))
    shutil.copyfile(models / "good" / "model.safetensors", odd)
    result = analyze(cache, models)
    assert result.code == EXIT_OK
    report = result.json()
    paths = [p for g in report["duplicates"] for p in g["paths"]]
    assert any(p.endswith("caf\\xe9 \\xff\n.safetensors") for p in paths)
    text = run_cli("analyze", "--cache-dir", cache, "--models", models)
    assert "caf\\xe9 \\xff" in text.out


def test_corrupt_metadata_files(machine: tuple[Path, Path]) -> None:
    cache, models = machine
    (models / "good" / ".cache" / "huggingface" / "download" / "model.safetensors.metadata").write_bytes(
        b"\x00\xffgarbage"
    )
    tree = next((cache / "models--org--good" / "trees").iterdir())
    tree.write_text("{not json")
    (cache / "models--org--hurt" / "refs" / "main").write_text("not-a-commit")
    before = snapshot_tree(cache, models)
    result = analyze(cache, models)
    assert result.code == EXIT_WARNINGS
    messages = " | ".join(w["message"] for w in result.json()["warnings"])
    assert "corrupt download metadata" in messages and "corrupt file list" in messages
    assert snapshot_tree(cache, models) == before  # unlike huggingface_hub, reading deletes nothing
    # the copy without its claim is still proven a duplicate by its bytes
    assert result.json()["duplicate_bytes"] == expected_figures(cache, [models])["duplicate_bytes"]


def test_stray_files_with_odd_names_in_the_cache_root(machine: tuple[Path, Path]) -> None:
    cache, models = machine
    (cache / "notes about\nthe cache.txt").write_text("hi")
    (cache / "models--").mkdir()
    (cache / "datasets--..--x").mkdir()
    (cache / ".DS_Store").write_text("ignored silently")
    result = analyze(cache, models)
    assert result.code == EXIT_WARNINGS
    warned = [w["path"] for w in result.json()["warnings"]]
    assert str(cache / "notes about\nthe cache.txt") in warned
    assert str(cache / "models--") in warned and str(cache / "datasets--..--x") in warned
    assert not any(".DS_Store" in p for p in warned)


@pytest.fixture
def world_readable_tmp() -> Iterator[Path]:
    """A folder that another user can read: root reads every file, so tests of unreadable files drop to nobody."""
    path = Path(tempfile.mkdtemp(prefix="modelcache-perm-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_unreadable_file_is_reported_and_skipped(local_hub: LocalHub, world_readable_tmp: Path) -> None:
    cache, models = world_readable_tmp / "cache", world_readable_tmp / "models"
    content = random_bytes(100_000, "perm")
    local_hub.add_commit("org/perm", {"model.safetensors": content})
    download_to_cache(local_hub, "org/perm", cache)
    write_tree(models / "copies", {"readable.bin": content, "secret.bin": content})
    (models / "copies" / "secret.bin").chmod(0o000)
    locked = models / "locked-folder"
    locked.mkdir()
    (locked / "w.bin").write_bytes(content)
    locked.chmod(0o000)
    user = "65534" if os.geteuid() == 0 else None  # nobody
    if user is not None and run_cli("--version", user=user).code != 0:
        pytest.skip("running as root, and user nobody cannot run this Python to see permissions bite")
    for dirpath, dirs, files in os.walk(world_readable_tmp):
        for name in dirs + files:
            p = Path(dirpath, name)
            if p not in (models / "copies" / "secret.bin", locked) and not p.is_symlink():
                p.chmod(p.stat().st_mode | 0o755)
    env = {"MODELCACHE_INDEX": str(world_readable_tmp / "index.sqlite")}
    try:
        result = analyze(cache, models, user=user, env=env)
    finally:
        locked.chmod(0o755)
    assert result.code == EXIT_WARNINGS
    report = result.json()
    warnings = {w["path"]: w["message"] for w in report["warnings"]}
    assert "Permission denied" in warnings[str(models / "copies" / "secret.bin")]
    assert "Permission denied" in warnings[str(locked)]
    assert report["duplicate_bytes"] == len(content)  # the readable copy is still found


def test_unknown_command_and_bad_option_exit_2_with_usage() -> None:
    for args in (["frobnicate"], ["analyze", "--no-such-option"]):
        result = run_cli(*args)
        assert result.code == EXIT_ERROR and "Traceback" not in result.err


def test_python_dash_m_and_version() -> None:
    result = run_cli("--version")
    assert result.code == 0 and result.out.startswith("modelcache ")


def test_models_folder_from_config_file(machine: tuple[Path, Path], tmp_path: Path) -> None:
    cache, models = machine
    config = tmp_path / "config.toml"
    config.write_text(f'models = ["{models}"]\n')
    result = run_cli("analyze", "--json", "--cache-dir", cache, env={"MODELCACHE_CONFIG": str(config)})
    assert result.json()["model_dirs"] == [str(models)]
    config.write_text("models = [unclosed\n")
    bad = run_cli("analyze", "--cache-dir", cache, env={"MODELCACHE_CONFIG": str(config)})
    assert bad.code == EXIT_ERROR and bad.err.startswith("modelcache: error: cannot read config file")


def test_discover_from_config_file(machine: tuple[Path, Path], tmp_path: Path) -> None:
    """`discover = false` in the config keeps the stores found where their tools keep them out (as
    --no-discover); --discover on the command line wins; a value that is not a boolean is one line, exit 2."""
    cache, models = machine
    (tmp_path / "ollama" / "manifests").mkdir(parents=True)
    config = tmp_path / "config.toml"
    env = {"MODELCACHE_CONFIG": str(config), "OLLAMA_MODELS": str(tmp_path / "ollama")}

    def stores(*extra: str) -> list[str]:
        result = run_cli("analyze", "--json", "--cache-dir", cache, "--models", models, *extra, env=env)
        assert result.code in (0, 1), result.err
        return [s["store"] for s in result.json()["stores"]]

    config.write_text("discover = true\n")
    assert "ollama" in stores()
    config.write_text("discover = false\n")
    assert "ollama" not in stores() and "ollama" in stores("--discover")
    config.write_text('discover = "no"\n')
    bad = run_cli("analyze", "--cache-dir", cache, "--models", models, env=env)
    assert bad.code == EXIT_ERROR and bad.err.count("\n") == 1 and "'discover' must be true or false" in bad.err


def test_a_config_in_a_home_that_cannot_be_searched_is_none_but_a_named_one_is_read(shared_tmp: Path) -> None:
    """As nobody with root's HOME (`sudo -u` keeps it), whether ~/.config/modelcache/config.toml exists
    cannot be told: as if there were none. A config named by MODELCACHE_CONFIG that cannot be read is an error."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run a command as nobody")
    home = shared_tmp / "home"
    (home / ".config" / "modelcache").mkdir(parents=True)
    (home / ".config" / "modelcache" / "config.toml").write_text("discover = false\n")
    home.chmod(0o700)
    cache = shared_tmp / "cache"
    cache.mkdir()
    env = {"HOME": str(home), "XDG_CONFIG_HOME": ""}
    result = run_cli("analyze", "--json", "--cache-dir", cache, "--no-discover", env=env, user=NOBODY)
    assert result.code in (0, 1), result.err  # (1: its digest index under that HOME cannot be written)
    assert not [w for w in result.json()["warnings"] if "config file" in w["message"]]
    named = run_cli(
        "analyze", "--cache-dir", cache, env={**env, "MODELCACHE_CONFIG": str(home / "c.toml")}, user=NOBODY
    )
    assert named.code == EXIT_ERROR and "cannot read config file" in named.err and named.err.count("\n") == 1


def test_dot_models_is_the_default(machine: tuple[Path, Path], tmp_path: Path) -> None:
    cache, models = machine
    result = run_cli("analyze", "--json", "--cache-dir", cache, env={"MODELCACHE_CONFIG": str(tmp_path / "none")})
    assert result.json()["model_dirs"] == []
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        result = run_cli("analyze", "--json", "--cache-dir", cache, env={"MODELCACHE_CONFIG": str(tmp_path / "none")})
    finally:
        os.chdir(cwd)
    assert result.json()["model_dirs"] == [str(models)]
    assert result.json()["duplicate_bytes"] == expected_figures(cache, [models])["duplicate_bytes"]


def said_why(result: Result, code: int, line: str) -> dict[str, Any]:
    """A non-zero exit under --json: stdout is the JSON alone, stderr one line saying why."""
    assert result.code == code, result.err + result.out
    assert result.err.splitlines() == [f"modelcache: {line}"]
    data: dict[str, Any] = result.json()
    return data


def test_a_non_zero_exit_under_json_says_why_on_stderr(machine: tuple[Path, Path], tmp_path: Path) -> None:
    cache, models = machine
    roots = ["--cache-dir", str(cache), "--models", str(models), "--no-discover"]
    env = {"MODELCACHE_STATE": str(tmp_path / "state")}
    os.symlink("/nonexistent/target", models / "good" / "dangling.safetensors")
    for command in (("analyze",), ("list",)):
        result = run_cli(*command, "--json", *roots, env=env)
        report = said_why(result, EXIT_WARNINGS, "1 warning; see `warnings` in the JSON")
        assert len(report["warnings"]) == 1
    os.unlink(models / "good" / "dangling.safetensors")
    for command in (("analyze",), ("list",), ("verify", "--all")):  # exit 0: nothing on stderr
        assert run_cli(*command, "--json", *roots, env=env).err == ""

    # verify: a blob whose bytes no longer match its name
    blob = os.path.realpath(next((cache / "models--org--hurt" / "snapshots").iterdir()) / "model.safetensors")
    os.chmod(blob, 0o644)
    with open(blob, "r+b") as f:
        f.write(b"rot")
    report = said_why(run_cli("verify", "--all", "--json", *roots, env=env), EXIT_WARNINGS,
                      "1 corrupt file; see `corrupt` in the JSON")  # fmt: skip
    assert len(report["corrupt"]) == 1

    # a run with a change skipped: a saved plan whose copy changed since (delete mode: auto, as root,
    # leaves a local copy alone, and hard links as root state their risk on stderr)
    plan = tmp_path / "plan.json"
    dry = run_cli("consolidate", "--mode", "delete", "--dry-run", "--json", "--plan-out", plan, *roots, env=env)
    assert dry.code == EXIT_OK and dry.err == "", dry.err
    copy = models / "good" / "model.safetensors"
    os.utime(copy, (1, 1))
    report = said_why(run_cli("apply", str(plan), "--yes", "--json", env=env), EXIT_WARNINGS,
                      "1 change skipped; see `outcomes` in the JSON")  # fmt: skip
    assert report["skipped"] == 1 and report["failed"] == 0

    # path: a repo not in the cache is exit 1 with its one line, and no JSON
    result = run_cli("path", "org/elsewhere", "--json", "--cache-dir", cache, env=env)
    assert (result.code, result.out) == (EXIT_WARNINGS, "")
    assert result.err.splitlines() == [f"modelcache: error: org/elsewhere is not in the cache {cache}"]


def test_a_failed_change_under_json_says_so_on_stderr(
    machine: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A removal that fails (a fault injected at it): exit 2, and stderr says how many and where."""
    import errno

    from modelcache.cli import main

    from .faults import inject

    cache, _models = machine
    monkeypatch.setenv("MODELCACHE_STATE", str(tmp_path / "state"))
    orphan = cache / "models--org--good" / "blobs" / ("0" * 64)
    orphan.write_bytes(b"no snapshot points to me")
    capsys.readouterr()
    with inject(op="remove", path=str(orphan), code=errno.EACCES), pytest.raises(SystemExit) as ended:
        main(["clean", "--yes", "--json", "--older-than", "0", "--cache-dir", str(cache), "--no-discover"])
    out, err = capsys.readouterr()
    assert ended.value.code == EXIT_ERROR
    assert err.splitlines() == ["modelcache: 1 change failed; see `outcomes` in the JSON"]
    assert json.loads(out)["failed"] == 1 and orphan.exists()
