"""Run a trained detector on images and draw its detections (Detectron2's ``demo/demo.py``).

As Detectron2's demo: inputs are files, globs or folders; images are read and written with
OpenCV (BGR); :class:`detectron2.engine.DefaultPredictor` predicts (it converts BGR to the
model's INPUT.FORMAT, resizes to INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST and maps the boxes back to
the original image); :class:`detectron2.utils.visualizer.Visualizer` draws boxes, class names and
scores with the class names of the config's dataset metadata (``MetadataCatalog``).
"""

from __future__ import annotations

import glob
import logging
import os
from typing import List, Sequence, Tuple

import cv2
import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import DefaultPredictor
from detectron2.utils.visualizer import Visualizer

from ..data import BALLOON_CLASSES, BCCD_CLASSES, register_datasets_from_config
from .checkpoint import load_for_inference

__all__ = ["CheckedPredictor", "IMAGE_EXTENSIONS", "dataset_metadata", "draw_instances", "expand_inputs", "output_paths", "run_demo"]

logger = logging.getLogger(__name__)

#: File name endings taken from a folder given as input (case-insensitive).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def expand_inputs(patterns: Sequence[str]) -> List[str]:
    """The image files named by ``patterns``: files, glob patterns (``imgs/*.jpg``) or folders
    (their files ending in :data:`IMAGE_EXTENSIONS`, not recursive), in order, sorted within a
    pattern, without repeats.

    Raises:
        ValueError: no patterns given.
        FileNotFoundError: a pattern that matches no image; the message names the pattern.
    """
    if not patterns:
        raise ValueError("no --input given; name image files, globs (e.g. 'imgs/*.jpg') or folders")
    files: List[str] = []
    for pattern in patterns:
        path = os.path.expanduser(pattern)
        if os.path.isdir(path):
            found = sorted(os.path.join(path, f) for f in os.listdir(path)
                           if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(path, f)))
        else:
            found = sorted(p for p in glob.glob(path) if os.path.isfile(p))
        if not found:
            what = f"folder {pattern!r} holds no image ({', '.join(IMAGE_EXTENSIONS)})" if os.path.isdir(path) \
                else f"--input {pattern!r} matches no file"
            raise FileNotFoundError(what)
        files += [f for f in found if f not in files]
    return files


def output_paths(inputs: Sequence[str], output: str) -> List[str]:
    """Where each input's drawing goes: ``output/<input file name>`` when ``output`` is a folder
    (an existing one, a name ending in ``/``, or one without an image extension), else ``output``
    itself, which takes a single input only.

    Raises:
        ValueError: several inputs for one output file, or two inputs with the same file name
            for one folder (the message names them).
    """
    is_file = not output.endswith(("/", os.sep)) and not os.path.isdir(output) \
        and output.lower().endswith(IMAGE_EXTENSIONS)
    if is_file:
        if len(inputs) != 1:
            raise ValueError(f"--output {output!r} is one file but {len(inputs)} inputs matched; give a folder")
        return [output]
    paths = [os.path.join(output, os.path.basename(p)) for p in inputs]
    seen = {}
    for src, dst in zip(inputs, paths):
        if dst in seen:
            raise ValueError(f"inputs {seen[dst]!r} and {src!r} have the same file name; both would be {dst!r}")
        seen[dst] = src
    return paths


def dataset_metadata(cfg):
    """The metadata of the config's first DATASETS.TEST dataset (else DATASETS.TRAIN), for its
    class names. Registers the config's datasets first when it names any
    (``DATASETS.BCCD_ROOT``, ``DATASETS.BALLOON_ROOT``, ``DATASETS.COCO_JSON``, as
    tools/train_net.py). BCCD's and balloon's class names are known without their files, so
    with ``DATASETS.BCCD_ROOT ""`` (``BALLOON_ROOT ""``) a ``bccd_*`` (``balloon_*``) dataset
    still has them: the demo then needs no data set, only the trained weights.

    Raises:
        FileNotFoundError: a DATASETS.BCCD_ROOT or COCO_JSON path that does not exist.
        ValueError: as ``register_datasets_from_config`` (e.g. DATASETS.TEST naming a data set
            that nothing registers).
    """
    if cfg.DATASETS.BCCD_ROOT or cfg.DATASETS.get("BALLOON_ROOT", "") or cfg.DATASETS.COCO_JSON:
        register_datasets_from_config(cfg)
    names = list(cfg.DATASETS.TEST) or list(cfg.DATASETS.TRAIN)
    if not names:
        return MetadataCatalog.get("__rwdet_demo_unnamed")
    meta = MetadataCatalog.get(names[0])
    if names[0] in DatasetCatalog.list() and "thing_classes" not in meta.as_dict():
        DatasetCatalog.get(names[0])  # a COCO json sets thing_classes once loaded
    if names[0].startswith("bccd_") and "thing_classes" not in meta.as_dict():
        meta.set(thing_classes=list(BCCD_CLASSES))
    if names[0].startswith("balloon_") and "thing_classes" not in meta.as_dict():
        meta.set(thing_classes=list(BALLOON_CLASSES))
    return meta


