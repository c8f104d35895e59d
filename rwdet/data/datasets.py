"""Dataset loading and registration for rwdet.

Two kinds of data are supported, both registered into Detectron2's global
``DatasetCatalog`` / ``MetadataCatalog`` so that configs can refer to them by
name (``cfg.DATASETS.TRAIN = ("bccd_train",)``):

* PASCAL VOC layout datasets (``Annotations/``, ``JPEGImages/``,
  ``ImageSets/Main/<split>.txt``), in particular BCCD (blood cell detection,
  from the public GitHub repository Shenggan/BCCD_Dataset).
* COCO-format json files (a thin wrapper around Detectron2's
  ``register_coco_instances``).
* VGG Image Annotator (VIA) 1.x polygon json, in particular the balloon photos of Detectron2's
  getting-started tutorial (``balloon_train`` / ``balloon_val``, with instance masks).

COCO 2017 itself needs nothing from this module: Detectron2's builtin
registration (``detectron2.data.datasets.builtin``) already registers
``coco_2017_train`` / ``coco_2017_val`` under ``$DETECTRON2_DATASETS``.

No dataset location is hard-coded: the caller passes the root directory.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
import tempfile
import xml.etree.ElementTree as ET
from typing import Any, Dict, List, Optional, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from detectron2.structures import BoxMode

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
    "load_coco_json_checked",
    "BadAnnotationsError",
    "BadImageError",
    "NamingMapper",
    "register_datasets_from_config",
    "validate_dataset_dicts",
    "check_datasets_on_disk",
    "check_num_classes",
    "prepare_datasets",
    "checked_coco_api",
]

logger = logging.getLogger("rwdet.data")

#: Class names of BCCD, in the order used for ``category_id`` (0, 1, 2).
BCCD_CLASSES = ("RBC", "WBC", "Platelets")

#: Official BCCD splits (files under ``ImageSets/Main/``).
BCCD_SPLITS = ("train", "val", "test", "trainval")

_BCCD_SOURCE_HINT = (
    "BCCD (Blood Cell Count and Detection) is available from the public GitHub "
    "repository Shenggan/BCCD_Dataset (use its BCCD/ folder, which has the PASCAL VOC "
    "layout Annotations/, JPEGImages/, ImageSets/Main/)."
)

_VOC_SUBDIRS = ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main"))

#: How many bad annotations an error message lists one by one (the rest are counted).
_MAX_LISTED = 20


class BadAnnotationsError(ValueError):
    """Annotations that cannot be trained on: a missing ``bbox``, a box that is not 4 finite
    numbers, an inverted box, an unknown ``category_id``, a segmentation that is neither
    polygons nor an RLE. The message has one line per annotation (file, image, annotation id,
    what is wrong; the first 20, then a count) and names DATASETS.SKIP_BAD_ANNOTATIONS.

    Attributes:
        problems: one line per bad annotation.
        dicts: the dataset's records without the bad annotations (what
            DATASETS.SKIP_BAD_ANNOTATIONS trains on), or None.
    """

    def __init__(self, source: str, problems: List[str], dicts: Optional[List[Dict[str, Any]]] = None):
        self.problems, self.dicts = list(problems), dicts
        fix = ("Fix {}, or set DATASETS.SKIP_BAD_ANNOTATIONS True to leave {} out with a warning."
               .format(*(("it", "it") if len(problems) == 1 else ("them", "them"))))
        if len(problems) == 1:
            msg = f"Bad annotation in {problems[0]}. {fix}"
        else:
            listed = "\n  ".join(problems[:_MAX_LISTED])
            more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
            msg = f"{len(problems)} bad annotations in {source}:\n  {listed}{more}\n{fix}"
        super().__init__(msg)


def _is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def box_problem(bbox, mode=BoxMode.XYWH_ABS) -> Optional[str]:
    """What is wrong with a box, or None: not 4 finite numbers, or inverted (negative width or
    height in XYWH_ABS; x2 < x1 or y2 < y1 in XYXY_ABS). Zero-size boxes are not refused here
    (they are dropped later with a warning)."""
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
        return f"bbox {bbox!r} is not 4 finite numbers"
    x, y, a, b = (float(v) for v in bbox)
    if mode == BoxMode.XYWH_ABS and (a < 0 or b < 0):
        side = "width" if a < 0 else "height"
        return f"bbox {list(bbox)} (x, y, width, height) is inverted: negative {side}"
    if mode == BoxMode.XYXY_ABS and (a < x or b < y):
        return f"bbox {list(bbox)} (x1, y1, x2, y2) is inverted: {'x2 < x1' if a < x else 'y2 < y1'}"
    return None


def segmentation_problem(segm) -> Optional[str]:
    """What is wrong with a segmentation, or None: it must be absent, a list of polygons (each a
    list of finite x, y numbers), or an RLE (a dict with ``counts``, a str or list, and
    ``size`` [height, width]), as Detectron2's ``load_coco_json`` and mapper read it."""
    if segm is None:
        return None
    if isinstance(segm, dict):
        size = segm.get("size")
        if (isinstance(segm.get("counts"), (str, bytes, list)) and isinstance(size, (list, tuple))
                and len(size) == 2 and all(isinstance(v, int) and v >= 0 for v in size)):
            return None
    elif isinstance(segm, list) and all(isinstance(p, list) and all(_is_number(v) for v in p) for p in segm):
        return None
    shown = repr(segm)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return f"segmentation {shown} is neither a list of polygons nor an RLE (a dict with 'counts' and 'size')"


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def _check_voc_root(root: str, hint: str) -> None:
    """Raise FileNotFoundError unless ``root`` is a directory with the VOC layout."""
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"VOC dataset root {root!r} (absolute: {os.path.abspath(root)!r}) does not exist "
            f"or is not a directory. {hint}"
        )
    missing = [d for d in _VOC_SUBDIRS if not os.path.isdir(os.path.join(root, d))]
    if missing:
        raise FileNotFoundError(
            f"VOC dataset root {os.path.abspath(root)!r} lacks the sub-directories "
            f"{missing} (expected {list(_VOC_SUBDIRS)}). {hint}"
        )


