"""RetinaNet, Mask R-CNN and Cascade R-CNN on RandWire-FPN (docs/META_ARCHITECTURES.md): the COCO
configs build, the real-data configs train 2 iterations through tools/train_net.py on real photos
(Mask R-CNN on balloon, RetinaNet and Cascade on BCCD), evaluate (bbox, and segm for Mask R-CNN),
start from a pretrained classifier checkpoint and round-trip their own; the balloon loader."""

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model
from detectron2.modeling.backbone.fpn import LastLevelP6P7

from rwdet.analysis.compare_backbones import check_same_setup, count_flops, read_run
from rwdet.data import (BALLOON_CLASSES, check_num_classes, load_via_instances, prepare_datasets,
                        register_balloon, register_datasets_from_config)
from rwdet.engine import AtomicCheckpointer
from rwdet.engine.defaults import get_rwdet_cfg, load_config

REPO = Path(__file__).resolve().parents[1]

#: The tiny model of every training test: small regime, C=16, N=8 with the graph seeds of
#: tests/configs/tiny_fashion_mnist.yaml (so its classifier checkpoints load), 256 px images.
TINY_OPTS = [
    "MODEL.DEVICE", "cpu", "MODEL.RANDWIRE.REGIME", "small", "MODEL.RANDWIRE.SEEDS", "[1, 2, 3]",
    "MODEL.RANDWIRE.CHANNELS", "16", "MODEL.RANDWIRE.NODES", "8", "MODEL.FPN.OUT_CHANNELS", "32",
    "INPUT.MIN_SIZE_TRAIN", "(256,)", "INPUT.MAX_SIZE_TRAIN", "341",
    "INPUT.MIN_SIZE_TEST", "256", "INPUT.MAX_SIZE_TEST", "341",
    "MODEL.ROI_BOX_HEAD.FC_DIM", "128", "MODEL.ROI_MASK_HEAD.CONV_DIM", "32",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64", "MODEL.RETINANET.NUM_CONVS", "1",
    "SOLVER.MAX_ITER", "2", "SOLVER.WARMUP_ITERS", "0", "SOLVER.STEPS", "()", "SOLVER.CHECKPOINT_PERIOD", "2",
    # at most 10 detections per image: an untrained detector fills its quota, and each mask is
    # pasted at the photo's full size (balloon photos are up to 2048 px)
    "TEST.DETECTIONS_PER_IMAGE", "10",
]

COCO_CONFIGS = [
    "retinanet_randwire_ws.yaml", "retinanet_randwire_ws_small.yaml", "retinanet_randwire_ws_c154.yaml",
    "mask_rcnn_randwire_ws.yaml", "mask_rcnn_randwire_ws_small.yaml", "mask_rcnn_randwire_ws_c154.yaml",
    "cascade_rcnn_randwire_ws.yaml", "cascade_rcnn_randwire_ws_small.yaml",
]


def find_balloon_root() -> Path:
    """$RWDET_BALLOON_ROOT if set, else <repo>/../shared/datasets/balloon (which may not exist)."""
    env = os.environ.get("RWDET_BALLOON_ROOT")
    if env:
        return Path(env)
    bccd = os.environ.get("RWDET_BCCD_ROOT")  # the shared datasets folder, when CI names BCCD's
    if bccd and (Path(bccd).parent / "balloon").is_dir():
        return Path(bccd).parent / "balloon"
    return REPO.parent / "shared" / "datasets" / "balloon"


@pytest.fixture(scope="session")
def balloon_root() -> Path:
    root = find_balloon_root()
    if not (root / "train" / "via_region_data.json").is_file():
        if os.environ.get("RWDET_BALLOON_ROOT"):
            raise FileNotFoundError(f"RWDET_BALLOON_ROOT={root} has no balloon data (train/via_region_data.json)")
        pytest.skip(f"balloon photos not found at {root}; set RWDET_BALLOON_ROOT")
    return root


