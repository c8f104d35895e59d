"""VGG Image Annotator (VIA) 1.x polygon json datasets, in particular the balloon photos of
Detectron2's getting-started tutorial (``balloon_train`` / ``balloon_val``, with instance masks):
:func:`load_via_instances`, :func:`register_balloon`, and balloon's class names, splits and json
file name. Source: ``get_balloon_dicts`` and the registration of Detectron2's getting-started
tutorial (Colab notebook, "Train on a custom dataset").
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, List

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from .catalog import _RWDET_REGISTERED, _check_root, _claim_name
from .images import _image_size

__all__ = ["BALLOON_CLASSES", "BALLOON_SPLITS", "VIA_JSON", "load_via_instances", "register_balloon"]

logger = logging.getLogger("rwdet.data")


#: Class names of the balloon data set (``category_id`` 0).
BALLOON_CLASSES = ("balloon",)

#: Splits of the balloon data set: sub-folders of its root, each with ``via_region_data.json``.
BALLOON_SPLITS = ("train", "val")

#: File name of the VIA annotations in each balloon split folder.
VIA_JSON = "via_region_data.json"

_BALLOON_SOURCE_HINT = (
    "The balloon data set (Detectron2's getting-started tutorial) is the balloon_dataset.zip of "
    "the GitHub repository matterport/Mask_RCNN (release v2.1): its root holds train/ and val/, "
    f"each with the JPEG photos and {VIA_JSON} (VGG Image Annotator 1.x polygons)."
)


def load_via_instances(json_file: str, image_dir: str, class_name: str = "balloon") -> List[Dict[str, Any]]:
    """Load a VGG Image Annotator (VIA) 1.x polygon json as Detectron2 dataset dicts, one class.

    Follows ``get_balloon_dicts`` of Detectron2's getting-started tutorial (Colab notebook,
    "Train on a custom dataset"): each polygon region becomes an instance with
    ``segmentation`` ``[polygon]`` and the polygon's bounding box. VIA points are pixel
    indices; as in the tutorial they are moved to pixel centres (+0.5) in Detectron2's
    continuous coordinates and clipped to ``[0, width] x [0, height]`` (VIA lets a point sit
    on the border, index = width), and the box is the min/max of those points (``XYXY_ABS``),
    so every box lies inside its image.

    Args:
        json_file: the VIA json (a dict of entries with ``filename`` and ``regions``, a dict
            or a list of ``{"shape_attributes": {"name": "polygon", "all_points_x": [...],
            "all_points_y": [...]}}``); a VIA 2.x project file's ``_via_img_metadata`` is
            read the same way.
        image_dir: folder of the images named by ``filename``.
        class_name: for messages only; every instance gets ``category_id`` 0.

    Returns:
        One dict per json entry, in file order: ``file_name`` (``image_dir/filename``),
        ``image_id`` (the file name), ``height`` and ``width`` (from the image header, EXIF
        orientation applied as Detectron2's ``read_image``) and ``annotations``: dicts with
        ``bbox`` ``[x1, y1, x2, y2]`` (pixels), ``bbox_mode`` ``BoxMode.XYXY_ABS``,
        ``segmentation`` ``[[x0, y0, x1, y1, ...]]`` and ``category_id`` 0.

    Raises:
        FileNotFoundError: ``json_file`` or an image it names is missing (named).
        ValueError: the json is not valid JSON or not VIA 1.x; a region that is not a polygon,
            or a polygon with fewer than 3 points or unequal x/y lists; an image that cannot
            be read (each message names the file and the entry).
    """
    import json

    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"VIA annotation file {json_file!r} not found. {_BALLOON_SOURCE_HINT}")
    try:
        with open(json_file, encoding="utf-8") as f:
            entries = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{json_file} is not valid JSON: {e}") from e
    if isinstance(entries, dict) and "_via_img_metadata" in entries:  # a VIA 2.x project file
        entries = entries["_via_img_metadata"]
    if not isinstance(entries, dict):
        raise ValueError(f"{json_file} is not a VIA 1.x json (a dict of image entries), got a {type(entries).__name__}")
    dicts = []
    for key, entry in entries.items():
        if not isinstance(entry, dict) or "filename" not in entry:
            raise ValueError(f"{json_file}: entry {key!r} has no 'filename'; not a VIA 1.x json")
        file_name = os.path.join(image_dir, entry["filename"])
        size = _image_size(file_name)
        if isinstance(size, str):
            if not os.path.exists(file_name):
                raise FileNotFoundError(f"Image {file_name!r} (entry {key!r} of {json_file}) not found.")
            raise ValueError(f"Image {file_name!r} (entry {key!r} of {json_file}) {size}")
        width, height = size
        regions = entry.get("regions") or {}
        regions = list(regions.values()) if isinstance(regions, dict) else list(regions)
        annotations = []
        for i, region in enumerate(regions):
            shape = region.get("shape_attributes", {}) if isinstance(region, dict) else {}
            where = f"{json_file}: region {i} of {entry['filename']!r}"
            if shape.get("name") != "polygon":
                raise ValueError(f"{where} is a {shape.get('name')!r}; only 'polygon' regions are read")
            px, py = shape.get("all_points_x", []), shape.get("all_points_y", [])
            if len(px) != len(py) or len(px) < 3:
                raise ValueError(
                    f"{where} has {len(px)} x and {len(py)} y coordinates; a polygon needs the same "
                    "number of each, at least 3"
                )
            # pixel centres, clipped to the image: annotators put border points at x = width
            # (13 polygons of balloon_train), whose centre would lie outside
            xs = [min(max(float(x) + 0.5, 0.0), float(width)) for x in px]
            ys = [min(max(float(y) + 0.5, 0.0), float(height)) for y in py]
            annotations.append({
                "bbox": [min(xs), min(ys), max(xs), max(ys)],
                "bbox_mode": BoxMode.XYXY_ABS,
                "segmentation": [[c for xy in zip(xs, ys) for c in xy]],
                "category_id": 0,
            })
        dicts.append({"file_name": file_name, "image_id": entry["filename"], "height": height,
                      "width": width, "annotations": annotations})
    logger.info("Loaded %d images, %d %s polygons from %s", len(dicts),
                sum(len(d["annotations"]) for d in dicts), class_name, json_file)
    return dicts


def register_balloon(root: str) -> List[str]:
    """Register ``balloon_train`` and ``balloon_val`` from the balloon data set at ``root``.

    As ``register_balloon`` in Detectron2's getting-started tutorial: each split folder
    ``root/<split>`` holds the photos and ``via_region_data.json``, loaded lazily by
    :func:`load_via_instances`. ``MetadataCatalog`` gets ``thing_classes`` ``["balloon"]``,
    ``evaluator_type`` "coco" (box and mask AP through COCOEvaluator, which converts the
    polygons to COCO json), ``dirname`` (the split folder) and ``split``. Registering again
    with the same root does nothing.

    Returns:
        ``["balloon_train", "balloon_val"]`` (61 and 13 photos, 255 and 50 polygons in the
        matterport release).

    Raises:
        FileNotFoundError: ``root`` or a split's ``via_region_data.json`` is missing; the
            message says where it looked and where the data comes from.
        ValueError: a name is already registered with another root.
    """
    root = os.path.abspath(root)
    # <split>/via_region_data.json for each of BALLOON_SPLITS; the message says where it looked and
    # where the data comes from
    _check_root(root, [os.path.join(split, VIA_JSON) for split in BALLOON_SPLITS], _BALLOON_SOURCE_HINT,
                what="DATASETS.BALLOON_ROOT", holder="Balloon root", is_present=os.path.isfile)
    names = []
    for split in BALLOON_SPLITS:
        name, dirname = f"balloon_{split}", os.path.join(root, split)
        expected = {"dirname": dirname, "split": split, "thing_classes": list(BALLOON_CLASSES)}
        if _claim_name(name, expected, "balloon (VIA) dataset"):
            json_file = os.path.join(dirname, VIA_JSON)
            DatasetCatalog.register(name, lambda j=json_file, d=dirname: load_via_instances(j, d))
            _RWDET_REGISTERED.add(name)
            MetadataCatalog.get(name).set(thing_classes=list(BALLOON_CLASSES), evaluator_type="coco",
                                          dirname=dirname, split=split)
        names.append(name)
    return names
