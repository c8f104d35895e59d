"""Detectron2 backbone builders for RandWire, registered in ``BACKBONE_REGISTRY``.

Follows Detectron2's ``build_resnet_backbone`` / ``build_resnet_fpn_backbone``
(``detectron2/modeling/backbone/resnet.py`` and ``fpn.py``).
"""

from __future__ import annotations

from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import BACKBONE_REGISTRY, FPN
from detectron2.modeling.backbone.fpn import LastLevelMaxPool

from ..config import backbone_freeze_at, randwire_graph_specs
from .randwire import RandWire

__all__ = ["build_randwire_backbone", "build_randwire_fpn_backbone"]


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
    return FPN(
        bottom_up=bottom_up,
        in_features=in_features,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