def _read_split_file(root: str, split: str) -> List[str]:
    split_file = os.path.join(root, "ImageSets", "Main", split + ".txt")
    if not os.path.isfile(split_file):
        raise FileNotFoundError(
            f"Split file {split_file!r} not found (split {split!r} of VOC dataset at {root!r})."
        )
    with open(split_file, encoding="utf-8") as f:
        # One id per line; like numpy.loadtxt in detectron2's loader, take the first
        # whitespace-separated token and ignore blank lines.
        return [line.split()[0] for line in f if line.strip()]


def _xml_text(node: ET.Element, path: str, anno_file: str) -> str:
    found = node.find(path)
    if found is None or found.text is None or not found.text.strip():
        raise ValueError(f"Annotation file {anno_file!r} lacks the <{path}> field.")
    return found.text.strip()


def _xml_number(node: ET.Element, path: str, anno_file: str, cast=float):
    text = _xml_text(node, path, anno_file)
    try:
        return cast(float(text)) if cast is int else cast(text)
    except ValueError:
        raise ValueError(
            f"Annotation file {anno_file!r}: <{path}> is {text!r}, not a number."
        ) from None


def _claim_name(name: str, expected: Dict[str, Any], kind: str) -> bool:
    """Decide whether ``name`` still needs registering.

    Returns False if ``name`` is already registered with the same ``expected``
    metadata (nothing to do), True if it is free. Raises ValueError if it is
    registered with different metadata (another root/split/json, or by someone else).
    Metadata left over from a dataset removed from DatasetCatalog is discarded.
    """
    if name in DatasetCatalog.list():
        meta = MetadataCatalog.get(name)
        actual = {k: meta.get(k) for k in expected}
        if actual == expected:
            return False
        raise ValueError(
            f"Dataset {name!r} is already registered with different settings: "
            f"registered {actual}, requested {expected} ({kind}). Use another name, or "
            f"DatasetCatalog.remove({name!r}) and MetadataCatalog.remove({name!r}) first."
        )
    if name in MetadataCatalog.list():
        # Stale metadata (e.g. after DatasetCatalog.remove): Metadata refuses to change
        # an attribute's value, so drop it before registering afresh.
        MetadataCatalog.remove(name)
    return True


# ---------------------------------------------------------------------------
# VOC / BCCD
# ---------------------------------------------------------------------------


