"""Faster R-CNN with a RandWire FPN backbone on real BCCD photos: training and COCO evaluation."""

import json
from pathlib import Path

import torch
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from rwdet.data import BCCD_CLASSES, register_bccd
from rwdet.engine import Trainer
from rwdet.engine.defaults import load_config

TINY = str(Path(__file__).parent / "configs" / "tiny_bccd.yaml")


def test_faster_rcnn_loss_goes_down_on_bccd(bccd_root):
    register_bccd(str(bccd_root))
    cfg = load_config(TINY, ["DATASETS.BCCD_ROOT", str(bccd_root)])
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    # Fixed inputs (no random flip) so that the loss can only fall by learning.
    mapper = DatasetMapper(cfg, is_train=True, augmentations=[T.ResizeShortestEdge(160, 214)])
    batch = [mapper(d) for d in DatasetCatalog.get("bccd_train")[:2]]
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses = []
    with EventStorage():
        for _ in range(30):
            loss_dict = model(batch)
            loss = sum(loss_dict.values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.7 * first, losses


def test_evaluation_yields_coco_ap(bccd_root, tmp_path):
    names = register_bccd(str(bccd_root))
    # Eight test photos, as their own dataset, to keep the test short.
    mini = "bccd_test_first8"
    if mini not in DatasetCatalog.list():
        DatasetCatalog.register(mini, lambda: DatasetCatalog.get("bccd_test")[:8])
        MetadataCatalog.get(mini).set(thing_classes=list(BCCD_CLASSES), evaluator_type="coco")
    assert "bccd_test" in names
    cfg = load_config(TINY, ["DATASETS.TEST", f"('{mini}',)", "OUTPUT_DIR", str(tmp_path)])
    model = build_model(cfg).eval()
    results = Trainer.test(cfg, model)
    bbox = results["bbox"]  # Detectron2 unwraps a single test dataset
    for key in ["AP", "AP50", "AP75", "AP-RBC", "AP-WBC", "AP-Platelets"]:
        assert key in bbox
    assert all(v != v or 0.0 <= v <= 100.0 for v in bbox.values())  # NaN only where no GT
    saved = json.loads((tmp_path / "eval_results.json").read_text())
    assert saved[mini]["bbox"].keys() == bbox.keys()
    assert (tmp_path / "inference" / mini / "coco_instances_results.json").is_file()
