"""Loading what the analysis tools work on: a classification or detection config, its graphs.

A classification config (``tools/pretrain_net.py``) sets ``MODEL.ARCH``; a detection config
(``tools/train_net.py``) does not. Both carry ``MODEL.RANDWIRE``.
"""

from __future__ import annotations

import argparse
import os
from typing import List, Optional, Sequence, Tuple

import yaml
from detectron2.config import CfgNode
from detectron2.utils.logger import setup_logger

from ..classification.config import load_cls_config
from ..config import REGIMES, randwire_stage_specs, regime_of
from ..engine.defaults import load_config
from ..engine.transfer import read_checkpoint_specs
from ..graphs import GraphSpec

__all__ = [
    "add_source_arguments", "check_source_arguments", "config_task", "load_any_config", "setup_output_dir",
    "stage_specs",
]


def _read_yaml_chain(path: str) -> List[dict]:
    """The YAML dicts of ``path`` and its ``_BASE_`` files, the file itself first."""
    chain = []
    while path:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"config file {path!r} does not exist")
        with open(path) as f:
            data = yaml.safe_load(f) or {}
        chain.append(data)
        base = data.get("_BASE_")
        path = os.path.join(os.path.dirname(path), base) if base else None
    return chain


def config_task(config_file: str) -> str:
    """``"classification"`` if the YAML (or a ``_BASE_`` of it) sets MODEL.ARCH, else ``"detection"``.

    Raises:
        FileNotFoundError: the file or one of its ``_BASE_`` files does not exist.
    """
    for data in _read_yaml_chain(config_file):
        if "ARCH" in (data.get("MODEL") or {}) or "DATA" in data:
            return "classification"
    return "detection"


def load_any_config(config_file: str, opts: Sequence[str] = ()) -> Tuple[str, CfgNode]:
    """Load a classification or a detection config, whichever ``config_file`` is.

    Returns:
        (task, cfg): task is ``"classification"`` or ``"detection"``; cfg is frozen, its graphs
        resolved into MODEL.RANDWIRE.GRAPHS.

    Raises:
        FileNotFoundError: no such file. ValueError: bad overrides or RandWire keys.
    """
    task = config_task(config_file)
    if task == "classification":
        return task, load_cls_config(config_file, opts)
    return task, load_config(config_file, opts)


def stage_specs(
    config_file: Optional[str] = None, opts: Sequence[str] = (), checkpoint: Optional[str] = None
) -> List[Tuple[str, GraphSpec]]:
    """The (stage name, graph spec) pairs of a config, or of a checkpoint when one is given.

    Stage names are the paper's random stages: res3..res5 (small regime) or res2..res5
    (regular regime); a checkpoint's regime follows from its number of graphs (3 or 4).

    Raises:
        ValueError: neither source given, a checkpoint without RandWire graphs, or a config
            without RandWire (e.g. a ResNet-50 classifier).
        FileNotFoundError: a missing file.
    """
    if checkpoint:
        specs = read_checkpoint_specs(checkpoint)
        if not specs:
            raise ValueError(f"checkpoint {checkpoint!r} holds no RandWire graph specs")
        regime = regime_of(len(specs))
        if regime is None:
            raise ValueError(f"checkpoint {checkpoint!r} has {len(specs)} graphs; expected 3 or 4")
        return list(zip(REGIMES[regime], specs))
    if not config_file:
        raise ValueError("give a config file or a checkpoint")
    task, cfg = load_any_config(config_file, opts)
    if task == "classification" and cfg.MODEL.ARCH != "randwire":
        raise ValueError(f"{config_file} builds MODEL.ARCH={cfg.MODEL.ARCH!r}, which has no random graphs")
    return randwire_stage_specs(cfg)


def add_source_arguments(parser) -> None:
    """Add the graph-source options of the analysis tools to an ``argparse`` parser: exactly one
    of ``--config-file`` / ``--checkpoint``, then trailing ``KEY VALUE`` overrides (``opts``)."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config-file", metavar="CONFIG", help="classification or detection config (YAML)")
    source.add_argument("--checkpoint", metavar="CKPT", help="rwdet checkpoint holding the trained graphs")
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                        help="config overrides (only with --config-file)")


def check_source_arguments(parser, args) -> None:
    """Validate the options of :func:`add_source_arguments`; ``parser.error`` (exit 2) names a
    missing file, overrides given with a checkpoint, or an odd number of overrides."""
    path = args.config_file or args.checkpoint
    if not os.path.isfile(path):
        parser.error(f"{'--config-file' if args.config_file else '--checkpoint'} {path!r}: no such file")
    if args.checkpoint and args.opts:
        parser.error(f"config overrides {args.opts} apply to --config-file only, not to --checkpoint")
    if len(args.opts) % 2:
        parser.error(f"overrides must be KEY VALUE pairs, got an odd number: {args.opts}")


def setup_output_dir(output_dir: str, loggers: Sequence[str] = ("rwdet", "detectron2")) -> str:
    """Start a comparison tool's run folder: create ``output_dir`` and send each of ``loggers``
    to the console and to ``output_dir/log.txt`` (Detectron2's ``setup_logger``, appending).

    Returns:
        The log file's path.
    """
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, "log.txt")
    for name in loggers:
        setup_logger(path, name=name)
    return path