def load_voc_instances(root: str, split: str, class_names: Sequence[str]) -> List[Dict[str, Any]]:
    """Load a PASCAL VOC layout dataset split as Detectron2 dataset dicts.

    Follows ``detectron2.data.datasets.pascal_voc.load_voc_instances`` (same fields,
    same coordinate convention), with validation added.

    Args:
        root: dataset directory containing ``Annotations/``, ``JPEGImages/`` and
            ``ImageSets/Main/<split>.txt``.
        split: split name, e.g. ``"train"``, ``"val"``, ``"test"``, ``"trainval"``.
        class_names: class names; a class's index in this sequence is its ``category_id``.

    Returns:
        One dict per image id listed in the split file, in file order, with fields
        ``file_name`` (``<root>/JPEGImages/<id>.jpg``), ``image_id`` (the id string),
        ``height`` and ``width`` (from the XML ``<size>``), and ``annotations``: a list
        of dicts with ``bbox`` ``[x1, y1, x2, y2]`` (floats, absolute pixels),
        ``bbox_mode`` = ``BoxMode.XYXY_ABS`` and ``category_id`` (int).

        As in Detectron2, VOC coordinates are read as 1-based inclusive pixel indices,
        so ``x1 = xmin - 1``, ``y1 = ymin - 1``, ``x2 = xmax``, ``y2 = ymax`` (a box
        ``xmin=1, xmax=W`` covers the whole width ``[0, W]``). The XML ``<path>`` and
        ``<filename>`` elements are ignored.

        Dropped, each with a warning on the ``rwdet.data`` logger naming the XML file
        and the box: degenerate boxes (``xmax == xmin`` or ``ymax == ymin`` in the XML,
        i.e. a point or line rather than a box; BCCD has two) and objects whose class
        name is not in ``class_names``. Images left with no annotations are kept.

    Raises:
        FileNotFoundError: ``root`` does not exist or lacks the VOC sub-directories
            (the message says where it looked, and where BCCD can be obtained); the
            split file, an annotation XML, or an image file is missing (the message
            names the path).
        ValueError: an XML file cannot be parsed, or lacks ``<size>`` width/height
            (or they are not positive numbers), or an object lacks ``<name>`` (the message
            names the file).
        BadAnnotationsError: objects without a ``<bndbox>`` of 4 finite numbers, or with an
            inverted box (``xmax < xmin`` or ``ymax < ymin``): one line each naming the XML
            file, the image id and the object's index (1-based) and class. Its ``dicts`` are
            the records without them (DATASETS.SKIP_BAD_ANNOTATIONS).
    """
    class_names = list(class_names)
    _check_voc_root(root, "If this is meant to be BCCD: " + _BCCD_SOURCE_HINT)
    fileids = _read_split_file(root, split)

    dicts = []
    n_dropped = 0
    bad: List[str] = []
    for fileid in fileids:
        anno_file = os.path.join(root, "Annotations", fileid + ".xml")
        jpeg_file = os.path.join(root, "JPEGImages", fileid + ".jpg")
        if not os.path.isfile(anno_file):
            raise FileNotFoundError(
                f"Annotation file {anno_file!r} not found (listed in split {split!r})."
            )
        if not os.path.isfile(jpeg_file):
            raise FileNotFoundError(f"Image file {jpeg_file!r} not found (listed in split {split!r}).")
        try:
            tree = ET.parse(anno_file)
        except ET.ParseError as e:
            raise ValueError(f"Cannot parse annotation file {anno_file!r}: {e}") from e

        height = _xml_number(tree, "size/height", anno_file, int)
        width = _xml_number(tree, "size/width", anno_file, int)
        if height <= 0 or width <= 0:
            raise ValueError(
                f"Annotation file {anno_file!r} has a non-positive image size "
                f"width={width}, height={height}."
            )

        instances = []
        for index, obj in enumerate(tree.findall("object"), 1):
            cls = _xml_text(obj, "name", anno_file)
            where = f"{anno_file}: image {fileid}, object {index} ({cls})"
            coords, problem = [], None
            if obj.find("bndbox") is None:
                problem = "has no <bndbox>"
            for k in ("xmin", "ymin", "xmax", "ymax") if problem is None else ():
                found = obj.find("bndbox/" + k)
                text = found.text.strip() if found is not None and found.text else ""
                try:
                    value = float(text)
                except ValueError:
                    value = float("nan")
                if not math.isfinite(value):
                    problem = f"<bndbox><{k}> is {text!r}, not a finite number" if text else f"lacks <bndbox><{k}>"
                    break
                coords.append(value)
            if problem is not None:
                bad.append(f"{where}: {problem}")
                continue
            xmin, ymin, xmax, ymax = coords
            if cls not in class_names:
                logger.warning(
                    "Dropping box of unknown class %r in %s: (xmin=%g, ymin=%g, xmax=%g, ymax=%g); "
                    "known classes: %s",
                    cls, anno_file, xmin, ymin, xmax, ymax, class_names,
                )
                n_dropped += 1
                continue
            if xmax < xmin or ymax < ymin:
                bad.append(f"{where}: box (xmin={xmin:g}, ymin={ymin:g}, xmax={xmax:g}, ymax={ymax:g}) is "
                           f"inverted: {'xmax < xmin' if xmax < xmin else 'ymax < ymin'}")
                continue
            if xmax == xmin or ymax == ymin:
                logger.warning(
                    "Dropping degenerate %s box in %s: (xmin=%g, ymin=%g, xmax=%g, ymax=%g) "
                    "has xmax <= xmin or ymax <= ymin",
                    cls, anno_file, xmin, ymin, xmax, ymax,
                )
                n_dropped += 1
                continue
            # VOC: 1-based inclusive pixel indices -> continuous coordinates (Detectron2).
            bbox = [xmin - 1.0, ymin - 1.0, xmax, ymax]
            instances.append(
                {
                    "category_id": class_names.index(cls),
                    "bbox": bbox,
                    "bbox_mode": BoxMode.XYXY_ABS,
                }
            )
        dicts.append(
            {
                "file_name": jpeg_file,
                "image_id": fileid,
                "height": height,
                "width": width,
                "annotations": instances,
            }
        )
    logger.info(
        "Loaded %d images from split %r of %s (%d boxes dropped).", len(dicts), split, root, n_dropped
    )
    if bad:
        raise BadAnnotationsError(f"split {split!r} of {root}", bad, dicts)
    return dicts