def run_train_net(args):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "train_net.py"), *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        pytest.fail(f"train_net {args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


# ---------------------------------------------------------------------------------------------
# balloon data
# ---------------------------------------------------------------------------------------------


def test_balloon_loader_counts_polygons_and_boxes(balloon_root):
    names = register_balloon(str(balloon_root))
    assert names == ["balloon_train", "balloon_val"]
    for name, images, polygons in (("balloon_train", 61, 255), ("balloon_val", 13, 50)):
        dicts = DatasetCatalog.get(name)
        assert len(dicts) == images
        assert sum(len(d["annotations"]) for d in dicts) == polygons
        assert MetadataCatalog.get(name).thing_classes == list(BALLOON_CLASSES)
        for d in dicts:
            assert os.path.isfile(d["file_name"])
            for a in d["annotations"]:
                x1, y1, x2, y2 = a["bbox"]
                assert 0 <= x1 < x2 <= d["width"] and 0 <= y1 < y2 <= d["height"], (d["file_name"], a["bbox"])
                assert a["category_id"] == 0 and len(a["segmentation"]) == 1
                poly = np.asarray(a["segmentation"][0]).reshape(-1, 2)
                assert len(poly) >= 3
                # the box is the polygon's extent
                assert (poly.min(0).tolist(), poly.max(0).tolist()) == ([x1, y1], [x2, y2])
    # width x height are the decoded image's (as Detectron2's read_image checks them)
    first = DatasetCatalog.get("balloon_val")[0]
    assert cv2.imread(first["file_name"]).shape[:2] == (first["height"], first["width"])


def test_via_polygon_on_the_border_is_clipped(tmp_path):
    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((40, 50, 3), np.uint8))
    region = {"shape_attributes": {"name": "polygon", "all_points_x": [10, 50, 30], "all_points_y": [5, 20, 40]}}
    (tmp_path / "via.json").write_text(json.dumps({"a.jpg123": {"filename": "a.jpg", "regions": {"0": region}}}))
    (d,) = load_via_instances(str(tmp_path / "via.json"), str(tmp_path))
    assert (d["width"], d["height"]) == (50, 40)
    assert d["annotations"][0]["bbox"] == [10.5, 5.5, 50.0, 40.0]
    assert d["annotations"][0]["segmentation"] == [[10.5, 5.5, 50.0, 20.5, 30.5, 40.0]]
    rect = {"shape_attributes": {"name": "rect", "x": 1, "y": 1, "width": 5, "height": 5}}
    (tmp_path / "via.json").write_text(json.dumps({"k": {"filename": "a.jpg", "regions": [rect]}}))
    with pytest.raises(ValueError, match="'rect'; only 'polygon'"):
        load_via_instances(str(tmp_path / "via.json"), str(tmp_path))


def test_missing_balloon_folder_is_named(tmp_path):
    cfg = get_rwdet_cfg()
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = ("balloon_train",), ()
    cfg.DATASETS.BALLOON_ROOT = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="BALLOON_ROOT.*nowhere.*does not exist.*matterport/Mask_RCNN"):
        prepare_datasets(cfg)
    (tmp_path / "partial" / "train").mkdir(parents=True)
    cfg.DATASETS.BALLOON_ROOT = str(tmp_path / "partial")
    with pytest.raises(FileNotFoundError, match=r"lacks \['train/via_region_data.json', 'val/via_region_data.json'\]"):
        register_datasets_from_config(cfg)
    # Not registered at all (no BALLOON_ROOT): the message says which key to set.
    for name in ("balloon_train", "balloon_val"):
        for catalog in (DatasetCatalog, MetadataCatalog):
            if name in catalog.list():
                catalog.remove(name)
    cfg.DATASETS.BALLOON_ROOT = ""
    with pytest.raises(ValueError, match="'balloon_train', which is not registered: set DATASETS.BALLOON_ROOT"):
        prepare_datasets(cfg)


def test_num_classes_checked_on_the_key_of_the_meta_architecture(bccd_root):
    cfg = load_config(str(REPO / "configs/bccd/retinanet_randwire_ws_c109_bccd.yaml"),
                      ["DATASETS.BCCD_ROOT", str(bccd_root), "MODEL.ROI_HEADS.NUM_CLASSES", "80"])
    register_datasets_from_config(cfg)
    check_num_classes(cfg, "bccd_train")  # RetinaNet: ROI_HEADS is not its key
    cfg = load_config(str(REPO / "configs/bccd/retinanet_randwire_ws_c109_bccd.yaml"),
                      ["DATASETS.BCCD_ROOT", str(bccd_root), "MODEL.RETINANET.NUM_CLASSES", "80"])
    with pytest.raises(ValueError, match="MODEL.RETINANET.NUM_CLASSES=80, but dataset 'bccd_train'"):
        check_num_classes(cfg, "bccd_train")


