"""Tests for rwdet.data (VOC, VIA, COCO json loaders) on the real BCCD dataset (CPU, a few seconds).

BCCD is looked up at $RWDET_BCCD_ROOT, else at <repo>/../shared/datasets/bccd; the
tests that need it are skipped with a clear reason when it is absent.
"""

import collections
import json
import logging
import os
import re
import uuid
from pathlib import Path

import pytest
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from conftest import copy_mini_voc, find_bccd_root
from rwdet.data import (
    BCCD_CLASSES,
    load_voc_instances,
    register_bccd,
    register_coco_json,
    register_datasets_from_config,
    register_voc_dataset,
)

BCCD_ROOT = find_bccd_root()

# Skipped only where no one asked for BCCD: with $RWDET_BCCD_ROOT set (as in CI), a missing
# dataset makes these tests fail instead.
needs_bccd = pytest.mark.skipif(
    not (BCCD_ROOT / "Annotations").is_dir() and not os.environ.get("RWDET_BCCD_ROOT"),
    reason=f"BCCD dataset not found at {BCCD_ROOT} (set RWDET_BCCD_ROOT to a BCCD root in "
    "PASCAL VOC layout; source: GitHub repository Shenggan/BCCD_Dataset)",
)

# Official release figures (SOURCE.md): RBC 4155, WBC 372, Platelets 361; the two
# degenerate boxes (BloodImage_00343 in train, BloodImage_00338 in val) are both RBC.
EXPECTED_SPLIT_SIZES = {"train": 205, "val": 87, "test": 72, "trainval": 292}
EXPECTED_CLASS_COUNTS = {"RBC": 4155 - 2, "WBC": 372, "Platelets": 361}
DEGENERATE = {"BloodImage_00343.xml": "181", "BloodImage_00338.xml": "504"}


def _unique(prefix):
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def mini_voc(tmp_path):
    """A copy of a few BCCD images/annotations with split 'mini'; returns (root, ids)."""
    ids = ["BloodImage_00343", "BloodImage_00000", "BloodImage_00001"]
    return copy_mini_voc(BCCD_ROOT, tmp_path / "voc", ids), ids


@pytest.fixture(scope="module")
def all_splits():
    if not (BCCD_ROOT / "Annotations").is_dir():
        pytest.skip(needs_bccd.kwargs["reason"])
    return {s: load_voc_instances(str(BCCD_ROOT), s, BCCD_CLASSES) for s in EXPECTED_SPLIT_SIZES}


# --------------------------------------------------------------------------- real BCCD


@needs_bccd
@pytest.mark.parametrize("split", sorted(EXPECTED_SPLIT_SIZES))
def test_split_sizes_and_fields(all_splits, split):
    dicts = all_splits[split]
    assert len(dicts) == EXPECTED_SPLIT_SIZES[split]
    assert len({d["image_id"] for d in dicts}) == len(dicts)
    for d in dicts:
        assert set(d) == {"file_name", "image_id", "height", "width", "annotations"}
        assert os.path.isfile(d["file_name"])
        assert Path(d["file_name"]).name == d["image_id"] + ".jpg"
        assert (d["width"], d["height"]) == (640, 480)
        for a in d["annotations"]:
            assert a["bbox_mode"] == BoxMode.XYXY_ABS
            assert a["category_id"] in (0, 1, 2)
            assert len(a["bbox"]) == 4


@needs_bccd
def test_trainval_is_train_plus_val(all_splits):
    ids = lambda s: {d["image_id"] for d in all_splits[s]}  # noqa: E731
    assert ids("trainval") == ids("train") | ids("val")
    assert not (ids("train") & ids("val")) and not (ids("trainval") & ids("test"))


@needs_bccd
def test_class_counts_over_all_splits(all_splits):
    counts = collections.Counter(
        BCCD_CLASSES[a["category_id"]]
        for s in ("train", "val", "test")
        for d in all_splits[s]
        for a in d["annotations"]
    )
    assert dict(counts) == EXPECTED_CLASS_COUNTS
    assert sum(counts.values()) == 4888 - 2


@needs_bccd
def test_boxes_inside_image_with_positive_area(all_splits):
    n = 0
    for s in ("train", "val", "test"):
        for d in all_splits[s]:
            for a in d["annotations"]:
                x1, y1, x2, y2 = a["bbox"]
                assert 0 <= x1 < x2 <= d["width"], (d["image_id"], a["bbox"])
                assert 0 <= y1 < y2 <= d["height"], (d["image_id"], a["bbox"])
                n += 1
    assert n == 4886