def register_voc_dataset(name: str, root: str, split: str, class_names: Sequence[str]) -> None:
    """Register one split of a PASCAL VOC layout dataset in Detectron2's catalogs.

    Follows ``detectron2.data.datasets.pascal_voc.register_pascal_voc``. Loading is
    lazy: ``DatasetCatalog.get(name)`` calls :func:`load_voc_instances` (so errors in
    individual files surface then). ``MetadataCatalog.get(name)`` gets
    ``thing_classes`` (list of ``class_names``), ``evaluator_type="coco"``,
    ``dirname`` (absolute ``root``) and ``split``.

    Registering the same ``name`` again with the same root, split and classes does
    nothing (returns None silently).

    Returns:
        None.

    Raises:
        FileNotFoundError: ``root`` does not exist or lacks the VOC sub-directories,
            or the split file is missing (checked up front).
        ValueError: ``name`` is already registered with a different root, split or
            class names (or by something other than this function).
    """
    dirname = os.path.abspath(root)
    _check_voc_root(dirname, "If this is meant to be BCCD: " + _BCCD_SOURCE_HINT)
    split_file = os.path.join(dirname, "ImageSets", "Main", split + ".txt")
    if not os.path.isfile(split_file):
        raise FileNotFoundError(f"Split file {split_file!r} not found (split {split!r}).")
    class_names = list(class_names)
    expected = {"dirname": dirname, "split": split, "thing_classes": class_names}
    if not _claim_name(name, expected, "VOC dataset"):
        return
    DatasetCatalog.register(name, lambda: load_voc_instances(dirname, split, class_names))
    _RWDET_REGISTERED.add(name)
    MetadataCatalog.get(name).set(
        thing_classes=class_names, evaluator_type="coco", dirname=dirname, split=split
    )


def register_bccd(root: str) -> List[str]:
    """Register the four official BCCD splits found under ``root``.

    ``root`` is the BCCD directory in PASCAL VOC layout (the ``BCCD/`` folder of the
    public GitHub repository Shenggan/BCCD_Dataset). Registration follows
    :func:`register_voc_dataset` with class names :data:`BCCD_CLASSES`; loading is lazy.

    Returns:
        The registered names, ``["bccd_train", "bccd_val", "bccd_test", "bccd_trainval"]``
        (train 205, val 87, test 72, trainval 292 images in the official release).

    Raises:
        FileNotFoundError: ``root`` does not exist, lacks ``Annotations/``,
            ``JPEGImages/`` or ``ImageSets/Main/``, or a split file is missing; the
            message says where it looked and where BCCD comes from.
        ValueError: one of the names is already registered with a different root.
    """
    root = os.path.abspath(root)
    _check_voc_root(root, _BCCD_SOURCE_HINT)
    for split in BCCD_SPLITS:
        split_file = os.path.join(root, "ImageSets", "Main", split + ".txt")
        if not os.path.isfile(split_file):
            raise FileNotFoundError(
                f"BCCD split file {split_file!r} not found. {_BCCD_SOURCE_HINT}"
            )
    names = []
    for split in BCCD_SPLITS:
        name = f"bccd_{split}"
        register_voc_dataset(name, root, split, BCCD_CLASSES)
        names.append(name)
    return names


