"""RandWire models: stages, classifier and Detectron2 backbones (registered on import)."""

from .randwire import (  # noqa: F401
    REGIMES,
    DepthwiseConv3x3,
    RandWire,
    RandWireClassifier,
    RandWireNode,
    RandWireStage,
    SeparableConv,
    depthwise_tap_index,
    stage_layout,
)
from .backbone import (  # noqa: F401
    build_randwire_backbone,
    build_randwire_fpn_backbone,
    build_randwire_fpn_retinanet_backbone,
)
