"""Issue 26: a checkpoint that does not fit is refused before use; bad annotations and truncated
photos are found before training; an image that still fails mid-run is named (or skipped).

Data cases run in-process on copies of a few BCCD photos, corrupted in tmp_path; the tools run
as subprocesses on the tiny test configs, and a refused command must leave OUTPUT_DIR as it was.
"""

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import cv2
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from PIL import Image

from conftest import folder_hash, mini_voc_run
from rwdet.data import BadAnnotationsError, BadImageError, prepare_datasets
from rwdet.data import validate_dataset_dicts
from rwdet.engine import AtomicCheckpointer, IncompleteCheckpointError, Trainer, load_for_inference
from rwdet.engine.defaults import get_rwdet_cfg, load_config

REPO = Path(__file__).resolve().parents[1]
TINY_DET = str(REPO / "tests" / "configs" / "tiny_bccd.yaml")
TINY_CLS = str(REPO / "tests" / "configs" / "tiny_fashion_mnist.yaml")
IDS = ["BloodImage_00000", "BloodImage_00001"]  # both 640x480
HEAD = "roi_heads.box_predictor."


def _tool(tool, *args, timeout=600):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, str(REPO / "tools" / tool), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


# --------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def one_class_checkpoint(tmp_path_factory):
    """A tiny detector built with NUM_CLASSES 1 (as if trained on a one-class set), saved."""
    folder = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    AtomicCheckpointer(build_model(load_config(TINY_DET, ["MODEL.ROI_HEADS.NUM_CLASSES", "1"])),
                       str(folder)).save("one_class")
    return folder / "one_class.pth"


def test_checkpoint_for_other_num_classes_refused_naming_every_tensor(one_class_checkpoint):
    model = build_model(load_config(TINY_DET))  # NUM_CLASSES 3
    with pytest.raises(IncompleteCheckpointError) as e:
        load_for_inference(model, str(one_class_checkpoint))
    msg = str(e.value)
    for key, ckpt, mine in [("cls_score.weight", [2, 128], [4, 128]), ("cls_score.bias", [2], [4]),
                            ("bbox_pred.weight", [4, 128], [12, 128]), ("bbox_pred.bias", [4], [12])]:
        assert f"{HEAD}{key}: checkpoint {ckpt}, model {mine}" in msg
    assert "4 of" in msg and "set MODEL.ROI_HEADS.NUM_CLASSES 1" in msg and str(one_class_checkpoint) in msg
    assert "another architecture" not in msg and "\n" not in msg


def test_checkpoint_of_another_architecture_and_missing_tensors_refused(one_class_checkpoint, tmp_path):
    model = build_model(load_config(TINY_DET, ["MODEL.FPN.OUT_CHANNELS", "16"]))
    with pytest.raises(IncompleteCheckpointError, match="another architecture") as e:
        load_for_inference(model, str(one_class_checkpoint))
    assert re.search(r"backbone\.fpn_lateral\d\.weight: checkpoint \[32, \d+, 1, 1\], model \[16, \d+, 1, 1\]",
                     str(e.value))
    model = build_model(load_config(TINY_DET))
    state = {k: v for k, v in model.state_dict().items() if "res4" not in k}
    torch.save({"model": state}, tmp_path / "partial.pth")
    with pytest.raises(IncompleteCheckpointError, match=r"res4\S*: not in the checkpoint"):
        load_for_inference(model, str(tmp_path / "partial.pth"))
    with pytest.raises(IncompleteCheckpointError, match="MODEL.WEIGHTS is empty"):
        load_for_inference(model, "")
    torch.save({"model": model.state_dict()}, tmp_path / "full.pth")
    load_for_inference(build_model(load_config(TINY_DET)), str(tmp_path / "full.pth"))  # complete: loads


def test_fine_tuning_keeps_detectron2_behaviour_with_a_summary(one_class_checkpoint, caplog):
    model = build_model(load_config(TINY_DET))
    with caplog.at_level(logging.INFO, logger="fvcore"):
        AtomicCheckpointer(model).load(str(one_class_checkpoint))  # MODEL.WEIGHTS: a new head is expected
    summary = [r.getMessage() for r in caplog.records if "left at their initialisation" in r.getMessage()]
    n = len(model.state_dict())
    assert summary == [f"Loaded {n - 4} of {n} model tensors from {one_class_checkpoint}; left at their "
                       f"initialisation: {HEAD}bbox_pred.bias, {HEAD}bbox_pred.weight, {HEAD}cls_score.bias, "
                       f"{HEAD}cls_score.weight"]
    saved = torch.load(one_class_checkpoint, map_location="cpu", weights_only=False)["model"]
    key = "backbone.fpn_output2.weight"
    assert torch.equal(model.state_dict()[key], saved[key])


