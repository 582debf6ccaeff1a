"""`modelcache download`, `modelcache path` and the download API, against LocalHub and the real client.

Every download goes through `huggingface_hub.snapshot_download` to a LocalHub on 127.0.0.1;
LocalHub's request log says which bytes crossed the network. `path` and
`get_cached_model_path` run with HF_HUB_OFFLINE=1 and LocalHub stopped.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import hf_hub_download

from modelcache.act import fsops
from modelcache.download import (
    DownloadError,
    FixedModelDownloadManager,
    InvalidRepoId,
    find_cached_snapshot,
    get_cached_model_path,
)
from modelcache.hub import fetch
from modelcache.report import format_size
from modelcache.testing import LocalHub
from modelcache.testing.builders import (
    download_to_cache,
    download_to_local_dir,
    interrupted_download,
    random_bytes,
    write_tree,
)

from .machine import Machine as BaseMachine
from .machine import Result, small_tmpfs

W = random_bytes(1_500_000, "shared-weights")
ADAPTER = random_bytes(200_000, "adapter")
BASE = {"config.json": b'{"base": 1}', "model.safetensors": W}
FT = {
    "config.json": b'{"ft": 2}',
    "model.safetensors": W,  # the same bytes as org/base's weights
    "adapter.safetensors": ADAPTER,
    "sub/notes.txt": b"fine-tuned on our data\n",
}


def total(files: dict[str, bytes]) -> int:
    return sum(len(c) for c in files.values())


@dataclass(frozen=True)
class Machine(BaseMachine):
    """A tmp machine: an HF cache, a working folder the CLI runs from, modelcache's own state, and the CLI's
    environment."""

    hub_url: str

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def cwd(self) -> Path:
        return self.work

    def env(self) -> dict[str, str]:
        return {
            **super().env(),
            "HF_ENDPOINT": self.hub_url,
            "HF_HUB_CACHE": str(self.cache),
            "MODELCACHE_CONFIG": str(self.root / "no-config.toml"),
        }

    def snapshot(self, repo_id: str, commit: str, repo_type: str = "model") -> Path:
        folder = f"{repo_type}s--" + repo_id.replace("/", "--")
        return Path(os.path.realpath(self.cache)) / folder / "snapshots" / commit


@pytest.fixture
def machine(local_hub: LocalHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Machine:
    m = Machine(tmp_path / "machine", local_hub.url)
    m.work.mkdir(parents=True)
    for name, value in m.env().items():
        if name != "HF_ENDPOINT":  # in-process calls pass the endpoint; the module constant is read at import
            monkeypatch.setenv(name, value)
    return m


def resolve_gets(hub: LocalHub) -> list[str]:
    """Repo file paths the hub sent bodies for (GET /resolve/), in order."""
    return [r.path.split("/resolve/", 1)[1].split("/", 1)[1] for r in hub.request_log if _is_file_get(r)]


def served_bytes(hub: LocalHub) -> int:
    return sum(r.bytes_sent for r in hub.request_log if _is_file_get(r))


def _is_file_get(r: Any) -> bool:
    return bool(r.method == "GET" and "/resolve/" in r.path)


def files_under(root: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of every regular file under `root`."""
    found = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if os.path.isfile(path) and not os.path.islink(path):
                found[path] = (st.st_size, st.st_mtime_ns)
    return found


def assert_nothing_half_written(cache: Path) -> None:
    """No partial download, no temporary file of ours; every blob holds the bytes its name says."""
    for dirpath, _dirs, names in os.walk(cache):
        for name in names:
            assert not name.endswith(".incomplete"), os.path.join(dirpath, name)
            assert not name.startswith(".modelcache-"), os.path.join(dirpath, name)
            if os.path.basename(dirpath) == "blobs" and "--" in os.path.basename(os.path.dirname(dirpath)):
                data = Path(dirpath, name).read_bytes()
                if len(name) == 64:
                    assert hashlib.sha256(data).hexdigest() == name
                else:
                    assert hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest() == name


