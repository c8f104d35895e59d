"""What rwdet's LazyConfig configs call besides Detectron2's own pieces (``configs/bccd/*.py``,
run by ``tools/lazyconfig_train_net.py``): datasets given by their root, registered on first use
(a LazyConfig has no DATASETS.* keys to register them from)."""

from __future__ import annotations

from typing import Any, Dict, List

from detectron2.data import DatasetCatalog

from ..data import BCCD_SPLITS, register_bccd

__all__ = ["bccd_dataset"]


def bccd_dataset(root: str, split: str) -> List[Dict[str, Any]]:
    """The dataset dicts of a BCCD split, registering the four splits of ``root`` first (as
    DATASETS.BCCD_ROOT does for a YAML config; ``bccd_<split>`` then names them for
    ``COCOEvaluator``). For ``L(build_detection_train_loader)(dataset=L(bccd_dataset)(...))``.

    Args:
        root: the BCCD folder in PASCAL VOC layout.
        split: one of :data:`rwdet.data.BCCD_SPLITS`.

    Returns:
        Detectron2 dataset dicts (``rwdet.data.load_voc_instances``; boxes in XYXY_ABS pixels).

    Raises:
        ValueError: an unknown split, or ``root`` differs from the root the names were
            registered with.
        FileNotFoundError: ``root`` is not a BCCD folder (the message says where BCCD comes from).
    """
    if split not in BCCD_SPLITS:
        raise ValueError(f"BCCD split {split!r} is unknown; allowed: {', '.join(BCCD_SPLITS)}")
    register_bccd(root)
    return DatasetCatalog.get(f"bccd_{split}")
