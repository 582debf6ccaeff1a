"""Shared pytest fixtures."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import constants as hf_constants

from modelcache.testing import LocalHub
from modelcache.testing.builders import CLIENT_ENV

from .machine import client_env, keep_client_home


@pytest.fixture
def hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep huggingface_hub away from ~/.cache and the network for this test.

    The env vars cover subprocesses; the module constants are patched too because huggingface_hub reads them
    once, at import time.
    """
    home = tmp_path / "hf_home"
    for name, value in CLIENT_ENV.items():
        monkeypatch.setenv(name, value)
    keep_client_home(home, monkeypatch)
    # Nothing listens there: a test that forgets to point the client at LocalHub fails fast, offline.
    point_client_at("http://127.0.0.1:9", monkeypatch)
    return home


@pytest.fixture
def local_hub(hf_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalHub]:
    """A started, empty `LocalHub`: the default endpoint of this test and of the processes it starts."""
    with LocalHub() as hub:
        point_client_at(hub.url, monkeypatch)
        yield hub


def point_client_at(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default Hub of this test (its module constants) and of the processes it starts (HF_ENDPOINT)."""
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setattr(hf_constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(
        hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}"
    )


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A folder another user can enter (as root, permission tests run as user nobody)."""
    path = Path(tempfile.mkdtemp(prefix="modelcache-shared-"))
    path.chmod(0o755)
    yield path
    for dirpath, dirs, _files in os.walk(path):
        for d in dirs:
            os.chmod(os.path.join(dirpath, d), 0o755, follow_symlinks=False)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHub]:
    """A LocalHub for the whole module, the default endpoint of huggingface_hub meanwhile (its module constants,
    and HF_ENDPOINT for the processes the tests start), with the client's home kept off ~/.cache (as `hf_home`)."""
    with client_env() as mp, LocalHub() as local_hub:
        keep_client_home(tmp_path_factory.mktemp("hf_home"), mp)
        point_client_at(local_hub.url, mp)
        yield local_hub


@pytest.fixture(scope="module")
def prop_hub() -> Iterator[LocalHub]:
    """The property tests' LocalHub (tests/strategies.py fills it), running for the whole module."""
    with LocalHub() as hub:
        yield hub


@pytest.fixture(scope="module")
def template(prop_hub: LocalHub, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The property tests' template machine, built once per module: see tests/strategies.py."""
    from .strategies import build_template

    return build_template(prop_hub, tmp_path_factory.mktemp("template"))
