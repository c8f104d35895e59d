"""ImageNet-style classification: data, model wrapper and trainer."""

from .config import get_cls_cfg, load_cls_config  # noqa: F401
from .data import (  # noqa: F401
    FashionMNIST,
    ResumableTrainingSampler,
    SeededSamples,
    build_classification_dataset,
    build_transform,
)
from .model import CLASSIFIER_REGISTRY, ClassificationModel, build_classifier  # noqa: F401
from .trainer import ClassificationTrainer, evaluate_classifier  # noqa: F401
