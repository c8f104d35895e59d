#!/usr/bin/env python
"""Train or evaluate a LazyConfig (Python) config: Detectron2's tools/lazyconfig_train_net.py with
rwdet's checkpointer (atomic writes; rwdet pretraining checkpoints in ``train.init_checkpoint``),
the preemption checkpoint (SIGTERM) and an ``eval_results.json``.

    python tools/lazyconfig_train_net.py --config-file configs/COCO-Detection/faster_rcnn_randwire_ws_fpn.py --num-gpus 8
    python tools/lazyconfig_train_net.py --config-file configs/bccd/faster_rcnn_randwire_ws_small_bccd.py \\
        datasets.bccd_root=/path/to/BCCD train.max_iter=300
    python tools/lazyconfig_train_net.py --config-file CONFIG --eval-only train.init_checkpoint=model_final.pth

The command line is Detectron2's (``default_argument_parser``; overrides as ``key=value``, e.g.
``train.output_dir=...``); the config's ``model``, ``dataloader.{train,test,evaluator}``,
``optimizer``, ``lr_multiplier`` and ``train`` are those of Detectron2's
``configs/common/train.py`` conventions (``train.seed`` seeds the run). The model and the
training data are built, and so checked, before anything is written to ``train.output_dir``.
"""

import logging
import os

import rwdet  # noqa: F401  (first: its warning filter must be in place before detectron2 is imported)
from detectron2.config import LazyConfig, instantiate
import torch
from detectron2.engine import (SimpleTrainer, default_argument_parser, default_setup, default_writers, hooks,
                               launch)
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng

from rwdet.engine.autocast import AMP_DTYPES, build_step_trainer
from rwdet.engine.checkpoint import AtomicCheckpointer, load_for_inference
from rwdet.engine.preemption import PreemptionCheckpoint
from rwdet.engine.trainer import save_results

logger = logging.getLogger("detectron2")


def do_test(cfg, model):
    """COCO AP of ``model`` on ``dataloader.test`` (``dataloader.evaluator``), written to
    ``train.output_dir/eval_results.json`` as the YAML path writes it; None without an evaluator."""
    if "evaluator" not in cfg.dataloader:
        return None
    ret = inference_on_dataset(model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator))
    if comm.is_main_process():
        print_csv_format(ret)
        save_results({cfg.dataloader.evaluator.dataset_name: ret}, cfg.train.output_dir)
    return ret


def amp_dtype(cfg) -> str:
    """``train.amp.precision`` ("float16" or "bfloat16", as SOLVER.AMP.DTYPE in the YAML trainers);
    default: float16 on CUDA (Detectron2's AMPTrainer), bfloat16 on a CPU.

    Raises:
        ValueError: an unknown precision, or float16 on a CPU (CPUs autocast to bfloat16 only).
    """
    on_cuda = str(cfg.train.device).startswith("cuda")
    dtype = cfg.train.amp.get("precision", "float16" if on_cuda else "bfloat16")
    if dtype not in AMP_DTYPES:
        raise ValueError(f"train.amp.precision={dtype!r} is unknown; allowed: {', '.join(map(repr, AMP_DTYPES))}")
    if cfg.train.amp.enabled and not on_cuda and dtype != "bfloat16":
        raise ValueError(f"train.amp.precision={dtype!r} on {cfg.train.device}: CPUs autocast to 'bfloat16' only")
    return dtype


def do_train(args, cfg, model, train_loader):
    """Detectron2's loop (SimpleTrainer; with ``train.amp.enabled``, AMPTrainer on CUDA or bf16
    autocast on a CPU: :func:`amp_dtype`) with its hooks, rwdet's AtomicCheckpointer and the
    PreemptionCheckpoint (SIGTERM: a checkpoint at the current iteration, then exit)."""
    cfg.optimizer.params.model = model
    optim = instantiate(cfg.optimizer)
    ddp = dict(cfg.train.ddp)
    if not str(cfg.train.device).startswith("cuda"):
        ddp["device_ids"] = None  # DistributedDataParallel on CPUs (gloo) takes no device ids
    model = create_ddp_model(model, **ddp)
    if cfg.train.amp.enabled:  # AMPTrainer on CUDA, bf16 autocast on a CPU (rwdet.engine.autocast)
        trainer = build_step_trainer(amp_dtype(cfg), model, train_loader, optim, torch.device(cfg.train.device))
        logger.info("Mixed precision: %s in %s", amp_dtype(cfg), type(trainer).__name__)
    else:
        trainer = SimpleTrainer(model, train_loader, optim)
    checkpointer = AtomicCheckpointer(model, cfg.train.output_dir, trainer=trainer)
    trainer.register_hooks([
        hooks.IterationTimer(),
        hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
        hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer) if comm.is_main_process() else None,
        PreemptionCheckpoint(checkpointer, list(cfg.train.get("checkpoint_on_signals", ["SIGTERM"]))),
        hooks.EvalHook(cfg.train.eval_period, lambda: do_test(cfg, model)),
        hooks.PeriodicWriter(default_writers(cfg.train.output_dir, cfg.train.max_iter), period=cfg.train.log_period)
        if comm.is_main_process() else None,
    ])
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
    start_iter = trainer.iter + 1 if args.resume and checkpointer.has_checkpoint() else 0
    trainer.train(start_iter, cfg.train.max_iter)


def main(args):
    """Build (and so check) the model and the data, then set up the run folder and train or
    evaluate."""
    cfg = LazyConfig.apply_overrides(LazyConfig.load(args.config_file), args.opts)
    seed = cfg.train.get("seed", -1)
    seed_all_rng(None if seed < 0 else seed + comm.get_rank())
    model = instantiate(cfg.model)
    model.to(cfg.train.device)
    if args.eval_only:
        default_setup(cfg, args)
        load_for_inference(model, cfg.train.init_checkpoint)  # every tensor from the checkpoint
        return do_test(cfg, create_ddp_model(model))
    train_loader = instantiate(cfg.dataloader.train)
    amp_dtype(cfg)  # checked before anything is written
    os.makedirs(cfg.train.output_dir, exist_ok=True)
    default_setup(cfg, args)
    return do_train(args, cfg, model, train_loader)


def cli(argv=None):
    args = default_argument_parser().parse_args(argv)
    return launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
                  dist_url=args.dist_url, args=(args,))


if __name__ == "__main__":
    cli()
