"""Config keys of rwdet, in the style of Detectron2's ``add_*_config`` functions."""

from __future__ import annotations

import logging
import os
import re
import warnings
from typing import List, Optional, Sequence, Tuple

import torch
from detectron2.config import CfgNode as CN

from .graphs import GRAPH_MODELS, GraphSpec, generate_graph

__all__ = [
    "REGIMES", "add_randwire_config", "add_randwire_model_config", "backbone_freeze_at", "is_randwire", "regime_of",
    "randwire_graph_specs", "randwire_stage_specs", "freeze_graph_specs", "generate_stage_graphs",
    "CPU_FALLBACK_ENV", "default_device", "merge_config", "CONFIG_KEY", "split_trailing_overrides",
]

#: Regime name -> the stages that are random graphs (paper table 1).
REGIMES = {"small": ("res3", "res4", "res5"), "regular": ("res2", "res3", "res4", "res5")}


def regime_of(num_graphs: int) -> Optional[str]:
    """The regime whose body has ``num_graphs`` random stages (:data:`REGIMES`: 3 is "small",
    4 is "regular"), e.g. for the graphs read from a checkpoint; None for any other count."""
    return next((name for name, stages in REGIMES.items() if len(stages) == num_graphs), None)


logger = logging.getLogger(__name__)

#: Environment variable that opts in to running a MODEL.DEVICE "cuda" config on the CPU.
CPU_FALLBACK_ENV = "RWDET_CPU_FALLBACK"


def default_device() -> str:
    """rwdet's default MODEL.DEVICE: ``"cuda"`` where CUDA is available, else ``"cpu"``.

    Detectron2's default is always "cuda"; rwdet's lets configs that name no device run on
    either machine. A config that names "cuda" still fails without CUDA (:func:`merge_config`).
    """
    return "cuda" if torch.cuda.is_available() else "cpu"


#: A config key as written on a command line, e.g. MODEL.WEIGHTS or SOLVER.MAX_ITER.
CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")


def split_trailing_overrides(items: Sequence[str], opts: Sequence[str]) -> Tuple[List[str], List[str]]:
    """Give back the ``KEY VALUE`` overrides that a list option swallowed.

    An argparse option with ``nargs="+"`` (``--input a.jpg MODEL.WEIGHTS w.pth``, ``--configs
    a.yaml SOLVER.MAX_ITER 300``) takes the trailing overrides, as Detectron2's tools write them,
    into its list. They start at the first item that is an upper-case dotted config key
    (:data:`CONFIG_KEY`).

    Args:
        items: the option's values as argparse parsed them.
        opts: the overrides argparse found after the other options.

    Returns:
        ``(items before the first key, the items from it on followed by opts)``; ``(items, opts)``
        unchanged (as lists) when no item is a key.
    """
    items = list(items)
    for i, item in enumerate(items):
        if CONFIG_KEY.match(item):
            return items[:i], items[i:] + list(opts)
    return items, list(opts)


def merge_config(cfg: CN, config_file: str, opts: Sequence[str] = ()) -> CN:
    """Merge ``config_file`` then ``KEY VALUE`` overrides into ``cfg`` (in place; returned).

    MODEL.DEVICE "cuda" (or "cuda:N") where CUDA is not available is an error, as in
    Detectron2, unless the environment variable ``RWDET_CPU_FALLBACK=1`` opts in to running on
    the CPU instead (then with a warning).

    Raises:
        FileNotFoundError: ``config_file`` does not exist.
        ValueError: an odd number of overrides, or a ``--flag`` among them (the message says
            that flags go before the overrides).
        RuntimeError: MODEL.DEVICE names CUDA on a machine without it (and no opt-in).
    """
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"config file {config_file!r} does not exist")
    flags = [o for o in opts if isinstance(o, str) and o.startswith("--")]
    if flags:  # argparse puts flags given after the first KEY into the overrides
        raise ValueError(
            f"{flags[0]} was given among the KEY VALUE overrides {list(opts)}: command-line flags "
            f"go before them, e.g. --config-file CONFIG {flags[0]} KEY VALUE ..."
        )
    if len(opts) % 2:
        raise ValueError(f"overrides must be KEY VALUE pairs, got an odd count: {list(opts)}")
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        if os.environ.get(CPU_FALLBACK_ENV) != "1":
            raise RuntimeError(
                f"MODEL.DEVICE={cfg.MODEL.DEVICE!r} (from {config_file} or the overrides) but CUDA is not "
                f"available on this machine (torch.cuda.is_available() is False). Run on the CPU with "
                f"MODEL.DEVICE cpu, or set {CPU_FALLBACK_ENV}=1 to let a cuda config fall back to the CPU"
            )
        logger.warning("MODEL.DEVICE=%s but CUDA is not available: running on the CPU (%s=1)",
                       cfg.MODEL.DEVICE, CPU_FALLBACK_ENV)
        cfg.MODEL.DEVICE = "cpu"
    return cfg


