#!/usr/bin/env python
"""Train and evaluate a detector with a RandWire backbone (Detectron2's train_net, for rwdet).

    python tools/train_net.py --config-file configs/faster_rcnn_randwire_ws.yaml
    python tools/train_net.py --config-file CONFIG --eval-only MODEL.WEIGHTS model_final.pth
    python tools/train_net.py --config-file CONFIG --resume          # continue the last run
    python tools/train_net.py --config-file CONFIG --num-gpus 8     # torch.distributed
    python tools/train_net.py --config-file CONFIG SOLVER.MAX_ITER 100 OUTPUT_DIR out/x

Arguments and multi-machine flags (--num-machines, --machine-rank, --dist-url) are Detectron2's
(``default_argument_parser``); training runs through Detectron2's ``DefaultTrainer`` and
``launch``.
"""

import logging

from detectron2.engine import default_argument_parser, launch

from rwdet.data import register_datasets_from_config
from rwdet.engine import AtomicDetectionCheckpointer, Trainer
from rwdet.engine.defaults import load_config, setup_run


def setup(args):
    cfg = load_config(args.config_file, args.opts)
    return setup_run(cfg, args)


def main(args):
    cfg = setup(args)
    register_datasets_from_config(cfg)
    logger = logging.getLogger("rwdet")
    if args.eval_only:
        model = Trainer.build_model(cfg)
        AtomicDetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    logger.info("Starting at iteration %d of %d", trainer.start_iter, trainer.max_iter)
    return trainer.train()


def cli(argv=None):
    args = default_argument_parser().parse_args(argv)
    print("Command Line Args:", args)
    return launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    cli()