# ---------------------------------------------------------------------------
# VIA polygons / balloon
# ---------------------------------------------------------------------------

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


def _check_balloon_root(root: str) -> None:
    """Raise FileNotFoundError unless ``root`` has ``<split>/via_region_data.json`` for each
    of :data:`BALLOON_SPLITS`; the message says where it looked and where the data comes from."""
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"DATASETS.BALLOON_ROOT {root!r} (absolute: {os.path.abspath(root)!r}) does not exist or "
            f"is not a directory. {_BALLOON_SOURCE_HINT}"
        )
    missing = [os.path.join(split, VIA_JSON) for split in BALLOON_SPLITS
               if not os.path.isfile(os.path.join(root, split, VIA_JSON))]
    if missing:
        raise FileNotFoundError(
            f"Balloon root {os.path.abspath(root)!r} lacks {missing}. {_BALLOON_SOURCE_HINT}"
        )


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
    _check_balloon_root(root)
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


# ---------------------------------------------------------------------------
# COCO json
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------


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
# checks before training: on disk, image headers, boxes, classes
# ---------------------------------------------------------------------------

#: How many warnings of one kind (clipped box, dropped box, skipped image) a dataset logs
#: one by one; the rest are counted in a summary line.
MAX_WARNINGS_PER_KIND = 20

#: EXIF orientations that swap width and height (Detectron2's ``read_image`` applies them).
_EXIF_TRANSPOSED = (5, 6, 7, 8)

# (path, size in bytes, mtime in ns) -> (width, height) or an error message; see _image_size.
_HEADER_CACHE: Dict[tuple, Any] = {}

# Names registered by this module (the others in DatasetCatalog are Detectron2's builtins).
_RWDET_REGISTERED: set = set()

# Datasets whose warnings were already logged in this process (later loads log at DEBUG).
_WARNED: set = set()

_COCO_LAYOUT = (
    "Expected layout (Detectron2's datasets/README.md): $DETECTRON2_DATASETS/coco/annotations/"
    "instances_{train,val}2017.json and $DETECTRON2_DATASETS/coco/{train,val}2017/*.jpg"
)
_OFFLINE_HINT = (
    "To run on offline data instead: python tools/train_net.py --config-file "
    "configs/bccd/faster_rcnn_randwire_ws_small_bccd.yaml DATASETS.BCCD_ROOT /path/to/BCCD "
    "(BCCD: GitHub repository Shenggan/BCCD_Dataset, its BCCD/ folder)"
)


#: Bytes at the end of a file searched for the JPEG end-of-image marker: valid files may carry
#: padding after it (zero bytes, seen up to 1,188 bytes in a public set).
END_MARKER_WINDOW = 4096

#: What may follow a JPEG's FFD9 marker in a file that decodes fully: zero bytes and whitespace.
_JPEG_PADDING = b"\x00 \t\r\n"

#: The last 12 bytes of every complete PNG: the IEND chunk (length 0, type, CRC).
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"

#: Allowed values of DATASETS.IMAGE_CHECK.
IMAGE_CHECKS = ("end_marker", "decode")


def _end_marker_problem(path: str, fmt: Optional[str], size: int) -> Optional[str]:
    """Why the file at ``path`` looks truncated, or None: a JPEG must hold the end-of-image
    marker FFD9 followed only by padding (:data:`_JPEG_PADDING`) within its last
    :data:`END_MARKER_WINDOW` bytes; a PNG must end with its IEND chunk (trailing padding
    allowed likewise). Other formats are not checked. One seek and one read of at most
    :data:`END_MARKER_WINDOW` bytes. Source: JPEG (ITU T.81, B.1.1.3: EOI = FFD9) and PNG (RFC
    2083, 11.2.5: IEND) file structure."""
    if fmt not in ("JPEG", "MPO", "PNG"):
        return None
    with open(path, "rb") as f:
        f.seek(max(0, size - END_MARKER_WINDOW))
        tail = f.read()
    body = tail.rstrip(_JPEG_PADDING)
    if fmt == "PNG":
        return None if body.endswith(_PNG_IEND) or tail.endswith(_PNG_IEND) else \
            "is truncated: no PNG IEND chunk at its end"
    return None if body.endswith(b"\xff\xd9") else \
        f"is truncated: no JPEG end-of-image marker (FFD9) in its last {min(size, END_MARKER_WINDOW)} bytes"


