"""Classifiers for pretraining, behind a registry (as timm's and Detectron2's model registries)."""

from __future__ import annotations

from typing import Dict, Tuple, Union

import torch
import torch.nn.functional as F
import torchvision
from detectron2.utils.events import get_event_storage
from fvcore.common.registry import Registry
from torch import nn

from ..config import backbone_freeze_at, randwire_graph_specs
from ..modeling.randwire import RandWire, RandWireClassifier

__all__ = ["CLASSIFIER_REGISTRY", "build_classifier", "ClassificationModel"]

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


@CLASSIFIER_REGISTRY.register()
def resnet50(cfg) -> nn.Module:
    """torchvision's ResNet-50 (random init), the paper's baseline."""
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
