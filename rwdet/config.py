"""Config keys of rwdet, in the style of Detectron2's ``add_*_config`` functions."""

from __future__ import annotations

import logging
import warnings
from typing import List, Tuple

from detectron2.config import CfgNode as CN

from .graphs import GRAPH_MODELS, GraphSpec, generate_graph

__all__ = [
    "REGIMES", "add_randwire_config", "add_randwire_model_config", "backbone_freeze_at",
    "randwire_graph_specs", "randwire_stage_specs", "freeze_graph_specs",
]

#: Regime name -> the stages that are random graphs (paper table 1).
REGIMES = {"small": ("res3", "res4", "res5"), "regular": ("res2", "res3", "res4", "res5")}

logger = logging.getLogger(__name__)


def add_randwire_model_config(cfg: CN) -> CN:
    """Add the MODEL.RANDWIRE keys (see :func:`add_randwire_config`) to ``cfg``; return it."""
    cfg.MODEL.RANDWIRE = CN()
    rw = cfg.MODEL.RANDWIRE
    rw.GRAPH_MODEL = "WS"
    rw.P = 0.75
    rw.K = 4
    rw.M = 5
    rw.SEEDS = [1, 2, 3, 4]
    rw.NODES = 32
    rw.CHANNELS = 109
    rw.REGIME = "regular"
    rw.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    rw.NORM = "BN"
    rw.FREEZE_AT = -1  # deprecated alias of MODEL.BACKBONE.FREEZE_AT; -1 = not set (warns otherwise)
    rw.GRAPHS = []
    rw.PRETRAINED_GRAPHS = "check"
    rw.FORWARD = "node"  # stage forward: "node" (one node at a time; faster on CPU-2) or "level" (each topological level batched)
    rw.RECOMPUTE = "none"  # recomputed in backward instead of stored: "none", "depthwise" or "pointwise"
    return cfg


def add_randwire_config(cfg: CN) -> CN:
    """Add rwdet's keys to a Detectron2 config (in place) and return it.

    MODEL.RANDWIRE:
        GRAPH_MODEL: "ER", "BA" or "WS" (paper sec. 3.3).
        P, K, M: the graph model's parameters (ER uses P; BA uses M; WS uses K and P).
        SEEDS: one integer seed per random stage (4 in the regular regime for res2..res5,
            3 in the small regime for res3..res5).
        NODES: N, nodes per stage (the regular regime's res2 has N/2, as in the paper).
        CHANNELS: C, the base width (78 small; 109 or 154 regular in the paper).
        REGIME: "small" or "regular" (paper table 1).
        OUT_FEATURES: stages returned by the backbone, from stem, res2..res5.
        NORM: "BN", "SyncBN", "FrozenBN", "GN" (through Detectron2's ``get_norm``) or "".
        FREEZE_AT: deprecated alias of ``MODEL.BACKBONE.FREEZE_AT`` (Detectron2's key, which
            drives RandWire's freezing as it drives ResNet's); -1 (default) = not set. Any
            other value still applies but warns (see :func:`backbone_freeze_at`).
        GRAPHS: JSON graph specs (one per random stage) that rebuild a trained model exactly;
            filled in by :func:`freeze_graph_specs` and saved with the run's config.yaml.
        PRETRAINED_GRAPHS: what to do when MODEL.WEIGHTS is an rwdet pretraining checkpoint
            whose graphs differ from the config's: "check" refuses it; "adopt" builds the
            model with the checkpoint's graphs.
        FORWARD: "node" runs one node at a time (the reference, and the faster on a 2-core
            CPU: README, "Speed and memory"); "level" runs each topological level's nodes as one
            op per kind. Same function, same parameters and checkpoints.
        RECOMPUTE: what the level forward recomputes in backward instead of storing: "none",
            "depthwise" (weighted sums, ReLU, depthwise conv) or "pointwise" (also the 1x1 conv).
    DATASETS:
        BCCD_ROOT: root of the BCCD dataset (PASCAL VOC layout); "" registers nothing.
        COCO_JSON: list of [name, json_file, image_root] to register as COCO-format datasets.
        SKIP_BAD_IMAGES: False refuses a dataset with unreadable or mis-sized images before
            training; True leaves those images out, with a warning naming each.
    TEST:
        FOLD_BN: ``tools/train_net.py --eval-only`` folds every BN into the conv before it
            (``rwdet.layers.fold_batchnorm``) once the weights are loaded.
    """
    add_randwire_model_config(cfg)
    cfg.DATASETS.BCCD_ROOT = ""
    cfg.DATASETS.COCO_JSON = []
    cfg.DATASETS.SKIP_BAD_IMAGES = False  # True: leave unreadable/mis-sized images out, with a warning, instead of refusing
    cfg.TEST.FOLD_BN = True  # --eval-only folds each BN into the conv before it (deploy mode: same outputs, fewer ops)
    return cfg


#: Largest freeze_at: stem (1) and res2..res5 (2..5), as Detectron2's ResNet.
MAX_FREEZE_AT = 5


