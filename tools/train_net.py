#!/usr/bin/env python
"""Train and evaluate a detector with a RandWire backbone (Detectron2's train_net, for rwdet).

    python tools/train_net.py --config-file configs/faster_rcnn_randwire_ws.yaml
    python tools/train_net.py --config-file CONFIG --eval-only MODEL.WEIGHTS model_final.pth
    python tools/train_net.py --config-file CONFIG --eval-only MODEL.WEIGHTS model_final.pth \
        MODEL.DEPLOY.RUNTIME openvino      # backbone+FPN in OpenVINO, heads in PyTorch
    python tools/train_net.py --config-file CONFIG --resume          # continue the last run
    python tools/train_net.py --config-file CONFIG --num-gpus 8     # torch.distributed
    python tools/train_net.py --config-file CONFIG SOLVER.MAX_ITER 100 OUTPUT_DIR out/x

Arguments and multi-machine flags (--num-machines, --machine-rank, --dist-url) are Detectron2's
(``default_argument_parser``); training runs through Detectron2's ``DefaultTrainer`` and
``launch``. Everything is checked before anything is written to OUTPUT_DIR: the config, the
datasets (on disk, image headers and end markers, annotations, classes), the model build and the
checkpoint to load: for --eval-only and --resume it must fill every parameter and buffer of the
model (a checkpoint trained with another NUM_CLASSES or architecture is refused).
"""

import logging

import rwdet  # noqa: F401  (first: its warning filter must be in place before detectron2 is imported)
from detectron2.engine import default_argument_parser, launch

from rwdet.data import prepare_datasets
from rwdet.deploy import apply_deploy_runtime, check_deploy_config, needs_calibration
from rwdet.engine import AtomicCheckpointer, Trainer
from rwdet.engine.defaults import begin_run, commit_run, load_config
from rwdet.layers import fold_batchnorm


def main(args):
    """Validate the whole run (config, datasets, model build, checkpoint), then write to
    OUTPUT_DIR (config.yaml, log.txt) and train or evaluate. A refused run writes nothing."""
    cfg = begin_run(load_config(args.config_file, args.opts), args)
    check_deploy_config(cfg)  # --eval-only serving: MODEL.DEPLOY.RUNTIME known and installed, PAD_CHANNELS >= 0
    # On disk, images, boxes, NUM_CLASSES: before the model is built (evaluation: DATASETS.TEST).
    # int8 serving calibrates on DATASETS.TRAIN, so it is checked then too.
    prepare_datasets(cfg, ("TEST",) if args.eval_only and not needs_calibration(cfg) else ("TRAIN", "TEST"))
    logger = logging.getLogger("rwdet")
    if args.eval_only:
        model = Trainer.build_model(cfg)
        # Every parameter and buffer must come from the checkpoint (IncompleteCheckpointError).
        AtomicCheckpointer(model, save_dir=cfg.OUTPUT_DIR, require_complete=True).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        if cfg.TEST.FOLD_BN:  # deploy mode: each BN folded into its conv
            fold_batchnorm(model.eval())
        # MODEL.DEPLOY.RUNTIME: the backbone+FPN exported and run in ONNX Runtime / OpenVINO;
        # MODEL.DEPLOY.PAD_CHANNELS: RandWire widths padded with zero filters first;
        # MODEL.DEPLOY.PRECISION: fp32, bf16 or int8 (NNCF, calibrated on DATASETS.TRAIN)
        model = apply_deploy_runtime(cfg, model)
        commit_run(cfg)
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    commit_run(cfg)
    logger.info("Starting at iteration %d of %d", trainer.start_iter, trainer.max_iter)
    return trainer.train()


def main_and_close(args):
    """:func:`main`, then, when it returns in a run of several processes, a barrier and
    ``torch.distributed.destroy_process_group()``, so that no process exits while another still
    holds the group (seen once: a CPU process aborted at exit after training had finished)."""
    import torch.distributed as dist
    from detectron2.utils import comm

    results = main(args)  # an error propagates as before (no barrier that the others would miss)
    if dist.is_available() and dist.is_initialized() and comm.get_world_size() > 1:
        comm.synchronize()
        dist.destroy_process_group()
    return results


def cli(argv=None):
    args = default_argument_parser().parse_args(argv)
    print("Command Line Args:", args)
    return launch(
        main_and_close,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    cli()