def add_randwire_model_config(cfg: CN) -> CN:
    """Add the MODEL.RANDWIRE keys that build a RandWire body (detection and classification) to
    ``cfg`` (in place) and return it. Each key is described on its line (the paper: Xie et al.,
    ICCV 2019, sec. 3.3 graph models, table 1 regimes)."""
    cfg.MODEL.RANDWIRE = CN()
    rw = cfg.MODEL.RANDWIRE
    rw.GRAPH_MODEL = "WS"  # random graph generator: "ER", "BA" or "WS" (paper sec. 3.3)
    rw.P = 0.75  # ER: edge probability; WS: rewiring probability
    rw.K = 4  # WS: each node joined to its K nearest ring neighbours (K even)
    rw.M = 5  # BA: edges added with each new node
    rw.SEEDS = [1, 2, 3, 4]  # one graph seed per random stage: 4 regular (res2..res5), 3 small (res3..res5)
    rw.NODES = 32  # N, nodes per random stage (the regular regime's res2 has N/2, as in the paper)
    rw.CHANNELS = 109  # C, the base width (paper: 78 small; 109 or 154 regular)
    rw.REGIME = "regular"  # "small" or "regular" (paper table 1): which stages are random graphs
    rw.NORM = "BN"  # "BN", "SyncBN", "naiveSyncBN" (SyncBN by all-reduce: CPU processes too), "FrozenBN", "GN" (Detectron2's get_norm) or "" (none)
    rw.FREEZE_AT = -1  # deprecated alias of MODEL.BACKBONE.FREEZE_AT; -1 = not set (warns otherwise)
    rw.GRAPHS = []  # JSON graph specs that rebuild a trained model exactly; filled by freeze_graph_specs into config.yaml
    rw.FORWARD = "node"  # stage forward: "node" (one node at a time; faster on CPU-2) or "level" (each topological level batched)
    rw.RECOMPUTE = "none"  # recomputed in backward instead of stored: "none", "depthwise"/"pointwise" (level forward) or "stage"
    return cfg


def add_randwire_config(cfg: CN) -> CN:
    """Add rwdet's detection keys to a Detectron2 config (in place) and return it: the
    MODEL.RANDWIRE body keys (:func:`add_randwire_model_config`), the detector's own RandWire
    keys, SOLVER.CHECKPOINT_ON_SIGNALS (``rwdet.engine.preemption``), TEST.FOLD_BN and
    MODEL.DEPLOY.* (``rwdet.deploy``); each key is described on its line. The dataset keys (DATASETS.*)
    are ``rwdet.data``'s (``rwdet.data.add_dataset_config``).
    """
    add_randwire_model_config(cfg)
    rw = cfg.MODEL.RANDWIRE
    rw.OUT_FEATURES = ["res2", "res3", "res4", "res5"]  # stages the backbone returns, from stem, res2..res5
    rw.PRETRAINED_GRAPHS = "check"  # MODEL.WEIGHTS from pretraining with other graphs: "check" refuses it, "adopt" builds with its graphs
    cfg.SOLVER.AMP.DTYPE = "float16"  # autocast dtype of SOLVER.AMP.ENABLED: "float16" (CUDA) or "bfloat16" (CUDA, or the CPU: rwdet.engine.autocast)
    cfg.SOLVER.CHECKPOINT_ON_SIGNALS = ("SIGTERM",)  # signals that save a checkpoint at the current iteration and stop the run (a scheduler's preemption; add "SIGUSR1" for SLURM's --signal); () = off
    cfg.TEST.FOLD_BN = True  # --eval-only folds each BN into the conv before it (deploy mode: same outputs, fewer ops)
    cfg.MODEL.DEPLOY = CN()
    cfg.MODEL.DEPLOY.PAD_CHANNELS = 0  # deploy rewrite: RandWire widths rounded up to a multiple of this with zero filters (same outputs; 16 = AVX-512 f32 block, docs/SPEED.md "Exact rewrites"); 0: off
    cfg.MODEL.DEPLOY.PRECISION = "fp32"  # serving precision of the backbone+FPN: "fp32" (exact), "bf16" (eager autocast, OpenVINO's bf16 hint, not ONNX Runtime) or "int8" (OpenVINO, NNCF post-training quantization); the heads stay fp32; docs/DEPLOY.md
    cfg.MODEL.DEPLOY.CALIBRATION_IMAGES = 300  # int8: images of DATASETS.TRAIN (the first, test-time resize) that NNCF calibrates on at load
    cfg.MODEL.DEPLOY.BACKBONE_EXPORT = ""  # a folder of tools/export_model.py --part backbone (e.g. an int8 IR): served by RUNTIME instead of exporting at load; "": export at load
    cfg.MODEL.DEPLOY.RUNTIME = ""  # where --eval-only / demo run the backbone+FPN: "" or "pytorch" (eager), "onnxruntime", "openvino", "torchscript" (exported at load, BN folded; heads stay PyTorch)
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


