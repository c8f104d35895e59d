"""Classifiers for pretraining, behind a registry (as timm's and Detectron2's model registries)."""

from __future__ import annotations

from typing import Dict, Tuple, Union

import torch
import torch.nn.functional as F
import torchvision
from detectron2.modeling.backbone import Backbone
from detectron2.modeling.backbone.resnet import BasicStem, ResNet
from detectron2.utils.events import get_event_storage
from fvcore.common.registry import Registry
from torch import nn

from ..config import backbone_freeze_at, randwire_graph_specs
from ..modeling.randwire import RandWire, RandWireClassifier, classifier_input_channels

__all__ = ["CLASSIFIER_REGISTRY", "build_classifier", "ClassificationModel", "ResNetClassifier"]

CLASSIFIER_REGISTRY = Registry("CLASSIFIER")
CLASSIFIER_REGISTRY.__doc__ = """Classifiers by function name (as timm): ``fn(cfg) -> nn.Module`` mapping (B, 3, H, W) images to (B, K) logits."""


@CLASSIFIER_REGISTRY.register()
def randwire(cfg) -> RandWireClassifier:
    """RandWire classifier of ``cfg.MODEL.RANDWIRE`` (paper table 1): body stem..res5, then head.

    The body is frozen by ``MODEL.BACKBONE.FREEZE_AT`` (default 0 here: pretraining trains all),
    the same key and meaning as for the detector (:func:`rwdet.config.backbone_freeze_at`).
    """
    rw = cfg.MODEL.RANDWIRE
    body = RandWire(
        randwire_graph_specs(cfg), regime=rw.REGIME, channels=rw.CHANNELS, norm=rw.NORM,
        out_features=["res5"], freeze_at=backbone_freeze_at(cfg),
        forward_mode=rw.FORWARD, recompute=rw.RECOMPUTE,
    )
    return RandWireClassifier(
        body, num_classes=cfg.MODEL.NUM_CLASSES, head_channels=cfg.MODEL.HEAD_CHANNELS,
        dropout=cfg.MODEL.DROPOUT, norm=rw.NORM,
    )


class ResNetClassifier(nn.Module):
    """A Detectron2 ResNet body with torchvision's ResNet head: global average pool -> fc.

    The body is the very module Detectron2's ``build_resnet_backbone`` builds (``stem``,
    ``res2``..``res5``), so the classifier's ``body.*`` tensors are the detector's
    ``backbone.bottom_up.*`` tensors under the same names: a checkpoint loads into R18-FPN with
    no conversion (``rwdet.engine.transfer``), where torchvision's ResNet needs Detectron2's
    ``convert-torchvision-to-d2.py``.

    Args:
        body: a Detectron2 ``ResNet`` whose out features include "res5".
        num_classes: number of classes (>= 1).

    Shapes:
        (B, 3, H, W) -> (B, num_classes) logits.

    Raises:
        ValueError: ``num_classes < 1`` or a body without "res5".
    """

    def __init__(self, body: Backbone, num_classes: int):
        super().__init__()
        channels = classifier_input_channels(body, num_classes)
        self.body = body
        self.fc = nn.Linear(channels, num_classes)
        nn.init.normal_(self.fc.weight, std=0.01)  # as torchvision's and Detectron2's ResNet heads
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.body(x)["res5"], 1).flatten(1)
        return self.fc(x)


@CLASSIFIER_REGISTRY.register()
def resnet18(cfg) -> ResNetClassifier:
    """ResNet-18 (He et al., CVPR 2016, table 1) as Detectron2 builds it for R18-FPN: ``BasicStem``
    (7x7 conv, stride 2, 3x3 max-pool, stride 2), four stages of two ``BasicBlock`` blocks (64, 128,
    256, 512 channels; strides 4..32), BN (trained from scratch, as the RandWire classifier's
    default), then global average pool and fc (:class:`ResNetClassifier`). The twin of RandWire's small regime
    in the detection comparisons (configs/bccd/faster_rcnn_R_18_FPN_bccd.yaml). Frozen by
    ``MODEL.BACKBONE.FREEZE_AT`` as the detector is."""
    stem = BasicStem(3, 64, norm="BN")
    stages = ResNet.make_default_stages(18, norm="BN")
    body = ResNet(stem, stages, out_features=["res5"], freeze_at=backbone_freeze_at(cfg))
    return ResNetClassifier(body, cfg.MODEL.NUM_CLASSES)


@CLASSIFIER_REGISTRY.register()
def resnet50(cfg) -> nn.Module:
    """torchvision's ResNet-50 (random init), the paper's baseline. Its checkpoints do not load
    into a detector (torchvision's names); ``resnet18`` is Detectron2's own and does."""
    return torchvision.models.resnet50(weights=None, num_classes=cfg.MODEL.NUM_CLASSES)


def build_classifier(cfg) -> nn.Module:
    """Build ``cfg.MODEL.ARCH`` from :data:`CLASSIFIER_REGISTRY`.

    Raises:
        ValueError: unknown architecture name (the message lists the registered ones).
    """
    name = cfg.MODEL.ARCH
    if name not in CLASSIFIER_REGISTRY:
        raise ValueError(f"MODEL.ARCH={name!r} is unknown; registered: {sorted(k for k, _ in CLASSIFIER_REGISTRY)}")
    return CLASSIFIER_REGISTRY.get(name)(cfg)


class ClassificationModel(nn.Module):
    """Wraps a classifier for Detectron2's ``SimpleTrainer``: batches in, a loss dict out.

    Args:
        net: classifier, (B, 3, H, W) -> (B, K) logits.
        label_smoothing: cross-entropy label smoothing (0.1 in the paper).
        channels_last: give ``net`` its images in ``torch.channels_last`` memory format (use it
            with a ``net`` converted by ``net.to(memory_format=torch.channels_last)``).

    Forward:
        batch: ``(images (B, 3, H, W) float, labels (B,) int64)``, on any device (moved to the
        model's, and to channels_last if asked). Training: ``{"loss_cls": scalar}``, and the
        batch top-1 (percent) goes to the EventStorage as ``train_top1`` when one is active.
        Eval: (B, K) logits.
    """

    def __init__(self, net: nn.Module, label_smoothing: float = 0.0, channels_last: bool = False):
        super().__init__()
        self.net = net
        self.label_smoothing = label_smoothing
        self.memory_format = torch.channels_last if channels_last else torch.preserve_format

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def forward(self, batch: Tuple[torch.Tensor, torch.Tensor]) -> Union[Dict[str, torch.Tensor], torch.Tensor]:
        images, labels = batch
        images = images.to(self.device, memory_format=self.memory_format, non_blocking=True)
        logits = self.net(images)
        if not self.training:
            return logits
        labels = labels.to(self.device, non_blocking=True)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        try:
            storage = get_event_storage()
        except AssertionError:
            storage = None
        if storage is not None:
            top1 = (logits.detach().argmax(1) == labels).float().mean().item() * 100
            storage.put_scalar("train_top1", top1)
        return {"loss_cls": loss}
