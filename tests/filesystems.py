"""File systems made for a test, where the machine allows it (root, loop devices, xfsprogs)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from .machine import mounted


@contextmanager
def xfs_image(where: Path, size: int = 300 << 20, reflink: bool = True) -> Iterator[Path]:
    """An XFS file system with reflinks (or, `reflink=False`, without), in a sparse image in the folder
    `where`, mounted at `where/mount` for the block; the test is skipped, with the reason, where it cannot
    be made or mounted."""
    if shutil.which("mkfs.xfs") is None:
        pytest.skip("mkfs.xfs is not installed (xfsprogs)")
    image = where / "xfs.img"
    with open(image, "wb") as f:
        f.truncate(size)
    made = subprocess.run(["mkfs.xfs", "-q", "-m", f"reflink={int(reflink)}", str(image)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"mkfs.xfs failed: {made.stderr.decode(errors='replace').strip()}")
    with mounted(where / "mount", "-o", "loop", source=str(image), why="cannot mount an XFS loop image") as mount:
        yield mount