def generate_stage_graphs(graph_model: str, regime: str, seeds: Sequence[int], nodes: int = 32,
                          **params) -> List[GraphSpec]:
    """The graph of each random stage from plain arguments, as the MODEL.RANDWIRE keys give them
    in YAML (for LazyConfig: ``L(RandWire)(specs=L(generate_stage_graphs)(graph_model="WS",
    regime="regular", seeds=[1, 2, 3, 4], nodes=32, k=4, p=0.75), ...)``).

    Paper sec. 3.3 and table 1: one graph per random stage (res3..res5 in the small regime,
    res2..res5 in the regular one), N nodes each, N/2 in the regular regime's res2.

    Args:
        graph_model: "ER", "BA" or "WS" (any case).
        regime: "small" or "regular".
        seeds: one graph seed per random stage.
        nodes: N.
        **params: the generator's parameters by their key names in any case (``p`` for ER,
            ``m`` for BA, ``k`` and ``p`` for WS).

    Returns:
        list[GraphSpec]: 3 (small) or 4 (regular) specs, res2/res3 first.

    Raises:
        ValueError: an unknown graph model or regime, a seed count other than the regime's
            number of random stages, or missing / invalid generator parameters.
    """
    if regime not in REGIMES:
        raise ValueError(f"regime={regime!r} is unknown; allowed: {sorted(REGIMES)}")
    stages = REGIMES[regime]
    if len(seeds) != len(stages):
        raise ValueError(f"seeds={list(seeds)} has {len(seeds)} seeds, but the {regime} regime has "
                         f"{len(stages)} random stages {list(stages)}: give one seed each")
    model = str(graph_model).upper()
    if model not in GRAPH_MODELS:
        raise ValueError(f"graph_model={graph_model!r} is unknown; allowed: {sorted(GRAPH_MODELS)}")
    given = {k.upper(): v for k, v in params.items()}
    missing = [k for k in GRAPH_MODELS[model] if k not in given]
    extra = sorted(set(given) - set(GRAPH_MODELS[model]))
    if missing or extra:
        raise ValueError(f"{model} takes the parameters {list(GRAPH_MODELS[model])}; missing {missing}, "
                         f"not taken {extra}")
    return [generate_graph(model, {k: given[k] for k in GRAPH_MODELS[model]},
                           nodes // 2 if name == "res2" else nodes, int(seed))
            for name, seed in zip(stages, seeds)]


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
    return generate_stage_graphs(model, rw.REGIME, list(rw.SEEDS), rw.NODES,
                                 **{k: rw.get(k) for k in GRAPH_MODELS[model]})


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


def is_randwire(cfg: CN) -> bool:
    """Whether ``cfg`` builds a RandWire network: the one test rwdet's trainers and tools use.

    A classification config (it has ``MODEL.ARCH``, ``rwdet.classification.config``) builds one
    when ``MODEL.ARCH`` is "randwire"; a detection config when its ``MODEL.BACKBONE.NAME`` is a
    RandWire builder (``build_randwire_backbone``, ``build_randwire_fpn_backbone``,
    ``build_randwire_fpn_retinanet_backbone``) and it has
    the ``MODEL.RANDWIRE`` keys. Only such configs have graphs (:func:`randwire_graph_specs`).
    """
    if "ARCH" in cfg.MODEL:
        return cfg.MODEL.ARCH == "randwire"
    return "RANDWIRE" in cfg.MODEL and "randwire" in cfg.MODEL.BACKBONE.NAME


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
