"""File writes that never leave a half-written file behind (as pycls ``core/io.py``).

The bottom of rwdet, beside ``rwdet.graphs``: the run set-up, the checkpointers and the
analysis tools all write through :func:`atomic_write`.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import re
from typing import List

__all__ = ["atomic_write", "file_sha256", "remove_stale_temporaries"]

logger = logging.getLogger(__name__)

# Temporaries of atomic_write: "<name>.tmp.<pid>".
_TMP_PATTERN = re.compile(r"\.tmp\.\d+$")


def remove_stale_temporaries(folder: str) -> List[str]:
    """Remove the ``*.tmp.<pid>`` files that :func:`atomic_write` left in ``folder`` when its
    process was killed mid-write (e.g. ``model_0000099.pth.tmp.1234`` after a kill -9 during
    a save), logging each; call it at start, before this run writes there.

    Returns:
        The removed paths (none when ``folder`` does not exist).
    """
    removed = []
    for path in sorted(glob.glob(os.path.join(glob.escape(folder), "*.tmp.*"))):
        if _TMP_PATTERN.search(path) and os.path.isfile(path):
            os.remove(path)
            removed.append(path)
            logger.info("Removed %s, a temporary file left by an interrupted write", path)
    return removed


def atomic_write(path: str, write) -> None:
    """Write a file atomically: ``write(f)`` on a binary temporary file in the same folder,
    fsync, then ``os.replace`` over ``path`` (a crash leaves the old file or none, never half).
    The folder is created if missing (a trainer used without ``commit_run``)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def file_sha256(path: str) -> str:
    """The SHA-256 of a file's bytes, hex (a checkpoint's identity in a run's record)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
