#!/usr/bin/env python
"""Export a trained detector for deployment (Detectron2's tools/deploy/export_model.py, for rwdet).

    python tools/export_model.py --config-file output/bccd_randwire/config.yaml \\
        --format onnx --export-method tracing --output exported/ \\
        MODEL.WEIGHTS output/bccd_randwire/model_final.pth
    python tools/export_model.py --config-file CONFIG --format openvino --part backbone \\
        --output exported_bb/ --run-eval MODEL.WEIGHTS model_final.pth
    python tools/export_model.py --config-file CONFIG --format openvino --part backbone --precision int8 \\
        --output exported_int8/ --run-eval MODEL.WEIGHTS model_final.pth   # NNCF int8 IR, its COCO AP

--format onnx | openvino | torchscript; --export-method tracing (Detectron2's TracingAdapter;
caffe2_tracing and scripting are not supported); --part model (default: the whole detector, as
upstream) or backbone (the backbone+FPN alone: image batch -> p2..p6, for serving with
Detectron2's heads in PyTorch, see MODEL.DEPLOY.RUNTIME). BatchNorm is folded before export.
--precision fp32 (default) | bf16 | int8: the precision the export is served at. bf16 keeps the
f32 file and records bf16 in backbone.json (OpenVINO's bf16 hint, TorchScript autocast; not
ONNX Runtime); int8 (--format openvino --part backbone) quantizes the IR with NNCF, calibrated
on the first MODEL.DEPLOY.CALIBRATION_IMAGES images of DATASETS.TRAIN (default 300; the number
used goes into backbone.json). Serve an export with MODEL.DEPLOY.BACKBONE_EXPORT.
--sample-image: the image traced (default: the first image of DATASETS.TEST). --run-eval:
COCO AP of the exported model, run in its runtime (--runtime; default onnxruntime for onnx,
openvino for openvino, torchscript for torchscript), on every DATASETS.TEST dataset, written
to OUTPUT/eval_results.json. Trailing KEY VALUE pairs override the config. Everything (config,
checkpoint: every parameter must load, sample image, datasets) is checked before anything is
written to --output. docs/DEPLOY.md explains the formats and the parity measured.
"""

import argparse
import logging
import os
import sys


def get_parser():
    """The argparse parser: Detectron2's export_model options plus --part and --runtime."""
    from rwdet.deploy import FORMATS, PARTS, PRECISIONS, RUNTIMES

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, metavar="FILE", help="detection config (a run's config.yaml)")
    p.add_argument("--format", choices=FORMATS, default="onnx", help="output format (default onnx)")
    p.add_argument("--export-method", choices=["tracing"], default="tracing",
                   help="how to export: tracing (Detectron2's TracingAdapter), the only method here")
    p.add_argument("--part", choices=PARTS, default="model",
                   help="model: the whole detector (default); backbone: the backbone+FPN alone")
    p.add_argument("--output", required=True, metavar="DIR", help="folder for the exported model (created)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="served precision: fp32 (default), bf16 (recorded; OpenVINO or TorchScript), int8 (OpenVINO "
                        "IR quantized by NNCF on DATASETS.TRAIN images; --part backbone)")
    p.add_argument("--sample-image", default=None, metavar="FILE",
                   help="image to trace with (default: the first image of DATASETS.TEST)")
    p.add_argument("--run-eval", action="store_true",
                   help="evaluate the exported model (COCO AP) on DATASETS.TEST in its runtime")
    p.add_argument("--runtime", choices=sorted(RUNTIMES), default=None,
                   help="runtime for --run-eval (default: the format's: onnx->onnxruntime, openvino->openvino, "
                        "torchscript->torchscript; openvino also runs onnx)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides, e.g. MODEL.WEIGHTS model_final.pth")
    return p


def check_args(parser, args):
    """Everything that can be checked before the model is built; exits 2 with a message."""
    from rwdet.deploy import DEFAULT_RUNTIME, RUNTIMES, check_precision, check_runtime

    if not os.path.isfile(args.config_file):
        parser.error(f"--config-file {args.config_file!r} does not exist")
    if args.sample_image is not None and not os.path.isfile(args.sample_image):
        parser.error(f"--sample-image {args.sample_image!r} does not exist")
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        parser.error(f"--output {args.output!r} is a file; give a folder")
    if len(args.opts) % 2:
        parser.error(f"overrides must be KEY VALUE pairs, got an odd number: {args.opts}")
    args.runtime = args.runtime or DEFAULT_RUNTIME[args.format]
    if args.format not in RUNTIMES[args.runtime]:
        parser.error(f"--runtime {args.runtime} cannot run --format {args.format}; allowed: "
                     f"{[r for r, f in RUNTIMES.items() if args.format in f]}")
    if args.precision == "int8" and (args.format, args.part) != ("openvino", "backbone"):
        parser.error(f"--precision int8 quantizes the backbone+FPN as an OpenVINO IR: use --format openvino --part "
                     f"backbone (got --format {args.format} --part {args.part})")
    try:
        check_precision(args.precision, args.runtime, key="--precision")
    except ValueError as e:
        parser.error(str(e))
    try:
        check_runtime({"onnx": "onnxruntime"}.get(args.format, args.format), key="--format")
        if args.run_eval:
            check_runtime(args.runtime, key="--runtime")
    except ImportError as e:
        parser.error(str(e))


def sample_image(cfg, path):
    """(3, H, W) float32 image in cfg.INPUT.FORMAT, resized as at test time: ``path`` read and
    resized as Detectron2's ``DefaultPredictor`` does, or the first image of DATASETS.TEST."""
    import torch
    from detectron2.data import build_detection_test_loader, detection_utils
    from detectron2.data import transforms as T

    if path is None:
        item = next(iter(build_detection_test_loader(cfg, cfg.DATASETS.TEST[0])))[0]
        return item["image"].to(torch.float32)
    image = detection_utils.read_image(path, format=cfg.INPUT.FORMAT)
    aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST)
    image = aug.get_transform(image).apply_image(image)
    return torch.as_tensor(image.astype("float32").transpose(2, 0, 1))