def test_eval_only_and_resume_refuse_a_checkpoint_that_does_not_fit(one_class_checkpoint, bccd_root, tmp_path):
    """The issue's case: a NUM_CLASSES 1 checkpoint evaluated on BCCD (3 classes) gave AP 0.14 and
    exit code 0. Now: refused before evaluation, OUTPUT_DIR unchanged."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("an earlier run's folder")
    before = folder_hash(out)
    common = ["--config-file", TINY_DET]
    opts = ["DATASETS.BCCD_ROOT", str(bccd_root), "OUTPUT_DIR", str(out), "DATASETS.TEST", "('bccd_test',)"]
    rc, log = _tool("train_net.py", *common, "--eval-only", *opts, "MODEL.WEIGHTS", str(one_class_checkpoint))
    assert rc != 0 and "IncompleteCheckpointError" in log and "set MODEL.ROI_HEADS.NUM_CLASSES 1" in log, log[-3000:]
    assert f"{HEAD}cls_score.weight: checkpoint [2, 128], model [4, 128]" in log
    assert "Evaluation results" not in log and "inference" not in os.listdir(out)
    assert folder_hash(out) == before
    # --resume from a checkpoint of the run's folder that does not fit.
    shutil.copy(one_class_checkpoint, out / "model_final.pth")
    (out / "last_checkpoint").write_text("model_final.pth")
    before = folder_hash(out)
    rc, log = _tool("train_net.py", *common, "--resume", *opts)
    assert rc != 0 and "IncompleteCheckpointError" in log and "Starting at iteration" not in log, log[-3000:]
    assert folder_hash(out) == before


def test_demo_refuses_weights_that_do_not_fit(one_class_checkpoint, bccd_root, tmp_path):
    src = bccd_root / "JPEGImages" / f"{IDS[0]}.jpg"
    out = tmp_path / "drawn"
    rc, log = _tool("demo.py", "--config-file", TINY_DET, "--input", str(src), "--output", str(out) + "/",
                    "MODEL.WEIGHTS", str(one_class_checkpoint), "DATASETS.TEST", "('bccd_test',)")
    assert rc == 1 and "tools/demo.py: error: checkpoint" in log and "MODEL.ROI_HEADS.NUM_CLASSES 1" in log, log
    assert "Traceback" not in log and not out.exists()


@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist")
                    and not os.environ.get("RWDET_REQUIRE_FASHION_MNIST"), reason="Fashion-MNIST not installed")
def test_classification_eval_only_refuses_other_num_classes(tmp_path):
    from rwdet.classification.config import load_cls_config
    from rwdet.classification.trainer import ClassificationTrainer

    ckpt = tmp_path / "ckpt"
    AtomicCheckpointer(ClassificationTrainer.build_model(load_cls_config(TINY_CLS, ["MODEL.NUM_CLASSES", "5"])).net,
                       str(ckpt)).save("five")
    out = tmp_path / "run"
    out.mkdir()
    before = folder_hash(out)
    rc, log = _tool("pretrain_net.py", "--config-file", TINY_CLS, "--eval-only", "OUTPUT_DIR", str(out),
                    "MODEL.WEIGHTS", str(ckpt / "five.pth"), "TEST.IMS_PER_BATCH", "1000")
    assert rc != 0 and "IncompleteCheckpointError" in log and "set MODEL.NUM_CLASSES 5" in log, log[-3000:]
    assert "fc.weight: checkpoint [5, 64], model [10, 64]" in log
    assert folder_hash(out) == before


# --------------------------------------------------------------------------- annotations


def _coco(tmp_path, bccd_root, catalog_cleanup, annotations, skip=False, categories=2):
    """A COCO json over two BCCD photos with ``annotations`` (ids, image ids given), and a
    config that trains on it."""
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    for i in IDS:
        shutil.copy(bccd_root / "JPEGImages" / f"{i}.jpg", images)
    data = {"images": [{"id": n + 1, "file_name": f"{i}.jpg", "width": 640, "height": 480} for n, i in enumerate(IDS)],
            "annotations": [dict({"area": 100.0, "iscrowd": 0, "category_id": 1}, **a) for a in annotations],
            "categories": [{"id": c + 1, "name": f"c{c}"} for c in range(categories)]}
    path = tmp_path / "data.json"
    path.write_text(json.dumps(data))
    name = f"checks_coco_{uuid.uuid4().hex[:8]}"
    catalog_cleanup.append(name)
    cfg = get_rwdet_cfg()
    cfg.DATASETS.COCO_JSON = [[name, str(path), str(images)]]
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (name,), ()
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = categories
    cfg.DATASETS.SKIP_BAD_ANNOTATIONS = skip
    return cfg, name, path


GOOD = {"id": 1, "image_id": 1, "bbox": [10, 20, 100, 50]}


@pytest.mark.parametrize("bad, expected", [
    ({"id": 7, "image_id": 2}, "has no bbox"),  # the KeyError: 'bbox' at iteration 0
    ({"id": 7, "image_id": 2, "bbox": [100, 100, -30, 40]}, "is inverted: negative width"),
    ({"id": 7, "image_id": 2, "bbox": [100, 100, 30]}, "is not 4 finite numbers"),
    ({"id": 7, "image_id": 2, "bbox": [100, "a", 30, 40]}, "is not 4 finite numbers"),
    ({"id": 7, "image_id": 2, "bbox": [100, float("nan"), 30, 40]}, "is not 4 finite numbers"),
    ({"id": 7, "image_id": 2, "bbox": [1, 2, 30, 40], "category_id": 9}, "category_id 9 is not among the json's"),
    ({"id": 7, "image_id": 2, "bbox": [1, 2, 30, 40], "segmentation": "polygon"}, "neither a list of polygons nor an RLE"),
    ({"id": 7, "image_id": 2, "bbox": [1, 2, 30, 40], "segmentation": {"counts": 5}}, "neither a list of polygons"),
])
def test_bad_coco_annotation_refused_in_one_line_or_skipped(bccd_root, tmp_path, catalog_cleanup, caplog, bad,
                                                            expected):
    cfg, name, path = _coco(tmp_path, bccd_root, catalog_cleanup, [GOOD, bad])
    with pytest.raises(BadAnnotationsError) as e:
        prepare_datasets(cfg)
    msg = str(e.value)
    assert msg.startswith(f"Bad annotation in {path}: image 2 ({IDS[1]}.jpg), annotation 7: ")
    assert expected in msg and "DATASETS.SKIP_BAD_ANNOTATIONS" in msg and "\n" not in msg
    cfg.DATASETS.SKIP_BAD_ANNOTATIONS = True
    with caplog.at_level(logging.WARNING, logger="rwdet"):
        assert prepare_datasets(cfg) == {name: 2}
    records = DatasetCatalog.get(name)
    assert [len(r["annotations"]) for r in records] == [1, 0]
    warned = [r.getMessage() for r in caplog.records if "skipping annotation" in r.getMessage()]
    assert len(warned) == 1 and f"{path}: image 2" in warned[0] and expected in warned[0]


def test_skipped_annotations_leave_the_evaluation_ground_truth_too(bccd_root, tmp_path, catalog_cleanup):
    """A test set trimmed by DATASETS.SKIP_BAD_ANNOTATIONS is evaluated against what was kept, not
    against its json file (whose inverted box pycocotools would count as ground truth)."""
    from rwdet.engine import Trainer

    bad = {"id": 7, "image_id": 2, "bbox": [100, 100, -30, 40]}
    cfg, name, path = _coco(tmp_path, bccd_root, catalog_cleanup, [GOOD, bad], skip=True)
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (), (name,)
    cfg.OUTPUT_DIR = str(tmp_path / "out")
    prepare_datasets(cfg)
    evaluator = Trainer.build_evaluator(cfg, name)
    assert sorted(a["id"] for a in evaluator._coco_api.dataset["annotations"]) == [1]
    assert [a["bbox"] for a in evaluator._coco_api.dataset["annotations"]] == [[10.0, 20.0, 100.0, 50.0]]
    assert len(evaluator._coco_api.getImgIds()) == 2
    # a clean json stays the ground truth itself
    (tmp_path / "clean").mkdir()
    cfg2, name2, path2 = _coco(tmp_path / "clean", bccd_root, catalog_cleanup, [GOOD])
    cfg2.DATASETS.TRAIN, cfg2.DATASETS.TEST = (), (name2,)
    cfg2.OUTPUT_DIR = str(tmp_path / "out2")
    prepare_datasets(cfg2)
    assert Trainer.build_evaluator(cfg2, name2)._coco_api.dataset["annotations"][0]["id"] == 1


def test_several_bad_annotations_listed_one_per_line(bccd_root, tmp_path, catalog_cleanup):
    bad = [{"id": 10 + k, "image_id": 1} for k in range(25)]
    cfg, name, path = _coco(tmp_path, bccd_root, catalog_cleanup, [GOOD, *bad])
    with pytest.raises(BadAnnotationsError) as e:
        prepare_datasets(cfg)
    lines = str(e.value).splitlines()
    assert lines[0] == f"25 bad annotations in {path}:" and "... and 5 more" in lines[21]
    assert lines[1] == f"  {path}: image 1 ({IDS[0]}.jpg), annotation 10: has no bbox"


def test_zero_size_coco_box_dropped_with_its_own_reason(bccd_root, tmp_path, catalog_cleanup, caplog):
    cfg, name, _ = _coco(tmp_path, bccd_root, catalog_cleanup, [GOOD, {"id": 2, "image_id": 1, "bbox": [50, 50, 0, 10]}])
    with caplog.at_level(logging.WARNING, logger="rwdet"):
        prepare_datasets(cfg)
    assert len(DatasetCatalog.get(name)[0]["annotations"]) == 1
    assert any("zero width or height" in r.getMessage() for r in caplog.records)
    assert not any("nothing of it lies inside" in r.getMessage() for r in caplog.records)


@pytest.fixture
def voc(bccd_root, tmp_path, catalog_cleanup):
    return mini_voc_run(bccd_root, tmp_path / "voc", IDS, catalog_cleanup, "checks_voc")


def _second_object(xml: Path, field: str, value: str) -> None:
    """Set ``<field>`` of the second <object> of ``xml`` to ``value``."""
    text = xml.read_text()
    at = text.index("<object>", text.index("<object>") + 1)
    start = text.index(f"<{field}>", at) + len(f"<{field}>")
    xml.write_text(text[:start] + value + text[text.index(f"</{field}>", start):])


def test_voc_inverted_box_refused_naming_xml_image_and_object_or_skipped(voc, caplog):
    root, name, cfg = voc
    xml = root / "Annotations" / f"{IDS[1]}.xml"
    n = len(DatasetCatalog.get(name)[1]["annotations"])
    _second_object(xml, "xmin", "900")
    with pytest.raises(BadAnnotationsError) as e:
        prepare_datasets(cfg)
    msg = str(e.value)
    assert msg.startswith(f"Bad annotation in {xml}: image {IDS[1]}, object 2 (")
    assert "is inverted: xmax < xmin" in msg and "xmin=900" in msg
    cfg.DATASETS.SKIP_BAD_ANNOTATIONS = True
    with caplog.at_level(logging.WARNING, logger="rwdet"):
        prepare_datasets(cfg)
    assert len(DatasetCatalog.get(name)[1]["annotations"]) == n - 1
    assert sum("skipping annotation" in r.getMessage() and "inverted" in r.getMessage() for r in caplog.records) == 1


def test_voc_box_that_is_not_a_number_refused(voc):
    root, name, cfg = voc
    xml = root / "Annotations" / f"{IDS[0]}.xml"
    _second_object(xml, "ymax", "inf")
    with pytest.raises(BadAnnotationsError, match=r"object 2 \(\w+\): <bndbox><ymax> is 'inf', not a finite number"):
        prepare_datasets(cfg)


def test_dataset_dicts_checked_whatever_loaded_them(bccd_root, catalog_cleanup):
    """Records from any loader (here a list built by hand) get the same checks."""
    image = str(bccd_root / "JPEGImages" / f"{IDS[0]}.jpg")
    from detectron2.structures import BoxMode

    def record(**anno):
        return [{"file_name": image, "image_id": 5, "width": 640, "height": 480,
                 "annotations": [dict({"bbox_mode": BoxMode.XYXY_ABS, "category_id": 0}, **anno)]}]

    with pytest.raises(BadAnnotationsError, match=r"image 5, annotation '#0': bbox \[50, 50, 10, 80\] \(x1, y1, x2, y2\) "
                                                  r"is inverted: x2 < x1"):
        validate_dataset_dicts(record(bbox=[50, 50, 10, 80]), "hand_made")
    with pytest.raises(BadAnnotationsError, match="has no bbox"):
        validate_dataset_dicts(record(), "hand_made")
    assert validate_dataset_dicts(record(bbox=[50, 50, 10, 80]), "hand_made", skip_bad_annotations=True)[0][
        "annotations"] == []


# --------------------------------------------------------------------------- truncated images


def test_truncated_jpeg_refused_or_skipped_and_padding_allowed(voc, caplog):
    """The issue's case: a truncated JPEG whose header reads fine (it died mid-training)."""
    root, name, cfg = voc
    full = root / "JPEGImages" / f"{IDS[0]}.jpg"
    padded = root / "JPEGImages" / f"{IDS[1]}.jpg"
    with Image.open(full) as im:
        im.load()  # decodes before the damage
    data = full.read_bytes()
    assert data.endswith(b"\xff\xd9")
    full.write_bytes(data[:-20])
    padded.write_bytes(padded.read_bytes() + b"\x00" * 1188)  # valid: zero padding after FFD9
    with Image.open(padded) as im:
        im.load()
    with pytest.raises(ValueError, match="no JPEG end-of-image marker") as e:
        prepare_datasets(cfg)
    assert str(full) in str(e.value) and str(padded) not in str(e.value)
    with Image.open(full) as im:
        assert im.size == (640, 480)  # its header reads fine
        with pytest.raises(OSError, match="truncated"):
            im.load()
    cfg.DATASETS.SKIP_BAD_IMAGES = True
    with caplog.at_level(logging.WARNING, logger="rwdet"):
        assert prepare_datasets(cfg) == {name: 1}
    assert any("skipping image" in r.getMessage() and str(full) in r.getMessage() for r in caplog.records)