def assert_snapshot_holds(snapshot: Path, files: dict[str, bytes]) -> None:
    for rel, content in files.items():
        assert (snapshot / rel).read_bytes() == content, rel


# -- download ---------------------------------------------------------------------------------------------


def test_download_fills_only_the_cache_and_a_second_run_fetches_nothing(local_hub: LocalHub, machine: Machine) -> None:
    commit = local_hub.add_commit("org/ft", FT)
    (machine.work / "models").mkdir()  # the folder the old download manager wrote into
    outside = files_under(machine.root)

    result = machine.cli("download", "org/ft")
    assert result.code == 0, result.err
    snapshot = machine.snapshot("org/ft", commit)
    assert result.out == f"{snapshot}\n"  # stdout is the path alone
    assert_snapshot_holds(snapshot, FT)
    assert f"downloaded {format_size(total(FT))} ({total(FT):,} bytes), reused 0B (0 bytes)" in result.err
    assert served_bytes(local_hub) == total(FT)
    assert_nothing_half_written(machine.cache)

    # No folder but the cache gained a byte (modelcache's own digest index and journal live in state/).
    ours = (str(machine.cache), str(machine.state))
    after = {p: v for p, v in files_under(machine.root).items() if not p.startswith(ours)}
    assert after == outside
    assert not any((machine.work / "models").iterdir())

    local_hub.clear_log()
    again = machine.cli("download", "org/ft", "--json")
    assert again.code == 0, again.err
    report = again.json()
    assert report["bytes_downloaded"] == 0 and report["bytes_reused"] == 0
    assert report["bytes_present"] == report["bytes_total"] == total(FT)
    assert resolve_gets(local_hub) == []

    local_hub.clear_log()  # a commit never changes: with its file list cached, not even one request
    pinned = machine.cli("download", "org/ft", "--revision", commit)
    assert pinned.code == 0 and pinned.out == f"{snapshot}\n"
    assert local_hub.request_log == []