def draw_instances(image_bgr: np.ndarray, instances, metadata) -> np.ndarray:
    """Draw ``instances`` (boxes, classes and scores as Detectron2 predicts them, and masks when
    they have ``pred_masks``: Mask R-CNN) on a BGR image with Detectron2's ``Visualizer`` (class
    names from ``metadata.thing_classes``; each mask filled, translucent, in its instance's colour).

    Args:
        image_bgr: (H, W, 3) uint8, as ``cv2.imread`` gives it.
        instances: ``detectron2.structures.Instances`` of that image size (on any device);
            ``pred_masks``, if present, (N, H, W) bool.
        metadata: a ``MetadataCatalog`` entry.

    Returns:
        (H, W, 3) uint8 BGR image with the drawing, for ``cv2.imwrite``.
    """
    visualizer = Visualizer(image_bgr[:, :, ::-1], metadata, scale=1.0)
    drawn = visualizer.draw_instance_predictions(instances.to("cpu"))
    return np.ascontiguousarray(drawn.get_image()[:, :, ::-1])


class CheckedPredictor(DefaultPredictor):
    """Detectron2's ``DefaultPredictor`` whose weights must fill the whole model: built by
    ``DefaultPredictor.__init__`` itself (model in eval mode, ``ResizeShortestEdge`` to
    INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST, INPUT.FORMAT), with MODEL.WEIGHTS loaded by
    :func:`rwdet.engine.checkpoint.load_for_inference` instead of a plain
    ``DetectionCheckpointer.load``. Called as ``DefaultPredictor`` (a BGR (H, W, 3) uint8 image
    -> ``{"instances": ...}`` in its pixel coordinates).

    Raises:
        ValueError: INPUT.FORMAT is neither "RGB" nor "BGR" (checked before the model is built;
            ``DefaultPredictor`` only asserts it).
        IncompleteCheckpointError: MODEL.WEIGHTS is empty or leaves a parameter or buffer of the
            model unloaded (the message names each with both shapes and the likely cause).
        CheckpointReadError: MODEL.WEIGHTS is not a readable checkpoint.
    """

    def __init__(self, cfg):
        if cfg.INPUT.FORMAT not in ("RGB", "BGR"):
            raise ValueError(f"INPUT.FORMAT={cfg.INPUT.FORMAT!r}; allowed: 'RGB', 'BGR'")
        # DefaultPredictor.__init__ with MODEL.WEIGHTS "": it builds everything and loads nothing
        # (Detectron2's checkpointer logs "Initializing model from scratch"); its load would not
        # check that the weights fill the model, so they are loaded next, checked.
        unloaded = cfg.clone()
        unloaded.defrost()
        unloaded.MODEL.WEIGHTS = ""
        super().__init__(unloaded)
        self.cfg.defrost()  # self.cfg: the clone the model was built from, with the real MODEL.WEIGHTS
        self.cfg.MODEL.WEIGHTS = cfg.MODEL.WEIGHTS
        if cfg.is_frozen():
            self.cfg.freeze()
        load_for_inference(self.model, cfg.MODEL.WEIGHTS)


def run_demo(cfg, inputs: Sequence[str], output: str, metadata=None,
             prepare_model=None) -> List[Tuple[str, str, int]]:
    """Predict and draw every input image; write each drawing with OpenCV.

    Args:
        cfg: a frozen detection config with MODEL.WEIGHTS set (and the score threshold).
        inputs: image files (see :func:`expand_inputs`).
        output: a folder or a file (see :func:`output_paths`); folders are created.
        metadata: class names; default :func:`dataset_metadata` of ``cfg``.
        prepare_model: called on the predictor's loaded model, returns the model to predict
            with (``tools/demo.py`` passes ``rwdet.deploy.apply_deploy_runtime`` for
            MODEL.DEPLOY.RUNTIME); default: the model as loaded.

    Returns:
        ``(input, output, number of detections drawn)`` per image.

    Raises:
        ValueError: an unreadable image (names it) or bad output (see :func:`output_paths`).
        IncompleteCheckpointError: MODEL.WEIGHTS does not fill the model (:class:`CheckedPredictor`);
            nothing is written.
    """
    outs = output_paths(inputs, output)
    metadata = dataset_metadata(cfg) if metadata is None else metadata
    predictor = CheckedPredictor(cfg)  # before any output is written
    if prepare_model is not None:
        predictor.model = prepare_model(predictor.model)
    done = []
    for src, dst in zip(inputs, outs):
        image = cv2.imread(src, cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"OpenCV cannot read {src!r} as an image")
        instances = predictor(image)["instances"]
        drawn = draw_instances(image, instances, metadata)
        folder = os.path.dirname(dst)
        if folder:
            os.makedirs(folder, exist_ok=True)
        if not cv2.imwrite(dst, drawn):
            raise ValueError(f"OpenCV cannot write {dst!r}; use an image extension such as .jpg or .png")
        logger.info("%s: %d detections -> %s", src, len(instances), dst)
        done.append((src, dst, len(instances)))
    return done

