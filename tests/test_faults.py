"""Fault injection (issue 15): bad data is refused before training, a refused command changes
nothing, every error names its file, kill -9 is survived, and the guards that already held
(atomic checkpoints, NaN stop, full disk) keep holding.

Data faults run in-process on copies of a few BCCD images; the kill -9 cases run
tools/train_net.py and tools/pretrain_net.py as subprocesses on the tiny test configs.
"""

import gzip
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import HookBase

from conftest import folder_hash, mini_voc_run
from rwdet.classification.data import DEFAULT_FASHION_MNIST_ROOT, FashionMNIST
from rwdet.config import merge_config
from rwdet.data import prepare_datasets
from rwdet.engine.checkpoint import AtomicCheckpointer, CheckpointReadError
from rwdet.engine.defaults import load_config, get_rwdet_cfg

REPO = Path(__file__).resolve().parents[1]
TINY_DET = str(REPO / "tests" / "configs" / "tiny_bccd.yaml")
TINY_CLS = str(REPO / "tests" / "configs" / "tiny_fashion_mnist.yaml")
IDS = ["BloodImage_00000", "BloodImage_00001"]  # both 640x480


def _has_fashion_mnist():
    if os.path.isdir(DEFAULT_FASHION_MNIST_ROOT):
        return True
    if os.environ.get("RWDET_REQUIRE_FASHION_MNIST"):
        raise FileNotFoundError(f"RWDET_REQUIRE_FASHION_MNIST is set but {DEFAULT_FASHION_MNIST_ROOT} is missing")
    return False


needs_fmnist = pytest.mark.skipif(not _has_fashion_mnist(), reason="Fashion-MNIST not installed")


# --------------------------------------------------------------------------- data, in-process


@pytest.fixture
def voc(bccd_root, tmp_path, catalog_cleanup):
    """A 2-image VOC copy of BCCD (split 'mini') and a config that trains on it."""
    return mini_voc_run(bccd_root, tmp_path / "voc", IDS, catalog_cleanup, "faults_voc")


def _edit_xml(path: Path, old: str, new: str):
    text = path.read_text()
    assert old in text, (old, path)
    path.write_text(text.replace(old, new, 1))


def test_zero_byte_image_refused_before_training_or_skipped(voc, caplog):
    root, name, cfg = voc
    bad = root / "JPEGImages" / f"{IDS[1]}.jpg"
    bad.write_bytes(b"")
    with pytest.raises(ValueError, match="zero-byte") as e:
        prepare_datasets(cfg)
    assert str(bad) in str(e.value) and "SKIP_BAD_IMAGES" in str(e.value)
    cfg.DATASETS.SKIP_BAD_IMAGES = True
    with caplog.at_level(logging.WARNING, logger="rwdet"):
        assert prepare_datasets(cfg) == {name: 1}
    assert any("skipping image" in r.getMessage() and str(bad) in r.getMessage() for r in caplog.records)
    assert [d["file_name"] for d in DatasetCatalog.get(name)] == [str(root / "JPEGImages" / f"{IDS[0]}.jpg")]


def test_not_an_image_refused(voc):
    root, name, cfg = voc
    bad = root / "JPEGImages" / f"{IDS[0]}.jpg"
    bad.write_bytes(b"<html>not a jpeg</html>")
    with pytest.raises(ValueError, match="not a readable image") as e:
        prepare_datasets(cfg)
    assert str(bad) in str(e.value)


def test_size_disagreeing_with_xml_refused(voc):
    root, name, cfg = voc
    _edit_xml(root / "Annotations" / f"{IDS[0]}.xml", "<width>640</width>", "<width>600</width>")
    with pytest.raises(ValueError, match="is 640x480 but its annotation says 600x480") as e:
        prepare_datasets(cfg)
    assert str(root / "JPEGImages" / f"{IDS[0]}.jpg") in str(e.value)