def _image_size(path: str, check: str = "end_marker"):
    """``(width, height)`` of the image at ``path`` as Detectron2's ``read_image`` returns it
    (EXIF orientation applied), from its header only; or a str saying why it cannot be read.

    ``PIL.Image.open`` reads the header, not the pixels; then ``check`` (DATASETS.IMAGE_CHECK):
    ``"end_marker"`` looks for the end marker (:func:`_end_marker_problem`, finds truncated
    JPEG/PNG files), ``"decode"`` also decodes the whole image (``Image.load``). Results are
    cached per process by (path, size, mtime, check), so a dataset listed twice (train and
    trainval) is read once.
    """
    try:
        st = os.stat(path)
    except OSError as e:
        return f"cannot be read: {e.strerror or e}"
    key = (path, st.st_size, st.st_mtime_ns, check)
    if key in _HEADER_CACHE:
        return _HEADER_CACHE[key]
    if st.st_size == 0:
        result: Any = "is an empty (zero-byte) file"
    else:
        try:
            from PIL import Image  # Detectron2's read_image uses PIL too

            with Image.open(path) as im:
                width, height = im.size
                fmt = im.format
                if check == "decode":
                    im.load()  # raises OSError ("image file is truncated ...") on a broken file
                try:
                    orientation = im.getexif().get(0x0112)
                except Exception as e:  # a broken EXIF block: read_image ignores it as well
                    if fmt == "PNG" and isinstance(e, OSError):
                        raise  # PIL decodes a PNG to find its EXIF: this is a decode error
                    orientation = None
            if orientation in _EXIF_TRANSPOSED:
                width, height = height, width
            truncated = _end_marker_problem(path, fmt, st.st_size)
            result = truncated if truncated else (int(width), int(height))
        except Exception as e:  # UnidentifiedImageError, OSError, SyntaxError from plugins
            result = f"is not a readable image ({type(e).__name__}: {e})"
            if check == "decode" and isinstance(e, OSError):
                result = f"cannot be decoded ({type(e).__name__}: {e})"
    _HEADER_CACHE[key] = result
    return result


class _Warnings:
    """Per-kind warning log with a cap (see :data:`MAX_WARNINGS_PER_KIND`)."""

    def __init__(self, name: str):
        self.name = name
        self.level = logging.DEBUG if name in _WARNED else logging.WARNING
        self.counts: Dict[str, int] = {}

    def __call__(self, kind: str, msg: str, *args) -> None:
        n = self.counts[kind] = self.counts.get(kind, 0) + 1
        if n <= MAX_WARNINGS_PER_KIND:
            logger.log(self.level, "Dataset %r: " + msg, self.name, *args)

    def summary(self) -> None:
        """Log the counts beyond the cap; later loads of this dataset log at DEBUG."""
        for kind, n in self.counts.items():
            if n > MAX_WARNINGS_PER_KIND:
                logger.log(self.level, "Dataset %r: %d %s in all (the first %d are listed above)",
                           self.name, n, kind, MAX_WARNINGS_PER_KIND)
        _WARNED.add(self.name)


def _clip_annotations(record: Dict[str, Any], width: int, height: int, warn: _Warnings,
                      num_classes: Optional[int] = None) -> List[str]:
    """Clip ``record``'s boxes to ``[0, width] x [0, height]`` in place; drop empty ones. Bad
    annotations (:func:`box_problem`, :func:`segmentation_problem`, a ``category_id`` outside
    ``[0, num_classes)``) are removed too; returns one line for each."""
    kept, bad = [], []
    for index, anno in enumerate(record.get("annotations", [])):
        mode = anno.get("bbox_mode", BoxMode.XYXY_ABS) if isinstance(anno, dict) else None
        if not isinstance(anno, dict):
            problem = f"is a {type(anno).__name__}, not a dict"
        elif "bbox" not in anno:
            problem = "has no bbox"
        elif mode in (BoxMode.XYXY_ABS, BoxMode.XYWH_ABS):
            problem = box_problem(anno["bbox"], mode)
        else:
            problem = None  # other modes: converted below as before
        if problem is None and num_classes is not None and not (
                isinstance(anno.get("category_id"), int) and 0 <= anno["category_id"] < num_classes):
            problem = f"category_id {anno.get('category_id')!r} is not one of the {num_classes} classes"
        if problem is None:
            problem = segmentation_problem(anno.get("segmentation"))
        if problem is not None:
            ident = anno.get("id", f"#{index}") if isinstance(anno, dict) else f"#{index}"
            bad.append(f"{record['file_name']}: image {record.get('image_id')!r}, annotation {ident!r}: {problem}")
            continue
        x1, y1, x2, y2 = (float(v) for v in BoxMode.convert(list(anno["bbox"]), mode, BoxMode.XYXY_ABS))
        w, h = float(width), float(height)
        cx1, cy1, cx2, cy2 = min(max(x1, 0.0), w), min(max(y1, 0.0), h), min(max(x2, 0.0), w), min(max(y2, 0.0), h)
        if x2 <= x1 or y2 <= y1:
            warn("dropped boxes", "dropping box %s (XYXY_ABS) in %s: zero width or height",
                 [x1, y1, x2, y2], record["file_name"])
            continue
        if cx2 <= cx1 or cy2 <= cy1:
            warn("dropped boxes", "dropping box %s (XYXY_ABS) in %s: nothing of it lies inside the "
                 "%dx%d image", [x1, y1, x2, y2], record["file_name"], width, height)
            continue
        if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
            warn("clipped boxes", "clipping box %s (XYXY_ABS) in %s to the %dx%d image: %s",
                 [x1, y1, x2, y2], record["file_name"], width, height, [cx1, cy1, cx2, cy2])
            anno = dict(anno, bbox=[cx1, cy1, cx2, cy2], bbox_mode=BoxMode.XYXY_ABS)
        kept.append(anno)
    record["annotations"] = kept
    return bad


