"""The shared classification trainer (ImageNet pretraining), built from Detectron2's engine.

Structure follows Detectron2's ``DefaultTrainer`` (``TrainerBase`` running a ``SimpleTrainer``
or ``AMPTrainer`` step, with hooks) and pycls's recipe: SGD with momentum, linearly scaled
learning rate, half-period cosine decay (fvcore ``CosineParamScheduler``), label smoothing,
top-1/top-5 evaluation, atomic periodic checkpoints and exact resumption.
"""

from __future__ import annotations

import json
import logging
import os
import weakref
from typing import Dict

import torch
from detectron2.data.samplers import InferenceSampler
from detectron2.engine import AMPTrainer, SimpleTrainer, TrainerBase, hooks
from detectron2.solver import LRMultiplier, WarmupParamScheduler
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from fvcore.common.param_scheduler import CosineParamScheduler
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from ..analysis.stats import format_statistics
from ..config import randwire_graph_specs, randwire_stage_specs
from ..engine.checkpoint import AtomicDetectionCheckpointer, GraphSpecRecord, atomic_write
from ..engine.defaults import DeferredWriters
from ..engine.transfer import PretrainMeta
from .data import ResumableTrainingSampler, SeededSamples, build_classification_dataset, build_transform
from .model import ClassificationModel, build_classifier

__all__ = ["ClassificationTrainer", "evaluate_classifier"]

logger = logging.getLogger(__name__)


def _per_rank(total: int, what: str) -> int:
    world = comm.get_world_size()
    if total % world:
        raise ValueError(f"{what}={total} must be divisible by the number of processes ({world})")
    return total // world


def build_dataset(cfg, is_train: bool):
    """The train or test dataset of ``cfg.DATA``, with the standard transforms."""
    name = cfg.DATA.NAME
    transform = build_transform(name, is_train, cfg.DATA.IMAGE_SIZE, cfg.DATA.TEST_RESIZE or None)
    split = cfg.DATA.TRAIN_SPLIT if is_train else cfg.DATA.TEST_SPLIT
    return build_classification_dataset(name, cfg.DATA.ROOT, split, transform)


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


