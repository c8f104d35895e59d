#!/usr/bin/env python
"""Draw a trained detector's detections on your images (Detectron2's demo/demo.py, for rwdet).

    python tools/demo.py --config-file output/bccd_randwire_ws_small/config.yaml \\
        --input my_photo.jpg --output out/ MODEL.WEIGHTS output/bccd_randwire_ws_small/model_final.pth
    python tools/demo.py --config-file CONFIG --input 'imgs/*.jpg' imgs2/ --output drawn/ \\
        --confidence-threshold 0.3 MODEL.WEIGHTS model_final.pth
    python tools/demo.py --config-file CONFIG --input photo.jpg --output out/ \
        MODEL.WEIGHTS model_final.pth MODEL.DEPLOY.RUNTIME openvino   # backbone+FPN in OpenVINO

--input takes files, globs or folders; --output a folder (one drawing per input, same file
name) or, for a single input, a file. Trailing KEY VALUE pairs override the config, as in
tools/train_net.py (``--opts KEY VALUE ...``, Detectron2's demo spelling, works too). Class names
come from the config's dataset (DATASETS.TEST, registered from DATASETS.BCCD_ROOT /
DATASETS.COCO_JSON as tools/train_net.py does).
"""

import argparse
import os
import sys


def get_parser():
    """The demo's argparse parser (Detectron2's demo options, train_net's trailing overrides)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, metavar="FILE", help="detection config (a run's config.yaml)")
    p.add_argument("--input", nargs="+", required=True, help="image files, globs (quote them) or folders")
    p.add_argument("--output", default="output/demo",
                   help="folder for the drawings (default output/demo), or a file for a single input")
    p.add_argument("--confidence-threshold", type=float, default=0.5,
                   help="minimum score of a drawn detection, in [0, 1] (default 0.5)")
    p.add_argument("--opts", dest="flag_opts", nargs=argparse.REMAINDER, default=[],
                   help="KEY VALUE overrides (Detectron2's demo spelling)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides, e.g. MODEL.WEIGHTS model_final.pth")
    return p


def setup_cfg(args):
    """The frozen config: --config-file, the overrides, then --confidence-threshold as every
    head's test score threshold (as Detectron2's demo). Raises as ``load_config``."""
    from rwdet.engine.defaults import load_config

    thr = args.confidence_threshold
    opts = list(args.opts) + list(args.flag_opts)
    opts += ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", str(thr), "MODEL.RETINANET.SCORE_THRESH_TEST", str(thr),
             "MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH", str(thr)]
    return load_config(args.config_file, opts)


def main(argv=None):
    """Check the arguments (exit 2 with a message on bad ones), then draw every input; returns 0.
    Weights that do not fill the model: exit 1 with one line naming the tensors, nothing drawn."""
    from rwdet.engine.demo import expand_inputs, run_demo  # first: rwdet's warning filter precedes detectron2
    from rwdet.config import split_trailing_overrides
    from detectron2.utils.logger import setup_logger

    parser = get_parser()
    args = parser.parse_args(argv)
    # `--input a.jpg MODEL.WEIGHTS w.pth`: the overrides that --input swallowed
    args.input, args.opts = split_trailing_overrides(args.input, args.opts)
    if not 0.0 <= args.confidence_threshold <= 1.0:
        parser.error(f"--confidence-threshold {args.confidence_threshold} is outside [0, 1]")
    if not os.path.isfile(args.config_file):
        parser.error(f"--config-file {args.config_file!r} does not exist")
    if (len(args.opts) + len(args.flag_opts)) % 2:
        parser.error(f"overrides must be KEY VALUE pairs, got an odd number: {args.opts + args.flag_opts}")
    try:
        inputs = expand_inputs(args.input)
    except (FileNotFoundError, ValueError) as e:
        parser.error(str(e))
    setup_logger(name="rwdet")
    cfg = setup_cfg(args)
    if not cfg.MODEL.WEIGHTS:
        parser.error("MODEL.WEIGHTS is not set: add MODEL.WEIGHTS path/to/model_final.pth (a trained detector)")
    from rwdet.data import prepare_datasets
    from rwdet.deploy import apply_deploy_runtime, check_deploy_config, needs_calibration
    from rwdet.engine.checkpoint import IncompleteCheckpointError

    try:
        check_deploy_config(cfg)
        if needs_calibration(cfg):  # int8 calibrates on DATASETS.TRAIN: checked before anything is drawn
            prepare_datasets(cfg, ("TRAIN",))
    except (ValueError, ImportError, FileNotFoundError) as e:
        parser.error(str(e))
    try:
        # MODEL.DEPLOY.RUNTIME: the backbone+FPN runs in ONNX Runtime / OpenVINO, the heads in PyTorch
        done = run_demo(cfg, inputs, args.output, prepare_model=lambda m: apply_deploy_runtime(cfg, m))
    except IncompleteCheckpointError as e:  # one line, not a traceback: nothing was drawn
        sys.exit(f"tools/demo.py: error: {e}")
    for src, dst, n in done:
        print(f"{src}: {n} detections -> {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