# ---------------------------------------------------------------------------------------------
# configs build
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", COCO_CONFIGS)
def test_coco_config_builds(name):
    # COCO is not here: build only, with its RandWire shrunk (the regime as the config's; N=10
    # so that the regular regime's res2 has 5 nodes for K=4).
    cfg = load_config(str(REPO / "configs" / name), ["MODEL.DEVICE", "cpu", "MODEL.RANDWIRE.CHANNELS", "16",
                                                    "MODEL.RANDWIRE.NODES", "10", "MODEL.RANDWIRE.NORM", "BN"])
    assert cfg.DATASETS.TRAIN == ("coco_2017_train",) and cfg.SOLVER.MAX_ITER == 90000
    model = build_model(cfg).eval()
    shapes = model.backbone.output_shape()
    if name.startswith("retinanet"):
        assert type(model).__name__ == "RetinaNet" and cfg.MODEL.RETINANET.NUM_CLASSES == 80
        assert {k: v.stride for k, v in shapes.items()} == {"p3": 8, "p4": 16, "p5": 32, "p6": 64, "p7": 128}
        assert list(model.backbone.bottom_up.output_shape()) == ["res3", "res4", "res5"]
        top = model.backbone.top_block
        assert isinstance(top, LastLevelP6P7) and top.in_feature == "res5"
        assert top.p6.in_channels == model.backbone.bottom_up.output_shape()["res5"].channels
        assert model.anchor_generator.num_cell_anchors == [9] * 5  # 3 sizes x 3 aspect ratios per level
    else:
        assert {k: v.stride for k, v in shapes.items()} == {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}
        heads = model.roi_heads
        assert heads.mask_on == name.startswith("mask_rcnn")
        if name.startswith("cascade"):
            assert type(heads).__name__ == "CascadeROIHeads" and heads.num_cascade_stages == 3
        else:
            assert type(heads).__name__ == "StandardROIHeads"
    with torch.no_grad():
        out = model([{"image": torch.zeros(3, 96, 128), "height": 96, "width": 128}])
    assert out[0]["instances"].image_size == (96, 128)
    if name.startswith("mask_rcnn"):
        assert out[0]["instances"].has("pred_masks") or len(out[0]["instances"]) == 0


def test_retinanet_backbone_refuses_outputs_without_res5():
    cfg = load_config(str(REPO / "configs/retinanet_randwire_ws_small.yaml"),
                      ["MODEL.DEVICE", "cpu", "MODEL.RANDWIRE.CHANNELS", "16", "MODEL.RANDWIRE.NODES", "8",
                       "MODEL.RANDWIRE.NORM", "BN", "MODEL.RANDWIRE.OUT_FEATURES", "['res3', 'res4']",
                       "MODEL.FPN.IN_FEATURES", "['res3', 'res4']"])
    with pytest.raises(ValueError, match="lacks res5"):
        build_model(cfg)


TWINS = [
    ("configs/balloon/mask_rcnn_randwire_ws_c109_balloon.yaml", "configs/balloon/mask_rcnn_R_50_FPN_balloon.yaml"),
    ("configs/bccd/retinanet_randwire_ws_c109_bccd.yaml", "configs/bccd/retinanet_R_50_FPN_bccd.yaml"),
    ("configs/bccd/cascade_rcnn_randwire_ws_c109_bccd.yaml", "configs/bccd/cascade_rcnn_R_50_FPN_bccd.yaml"),
]


@pytest.mark.parametrize("pair", TWINS, ids=["mask_rcnn", "retinanet", "cascade"])
def test_twins_differ_in_the_backbone_only(pair):
    # tools/compare_backbones.py refuses pairs that differ outside the backbone; these pass.
    cfgs = {p: load_config(str(REPO / p), ["MODEL.DEVICE", "cpu"]) for p in pair}
    check_same_setup(cfgs)
    rw, r50 = cfgs.values()
    assert rw.MODEL.META_ARCHITECTURE == r50.MODEL.META_ARCHITECTURE
    assert "randwire" in rw.MODEL.BACKBONE.NAME and "resnet" in r50.MODEL.BACKBONE.NAME
    assert rw.MODEL.RANDWIRE.CHANNELS == 109 and r50.MODEL.RESNETS.DEPTH == 50
    assert list(rw.MODEL.RANDWIRE.OUT_FEATURES) == list(r50.MODEL.RESNETS.OUT_FEATURES) == list(rw.MODEL.FPN.IN_FEATURES)


