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


def mini_voc_run(bccd_root: Path, folder: Path, ids, catalog_cleanup, prefix: str) -> tuple:
    """A VOC copy of the BCCD images ``ids`` (split 'mini') registered under a fresh name, and an
    rwdet config that trains on it (no test set, 3 classes). Returns ``(root, name, cfg)``."""
    import uuid

    from rwdet.data import BCCD_CLASSES, register_voc_dataset
    from rwdet.engine.defaults import get_rwdet_cfg

    root = copy_mini_voc(bccd_root, folder, ids)
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    catalog_cleanup.append(name)
    register_voc_dataset(name, str(root), "mini", BCCD_CLASSES)
    cfg = get_rwdet_cfg()
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (name,), ()
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    return root, name, cfg


def folder_hash(folder: Path) -> str:
    """A digest of the names and contents of every file under ``folder``: equal before and after a
    refused command when it left the folder unchanged."""
    import hashlib

    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        h.update(str(p.relative_to(folder)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


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


def write_mini_coco(bccd_root: Path, folder: Path, split: str = "test", n: int = 4) -> tuple:
    """A COCO-format copy of the first ``n`` images of a BCCD split, as a user's own data set:
    ``folder/imgs/*.jpg`` and ``folder/mini.json`` (relative file names). Returns
    ``(json_path, image_root)`` as strings."""
    import json
    import shutil

    from detectron2.data.datasets.coco import convert_to_coco_dict

    from rwdet.data import register_bccd

    register_bccd(str(bccd_root))
    coco = convert_to_coco_dict(f"bccd_{split}")
    images = coco["images"][:n]
    keep = {im["id"] for im in images}
    imgs = folder / "imgs"
    imgs.mkdir(parents=True, exist_ok=True)
    for im in images:
        src = Path(im["file_name"])
        shutil.copy(src, imgs / src.name)
        im["file_name"] = src.name
    coco["images"] = images
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in keep]
    path = folder / "mini.json"
    path.write_text(json.dumps(coco))
    return str(path), str(imgs)


@pytest.fixture(autouse=True)
def _ignore_dependency_warnings():
    """rwdet's filters of its dependencies' warnings, inside each test: pytest resets the warning
    filters around every test, dropping those ``import rwdet`` installed during collection."""
    from rwdet import ignore_dependency_warnings

    ignore_dependency_warnings()
    yield


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """torch's intra-op thread count as it was before each test: a test that builds a benchmark
    worker in-process (``ModelBench`` calls ``torch.set_num_threads``) must not change the
    numerics and oneDNN kernels of the tests after it (found: with 1 thread left behind, the
    channels-last pretraining test and the oneDNN verbose test failed)."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