def test_dropped_connection_then_a_second_run_fetches_only_the_missing_file(
    local_hub: LocalHub, machine: Machine
) -> None:
    commit = local_hub.add_commit("org/ft", FT)
    # Every transfer of the adapter drops halfway (huggingface_hub retries within the call, then gives up).
    local_hub.fail_after("adapter.safetensors", len(ADAPTER) // 2, times=None)

    first = machine.cli("download", "org/ft")
    assert first.code == 2
    assert first.err.startswith("modelcache: error: the connection to the Hub at ")
    assert "3 of 4 file(s) are in the cache" in first.err and "run the same command again" in first.err
    assert first.err.count("\n") == 1 and first.out == ""
    assert_nothing_half_written(machine.cache)
    incomplete = machine.cli("path", "org/ft")
    assert incomplete.code == 1 and "1 of 4 file(s) not downloaded (adapter.safetensors)" in incomplete.err

    local_hub.clear_faults()
    local_hub.clear_log()
    second = machine.cli("download", "org/ft", "--json")
    assert second.code == 0, second.err
    report = second.json()
    assert resolve_gets(local_hub) == ["adapter.safetensors"]
    assert report["bytes_downloaded"] == served_bytes(local_hub) == len(ADAPTER)
    assert report["bytes_present"] == total(FT) - len(ADAPTER)
    assert_snapshot_holds(machine.snapshot("org/ft", commit), FT)
    assert machine.cli("path", "org/ft").code == 0


def test_a_killed_download_is_completed_and_clean_finds_its_partial_file(local_hub: LocalHub, machine: Machine) -> None:
    big = random_bytes(11 * 1024 * 1024, "big")  # over huggingface_hub's 10 MiB write chunk
    files = {"config.json": b"{}", "model.safetensors": big}
    commit = local_hub.add_commit("org/big", files)
    partial = interrupted_download(local_hub, "org/big", "model.safetensors", machine.cache)

    result = machine.cli("download", "org/big", "--json")
    assert result.code == 0, result.err
    assert result.json()["bytes_downloaded"] == total(files)  # huggingface_hub 2.4 never resumes across processes
    assert_snapshot_holds(machine.snapshot("org/big", commit), files)

    # The SIGKILLed process's partial file is the only leftover, and `clean` lists it.
    assert partial.exists()
    leftovers = [p for p in files_under(machine.cache) if p.endswith(".incomplete") or "/.modelcache-" in p]
    assert leftovers == [str(partial)]
    # A reuse killed between linking a verified copy under its temporary name and renaming it leaves
    # the same kind of file, by the same name rule.
    blob = machine.cache / "models--org--big" / "blobs" / hashlib.sha256(big).hexdigest()
    placing = Path(fsops.partial_name(str(blob)))
    os.link(blob, placing)
    if not _has_command("clean"):
        pytest.skip("`modelcache clean` is not in cli.py yet")
    found = machine.cli("clean", "--dry-run", "--json", "--older-than", "0s", "--cache-dir", machine.cache)
    assert found.code == 0, found.err
    assert str(partial) in found.out and str(placing) in found.out


def test_reuses_the_bytes_of_another_repo_instead_of_downloading_them(local_hub: LocalHub, machine: Machine) -> None:
    local_hub.add_commit("org/base", BASE)
    commit = local_hub.add_commit("org/ft", FT)
    download_to_cache(local_hub, "org/base", machine.cache)
    local_hub.clear_log()

    result = machine.cli("download", "org/ft", "--json")
    assert result.code == 0, result.err
    report = result.json()
    served = served_bytes(local_hub)
    print(f"reuse: hub served {served:,} bytes of the repo's {total(FT):,}; reused {report['bytes_reused']:,}")
    assert served < total(FT)
    assert served == report["bytes_downloaded"] == total(FT) - len(W)
    assert report["bytes_reused"] == len(W)
    assert "model.safetensors" not in resolve_gets(local_hub)
    (reused,) = report["reused"]
    etag = hashlib.sha256(W).hexdigest()
    base_blob = machine.cache / "models--org--base" / "blobs" / etag
    ft_blob = machine.cache / "models--org--ft" / "blobs" / etag
    assert reused["path"] == "model.safetensors" and reused["source"] == str(base_blob)
    assert reused["method"] in ("reflink", "hardlink")
    if reused["method"] == "hardlink":
        assert ft_blob.stat().st_ino == base_blob.stat().st_ino
    assert_snapshot_holds(machine.snapshot("org/ft", commit), FT)
    assert_nothing_half_written(machine.cache)


def test_reuses_local_dir_and_plain_folder_copies_verifying_small_files_by_git_sha1(
    local_hub: LocalHub, machine: Machine
) -> None:
    x = random_bytes(400_000, "x")
    y = random_bytes(300_000, "y")
    tokenizer = random_bytes(20_000, "tok").hex().encode()  # not LFS: named by its git blob sha1
    local_hub.add_commit("org/other", {"weights.bin": y})
    models = machine.work / "models"
    download_to_local_dir(local_hub, "org/other", models / "other", machine.root / "scratch-cache")
    write_tree(models / "finetune", {"base.safetensors": x, "tokenizer.json": tokenizer})
    files = {"model.safetensors": x, "weights.bin": y, "tokenizer.json": tokenizer, "config.json": b'{"c": 3}'}
    commit = local_hub.add_commit("org/c", files)
    local_hub.clear_log()

    result = machine.cli("download", "org/c", "--models", models, "--json")
    assert result.code == 0, result.err
    report = result.json()
    assert {r["path"]: r["source"] for r in report["reused"]} == {
        "model.safetensors": str(models / "finetune" / "base.safetensors"),
        "weights.bin": str(models / "other" / "weights.bin"),
        "tokenizer.json": str(models / "finetune" / "tokenizer.json"),
    }
    assert report["bytes_reused"] == len(x) + len(y) + len(tokenizer)
    assert resolve_gets(local_hub) == ["config.json"]
    assert_snapshot_holds(machine.snapshot("org/c", commit), files)
    assert_nothing_half_written(machine.cache)
    # The local copies are untouched.
    assert (models / "finetune" / "base.safetensors").read_bytes() == x
    assert (models / "other" / "weights.bin").read_bytes() == y


def test_a_copy_whose_bytes_do_not_match_its_name_is_never_reused(local_hub: LocalHub, machine: Machine) -> None:
    local_hub.add_commit("org/base", BASE)
    commit = local_hub.add_commit("org/ft", FT)
    download_to_cache(local_hub, "org/base", machine.cache)
    blob = machine.cache / "models--org--base" / "blobs" / hashlib.sha256(W).hexdigest()
    with open(blob, "r+b") as f:  # bit rot: same size, same name, other bytes
        f.seek(1000)
        f.write(b"\xff" if W[1000] != 0xFF else b"\x00")
    rotten = blob.read_bytes()
    local_hub.clear_log()

    result = machine.cli("download", "org/ft", "--json")
    assert result.code == 1, result.err  # done, with a warning, which stderr points at
    assert result.err.splitlines() == ["modelcache: 1 warning; see `warnings` in the JSON"]
    report = result.json()
    assert report["bytes_reused"] == 0 and report["bytes_downloaded"] == total(FT)
    assert "does not hold the bytes" in report["warnings"][0]["message"]
    assert "model.safetensors" in resolve_gets(local_hub)
    assert_snapshot_holds(machine.snapshot("org/ft", commit), FT)
    assert blob.read_bytes() == rotten  # a source is read, never changed


def test_offline_download_prints_a_cached_path_and_refuses_an_uncached_repo(
    local_hub: LocalHub, machine: Machine
) -> None:
    commit = local_hub.add_commit("org/ft", FT)
    local_hub.add_commit("org/base", BASE)
    download_to_cache(local_hub, "org/ft", machine.cache)
    local_hub.stop()

    cached = machine.cli("download", "org/ft", env={"HF_HUB_OFFLINE": "1"})
    assert cached.code == 0, cached.err
    assert cached.out == f"{machine.snapshot('org/ft', commit)}\n"
    assert "HF_HUB_OFFLINE is set" in cached.err

    missing = machine.cli("download", "org/base", env={"HF_HUB_OFFLINE": "1"})
    assert missing.code == 2 and missing.out == ""
    assert missing.err == (
        f"modelcache: error: HF_HUB_OFFLINE is set, and org/base is not in the cache {os.path.realpath(machine.cache)} "
        "(unset HF_HUB_OFFLINE to download it)\n"
    )


# -- path and get_cached_model_path ---------------------------------------------------------------------


def test_path_and_get_cached_model_path_offline(
    local_hub: LocalHub, machine: Machine, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = machine.cache
    c1 = local_hub.add_commit("org/full", {"config.json": b"{}", "sub/w.safetensors": random_bytes(50_000, "w1")})
    local_hub.tag("org/full", "v1", c1)
    c2 = local_hub.add_commit("org/full", {"config.json": b"{}", "sub/w.safetensors": random_bytes(50_000, "w2")})
    download_to_cache(local_hub, "org/full", cache)
    download_to_cache(local_hub, "org/full", cache, revision="v1")
    cp = local_hub.add_commit("org/part", {"config.json": b"{}", "a.safetensors": b"a" * 100, "b.bin": b"b" * 100})
    download_to_cache(local_hub, "org/part", cache, allow_patterns=["config.json"])
    cd = local_hub.add_commit("org/data", {"train.csv": b"a,b\n1,2\n"}, repo_type="dataset")
    download_to_cache(local_hub, "org/data", cache, repo_type="dataset")
    cs = local_hub.add_commit("org/single", {"config.json": b'{"s": 1}', "big.safetensors": b"x" * 100})
    hf_hub_download("org/single", "config.json", cache_dir=cache, endpoint=local_hub.url, token=False)  # no file list
    local_hub.add_commit("org/broken", {"config.json": b'{"b": 1}', "w.safetensors": b"w" * 100})
    download_to_cache(local_hub, "org/broken", cache)
    os.unlink(cache / "models--org--broken" / "blobs" / hashlib.sha256(b"w" * 100).hexdigest())
    local_hub.stop()
    offline = {"HF_HUB_OFFLINE": "1"}

    def path(*args: str) -> Result:
        return machine.cli("path", *args, env=offline)

    full = machine.snapshot("org/full", c2)
    assert path("org/full").out == f"{full}\n"
    assert path("org/full", "--revision", "v1").out == f"{machine.snapshot('org/full', c1)}\n"
    assert path("org/full", "--revision", c1[:10]).out == f"{machine.snapshot('org/full', c1)}\n"
    assert path("org/full", "--file", "sub/w.safetensors").out == f"{full / 'sub' / 'w.safetensors'}\n"
    as_json = path("org/full", "--json").json()
    assert (as_json["commit"], as_json["status"], as_json["path"]) == (c2, "success", str(full))
    assert as_json["snapshot_status"] == "complete"
    data = path("org/data", "--repo-type", "dataset")
    assert data.code == 0 and data.out == f"{machine.snapshot('org/data', cd, 'dataset')}\n"
    assert path("org/single").out == f"{machine.snapshot('org/single', cs)}\n"  # no file list: accepted as is
    assert path("org/part", "--file", "config.json").code == 0  # the file asked for is there

    for args, message in [
        (("org/full", "--revision", "nope"), "org/full has no revision 'nope' in the cache"),
        (("org/full", "--file", "nope.txt"), "org/full has no file nope.txt at commit"),
        (("org/missing",), "org/missing is not in the cache"),
        (("org/data",), "org/data is not in the cache"),  # a dataset is not a model
        (("org/part",), f"the snapshot of org/part (commit {cp[:12]}) is incomplete: 2 of 3 file(s) not downloaded"),
        (("org/part", "--file", "b.bin"), "b.bin of org/part"),
        (("org/broken",), "is broken: 1 link(s) lead nowhere (w.safetensors)"),
    ]:
        result = path(*args)
        assert result.code == 1 and result.out == "", args
        assert result.err.startswith("modelcache: error: ") and message in result.err, (args, result.err)
        assert result.err.count("\n") == 1

    # The same answers in-process, with any attempt to open a connection failing the test.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", _refuse)
    monkeypatch.setattr(socket, "create_connection", _refuse)
    assert get_cached_model_path("org/full", cache_dir=cache) == str(full)
    assert get_cached_model_path("org/full", "v1", cache) == str(machine.snapshot("org/full", c1))
    assert get_cached_model_path("org/data", cache_dir=cache, repo_type="dataset") is not None
    assert get_cached_model_path("org/single", cache_dir=cache) is not None
    for repo in ("org/part", "org/broken", "org/missing", "org/data"):
        assert get_cached_model_path(repo, cache_dir=cache) is None, repo
    assert get_cached_model_path("org/full", "nope", cache) is None
    assert FixedModelDownloadManager(cache_dir=cache).get_model_path("org/full") == str(full)
    assert find_cached_snapshot("org/part", cache_dir=cache).missing == ("a.safetensors", "b.bin")
    assert find_cached_snapshot("org/part", cache_dir=cache, include=["*.json"]).ok


def _refuse(*args: object, **kwargs: object) -> None:
    raise AssertionError("network call")


# What `path` and the offline lookup must never import: the acting side, the scan, the lock library.
WRITERS = ("modelcache.act", "modelcache.act.fsops", "modelcache.scan", "filelock")


@pytest.mark.parametrize(
    ("before", "lookup", "allowed"),
    [
        ("import modelcache.hub.lookup as m", "print(m.get_cached_model_path('org/small', cache_dir=CACHE))", ()),
        ("from modelcache import get_cached_model_path as m", "print(m('org/small', cache_dir=CACHE))", ()),
        (  # the command function of `modelcache path`, as cli.py registers it
            "from modelcache.cli_download import path as m",
            "try:\n    m('org/small', cache_dir=Path(CACHE))\nexcept typer.Exit:\n    pass",
            (),
        ),
        (  # the whole command, as `modelcache path` runs it
            "from modelcache.cli import main as m",
            "try:\n    m(['path', 'org/small', '--cache-dir', CACHE])\nexcept SystemExit as e:\n    assert not e.code",
            (),
        ),
    ],
    ids=["hub.lookup", "modelcache.get_cached_model_path", "path-command", "modelcache-path"],
)
def test_the_offline_lookup_imports_nothing_that_writes_or_scans(
    local_hub: LocalHub, machine: Machine, before: str, lookup: str, allowed: tuple[str, ...]
) -> None:
    commit = local_hub.add_commit("org/small", {"config.json": b"{}", "w.safetensors": b"w" * 100})
    download_to_cache(local_hub, "org/small", machine.cache)
    script = "\n".join(
        [
            "import json, sys, typer",
            "from pathlib import Path",
            f"CACHE = {str(machine.cache)!r}",
            before,
            "loaded = set(sys.modules)",
            lookup,
            "print(json.dumps({'new': sorted(set(sys.modules) - loaded), 'all': sorted(sys.modules)}))",
        ]
    )
    env = {**os.environ, **machine.env(), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    *printed, modules = proc.stdout.splitlines()
    assert printed == [str(machine.snapshot("org/small", commit))]  # the lookup ran and found it
    imported = json.loads(modules)
    assert [m for m in WRITERS if m in imported["new"]] == []
    assert [m for m in WRITERS if m in imported["all"] and m not in allowed] == []


# -- the Python API ---------------------------------------------------------------------------------------


def test_download_manager_api(local_hub: LocalHub, machine: Machine) -> None:
    image = {"model_index.json": b"{}", "transformer/diffusion_pytorch_model.safetensors": random_bytes(90_000, "t")}
    vl = {"config.json": b'{"model_type": "qwen2_vl"}', "model.safetensors": random_bytes(80_000, "vl")}
    ci = local_hub.add_commit("Qwen/Qwen-Image", image)
    cv = local_hub.add_commit("Qwen/Qwen2-VL-7B-Instruct", vl)
    local_hub.add_commit("org/ft", FT)
    from modelcache import DownloadManager as Exported

    manager = FixedModelDownloadManager(cache_dir=machine.cache, endpoint=local_hub.url, token=False)
    assert FixedModelDownloadManager is Exported
    assert manager.download_qwen_image() == str(machine.snapshot("Qwen/Qwen-Image", ci))
    assert manager.download_qwen2_vl() == str(machine.snapshot("Qwen/Qwen2-VL-7B-Instruct", cv))
    assert manager.last_result is not None and manager.last_result.bytes_downloaded == total(vl)
    assert manager.get_model_path("Qwen/Qwen-Image") == str(machine.snapshot("Qwen/Qwen-Image", ci))

    only_json = manager.download("org/ft", include=["*.json"], exclude=["sub/*"])
    assert sorted(os.listdir(only_json)) == ["config.json"]
    assert manager.get_model_path("org/ft") is None  # the snapshot lacks files of its commit
    listed = {m.repo_id: m for m in manager.list_models()}
    assert set(listed) == {"Qwen/Qwen-Image", "Qwen/Qwen2-VL-7B-Instruct", "org/ft"}
    assert listed["Qwen/Qwen-Image"].status == "complete"
    assert listed["Qwen/Qwen-Image"].snapshot == str(machine.snapshot("Qwen/Qwen-Image", ci))
    assert listed["Qwen/Qwen-Image"].size_bytes > total(image)  # files plus huggingface_hub's metadata
    assert listed["org/ft"].status == "incomplete" and listed["org/ft"].snapshot is None
    assert not (machine.work / "models").exists()


# -- bad input --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("repo_id", ["../../etc", "", "   ", "org/my model", "a/b/c", "org/..", "org/a--b"])
def test_malformed_repo_ids_are_refused_before_anything_is_touched(
    repo_id: str, machine: Machine, capsys: pytest.CaptureFixture[str]
) -> None:
    from modelcache.cli import main

    for command in ("download", "path"):
        with pytest.raises(SystemExit) as exit_:
            main([command, repo_id, "--cache-dir", str(machine.cache)])
        err = capsys.readouterr().err
        assert exit_.value.code == 2, err
        assert err.startswith("modelcache: error: ") and "repo id" in err and err.count("\n") == 1
    with pytest.raises(InvalidRepoId):
        get_cached_model_path(repo_id, cache_dir=machine.cache)
    with pytest.raises(ValueError):
        FixedModelDownloadManager(cache_dir=machine.cache).download(repo_id)
    assert not machine.cache.exists()


def test_malformed_repo_id_from_the_command_line(machine: Machine) -> None:
    result = machine.cli("download", "../../etc")
    assert result.code == 2 and "not a repo id: '../../etc'" in result.err
    assert not machine.cache.exists()


def test_unknown_revision_unknown_repo_and_hub_down(local_hub: LocalHub, machine: Machine) -> None:
    commit = local_hub.add_commit("org/ft", FT)
    revision = machine.cli("download", "org/ft", "--revision", "no-such-branch")
    assert revision.code == 2
    assert (
        revision.err == f"modelcache: error: revision 'no-such-branch' not found in model org/ft on {machine.hub_url}\n"
    )
    repo = machine.cli("download", "org/nope")
    assert repo.code == 2 and repo.err.startswith(f"modelcache: error: model org/nope not found on {machine.hub_url}")
    assert not machine.cache.exists()  # nothing written at all

    download_to_cache(local_hub, "org/ft", machine.cache)
    before = files_under(machine.cache)
    local_hub.stop()
    down = machine.cli("download", "org/base")
    assert down.code == 2
    assert down.err.startswith(f"modelcache: error: the Hub at {machine.hub_url} cannot be reached (ConnectError)")
    assert "org/base is not in the cache" in down.err and down.err.count("\n") == 1
    cached = machine.cli("download", "org/ft")  # a complete cached snapshot is good enough, with a note
    assert cached.code == 0 and cached.out == f"{machine.snapshot('org/ft', commit)}\n"
    assert "cannot be reached" in cached.err
    assert files_under(machine.cache) == before


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs: a full disk."""
    with small_tmpfs(tmp_path / "small-disk", "2m", "cannot mount a tmpfs for the full-disk test") as mount:
        yield mount


def test_full_disk(local_hub: LocalHub, machine: Machine, small_disk: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = random_bytes(3_000_000, "too-big")
    local_hub.add_commit("org/big", {"config.json": b'{"big": 1}', "model.safetensors": weights})
    cache = small_disk / "hub"

    # 1. Too big for the free space: refused before any byte is fetched.
    result = machine.cli("download", "org/big", "--cache-dir", cache)
    assert result.code == 2
    assert "not enough space on the disk of" in result.err and "nothing was downloaded" in result.err
    assert resolve_gets(local_hub) == []
    assert_nothing_half_written(small_disk)

    # 2. The disk fills up during the download (the free-space check is fooled): huggingface_hub removes its
    #    partial file, and the message says what happened.
    monkeypatch.setattr(fetch, "free_bytes", lambda path: None)
    manager = FixedModelDownloadManager(cache_dir=cache, endpoint=local_hub.url, token=False, reuse=False)
    with pytest.raises(DownloadError, match=r"no space left on the disk of .* while downloading model org/big"):
        manager.download("org/big")
    assert_nothing_half_written(small_disk)

    # 3. The disk fills up while a local copy is copied in (another device: no link possible).
    copies = machine.root / "copies"
    write_tree(copies / "mine", {"weights.safetensors": weights})
    reuse = FixedModelDownloadManager(cache_dir=cache, endpoint=local_hub.url, token=False, models=[str(copies)])
    full = r"no space left on the disk of .* while copying model.safetensors \(3,000,000 bytes\)"
    with pytest.raises(DownloadError, match=full):
        reuse.download("org/big")
    assert_nothing_half_written(small_disk)
    assert (copies / "mine" / "weights.safetensors").read_bytes() == weights


def _has_command(name: str) -> bool:
    from modelcache.cli import app

    return any((c.name or (c.callback.__name__ if c.callback else "")) == name for c in app.registered_commands)


def test_reuses_a_gguf_from_another_tools_store(local_hub: LocalHub, machine: Machine) -> None:
    """The same GGUF in Ollama (found through OLLAMA_MODELS) is placed in the cache, not downloaded."""
    gguf = random_bytes(500_000, "ollama-gguf")
    ollama = machine.root / "ollama"
    digest = hashlib.sha256(gguf).hexdigest()
    write_tree(ollama, {f"blobs/sha256-{digest}": gguf, "manifests/registry.ollama.ai/library/t/latest": b"{}"})
    commit = local_hub.add_commit("org/gguf", {"t.Q4_K_M.gguf": gguf, "README.md": b"# t"})
    local_hub.clear_log()
    result = machine.cli("download", "org/gguf", "--json", env={"OLLAMA_MODELS": str(ollama)})
    assert result.code == 0, result.err
    assert [r["source"] for r in result.json()["reused"]] == [str(ollama / "blobs" / f"sha256-{digest}")]
    assert resolve_gets(local_hub) == ["README.md"]
    assert_snapshot_holds(machine.snapshot("org/gguf", commit), {"t.Q4_K_M.gguf": gguf, "README.md": b"# t"})
    assert (ollama / "blobs" / f"sha256-{digest}").read_bytes() == gguf  # Ollama's own copy untouched


def test_a_blob_placed_before_its_folder_flush_failed_is_reported_reused(local_hub: LocalHub, machine: Machine) -> None:
    """Regression (tests/test_faults.py, a fault at each write of a download): when flushing `blobs/` failed
    after a reused blob had taken its name, the download warned "not reused" and counted its bytes as
    downloaded, though the blob was in place and the Hub sent none of them."""
    from modelcache.download import download_snapshot

    from .faults import inject

    local_hub.add_commit("org/base", BASE)
    commit = local_hub.add_commit("org/ft", FT)
    download_to_cache(local_hub, "org/base", machine.cache)
    local_hub.clear_log()
    blobs = machine.cache / "models--org--ft" / "blobs"
    with inject(op="fsync_dir", path=str(blobs), code=errno.EIO) as fault:
        result = download_snapshot("org/ft", cache_dir=machine.cache, endpoint=local_hub.url, token=False, models=[])
    assert fault.fired and [c.op for c in fault.calls][fault.fired_at - 2] == "place_new"
    assert [r.path for r in result.reused] == ["model.safetensors"] and not result.warnings
    assert result.bytes_downloaded == served_bytes(local_hub) == total(FT) - len(W)
    assert_snapshot_holds(machine.snapshot("org/ft", commit), FT)
    assert_nothing_half_written(machine.cache)