@needs_bccd
def test_voc_coordinate_convention_matches_detectron2(all_splits):
    # First object of BloodImage_00343.xml: xmin=484 ymin=195 xmax=613 ymax=303 (1-based).
    d = next(d for d in all_splits["train"] if d["image_id"] == "BloodImage_00343")
    assert d["annotations"][0]["bbox"] == [483.0, 194.0, 613.0, 303.0]
    assert d["annotations"][0]["category_id"] == BCCD_CLASSES.index("RBC")
    # 12 objects in the XML, one of them the degenerate point box.
    assert len(d["annotations"]) == 11


@needs_bccd
def test_degenerate_boxes_dropped_with_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="rwdet.data"):
        train = load_voc_instances(str(BCCD_ROOT), "train", BCCD_CLASSES)
        val = load_voc_instances(str(BCCD_ROOT), "val", BCCD_CLASSES)
    warnings = [r for r in caplog.records if r.name == "rwdet.data" and r.levelno == logging.WARNING]
    assert len(warnings) == 2, [r.getMessage() for r in warnings]
    for fname, coord in DEGENERATE.items():
        msgs = [r.getMessage() for r in warnings if fname in r.getMessage()]
        assert len(msgs) == 1, fname
        assert f"xmin={coord}" in msgs[0] and f"xmax={coord}" in msgs[0] and "RBC" in msgs[0]
    # No zero-size box survives anywhere.
    for d in train + val:
        for a in d["annotations"]:
            x1, y1, x2, y2 = a["bbox"]
            assert x2 - x1 > 1 and y2 - y1 > 1


@needs_bccd
def test_register_bccd(catalog_cleanup):
    names = ["bccd_train", "bccd_val", "bccd_test", "bccd_trainval"]
    fresh = [n for n in names if n not in DatasetCatalog.list()]
    catalog_cleanup.extend(fresh)
    assert register_bccd(str(BCCD_ROOT)) == names
    # Registering again with the same root is a no-op.
    assert register_bccd(str(BCCD_ROOT)) == names
    dicts = DatasetCatalog.get("bccd_test")
    assert len(dicts) == 72
    meta = MetadataCatalog.get("bccd_test")
    assert tuple(meta.thing_classes) == BCCD_CLASSES
    assert meta.evaluator_type == "coco"
    assert meta.split == "test"
    assert meta.dirname == os.path.abspath(BCCD_ROOT)
    assert len(DatasetCatalog.get("bccd_trainval")) == 292


@needs_bccd
def test_coco_evaluator_accepts_registered_bccd(catalog_cleanup, tmp_path):
    """evaluator_type="coco" with string image ids: ground truth as predictions scores AP 100."""
    import torch
    from detectron2.evaluation import COCOEvaluator
    from detectron2.structures import Boxes, Instances

    name = _unique("bccd_eval")
    catalog_cleanup.append(name)
    register_voc_dataset(name, str(BCCD_ROOT), "test", BCCD_CLASSES)
    evaluator = COCOEvaluator(name, output_dir=str(tmp_path))
    evaluator.reset()
    for d in DatasetCatalog.get(name):
        inst = Instances((d["height"], d["width"]))
        inst.pred_boxes = Boxes(torch.tensor([a["bbox"] for a in d["annotations"]]))
        inst.scores = torch.ones(len(d["annotations"]))
        inst.pred_classes = torch.tensor([a["category_id"] for a in d["annotations"]])
        evaluator.process([{"image_id": d["image_id"]}], [{"instances": inst}])
    results = evaluator.evaluate()
    assert results["bbox"]["AP"] == pytest.approx(100.0)
    assert {"AP-RBC", "AP-WBC", "AP-Platelets"} <= set(results["bbox"])


@needs_bccd
def test_register_same_name_other_root_raises(mini_voc, catalog_cleanup):
    root, _ = mini_voc
    name = _unique("voc")
    catalog_cleanup.append(name)
    register_voc_dataset(name, str(root), "mini", BCCD_CLASSES)
    register_voc_dataset(name, str(root), "mini", BCCD_CLASSES)  # same settings: silent
    with pytest.raises(ValueError, match=name):
        register_voc_dataset(name, str(BCCD_ROOT), "test", BCCD_CLASSES)
    assert len(DatasetCatalog.get(name)) == 3


@needs_bccd
def test_registration_is_lazy(mini_voc, catalog_cleanup):
    root, ids = mini_voc
    name = _unique("voc_lazy")
    catalog_cleanup.append(name)
    register_voc_dataset(name, str(root), "mini", BCCD_CLASSES)
    (root / "JPEGImages" / f"{ids[1]}.jpg").unlink()  # break it after registering
    with pytest.raises(FileNotFoundError, match=f"{ids[1]}.jpg"):
        DatasetCatalog.get(name)


