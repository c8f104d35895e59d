"""Detection training and evaluation through Detectron2's ``DefaultTrainer``."""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict

import torch

from detectron2.data import DatasetMapper, build_detection_test_loader, build_detection_train_loader
from detectron2.data.build import _train_loader_from_config
from detectron2.engine import DefaultTrainer, hooks
from detectron2.evaluation import COCOEvaluator
from detectron2.solver import build_lr_scheduler
from detectron2.utils import comm
from tabulate import tabulate

from ..data import NamingMapper, checked_coco_api
from ..utils.io import atomic_write
from .autocast import check_amp, init_with_step_trainer
from .defaults import DeferredWriters, ddp_on_cpu
from .graphs import build_checkpointer, graph_table
from .preemption import insert_preemption_hook
from .resume import ExactResume, ResumableSampler, isolated_rng

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
    - Processes: on the CPU, several processes (``--num-gpus N``, gloo) train with
      DistributedDataParallel as on GPUs (:func:`rwdet.engine.defaults.ddp_on_cpu`); use
      MODEL.RANDWIRE.NORM "naiveSyncBN" there (torch's SyncBN needs CUDA).
    - Resumption: ``--resume`` continues the training data stream and the random draws where the
      checkpoint left them, so a resumed run ends as an uninterrupted one would
      (:mod:`rwdet.engine.resume`, with its conditions); evaluation draws from a copy of the
      generators, so ``TEST.EVAL_PERIOD`` does not change training. A run extended with a
      larger ``SOLVER.MAX_ITER`` and ``--resume`` is a longer run of the same command.
    """

    def __init__(self, cfg):
        """Detectron2's ``DefaultTrainer.__init__``; on the CPU with several processes (gloo) the
        model is wrapped in DistributedDataParallel without device ids (:func:`ddp_on_cpu`).

        SOLVER.AMP.ENABLED trains under autocast with SOLVER.AMP.DTYPE
        (:mod:`rwdet.engine.autocast`: AMPTrainer on CUDA, bfloat16 autocast on the CPU).

        Raises:
            ValueError: torch's SyncBN ("SyncBN" in a NORM key) on the CPU with several
                processes, where torch refuses it mid-training; Detectron2's "naiveSyncBN" works.
                SOLVER.AMP.ENABLED on the CPU with a DTYPE other than bfloat16, or an unknown DTYPE.
        """
        if comm.get_world_size() > 1 and not str(cfg.MODEL.DEVICE).startswith("cuda"):
            keys = ("RANDWIRE.NORM", "FPN.NORM", "ROI_BOX_HEAD.NORM", "RESNETS.NORM")
            sync = [k for k in keys if cfg.MODEL.get(k.split(".")[0], {}).get("NORM") == "SyncBN"]
            if sync:
                raise ValueError(
                    f"MODEL.{sync[0]} SyncBN: torch's SyncBatchNorm needs GPUs, and this run has "
                    f"{comm.get_world_size()} CPU processes; set MODEL.{sync[0]} naiveSyncBN (Detectron2's "
                    "all-reduce SyncBN, works with gloo)")
        device = torch.device(cfg.MODEL.DEVICE)
        amp = check_amp(cfg, device)
        if cfg.SOLVER.AMP.ENABLED != amp:  # AMP on the CPU without bfloat16: Detectron2 would fail at the first step
            raise ValueError(f"SOLVER.AMP.ENABLED on {device.type} needs SOLVER.AMP.DTYPE 'bfloat16' (got "
                             f"{cfg.SOLVER.AMP.DTYPE!r}): CPUs autocast to bfloat16 only")
        with ddp_on_cpu(cfg.MODEL.DEVICE):  # the step trainer of SOLVER.AMP.DTYPE when amp
            init_with_step_trainer(self, super().__init__, cfg, device, amp)

    def train(self):
        """Log the statistics of the backbone's random graphs (if any), then train."""
        table = graph_table(self.cfg)
        if table:
            logger.info("Random graphs of the backbone:\n%s", table)
        return super().train()

    def build_hooks(self):
        """Detectron2's hooks, with rwdet's checkpointer (``DefaultTrainer`` built a plain
        ``DetectionCheckpointer``; the atomic, graph-checking one replaces it before the
        ``PeriodicCheckpointer`` hook captures it) and :class:`~rwdet.engine.resume.ExactResume`
        (generator states in checkpoints; the data stream and the draws continue on
        ``--resume``), and :class:`~rwdet.engine.preemption.PreemptionCheckpoint` (a stop signal,
        SOLVER.CHECKPOINT_ON_SIGNALS, saves a checkpoint at the current iteration)."""
        self.checkpointer = build_checkpointer(self.cfg, self.checkpointer.model, self)
        ret = super().build_hooks()
        # ExactResume captures the generator states just before PeriodicCheckpointer saves them
        # (main process only) and, on every process, before EvalHook, whose collectives must
        # not interleave with its all_gather.
        later = (hooks.PeriodicCheckpointer, hooks.EvalHook, hooks.PeriodicWriter)
        at = next((i for i, h in enumerate(ret) if isinstance(h, later)), len(ret))
        sampler = getattr(self.data_loader, "resumable_sampler", None)
        images = self.cfg.SOLVER.IMS_PER_BATCH // comm.get_world_size()
        ret.insert(at, ExactResume(sampler, images, self.cfg.SOLVER.CHECKPOINT_PERIOD,
                                   in_process=self.cfg.DATALOADER.NUM_WORKERS == 0))
        return insert_preemption_hook(ret, self.checkpointer, self.cfg.SOLVER.CHECKPOINT_ON_SIGNALS)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        """Detectron2's ``WarmupMultiStepLR``, evaluated so that the learning rate of an
        iteration does not depend on ``SOLVER.MAX_ITER``: built for a horizon of the smallest
        power of two >= MAX_ITER, so that the fractions ``iteration / horizon`` its
        schedulers work in are exact in floating point (with MAX_ITER itself, warm-up rates
        differ in the last bit from one MAX_ITER to another). The rates are Detectron2's
        (linear or constant warm-up over WARMUP_ITERS, x GAMMA at each of STEPS), so a run
        extended with a larger MAX_ITER trains as the longer run would. Other schedulers, a
        warm-up longer than the run (which Detectron2 shortens to MAX_ITER), and runs over
        2**19 iterations are Detectron2's as they are."""
        solver = cfg.SOLVER
        horizon_iters = 1 << max(0, (solver.MAX_ITER - 1).bit_length())
        if (solver.LR_SCHEDULER_NAME != "WarmupMultiStepLR" or solver.WARMUP_ITERS > solver.MAX_ITER
                or horizon_iters >= 10**6):  # fvcore's multi-step adds 1e-6 x horizon to each iteration
            return super().build_lr_scheduler(cfg, optimizer)
        late = [s for s in solver.STEPS if s > solver.MAX_ITER]
        if late:
            logger.warning("SOLVER.STEPS %s are beyond SOLVER.MAX_ITER %d: never reached", late, solver.MAX_ITER)
        horizon = cfg.clone()
        horizon.defrost()
        horizon.SOLVER.MAX_ITER = horizon_iters
        return build_lr_scheduler(horizon, optimizer)

    @classmethod
    def build_train_loader(cls, cfg):
        """Detectron2's training loader (same dataset, mapper and sampler as
        ``build_detection_train_loader(cfg)``), its sampler wrapped in a
        :class:`~rwdet.engine.resume.ResumableSampler` (attribute ``resumable_sampler`` of the
        loader) so that ``--resume`` continues the stream, and its mapper in a
        :class:`~rwdet.data.NamingMapper`: an image that cannot be decoded is named, or left out
        with a warning under DATASETS.SKIP_BAD_IMAGES."""
        kwargs = _train_loader_from_config(cfg)  # what build_detection_train_loader(cfg) builds
        kwargs["mapper"] = NamingMapper(kwargs["mapper"], cfg.DATASETS.get("SKIP_BAD_IMAGES", False))
        sampler = kwargs["sampler"]
        if sampler is not None:
            kwargs["sampler"] = ResumableSampler(sampler)
        loader = build_detection_train_loader(**kwargs)
        if sampler is not None:
            loader.resumable_sampler = kwargs["sampler"]
        return loader

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        """Detectron2's test loader (``DatasetMapper(cfg, False)``), its mapper in a
        :class:`~rwdet.data.NamingMapper` that names an image it cannot decode (never skips:
        an evaluation covers every image)."""
        return build_detection_test_loader(cfg, dataset_name, mapper=NamingMapper(DatasetMapper(cfg, False)))

    def build_writers(self):
        """Detectron2's writers, created at their first write (:class:`DeferredWriters`), so
        that building the trainer writes nothing to OUTPUT_DIR."""
        return [DeferredWriters(self.cfg.OUTPUT_DIR, self.max_iter)]

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        evaluator = COCOEvaluator(dataset_name, output_dir=output_folder, use_fast_impl=False)
        # A json data set that the checks trimmed (DATASETS.SKIP_BAD_*): evaluate against what was
        # kept, not against the json file's annotations (COCOEvaluator reads its json_file).
        checked = checked_coco_api(dataset_name)
        if checked is not None:
            evaluator._coco_api = checked
        return evaluator

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """Detectron2's ``test`` on a copy of the random generators (see the class docstring),
        then the results table and ``eval_results.json``."""
        with isolated_rng():
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
