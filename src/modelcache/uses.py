"""Uses of a model that no access time shows: `modelcache path` and `download` record one, `prune` reads them.

`modelcache path REPO` reads no model file (it looks at links and a file list), so the program that
then loads the model may do so days later, or on a mount where reads move no access time. A model
located through modelcache therefore counts as used when it was located: `prune` takes the later
of the newest access time of its files and its newest recorded use.

One small file per (cache, repo, commit) under `<state>/uses/`, named by a hash of the three and
holding them as JSON with the time of the use: a use rewrites that file, so the folder holds one
file per revision ever located, not one per use. Writing it is cheap (one open and one write) and
never fails the command that records it (a read-only state folder, a full disk: the use is simply
not recorded). A torn file (a kill mid-write) is ignored when read.

modelcache's own state, not a user's file: written here directly (as the digest index is), and
imports nothing but neutral modules and `locations`, so that `modelcache path` stays cheap.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path

from .common import SMALL_FILE_CAP, read_capped
from .locations import state_dir

USES = "uses"


def uses_dir() -> Path:
    return state_dir() / USES


def _name(cache_dir: str, repo_folder: str, commit: str) -> str:
    return hashlib.sha256(f"{cache_dir}\0{repo_folder}\0{commit}".encode("utf-8", "surrogateescape")).hexdigest()[:32]


def record_use(cache_dir: str, repo_folder: str, commit: str, now: float | None = None) -> bool:
    """Record that the revision `commit` of the repo in `cache_dir`/`repo_folder` was located now.

    Returns whether it was recorded; never raises for a state folder it cannot write.
    """
    cache_dir = os.path.realpath(cache_dir)
    body = json.dumps({"cache": cache_dir, "repo": repo_folder, "commit": commit, "used": now or time.time()})
    folder = uses_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / (_name(cache_dir, repo_folder, commit) + ".json")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, body.encode("utf-8", "surrogateescape"))
        finally:
            os.close(fd)
    except OSError:
        return False
    return True


def recorded_uses(cache_dir: str) -> dict[tuple[str, str], float]:
    """(repo folder, commit) -> the time of its newest recorded use, for the cache at `cache_dir`."""
    cache_dir = os.path.realpath(cache_dir)
    found: dict[tuple[str, str], float] = {}
    try:
        names = os.listdir(uses_dir())
    except OSError:
        return found
    for name in names:
        try:
            data = json.loads(read_capped(str(uses_dir() / name), SMALL_FILE_CAP))
            if data["cache"] != cache_dir:
                continue
            key, used = (str(data["repo"]), str(data["commit"])), float(data["used"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # torn by a kill, or not ours: no use to count
        if not math.isfinite(used):
            continue
        found[key] = max(found.get(key, 0.0), used)
    return found