# --------------------------------------------------------------------------- errors


@needs_bccd
def test_mini_copy_loads(mini_voc):
    root, ids = mini_voc
    dicts = load_voc_instances(str(root), "mini", BCCD_CLASSES)
    assert [d["image_id"] for d in dicts] == ids
    assert all(d["file_name"].startswith(str(root)) for d in dicts)


@needs_bccd
def test_missing_image_raises(mini_voc):
    root, ids = mini_voc
    missing = root / "JPEGImages" / f"{ids[2]}.jpg"
    missing.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_voc_instances(str(root), "mini", BCCD_CLASSES)


@needs_bccd
def test_missing_annotation_raises(mini_voc):
    root, ids = mini_voc
    missing = root / "Annotations" / f"{ids[0]}.xml"
    missing.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_voc_instances(str(root), "mini", BCCD_CLASSES)


@needs_bccd
def test_missing_split_file_raises(mini_voc):
    root, _ = mini_voc
    with pytest.raises(FileNotFoundError, match="nosuchsplit.txt"):
        load_voc_instances(str(root), "nosuchsplit", BCCD_CLASSES)
    with pytest.raises(FileNotFoundError, match="nosuchsplit.txt"):
        register_voc_dataset(_unique("voc"), str(root), "nosuchsplit", BCCD_CLASSES)


@needs_bccd
def test_corrupt_xml_raises_value_error(mini_voc):
    root, ids = mini_voc
    bad = root / "Annotations" / f"{ids[1]}.xml"
    bad.write_text("<annotation><size><width>640</width>")  # truncated
    with pytest.raises(ValueError, match=re.escape(bad.name)):
        load_voc_instances(str(root), "mini", BCCD_CLASSES)


@needs_bccd
@pytest.mark.parametrize("field", ["size", "bndbox"])
def test_xml_missing_field_raises_value_error(mini_voc, field):
    root, ids = mini_voc
    xml = root / "Annotations" / f"{ids[1]}.xml"
    text = xml.read_text()
    start, end = text.index(f"<{field}>"), text.index(f"</{field}>") + len(f"</{field}>")
    xml.write_text(text[:start] + text[end:])
    with pytest.raises(ValueError, match=re.escape(xml.name)):
        load_voc_instances(str(root), "mini", BCCD_CLASSES)


@needs_bccd
def test_unknown_class_dropped_with_warning(mini_voc, caplog):
    root, ids = mini_voc
    with caplog.at_level(logging.WARNING, logger="rwdet.data"):
        dicts = load_voc_instances(str(root), "mini", ("RBC", "WBC"))
    n_platelets = sum(
        (root / "Annotations" / f"{i}.xml").read_text().count("<name>Platelets</name>") for i in ids
    )
    assert n_platelets > 0
    unknown = [r.getMessage() for r in caplog.records if "unknown class 'Platelets'" in r.getMessage()]
    assert len(unknown) == n_platelets
    assert all(".xml" in m and "xmin=" in m for m in unknown)
    assert all(a["category_id"] in (0, 1) for d in dicts for a in d["annotations"])


def test_unknown_root_raises(tmp_path):
    missing = tmp_path / "no_such_bccd"
    with pytest.raises(FileNotFoundError, match="Shenggan/BCCD_Dataset") as e:
        load_voc_instances(str(missing), "train", BCCD_CLASSES)
    assert str(missing) in str(e.value)
    with pytest.raises(FileNotFoundError, match="Shenggan/BCCD_Dataset") as e:
        register_bccd(str(missing))
    assert str(missing) in str(e.value)


def test_register_bccd_incomplete_root_raises(tmp_path):
    (tmp_path / "Annotations").mkdir()
    before = set(DatasetCatalog.list())
    with pytest.raises(FileNotFoundError, match="JPEGImages"):
        register_bccd(str(tmp_path))
    assert set(DatasetCatalog.list()) == before


# --------------------------------------------------------------------------- COCO json


def _write_tiny_coco(path):
    data = {
        "images": [
            {"id": 1, "file_name": "BloodImage_00000.jpg", "width": 640, "height": 480},
            {"id": 2, "file_name": "BloodImage_00001.jpg", "width": 640, "height": 480},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 20, 100, 50], "area": 5000,
             "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 9, "bbox": [0, 0, 30, 40], "area": 1200,
             "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 7, "bbox": [50, 60, 70, 80], "area": 5600,
             "iscrowd": 0},
        ],
        "categories": [{"id": 7, "name": "RBC"}, {"id": 9, "name": "WBC"}],
    }
    path.write_text(json.dumps(data))
    return path


