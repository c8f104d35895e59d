"""Dataset loading and registration (BCCD / PASCAL VOC layout, balloon / VIA polygons, COCO json), and the DATASETS
config keys that name them (:func:`add_dataset_config`).

Three kinds of data are supported, all registered into Detectron2's global
``DatasetCatalog`` / ``MetadataCatalog`` so that configs can refer to them by
name (``cfg.DATASETS.TRAIN = ("bccd_train",)``):

* PASCAL VOC layout datasets (``Annotations/``, ``JPEGImages/``,
  ``ImageSets/Main/<split>.txt``), in particular BCCD (blood cell detection,
  from the public GitHub repository Shenggan/BCCD_Dataset).
* COCO-format json files (a thin wrapper around Detectron2's
  ``register_coco_instances``).
* VGG Image Annotator (VIA) 1.x polygon json, in particular the balloon photos of Detectron2's
  getting-started tutorial (``balloon_train`` / ``balloon_val``, with instance masks).

COCO 2017 itself needs nothing from this package: Detectron2's builtin
registration (``detectron2.data.datasets.builtin``) already registers
``coco_2017_train`` / ``coco_2017_val`` under ``$DETECTRON2_DATASETS``.

No dataset location is hard-coded: the caller passes the root directory.

One module per job, as Detectron2's ``detectron2/data/datasets/``: ``voc`` (VOC layout, BCCD),
``via`` (VIA json, balloon), ``coco_json`` (COCO json), ``images`` (image-file checks,
:class:`NamingMapper`), ``checks`` (annotation checks, :func:`validate_dataset_dicts`), ``catalog``
(shared registration helpers) and ``builtin`` (registration from the config, :func:`prepare_datasets`).
"""

from .builtin import (
    add_dataset_config,
    check_datasets_on_disk,
    check_num_classes,
    checked_coco_api,
    is_prepared,
    prepare_datasets,
    register_datasets_from_config,
)
from .checks import BadAnnotationsError, validate_dataset_dicts
from .coco_json import load_coco_json_checked, register_coco_json
from .images import BadImageError, NamingMapper, image_problem
from .via import BALLOON_CLASSES, BALLOON_SPLITS, load_via_instances, register_balloon
from .voc import BCCD_CLASSES, BCCD_SPLITS, load_voc_instances, register_bccd, register_voc_dataset

__all__ = [
    "add_dataset_config",
    "BadAnnotationsError",
    "BadImageError",
    "NamingMapper",
    "load_coco_json_checked",
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
    "checked_coco_api",
    "image_problem",
    "check_num_classes",
    "is_prepared",
    "prepare_datasets",
]
