"""A failure of the Hub, or of a download through huggingface_hub, as one line.

huggingface_hub's own messages span several lines (a request id, a URL, a hint); a command prints
one line per failure. `hub_error` is the one mapping from its exceptions to that line, used by
`download` and by the re-downloads of `clean --repair` and `verify --repair`. `download_failed` adds
what a failed `snapshot_download` leaves (how many files are in the cache, whether to run it again),
and `writing` turns a failed write into the cache into one line.

Imports neutral modules only; huggingface_hub and httpx2 inside the functions that need them.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager

from ..common import display
from ..errors import EXIT_ERROR, ModelcacheError


class DownloadError(ModelcacheError):
    """The download could not be done; the message says why and what to do."""

    exit_code = EXIT_ERROR


def first_line(error: BaseException) -> str:
    """The first line of an exception's message, or its class name when it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else error.__class__.__name__


def download_errors() -> tuple[type[BaseException], ...]:
    """What a download through huggingface_hub raises when the Hub or the disk fails (not a bug of ours)."""
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    return (HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled, OSError)


def unreachable(error: BaseException) -> bool:
    """The Hub could not be reached (no connection, offline mode, a server error): not a fault of the request."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    if isinstance(error, (httpx2.TransportError, OfflineModeIsEnabled, LocalEntryNotFoundError)):
        return True
    if isinstance(error, HfHubHTTPError):
        response = getattr(error, "response", None)
        return response is not None and response.status_code >= 500
    return False


def hub_error(error: BaseException, what: str, revision: str, endpoint: str) -> DownloadError:
    """One line for a Hub failure (huggingface_hub's own messages span several lines)."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(error, GatedRepoError):
        return DownloadError(f"{what} is gated on {endpoint}: accept its terms on the Hub, then set HF_TOKEN")
    if isinstance(error, RepositoryNotFoundError):
        return DownloadError(
            f"{what} not found on {endpoint} (if it is private or gated, log in with `hf auth login` or set HF_TOKEN)"
        )
    if isinstance(error, RevisionNotFoundError):
        return DownloadError(f"revision {display(revision)!r} not found in {what} on {endpoint}")
    if isinstance(error, HfHubHTTPError):
        response = getattr(error, "response", None)
        status = getattr(response, "status_code", "?")
        return DownloadError(f"the Hub at {endpoint} answered HTTP {status} for {what}: {first_line(error)}")
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return DownloadError(f"no space left on the disk while downloading {what}: {error.strerror}")
    if isinstance(error, OSError) and error.errno is not None:
        return DownloadError(f"cannot write {what} into the cache: {error.strerror}{_where(error)}")
    name = error.__class__.__name__
    reason = first_line(error)
    return DownloadError(f"{what}: {name}: {reason}" if reason != name else f"{what}: {name}")


def download_failed(
    error: BaseException, what: str, revision: str, endpoint: str, cache: str, have: int, total: int
) -> DownloadError:
    """One line for a failed `snapshot_download` of `total` blobs, `have` of which are in the cache now."""
    progress = f"{have} of {total} file(s) are in the cache"
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return DownloadError(
            f"no space left on the disk of {display(cache)} while downloading {what} ({progress}); "
            "free some space and run the same command again"
        )
    import httpx2
    from huggingface_hub.errors import LocalEntryNotFoundError

    if isinstance(error, (httpx2.ConnectError, LocalEntryNotFoundError)):
        return DownloadError(
            f"cannot reach the Hub at {endpoint} to download {what} ({progress}); "
            "check the connection and run the same command again to fetch the rest"
        )
    if unreachable(error) or (isinstance(error, OSError) and "consistency" in str(error).lower()):
        return DownloadError(
            f"the connection to the Hub at {endpoint} was lost while downloading {what} ({progress}); "
            "run the same command again to fetch the rest"
        )
    return hub_error(error, what, revision, endpoint)


@contextmanager
def writing(what: str, cache: str) -> Iterator[None]:
    """File system failures while writing into the cache, as one line each."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        yield
    except HfHubHTTPError:
        raise
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise DownloadError(f"no space left on the disk of {display(cache)} while placing {what}") from None
        raise DownloadError(f"cannot write {what} into the cache {display(cache)}: {e.strerror}{_where(e)}") from None


def _where(error: OSError) -> str:
    """`: <the file>` of a failed file operation, when it names one."""
    return f": {display(os.fsdecode(error.filename))}" if error.filename else ""
