"""Config set-up shared by rwdet's command-line tools (after Detectron2's ``default_setup``)."""

from __future__ import annotations

import logging
import os
from typing import Sequence

import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.engine import default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..config import add_randwire_config, freeze_graph_specs
from .transfer import read_checkpoint_specs

__all__ = ["CPU_FALLBACK_ENV", "default_device", "get_rwdet_cfg", "load_config", "merge_config", "setup_run"]

logger = logging.getLogger(__name__)

#: Environment variable that opts in to running a MODEL.DEVICE "cuda" config on the CPU.
CPU_FALLBACK_ENV = "RWDET_CPU_FALLBACK"


def default_device() -> str:
    """rwdet's default MODEL.DEVICE: ``"cuda"`` where CUDA is available, else ``"cpu"``.

    Detectron2's default is always "cuda"; rwdet's lets configs that name no device run on
    either machine. A config that names "cuda" still fails without CUDA (:func:`merge_config`).
    """
    return "cuda" if torch.cuda.is_available() else "cpu"


def get_rwdet_cfg() -> CfgNode:
    """Detectron2's default config plus rwdet's keys (see ``add_randwire_config``), with
    MODEL.DEVICE defaulting to :func:`default_device`."""
    cfg = add_randwire_config(get_cfg())
    cfg.MODEL.DEVICE = default_device()  # "cuda" where available, else "cpu"
    return cfg


def merge_config(cfg: CfgNode, config_file: str, opts: Sequence[str] = ()) -> CfgNode:
    """Merge ``config_file`` then ``KEY VALUE`` overrides into ``cfg`` (in place; returned).

    MODEL.DEVICE "cuda" (or "cuda:N") where CUDA is not available is an error, as in
    Detectron2, unless the environment variable ``RWDET_CPU_FALLBACK=1`` opts in to running on
    the CPU instead (then with a warning).

    Raises:
        FileNotFoundError: ``config_file`` does not exist.
        ValueError: an odd number of overrides.
        RuntimeError: MODEL.DEVICE names CUDA on a machine without it (and no opt-in).
    """
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"config file {config_file!r} does not exist")
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


def setup_run(cfg: CfgNode, args) -> CfgNode:
    """Detectron2's ``default_setup`` (logging, config.yaml, seeds) plus the "rwdet" logger."""
    default_setup(cfg, args)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="rwdet")
    return cfg


def load_config(config_file: str, opts: Sequence[str] = ()) -> CfgNode:
    """Build the full config of a run: defaults, ``config_file``, then ``KEY VALUE`` overrides.

    The random graphs are resolved and written into MODEL.RANDWIRE.GRAPHS, so the config.yaml
    saved in OUTPUT_DIR rebuilds the same networks. MODEL.DEVICE: see :func:`merge_config`.

    Args:
        config_file: path to a YAML config.
        opts: flat list of overrides, e.g. ``["SOLVER.MAX_ITER", "100"]``.

    Returns:
        CfgNode: the config, frozen.

    Raises:
        FileNotFoundError: ``config_file`` does not exist.
        ValueError: an odd number of overrides, or invalid RandWire keys.
        RuntimeError: MODEL.DEVICE "cuda" without CUDA (see :func:`merge_config`).
    """
    cfg = merge_config(get_rwdet_cfg(), config_file, opts)
    _apply_pretrained_graphs(cfg)
    freeze_graph_specs(cfg)
    cfg.freeze()
    return cfg


def _apply_pretrained_graphs(cfg: CfgNode) -> None:
    """With MODEL.RANDWIRE.PRETRAINED_GRAPHS "adopt", take the graphs of the MODEL.WEIGHTS
    pretraining checkpoint (generator keys and edges), so the detector is built with them."""
    mode = cfg.MODEL.RANDWIRE.PRETRAINED_GRAPHS
    if mode not in ("check", "adopt"):
        raise ValueError(f"MODEL.RANDWIRE.PRETRAINED_GRAPHS={mode!r}; allowed: 'check', 'adopt'")
    if mode != "adopt" or not cfg.MODEL.WEIGHTS or not os.path.isfile(cfg.MODEL.WEIGHTS):
        return
    specs = read_checkpoint_specs(cfg.MODEL.WEIGHTS)
    if not specs:
        raise ValueError(f"MODEL.WEIGHTS={cfg.MODEL.WEIGHTS} holds no RandWire graphs to adopt")
    rw = cfg.MODEL.RANDWIRE
    regime = {3: "small", 4: "regular"}.get(len(specs))
    if regime is None:
        raise ValueError(f"{cfg.MODEL.WEIGHTS} has {len(specs)} graphs; a RandWire body has 3 or 4")
    rw.REGIME = regime
    rw.GRAPH_MODEL = specs[0].model
    for key, value in specs[0].params.items():
        setattr(rw, key, value)
    rw.SEEDS = [s.seed for s in specs]
    rw.NODES = specs[-1].num_nodes
    rw.GRAPHS = [s.to_json() for s in specs]
    logger.info("Adopted the graphs of %s: %s", cfg.MODEL.WEIGHTS, [s.describe() for s in specs])
