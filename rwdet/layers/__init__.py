"""Ops that RandWire's modules compose (as Detectron2's ``layers/``): the depthwise conv with
its small-map CPU path, the level-batched node ops, and deploy-time BN folding."""

from .depthwise import DepthwiseConv3x3, depthwise_tap_index  # noqa: F401
from .fuse import CONV_BN_PAIRS, fold_batchnorm, fold_conv_bn, register_conv_bn_pairs  # noqa: F401