@needs_bccd
def test_register_coco_json_loads(tmp_path, catalog_cleanup):
    json_file = _write_tiny_coco(tmp_path / "tiny.json")
    image_root = BCCD_ROOT / "JPEGImages"
    name = _unique("coco_tiny")
    catalog_cleanup.append(name)
    register_coco_json(name, str(json_file), str(image_root))
    register_coco_json(name, str(json_file), str(image_root))  # same settings: silent
    dicts = DatasetCatalog.get(name)
    assert len(dicts) == 2
    assert all(os.path.isfile(d["file_name"]) for d in dicts)
    assert [len(d["annotations"]) for d in dicts] == [1, 2]
    a = dicts[0]["annotations"][0]
    assert a["bbox"] == [10, 20, 100, 50] and a["bbox_mode"] == BoxMode.XYWH_ABS
    assert a["category_id"] == 0  # contiguous id of COCO category 7
    meta = MetadataCatalog.get(name)
    assert meta.thing_classes == ["RBC", "WBC"]
    assert meta.evaluator_type == "coco"
    other = _write_tiny_coco(tmp_path / "other.json")
    with pytest.raises(ValueError, match=name):
        register_coco_json(name, str(other), str(image_root))


def test_register_coco_json_missing_paths(tmp_path):
    json_file = _write_tiny_coco(tmp_path / "tiny.json")
    with pytest.raises(FileNotFoundError, match="nope.json"):
        register_coco_json(_unique("coco"), str(tmp_path / "nope.json"), str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no_images"):
        register_coco_json(_unique("coco"), str(json_file), str(tmp_path / "no_images"))


def test_register_coco_json_refuses_builtin_name(tmp_path):
    # coco_2017_val is registered by detectron2's builtin registration.
    assert "coco_2017_val" in DatasetCatalog.list()
    json_file = _write_tiny_coco(tmp_path / "tiny.json")
    with pytest.raises(ValueError, match="coco_2017_val"):
        register_coco_json("coco_2017_val", str(json_file), str(tmp_path))


# --------------------------------------------------------------------------- config


def _cfg(bccd_root="", coco_json=()):
    cfg = get_cfg()
    cfg.DATASETS.BCCD_ROOT = bccd_root
    cfg.DATASETS.COCO_JSON = list(coco_json)
    return cfg


@needs_bccd
def test_register_from_config(tmp_path, catalog_cleanup):
    json_file = _write_tiny_coco(tmp_path / "tiny.json")
    name = _unique("cfg_coco")
    catalog_cleanup.append(name)
    fresh_bccd = [n for n in ("bccd_train", "bccd_val", "bccd_test", "bccd_trainval")
                  if n not in DatasetCatalog.list()]
    catalog_cleanup.extend(fresh_bccd)
    cfg = _cfg(str(BCCD_ROOT), [[name, str(json_file), str(BCCD_ROOT / "JPEGImages")]])
    names = register_datasets_from_config(cfg)
    assert names == ["bccd_train", "bccd_val", "bccd_test", "bccd_trainval", name]
    assert len(DatasetCatalog.get(name)) == 2
    assert len(DatasetCatalog.get("bccd_val")) == 87
    assert register_datasets_from_config(cfg) == names  # idempotent


def test_register_from_config_empty_does_nothing():
    before = set(DatasetCatalog.list())
    assert register_datasets_from_config(_cfg()) == []
    assert register_datasets_from_config(get_cfg()) == []  # keys absent altogether
    assert set(DatasetCatalog.list()) == before


@pytest.mark.parametrize(
    "bad_entry",
    [["only_name", "file.json"], "a_string", ["n", "f.json", "imgs", "extra"], ["n", "", "imgs"]],
)
def test_register_from_config_malformed_entry(tmp_path, bad_entry):
    json_file = _write_tiny_coco(tmp_path / "tiny.json")
    good_name = _unique("cfg_good")
    cfg = _cfg("", [[good_name, str(json_file), str(tmp_path)], bad_entry])
    with pytest.raises(ValueError, match=r"COCO_JSON\[1\]"):
        register_datasets_from_config(cfg)
    # Validated before anything is registered.
    assert good_name not in DatasetCatalog.list()


def test_register_from_config_coco_json_not_a_list():
    cfg = get_cfg()
    cfg.DATASETS.COCO_JSON = "name,file.json,images"
    with pytest.raises(ValueError, match="COCO_JSON"):
        register_datasets_from_config(cfg)
