"""Detectron2 backbone builders for RandWire, registered in ``BACKBONE_REGISTRY``.

Follows Detectron2's ``build_resnet_backbone`` / ``build_resnet_fpn_backbone``
(``detectron2/modeling/backbone/resnet.py`` and ``fpn.py``).
"""

from __future__ import annotations

from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import BACKBONE_REGISTRY, FPN
from detectron2.modeling.backbone.fpn import LastLevelMaxPool, LastLevelP6P7

from ..config import backbone_freeze_at, randwire_graph_specs
from .randwire import RandWire

__all__ = ["build_randwire_backbone", "build_randwire_fpn_backbone", "build_randwire_fpn_retinanet_backbone"]


@BACKBONE_REGISTRY.register()
def build_randwire_backbone(cfg, input_shape: ShapeSpec) -> RandWire:
    """Build a :class:`RandWire` backbone from ``cfg.MODEL.RANDWIRE`` (see ``add_randwire_config``).

    Args:
        cfg: a Detectron2 config with rwdet's keys.
        input_shape: the image ShapeSpec (its ``channels`` is used).

    Returns:
        RandWire: outputs ``cfg.MODEL.RANDWIRE.OUT_FEATURES`` (res2..res5 at strides 4..32),
        frozen by ``MODEL.BACKBONE.FREEZE_AT`` as Detectron2's ResNet (stem = 1, res2..res<k>
        = k; see :func:`rwdet.config.backbone_freeze_at`).

    Raises:
        ValueError: invalid RandWire keys (graph parameters, seeds, regime, norm) or a
            FREEZE_AT outside 0..5.
    """
    rw = cfg.MODEL.RANDWIRE
    return RandWire(
        randwire_graph_specs(cfg),
        regime=rw.REGIME,
        channels=rw.CHANNELS,
        in_channels=input_shape.channels,
        norm=rw.NORM,
        out_features=list(rw.OUT_FEATURES),
        freeze_at=backbone_freeze_at(cfg),
        forward_mode=rw.FORWARD, recompute=rw.RECOMPUTE,
    )


def _randwire_fpn_inputs(cfg, input_shape: ShapeSpec):
    """The RandWire bottom-up network and the checked ``MODEL.FPN.IN_FEATURES`` of an FPN on it.

    Raises:
        ValueError: IN_FEATURES is empty or names a stage that the RandWire backbone does not
            output (MODEL.RANDWIRE.OUT_FEATURES).
    """
    bottom_up = build_randwire_backbone(cfg, input_shape)
    in_features = list(cfg.MODEL.FPN.IN_FEATURES)
    if not in_features:
        raise ValueError("MODEL.FPN.IN_FEATURES is empty; set it to the stages to use, e.g. res2..res5")
    missing = [f for f in in_features if f not in bottom_up.output_shape()]
    if missing:
        raise ValueError(
            f"MODEL.FPN.IN_FEATURES {missing} are not RandWire outputs; "
            f"MODEL.RANDWIRE.OUT_FEATURES is {list(cfg.MODEL.RANDWIRE.OUT_FEATURES)}"
        )
    return bottom_up, in_features


@BACKBONE_REGISTRY.register()
def build_randwire_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """RandWire + FPN: one FPN level on each stage output in ``MODEL.FPN.IN_FEATURES``.

    With IN_FEATURES = res2..res5 this gives p2..p5 at strides 4..32, plus p6 (stride 64) from
    the max-pool top block, as Detectron2's ``build_resnet_fpn_backbone``.

    Returns:
        FPN: a Detectron2 Backbone with outputs p2..p6 of ``MODEL.FPN.OUT_CHANNELS`` channels.

    Raises:
        ValueError: an FPN input feature that the RandWire backbone does not output.
    """
    bottom_up, in_features = _randwire_fpn_inputs(cfg, input_shape)
    return FPN(
        bottom_up=bottom_up,
        in_features=in_features,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )


@BACKBONE_REGISTRY.register()
def build_randwire_fpn_retinanet_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """RandWire + FPN for RetinaNet: p3..p7, as Detectron2's ``build_retinanet_resnet_fpn_backbone``
    (``detectron2/modeling/backbone/fpn.py``; Lin et al., "Focal Loss for Dense Object
    Detection", ICCV 2017, sec. 4).

    With ``MODEL.FPN.IN_FEATURES`` = res3..res5 (and MODEL.RANDWIRE.OUT_FEATURES res3..res5,
    as Base-RetinaNet-RandWire-FPN.yaml sets them) the FPN gives p3..p5 at strides 8..32 and
    ``LastLevelP6P7`` adds p6 (stride 64, a 3x3 stride-2 conv on res5) and p7 (stride 128, a
    3x3 stride-2 conv on relu(p6)). As in the installed Detectron2 (0.6+), p6 is computed from
    res5 (its channels: the RandWire res5 width), not from p5.

    Returns:
        FPN: a Detectron2 Backbone with outputs p3..p7 of ``MODEL.FPN.OUT_CHANNELS`` channels
        (with IN_FEATURES res3..res5).

    Raises:
        ValueError: an FPN input feature that the RandWire backbone does not output, or a
            RandWire backbone without res5 among its outputs (LastLevelP6P7 reads it).
    """
    bottom_up, in_features = _randwire_fpn_inputs(cfg, input_shape)
    shapes = bottom_up.output_shape()
    if "res5" not in shapes:
        raise ValueError(
            f"MODEL.RANDWIRE.OUT_FEATURES={list(cfg.MODEL.RANDWIRE.OUT_FEATURES)} lacks res5, which "
            "RetinaNet's p6/p7 (LastLevelP6P7) are computed from; add res5"
        )
    out_channels = cfg.MODEL.FPN.OUT_CHANNELS
    return FPN(
        bottom_up=bottom_up,
        in_features=in_features,
        out_channels=out_channels,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelP6P7(shapes["res5"].channels, out_channels, in_feature="res5"),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
