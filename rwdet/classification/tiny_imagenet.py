"""Tiny ImageNet (Stanford CS231n's ``tiny-imagenet-200``) in its official layout, and the check
that a classification dataset's evaluation split has the training split's classes.

The layout, as the official ``tiny-imagenet-200.zip`` unpacks::

    ROOT/wnids.txt                              the 200 WordNet ids, one a line
    ROOT/words.txt                              WordNet id <TAB> names (all of ImageNet's ids)
    ROOT/train/<wnid>/images/<wnid>_<k>.JPEG    500 photos per class (64x64)
    ROOT/val/images/val_<k>.JPEG                10,000 photos, 50 per class, NOT in class folders
    ROOT/val/val_annotations.txt                file <TAB> wnid <TAB> x0 y0 x1 y1 (one box each)

Every photo of a split is checked before any work starts, as the detection data layer checks
its images (``rwdet.data.image_problem``: header readable, JPEG end-of-image marker present, so
a truncated photo is named).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Dict, List, Sequence, Tuple

from torchvision.datasets import DatasetFolder
from torchvision.datasets.folder import IMG_EXTENSIONS, default_loader

from ..data import image_problem

__all__ = ["TinyImageNet", "TINY_IMAGENET_LAYOUT", "check_bad_images", "check_same_classes"]

logger = logging.getLogger(__name__)

#: The layout :class:`TinyImageNet` reads, for error messages.
TINY_IMAGENET_LAYOUT = (
    "the official tiny-imagenet-200 layout: ROOT/wnids.txt, ROOT/words.txt, "
    "ROOT/train/<wnid>/images/*.JPEG, ROOT/val/images/*.JPEG with ROOT/val/val_annotations.txt "
    "(unzip tiny-imagenet-200.zip and pass its tiny-imagenet-200 folder as DATA.ROOT)"
)

#: Problems listed in one error message; the rest are counted.
_MAX_LISTED = 10


def _listed(items: Sequence[str]) -> str:
    """The first :data:`_MAX_LISTED` of ``items``, then how many more."""
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f" ... and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else "")


def check_bad_images(samples: Sequence[Tuple[str, int]], what: str, check: str = "end_marker") -> None:
    """Refuse a split with an unreadable or truncated photo, naming each.

    Args:
        samples: ``(path, label)`` pairs, as ``DatasetFolder.samples``.
        what: the split, for the message (e.g. ``"tiny_imagenet val"``).
        check: ``"end_marker"`` (header + JPEG/PNG end marker, one seek a file) or ``"decode"``
            (decode every photo), as ``rwdet.data.image_problem`` / DATASETS.IMAGE_CHECK.

    Raises:
        ValueError: some photos are empty, unreadable or truncated; the message names them and
            why.
    """
    start = time.perf_counter()
    bad = [f"{path} {why}" for path, _ in samples for why in [image_problem(path, check)] if why]
    if bad:
        raise ValueError(f"{what}: {len(bad)} of {len(samples)} photos cannot be used: {_listed(bad)}")
    logger.info("Checked the %d photos of %s (%s) in %.1f s", len(samples), what, check,
                time.perf_counter() - start)


def check_same_classes(train_classes: Sequence[str], test_classes: Sequence[str], what: str) -> None:
    """Refuse an evaluation split whose class list is not the training split's.

    Labels are indices into the class list, so a split with other classes, or the same classes
    in another order, would be scored against the wrong labels (a flat ``val/images`` folder read
    by ``ImageFolder`` is one class named "images", and top-1 comes out 0 without a word).

    Args:
        train_classes, test_classes: the two splits' ``classes`` (index = label).
        what: the dataset and splits, for the message.

    Raises:
        ValueError: the lists differ; the message names the classes only in each split, or the
            first position where the order differs.
    """
    train_classes, test_classes = list(train_classes), list(test_classes)
    if train_classes == test_classes:
        return
    only_train = [c for c in train_classes if c not in set(test_classes)]
    only_test = [c for c in test_classes if c not in set(train_classes)]
    if only_train or only_test:
        diff = (f"{len(only_train)} only in training ({_listed(only_train) or 'none'}), "
                f"{len(only_test)} only in evaluation ({_listed(only_test) or 'none'})")
    else:
        i = next(i for i, (a, b) in enumerate(zip(train_classes, test_classes)) if a != b)
        diff = f"same classes in another order (label {i} is {train_classes[i]!r} in training, {test_classes[i]!r} in evaluation)"
    raise ValueError(
        f"{what}: the evaluation split's classes are not the training split's ({len(train_classes)} "
        f"against {len(test_classes)} classes; {diff}). Labels would be scored against other "
        "classes. Sort the evaluation photos into the training split's class folders (ImageNet "
        "layout), or use a DATA.NAME that reads the split's own labels (tiny_imagenet)."
    )


def _read_lines(path: str) -> List[str]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Tiny ImageNet file not found: {path}. Expected {TINY_IMAGENET_LAYOUT}.")
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n").rstrip("\r") for line in f]


class TinyImageNet(DatasetFolder):
    """Tiny ImageNet (200 ImageNet classes at 64x64; CS231n), read from its official layout.

    A torchvision ``DatasetFolder``: ``classes`` are the WordNet ids of ``wnids.txt``, sorted
    (as ``ImageFolder`` sorts its class folders, so label ``i`` is the ``i``-th wnid in sorted
    order on both splits); ``class_names`` their names from ``words.txt``; ``samples`` the
    ``(path, label)`` pairs. Training photos come from ``train/<wnid>/images/``, validation
    photos from ``val/images/`` with their labels from ``val/val_annotations.txt`` (the
    validation split is not sorted into class folders, which ``ImageFolder`` would take for one
    class). Photos load as RGB PIL images (some are grayscale JPEGs).

    Item ``i``: ``(transform(image), label)``; ``image`` an RGB PIL image of 64x64 pixels,
    ``label`` an int in 0..199.

    Args:
        root: the ``tiny-imagenet-200`` folder.
        split: ``"train"`` (100,000 photos) or ``"val"`` (10,000).
        transform: callable on the PIL image (e.g. ``rwdet.classification.data.build_transform``).
        image_check: how every photo is checked before use (:func:`check_bad_images`).

    Raises:
        ValueError: a bad split name; ``wnids.txt`` empty or with a repeated id; a training class
            folder missing or holding no photo; a val annotation line that is malformed, names a
            wnid not in ``wnids.txt`` or a file that is missing (each named with its line); a
            truncated or unreadable photo (named).
        FileNotFoundError: ``root`` or one of its files is missing (the message gives the
            expected layout).
    """

    def __init__(self, root: str, split: str = "train", transform=None, image_check: str = "end_marker"):
        if split not in ("train", "val"):
            raise ValueError(f"tiny_imagenet split must be 'train' or 'val', got {split!r} (the official "
                             "zip's test/ photos have no labels)")
        root = os.fspath(root)
        if not os.path.isdir(root):
            raise FileNotFoundError(f"Tiny ImageNet folder not found: {root!r}. Expected {TINY_IMAGENET_LAYOUT}.")
        self.split = split
        self.tiny_root = root
        super().__init__(os.path.join(root, split), loader=default_loader, extensions=IMG_EXTENSIONS,
                         transform=transform)
        names = self._read_words(os.path.join(root, "words.txt"))
        self.class_names = [names.get(c, c) for c in self.classes]
        check_bad_images(self.samples, f"tiny_imagenet {split} ({self.root})", image_check)

    def _wnids(self) -> List[str]:
        path = os.path.join(self.tiny_root, "wnids.txt")
        wnids = [w.strip() for w in _read_lines(path) if w.strip()]
        if not wnids:
            raise ValueError(f"{path} lists no class")
        repeated = sorted({w for w in wnids if wnids.count(w) > 1})
        if repeated:
            raise ValueError(f"{path} lists these ids more than once: {_listed(repeated)}")
        return sorted(wnids)

    @staticmethod
    def _read_words(path: str) -> Dict[str, str]:
        """``words.txt``: wnid -> names; missing file -> FileNotFoundError."""
        names = {}
        for line in _read_lines(path):
            wnid, _, words = line.partition("\t")
            if wnid:
                names[wnid] = words.strip()
        return names

    def find_classes(self, directory: str) -> Tuple[List[str], Dict[str, int]]:
        """The sorted wnids of ``wnids.txt`` and their labels (torchvision's hook)."""
        classes = self._wnids()
        return classes, {c: i for i, c in enumerate(classes)}

    def make_dataset(self, directory: str, class_to_idx: Dict[str, int], extensions=None,
                     is_valid_file=None, allow_empty: bool = False) -> List[Tuple[str, int]]:
        """``(path, label)`` pairs of the split (torchvision's hook; see the class docstring)."""
        if self.split == "train":
            return self._train_samples(directory, class_to_idx, extensions)
        return self._val_samples(directory, class_to_idx)

    @staticmethod
    def _train_samples(directory: str, class_to_idx: Dict[str, int], extensions) -> List[Tuple[str, int]]:
        samples, problems = [], []
        for wnid, label in sorted(class_to_idx.items(), key=lambda kv: kv[1]):
            folder = os.path.join(directory, wnid, "images")
            if not os.path.isdir(folder):
                problems.append(f"{folder} missing")
                continue
            files = sorted(f for f in os.listdir(folder) if f.lower().endswith(tuple(extensions)))
            if not files:
                problems.append(f"{folder} holds no photo")
            samples += [(os.path.join(folder, f), label) for f in files]
        if problems:
            raise ValueError(f"tiny_imagenet train: {len(problems)} of the {len(class_to_idx)} classes of "
                             f"wnids.txt have no photos: {_listed(problems)}. Expected {TINY_IMAGENET_LAYOUT}.")
        return samples

    @staticmethod
    def _val_samples(directory: str, class_to_idx: Dict[str, int]) -> List[Tuple[str, int]]:
        path = os.path.join(directory, "val_annotations.txt")
        samples, problems, seen = [], [], set()
        for lineno, line in enumerate(_read_lines(path), 1):
            if not line.strip():
                continue
            fields = line.split("\t")
            where = f"{path}:{lineno}"
            if len(fields) < 2 or not fields[0] or not fields[1]:
                problems.append(f"{where}: not 'file<TAB>wnid<TAB>x0<TAB>y0<TAB>x1<TAB>y1': {line[:80]!r}")
                continue
            name, wnid = fields[0], fields[1]
            image = os.path.join(directory, "images", name)
            if wnid not in class_to_idx:
                problems.append(f"{where}: wnid {wnid!r} of {name} is not in wnids.txt")
            elif not os.path.isfile(image):
                problems.append(f"{where}: {image} is missing")
            elif name in seen:
                problems.append(f"{where}: {name} is listed twice")
            else:
                seen.add(name)
                samples.append((image, class_to_idx[wnid]))
        if problems:
            raise ValueError(f"tiny_imagenet val: {len(problems)} bad lines in {path}: {_listed(problems)}")
        if not samples:
            raise ValueError(f"tiny_imagenet val: {path} lists no photo")
        return sorted(samples)

    def __repr__(self) -> str:
        return f"TinyImageNet(root={self.tiny_root!r}, split={self.split}, n={len(self)}, classes={len(self.classes)})"

