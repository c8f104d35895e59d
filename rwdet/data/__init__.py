"""Dataset loading and registration (BCCD / PASCAL VOC layout, balloon / VIA polygons, COCO json), and the DATASETS
config keys that name them (:func:`add_dataset_config`)."""

from .datasets import (
    BALLOON_CLASSES,
    BALLOON_SPLITS,
    BCCD_CLASSES,
    add_dataset_config,
    BCCD_SPLITS,
    check_datasets_on_disk,
    check_num_classes,
    load_via_instances,
    load_voc_instances,
    prepare_datasets,
    register_balloon,
    register_bccd,
    register_coco_json,
    register_datasets_from_config,
    register_voc_dataset,
    validate_dataset_dicts,
)

__all__ = [
    "add_dataset_config",
    "BCCD_CLASSES",
    "BCCD_SPLITS",
    "BALLOON_CLASSES",
    "BALLOON_SPLITS",
    "load_via_instances",
    "register_balloon",
    "load_voc_instances",
    "register_voc_dataset",
    "register_bccd",
    "register_coco_json",
    "register_datasets_from_config",
    "validate_dataset_dicts",
    "check_datasets_on_disk",
    "check_num_classes",
    "prepare_datasets",
]