def test_boxes_outside_image_clipped_or_dropped_with_warning(voc, caplog):
    root, name, cfg = voc
    xml = root / "Annotations" / f"{IDS[0]}.xml"
    text = xml.read_text()
    obj = ("<object><name>WBC</name><bndbox><xmin>{}</xmin><ymin>{}</ymin><xmax>{}</xmax>"
           "<ymax>{}</ymax></bndbox></object>")
    # VOC's 1-based xmin: x1 = xmin - 1. The issue's [699, 314, 900, 480] on a 640-wide image
    # lies entirely outside it; [599, 314, 900, 480] partly.
    xml.write_text(text.replace("</annotation>", obj.format(700, 315, 900, 480)
                                + obj.format(600, 315, 900, 480) + "</annotation>"))
    n_before = len(DatasetCatalog.get(name)[0]["annotations"])
    with caplog.at_level(logging.WARNING, logger="rwdet"):
        prepare_datasets(cfg)
    annos = DatasetCatalog.get(name)[0]["annotations"]
    assert len(annos) == n_before - 1  # the box entirely outside is dropped
    messages = [r.getMessage() for r in caplog.records]
    image = str(root / "JPEGImages" / f"{IDS[0]}.jpg")
    assert any("dropping box [699.0, 314.0, 900.0, 480.0]" in m and image in m for m in messages)
    assert any("clipping box [599.0, 314.0, 900.0, 480.0]" in m and "[599.0, 314.0, 640.0, 480.0]" in m
               and image in m for m in messages)
    assert max(a["bbox"][2] for a in annos) <= 640


def _coco_json(path: Path, n_categories=2, bbox=(10, 20, 100, 50)):
    data = {
        "images": [{"id": 1, "file_name": f"{IDS[0]}.jpg", "width": 640, "height": 480}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": list(bbox), "area": 1.0,
                         "iscrowd": 0}],
        "categories": [{"id": i + 1, "name": f"c{i}"} for i in range(n_categories)],
    }
    path.write_text(json.dumps(data))
    return path


def _coco_cfg(catalog_cleanup, json_file, image_root, num_classes):
    name = f"faults_coco_{uuid.uuid4().hex[:8]}"
    catalog_cleanup.append(name)
    cfg = get_rwdet_cfg()
    cfg.DATASETS.COCO_JSON = [[name, str(json_file), str(image_root)]]
    cfg.DATASETS.TRAIN = (name,)
    cfg.DATASETS.TEST = ()
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = num_classes
    return cfg, name


def test_num_classes_mismatch_refused_with_both_numbers(bccd_root, tmp_path, catalog_cleanup):
    cfg, name = _coco_cfg(catalog_cleanup, _coco_json(tmp_path / "c.json", 21), bccd_root / "JPEGImages", 3)
    with pytest.raises(ValueError, match=r"NUM_CLASSES=3.*has 21 categories") as e:
        prepare_datasets(cfg)
    assert name in str(e.value)


def test_coco_json_box_outside_and_bad_image(bccd_root, tmp_path, catalog_cleanup, caplog):
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(bccd_root / "JPEGImages" / f"{IDS[0]}.jpg", images)
    cfg, name = _coco_cfg(catalog_cleanup, _coco_json(tmp_path / "c.json", 2, bbox=(600, 400, 100, 100)), images, 2)
    with caplog.at_level(logging.WARNING, logger="rwdet"):
        prepare_datasets(cfg)
    assert DatasetCatalog.get(name)[0]["annotations"][0]["bbox"] == [600.0, 400.0, 640.0, 480.0]
    assert any("clipping box" in r.getMessage() for r in caplog.records)
    (images / f"{IDS[0]}.jpg").write_bytes(b"")
    cfg2, _ = _coco_cfg(catalog_cleanup, tmp_path / "c.json", images, 2)
    with pytest.raises(ValueError, match="zero-byte"):
        prepare_datasets(cfg2)


def test_invalid_coco_json_named(tmp_path, catalog_cleanup):
    bad = tmp_path / "broken.json"
    bad.write_text('{"images": [')
    cfg, _ = _coco_cfg(catalog_cleanup, bad, tmp_path, 3)
    with pytest.raises(ValueError, match="not valid JSON") as e:
        prepare_datasets(cfg)
    assert str(bad) in str(e.value)


