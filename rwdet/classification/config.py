"""Config of the classification (ImageNet pretraining) trainer, in the style of pycls."""

from __future__ import annotations

from typing import Sequence

from detectron2.config import CfgNode as CN

from ..config import add_randwire_model_config, default_device, freeze_graph_specs, is_randwire, merge_config

__all__ = ["get_cls_cfg", "load_cls_config"]


def get_cls_cfg() -> CN:
    """Default classification config: the keys the classifier and its trainer read, each
    described on its line (the paper's recipe where it has one, Xie et al., ICCV 2019, sec. 4;
    Detectron2's name and meaning where Detectron2 has the key)."""
    _C = CN()
    _C.MODEL = CN()
    _C.MODEL.ARCH = "randwire"  # a name in CLASSIFIER_REGISTRY: "randwire", "resnet18" (Detectron2's ResNet, loads into R18-FPN) or "resnet50" (torchvision's)
    _C.MODEL.NUM_CLASSES = 1000  # K, the classifier's outputs
    _C.MODEL.HEAD_CHANNELS = 1280  # RandWire head: 1x1 conv to this width before pooling (paper table 1)
    _C.MODEL.DROPOUT = 0.0  # RandWire head: dropout before the final fc
    _C.MODEL.WEIGHTS = ""  # checkpoint to start from; "" = random init
    _C.MODEL.DEVICE = default_device()  # "cuda" where available, else "cpu"; "cuda" without CUDA is an error (merge_config)
    _C.MODEL.CHANNELS_LAST = False  # weights and images in torch.channels_last (NHWC): same model, another speed
    _C.MODEL.BACKBONE = CN()
    _C.MODEL.BACKBONE.FREEZE_AT = 0  # Detectron2's key: 0 trains all, 1 freezes the stem, k >= 2 also res2..res<k>; 0 = from scratch
    add_randwire_model_config(_C)  # MODEL.RANDWIRE: the body's keys, as for detection

    _C.DATA = CN()
    _C.DATA.NAME = "imagenet"  # "imagenet" (ROOT/<split>/<wnid>/*.JPEG), "tiny_imagenet" (the official tiny-imagenet-200 layout) or "fashion_mnist" (Debian's IDX files)
    _C.DATA.ROOT = ""  # dataset root; "" = the dataset's default location
    _C.DATA.TRAIN_SPLIT = "train"  # split trained on
    _C.DATA.TEST_SPLIT = "val"  # split evaluated on
    _C.DATA.IMAGE_SIZE = 224  # training crop side (pixels)
    _C.DATA.TEST_RESIZE = 0  # (tiny_)imagenet evaluation: shorter side before the centre crop; 0 = IMAGE_SIZE * 256/224
    _C.DATA.TRAIN_CROP_SCALE = (0.08, 1.0)  # (tiny_)imagenet training: RandomResizedCrop's area range, a fraction of the photo (timm's --scale)
    _C.DATA.IMAGE_CHECK = "end_marker"  # tiny_imagenet: how every photo is checked before training, as DATASETS.IMAGE_CHECK ("end_marker" or "decode")
    _C.DATA.NUM_WORKERS = 4  # data loader worker processes per training process

    _C.SOLVER = CN()
    _C.SOLVER.IMS_PER_BATCH = 256  # total batch over all processes
    _C.SOLVER.BASE_LR = 0.1  # learning rate for REFERENCE_BATCH images, scaled linearly with IMS_PER_BATCH
    _C.SOLVER.REFERENCE_BATCH = 256  # batch that BASE_LR is given for
    _C.SOLVER.REFERENCE_WORLD_SIZE = 0  # Detectron2's auto_scale_workers; 0 = off (REFERENCE_BATCH scales the lr)
    _C.SOLVER.MOMENTUM = 0.9  # SGD momentum
    _C.SOLVER.NESTEROV = False  # SGD with Nesterov momentum
    _C.SOLVER.WEIGHT_DECAY = 5e-5  # L2 weight decay (paper: 5e-5)
    _C.SOLVER.LABEL_SMOOTHING = 0.1  # cross-entropy label smoothing (paper: 0.1)
    _C.SOLVER.EPOCHS = 100  # length of training in epochs (paper: 100 regular, 250 small); used when MAX_ITER is 0
    _C.SOLVER.MAX_ITER = 0  # length of training in iterations; 0 = EPOCHS * iterations per epoch
    _C.SOLVER.WARMUP_ITERS = 0  # linear warm-up iterations before the half-period cosine decay
    _C.SOLVER.WARMUP_FACTOR = 0.1  # learning-rate factor at the start of the warm-up
    _C.SOLVER.AMP = CN()
    _C.SOLVER.AMP.ENABLED = True  # Detectron2's key: mixed precision; on CUDA AMPTrainer, on the CPU only with DTYPE bfloat16
    _C.SOLVER.AMP.DTYPE = "float16"  # autocast dtype: "float16" (CUDA) or "bfloat16" (CUDA, or the CPU: rwdet.engine.autocast)
    _C.SOLVER.CHECKPOINT_PERIOD = 5000  # iterations between checkpoints
    _C.SOLVER.CHECKPOINT_ON_SIGNALS = ("SIGTERM",)  # signals that save a checkpoint at the current iteration and stop the run (a scheduler's preemption; add "SIGUSR1" for SLURM's --signal); () = off

    _C.TEST = CN()
    _C.TEST.EVAL_PERIOD = 0  # iterations between evaluations; 0 = at the end only
    _C.TEST.IMS_PER_BATCH = 256  # evaluation batch over all processes

    _C.OUTPUT_DIR = "output/pretrain"  # the run's folder: checkpoints, log.txt, metrics.json, eval_results.json
    _C.SEED = 0  # seeds the initial weights, the data order and each sample's augmentation (>= 0)
    _C.CUDNN_BENCHMARK = False  # torch.backends.cudnn.benchmark for the run
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
    if is_randwire(cfg):
        freeze_graph_specs(cfg)
    cfg.freeze()
    return cfg
