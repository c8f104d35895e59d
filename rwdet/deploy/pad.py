"""Deploy rewrite: round every RandWire width up to a multiple of the runtime's SIMD block.

RandWire's regular C=109 has stage widths 54 (stem), 109, 218, 436 and 872: none a multiple of
16, the f32 channel block of AVX-512 (oneDNN / OpenVINO ``nChw16c``, ONNX Runtime's NCHWc). The
rewrite pads them to 64, 112, 224, 448 and 880 with zero filters (:func:`rwdet.layers.pad.pad_conv_channels`):
the extra channels hold exact zeros from the stem to the last stage, the real channels keep
their values, and the convs that read the body (FPN laterals, RetinaNet's p6, the classifier's
1x1 head conv) get zero weights for the new inputs, so the model's outputs are unchanged. The
cost is the padding's extra multiply-adds (about 5% for C=109); what it pays is measured in
docs/SPEED.md ("Exact rewrites").

Source: paper sec. 3.2 (the node op: weighted sum, ReLU, separable conv, BN) for why zeros stay
zeros (ReLU(0) = 0, a sum of zeros is zero, BN folded into the conv's bias);
``rwdet.layers.pad`` for the conv arithmetic.
"""

from __future__ import annotations

import logging
from typing import Dict, List

from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling.backbone import FPN
from torch import nn

from ..layers.pad import pad_conv_channels, round_up
from ..modeling.randwire import ConvBlock, RandWire, RandWireClassifier, RandWireStage

__all__ = ["pad_randwire_channels"]

logger = logging.getLogger(__name__)


def _check_folded(body: RandWire) -> None:
    """Refuse a body whose norms are not folded (a padded BN channel would not stay zero)."""
    left = [name for name, m in body.named_modules()
            if isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm, FrozenBatchNorm2d))]
    if left:
        raise ValueError(
            f"pad_randwire_channels needs a model with its BatchNorms folded into the convs "
            f"(rwdet.deploy.prepare_for_export first); norms left: {left[:3]}"
        )


def _pad_body(body: RandWire, multiple: int) -> Dict[str, int]:
    """Pad ``body``'s stem and stages in place; returns its new width per feature name."""
    old = dict(body._out_feature_channels)
    new = {k: round_up(v, multiple) for k, v in old.items()}
    stem = getattr(body.stem, body.stem.conv_name)
    pad_conv_channels(stem, out_channels=new["stem"])
    body.stem.out_channels = new["stem"]
    prev = new["stem"]
    for name in body.stage_names:
        stage = getattr(body, name)
        width = new[name]
        if isinstance(stage, ConvBlock):
            pad_conv_channels(getattr(stage, stage.conv_name), out_channels=width, in_channels=prev)
        elif isinstance(stage, RandWireStage):
            for preds, node in zip(stage._preds, stage.nodes):
                node_in = width if preds else prev
                pad_conv_channels(node.op.depthwise, node_in, node_in)
                pad_conv_channels(node.op.pointwise, out_channels=width, in_channels=node_in)
        else:  # pragma: no cover - RandWire builds only these two kinds
            raise TypeError(f"unexpected stage {name}: {type(stage).__name__}")
        stage.in_channels, stage.out_channels = prev, width
        prev = width
    body._out_feature_channels.update({k: new[k] for k in old})
    return new


def _pad_fpn_inputs(fpn: FPN, widths: Dict[str, int]) -> None:
    """Zero input columns for the FPN's convs that read the padded body."""
    # Detectron2's FPN keeps lateral_convs in reverse order of in_features.
    for conv, feature in zip(fpn.lateral_convs, reversed(fpn.in_features)):
        pad_conv_channels(conv, in_channels=widths[feature])
    top = fpn.top_block
    if _top_block_reads_body(fpn, widths):
        pad_conv_channels(top.p6, in_channels=widths[top.in_feature])


def _top_block_reads_body(fpn: FPN, features) -> bool:
    top = fpn.top_block
    return top is not None and getattr(top, "in_feature", None) in features


def _check_top_block(fpn: FPN, body: RandWire) -> None:
    """Refuse an FPN top block that reads the body through something other than a p6 conv."""
    if _top_block_reads_body(fpn, body.output_shape()) and not isinstance(getattr(fpn.top_block, "p6", None), nn.Conv2d):
        raise ValueError(
            f"the FPN's top block {type(fpn.top_block).__name__} reads {fpn.top_block.in_feature} of the "
            "RandWire body, but only a top block with a p6 conv (Detectron2's LastLevelP6P7) is known to pad"
        )


def pad_randwire_channels(model: nn.Module, multiple: int = 16) -> List[str]:
    """Round every RandWire width in ``model`` up to a multiple of ``multiple``, in place, with
    zero filters: the same outputs (within float rounding), every conv channel-blocked.

    Handled: a :class:`RandWireClassifier` (its body and its 1x1 head conv), and a Detectron2
    ``FPN`` whose ``bottom_up`` is a :class:`RandWire` (its lateral convs and, for RetinaNet,
    ``LastLevelP6P7``'s p6 conv), wherever they sit in ``model`` (a whole ``GeneralizedRCNN`` or
    ``RetinaNet``, or a backbone alone). A model without RandWire (e.g. a ResNet) is left
    unchanged. Afterwards ``body.output_shape()`` reports the padded widths.

    Args:
        model: in eval mode, BatchNorms folded (:func:`rwdet.deploy.prepare_for_export`).
        multiple: the channel block, e.g. 16 (AVX-512 f32) or 8 (AVX2 f32); 1 changes nothing.

    Returns:
        The names (in ``model.named_modules()``) of the padded RandWire bodies.

    Raises:
        ValueError: ``multiple`` < 1; norms not folded; a RandWire body whose outputs are read by
            something other than a classifier head or an FPN (its output shapes would change).
    """
    if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
        raise ValueError(f"multiple={multiple!r} must be an integer >= 1 (e.g. 16)")
    owners = {}
    for m in model.modules():
        if isinstance(m, RandWireClassifier):
            owners[id(m.body)] = m
        elif isinstance(m, FPN) and isinstance(m.bottom_up, RandWire):
            owners[id(m.bottom_up)] = m
    found = []
    for name, body in model.named_modules():  # check everything before changing anything
        if not isinstance(body, RandWire):
            continue
        owner = owners.get(id(body))
        if owner is None:
            raise ValueError(
                f"RandWire body {name or '(the model)'} is read by neither a RandWireClassifier nor an "
                "FPN: padding would change its output channels; pad the classifier or detector that holds it"
            )
        _check_folded(body)
        if isinstance(owner, FPN):
            _check_top_block(owner, body)
        found.append((name, body, owner))
    if multiple == 1:
        return []
    for name, body, owner in found:
        widths = _pad_body(body, multiple)
        if isinstance(owner, RandWireClassifier):
            pad_conv_channels(owner.head_conv, in_channels=widths["res5"])
        else:
            _pad_fpn_inputs(owner, widths)
        logger.info("Deploy rewrite: RandWire widths of %s padded to multiples of %d: %s",
                    name or "the model", multiple, widths)
    return [name for name, _, _ in found]
