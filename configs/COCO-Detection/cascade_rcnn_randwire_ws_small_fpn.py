# Cascade R-CNN + RandWire-WS(4, 0.75) small C=78 FPN on COCO 2017, 1x schedule, as a LazyConfig (Detectron2's
# common model, data, optimizer and schedule; the RandWire bottom-up network swapped in). The
# YAML twin: configs/cascade_rcnn_randwire_ws_small.yaml (same parameters, same outputs for the same weights).
#   python tools/lazyconfig_train_net.py --config-file configs/COCO-Detection/cascade_rcnn_randwire_ws_small_fpn.py --num-gpus 8
from ..common.models.randwire import coco_training, rcnn_fpn, randwire_ws, retinanet_fpn  # noqa: F401

model = rcnn_fpn(randwire_ws(regime="small", channels=78, seeds=(1, 2, 3)), cascade=True)
dataloader, optimizer, lr_multiplier, train = coco_training(lr=0.02)
train.output_dir = "output/lazy/cascade_rcnn_randwire_ws_small_fpn"