def evaluate(cfg, model, output):
    """COCO AP of ``model`` (a Detectron2 model or a callable of the same interface) on every
    DATASETS.TEST dataset (Detectron2's ``COCOEvaluator``, ``inference_on_dataset``); writes
    ``output/inference/<dataset>/`` and ``output/eval_results.json``. Returns
    ``{dataset: {"bbox": {metric: value}}}``."""
    from detectron2.data import build_detection_test_loader
    from detectron2.evaluation import COCOEvaluator, inference_on_dataset

    from rwdet.engine.trainer import format_results, save_results

    results = {}
    for dataset in cfg.DATASETS.TEST:
        evaluator = COCOEvaluator(dataset, output_dir=os.path.join(output, "inference", dataset), use_fast_impl=False)
        results[dataset] = inference_on_dataset(model, build_detection_test_loader(cfg, dataset), evaluator)
    logging.getLogger("rwdet").info("Evaluation of the exported model:\n%s", format_results(results))
    save_results(results, output)
    return results


def main(argv=None):
    """Check everything, export, and evaluate with --run-eval. Returns the evaluation results
    (``{dataset: {"bbox": ...}}``) or ``{}``; exits 2 on bad input, before writing anything."""
    import rwdet  # noqa: F401  (first: its warning filter must be in place before detectron2 is imported)
    from detectron2.modeling import build_model
    from detectron2.utils.logger import setup_logger

    from rwdet.data import prepare_datasets
    from rwdet.deploy import (
        ExportedDetector, RuntimeBackbone, calibration_batches, export_backbone, export_model, prepare_for_export,
    )
    from rwdet.engine.checkpoint import load_for_inference
    from rwdet.engine.defaults import load_config

    parser = get_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    setup_logger(name="rwdet")
    setup_logger(name="detectron2")
    logger = logging.getLogger("rwdet")
    try:
        cfg = load_config(args.config_file, list(args.opts) + ["DATALOADER.NUM_WORKERS", "0"])
        if not cfg.MODEL.WEIGHTS:
            raise ValueError("MODEL.WEIGHTS is not set: add MODEL.WEIGHTS path/to/model_final.pth (a trained detector)")
        if not os.path.isfile(cfg.MODEL.WEIGHTS):
            raise FileNotFoundError(f"MODEL.WEIGHTS={cfg.MODEL.WEIGHTS!r} does not exist")
        if (args.run_eval or args.sample_image is None) and not cfg.DATASETS.TEST:
            raise ValueError("DATASETS.TEST is empty: --run-eval (and tracing without --sample-image) needs a "
                             "test dataset, e.g. DATASETS.TEST \"('bccd_test',)\" DATASETS.BCCD_ROOT path/to/bccd")
        # checked before the model is built: DATASETS.TEST to trace on or evaluate, DATASETS.TRAIN
        # for int8 calibration (calibration_batches then reads the checked records)
        splits = (("TEST",) if cfg.DATASETS.TEST and (args.run_eval or args.sample_image is None) else ()) + (
            ("TRAIN",) if args.precision == "int8" else ())
        if splits:
            prepare_datasets(cfg, splits)
        model = build_model(cfg)
        load_for_inference(model, cfg.MODEL.WEIGHTS)  # every parameter and buffer, or refused
        prepare_for_export(model.cpu(), cfg.MODEL.DEPLOY.PAD_CHANNELS)  # BN folded; widths padded if asked
        image = sample_image(cfg, args.sample_image)
        # int8: DATASETS.TRAIN's first CALIBRATION_IMAGES images, checked and read before writing
        calibration = (calibration_batches(cfg, model, cfg.MODEL.DEPLOY.CALIBRATION_IMAGES)
                       if args.precision == "int8" else None)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        parser.error(str(e))
    logger.info("Exporting the %s as %s (tracing) to %s", "whole detector" if args.part == "model" else
                "backbone+FPN", args.format, args.output)
    if args.part == "model":
        if args.format == "openvino":
            logger.warning("The whole detector in OpenVINO pads some image sizes 32 px further than PyTorch "
                           "(docs/DEPLOY.md, known limit): its detections differ. For parity, serve OpenVINO "
                           "with --part backbone or MODEL.DEPLOY.RUNTIME openvino")
        path, adapter = export_model(model, image, args.format, args.output)
        exported = (ExportedDetector(path, args.runtime, adapter.outputs_schema, precision=args.precision)
                    if args.run_eval else None)
    else:
        import torch

        with torch.no_grad():
            batch = model.preprocess_image([{"image": image}]).tensor  # normalised, padded
        from rwdet.utils.io import file_sha256

        path = export_backbone(model.backbone, batch, args.format, args.output, args.precision, calibration,
                               weights_sha256=file_sha256(cfg.MODEL.WEIGHTS))
        if args.run_eval:
            model.backbone = RuntimeBackbone.from_export(args.output, args.runtime)
        exported = model
    print(f"exported {args.part} ({args.format}, {args.precision}) -> {path}")
    if not args.run_eval:
        return {}
    logger.info("Evaluating the exported %s in %s at %s", args.part, args.runtime, args.precision)
    return evaluate(cfg, exported, args.output)


if __name__ == "__main__":
    main()
    sys.exit(0)