def test_retinanet_twins_flops_counted():
    # compare_backbones counts backbone+FPN FLOPs (p6/p7 included) at the test input size.
    paths = [str(REPO / p) for p in TWINS[1]]
    counts = count_flops(paths)
    for p in paths:
        assert counts[p]["input_shape"] == [1, 3, 320, 448]
    rw, r50 = (counts[p]["flops"] for p in paths)
    assert 0.5 < rw / r50 < 2.0, (rw, r50)  # twins of about equal FLOPs (as ImageNet classifiers: 4.0 G each)


# ---------------------------------------------------------------------------------------------
# real data: train 2 iterations, evaluate, pretrained classifier in, own checkpoint round trip
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def classifier_checkpoint(tmp_path_factory):
    """A pretraining checkpoint in rwdet's format (tools/pretrain_net.py's checkpointer), of the
    tiny RandWire classifier of tests/configs/tiny_fashion_mnist.yaml, its weights perturbed so
    that they differ from any fresh initialisation."""
    from rwdet.classification.config import load_cls_config
    from rwdet.classification.data import DEFAULT_FASHION_MNIST_ROOT
    from rwdet.classification.trainer import ClassificationTrainer

    if not os.path.isdir(DEFAULT_FASHION_MNIST_ROOT):
        pytest.skip("Fashion-MNIST not installed (the classification trainer loads it)")
    out = tmp_path_factory.mktemp("classifier")
    cfg = load_cls_config(str(REPO / "tests/configs/tiny_fashion_mnist.yaml"), ["OUTPUT_DIR", str(out)])
    trainer = ClassificationTrainer(cfg)
    gen = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for p in trainer.net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    trainer.checkpointer.save("classifier")
    return out / "classifier.pth", {k: v.clone() for k, v in trainer.net.body.state_dict().items()}


@pytest.fixture(scope="session")
def balloon_mini_val(balloon_root, tmp_path_factory):
    """The first 3 balloon val photos (with their polygons) as a COCO json (DATASETS.COCO_JSON
    entry), converted by Detectron2 from the VIA loader's dicts, to keep evaluation short."""
    from detectron2.data.datasets.coco import convert_to_coco_dict

    register_balloon(str(balloon_root))
    coco = convert_to_coco_dict("balloon_val")
    coco["images"] = coco["images"][:3]
    keep = {im["id"] for im in coco["images"]}
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in keep]
    assert coco["annotations"] and all(a["segmentation"] for a in coco["annotations"])
    path = tmp_path_factory.mktemp("balloon_mini") / "val3.json"
    path.write_text(json.dumps(coco))
    return ["DATASETS.COCO_JSON", f"[['balloon_val_mini3', '{path}', '{balloon_root / 'val'}']]",
            "DATASETS.TEST", "('balloon_val_mini3',)"]


def _cases(bccd_root, balloon_root):
    return {
        "mask_rcnn_balloon": ("configs/balloon/mask_rcnn_randwire_ws_c109_balloon.yaml",
                              ["DATASETS.BALLOON_ROOT", str(balloon_root)], ("bbox", "segm")),
        "retinanet_bccd": ("configs/bccd/retinanet_randwire_ws_c109_bccd.yaml",
                           ["DATASETS.BCCD_ROOT", str(bccd_root)], ("bbox",)),
        "cascade_bccd": ("configs/bccd/cascade_rcnn_randwire_ws_c109_bccd.yaml",
                         ["DATASETS.BCCD_ROOT", str(bccd_root)], ("bbox",)),
    }


@pytest.fixture(scope="session")
def bccd_mini_test(bccd_root, tmp_path_factory):
    """The first 8 BCCD test photos as a COCO json (DATASETS.COCO_JSON entry), to keep evaluation short."""
    from conftest import write_mini_coco

    json_file, image_root = write_mini_coco(bccd_root, tmp_path_factory.mktemp("bccd_mini"), "test", 8)
    return ["DATASETS.COCO_JSON", f"[['bccd_test_mini8', '{json_file}', '{image_root}']]",
            "DATASETS.TEST", "('bccd_test_mini8',)"]


