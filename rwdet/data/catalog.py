"""What the format modules (:mod:`rwdet.data.voc`, :mod:`rwdet.data.via`,
:mod:`rwdet.data.coco_json`) share to register a dataset: the claim of a name in Detectron2's
``DatasetCatalog`` / ``MetadataCatalog`` (``detectron2.data.catalog``), the set of names rwdet
registered (the others are Detectron2's builtins, ``detectron2.data.datasets.builtin``), and the
check that a dataset root holds its layout. Private helpers only.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog

__all__: list = []


# Names registered by rwdet.data's format modules (the others in DatasetCatalog are Detectron2's builtins).
_RWDET_REGISTERED: set = set()


def _check_root(root: str, required: Sequence[str], hint: str, *, what: str, holder: str,
                lacks: str = "{missing}", is_present: Callable[[str], bool] = os.path.isdir) -> None:
    """Raise FileNotFoundError unless ``root`` is a directory that holds every path of
    ``required``: the VOC layout (``Annotations/``, ``JPEGImages/``, ``ImageSets/Main/``), or
    balloon's ``<split>/via_region_data.json`` for each of its splits. The message says where it
    looked and ends with ``hint`` (where the data comes from).

    Args:
        root: the dataset root.
        required: paths relative to ``root`` that must be there.
        hint: the last sentence of the message.
        what: names ``root`` when it is not a directory (``"DATASETS.BALLOON_ROOT"``).
        holder: names ``root`` when it lacks a path (``"Balloon root"``).
        lacks: what it lacks, formatted with ``missing`` and ``expected`` (lists of paths).
        is_present: whether a required path (joined to ``root``) is there; default: a directory.

    Raises:
        FileNotFoundError: ``root`` is not a directory, or lacks a path of ``required``.
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"{what} {root!r} (absolute: {os.path.abspath(root)!r}) does not exist "
            f"or is not a directory. {hint}"
        )
    missing = [p for p in required if not is_present(os.path.join(root, p))]
    if missing:
        raise FileNotFoundError(
            f"{holder} {os.path.abspath(root)!r} lacks {lacks.format(missing=missing, expected=list(required))}. "
            f"{hint}"
        )


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
