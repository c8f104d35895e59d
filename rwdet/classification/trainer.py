"""The shared classification trainer (ImageNet pretraining): Detectron2's ``DefaultTrainer``
with the classifier's builders.

``ClassificationTrainer`` subclasses ``DefaultTrainer`` (its ``SimpleTrainer`` or ``AMPTrainer``
step, hooks, checkpointing, resumption and state) and overrides the builders with pycls's
recipe: SGD with momentum, linearly scaled learning rate, half-period cosine decay (fvcore
``CosineParamScheduler``), label smoothing, top-1/top-5 evaluation, and a data stream that
resumes exactly where it stopped.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Dict

import torch
from detectron2.data.samplers import InferenceSampler
from detectron2.engine import DefaultTrainer, TrainerBase, hooks
from detectron2.solver import LRMultiplier, WarmupParamScheduler
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from detectron2.utils.events import get_event_storage
from fvcore.common.param_scheduler import CosineParamScheduler
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from ..engine.autocast import check_amp, init_with_step_trainer
from ..engine.defaults import DeferredWriters, ddp_on_cpu
from ..engine.graphs import build_checkpointer, graph_table
from ..engine.preemption import insert_preemption_hook
from ..engine.transfer import PRETRAIN_FORMAT
from ..utils.io import atomic_write
from .data import ResumableTrainingSampler, SeededSamples, build_classification_dataset, build_transform
from .model import ClassificationModel, build_classifier
from .tiny_imagenet import check_same_classes

__all__ = ["ClassificationTrainer", "PretrainMeta", "check_datasets", "evaluate_classifier"]

logger = logging.getLogger(__name__)


def _per_rank(total: int, what: str) -> int:
    world = comm.get_world_size()
    if total % world:
        raise ValueError(f"{what}={total} must be divisible by the number of processes ({world})")
    return total // world


class PretrainMeta:
    """Checkpointable marker saved in pretraining checkpoints (key ``rwdet_meta``): the format
    (``rwdet.engine.transfer.PRETRAIN_FORMAT``), the architecture (MODEL.ARCH) and the config
    (YAML). ``rwdet.engine.transfer`` reads it back as a plain dict.

    Args:
        arch: MODEL.ARCH, e.g. "randwire".
        config_yaml: the run's config, ``cfg.dump()``.
    """

    def __init__(self, arch: str, config_yaml: str):
        self.arch = arch
        self.config_yaml = config_yaml

    def state_dict(self) -> dict:
        """``{"format", "arch", "config"}``."""
        return {"format": PRETRAIN_FORMAT, "arch": self.arch, "config": self.config_yaml}

    def load_state_dict(self, state: dict) -> None:
        """Nothing to restore; the marker describes the file."""


def _device(cfg) -> torch.device:
    """MODEL.DEVICE; in a multi-GPU run, this process's GPU (Detectron2's local rank)."""
    device = torch.device(cfg.MODEL.DEVICE)
    if device.type == "cuda" and comm.get_world_size() > 1:
        device = torch.device("cuda", comm.get_local_rank())
    return device


def scaled_lr(cfg) -> float:
    """SOLVER.BASE_LR scaled linearly with the batch: ``BASE_LR * IMS_PER_BATCH / REFERENCE_BATCH``."""
    return cfg.SOLVER.BASE_LR * cfg.SOLVER.IMS_PER_BATCH / cfg.SOLVER.REFERENCE_BATCH


def build_dataset(cfg, is_train: bool):
    """The train or test dataset of ``cfg.DATA``, with the standard transforms."""
    name = cfg.DATA.NAME
    transform = build_transform(name, is_train, cfg.DATA.IMAGE_SIZE, cfg.DATA.TEST_RESIZE or None,
                                crop_scale=tuple(cfg.DATA.TRAIN_CROP_SCALE))
    split = cfg.DATA.TRAIN_SPLIT if is_train else cfg.DATA.TEST_SPLIT
    return build_classification_dataset(name, cfg.DATA.ROOT, split, transform, image_check=cfg.DATA.IMAGE_CHECK)


def check_datasets(cfg, train_set, test_set) -> None:
    """Refuse a run whose splits disagree on their classes, or whose classifier has another
    number of outputs than the training split has classes.

    Raises:
        ValueError: the evaluation split's class list is not the training split's
            (:func:`~rwdet.classification.tiny_imagenet.check_same_classes`, for every dataset),
            or MODEL.NUM_CLASSES differs from the training split's number of classes.
    """
    what = f"DATA.NAME {cfg.DATA.NAME} at {cfg.DATA.ROOT or 'its default root'} ({cfg.DATA.TRAIN_SPLIT} / {cfg.DATA.TEST_SPLIT})"
    check_same_classes(train_set.classes, test_set.classes, what)
    n = len(train_set.classes)
    if cfg.MODEL.NUM_CLASSES != n:
        raise ValueError(f"MODEL.NUM_CLASSES={cfg.MODEL.NUM_CLASSES}, but {what} has {n} classes: "
                         f"set MODEL.NUM_CLASSES {n}")


def build_train_loader(cfg, dataset, start_iter: int) -> DataLoader:
    """Infinite training loader that continues the sample stream at ``start_iter``.

    The sample order and each sample's augmentation are functions of (SEED, position in the
    stream), so a resumed run sees exactly the batches the uninterrupted run would have seen.
    """
    batch = _per_rank(cfg.SOLVER.IMS_PER_BATCH, "SOLVER.IMS_PER_BATCH")
    sampler = ResumableTrainingSampler(len(dataset), shuffle=True, seed=cfg.SEED, start_index=start_iter * batch)
    return DataLoader(
        SeededSamples(dataset), batch_size=batch, sampler=sampler, num_workers=cfg.DATA.NUM_WORKERS,
        pin_memory=cfg.MODEL.DEVICE.startswith("cuda"), drop_last=True,
        persistent_workers=cfg.DATA.NUM_WORKERS > 0,
    )


def iterations_per_epoch(cfg, dataset_size: int) -> int:
    """Iterations in one epoch: ``floor(dataset_size / SOLVER.IMS_PER_BATCH)`` (at least 1)."""
    return max(1, dataset_size // cfg.SOLVER.IMS_PER_BATCH)


@torch.no_grad()
def evaluate_classifier(model: torch.nn.Module, loader, device) -> Dict[str, float]:
    """Top-1 and top-5 accuracy (percent) over ``loader``, summed over all processes.

    Args:
        model: (B, 3, H, W) -> (B, K) logits; put in eval mode here and restored after.
        loader: yields ``(images, labels)``; in a distributed run each process sees a shard
            (Detectron2's ``InferenceSampler``).

    Returns:
        ``{"top1": %, "top5": %, "num_images": n}``; top-5 is top-K when K < 5.
    """
    was_training = model.training
    model.eval()
    correct1 = correct5 = total = 0
    for images, labels in loader:
        logits = model((images, labels)) if isinstance(model, ClassificationModel) else model(images.to(device))
        labels = labels.to(logits.device)
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        correct1 += (top[:, 0] == labels).sum().item()
        correct5 += (top == labels[:, None]).any(dim=1).sum().item()
        total += labels.numel()
    model.train(was_training)
    sums = [sum(x) for x in zip(*comm.all_gather((correct1, correct5, total)))]
    c1, c5, n = sums
    return {"top1": 100.0 * c1 / max(n, 1), "top5": 100.0 * c5 / max(n, 1), "num_images": float(n)}


class ClassificationTrainer(DefaultTrainer):
    """One trainer for every registered classifier (``MODEL.ARCH``): Detectron2's
    ``DefaultTrainer`` with the classifier's builders.

    Call :meth:`resume_or_load` then :meth:`train`, as for ``DefaultTrainer``. The builders:
    :meth:`build_model` (the classifier in a :class:`ClassificationModel`, initialised from
    SEED), :meth:`build_optimizer` (SGD, linearly scaled learning rate),
    :meth:`build_lr_scheduler` (warm-up + half-period cosine), :meth:`build_train_loader` (a
    sample stream that continues where a resumed run stopped) and :meth:`test` (top-1/top-5).
    Hooks: IterationTimer, LRScheduler, PeriodicCheckpointer, EvalHook (every TEST.EVAL_PERIOD
    iterations and at the end) and writers (console with ETA, ``metrics.json``, TensorBoard;
    created at their first write, so that building the trainer and loading its checkpoint write
    nothing to OUTPUT_DIR). Checkpoints hold the classifier's own state dict (keys ``body.*``,
    ``head_conv.*``, ``fc.*``), written atomically, with the graph record of a RandWire
    (:mod:`rwdet.engine.graphs`, shared with the detection trainer) and the
    :class:`PretrainMeta` marker. Multi-GPU / multi-machine through Detectron2's ``launch``;
    each process holds a DistributedDataParallel replica and a shard of every batch (on GPUs or,
    with gloo, on CPUs).

    As Detectron2's ``auto_scale_workers`` does, the trainer runs on a copy of the config with
    two keys resolved: SOLVER.MAX_ITER (from SOLVER.EPOCHS when 0) and SOLVER.AMP.ENABLED
    (:func:`rwdet.engine.autocast.check_amp`: on the CPU only with SOLVER.AMP.DTYPE bfloat16,
    which trains under ``torch.autocast``).

    Attributes:
        net: the classifier, (B, 3, H, W) -> (B, K) logits (what the checkpoints hold).
        train_set, test_set: the datasets of ``cfg.DATA``.
        iters_per_epoch: iterations in one epoch of ``train_set``.
        base_lr: the scaled learning rate (:func:`scaled_lr`).

    Raises:
        ValueError: batch sizes not divisible by the number of processes; bad config values.
        FileNotFoundError: the dataset is missing (the message says where it looked).
    """

    def __init__(self, cfg):
        self.train_set = build_dataset(cfg, is_train=True)
        self.test_set = build_dataset(cfg, is_train=False)  # a missing test split fails here, before any write
        check_datasets(cfg, self.train_set, self.test_set)
        self.iters_per_epoch = iterations_per_epoch(cfg, len(self.train_set))
        self.base_lr = scaled_lr(cfg)
        cfg = cfg.clone()
        cfg.defrost()
        cfg.SOLVER.MAX_ITER = cfg.SOLVER.MAX_ITER or cfg.SOLVER.EPOCHS * self.iters_per_epoch
        amp = check_amp(cfg, _device(cfg))  # on the CPU: bfloat16 autocast, or none
        cfg.SOLVER.AMP.ENABLED = amp  # resolved: float16 on a CPU trains in fp32
        cfg.freeze()
        with ddp_on_cpu(_device(cfg)):  # the step trainer of SOLVER.AMP.DTYPE when amp
            init_with_step_trainer(self, super().__init__, cfg, _device(cfg), amp)

    @property
    def net(self) -> torch.nn.Module:
        """The classifier inside the (possibly DistributedDataParallel) ClassificationModel."""
        model = self.model.module if isinstance(self.model, DistributedDataParallel) else self.model
        return model.net

    @classmethod
    def build_model(cls, cfg) -> ClassificationModel:
        """``build_classifier(cfg)`` on MODEL.DEVICE (channels-last with MODEL.CHANNELS_LAST),
        in a :class:`ClassificationModel` (label smoothing). The initial weights are a function
        of SEED (seeded here, also when used outside ``begin_run``).

        Raises:
            ValueError: an unknown MODEL.ARCH or bad RandWire keys.
        """
        device = _device(cfg)
        seed_all_rng(cfg.SEED)
        net = build_classifier(cfg).to(device)
        if cfg.MODEL.CHANNELS_LAST:  # before the optimizer and checkpointer see the weights
            net = net.to(memory_format=torch.channels_last)
        return ClassificationModel(net, cfg.SOLVER.LABEL_SMOOTHING, cfg.MODEL.CHANNELS_LAST).to(device)

    @classmethod
    def build_optimizer(cls, cfg, model) -> torch.optim.Optimizer:
        """SGD with SOLVER.MOMENTUM, WEIGHT_DECAY, NESTEROV and the scaled learning rate
        (:func:`scaled_lr`) over all of ``model``'s parameters."""
        return torch.optim.SGD(
            model.parameters(), lr=scaled_lr(cfg), momentum=cfg.SOLVER.MOMENTUM,
            weight_decay=cfg.SOLVER.WEIGHT_DECAY, nesterov=cfg.SOLVER.NESTEROV,
        )

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        """Half-period cosine decay to 0 over SOLVER.MAX_ITER, after a linear warm-up of
        SOLVER.WARMUP_ITERS from SOLVER.WARMUP_FACTOR (Detectron2's ``WarmupParamScheduler``)."""
        return LRMultiplier(
            optimizer,
            WarmupParamScheduler(
                CosineParamScheduler(1.0, 0.0), cfg.SOLVER.WARMUP_FACTOR,
                min(1.0, cfg.SOLVER.WARMUP_ITERS / cfg.SOLVER.MAX_ITER),
            ),
            cfg.SOLVER.MAX_ITER,
        )

    def build_train_loader(self, cfg) -> DataLoader:
        """The infinite training loader of ``train_set`` from iteration ``start_iter`` on
        (:func:`build_train_loader`). A method, not Detectron2's classmethod: the loader reuses
        the dataset read in ``__init__`` and continues the stream at the trainer's start; it is
        built again by :meth:`resume_or_load` once the start is known."""
        return build_train_loader(cfg, self.train_set, self.start_iter)

    def build_hooks(self):
        """IterationTimer, LRScheduler, PeriodicCheckpointer (main process), the preemption
        checkpoint (SOLVER.CHECKPOINT_ON_SIGNALS, :mod:`rwdet.engine.preemption`), EvalHook and
        the writers (main process): ``DefaultTrainer.build_hooks`` without PreciseBN, whose keys a
        classification config does not have. The checkpointer is rwdet's
        (:func:`rwdet.engine.graphs.build_checkpointer`) on the classifier itself, with the
        :class:`PretrainMeta` marker."""
        cfg = self.cfg
        self.checkpointer = build_checkpointer(cfg, self.net, self)
        self.checkpointer.add_checkpointable("rwdet_meta", PretrainMeta(cfg.MODEL.ARCH, cfg.dump()))
        ret = [hooks.IterationTimer(), hooks.LRScheduler()]
        if comm.is_main_process():
            ret.append(hooks.PeriodicCheckpointer(self.checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD))

        def test_and_save_results():
            self._last_eval_results = self.test(self.cfg, self.model, test_set=self.test_set)
            return self._last_eval_results

        ret.append(hooks.EvalHook(cfg.TEST.EVAL_PERIOD, test_and_save_results))
        if comm.is_main_process():
            ret.append(hooks.PeriodicWriter(self.build_writers(), period=20))
        return insert_preemption_hook(ret, self.checkpointer, cfg.SOLVER.CHECKPOINT_ON_SIGNALS)

    def build_writers(self):
        """Detectron2's writers, created at their first write (``DeferredWriters``)."""
        return [DeferredWriters(self.cfg.OUTPUT_DIR, self.max_iter)]

    def resume_or_load(self, resume: bool = True) -> None:
        """``DefaultTrainer.resume_or_load`` (MODEL.WEIGHTS, or with ``resume`` the last checkpoint
        of OUTPUT_DIR: model, optimizer, scheduler and iteration), then the data stream
        continued from the start iteration."""
        super().resume_or_load(resume=resume)
        self._trainer.data_loader = self.build_train_loader(self.cfg)
        self._trainer._data_loader_iter_obj = None

    def train(self) -> Dict[str, float]:
        """Log the random graphs' statistics (a RandWire) and the schedule, then train.

        Returns:
            the last evaluation's results (see :meth:`test`), None without one. (Detectron2's
            ``DefaultTrainer.train`` returns them only with TEST.EXPECTED_RESULTS, a detection
            check; the loop itself is the same ``TrainerBase.train``.)
        """
        table = graph_table(self.cfg)
        if table:
            logger.info("Random graphs of the model:\n%s", table)
        logger.info(
            "Training %s for %d iterations (%.2f epochs of %d images, %d iterations each), "
            "batch %d, lr %.4g, starting at iteration %d",
            self.cfg.MODEL.ARCH, self.max_iter, self.max_iter / self.iters_per_epoch,
            len(self.train_set), self.iters_per_epoch, self.cfg.SOLVER.IMS_PER_BATCH,
            self.base_lr, self.start_iter,
        )
        TrainerBase.train(self, self.start_iter, self.max_iter)
        return getattr(self, "_last_eval_results", None)

    @classmethod
    def test(cls, cfg, model, evaluators=None, test_set=None) -> Dict[str, float]:
        """Top-1/top-5 of ``model`` on the test split of ``cfg.DATA``; written (main process) to
        OUTPUT_DIR/eval_results.json with the number of completed training iterations (0 outside
        training).

        Args:
            cfg: the trainer's config.
            model: a :class:`ClassificationModel`, or one wrapped in DistributedDataParallel.
            evaluators: Detectron2's argument; must be None (top-1/top-5 is the evaluation).
            test_set: the test split already read (a trainer's ``test_set``); None reads it
                from ``cfg.DATA``.

        Returns:
            ``{"top1": %, "top5": %, "num_images": n}`` (see :func:`evaluate_classifier`).
        """
        if evaluators is not None:
            raise ValueError("ClassificationTrainer.test computes top-1/top-5; it takes no evaluators")
        if test_set is None:
            test_set = build_dataset(cfg, is_train=False)
        loader = DataLoader(
            test_set, batch_size=_per_rank(cfg.TEST.IMS_PER_BATCH, "TEST.IMS_PER_BATCH"),
            sampler=InferenceSampler(len(test_set)), num_workers=cfg.DATA.NUM_WORKERS,
        )
        model = model.module if isinstance(model, DistributedDataParallel) else model
        results = evaluate_classifier(model, loader, _device(cfg))
        if comm.is_main_process():
            try:  # completed iterations (after training, TrainerBase leaves iter at max_iter)
                done = min(get_event_storage().iter + 1, cfg.SOLVER.MAX_ITER)
            except AssertionError:  # no EventStorage: evaluation outside training
                done = 0
            logger.info("Evaluation after %d iterations: top-1 %.2f%%, top-5 %.2f%% (%d images)",
                        done, results["top1"], results["top5"], results["num_images"])
            path = os.path.join(cfg.OUTPUT_DIR, "eval_results.json")
            report = {"iterations": done, **results}
            atomic_write(path, lambda f: f.write(json.dumps(report, indent=2).encode()))
        return results
