"""int8 serving: post-training quantization of the backbone+FPN with NNCF, OpenVINO's own
quantization library (``nncf.quantize``), calibrated on training images.

NNCF inserts FakeQuantize nodes (8-bit, symmetric weights per output channel, activations per
tensor; NNCF's default ``PERFORMANCE`` preset) in front of the convolutions of an
``openvino.Model`` and sets their ranges from the activations it sees on the calibration set;
OpenVINO's CPU plugin then runs those convolutions on int8 kernels (AMX tiles, AVX512-VNNI or
AVX2-VNNI), and every other op (the RandWire weighted sums, the FPN's upsampling and adds) at
the compile's inference precision, f32 here (:func:`rwdet.deploy.load_runner`). The heads stay
as they are served at fp32.

Calibration images are what the served model sees: the first ``n`` images of DATASETS.TRAIN
(dataset order, no shuffling), resized as at test time (``build_detection_test_loader``),
normalised and padded by the detector's own ``preprocess_image``. The number used is logged and
written beside an exported IR (``backbone.json``).
"""

from __future__ import annotations

import logging
from typing import Iterable, List, Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["DEFAULT_CALIBRATION_IMAGES", "check_calibration_images", "calibration_batches", "quantize_openvino"]

logger = logging.getLogger(__name__)

#: Calibration images when none is set (MODEL.DEPLOY.CALIBRATION_IMAGES): NNCF's own default
#: subset size.
DEFAULT_CALIBRATION_IMAGES = 300


def check_calibration_images(value, key: str = "MODEL.DEPLOY.CALIBRATION_IMAGES") -> None:
    """Raise ValueError naming ``key`` unless ``value`` is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key}={value!r} must be an integer >= 1 (images of DATASETS.TRAIN that calibrate int8; "
                         f"default {DEFAULT_CALIBRATION_IMAGES})")


def calibration_batches(cfg, model: nn.Module, num_images: int) -> List[np.ndarray]:
    """The first ``num_images`` images of DATASETS.TRAIN as the backbone+FPN gets them at test time.

    Args:
        cfg: a detection config. Its DATASETS.TRAIN are read as :func:`rwdet.data.prepare_datasets`
            checked them, which the tools call before the model is built; a dataset not yet
            checked in this process is checked here. Resized with INPUT.MIN_SIZE_TEST /
            MAX_SIZE_TEST.
        model: the detector (``GeneralizedRCNN``): its ``preprocess_image`` normalises and pads.
        num_images: how many (>= 1); fewer when the datasets hold fewer (then all of them).

    Returns:
        list of (1, 3, H, W) float32 arrays, H and W multiples of the backbone's
        ``size_divisibility``.

    Raises:
        ValueError: ``num_images`` < 1 or DATASETS.TRAIN empty; the data layer's errors for a
            dataset that is missing or broken.
    """
    from detectron2.data import build_detection_test_loader

    from ..data import is_prepared, prepare_datasets

    check_calibration_images(num_images, key="num_images")
    if not cfg.DATASETS.TRAIN:
        raise ValueError("int8 calibrates on DATASETS.TRAIN, which is empty: set DATASETS.TRAIN (its first "
                         "MODEL.DEPLOY.CALIBRATION_IMAGES images are used), or serve an exported int8 IR "
                         "(MODEL.DEPLOY.BACKBONE_EXPORT)")
    if not all(is_prepared(name) for name in cfg.DATASETS.TRAIN):  # the tools have checked them already
        prepare_datasets(cfg, ("TRAIN",))
    batches: List[np.ndarray] = []
    with torch.no_grad():
        for name in cfg.DATASETS.TRAIN:
            for inputs in build_detection_test_loader(cfg, name, num_workers=0):
                x = model.preprocess_image(inputs).tensor
                batches.append(np.ascontiguousarray(x.to("cpu", torch.float32).numpy()))
                if len(batches) == num_images:
                    return batches
    return batches


def quantize_openvino(ov_model, batches: Sequence[np.ndarray], ignored_types: Iterable[str] = ()):
    """int8 post-training quantization of an ``openvino.Model`` with ``nncf.quantize``.

    Args:
        ov_model: the f32 model (e.g. ``openvino.convert_model`` of the BN-folded backbone+FPN).
        batches: calibration inputs, float32 arrays the model takes (one per image; shapes may
            differ where the model's are dynamic).
        ignored_types: OpenVINO op types left in f32 (e.g. ``("GroupConvolution",)``), for the
            accuracy fixes NNCF's ``IgnoredScope`` allows.

    Returns:
        A new ``openvino.Model`` with FakeQuantize nodes; compile it on the CPU to run int8.

    Raises:
        ValueError: no calibration batch. ImportError: ``nncf`` missing (``pip install -e '.[deploy]'``).
    """
    if not batches:
        raise ValueError("no calibration images: int8 needs at least one")
    try:
        import nncf
    except ImportError as e:
        raise ImportError("int8 needs NNCF: pip install -e '.[deploy]'") from e
    ignored = list(ignored_types)
    scope = nncf.IgnoredScope(types=ignored, validate=False) if ignored else None
    quantized = nncf.quantize(ov_model, nncf.Dataset(list(batches)), subset_size=len(batches), ignored_scope=scope)
    logger.info("int8: NNCF post-training quantization calibrated on %d images%s", len(batches),
                f"; left in f32: {', '.join(ignored)}" if ignored else "")
    return quantized
