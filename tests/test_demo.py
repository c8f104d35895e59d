"""tools/demo.py: detections drawn on BCCD photos with Detectron2's Visualizer, read/written by OpenCV."""

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

from rwdet.data import BCCD_CLASSES
from rwdet.engine.defaults import load_config
from rwdet.engine.demo import draw_instances, expand_inputs, output_paths

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "tests" / "configs" / "tiny_bccd.yaml")


def run_demo_tool(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, str(REPO / "tools" / "demo.py"), *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def bccd_image(bccd_root):
    return sorted((bccd_root / "JPEGImages").glob("*.jpg"))[0]


def test_drawing_path_draws_given_boxes_with_class_names(bccd_root):
    image = cv2.imread(str(bccd_image(bccd_root)))
    h, w = image.shape[:2]
    inst = Instances((h, w))
    inst.pred_boxes = Boxes(torch.tensor([[100.0, 120.0, 260.0, 300.0]]))
    inst.scores = torch.tensor([0.93])
    inst.pred_classes = torch.tensor([1])
    meta = MetadataCatalog.get("__test_demo_bccd")
    meta.set(thing_classes=list(BCCD_CLASSES))
    drawn = draw_instances(image, inst, meta)
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    diff = np.abs(drawn.astype(int) - image.astype(int)).sum(axis=2)
    # The box outline changes the pixels on its edges; far from the box the photo is untouched.
    left_edge = diff[130:290, 96:105].max(axis=1)  # per row, across the left edge x=100
    bottom_edge = diff[295:305, 110:250].max(axis=0)  # per column, across the bottom edge y=300
    assert (left_edge > 60).mean() > 0.9 and (bottom_edge > 60).mean() > 0.9
    assert diff[400:, 400:].max() < 30
    # The box's inside is not painted over (only outline and label are drawn).
    assert np.median(diff[180:260, 150:220]) < 30
    # No instances: the photo comes back unchanged (to JPEG-free rounding).
    empty = draw_instances(image, inst[[]], meta)
    assert np.abs(empty.astype(int) - image.astype(int)).max() <= 1


def test_demo_tool_writes_a_drawing_of_a_bccd_photo(bccd_root, tmp_path):
    cfg = load_config(TINY, ["DATASETS.BCCD_ROOT", str(bccd_root)])
    weights = tmp_path / "model.pth"
    torch.manual_seed(0)
    torch.save({"model": build_model(cfg).state_dict()}, weights)
    src = bccd_image(bccd_root)
    out = tmp_path / "drawn"
    proc = run_demo_tool("--config-file", TINY, "--input", str(src), "--output", str(out) + "/",
                         "--confidence-threshold", "0.0", "MODEL.WEIGHTS", str(weights),
                         "DATASETS.BCCD_ROOT", str(bccd_root), "DATASETS.TEST", "('bccd_test',)")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    written = cv2.imread(str(out / src.name))
    assert written is not None and written.shape == cv2.imread(str(src)).shape
    assert f"-> {out / src.name}" in proc.stdout
    # Positional overrides right after --input's files, and an output file for one input.
    one = tmp_path / "one.png"
    proc = run_demo_tool("--config-file", TINY, "--input", str(src), "MODEL.WEIGHTS", str(weights),
                         "DATASETS.BCCD_ROOT", "", "DATASETS.TEST", "('bccd_test',)", "--output", str(one))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert cv2.imread(str(one)).shape == written.shape


def test_demo_inputs_and_outputs(tmp_path):
    for name in ["b.jpg", "a.PNG", "notes.txt"]:
        (tmp_path / name).write_bytes(b"x")
    assert expand_inputs([str(tmp_path)]) == [str(tmp_path / "a.PNG"), str(tmp_path / "b.jpg")]
    assert expand_inputs([str(tmp_path / "*.jpg"), str(tmp_path / "b.jpg")]) == [str(tmp_path / "b.jpg")]
    with pytest.raises(FileNotFoundError, match=r"--input '.*nothing\*\.jpg' matches no file"):
        expand_inputs([str(tmp_path / "nothing*.jpg")])
    assert output_paths(["x/a.jpg", "y/b.jpg"], "out") == [os.path.join("out", "a.jpg"), os.path.join("out", "b.jpg")]
    assert output_paths(["x/a.jpg"], "drawn.png") == ["drawn.png"]
    with pytest.raises(ValueError, match="one file but 2 inputs"):
        output_paths(["x/a.jpg", "y/b.jpg"], "drawn.png")
    with pytest.raises(ValueError, match="same file name"):
        output_paths(["x/a.jpg", "y/a.jpg"], "out/")


def test_demo_tool_names_a_pattern_that_matches_nothing(tmp_path):
    proc = run_demo_tool("--config-file", TINY, "--input", str(tmp_path / "missing*.jpg"), "MODEL.WEIGHTS", "w.pth")
    assert proc.returncode == 2 and "missing*.jpg" in proc.stderr and "matches no file" in proc.stderr


def test_demo_tool_checks_int8_calibration_data_before_drawing(bccd_root, tmp_path):
    """int8 serving calibrates on DATASETS.TRAIN: the demo checks it before building anything, so
    a missing training json is named with exit 2 and nothing is drawn."""
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    missing = tmp_path / "missing.json"
    out = tmp_path / "drawn"
    proc = run_demo_tool("--config-file", TINY, "--input", str(bccd_image(bccd_root)), "--output", str(out) + "/",
                         "MODEL.WEIGHTS", str(tmp_path / "w.pth"), "MODEL.DEPLOY.RUNTIME", "openvino",
                         "MODEL.DEPLOY.PRECISION", "int8", "DATASETS.BCCD_ROOT", "",
                         "DATASETS.COCO_JSON", f"[['calib_missing', '{missing}', '{tmp_path}']]",
                         "DATASETS.TRAIN", "('calib_missing',)", "DATASETS.TEST", "()")
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert str(missing) in proc.stderr
    assert not out.exists()
