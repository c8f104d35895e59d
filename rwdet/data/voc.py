"""PASCAL VOC layout datasets (``Annotations/``, ``JPEGImages/``, ``ImageSets/Main/<split>.txt``),
in particular BCCD (blood cell detection, from the public GitHub repository Shenggan/BCCD_Dataset):
:func:`load_voc_instances`, :func:`register_voc_dataset`, :func:`register_bccd`, and BCCD's class
names and splits. Source: Detectron2's ``detectron2/data/datasets/pascal_voc.py`` (same fields,
same coordinate convention), with validation added.
"""

from __future__ import annotations

import logging
import math
import os
import xml.etree.ElementTree as ET
from typing import Any, Dict, List, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from .catalog import _RWDET_REGISTERED, _check_root, _claim_name
from .checks import BadAnnotationsError

__all__ = ["BCCD_CLASSES", "BCCD_SPLITS", "load_voc_instances", "register_bccd", "register_voc_dataset"]

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


def _check_voc_root(root: str, hint: str) -> None:
    """Raise FileNotFoundError unless ``root`` is a directory with the VOC layout."""
    _check_root(root, _VOC_SUBDIRS, hint, what="VOC dataset root", holder="VOC dataset root",
                lacks="the sub-directories {missing} (expected {expected})")


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
