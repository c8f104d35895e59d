"""A detection run's initialisation, for the transfer comparison: from scratch, or from an rwdet
pretraining checkpoint (``tools/pretrain_net.py``), with what the checkpoint was trained on.

``tools/compare_backbones.py`` compares backbones x initialisations (He, Girshick, Dollar,
"Rethinking ImageNet Pre-training", ICCV 2019: each backbone from its pretraining checkpoint and
from scratch, the same detection schedule for all). These helpers describe a config's
initialisation, and check that the pretrained sides were pretrained alike.
"""

from __future__ import annotations

import os
from typing import Dict

import torch
import yaml

from ..engine.transfer import is_pretraining_checkpoint
from ..utils.io import file_sha256

__all__ = ["INIT_KEYS", "check_same_pretraining", "describe_init", "file_sha256", "init_label"]

#: Config keys that may differ between a backbone's pretrained and from-scratch configs, besides
#: the backbone's own keys (its norm included): the checkpoint, and what is frozen in it
#: (Detectron2's fine-tuning convention: FrozenBN, stem and res2 frozen).
INIT_KEYS = ("MODEL.WEIGHTS", "MODEL.BACKBONE.FREEZE_AT")

#: Sections of a pretraining config that make its recipe (MODEL and OUTPUT_DIR left out: the
#: architecture is what the comparison varies).
RECIPE_SECTIONS = ("DATA", "SOLVER", "TEST", "SEED")

_CACHE: Dict[tuple, dict] = {}


def describe_init(cfg) -> dict:
    """The initialisation of a detection config.

    Returns:
        ``{"kind": "scratch"}`` when MODEL.WEIGHTS is empty; else ``{"kind": "pretrained",
        "weights": path, "sha256": hex, "arch": MODEL.ARCH, "dataset": DATA.NAME, "iterations":
        the checkpoint's iteration + 1, "recipe": {section: value} of its config}`` (cached per
        path, size and mtime).

    Raises:
        FileNotFoundError: MODEL.WEIGHTS names no file.
        ValueError: MODEL.WEIGHTS is not an rwdet pretraining checkpoint (the transfer
            comparison compares pretraining, not Detectron2 or other weights).
    """
    path = cfg.MODEL.WEIGHTS
    if not path:
        return {"kind": "scratch"}
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"MODEL.WEIGHTS={path!r} does not exist: pretrain it first (tools/pretrain_net.py, whose "
            "OUTPUT_DIR/model_final.pth it names)")
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _CACHE:
        try:
            ckpt = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
        except Exception as e:
            raise ValueError(f"MODEL.WEIGHTS={path!r} is not a readable checkpoint ({type(e).__name__}: {e})") from e
        if not isinstance(ckpt, dict) or not is_pretraining_checkpoint(ckpt):
            raise ValueError(
                f"MODEL.WEIGHTS={path!r} is not an rwdet pretraining checkpoint (tools/pretrain_net.py): "
                "the transfer comparison starts each backbone from its own pretraining or from scratch")
        meta = yaml.safe_load(ckpt["rwdet_meta"]["config"])
        _CACHE[key] = {
            "kind": "pretrained", "weights": path, "sha256": file_sha256(path), "arch": ckpt["rwdet_meta"]["arch"],
            "dataset": meta["DATA"]["NAME"], "iterations": int(ckpt.get("iteration", -1)) + 1,
            "recipe": {k: meta.get(k) for k in RECIPE_SECTIONS},
        }
    return dict(_CACHE[key])


def init_label(init: dict) -> str:
    """``"scratch"`` or e.g. ``"tiny_imagenet, 15620 it"``: the table's init column."""
    if init["kind"] == "scratch":
        return "scratch"
    return f"{init['dataset']}, {init['iterations']} it"


def check_same_pretraining(inits: Dict[str, dict]) -> None:
    """Refuse pretrained sides that were not pretrained alike: every pretraining checkpoint must
    have the same recipe (data, schedule, solver, evaluation, seed) and the same number of
    iterations; only the architecture differs.

    Args:
        inits: ``{config path: describe_init(cfg)}``; scratch entries are ignored.

    Raises:
        ValueError: two checkpoints differ; the message names the configs and the first
            differing sections.
    """
    pretrained = [(p, i) for p, i in inits.items() if i["kind"] == "pretrained"]
    if not pretrained:
        return
    ref_path, ref = pretrained[0]
    for path, init in pretrained[1:]:
        diff = [k for k in RECIPE_SECTIONS if init["recipe"].get(k) != ref["recipe"].get(k)]
        if init["iterations"] != ref["iterations"]:
            diff.append(f"iterations ({ref['iterations']} vs {init['iterations']})")
        if diff:
            raise ValueError(
                f"the pretraining checkpoints of {ref_path} ({ref['weights']}) and {path} ({init['weights']}) "
                f"were trained differently: {', '.join(diff)} differ. Pretrain both sides with one recipe "
                "(e.g. configs/tiny_imagenet/, which differ only in MODEL) to the same iteration")