def _damaged_records(bccd_root, folder: Path):
    """Records of a BCCD photo as a complete PNG, a truncated PNG, and a JPEG whose Huffman table
    is overwritten (header, size and end marker intact: only a full decode finds it)."""
    photo = bccd_root / "JPEGImages" / f"{IDS[0]}.jpg"
    ok, png = cv2.imencode(".png", cv2.imread(str(photo)))
    png = png.tobytes()
    jpeg = bytearray(photo.read_bytes())
    at = jpeg.index(b"\xff\xc4") + 10  # inside the first DHT segment
    jpeg[at:at + 8] = b"\xff\xc4\x00\x02" * 2
    files = {"good.png": png, "cut.png": png[: len(png) - 100], "damaged.jpg": bytes(jpeg)}
    for f, b in files.items():
        (folder / f).write_bytes(b)
    return [{"file_name": str(folder / f), "image_id": f, "width": 640, "height": 480, "annotations": []}
            for f in files]


def test_png_end_and_full_decode_option(bccd_root, tmp_path):
    records = _damaged_records(bccd_root, tmp_path)
    with pytest.raises(ValueError, match="1 of 3 images") as e:
        validate_dataset_dicts([dict(r) for r in records], "damaged")
    assert str(tmp_path / "cut.png") in str(e.value)
    with pytest.raises(ValueError, match="2 of 3 images") as e:
        validate_dataset_dicts([dict(r) for r in records], "damaged", image_check="decode")
    assert f"{tmp_path / 'damaged.jpg'} cannot be decoded (OSError: broken data stream" in str(e.value)
    assert "good.png" not in str(e.value)
    with pytest.raises(ValueError, match="allowed: 'end_marker', 'decode'"):
        validate_dataset_dicts(records, "damaged", image_check="full")


