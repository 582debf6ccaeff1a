"""Errors that end a command: each carries a one-line message and an exit code.

Exit codes (documented in the README):

- 0: done, nothing to report;
- 1: done, with warnings (some input was skipped: unreadable files, broken links, ...);
- 2: error, nothing was done (bad arguments, a path given explicitly that does not exist, ...);
- 3: internal error (a bug: please report it), still one line, never a traceback.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_WARNINGS = 1
EXIT_ERROR = 2
EXIT_INTERNAL = 3


class ModelcacheError(Exception):
    """A failure the user can act on; the CLI prints `modelcache: error: <message>`."""

    exit_code: int = EXIT_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InputError(ModelcacheError):
    """A path or argument given by the user cannot be used."""
