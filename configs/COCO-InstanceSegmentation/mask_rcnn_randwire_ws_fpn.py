# Mask R-CNN + RandWire-WS(4, 0.75) regular C=109 FPN on COCO 2017, 1x schedule, as a LazyConfig (Detectron2's common
# model, data, optimizer and schedule; the RandWire bottom-up network swapped in). The YAML twin:
# configs/mask_rcnn_randwire_ws.yaml (same parameters, same outputs for the same weights).
#   python tools/lazyconfig_train_net.py --config-file configs/COCO-InstanceSegmentation/mask_rcnn_randwire_ws_fpn.py --num-gpus 8
from ..common.models.randwire import coco_training, rcnn_fpn, randwire_ws

model = rcnn_fpn(randwire_ws(regime="regular", channels=109, seeds=(1, 2, 3, 4)), mask=True)
dataloader, optimizer, lr_multiplier, train = coco_training(lr=0.02)
train.output_dir = "output/lazy/mask_rcnn_randwire_ws_fpn"