@pytest.mark.parametrize("case", ["mask_rcnn_balloon", "retinanet_bccd", "cascade_bccd"])
def test_trains_on_real_photos_evaluates_and_round_trips(case, bccd_root, balloon_root, bccd_mini_test,
                                                         balloon_mini_val, classifier_checkpoint, tmp_path):
    config, data, tasks = _cases(bccd_root, balloon_root)[case]
    config = str(REPO / config)
    opts = TINY_OPTS + data + (bccd_mini_test if "bccd" in case else balloon_mini_val)
    test_set = "bccd_test_mini8" if "bccd" in case else "balloon_val_mini3"
    ckpt, body = classifier_checkpoint

    # The classifier checkpoint loads into the detector's RandWire body, every tensor.
    cfg = load_config(config, opts + ["MODEL.WEIGHTS", str(ckpt)])
    model = build_model(cfg)
    fresh = model.backbone.bottom_up.state_dict()
    assert any(not torch.equal(fresh[k], v) for k, v in body.items())
    report = AtomicCheckpointer(model).load(str(ckpt), checkpointables=[])["transfer_report"]
    assert report["missing"] == [] and report["unexpected"] == []
    loaded = model.backbone.bottom_up.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in body.items())

    # 2 iterations on the real photos from the classifier's weights, then COCO evaluation.
    out = tmp_path / "run"
    run_train_net(["--config-file", config, *opts, "MODEL.WEIGHTS", str(ckpt), "TEST.EVAL_PERIOD", "2",
                   "OUTPUT_DIR", str(out)])
    metrics = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    losses = [m for m in metrics if "total_loss" in m]
    assert losses and all(np.isfinite(m["total_loss"]) for m in losses)
    if case == "mask_rcnn_balloon":
        assert all("loss_mask" in m for m in losses)
    if case == "retinanet_bccd":
        assert all("loss_cls" in m and "loss_box_reg" in m for m in losses)
    if case == "cascade_bccd":
        assert all(f"loss_box_reg_stage{s}" in m for m in losses for s in range(3))
    results = json.loads((out / "eval_results.json").read_text())
    assert list(results) == [test_set] and sorted(results[test_set]) == sorted(tasks)
    for task in tasks:
        values = results[test_set][task]
        assert {"AP", "AP50", "AP75"} <= set(values)
        assert all(v != v or 0.0 <= v <= 100.0 for v in values.values())  # NaN only where no GT
    if "segm" in tasks:
        segm = json.loads((out / "inference" / test_set / "coco_instances_results.json").read_text())
        assert all("segmentation" in r for r in segm)
    # tools/compare_backbones.py reads the run, mask AP included for Mask R-CNN
    run = read_run(str(out), test_set)
    assert run["bbox"] == results[test_set]["bbox"] and run["evaluations"][-1][0] == 2  # the final one
    assert run["segm"] == results[test_set].get("segm", {})
    assert len(run["segm_evaluations"]) == ("segm" in tasks)

    # Its own checkpoint round-trips: --eval-only from model_final.pth (BN not folded) gives the
    # training run's final evaluation exactly, and a model loaded from it the same outputs.
    ev = tmp_path / "eval"
    run_train_net(["--config-file", str(out / "config.yaml"), "--eval-only", "MODEL.WEIGHTS",
                   str(out / "model_final.pth"), "TEST.FOLD_BN", "False", "OUTPUT_DIR", str(ev)])
    assert json.loads((ev / "eval_results.json").read_text()) == results
    saved = load_config(str(out / "config.yaml"), ["MODEL.WEIGHTS", str(out / "model_final.pth")])
    a, b = build_model(saved).eval(), build_model(saved).eval()
    for m in (a, b):
        AtomicCheckpointer(m).load(saved.MODEL.WEIGHTS, checkpointables=[])
    assert not any(torch.equal(v, loaded[k]) for k, v in a.backbone.bottom_up.state_dict().items()
                   if k in loaded and v.dtype.is_floating_point and v.numel() > 1 and "weight" in k)
    register_datasets_from_config(saved)
    image = cv2.imread(DatasetCatalog.get(test_set)[0]["file_name"])
    inputs = [{"image": torch.as_tensor(image[:, :, ::-1].copy()).permute(2, 0, 1).float(),
               "height": image.shape[0], "width": image.shape[1]}]
    with torch.no_grad():
        ia, ib = a(inputs)[0]["instances"], b(inputs)[0]["instances"]
    assert len(ia) == len(ib)
    assert torch.equal(ia.pred_boxes.tensor, ib.pred_boxes.tensor) and torch.equal(ia.scores, ib.scores)
    if "segm" in tasks:
        assert torch.equal(ia.pred_masks, ib.pred_masks)