def test_builtin_coco_missing_says_where_and_what(tmp_path):
    """The mission's own config without COCO on disk: refused before the model build."""
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO), DETECTRON2_DATASETS=str(tmp_path / "nowhere"))
    proc = subprocess.run(
        [sys.executable, "tools/train_net.py", "--config-file", "configs/faster_rcnn_randwire_ws.yaml",
         "OUTPUT_DIR", str(out), "MODEL.DEVICE", "cpu"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode != 0
    assert "FileNotFoundError: Dataset 'coco_2017_train' is not on disk" in proc.stderr
    for part in ("COCO 2017", str(tmp_path / "nowhere"), "instances_{train,val}2017.json",
                 "faster_rcnn_randwire_ws_small_bccd.yaml"):
        assert part in proc.stderr, part
    assert "pycocotools" not in proc.stderr and "Model:" not in proc.stdout  # before the build
    assert not out.exists()


# --------------------------------------------------------------------------- errors name the file


def test_misplaced_flag_says_where_it_goes():
    for opts in (["SOLVER.MAX_ITER", "5", "--resume"], ["SOLVER.MAX_ITER", "5", "--eval-only", "x"]):
        with pytest.raises(ValueError, match="flags go before them"):
            merge_config(get_rwdet_cfg(), TINY_DET, opts)


@pytest.fixture(scope="module")
def tiny_detector():
    from detectron2.modeling import build_model

    return build_model(load_config(TINY_DET))


@pytest.mark.parametrize("content", [b"hello, not a checkpoint", b"PK\x03\x04truncated zip", b""])
def test_non_checkpoint_weights_named(tiny_detector, tmp_path, content):
    bad = tmp_path / "weights.pth"
    bad.write_bytes(content)
    with pytest.raises(CheckpointReadError, match="is not a readable checkpoint") as e:
        AtomicCheckpointer(tiny_detector).load(str(bad))
    assert str(bad) in str(e.value)


def test_non_checkpoint_weights_named_when_adopting(tmp_path):
    bad = tmp_path / "weights.pth"
    bad.write_bytes(b"hello")
    with pytest.raises(ValueError, match="not a readable checkpoint") as e:
        load_config(TINY_DET, ["MODEL.WEIGHTS", str(bad), "MODEL.RANDWIRE.PRETRAINED_GRAPHS", "adopt"])
    assert str(bad) in str(e.value)


def test_unreadable_idx_file_named(tmp_path):
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        (tmp_path / f"{stem}.gz").write_bytes(gzip.compress(b"\x00" * 3)[:-4])  # truncated gzip
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz"):
        FashionMNIST(str(tmp_path), train=True)


# --------------------------------------------------------------------------- disk full, NaN


def test_full_disk_keeps_the_previous_checkpoint(tiny_detector, tmp_path, monkeypatch):
    """A simulated ENOSPC on write (no tmpfs mount: tests run unprivileged)."""
    ckpt = AtomicCheckpointer(tiny_detector, str(tmp_path))
    ckpt.save("model_final")
    before = folder_hash(tmp_path)

    def full(obj, f, *args, **kwargs):
        f.write(b"x" * 1000)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError, match="No space left"):
        ckpt.save("model_final")
    assert folder_hash(tmp_path) == before  # old checkpoint intact, no temporary left


class _PoisonAt(HookBase):
    def __init__(self, it):
        self.it = it

    def before_step(self):
        if self.trainer.iter == self.it:
            with torch.no_grad():
                next(self.trainer.net.parameters()).fill_(float("nan"))


@needs_fmnist
def test_nan_stops_training_and_keeps_checkpoints(tmp_path):
    from rwdet.classification.config import load_cls_config
    from rwdet.classification.trainer import ClassificationTrainer

    cfg = load_cls_config(TINY_CLS, ["OUTPUT_DIR", str(tmp_path), "SOLVER.MAX_ITER", "4",
                                     "SOLVER.CHECKPOINT_PERIOD", "2", "SOLVER.IMS_PER_BATCH", "8"])
    trainer = ClassificationTrainer(cfg)
    trainer.register_hooks([_PoisonAt(2)])
    trainer.resume_or_load(resume=False)
    with pytest.raises(FloatingPointError):
        trainer.train()
    saved = torch.load(tmp_path / "model_0000001.pth", map_location="cpu", weights_only=False)
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())
    assert not list(tmp_path.glob("*.tmp.*"))


