# RetinaNet + RandWire-WS(4, 0.75) small C=78 FPN on COCO 2017, 1x schedule, as a LazyConfig (Detectron2's
# common model, data, optimizer and schedule; the RandWire bottom-up network swapped in). The
# YAML twin: configs/retinanet_randwire_ws_small.yaml (same parameters, same outputs for the same weights).
#   python tools/lazyconfig_train_net.py --config-file configs/COCO-Detection/retinanet_randwire_ws_small_fpn.py --num-gpus 8
from ..common.models.randwire import coco_training, rcnn_fpn, randwire_ws, retinanet_fpn  # noqa: F401

model = retinanet_fpn(randwire_ws(regime="small", channels=78, seeds=(1, 2, 3)))
dataloader, optimizer, lr_multiplier, train = coco_training(lr=0.01)
train.output_dir = "output/lazy/retinanet_randwire_ws_small_fpn"