def test_decode_error_during_training_names_the_file_or_skips(bccd_root, tmp_path, catalog_cleanup, caplog):
    """An image the checks before training let through (a damaged JPEG Huffman table) fails in
    Detectron2's mapper: the error names the file; with SKIP_BAD_IMAGES training goes on."""
    records = [r for r in _damaged_records(bccd_root, tmp_path) if "cut" not in r["file_name"]]
    assert validate_dataset_dicts([dict(r) for r in records], "damaged")  # passes the default check
    damaged = records[1]["file_name"]
    for r in records:
        r["annotations"] = [{"bbox": [10.0, 20.0, 200.0, 220.0], "bbox_mode": 0, "category_id": 0}]
    name = f"checks_png_{uuid.uuid4().hex[:8]}"
    catalog_cleanup.append(name)
    DatasetCatalog.register(name, lambda: [dict(r) for r in records])
    opts = ["DATASETS.TRAIN", f"('{name}',)", "SOLVER.IMS_PER_BATCH", "1", "MODEL.ROI_HEADS.NUM_CLASSES", "3",
            "DATALOADER.ASPECT_RATIO_GROUPING", "False"]
    loader = iter(Trainer.build_train_loader(load_config(TINY_DET, opts)))
    with pytest.raises(BadImageError) as e:
        for _ in range(8):  # the stream is shuffled: within 8 draws of 2 images, the damaged one comes
            next(loader)
    assert str(e.value).startswith(f"{damaged} cannot be read") and "DATASETS.SKIP_BAD_IMAGES" in str(e.value)
    loader = iter(Trainer.build_train_loader(load_config(TINY_DET, [*opts, "DATASETS.SKIP_BAD_IMAGES", "True"])))
    with caplog.at_level(logging.WARNING, logger="rwdet"):
        seen = {next(loader)[0]["file_name"] for _ in range(8)}
    assert seen == {records[0]["file_name"]}
    assert any("Skipping image" in r.getMessage() and damaged in r.getMessage() for r in caplog.records)
