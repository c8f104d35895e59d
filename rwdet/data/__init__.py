"""Dataset loading and registration (BCCD / PASCAL VOC layout, COCO json)."""

from .datasets import (
    BCCD_CLASSES,
    BCCD_SPLITS,
    load_voc_instances,
    register_bccd,
    register_coco_json,
    register_datasets_from_config,
    register_voc_dataset,
)

__all__ = [
    "BCCD_CLASSES",
    "BCCD_SPLITS",
    "load_voc_instances",
    "register_voc_dataset",
    "register_bccd",
    "register_coco_json",
    "register_datasets_from_config",
]