# --------------------------------------------------------------------------- kill -9, subprocesses

# Runs a tool with a kill -9 of its own process at a set moment:
# - KILL_AT_SAVE=N: at the N-th torch.save, after a few bytes are written (a kill in the middle
#   of a checkpoint write);
# - KILL_AFTER_TAG=NAME: as soon as last_checkpoint names NAME (a kill during training, the
#   checkpoint and its tag both written). In the process itself, so no watcher polling the run
#   folder can come late on a loaded machine.
_KILL_HOOK = """
import os, runpy, signal, sys, torch
from rwdet.engine.checkpoint import AtomicCheckpointer
if "KILL_AT_SAVE" in os.environ:
    n, calls, save = int(os.environ["KILL_AT_SAVE"]), [0], torch.save
    def killing_save(obj, f, *args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            f.write(b"partial"); f.flush(); os.kill(os.getpid(), signal.SIGKILL)
        return save(obj, f, *args, **kwargs)
    torch.save = killing_save
if "KILL_AFTER_TAG" in os.environ:
    tag = AtomicCheckpointer.tag_last_checkpoint
    def killing_tag(self, name):
        tag(self, name)
        if name == os.environ["KILL_AFTER_TAG"]:
            os.kill(os.getpid(), signal.SIGKILL)
    AtomicCheckpointer.tag_last_checkpoint = killing_tag
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _tool(tool, args, kill_at_save=None, kill_after_tag=None, timeout=400):
    """Run tools/<tool>; return (returncode, stdout + stderr). ``kill_at_save`` (N) and
    ``kill_after_tag`` (a checkpoint's file name): the kills of ``_KILL_HOOK``."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, str(REPO / "tools" / tool), *args]
    kills = {"KILL_AT_SAVE": kill_at_save, "KILL_AFTER_TAG": kill_after_tag}
    kills = {k: str(v) for k, v in kills.items() if v}
    if kills:
        env.update(kills)
        cmd = [sys.executable, "-c", _KILL_HOOK, *cmd[1:]]
    with open(os.devnull, "rb") as stdin, subprocess.Popen(
        cmd, cwd=REPO, env=env, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def _ok(rc, out):
    assert rc == 0, out[-4000:]
    return out


@pytest.fixture(scope="module")
def det_run_killed_in_save(tmp_path_factory):
    """tools/train_net.py, 4 iterations, checkpoints at 1 and 3; kill -9 while writing
    model_final.pth. Returns the run folder and the common arguments."""
    root = os.environ.get("RWDET_BCCD_ROOT") or str(REPO.parent / "shared" / "datasets" / "bccd")
    if not os.path.isdir(os.path.join(root, "Annotations")):
        if os.environ.get("RWDET_BCCD_ROOT"):
            raise FileNotFoundError(root)
        pytest.skip("BCCD not found")
    out = tmp_path_factory.mktemp("det") / "run"
    common = ["--config-file", TINY_DET, "DATASETS.BCCD_ROOT", root, "OUTPUT_DIR", str(out)]
    rc, log = _tool("train_net.py", common, kill_at_save=3)
    assert rc == -signal.SIGKILL, log[-3000:]
    assert (out / "last_checkpoint").read_text() == "model_0000003.pth"
    assert len(list(out.glob("model_final.pth.tmp.*"))) == 1 and not (out / "model_final.pth").exists()
    return out, common


@pytest.mark.parametrize("opts, message", [
    (["--resume", "MODEL.RANDWIRE.SEEDS", "[4, 5, 6]"], "different random graphs"),  # checkpoint
    (["MODEL.RANDWIRE.NORM", "GN"], "uses 32 groups"),  # model build
    (["MODEL.ROI_HEADS.NUM_CLASSES", "5"], "has 3 categories"),  # data
])
def test_refused_command_leaves_run_folder_unchanged(det_run_killed_in_save, opts, message):
    out, common = det_run_killed_in_save
    before = folder_hash(out)
    lead = opts[:1] if opts[0] == "--resume" else []  # the flag in its place, before the overrides
    rc, log = _tool("train_net.py", [*common[:2], *lead, *common[2:], *opts[len(lead):]])
    assert rc != 0 and message in log, log[-3000:]
    assert folder_hash(out) == before


def test_detection_kill9_in_save_and_in_training_then_resume(det_run_killed_in_save, tmp_path):
    src, common = det_run_killed_in_save
    out = tmp_path / "run"
    shutil.copytree(src, out)
    common = [*common[:-1], str(out)]
    # The checkpoint named by last_checkpoint is truncated: --resume falls back to the newest
    # one that loads (model_0000001.pth), removes the stale temporary, and continues.
    full = (out / "model_0000003.pth").read_bytes()
    (out / "model_0000003.pth").write_bytes(full[: len(full) // 2])
    rc, log = _tool("train_net.py", [*common[:2], "--resume", *common[2:], "SOLVER.MAX_ITER", "50"],
                    kill_after_tag="model_0000005.pth")
    assert rc == -signal.SIGKILL, log[-3000:]  # killed during training, after iteration 5's save
    assert "a temporary file left by an interrupted write" in log and "model_final.pth.tmp." in log
    assert "Resuming from" in log and "model_0000001.pth instead" in log and "model_0000003.pth" in log
    assert "Starting at iteration 2 of 50" in log
    assert not list(out.glob("*.tmp.*"))
    log = _ok(*_tool("train_net.py", [*common[:2], "--resume", *common[2:], "SOLVER.MAX_ITER", "8"]))
    assert "Starting at iteration 6 of 8" in log
    assert (out / "last_checkpoint").read_text() == "model_final.pth"
    assert torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)["iteration"] == 7


@needs_fmnist
def test_pretraining_kill9_in_save_and_in_training_then_resume(tmp_path):
    out = tmp_path / "run"
    common = ["--config-file", TINY_CLS, "OUTPUT_DIR", str(out), "SOLVER.CHECKPOINT_PERIOD", "2",
              "SOLVER.IMS_PER_BATCH", "16", "TEST.IMS_PER_BATCH", "1000"]
    rc, log = _tool("pretrain_net.py", [*common, "SOLVER.MAX_ITER", "6"], kill_at_save=2)
    assert rc == -signal.SIGKILL, log[-3000:]
    assert (out / "last_checkpoint").read_text() == "model_0000001.pth"
    assert list(out.glob("model_0000003.pth.tmp.*"))
    before = folder_hash(out)
    rc, log = _tool("pretrain_net.py", [*common[:2], "--resume", *common[2:], "SOLVER.MAX_ITER", "6",
                                        "MODEL.RANDWIRE.SEEDS", "[4, 5, 6]"])
    assert rc != 0 and "different random graphs" in log and folder_hash(out) == before
    rc, log = _tool("pretrain_net.py", [*common[:2], "--resume", *common[2:], "SOLVER.MAX_ITER", "200"],
                    kill_after_tag="model_0000005.pth")
    assert rc == -signal.SIGKILL, log[-3000:]
    assert "a temporary file left by an interrupted write" in log and not list(out.glob("*.tmp.*"))
    assert "starting at iteration 2" in log
    log = _ok(*_tool("pretrain_net.py", [*common[:2], "--resume", *common[2:], "SOLVER.MAX_ITER", "8"]))
    assert "starting at iteration 6" in log
    assert json.loads((out / "eval_results.json").read_text())["iterations"] == 8
