"""Shared test fixtures: the BCCD photos and small model configs.

BCCD is found at $RWDET_BCCD_ROOT (CI sets it: then a missing folder is an error, not a skip),
else at <repo>/../shared/datasets/bccd (tests that need it skip if absent).
"""

import os
import shutil
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


def copy_mini_voc(bccd_root: Path, root: Path, ids) -> Path:
    """Copy the BCCD images and annotations ``ids`` to a VOC folder ``root`` with split 'mini'."""
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    for i in ids:
        shutil.copy(bccd_root / "Annotations" / f"{i}.xml", root / "Annotations")
        shutil.copy(bccd_root / "JPEGImages" / f"{i}.jpg", root / "JPEGImages")
    (root / "ImageSets/Main/mini.txt").write_text("\n".join(ids) + "\n")
    return root


@pytest.fixture
def catalog_cleanup():
    """Dataset names appended to the returned list are removed from both catalogs afterwards."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    names = []
    yield names
    for name in names:
        for catalog in (DatasetCatalog, MetadataCatalog):
            if name in catalog.list():
                catalog.remove(name)