def validate_dataset_dicts(
    dicts: List[Dict[str, Any]], name: str, skip_bad_images: bool = False, num_threads: int = 16,
    skip_bad_annotations: bool = False, image_check: str = "end_marker", skipped_annotations: Sequence[str] = (),
) -> List[Dict[str, Any]]:
    """Check every image of a dataset against its annotations, before training.

    For each record (Detectron2 dataset dict with ``file_name`` and optionally ``width``,
    ``height``, ``annotations``) the image's header is read (``PIL.Image.open``: format and
    size, no decode; EXIF orientation applied as Detectron2's ``read_image`` does) in a pool of
    ``num_threads`` threads, with a per-process cache. Then:

    * an image that is missing, empty, not readable by PIL, truncated (no JPEG end-of-image
      marker / PNG IEND chunk at its end; with ``image_check="decode"``, any image that does
      not decode fully), or whose size differs from the record's ``width`` x ``height`` (the
      case that raises Detectron2's ``SizeMismatchError`` mid-training), is a bad image:
      refused, or with ``skip_bad_images`` left out with a warning naming the file;
    * an annotation without a ``bbox``, whose box is not 4 finite numbers or is inverted, whose
      ``category_id`` is not in ``[0, len(thing_classes))`` (when the metadata has them) or whose
      segmentation is neither polygons nor an RLE is a bad annotation: refused
      (:class:`BadAnnotationsError`, file, image id and annotation id), or with
      ``skip_bad_annotations`` left out with a warning (``skipped_annotations``: lines for
      annotations the loader already left out, warned about here likewise);
    * a record without ``width``/``height`` gets them from the header;
    * each box (any ``bbox_mode`` of absolute coordinates) is clipped to ``[0, W] x [0, H]``
      with a warning naming the image and the box, or dropped with a warning when it has zero
      width or height or nothing of it is inside. Warnings are listed one by one up to :data:`MAX_WARNINGS_PER_KIND` per
      kind, then counted; a dataset loaded again in the same process logs them at DEBUG.

    Speed: BCCD (364 images) takes well under a second on a 2-core CPU (docs/DATA.md, "What is
    checked"); the cost is one header read and one read of the file's last 4 KiB per image
    (``"decode"``: a full decode per image).

    Args:
        dicts: the dataset's records (modified in place: boxes, width, height).
        name: the dataset's name, for messages.
        skip_bad_images: leave bad images out (with a warning) instead of refusing.
        num_threads: threads reading headers.
        skip_bad_annotations: leave bad annotations out (with a warning) instead of refusing.
        image_check: ``"end_marker"`` or ``"decode"`` (DATASETS.IMAGE_CHECK, :data:`IMAGE_CHECKS`).
        skipped_annotations: lines of annotations the loader left out, to warn about.

    Returns:
        The records to train on (``dicts`` without the skipped images).

    Raises:
        ValueError: bad images and not ``skip_bad_images``; the message names every bad file
            (the first 20, then a count) and says how to skip them (DATASETS.SKIP_BAD_IMAGES);
            an ``image_check`` not in :data:`IMAGE_CHECKS`.
        BadAnnotationsError: bad annotations and not ``skip_bad_annotations``.
    """
    from concurrent.futures import ThreadPoolExecutor
    from functools import partial

    if image_check not in IMAGE_CHECKS:
        raise ValueError(f"DATASETS.IMAGE_CHECK={image_check!r}; allowed: {', '.join(map(repr, IMAGE_CHECKS))}")
    paths = [d["file_name"] for d in dicts]
    with ThreadPoolExecutor(max_workers=max(1, min(num_threads, len(paths)))) as pool:
        sizes = list(pool.map(partial(_image_size, check=image_check), paths))
    warn = _Warnings(name)
    classes = MetadataCatalog.get(name).get("thing_classes", None) if name in MetadataCatalog.list() else None
    kept, bad, bad_annotations = [], [], []
    for record, size in zip(dicts, sizes):
        if isinstance(size, str):
            bad.append(f"{record['file_name']} {size}")
            continue
        width, height = size
        expected = (record.get("width", width), record.get("height", height))
        if expected != (width, height):
            bad.append(
                f"{record['file_name']} is {width}x{height} but its annotation says "
                f"{expected[0]}x{expected[1]} (width x height)"
            )
            continue
        record["width"], record["height"] = width, height
        bad_annotations += _clip_annotations(record, width, height, warn, None if classes is None else len(classes))
        kept.append(record)
    if bad_annotations and not skip_bad_annotations:
        raise BadAnnotationsError(f"dataset {name!r}", bad_annotations)
    if bad and not skip_bad_images:
        listed = "\n  ".join(bad[:20]) + (f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else "")
        raise ValueError(
            f"Dataset {name!r}: {len(bad)} of {len(dicts)} images cannot be used for training:\n  "
            f"{listed}\nFix or remove them, or set DATASETS.SKIP_BAD_IMAGES True to leave them out "
            "with a warning."
        )
    for msg in bad:
        warn("skipped images", "skipping image %s (DATASETS.SKIP_BAD_IMAGES)", msg)
    for msg in list(skipped_annotations) + bad_annotations:
        warn("skipped annotations", "skipping annotation %s (DATASETS.SKIP_BAD_ANNOTATIONS)", msg)
    warn.summary()
    return kept


