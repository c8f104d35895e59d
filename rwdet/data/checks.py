"""Checks of annotations (boxes, segmentations, classes) and of a whole dataset before training.

Holds :class:`BadAnnotationsError`, :func:`box_problem` and :func:`segmentation_problem` (what
Detectron2's ``load_coco_json`` and ``DatasetMapper`` can read: a box of 4 finite numbers in
``BoxMode.XYWH_ABS`` / ``XYXY_ABS``, polygons or an RLE), the capped warnings log, box clipping,
and :func:`validate_dataset_dicts`, which checks every record of a dataset, its image through
:mod:`rwdet.data.images`, before Detectron2 meets it mid-training (``SizeMismatchError``, PIL's
"image file is truncated"). Source: Detectron2's dataset dicts (``detectron2.structures.BoxMode``,
``detectron2.data.detection_utils``).
"""

from __future__ import annotations

import logging
import math
import numbers
from typing import Any, Dict, List, Optional, Sequence

from detectron2.data import MetadataCatalog
from detectron2.structures import BoxMode

from .images import IMAGE_CHECKS, MAX_WARNINGS_PER_KIND, _image_size

__all__ = ["BadAnnotationsError", "box_problem", "segmentation_problem", "validate_dataset_dicts"]

logger = logging.getLogger("rwdet.data")


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


# Datasets whose warnings were already logged in this process (later loads log at DEBUG).
_WARNED: set = set()


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
