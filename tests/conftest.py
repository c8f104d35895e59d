"""Shared test fixtures: the BCCD photos and small model configs.

BCCD is found at $RWDET_BCCD_ROOT (CI sets it: then a missing folder is an error, not a skip),
else at <repo>/../shared/datasets/bccd (tests that need it skip if absent).
"""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def find_bccd_root() -> Path:
    """$RWDET_BCCD_ROOT if set, else <repo>/../shared/datasets/bccd (which may not exist)."""
    env = os.environ.get("RWDET_BCCD_ROOT")
    return Path(env) if env else REPO.parent / "shared" / "datasets" / "bccd"


def bccd_root_or_skip() -> Path:
    env = os.environ.get("RWDET_BCCD_ROOT")
    root = find_bccd_root()
    if not (root / "Annotations").is_dir():
        if env:
            raise FileNotFoundError(f"RWDET_BCCD_ROOT={env} has no BCCD dataset (Annotations/ missing)")
        pytest.skip(f"BCCD not found at {root}; set RWDET_BCCD_ROOT")
    return root


@pytest.fixture(scope="session")
def bccd_root() -> Path:
    return bccd_root_or_skip()
