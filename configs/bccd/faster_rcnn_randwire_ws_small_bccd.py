# The BCCD quick-start detector as a LazyConfig: Faster R-CNN + RandWire-WS(4, 0.75) small C=78
# FPN from scratch, the settings of its YAML twin faster_rcnn_randwire_ws_small_bccd.yaml (and
# Base-RCNN-FPN-BCCD.yaml): 320 px, batch 2, lr 0.01 with 50 warm-up iterations, 150 iterations,
# lr x 0.1 at 120, SEED 1. Give the dataset root:
#   python tools/lazyconfig_train_net.py --config-file configs/bccd/faster_rcnn_randwire_ws_small_bccd.py \
#       datasets.bccd_root=/path/to/BCCD
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import DatasetMapper, build_detection_test_loader, build_detection_train_loader
from detectron2.evaluation import COCOEvaluator
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler
from omegaconf import OmegaConf

from rwdet.engine.lazy import bccd_dataset

from ..common.models.randwire import coco_training, randwire_ws, rcnn_fpn

datasets = dict(bccd_root="datasets/BCCD")  # the BCCD folder in VOC layout (Annotations/, JPEGImages/, ImageSets/)

model = rcnn_fpn(randwire_ws(regime="small", channels=78, seeds=(1, 2, 3), norm="BN"))
model.roi_heads.num_classes = 3  # RBC, WBC, Platelets
model.roi_heads.batch_size_per_image = 256
model.proposal_generator.pre_nms_topk = (1000, 1000)  # per level, (train, test): BCCD images are small
model.proposal_generator.post_nms_topk = (500, 500)

dataloader = OmegaConf.create()
dataloader.train = L(build_detection_train_loader)(
    dataset=L(bccd_dataset)(root="${datasets.bccd_root}", split="train"),
    mapper=L(DatasetMapper)(
        is_train=True,
        augmentations=[L(T.ResizeShortestEdge)(short_edge_length=(320,), max_size=427, sample_style="choice"),
                       L(T.RandomFlip)(horizontal=True)],
        image_format="RGB",
    ),
    total_batch_size=2,
    num_workers=0,  # in the training process: repeatable bit for bit on the CPU
)
dataloader.test = L(build_detection_test_loader)(
    dataset=L(bccd_dataset)(root="${datasets.bccd_root}", split="test"),
    mapper=L(DatasetMapper)(is_train=False, augmentations=[L(T.ResizeShortestEdge)(short_edge_length=320, max_size=427)],
                            image_format="RGB"),
    num_workers=0,
)
dataloader.evaluator = L(COCOEvaluator)(dataset_name="bccd_test", use_fast_impl=False,
                                      output_dir="${train.output_dir}/inference/bccd_test")

_, optimizer, _, train = coco_training(lr=0.01)
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(values=[1.0, 0.1], milestones=[120, 150]),
    warmup_length=50 / 150,
    warmup_factor=0.001,
)
train.max_iter = 150
train.checkpointer = dict(period=50, max_to_keep=100)
train.eval_period = 0  # evaluate at the end only
train.device = "cpu"
train.seed = 1
train.output_dir = "output/lazy/faster_rcnn_randwire_ws_small_bccd"