class ClassificationTrainer(TrainerBase):
    """One trainer for every registered classifier (``MODEL.ARCH``); Detectron2 engine parts.

    Call :meth:`resume_or_load` then :meth:`train`. Hooks: IterationTimer, LRScheduler
    (warm-up + half-period cosine), PeriodicCheckpointer (atomic writes), EvalHook (top-1,
    top-5 every TEST.EVAL_PERIOD iterations and at the end) and writers (console with ETA,
    ``metrics.json``, TensorBoard; created at their first write, so that building the trainer
    and loading its checkpoint write nothing to OUTPUT_DIR). Multi-GPU / multi-machine through Detectron2's ``launch``;
    each process holds a DistributedDataParallel replica and a shard of every batch.

    Raises:
        ValueError: batch sizes not divisible by the number of processes; bad config values.
        FileNotFoundError: the dataset is missing (the message says where it looked).
    """

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        device = torch.device(cfg.MODEL.DEVICE)
        if device.type == "cuda" and comm.get_world_size() > 1:
            device = torch.device("cuda", comm.get_local_rank())
        self.device = device
        # Model initialisation is a function of SEED (also when used outside default_setup).
        seed_all_rng(cfg.SEED)
        self.train_set = build_dataset(cfg, is_train=True)
        self.test_set = build_dataset(cfg, is_train=False)
        net = build_classifier(cfg).to(device)
        if cfg.MODEL.CHANNELS_LAST:  # before the optimizer and checkpointer see the weights
            net = net.to(memory_format=torch.channels_last)
        self.net = net
        model = ClassificationModel(net, cfg.SOLVER.LABEL_SMOOTHING, cfg.MODEL.CHANNELS_LAST).to(device)
        if comm.get_world_size() > 1:
            model = DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False
            )
        self.base_lr = cfg.SOLVER.BASE_LR * cfg.SOLVER.IMS_PER_BATCH / cfg.SOLVER.REFERENCE_BATCH
        optimizer = torch.optim.SGD(
            net.parameters(), lr=self.base_lr, momentum=cfg.SOLVER.MOMENTUM,
            weight_decay=cfg.SOLVER.WEIGHT_DECAY, nesterov=cfg.SOLVER.NESTEROV,
        )
        self.iters_per_epoch = iterations_per_epoch(cfg, len(self.train_set))
        self.max_iter = cfg.SOLVER.MAX_ITER or cfg.SOLVER.EPOCHS * self.iters_per_epoch
        self.start_iter = 0
        use_amp = cfg.SOLVER.AMP and device.type == "cuda"
        # The data loader is attached in resume_or_load, once the start iteration is known.
        self._trainer = (AMPTrainer if use_amp else SimpleTrainer)(model, None, optimizer)
        self.scheduler = LRMultiplier(
            optimizer,
            WarmupParamScheduler(
                CosineParamScheduler(1.0, 0.0), cfg.SOLVER.WARMUP_FACTOR,
                min(1.0, cfg.SOLVER.WARMUP_ITERS / self.max_iter),
            ),
            self.max_iter,
        )
        self.checkpointer = AtomicDetectionCheckpointer(
            net, cfg.OUTPUT_DIR, trainer=weakref.proxy(self)
        )
        self.checkpointer.add_checkpointable("rwdet_meta", PretrainMeta(cfg.MODEL.ARCH, cfg.dump()))
        if cfg.MODEL.ARCH == "randwire":
            self.checkpointer.add_checkpointable("randwire_graphs", GraphSpecRecord(randwire_graph_specs(cfg)))
        self.register_hooks(self.build_hooks())

    # Attributes the Detectron2 hooks read from their trainer.
    @property
    def model(self):
        return self._trainer.model

    @property
    def optimizer(self):
        return self._trainer.optimizer

    @property
    def data_loader(self):
        return self._trainer.data_loader

    def build_hooks(self):
        cfg = self.cfg
        ret = [hooks.IterationTimer(), hooks.LRScheduler()]
        if comm.is_main_process():
            ret.append(hooks.PeriodicCheckpointer(self.checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD))
        ret.append(hooks.EvalHook(cfg.TEST.EVAL_PERIOD, self.test))
        if comm.is_main_process():
            ret.append(hooks.PeriodicWriter([DeferredWriters(cfg.OUTPUT_DIR, self.max_iter)], period=20))
        return ret

    def resume_or_load(self, resume: bool = True) -> None:
        """Load MODEL.WEIGHTS, or with ``resume`` the last checkpoint of OUTPUT_DIR (model,
        optimizer, scheduler and iteration), and continue the data stream from there."""
        self.checkpointer.resume_or_load(self.cfg.MODEL.WEIGHTS, resume=resume)
        if resume and self.checkpointer.has_checkpoint():
            self.start_iter = self.iter + 1
        self._trainer.data_loader = build_train_loader(self.cfg, self.train_set, self.start_iter)
        self._trainer._data_loader_iter_obj = None

    def train(self):
        if self.cfg.MODEL.ARCH == "randwire":
            logger.info("Random graphs of the model:\n%s", format_statistics(randwire_stage_specs(self.cfg)))
        logger.info(
            "Training %s for %d iterations (%.2f epochs of %d images, %d iterations each), "
            "batch %d, lr %.4g, starting at iteration %d",
            self.cfg.MODEL.ARCH, self.max_iter, self.max_iter / self.iters_per_epoch,
            len(self.train_set), self.iters_per_epoch, self.cfg.SOLVER.IMS_PER_BATCH,
            self.base_lr, self.start_iter,
        )
        super().train(self.start_iter, self.max_iter)
        return getattr(self, "_last_eval_results", None)

    def run_step(self):
        self._trainer.iter = self.iter
        self._trainer.run_step()

    def state_dict(self):
        ret = super().state_dict()
        ret["_trainer"] = self._trainer.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self._trainer.load_state_dict(state_dict["_trainer"])

    def test(self) -> Dict[str, float]:
        """Top-1/top-5 on the test split; written to OUTPUT_DIR/eval_results.json with the number
        of completed training iterations."""
        loader = DataLoader(
            self.test_set, batch_size=_per_rank(self.cfg.TEST.IMS_PER_BATCH, "TEST.IMS_PER_BATCH"),
            sampler=InferenceSampler(len(self.test_set)), num_workers=self.cfg.DATA.NUM_WORKERS,
        )
        model = self.model.module if isinstance(self.model, DistributedDataParallel) else self.model
        results = evaluate_classifier(model, loader, self.device)
        if comm.is_main_process():
            # Completed iterations (after training, TrainerBase leaves iter at max_iter).
            done = min(self.storage.iter + 1, self.max_iter) if hasattr(self, "storage") else self.iter
            logger.info("Evaluation after %d iterations: top-1 %.2f%%, top-5 %.2f%% (%d images)",
                        done, results["top1"], results["top5"], results["num_images"])
            path = os.path.join(self.cfg.OUTPUT_DIR, "eval_results.json")
            report = {"iterations": done, **results}
            atomic_write(path, lambda f: f.write(json.dumps(report, indent=2).encode()))
        self._last_eval_results = results
        return results
