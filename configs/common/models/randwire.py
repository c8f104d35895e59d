"""LazyConfig pieces for RandWire FPN detectors: the RandWire bottom-up network from plain
arguments (the YAML keys MODEL.RANDWIRE.* as keyword arguments), put into Detectron2's own
common models (``detectron2.model_zoo`` ``common/models/mask_rcnn_fpn.py``, ``retinanet.py``,
``cascade_rcnn.py``), as Detectron2's MViTv2 / ViTDet configs swap ``model.backbone.bottom_up``.
Each function returns a fresh LazyConfig node (``model_zoo.get_config`` loads anew each call)."""

from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config
from detectron2.modeling.backbone.fpn import LastLevelP6P7

from rwdet.config import generate_stage_graphs
from rwdet.modeling import RandWire, stage_layout

#: The YAML configs' input: RGB with ImageNet statistics in 0-255 (torchvision's convention).
RGB_MEAN, RGB_STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]


def randwire_ws(regime="regular", channels=109, seeds=(1, 2, 3, 4), nodes=32, k=4, p=0.75, norm="SyncBN",
                out_features=("res2", "res3", "res4", "res5"), freeze_at=0):
    """``L(RandWire)`` of RandWire-WS(k, p) (paper table 1 regimes): graphs generated from the
    same settings as MODEL.RANDWIRE.{GRAPH_MODEL, K, P, SEEDS, NODES, REGIME}."""
    return L(RandWire)(
        specs=L(generate_stage_graphs)(graph_model="WS", regime=regime, seeds=list(seeds), nodes=nodes, k=k, p=p),
        regime=regime, channels=channels, norm=norm, out_features=list(out_features), freeze_at=freeze_at,
    )


def _rgb(model):
    model.pixel_mean, model.pixel_std, model.input_format = RGB_MEAN, RGB_STD, "RGB"
    return model


def rcnn_fpn(bottom_up, mask=False, cascade=False):
    """Detectron2's FPN R-CNN (``common/models/mask_rcnn_fpn.py``, or ``cascade_rcnn.py``) on
    ``bottom_up``; without ``mask`` the mask head is removed (Faster R-CNN / Cascade R-CNN)."""
    model = get_config("common/models/cascade_rcnn.py" if cascade else "common/models/mask_rcnn_fpn.py").model
    model.backbone.bottom_up = bottom_up
    if not mask:
        model.roi_heads.update(mask_in_features=None, mask_pooler=None, mask_head=None)
    return _rgb(model)


def retinanet_fpn(bottom_up):
    """Detectron2's RetinaNet (``common/models/retinanet.py``) on ``bottom_up`` (res3..res5;
    p6/p7 from res5, whose width is the RandWire's, as build_randwire_fpn_retinanet_backbone)."""
    model = get_config("common/models/retinanet.py").model
    bottom_up.out_features = ["res3", "res4", "res5"]
    model.backbone.bottom_up = bottom_up
    model.backbone.in_features = ["res3", "res4", "res5"]
    res5 = stage_layout(bottom_up.regime, bottom_up.channels)["res5"]
    model.backbone.top_block = L(LastLevelP6P7)(in_channels=res5, out_channels=256, in_feature="res5")
    return _rgb(model)


def coco_training(lr=0.02):
    """Detectron2's COCO data (RGB images), SGD, 1x schedule and train settings, for
    ``tools/lazyconfig_train_net.py``: ``(dataloader, optimizer, lr_multiplier, train)``."""
    dataloader = get_config("common/data/coco.py").dataloader
    dataloader.train.mapper.image_format = "RGB"
    optimizer = get_config("common/optim.py").SGD
    optimizer.lr = lr
    lr_multiplier = get_config("common/coco_schedule.py").lr_multiplier_1x
    train = get_config("common/train.py").train
    train.init_checkpoint = ""  # an rwdet pretraining checkpoint, when you have one
    return dataloader, optimizer, lr_multiplier, train