def backbone_freeze_at(cfg: CN) -> int:
    """The freezing of a RandWire body: Detectron2's ``MODEL.BACKBONE.FREEZE_AT``.

    0 trains every layer; 1 freezes the stem; k >= 2 freezes the stem and res2..res<k> (their
    parameters get ``requires_grad=False`` and their BN becomes FrozenBatchNorm2d), exactly as
    ``MODEL.BACKBONE.FREEZE_AT`` drives Detectron2's ``build_resnet_backbone``. Detectron2's
    default is 2 (for ImageNet-pretrained weights); rwdet's classification config defaults to 0.

    The old key ``MODEL.RANDWIRE.FREEZE_AT``, when set (not -1), still wins, with a
    ``FutureWarning`` naming both keys; it will be removed.

    Args:
        cfg: a detection config (``get_rwdet_cfg``) or a classification one (``get_cls_cfg``).

    Returns:
        int in 0..5.

    Raises:
        ValueError: a value outside 0..5 (the message names the key).
    """
    key, value = "MODEL.BACKBONE.FREEZE_AT", cfg.MODEL.BACKBONE.FREEZE_AT
    alias = cfg.MODEL.RANDWIRE.get("FREEZE_AT", -1)
    if alias != -1:
        warnings.warn(
            f"MODEL.RANDWIRE.FREEZE_AT={alias} is deprecated and overrides "
            f"MODEL.BACKBONE.FREEZE_AT={value}; set MODEL.BACKBONE.FREEZE_AT {alias} instead "
            "(Detectron2's key, the same meaning) and leave MODEL.RANDWIRE.FREEZE_AT at -1",
            FutureWarning, stacklevel=2,
        )
        key, value = "MODEL.RANDWIRE.FREEZE_AT", alias
    if not isinstance(value, int) or not 0 <= value <= MAX_FREEZE_AT:
        raise ValueError(
            f"{key}={value!r} is out of range; allowed: 0 (train all), 1 (freeze the stem), "
            f"2..{MAX_FREEZE_AT} (the stem and res2..res<k>)"
        )
    return value


def _generated_specs(cfg: CN) -> List[GraphSpec]:
    rw = cfg.MODEL.RANDWIRE
    if rw.REGIME not in REGIMES:
        raise ValueError(f"MODEL.RANDWIRE.REGIME={rw.REGIME!r} is unknown; allowed: {sorted(REGIMES)}")
    stages = REGIMES[rw.REGIME]
    if len(rw.SEEDS) != len(stages):
        raise ValueError(
            f"MODEL.RANDWIRE.SEEDS={list(rw.SEEDS)} has {len(rw.SEEDS)} seeds, but the "
            f"{rw.REGIME} regime has {len(stages)} random stages {list(stages)}: give one seed each"
        )
    model = str(rw.GRAPH_MODEL).upper()
    if model not in GRAPH_MODELS:
        raise ValueError(
            f"MODEL.RANDWIRE.GRAPH_MODEL={rw.GRAPH_MODEL!r} is unknown; allowed: {sorted(GRAPH_MODELS)}"
        )
    params = {k: rw.get(k) for k in GRAPH_MODELS[model]}
    specs = []
    for name, seed in zip(stages, rw.SEEDS):
        n = rw.NODES // 2 if name == "res2" else rw.NODES
        specs.append(generate_graph(model, params, n, int(seed)))
    return specs


def randwire_graph_specs(cfg: CN) -> List[GraphSpec]:
    """The graph spec of each random stage, as the config defines them.

    The generator keys (GRAPH_MODEL, P/K/M, SEEDS, NODES, REGIME) define the graphs. When
    MODEL.RANDWIRE.GRAPHS holds saved specs (a trained model's config.yaml), those specs are
    used as saved: their generator setting must equal the keys', and if networkx now draws
    different edges for the same setting, the saved edges win and a warning is logged.

    Returns:
        list[GraphSpec]: 3 (small regime) or 4 (regular regime) specs.

    Raises:
        ValueError: invalid keys, or saved specs whose setting differs from the keys.
    """
    generated = _generated_specs(cfg)
    saved_json = list(cfg.MODEL.RANDWIRE.GRAPHS)
    if not saved_json:
        return generated
    saved = [GraphSpec.from_json(s) for s in saved_json]
    if len(saved) != len(generated):
        raise ValueError(
            f"MODEL.RANDWIRE.GRAPHS has {len(saved)} specs but the config defines "
            f"{len(generated)} random stages; clear GRAPHS or match the regime"
        )
    for i, (s, g) in enumerate(zip(saved, generated)):
        if (s.model, s.params, s.seed, s.num_nodes) != (g.model, g.params, g.seed, g.num_nodes):
            raise ValueError(
                f"MODEL.RANDWIRE.GRAPHS[{i}] is {s.describe()} but the generator keys give "
                f"{g.describe()}; set MODEL.RANDWIRE.GRAPHS [] to regenerate from the keys"
            )
        if s.edges != g.edges:
            logger.warning(
                "Stage %d: networkx now draws different edges for %s than the saved spec; "
                "using the saved edges.", i, s.describe()
            )
    return saved


def randwire_stage_specs(cfg: CN) -> List[Tuple[str, GraphSpec]]:
    """``(stage name, spec)`` for each random stage (res3..res5 small, res2..res5 regular), the
    specs as :func:`randwire_graph_specs` resolves them.

    Raises:
        ValueError: as :func:`randwire_graph_specs`.
    """
    return list(zip(REGIMES[cfg.MODEL.RANDWIRE.REGIME], randwire_graph_specs(cfg)))


def freeze_graph_specs(cfg: CN) -> List[GraphSpec]:
    """Resolve the graph specs and write them into MODEL.RANDWIRE.GRAPHS (cfg must be unfrozen).

    After this, a dump of ``cfg`` (e.g. the config.yaml that ``rwdet.engine.defaults.commit_run``
    saves) rebuilds exactly the same networks. Does nothing to configs without MODEL.RANDWIRE.

    Returns:
        list[GraphSpec]: the specs (empty if the config has no RandWire keys).
    """
    if "RANDWIRE" not in cfg.MODEL:
        return []
    specs = randwire_graph_specs(cfg)
    cfg.MODEL.RANDWIRE.GRAPHS = [s.to_json() for s in specs]
    return specs
