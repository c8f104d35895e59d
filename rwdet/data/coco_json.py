"""COCO-format instances json datasets: :func:`register_coco_json` (as Detectron2's
``register_coco_instances``) and :func:`load_coco_json_checked` (Detectron2's ``load_coco_json``
after every annotation of the json has been checked). Source: Detectron2's
``detectron2/data/datasets/coco.py``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from typing import Any, Dict, List

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from detectron2.structures import BoxMode

from .catalog import _RWDET_REGISTERED, _claim_name
from .checks import BadAnnotationsError, box_problem, segmentation_problem

__all__ = ["load_coco_json_checked", "register_coco_json"]

logger = logging.getLogger("rwdet.data")


def register_coco_json(name: str, json_file: str, image_root: str) -> None:
    """Register a COCO-format instances json file under ``name``.

    As ``detectron2.data.datasets.register_coco_instances`` (loading is lazy, via
    :func:`load_coco_json_checked`: Detectron2's ``load_coco_json`` after every annotation is
    checked; metadata gets ``json_file``, ``image_root`` and ``evaluator_type="coco"``, and
    ``thing_classes`` once the json has been loaded).
    Paths are made absolute. Registering the same ``name`` again with the same
    json_file and image_root does nothing.

    Returns:
        None.

    Raises:
        FileNotFoundError: ``json_file`` or ``image_root`` does not exist (checked up
            front; the message names the path).
        ValueError: ``name`` is already registered with a different json_file or
            image_root (or by something other than this function).
    """
    json_file = os.path.abspath(json_file)
    image_root = os.path.abspath(image_root)
    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"COCO json file {json_file!r} for dataset {name!r} not found.")
    if not os.path.isdir(image_root):
        raise FileNotFoundError(
            f"Image root {image_root!r} for COCO dataset {name!r} not found or not a directory."
        )
    expected = {"json_file": json_file, "image_root": image_root}
    if not _claim_name(name, expected, "COCO json dataset"):
        return
    # Detectron2's register_coco_instances, with the annotations checked before load_coco_json.
    DatasetCatalog.register(name, lambda: load_coco_json_checked(json_file, image_root, name))
    MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root, evaluator_type="coco")
    _RWDET_REGISTERED.add(name)


def _coco_json_problems(data: Any, json_file: str) -> tuple:
    """The bad annotations of a parsed COCO json: ``(problems, indices)``, one line and the
    index in ``data["annotations"]`` per bad annotation (see :func:`load_coco_json_checked`).

    Raises:
        ValueError: ``data`` is not a dict with lists ``images``, ``annotations`` and ``categories``.
    """
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations")) \
            or not isinstance(data.get("categories", []), list):
        raise ValueError(f"{json_file} is not a COCO instances json: expected a dict with lists 'images', "
                         "'annotations' and 'categories'")
    categories = {c.get("id") for c in data.get("categories", []) if isinstance(c, dict)}
    shown = sorted(c for c in categories if isinstance(c, int))[:20]
    images = {im.get("id"): im.get("file_name") for im in data["images"] if isinstance(im, dict)}
    problems, indices = [], []
    for i, anno in enumerate(data["annotations"]):
        if not isinstance(anno, dict):
            problems.append(f"{json_file}: annotation #{i} is a {type(anno).__name__}, not a dict")
            indices.append(i)
            continue
        if "bbox" not in anno:
            problem = "has no bbox"
        else:
            problem = box_problem(anno["bbox"], BoxMode.XYWH_ABS)
        if problem is None and categories and anno.get("category_id") not in categories:
            problem = (f"category_id {anno.get('category_id')!r} is not among the json's categories "
                       f"(ids {shown}{' ...' if len(categories) > 20 else ''})")
        if problem is None:
            problem = segmentation_problem(anno.get("segmentation"))
        if problem is not None:
            image = anno.get("image_id")
            name = images.get(image)
            problems.append(f"{json_file}: image {image!r}{f' ({name})' if name else ''}, annotation "
                            f"{anno.get('id', f'#{i}')!r}: {problem}")
            indices.append(i)
    return problems, indices


def load_coco_json_checked(json_file: str, image_root: str, name: str) -> List[Dict[str, Any]]:
    """Detectron2's ``load_coco_json(json_file, image_root, name)``, after every annotation of
    the json has been checked (Detectron2 itself either raises a bare ``KeyError`` mid-load or
    lets the mapper fail at iteration 0):

    * ``bbox`` present and 4 finite numbers (XYWH_ABS), not inverted (negative width/height);
    * ``category_id`` among the json's ``categories``;
    * ``segmentation`` absent, a list of polygons, or an RLE.

    Returns:
        The dataset dicts, as ``load_coco_json`` returns them (metadata set likewise).

    Raises:
        ValueError: ``json_file`` is not valid JSON or not a COCO instances json (names it).
        BadAnnotationsError: one line per bad annotation (json file, image id and file name,
            annotation id, what is wrong); its ``dicts`` are loaded without them (through a
            filtered copy of the json in the system's temporary folder, removed at once), for
            DATASETS.SKIP_BAD_ANNOTATIONS.
    """
    try:
        with open(json_file, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"Dataset {name!r}: {json_file} is not valid JSON: {e}") from e
    problems, indices = _coco_json_problems(data, json_file)
    if not problems:
        return load_coco_json(json_file, image_root, name)
    drop = set(indices)
    data["annotations"] = [a for i, a in enumerate(data["annotations"]) if i not in drop]
    fd, filtered = tempfile.mkstemp(suffix=".json", prefix="rwdet_checked_")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
        logger.info("Dataset %r: loading %s without its %d bad annotations (from a filtered copy)",
                    name, json_file, len(problems))
        dicts = load_coco_json(filtered, image_root, name)
    finally:
        os.remove(filtered)
    raise BadAnnotationsError(json_file, problems, dicts)
