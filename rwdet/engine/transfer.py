"""Load rwdet pretraining (classification) checkpoints into a detector's backbone: a RandWire
classifier into a RandWire backbone, a ``resnet18`` classifier (Detectron2's own ResNet) into
Detectron2's ResNet backbone (R18-FPN).

A pretraining checkpoint (``tools/pretrain_net.py``) holds the classifier's state dict (keys
``body.*`` for stem..res5, the head's tensors (``head_conv.*`` and ``fc.*`` for RandWire,
``fc.*`` for ResNet-18)), the graph specs of a RandWire (``randwire_graphs``) and a marker (``rwdet_meta``: a plain dict ``{"format":
PRETRAIN_FORMAT, "arch": ..., "config": ...}``, written by
``rwdet.classification.trainer.PretrainMeta``; this module reads it as a dict and does not
import the classification package, which sits above the engine). The detector's backbone is the same
body (``RandWire``, or Detectron2's ``ResNet``) under ``backbone.bottom_up.``, so no conversion file is needed: point
MODEL.WEIGHTS of a detection config at the checkpoint. This plays the role of Detectron2's
``convert-torchvision-to-d2.py`` and its ``matching_heuristics``, with exact key names instead.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Optional, Tuple

import torch

from ..graphs import GraphSpec

__all__ = [
    "PRETRAIN_FORMAT",
    "TRANSFERABLE",
    "is_pretraining_checkpoint",
    "read_checkpoint_specs",
    "classifier_to_detector_state",
]

logger = logging.getLogger(__name__)

#: ``rwdet_meta["format"]`` of a pretraining checkpoint.
PRETRAIN_FORMAT = "rwdet-classifier-v1"
#: Where the classifier's body sits in a detector's state dict.
DETECTOR_PREFIX = "backbone.bottom_up."

#: Classifier architectures (MODEL.ARCH) whose body is a detector's bottom-up network, and the
#: class name of the bottom-up network each loads into.
TRANSFERABLE = {"randwire": "RandWire", "resnet18": "ResNet"}


def is_pretraining_checkpoint(ckpt: dict) -> bool:
    """True for a checkpoint written by rwdet's classification trainer."""
    return isinstance(ckpt.get("rwdet_meta"), dict) and ckpt["rwdet_meta"].get("format") == PRETRAIN_FORMAT


def read_checkpoint_specs(path: str) -> Optional[List[GraphSpec]]:
    """Graph specs stored in the checkpoint at ``path``; None if it has none.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file cannot be read as a checkpoint (the message names it).
    """
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"checkpoint {path!r} does not exist") from e
    except Exception as e:  # not a pickle, truncated, ...: torch names neither the file nor why
        raise ValueError(f"{path} is not a readable checkpoint ({type(e).__name__}: {e})") from e
    specs = ckpt.get("randwire_graphs", {}).get("specs") if isinstance(ckpt, dict) else None
    return None if specs is None else [GraphSpec.from_json(s) for s in specs]


def classifier_to_detector_state(
    ckpt: dict, model_state: Dict[str, torch.Tensor], expected_specs: Optional[List[GraphSpec]], source: str,
    bottom_up: Optional[str] = "RandWire",
) -> Tuple[Dict[str, torch.Tensor], Dict[str, List[str]]]:
    """Rename a pretraining checkpoint's body weights to the detector's and check its graphs.

    Args:
        ckpt: the loaded pretraining checkpoint (``is_pretraining_checkpoint(ckpt)``).
        model_state: the detector's ``state_dict()`` (for the matched/missing report).
        expected_specs: the graph specs of the detector's RandWire backbone (None for another).
        source: the checkpoint's path, for messages.
        bottom_up: class name of the detector's bottom-up network (``type(model.backbone.
            bottom_up).__name__``); None when the backbone has none.

    Returns:
        (state, report): ``state`` holds the ``backbone.bottom_up.*`` tensors (the classifier
        head is left out); ``report`` is ``{"matched": [...], "missing": [...],
        "unexpected": [...]}``, detector keys matched by shape, detector backbone keys the
        checkpoint lacks, and checkpoint keys the detector lacks (also logged).

    Raises:
        ValueError: the checkpoint's architecture does not load into ``bottom_up`` (only the
            pairs of :data:`TRANSFERABLE`), or a RandWire's graphs differ from the detector's (set MODEL.RANDWIRE.PRETRAINED_GRAPHS adopt to build the detector with
            the checkpoint's graphs instead).
    """
    arch = ckpt["rwdet_meta"].get("arch")
    if TRANSFERABLE.get(arch) != bottom_up:
        allowed = "; ".join(f"a {a!r} classifier into a {b} backbone" for a, b in TRANSFERABLE.items())
        raise ValueError(
            f"{source} is a {arch!r} classifier and the detector's backbone is "
            f"{'a ' + bottom_up if bottom_up else 'not a bottom-up network with FPN'}: pretraining "
            f"checkpoints load as {allowed}. Use the detection config of the classifier's architecture.")
    saved = [GraphSpec.from_json(s) for s in ckpt.get("randwire_graphs", {}).get("specs", [])]
    if arch == "randwire" and expected_specs is not None and saved != list(expected_specs):
        raise ValueError(
            f"{source} was pretrained with graphs {[s.describe() for s in saved]}, but the detector's "
            f"are {[s.describe() for s in expected_specs]} (or the same settings with other edges). "
            "Match MODEL.RANDWIRE to the pretraining config, or set MODEL.RANDWIRE.PRETRAINED_GRAPHS "
            "adopt to build the detector with the checkpoint's graphs."
        )
    body = {DETECTOR_PREFIX + k[len("body."):]: v for k, v in ckpt["model"].items() if k.startswith("body.")}
    # BN's step counter has no place in a FrozenBN detector (the fine-tuning convention): not a
    # weight, so not reported as unexpected.
    body = {k: v for k, v in body.items() if not (k.endswith(".num_batches_tracked") and k not in model_state)}
    head = sorted(k for k in ckpt["model"] if not k.startswith("body."))
    wanted = sorted(k for k in model_state if k.startswith(DETECTOR_PREFIX))
    matched = [k for k in wanted if k in body and tuple(body[k].shape) == tuple(model_state[k].shape)]
    missing = [k for k in wanted if k not in matched]
    unexpected = sorted(k for k in body if k not in model_state)
    logger.info(
        "Pretrained %s backbone from %s: %d of %d backbone tensors matched, %d missing %s, "
        "%d unexpected %s; classifier head not used: %d tensors (%s)",
        bottom_up, source, len(matched), len(wanted), len(missing), missing[:5], len(unexpected), unexpected[:5],
        len(head), ", ".join(sorted({k.split(".")[0] for k in head})),
    )
    return body, {"matched": matched, "missing": missing, "unexpected": unexpected}
