"""How `consolidate` gives a copy's space back.

Its own module so that the CLI can declare `--mode` without importing the planner.
"""

from __future__ import annotations

from enum import Enum


class Mode(str, Enum):
    AUTO = "auto"
    HARDLINK = "hardlink"
    REFLINK = "reflink"
    SYMLINK = "symlink"
    DELETE = "delete"