# ---------------------------------------------------------------------------------------------
# demo: masks drawn
# ---------------------------------------------------------------------------------------------


def test_demo_draws_masks_on_a_balloon_photo(balloon_root, tmp_path):
    from detectron2.structures import Boxes, Instances

    from rwdet.engine.demo import draw_instances

    register_balloon(str(balloon_root))
    record = DatasetCatalog.get("balloon_val")[0]
    image = cv2.imread(record["file_name"])
    h, w = image.shape[:2]
    anno = max(record["annotations"], key=lambda a: (a["bbox"][2] - a["bbox"][0]) * (a["bbox"][3] - a["bbox"][1]))
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [np.round(np.asarray(anno["segmentation"][0]).reshape(-1, 2) - 0.5).astype(np.int32)], 1)
    inst = Instances((h, w))
    inst.pred_boxes = Boxes(torch.tensor([anno["bbox"]], dtype=torch.float32))
    inst.scores = torch.tensor([0.9])
    inst.pred_classes = torch.tensor([0])
    meta = MetadataCatalog.get("balloon_val")
    boxes_only = draw_instances(image, inst, meta)
    inst.pred_masks = torch.from_numpy(mask.astype(bool))[None]
    with_mask = draw_instances(image, inst, meta)
    inside = cv2.erode(mask, np.ones((15, 15), np.uint8)).astype(bool)  # away from outline and label
    x1, y1, x2, y2 = (int(v) for v in anno["bbox"])
    inside[y1:y1 + 40, :] = False  # the label sits at the box's top
    assert inside.sum() > 1000

    def change(drawn):
        return np.abs(drawn.astype(int) - image.astype(int)).sum(axis=2)

    # The mask is filled (translucent colour) inside the balloon; boxes alone leave it as it was.
    assert np.median(change(with_mask)[inside]) > 40
    assert np.median(change(boxes_only)[inside]) < 15
    far = np.ones((h, w), bool)
    far[max(0, y1 - 60):y2 + 60, max(0, x1 - 60):x2 + 60] = False
    assert change(with_mask)[far].max() <= 3  # rest of the photo untouched (to rounding)


def test_demo_tool_on_a_balloon_photo_with_mask_rcnn(balloon_root, tmp_path):
    from detectron2.engine import DefaultPredictor

    config = str(REPO / "configs/balloon/mask_rcnn_randwire_ws_c109_balloon.yaml")
    cfg = load_config(config, TINY_OPTS)
    torch.manual_seed(0)
    weights = tmp_path / "model.pth"
    torch.save({"model": build_model(cfg).state_dict()}, weights)
    src = balloon_root / "val" / sorted(p.name for p in (balloon_root / "val").glob("*.jpg"))[0]
    cfg = load_config(config, TINY_OPTS + ["MODEL.WEIGHTS", str(weights), "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"])
    instances = DefaultPredictor(cfg)(cv2.imread(str(src)))["instances"]
    assert len(instances) > 0 and instances.has("pred_masks")
    assert tuple(instances.pred_masks.shape[1:]) == cv2.imread(str(src)).shape[:2]  # pasted at full size
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = tmp_path / "drawn"
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "demo.py"), "--config-file", config, "--input", str(src),
         "--output", str(out) + "/", "--confidence-threshold", "0.0", *TINY_OPTS, "MODEL.WEIGHTS", str(weights)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert f"{src}: {len(instances)} detections -> {out / src.name}" in proc.stdout
    written = cv2.imread(str(out / src.name))
    assert written.shape == cv2.imread(str(src)).shape