class BadImageError(OSError):
    """An image that passed the checks before training cannot be read when the data loader
    maps it; the message names the file and what to set (DATASETS.IMAGE_CHECK decode,
    DATASETS.SKIP_BAD_IMAGES)."""


class NamingMapper:
    """A Detectron2 dataset mapper (e.g. ``DatasetMapper``) whose errors name the image.

    An ``OSError`` (PIL's "image file is truncated", unreadable files) or Detectron2's
    ``SizeMismatchError`` while mapping a record becomes :class:`BadImageError` naming the
    record's ``file_name``; with ``skip_bad_images`` (training, DATASETS.SKIP_BAD_IMAGES) the
    record is left out instead, with a warning (at most :data:`MAX_WARNINGS_PER_KIND`, then at
    DEBUG): the mapper returns None, and Detectron2's ``MapDataset`` maps another record in its
    place (``MapDataset``'s documented way to skip data). Any other exception gets a note
    naming the file and is raised as it is.

    Args:
        mapper: callable, a dataset dict -> the model's input dict.
        skip_bad_images: leave unreadable images out instead of raising (never for evaluation,
            where ``MapDataset`` would evaluate another image in its place).
    """

    def __init__(self, mapper, skip_bad_images: bool = False):
        self.mapper, self.skip_bad_images, self.skipped = mapper, bool(skip_bad_images), 0

    def __call__(self, record: Dict[str, Any]):
        from detectron2.data.detection_utils import SizeMismatchError

        name = record.get("file_name", "(a record without file_name)")
        try:
            return self.mapper(record)
        except (OSError, SizeMismatchError) as e:
            if self.skip_bad_images:
                self.skipped += 1
                level = logging.WARNING if self.skipped <= MAX_WARNINGS_PER_KIND else logging.DEBUG
                logger.log(level, "Skipping image %s (DATASETS.SKIP_BAD_IMAGES): it cannot be read (%s: %s)",
                           name, type(e).__name__, e)
                return None
            raise BadImageError(
                f"{name} cannot be read while training or evaluating ({type(e).__name__}: {e}), although it "
                "passed the checks before the run: set DATASETS.IMAGE_CHECK decode to find such images "
                "before training, or DATASETS.SKIP_BAD_IMAGES True to leave them out with a warning"
            ) from e
        except Exception as e:
            e.add_note(f"rwdet: while mapping the record of {name}")
            raise


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
