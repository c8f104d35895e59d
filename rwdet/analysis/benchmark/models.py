"""Building one side of a pair: its model (random init) and its inputs, in a worker process.

:func:`build_side_model` is the one place where a side's model is made from its
:class:`~rwdet.analysis.benchmark.specs.SideSpec`; :class:`~rwdet.analysis.benchmark.measure.ModelBench`
calls it once, and everything else it measures goes through the model it returns.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import torch
import torchvision
from detectron2 import model_zoo
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import Boxes, ImageList, Instances
from PIL import Image
from torch import nn

# Everything either kind of model needs is imported here, before a worker reads its baseline
# RSS, so both sides of a pair start from the same libraries.
from ...classification.config import load_cls_config
from ...classification.model import build_classifier
from ...config import randwire_graph_specs
from ...data import BCCD_CLASSES, load_voc_instances
from ...engine.defaults import load_config
from ...graphs import format_setting
from .specs import REPO_ROOT, SideSpec

NUM_IMAGENET_CLASSES = 1000


def randwire_label(cfg, what: str) -> str:
    """E.g. ``RandWire-WS(4, 0.75) regular C=109 N=32 classifier``."""
    rw = cfg.MODEL.RANDWIRE
    spec = randwire_graph_specs(cfg)[-1]
    return f"RandWire-{format_setting(spec.model, spec.params)} {rw.REGIME} C={rw.CHANNELS} N={spec.num_nodes} {what}"


def build_side_model(side: SideSpec, device: str) -> Tuple[nn.Module, Any, str]:
    """Build ``side``'s model (random init, seeded by the caller) on ``device``.

    Returns:
        (model, its config or None, label for the report). Classifiers come on ``device``;
        Detectron2 puts a detector on its ``MODEL.DEVICE`` (set here to ``device``). A
        "*_backbone" side is the ``backbone`` (backbone+FPN) of the detector of the same config.

    Raises:
        ValueError: an unknown ``side.model``, or bad config overrides.
    """
    opts = ["MODEL.DEVICE", device, *side.opts]
    config = os.path.join(REPO_ROOT, side.config)  # side.config itself when absolute
    if side.model in ("randwire_cls", "resnet50_cls"):
        cfg = load_cls_config(config, opts)
        label = randwire_label(cfg, "classifier") if side.model == "randwire_cls" else "torchvision ResNet-50"
        return build_classifier(cfg).to(device), cfg, label
    if side.model == "mobilenet_v2_cls":
        model = torchvision.models.mobilenet_v2(weights=None, num_classes=NUM_IMAGENET_CLASSES)
        return model.to(device), None, "torchvision MobileNetV2"
    if side.model in ("randwire_det", "randwire_backbone"):
        cfg = load_config(config, opts)
        label = f"Faster R-CNN {randwire_label(cfg, 'FPN')}"
    elif side.model in ("r50fpn_det", "r50fpn_backbone"):
        cfg = get_cfg()
        cfg.merge_from_file(model_zoo.get_config_file(side.config))
        cfg.merge_from_list(["MODEL.WEIGHTS", "", *opts])
        cfg.freeze()
        label = "Faster R-CNN R50-FPN (Detectron2 model zoo)"
    else:
        raise ValueError(f"unknown model {side.model!r}; allowed: randwire_cls, resnet50_cls, "
                         "mobilenet_v2_cls, randwire_det, r50fpn_det, randwire_backbone, r50fpn_backbone")
    model = build_model(cfg)
    if side.kind == "backbone":
        label = label.replace("Faster R-CNN ", "") + ", backbone+FPN"
        return model.backbone, cfg, label
    return model, cfg, label


def backbone_inputs(images: Sequence[Tuple[torch.Tensor, ...]], cfg, backbone: nn.Module,
                    device: str) -> torch.Tensor:
    """The batch a detector's backbone+FPN gets from ``images``, as ``GeneralizedRCNN.preprocess_image``
    makes it: each image in the config's ``INPUT.FORMAT``, normalised with ``MODEL.PIXEL_MEAN`` /
    ``PIXEL_STD``, padded to the backbone's ``size_divisibility`` (Detectron2's ``ImageList``).

    Returns:
        (B, 3, H', W') float32 on ``device`` (H', W': the sizes padded up).
    """
    mean = torch.tensor(cfg.MODEL.PIXEL_MEAN, device=device).view(-1, 1, 1)
    std = torch.tensor(cfg.MODEL.PIXEL_STD, device=device).view(-1, 1, 1)
    tensors = [(d["image"] - mean) / std for d in detection_inputs(images, cfg, device, with_gt=False)]
    return ImageList.from_tensors(tensors, backbone.size_divisibility,
                                  padding_constraints=backbone.padding_constraints).tensor


def neutralize_detector_heads(model: nn.Module) -> None:
    """Zero the last layers of the RPN head and of the box predictor (weights and biases).

    The RPN then scores all anchors 0 and predicts zero deltas, so its proposals depend only on
    the anchors and the image size; the box predictor gives uniform class scores (below the
    test score threshold) and zero deltas.
    """
    rpn_head = model.proposal_generator.rpn_head
    predictor = model.roi_heads.box_predictor
    with torch.no_grad():
        for layer in (rpn_head.objectness_logits, rpn_head.anchor_deltas, predictor.cls_score, predictor.bbox_pred):
            layer.weight.zero_()
            layer.bias.zero_()


def synthetic_detection_images(batch: int, size: Tuple[int, int], seed: int) -> List[Tuple[torch.Tensor, ...]]:
    """``batch`` random RGB images of ``size`` with 3-8 random boxes each (seeded).

    Returns:
        per image: (image float (3, H, W) in [0, 255] RGB, boxes (n, 4) XYXY absolute,
        class ids (n,) in [0, 80)).
    """
    h, w = size
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batch):
        image = torch.rand(3, h, w, generator=g) * 255.0
        n = int(torch.randint(3, 9, (1,), generator=g))
        wh = torch.rand(n, 2, generator=g) * 0.35 + 0.05  # 5% .. 40% of the side
        bw, bh = wh[:, 0] * w, wh[:, 1] * h
        x1 = torch.rand(n, generator=g) * (w - bw)
        y1 = torch.rand(n, generator=g) * (h - bh)
        out.append((image, torch.stack([x1, y1, x1 + bw, y1 + bh], dim=1), torch.randint(0, 80, (n,), generator=g)))
    return out


def bccd_detection_images(root: str, batch: int, size: Tuple[int, int]) -> List[Tuple[torch.Tensor, ...]]:
    """The first ``batch`` BCCD train images, resized to ``size``, with their boxes.

    Returns:
        as :func:`synthetic_detection_images` (class ids 0..2: RBC, WBC, Platelets).

    Raises:
        RuntimeError: no train images under ``root``.
    """
    records = load_voc_instances(root, "train", BCCD_CLASSES)
    if not records:
        raise RuntimeError(f"no BCCD train images under {root!r}")
    h, w = size
    out = []
    for i in range(batch):
        rec = records[i % len(records)]
        with Image.open(rec["file_name"]) as im:
            w0, h0 = im.size
            im = im.convert("RGB").resize((w, h), Image.BILINEAR)
            image = torch.from_numpy(np.asarray(im, dtype=np.float32).copy()).permute(2, 0, 1)
        scale = torch.tensor([w / w0, h / h0, w / w0, h / h0])
        boxes = torch.tensor([a["bbox"] for a in rec["annotations"]], dtype=torch.float32).reshape(-1, 4) * scale
        classes = torch.tensor([a["category_id"] for a in rec["annotations"]], dtype=torch.int64)
        out.append((image, boxes, classes))
    return out


def detection_inputs(images: Sequence[Tuple[torch.Tensor, ...]], cfg, device: str,
                      with_gt: bool) -> List[Dict[str, Any]]:
    """Detectron2 inputs (list of dicts) on ``device`` in the model's ``INPUT.FORMAT``.

    ``height``/``width`` equal the image size, so inference does not rescale its outputs. With
    ``with_gt``, each dict has ``instances`` with ``gt_boxes`` and ``gt_classes`` (class ids
    modulo the model's number of classes).
    """
    num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    inputs = []
    for image, boxes, classes in images:
        if cfg.INPUT.FORMAT == "BGR":
            image = image.flip(0)
        h, w = image.shape[-2:]
        d = {"image": image.contiguous().to(device), "height": h, "width": w}
        if with_gt:
            inst = Instances((h, w))
            inst.gt_boxes = Boxes(boxes)
            inst.gt_classes = classes % num_classes
            d["instances"] = inst.to(device)
        inputs.append(d)
    return inputs
