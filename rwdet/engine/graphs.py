"""What rwdet's two trainers add to Detectron2's for a RandWire model, in one place.

The detection :class:`~rwdet.engine.trainer.Trainer` and the classification
``rwdet.classification.trainer.ClassificationTrainer`` both subclass Detectron2's
``DefaultTrainer`` and add the same three things when :func:`rwdet.config.is_randwire` holds
for their config:

- the checkpointer: :class:`~rwdet.engine.checkpoint.AtomicCheckpointer` (atomic writes, the
  graphs of a loaded checkpoint checked against the model's);
- the graph record in each checkpoint (:class:`~rwdet.engine.checkpoint.GraphSpecRecord`,
  key ``randwire_graphs``), refused on ``--resume`` when the graphs differ;
- the table of the random graphs' statistics in the log before training
  (:func:`rwdet.graphs.stats.format_statistics`).
"""

from __future__ import annotations

import weakref
from typing import Optional

from detectron2.config import CfgNode
from torch import nn

from ..config import is_randwire, randwire_graph_specs, randwire_stage_specs
from ..graphs import format_statistics
from .checkpoint import AtomicCheckpointer, GraphSpecRecord

__all__ = ["build_checkpointer", "graph_table"]


def build_checkpointer(cfg: CfgNode, model: nn.Module, trainer) -> AtomicCheckpointer:
    """The checkpointer of a trainer: :class:`AtomicCheckpointer` saving ``model`` (and the
    trainer's state, as Detectron2's ``DefaultTrainer`` does) to ``cfg.OUTPUT_DIR``, with the
    model's graph specs recorded in each checkpoint (key ``randwire_graphs``) when ``cfg``
    builds a RandWire network.

    Args:
        cfg: the trainer's config (detection or classification).
        model: the module whose ``state_dict`` is saved (not wrapped in DistributedDataParallel).
        trainer: the trainer, held through a weak proxy (as ``DefaultTrainer`` does).

    Raises:
        ValueError: invalid RandWire keys (see :func:`rwdet.config.randwire_graph_specs`).
    """
    checkpointer = AtomicCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(trainer))
    if is_randwire(cfg):
        checkpointer.add_checkpointable("randwire_graphs", GraphSpecRecord(randwire_graph_specs(cfg)))
    return checkpointer


def graph_table(cfg: CfgNode) -> Optional[str]:
    """The statistics table of the config's random graphs (one column per random stage), for
    the log before training; None when ``cfg`` builds no RandWire network."""
    return format_statistics(randwire_stage_specs(cfg)) if is_randwire(cfg) else None
