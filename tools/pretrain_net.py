#!/usr/bin/env python
"""Pretrain a classifier (RandWire or ResNet-50) on ImageNet-style data: rwdet's shared trainer.

    python tools/pretrain_net.py --config-file configs/imagenet/randwire_ws_c109.yaml --num-gpus 8 \
        DATA.ROOT /path/to/imagenet
    python tools/pretrain_net.py --config-file configs/fashion_mnist/randwire_ws_small.yaml
    python tools/pretrain_net.py --config-file CONFIG --resume        # continue where it stopped
    python tools/pretrain_net.py --config-file CONFIG --eval-only MODEL.WEIGHTS ckpt.pth

The command line is Detectron2's (``default_argument_parser``: --num-gpus, --num-machines,
--machine-rank, --dist-url, trailing KEY VALUE overrides); processes start through Detectron2's
``launch`` (NCCL on GPUs, gloo on CPUs). The checkpoints (OUTPUT_DIR/model_final.pth) load
into the detector through MODEL.WEIGHTS of a detection config.
"""

import logging

import rwdet  # noqa: F401  (first: its warning filter must be in place before detectron2 is imported)
from detectron2.engine import default_argument_parser, launch

from rwdet.classification.config import load_cls_config
from rwdet.classification.trainer import ClassificationTrainer
from rwdet.engine.checkpoint import load_for_inference
from rwdet.engine.defaults import begin_run, commit_run


def main(args):
    """Validate the run (config, data, model build, checkpoint), then write to OUTPUT_DIR and
    train or evaluate. A refused run writes nothing."""
    cfg = begin_run(load_cls_config(args.config_file, args.opts), args)
    logging.getLogger("rwdet").info("Command line: %s", args)  # after begin_run: a handler now exists
    trainer = ClassificationTrainer(cfg)
    if args.eval_only:
        # Every parameter and buffer must come from the checkpoint (IncompleteCheckpointError).
        load_for_inference(trainer.net, cfg.MODEL.WEIGHTS, trainer.checkpointer)
        commit_run(cfg)
        return trainer.test(trainer.cfg, trainer.model, test_set=trainer.test_set)
    trainer.resume_or_load(resume=args.resume)
    commit_run(cfg)
    return trainer.train()


def cli(argv=None):
    args = default_argument_parser().parse_args(argv)
    return launch(
        main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
        dist_url=args.dist_url, args=(args,),
    )


if __name__ == "__main__":
    cli()
