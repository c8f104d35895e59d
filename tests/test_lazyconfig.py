"""LazyConfig configs beside the YAML ones: every one instantiates, each RandWire detector equals
its YAML twin (parameter names and shapes; outputs for the same weights and input), and
tools/lazyconfig_train_net.py trains on real BCCD photos."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.modeling import build_model

from conftest import bccd_root_or_skip
from rwdet import model_zoo
from rwdet.engine.defaults import load_config

REPO = Path(__file__).resolve().parents[1]
LAZY = [c for c in model_zoo.list_configs() if c.endswith(".py") and not c.startswith("common/")]
#: Each LazyConfig detector and its YAML twin.
TWINS = {
    "COCO-Detection/faster_rcnn_randwire_ws_fpn.py": "faster_rcnn_randwire_ws.yaml",
    "COCO-Detection/faster_rcnn_randwire_ws_small_fpn.py": "faster_rcnn_randwire_ws_small.yaml",
    "COCO-Detection/retinanet_randwire_ws_fpn.py": "retinanet_randwire_ws.yaml",
    "COCO-Detection/retinanet_randwire_ws_small_fpn.py": "retinanet_randwire_ws_small.yaml",
    "COCO-Detection/cascade_rcnn_randwire_ws_fpn.py": "cascade_rcnn_randwire_ws.yaml",
    "COCO-Detection/cascade_rcnn_randwire_ws_small_fpn.py": "cascade_rcnn_randwire_ws_small.yaml",
    "COCO-InstanceSegmentation/mask_rcnn_randwire_ws_fpn.py": "mask_rcnn_randwire_ws.yaml",
    "COCO-InstanceSegmentation/mask_rcnn_randwire_ws_small_fpn.py": "mask_rcnn_randwire_ws_small.yaml",
    "bccd/faster_rcnn_randwire_ws_small_bccd.py": "bccd/faster_rcnn_randwire_ws_small_bccd.yaml",
}


def test_every_lazyconfig_has_a_yaml_twin():
    assert sorted(LAZY) == sorted(TWINS)


@pytest.mark.parametrize("lazy", sorted(TWINS))
def test_lazyconfig_instantiates_and_equals_its_yaml_twin(lazy):
    cfg = model_zoo.get_config(lazy)
    instantiate(cfg.lr_multiplier)
    torch.manual_seed(0)
    model = instantiate(cfg.model).eval()
    twin = build_model(load_config(str(REPO / "configs" / TWINS[lazy]), ["MODEL.DEVICE", "cpu"])).eval()
    a, b = model.state_dict(), twin.state_dict()
    assert {k: tuple(v.shape) for k, v in a.items()} == {k: tuple(v.shape) for k, v in b.items()}
    model.load_state_dict(b)
    image = torch.randint(0, 256, (3, 96, 128), dtype=torch.uint8).float()
    inputs = [{"image": image, "height": 96, "width": 128}]
    with torch.no_grad():
        out, ref = model(inputs)[0]["instances"], twin(inputs)[0]["instances"]
        feats, ref_feats = model.backbone(image[None]), twin.backbone(image[None])
    assert feats.keys() == ref_feats.keys()
    for k in feats:
        assert torch.equal(feats[k], ref_feats[k]), k
    assert len(out) == len(ref)
    assert torch.equal(out.pred_boxes.tensor, ref.pred_boxes.tensor) and torch.equal(out.scores, ref.scores)
    assert model.input_format == twin.input_format == "RGB"


def _lazy_train(args, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, str(REPO / "tools" / "lazyconfig_train_net.py"), *args], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=900)


def test_two_iterations_on_bccd_through_the_lazy_path(tmp_path):
    """Two bf16 iterations (train.amp.enabled on a CPU: autocast, as SOLVER.AMP.DTYPE bfloat16 in
    the YAML trainers), evaluated; a wrong root and float16 on a CPU are refused before writing."""
    root = bccd_root_or_skip()
    config = model_zoo.get_config_file("bccd/faster_rcnn_randwire_ws_small_bccd.py")
    out = tmp_path / "run"
    proc = _lazy_train(["--config-file", config, f"datasets.bccd_root={root}", "train.max_iter=2",
                        f"train.output_dir={out}", "train.amp.enabled=True"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Mixed precision: bfloat16 in AutocastTrainer" in proc.stderr + proc.stdout
    results = json.loads((out / "eval_results.json").read_text())["bccd_test"]["bbox"]
    assert {"AP", "AP50", "AP-RBC", "AP-WBC", "AP-Platelets"} <= set(results)
    assert torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)["iteration"] == 1
    assert (out / "config.yaml").is_file() and (out / "metrics.json").is_file()
    # A wrong dataset root is refused before anything is written.
    bad = tmp_path / "bad"
    proc = _lazy_train(["--config-file", config, f"datasets.bccd_root={tmp_path / 'nowhere'}", "train.max_iter=2",
                        f"train.output_dir={bad}"], tmp_path)
    assert proc.returncode != 0 and "nowhere" in proc.stderr and not bad.exists()
    proc = _lazy_train(["--config-file", config, f"datasets.bccd_root={root}", "train.amp.enabled=True",
                        "train.amp.precision=float16", f"train.output_dir={bad}"], tmp_path)
    assert proc.returncode != 0 and "CPUs autocast to 'bfloat16' only" in proc.stderr and not bad.exists()
