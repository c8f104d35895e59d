#!/usr/bin/env python
"""Graph damage (paper sec. 5, figure 7): remove one node or one edge of a trained RandWire at
evaluation time, without retraining, and measure the loss in top-1 (classifier) or box AP
(detector).

    # classifier: every node and edge of every random stage, on 2,000 test images
    python tools/graph_damage.py --config-file configs/fashion_mnist/randwire_ws_small.yaml \
        --weights output/fashion_mnist/randwire_ws_small/model_final.pth --max-images 2000 \
        --output-dir output/damage/ws
    # detector: a seeded sample of 20 nodes, box AP on the config's test set
    python tools/graph_damage.py --config-file configs/bccd/faster_rcnn_randwire_ws_small_bccd.yaml \
        --weights output/bccd/model_final.pth --kind node --sample 20 --output-dir output/damage/det \
        DATASETS.BCCD_ROOT /path/to/bccd
    # one figure with a row of panels per generator, from several sweeps
    python tools/graph_damage.py --plot output/damage/ws/damage.csv output/damage/er/damage.csv \
        --output damage.png

Writes OUTPUT_DIR/damage.csv (one row per removal: stage, node or edge, output degree /
target in-degree, baseline, value, drop) and damage.png. What removal computes (a removed node
or edge contributes zero; a node left without inputs is removed too) is documented in
``RandWireStage.set_damage``. Trailing ``KEY VALUE`` pairs override the config.
"""

import argparse
import logging
import os
import sys

import torch

from rwdet.analysis.common import load_any_config
from rwdet.analysis.damage import (
    DAMAGE_KINDS, damage_targets, find_stages, plot_damage, read_damage_csv, run_damage_sweep,
    write_damage_csv,
)

logger = logging.getLogger("rwdet.graph_damage")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", help="classification or detection config of the trained model")
    p.add_argument("--weights", help="trained checkpoint (default: MODEL.WEIGHTS, else OUTPUT_DIR/model_final.pth)")
    p.add_argument("--kind", nargs="+", choices=DAMAGE_KINDS, default=list(DAMAGE_KINDS),
                   help="what to remove, one at a time (default: node edge)")
    p.add_argument("--stages", nargs="+", help="random stages to damage (default: all)")
    p.add_argument("--sample", type=int, help="a seeded sample of this many removals per kind (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of --sample")
    p.add_argument("--max-images", type=int, help="classifier: evaluate on the first N test images (default: all)")
    p.add_argument("--output-dir", help="where damage.csv and damage.png go (default: OUTPUT_DIR/damage)")
    p.add_argument("--plot", nargs="+", metavar="CSV", help="only plot these damage.csv files together")
    p.add_argument("--output", help="with --plot: the figure's path (.png or .svg)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = p.parse_args(argv)
    if args.plot:
        if not args.output:
            p.error("--plot needs --output FIGURE")
        missing = [c for c in args.plot if not os.path.isfile(c)]
        if missing:
            p.error(f"--plot: no such file(s): {missing}")
    elif not args.config_file:
        p.error("give --config-file (with --weights) to run a sweep, or --plot CSV... --output FIGURE")
    if args.sample is not None and args.sample < 1:
        p.error(f"--sample {args.sample}: must be >= 1")
    if args.max_images is not None and args.max_images < 1:
        p.error(f"--max-images {args.max_images}: must be >= 1")
    return args


def classification_evaluator(cfg, weights, max_images):
    """(model, evaluate, metric): the trained classifier, a function giving its top-1 (%) on the
    first ``max_images`` test images (preprocessed once and kept in memory), and the metric's
    name, ``"top1"``."""
    from torch.utils.data import DataLoader, Subset

    from rwdet.classification.model import build_classifier
    from rwdet.classification.trainer import build_dataset, evaluate_classifier
    from rwdet.engine.checkpoint import AtomicCheckpointer

    device = torch.device(cfg.MODEL.DEVICE)
    net = build_classifier(cfg).to(device).eval()
    AtomicCheckpointer(net).load(weights, checkpointables=[])
    test_set = build_dataset(cfg, is_train=False)
    if max_images:
        test_set = Subset(test_set, range(min(max_images, len(test_set))))
    batches = list(DataLoader(test_set, batch_size=cfg.TEST.IMS_PER_BATCH, num_workers=cfg.DATA.NUM_WORKERS))

    def evaluate(model):
        return evaluate_classifier(model, batches, device)["top1"]

    return net, evaluate, "top1"


def detection_evaluator(cfg, weights):
    """(model, evaluate, metric): the trained detector, a function giving its box AP on the
    first test dataset (Detectron2's COCOEvaluator through rwdet's Trainer), and the metric's
    name, ``"AP"``."""
    from rwdet.data import register_datasets_from_config
    from rwdet.engine.checkpoint import AtomicCheckpointer
    from rwdet.engine.trainer import Trainer

    register_datasets_from_config(cfg)
    model = Trainer.build_model(cfg).eval()
    AtomicCheckpointer(model).load(weights, checkpointables=[])

    def evaluate(m):
        results = Trainer.test(cfg, m)
        first = results[cfg.DATASETS.TEST[0]] if cfg.DATASETS.TEST[0] in results else results
        return first["bbox"]["AP"]

    return model, evaluate, "AP"


def main(argv=None):
    from detectron2.utils.logger import setup_logger

    args = parse_args(argv)
    setup_logger(name="rwdet")
    setup_logger(name="detectron2")
    if args.plot:
        rows = [r for path in args.plot for r in read_damage_csv(path)]
        print(plot_damage(rows, args.output))
        return 0
    task, cfg = load_any_config(args.config_file, args.opts)
    weights = args.weights or cfg.MODEL.WEIGHTS or os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
    if not os.path.isfile(weights):
        raise SystemExit(f"error: weights {weights!r} do not exist; pass --weights CHECKPOINT of a trained model")
    out_dir = args.output_dir or os.path.join(cfg.OUTPUT_DIR, "damage")
    if task == "classification":
        model, evaluate, metric = classification_evaluator(cfg, weights, args.max_images)
    else:
        model, evaluate, metric = detection_evaluator(cfg, weights)
    stages = find_stages(model)
    if args.stages:
        unknown = sorted(set(args.stages) - set(stages))
        if unknown:
            raise SystemExit(f"error: --stages {unknown} are not random stages of this model; allowed: {sorted(stages)}")
        stages = {k: v for k, v in stages.items() if k in args.stages}
    targets = [t for kind in args.kind for t in damage_targets(stages, kind, args.sample, args.seed)]
    with torch.no_grad():
        baseline = float(evaluate(model))
        logger.info("Intact model: %s %.2f; %d removals to evaluate", metric, baseline, len(targets))
        rows = run_damage_sweep(model, evaluate, targets, metric, baseline)
    os.makedirs(out_dir, exist_ok=True)
    csv_path = write_damage_csv(rows, os.path.join(out_dir, "damage.csv"))
    png_path = plot_damage(rows, os.path.join(out_dir, "damage.png"), title=f"{args.config_file}: {metric} loss")
    print(f"intact {metric}: {baseline:.2f}")
    for kind in args.kind:
        drops = [r["drop"] for r in rows if r["kind"] == kind]
        if drops:
            worst = max((r for r in rows if r["kind"] == kind), key=lambda r: r["drop"])
            what = worst.get("node", worst.get("edge"))
            print(f"remove one {kind}: {len(drops)} removals, mean {metric} loss {sum(drops) / len(drops):.2f}, "
                  f"max {worst['drop']:.2f} ({worst['stage']} {kind} {what})")
    print(csv_path)
    print(png_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
