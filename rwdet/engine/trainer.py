"""Detection training and evaluation through Detectron2's ``DefaultTrainer``."""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict

from detectron2.evaluation import COCOEvaluator
from detectron2.engine import DefaultTrainer
from detectron2.utils import comm
from tabulate import tabulate

from ..utils.io import atomic_write
from .defaults import DeferredWriters
from .graphs import build_checkpointer, graph_table

__all__ = ["Trainer", "format_results", "save_results"]

logger = logging.getLogger(__name__)


class Trainer(DefaultTrainer):
    """Detectron2's ``DefaultTrainer`` with rwdet's choices.

    - Evaluation: ``COCOEvaluator`` (pycocotools; ``use_fast_impl=False`` since the compiled
      Detectron2 extension may be absent) on every ``DATASETS.TEST`` dataset, writing
      ``coco_instances_results.json`` under ``OUTPUT_DIR/inference/<dataset>``.
    - Checkpoints: :class:`~rwdet.engine.checkpoint.AtomicCheckpointer`, with the model's graph
      specs stored in each checkpoint (key ``randwire_graphs``) and checked on ``--resume``
      (:func:`rwdet.engine.graphs.build_checkpointer`, shared with the classification trainer).
    - Logging: before training, a table of the random graphs' statistics
      (:func:`rwdet.engine.graphs.graph_table`).
    - Writers: created at the first write, so that building the trainer and loading its
      checkpoint (validation) write nothing to OUTPUT_DIR.
    - Results: after testing, ``OUTPUT_DIR/eval_results.json`` holds every metric, and the log
      shows a table with AP, AP50, AP75 and the per-class AP.
    """

    def train(self):
        """Log the statistics of the backbone's random graphs (if any), then train."""
        table = graph_table(self.cfg)
        if table:
            logger.info("Random graphs of the backbone:\n%s", table)
        return super().train()

    def build_hooks(self):
        """Detectron2's hooks, with rwdet's checkpointer: ``DefaultTrainer`` built a plain
        ``DetectionCheckpointer``; the atomic, graph-checking one replaces it before the
        ``PeriodicCheckpointer`` hook captures it."""
        self.checkpointer = build_checkpointer(self.cfg, self.checkpointer.model, self)
        return super().build_hooks()

    def build_writers(self):
        """Detectron2's writers, created at their first write (:class:`DeferredWriters`), so
        that building the trainer writes nothing to OUTPUT_DIR."""
        return [DeferredWriters(self.cfg.OUTPUT_DIR, self.max_iter)]

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return COCOEvaluator(dataset_name, output_dir=output_folder, use_fast_impl=False)

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        results = super().test(cfg, model, evaluators)
        if comm.is_main_process() and results:
            # DefaultTrainer.test unwraps the dict when there is a single test dataset.
            per_dataset = {cfg.DATASETS.TEST[0]: results} if len(cfg.DATASETS.TEST) == 1 else results
            logger.info("Evaluation results:\n%s", format_results(per_dataset))
            save_results(per_dataset, cfg.OUTPUT_DIR)
        return results


def format_results(results: "OrderedDict[str, dict]") -> str:
    """A table per dataset and task: AP, AP50, AP75, APs, APm, APl, then AP of every class.

    Args:
        results: ``{dataset: {task: {metric: value}}}`` as returned by ``DefaultTrainer.test``
            (COCO AP values in percent).
    """
    blocks = []
    for dataset, tasks in results.items():
        for task, metrics in tasks.items():
            rows = [(k, f"{v:.2f}") for k, v in metrics.items()]
            blocks.append(f"{dataset} / {task}\n" + tabulate(rows, headers=["metric", "value"], tablefmt="github"))
    return "\n\n".join(blocks)


def save_results(results: dict, output_dir: str) -> str:
    """Write ``results`` to ``output_dir/eval_results.json`` (atomically); return the path."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, "eval_results.json")
    atomic_write(path, lambda f: f.write(json.dumps(results, indent=2).encode()))
    return path
