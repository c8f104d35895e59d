"""Config of the classification (ImageNet pretraining) trainer, in the style of pycls."""

from __future__ import annotations

from typing import Sequence

from detectron2.config import CfgNode as CN

from ..config import add_randwire_model_config, freeze_graph_specs
from ..engine.defaults import default_device, merge_config

__all__ = ["get_cls_cfg", "load_cls_config"]


def get_cls_cfg() -> CN:
    """Default classification config. Keys (the paper's recipe where it has one, sec. 4):

    MODEL.ARCH: a name in ``CLASSIFIER_REGISTRY`` ("randwire", "resnet50").
    MODEL.NUM_CLASSES, MODEL.HEAD_CHANNELS (1280), MODEL.DROPOUT: the classifier head.
    MODEL.RANDWIRE: as for detection (``add_randwire_config``); OUT_FEATURES is res5 here.
    MODEL.BACKBONE.FREEZE_AT: Detectron2's key with Detectron2's meaning (0 trains all, 1
        freezes the stem, k >= 2 also res2..res<k>), default 0 here: pretraining starts from
        scratch (Detectron2's default 2 is for fine-tuning ImageNet weights).
    MODEL.WEIGHTS: checkpoint to start from ("" = random init). MODEL.DEVICE: "cuda" or "cpu" (default:
        "cuda" where available, else "cpu"; "cuda" without CUDA is an error, see ``merge_config``).
    MODEL.CHANNELS_LAST: keep weights and images in ``torch.channels_last`` (NHWC) memory
        format, as timm's ``--channels-last``; same model, same checkpoints, a different speed
        (faster on CPUs whose oneDNN kernels prefer NHWC).
    DATA.NAME: "imagenet" (folders ``ROOT/train/<wnid>/*.JPEG``, ``ROOT/val/<wnid>/*.JPEG``)
        or "fashion_mnist" (Debian's IDX files). DATA.ROOT: "" = the dataset's default.
    DATA.IMAGE_SIZE: training crop (224); DATA.TEST_RESIZE: val resize (0 = size * 256/224).
    SOLVER.IMS_PER_BATCH: total batch over all processes. SOLVER.BASE_LR: learning rate for
        SOLVER.REFERENCE_BATCH images (0.1 for 256), scaled linearly with the batch.
    SOLVER.EPOCHS (100 regular, 250 small), or SOLVER.MAX_ITER > 0 to fix the iterations.
    SOLVER.MOMENTUM 0.9, WEIGHT_DECAY 5e-5, LABEL_SMOOTHING 0.1, half-period cosine decay with
        optional linear warm-up (WARMUP_ITERS, WARMUP_FACTOR).
    SOLVER.AMP: mixed precision (on CUDA only). SOLVER.CHECKPOINT_PERIOD: iterations.
    TEST.EVAL_PERIOD: iterations between evaluations (0 = at the end only).
    """
    _C = CN()
    _C.MODEL = CN()
    _C.MODEL.ARCH = "randwire"
    _C.MODEL.NUM_CLASSES = 1000
    _C.MODEL.HEAD_CHANNELS = 1280
    _C.MODEL.DROPOUT = 0.0
    _C.MODEL.WEIGHTS = ""
    _C.MODEL.DEVICE = default_device()  # "cuda" where available, else "cpu"
    _C.MODEL.CHANNELS_LAST = False
    _C.MODEL.BACKBONE = CN()
    _C.MODEL.BACKBONE.FREEZE_AT = 0  # 0 trains every layer (from scratch); as Detectron2's key
    add_randwire_model_config(_C)
    _C.MODEL.RANDWIRE.OUT_FEATURES = ["res5"]

    _C.DATA = CN()
    _C.DATA.NAME = "imagenet"
    _C.DATA.ROOT = ""
    _C.DATA.TRAIN_SPLIT = "train"
    _C.DATA.TEST_SPLIT = "val"
    _C.DATA.IMAGE_SIZE = 224
    _C.DATA.TEST_RESIZE = 0
    _C.DATA.NUM_WORKERS = 4

    _C.SOLVER = CN()
    _C.SOLVER.IMS_PER_BATCH = 256
    _C.SOLVER.BASE_LR = 0.1
    _C.SOLVER.REFERENCE_BATCH = 256
    _C.SOLVER.MOMENTUM = 0.9
    _C.SOLVER.NESTEROV = False
    _C.SOLVER.WEIGHT_DECAY = 5e-5
    _C.SOLVER.LABEL_SMOOTHING = 0.1
    _C.SOLVER.EPOCHS = 100
    _C.SOLVER.MAX_ITER = 0
    _C.SOLVER.WARMUP_ITERS = 0
    _C.SOLVER.WARMUP_FACTOR = 0.1
    _C.SOLVER.AMP = True
    _C.SOLVER.CHECKPOINT_PERIOD = 5000

    _C.TEST = CN()
    _C.TEST.EVAL_PERIOD = 0
    _C.TEST.IMS_PER_BATCH = 256

    _C.OUTPUT_DIR = "output/pretrain"
    _C.SEED = 0
    _C.CUDNN_BENCHMARK = False
    _C.VERSION = 2  # Detectron2 CfgNode versioning (its latest)
    return _C


def load_cls_config(config_file: str, opts: Sequence[str] = ()) -> CN:
    """Defaults, then ``config_file``, then ``KEY VALUE`` overrides; graphs resolved; frozen.

    Raises:
        FileNotFoundError: ``config_file`` does not exist.
        ValueError: odd overrides, a negative SEED (exact resumption needs a fixed seed), a
            non-positive batch or learning rate, or invalid RandWire keys.
    """
    cfg = merge_config(get_cls_cfg(), config_file, opts)
    if cfg.SEED < 0:
        raise ValueError(f"SEED={cfg.SEED} must be >= 0 (the data order and augmentation derive from it)")
    if cfg.SOLVER.IMS_PER_BATCH < 1 or cfg.SOLVER.BASE_LR <= 0:
        raise ValueError(
            f"SOLVER.IMS_PER_BATCH={cfg.SOLVER.IMS_PER_BATCH} and SOLVER.BASE_LR={cfg.SOLVER.BASE_LR} must be positive"
        )
    if cfg.MODEL.ARCH == "randwire":
        freeze_graph_specs(cfg)
    cfg.freeze()
    return cfg
