"""Downloading a file again through huggingface_hub: `clean --repair` (a snapshot's missing file) and
`verify --repair` (a corrupted file, replaced by huggingface_hub's own atomic rename).

huggingface_hub writes the file; this module journals each download (`begin`, then `done`, or
`abandoned` with the Hub's message) and turns a failure into one line (`hub.errors`). Imports
`runs`, `journal`, `hub.errors` and the finding side's clean plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..clean import Garbage
from ..hub.errors import download_errors, first_line
from .journal import Journal
from .results import Outcome, RunResult, Skip
from .runs import exclusive, journaled


def _download_again(journal: Journal, i: int, op: str, target: str, **download: Any) -> str | None:
    """Download one file again (`hf_hub_download(**download)`), journaled as change `i`; the reason it
    failed, or None when it was downloaded."""
    from huggingface_hub import hf_hub_download

    journal.append({"type": "begin", "action": i, "op": op, "target": target})
    try:
        hf_hub_download(**download)
    except download_errors() as e:
        journal.append({"type": "abandoned", "action": i, "reason": str(e)})
        return f"could not download it again: {first_line(e)}"
    journal.append({"type": "done", "action": i, "op": op})
    return None


def repair(i: int, item: Garbage, journal: Journal, cache_dir: str) -> None:
    """Download a snapshot's missing file again, through huggingface_hub (which relinks the snapshot)."""
    assert item.repair is not None
    repo_type, repo_id, commit, filename = item.repair
    failed = _download_again(
        journal,
        i,
        "repair",
        item.path,
        repo_id=repo_id,
        filename=filename,
        revision=commit,
        repo_type=repo_type,
        cache_dir=cache_dir,
    )
    if failed is not None:
        raise Skip(failed)


def redownload(targets: Sequence[tuple[str, tuple[str, str, str, str, str | None]]], cache_dir: str) -> RunResult:
    """Download corrupted files again through huggingface_hub, which replaces each by an atomic rename.

    `targets`: (corrupt path, (repo_type, repo_id, revision, filename, local_dir or None)).
    """
    with exclusive() as recovered, journaled("verify-repair") as journal:
        outcomes: list[Outcome] = []
        for i, (path, (repo_type, repo_id, revision, filename, local_dir)) in enumerate(targets, start=1):
            failed = _download_again(
                journal,
                i,
                "redownload",
                path,
                repo_id=repo_id,
                filename=filename,
                revision=revision,
                repo_type=repo_type,
                cache_dir=cache_dir,
                local_dir=local_dir,
                force_download=True,
            )
            outcome = (
                Outcome(i, path, "done", "redownload") if failed is None else Outcome(i, path, "failed", reason=failed)
            )
            outcomes.append(outcome)
    return RunResult(journal.run_id, tuple(outcomes), 0, (), (), tuple(recovered))
