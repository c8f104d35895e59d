"""Registration of the datasets a config names, and the checks of a run's datasets before the
model is built: the DATASETS keys (:func:`add_dataset_config`), :func:`register_datasets_from_config`,
:func:`check_datasets_on_disk`, :func:`check_num_classes`, :func:`prepare_datasets` (whose checked
records replace each dataset's loader) and :func:`checked_coco_api`. Source: Detectron2's
``detectron2/data/datasets/builtin.py`` (registration of the datasets known by name; COCO 2017
itself stays Detectron2's ``coco_2017_*``) and its ``add_*_config`` functions.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, List, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog

from .catalog import _RWDET_REGISTERED
from .checks import BadAnnotationsError, validate_dataset_dicts
from .coco_json import register_coco_json
from .images import IMAGE_CHECKS
from .via import VIA_JSON, register_balloon
from .voc import register_bccd

__all__ = [
    "add_dataset_config",
    "register_datasets_from_config",
    "check_datasets_on_disk",
    "check_num_classes",
    "prepare_datasets",
    "checked_coco_api",
]

logger = logging.getLogger("rwdet.data")


def add_dataset_config(cfg):
    """Add rwdet's DATASETS keys to a Detectron2 config (in place) and return it, in the style of
    Detectron2's ``add_*_config``; each key is described on its line. They are read by
    :func:`register_datasets_from_config` and :func:`prepare_datasets`."""
    cfg.DATASETS.BCCD_ROOT = ""  # root of the BCCD dataset (PASCAL VOC layout): registers bccd_train/val/test; "" registers nothing
    cfg.DATASETS.BALLOON_ROOT = ""  # root of the balloon photos (train/, val/ with VIA via_region_data.json): registers balloon_train/val; "" registers nothing
    cfg.DATASETS.COCO_JSON = []  # [name, json_file, image_root] triples to register as COCO-format datasets
    cfg.DATASETS.SKIP_BAD_IMAGES = False  # True: leave unreadable/truncated/mis-sized images out, with a warning, instead of refusing (also mid-training)
    cfg.DATASETS.SKIP_BAD_ANNOTATIONS = False  # True: leave bad annotations (no/invalid/inverted bbox, unknown category_id, bad segmentation) out, with a warning, instead of refusing
    cfg.DATASETS.IMAGE_CHECK = "end_marker"  # before training: "end_marker" = header + JPEG FFD9 / PNG IEND near the file's end (one seek; finds truncated files), "decode" = also decode every image fully (slow)
    return cfg


def register_datasets_from_config(cfg) -> List[str]:
    """Register the datasets named in a Detectron2 config.

    Reads three optional keys (absent = empty):

    * ``cfg.DATASETS.BCCD_ROOT`` (str): BCCD root for :func:`register_bccd`;
      ``""`` skips BCCD.
    * ``cfg.DATASETS.BALLOON_ROOT`` (str): balloon root for :func:`register_balloon`;
      ``""`` skips it.
    * ``cfg.DATASETS.COCO_JSON``: list of ``[name, json_file, image_root]`` triples,
      each passed to :func:`register_coco_json`.

    COCO 2017 needs no entry: Detectron2's builtin registration provides
    ``coco_2017_*`` under ``$DETECTRON2_DATASETS``. Registering twice with the same
    settings is harmless, so this may be called more than once.

    Returns:
        The dataset names registered (or found already registered) by this call.

    Raises:
        ValueError: ``BCCD_ROOT`` or ``BALLOON_ROOT`` is not a string, ``COCO_JSON`` is not a list, or an
            entry of it is not a 3-item list/tuple of strings (the message shows it).
        FileNotFoundError: from :func:`register_bccd` / :func:`register_balloon` / :func:`register_coco_json`
            when a path does not exist.
    """
    datasets_cfg = cfg.DATASETS
    names: List[str] = []

    bccd_root = datasets_cfg.get("BCCD_ROOT", "")
    if not isinstance(bccd_root, str):
        raise ValueError(f"cfg.DATASETS.BCCD_ROOT must be a string, got {bccd_root!r}.")
    if bccd_root:
        names.extend(register_bccd(bccd_root))

    balloon_root = datasets_cfg.get("BALLOON_ROOT", "")
    if not isinstance(balloon_root, str):
        raise ValueError(f"cfg.DATASETS.BALLOON_ROOT must be a string, got {balloon_root!r}.")
    if balloon_root:
        names.extend(register_balloon(balloon_root))

    coco_json = datasets_cfg.get("COCO_JSON", [])
    if not isinstance(coco_json, (list, tuple)):
        raise ValueError(
            f"cfg.DATASETS.COCO_JSON must be a list of [name, json_file, image_root], "
            f"got {coco_json!r}."
        )
    for i, entry in enumerate(coco_json):
        if (
            not isinstance(entry, (list, tuple))
            or len(entry) != 3
            or not all(isinstance(x, str) and x for x in entry)
        ):
            raise ValueError(
                f"cfg.DATASETS.COCO_JSON[{i}] = {entry!r} is malformed: expected a 3-item list "
                "[name, json_file, image_root] of non-empty strings."
            )
    for name, json_file, image_root in coco_json:
        register_coco_json(name, json_file, image_root)
        names.append(name)
    _check_config_datasets_registered(cfg)
    return names


def _check_config_datasets_registered(cfg) -> None:
    """Raise ValueError naming any DATASETS.TRAIN/TEST entry that no one registered."""
    registered = set(DatasetCatalog.list())
    for key in ("TRAIN", "TEST"):
        for name in cfg.DATASETS.get(key, ()):
            if name in registered:
                continue
            if name.startswith("bccd_"):
                hint = (
                    "set DATASETS.BCCD_ROOT to the BCCD folder (the one holding Annotations/, "
                    "JPEGImages/ and ImageSets/; from the GitHub repository Shenggan/BCCD_Dataset)"
                )
            elif name.startswith("balloon_"):
                hint = (
                    "set DATASETS.BALLOON_ROOT to the balloon folder (the one holding train/ and "
                    f"val/ with {VIA_JSON}; from the GitHub repository matterport/Mask_RCNN, release v2.1)"
                )
            else:
                hint = "register it with DATASETS.COCO_JSON [[name, json_file, image_root]]"
            raise ValueError(f"DATASETS.{key} names {name!r}, which is not registered: {hint}")


# ---------------------------------------------------------------------------
# checks before training: on disk, boxes, classes
# ---------------------------------------------------------------------------

_COCO_LAYOUT = (
    "Expected layout (Detectron2's datasets/README.md): $DETECTRON2_DATASETS/coco/annotations/"
    "instances_{train,val}2017.json and $DETECTRON2_DATASETS/coco/{train,val}2017/*.jpg"
)
_OFFLINE_HINT = (
    "To run on offline data instead: python tools/train_net.py --config-file "
    "configs/bccd/faster_rcnn_randwire_ws_small_bccd.yaml DATASETS.BCCD_ROOT /path/to/BCCD "
    "(BCCD: GitHub repository Shenggan/BCCD_Dataset, its BCCD/ folder)"
)


class _ValidatedLoader:
    """A ``DatasetCatalog`` loader: the dataset's own loader, then :func:`validate_dataset_dicts`.

    The first call returns the records already checked by :func:`prepare_datasets` (and lets
    go of them, so that they are not held in memory for the whole run); later calls load and
    check again, from the header cache.
    """

    def __init__(self, name: str, load, options: Dict[str, Any], dicts):
        self.name, self.load, self.options, self._dicts = name, load, options, dicts

    def __call__(self):
        if self._dicts is not None:
            dicts, self._dicts = self._dicts, None
            return dicts
        return _load_and_validate(self.name, self.load, self.options)


def _load_dataset(name: str, load, skip_bad_annotations: bool = False):
    """``(records, lines of annotations left out)`` from ``load()``: a ValueError naming the
    json file if it is not valid JSON, or for a KeyError of Detectron2's ``load_coco_json``
    (an unknown category_id in a builtin dataset's json); a :class:`BadAnnotationsError` of the loader is raised,
    or with ``skip_bad_annotations`` its records without the bad annotations are used."""
    try:
        return load(), []
    except json.JSONDecodeError as e:
        json_file = MetadataCatalog.get(name).get("json_file", "its json file")
        raise ValueError(f"Dataset {name!r}: {json_file} is not valid JSON: {e}") from e
    except BadAnnotationsError as e:
        if not skip_bad_annotations or e.dicts is None:
            raise
        return e.dicts, e.problems
    except KeyError as e:  # Detectron2's load_coco_json on a json it did not check (builtin datasets)
        json_file = MetadataCatalog.get(name).get("json_file", None)
        if json_file is None:
            raise
        raise ValueError(f"Dataset {name!r}: {json_file}: {e.args[0] if e.args else e}") from e


def _dataset_options(cfg) -> Dict[str, Any]:
    """The DATASETS keys that :func:`validate_dataset_dicts` takes, checked.

    Raises:
        ValueError: DATASETS.IMAGE_CHECK not in :data:`IMAGE_CHECKS`.
    """
    check = cfg.DATASETS.get("IMAGE_CHECK", "end_marker")
    if check not in IMAGE_CHECKS:
        raise ValueError(f"DATASETS.IMAGE_CHECK={check!r}; allowed: {', '.join(map(repr, IMAGE_CHECKS))}")
    return {"skip_bad_images": bool(cfg.DATASETS.get("SKIP_BAD_IMAGES", False)),
            "skip_bad_annotations": bool(cfg.DATASETS.get("SKIP_BAD_ANNOTATIONS", False)),
            "image_check": check}


#: Datasets from which :func:`prepare_datasets` left images or annotations out (skipped as
#: bad, or boxes empty after clipping): name -> how many. Read by :func:`checked_coco_api`.
_LEFT_OUT: Dict[str, int] = {}


def _load_and_validate(name: str, load, options: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Load a dataset (:func:`_load_dataset`) and check it (:func:`validate_dataset_dicts`);
    records in :data:`_LEFT_OUT` how many images and annotations the checks left out."""
    dicts, skipped = _load_dataset(name, load, options["skip_bad_annotations"])
    images, annotations = len(dicts), sum(len(d.get("annotations", ())) for d in dicts)
    kept = validate_dataset_dicts(dicts, name, skipped_annotations=skipped, **options)
    left_out = len(skipped) + images - len(kept) + annotations - sum(len(d.get("annotations", ())) for d in kept)
    if left_out:
        _LEFT_OUT[name] = left_out
    else:
        _LEFT_OUT.pop(name, None)
    return kept


def checked_coco_api(name: str):
    """The ground truth a COCO evaluation of ``name`` should use, when it differs from the
    dataset's json file: for a dataset registered with a ``json_file`` from which
    :func:`prepare_datasets` left images or annotations out (DATASETS.SKIP_BAD_IMAGES /
    SKIP_BAD_ANNOTATIONS, boxes empty after clipping), a ``pycocotools.coco.COCO`` built in
    memory from the checked records (Detectron2's ``convert_to_coco_dict``, as its
    ``COCOEvaluator`` does for datasets without a json file); else None (the json file is the
    ground truth).
    """
    if not _LEFT_OUT.get(name) or not MetadataCatalog.get(name).get("json_file"):
        return None
    from detectron2.data.datasets.coco import convert_to_coco_dict
    from pycocotools.coco import COCO

    api = COCO()
    api.dataset = convert_to_coco_dict(name)
    api.createIndex()
    logger.info("Dataset %r: evaluated against its checked records, %d image(s) / annotation(s) fewer "
                "than %s", name, _LEFT_OUT[name], MetadataCatalog.get(name).json_file)
    return api


def _config_dataset_names(cfg, splits: Sequence[str] = ("TRAIN", "TEST")) -> List[str]:
    names: List[str] = []
    for key in splits:
        names += [n for n in cfg.DATASETS.get(key, ()) if n not in names]
    return names


def check_datasets_on_disk(cfg, splits: Sequence[str] = ("TRAIN", "TEST")) -> None:
    """Raise FileNotFoundError unless every DATASETS.TRAIN / DATASETS.TEST dataset is on disk.

    Looks at the dataset's metadata: ``json_file`` (a file) and ``image_root`` (a folder), as
    Detectron2's builtin COCO / LVIS / Cityscapes registrations and :func:`register_coco_json`
    set them, and ``dirname`` (a folder; VOC layout). For Detectron2's builtin datasets
    (``coco_*`` and the like) the message says where it looked (``$DETECTRON2_DATASETS``,
    default ``./datasets``), the layout it expects, and how to train on offline data (BCCD).

    Raises:
        FileNotFoundError: a path is missing (named, absolute, with the dataset's name).
    """
    for name in _config_dataset_names(cfg, splits):
        if name not in DatasetCatalog.list():
            continue  # register_datasets_from_config names it
        meta = MetadataCatalog.get(name)
        missing = []
        for key, isdir in (("json_file", False), ("image_root", True), ("dirname", True)):
            path = meta.get(key, None)
            if path and not (os.path.isdir(path) if isdir else os.path.isfile(path)):
                missing.append(f"{key} {os.path.abspath(path)}")
        if not missing:
            continue
        msg = f"Dataset {name!r} is not on disk: missing {' and '.join(missing)}."
        if name not in _RWDET_REGISTERED:  # Detectron2's builtin registration
            root = os.environ.get("DETECTRON2_DATASETS")
            where = f"$DETECTRON2_DATASETS={root}" if root else "$DETECTRON2_DATASETS is not set, so ./datasets"
            what = "COCO 2017" if name.startswith("coco_2017") else "This builtin Detectron2 dataset"
            msg += (
                f" {what} is missing: Detectron2 looked under {where} (absolute: "
                f"{os.path.abspath(root or 'datasets')}). Set DETECTRON2_DATASETS to the folder "
                f"that holds coco/. {_COCO_LAYOUT}. {_OFFLINE_HINT}."
            )
        raise FileNotFoundError(msg)


def check_num_classes(cfg, name: str) -> None:
    """Raise ValueError if the detector's class count differs from dataset ``name``'s.

    The count compared is MODEL.RETINANET.NUM_CLASSES for RetinaNet, else
    MODEL.ROI_HEADS.NUM_CLASSES; the dataset's is ``len(thing_classes)`` of its metadata
    (set by the loader for COCO json). Datasets without ``thing_classes`` are not checked.
    """
    classes = MetadataCatalog.get(name).get("thing_classes", None)
    if classes is None:
        return
    key = "RETINANET" if cfg.MODEL.META_ARCHITECTURE == "RetinaNet" else "ROI_HEADS"
    num = cfg.MODEL[key].NUM_CLASSES
    if num != len(classes):
        split = "DATASETS.TRAIN" if name in cfg.DATASETS.TRAIN else "DATASETS.TEST"
        shown = list(classes) if len(classes) <= 30 else list(classes[:30]) + ["..."]
        raise ValueError(
            f"MODEL.{key}.NUM_CLASSES={num}, but dataset {name!r} ({split}) has {len(classes)} "
            f"categories {shown}: set MODEL.{key}.NUM_CLASSES {len(classes)}, or use a dataset "
            f"with {num}."
        )


def is_prepared(name: str) -> bool:
    """True when dataset ``name`` was checked by :func:`prepare_datasets` in this process: its
    ``DatasetCatalog`` loader then gives checked records, and preparing it again would only load
    and check the same files a second time. False when it is not registered, or registered by
    its own loader only."""
    return name in DatasetCatalog and isinstance(DatasetCatalog[name], _ValidatedLoader)


def prepare_datasets(cfg, splits: Sequence[str] = ("TRAIN", "TEST")) -> Dict[str, int]:
    """Check every dataset of DATASETS.TRAIN and DATASETS.TEST (``splits``: the keys to check,
    e.g. ``("TEST",)`` for an evaluation) before the model is built.

    In order: the datasets are registered (:func:`register_datasets_from_config`) and on disk
    (:func:`check_datasets_on_disk`); then each is loaded (a json that is not JSON is named;
    every annotation checked: :class:`BadAnnotationsError`), its images and annotations are
    checked (:func:`validate_dataset_dicts`, with DATASETS.SKIP_BAD_IMAGES,
    DATASETS.SKIP_BAD_ANNOTATIONS and DATASETS.IMAGE_CHECK), and its classes are compared with the detector's
    (:func:`check_num_classes`). The checked records replace the dataset's loader in
    ``DatasetCatalog``, so training uses them without loading or checking again.

    Returns:
        ``{dataset name: number of images kept}``.

    Raises:
        ValueError, FileNotFoundError: as the functions named above; nothing is written.
    """
    import time

    options = _dataset_options(cfg)
    register_datasets_from_config(cfg)
    check_datasets_on_disk(cfg, splits)
    kept = {}
    for name in _config_dataset_names(cfg, splits):
        check_num_classes(cfg, name)  # metadata known before loading (BCCD, builtin COCO)
        load = DatasetCatalog[name]
        if isinstance(load, _ValidatedLoader):
            load = load.load
        start = time.perf_counter()
        dicts = _load_and_validate(name, load, options)
        logger.info("Dataset %r: %d images checked (headers, %s, sizes, annotations) in %.2f s",
                    name, len(dicts), "end markers" if options["image_check"] == "end_marker" else "full decode",
                    time.perf_counter() - start)
        check_num_classes(cfg, name)  # COCO json: thing_classes is set by the load
        DatasetCatalog.remove(name)
        DatasetCatalog.register(name, _ValidatedLoader(name, load, options, dicts))
        kept[name] = len(dicts)
    return kept
