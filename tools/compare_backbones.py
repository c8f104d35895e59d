#!/usr/bin/env python
"""Compare detection backbones (paper sec. 5: RandWire-WS against ResNet at equal FLOPs): train
the same detector (Faster R-CNN, RetinaNet, Cascade R-CNN or Mask R-CNN on an FPN), same data and
schedule, once per (config, seed), and report COCO AP (and mask AP for Mask R-CNN) mean ± std over
seeds, seconds per iteration and backbone+FPN FLOPs per backbone.

    python tools/compare_backbones.py --configs configs/bccd/faster_rcnn_randwire_ws_c109_bccd.yaml \\
        configs/bccd/faster_rcnn_R_50_FPN_bccd.yaml configs/bccd/faster_rcnn_randwire_ws_small_bccd.yaml \\
        configs/bccd/faster_rcnn_R_18_FPN_bccd.yaml --seeds 1 2 3 --output-dir output/compare_backbones \\
        DATASETS.BCCD_ROOT /path/to/BCCD

Each run is tools/train_net.py (with --resume) in its own process, in
OUTPUT_DIR/<config name>/seed<s>; a rerun reuses finished runs and resumes unfinished ones,
and a larger SOLVER.MAX_ITER extends finished runs (exact resumption: as if trained that long).
The configs must agree on everything but the backbone (checked before any training). Writes
OUTPUT_DIR/results.md and results.json. Trailing ``KEY VALUE`` pairs override every run's config.
"""

import argparse
import os
import sys
import time


def parse_args(argv=None):
    """Parse and check the arguments; exit 2 naming a missing config or odd overrides."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", required=True, help="detection configs, one per backbone")
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3], help="training seeds (default 1 2 3)")
    p.add_argument("--output-dir", required=True, help="root of the runs and of the results")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides for every run")
    args = p.parse_args(argv)
    from rwdet.config import split_trailing_overrides

    # `--configs a.yaml b.yaml KEY VALUE ...` (overrides last, as in Detectron2's tools)
    args.configs, args.opts = split_trailing_overrides(args.configs, args.opts)
    if not args.configs:
        p.error(f"--configs: no config file given before the overrides {args.opts}")
    for c in args.configs:
        if not os.path.isfile(c):
            p.error(f"--configs: {c!r} does not exist")
    if len(args.opts) % 2:
        p.error(f"overrides must be KEY VALUE pairs, got an odd number: {args.opts}")
    return args


def main(argv=None):
    """Run (or reuse) every run, count FLOPs, write results.md/json and print the table; returns 0."""
    from rwdet.analysis.common import setup_output_dir
    from rwdet.analysis.compare_backbones import count_flops, run_comparison, summarize, write_results
    from rwdet.analysis.flops import machine_description

    args = parse_args(argv)
    setup_output_dir(args.output_dir)
    start = time.perf_counter()
    records = run_comparison(args.configs, args.seeds, args.output_dir, args.opts)
    rows = summarize(records, count_flops(args.configs, args.opts))
    trained = [r["seconds"] for r in records if not r["reused"]]
    recorded = [r["seconds"] for r in records if r["seconds"] is not None]
    command = " ".join(["python tools/compare_backbones.py", *(sys.argv[1:] if argv is None else argv)])
    header = (f"`{command}`\n\n{machine_description()}; {len(records)} runs ({len(trained)} trained now, "
              f"{sum(trained) / 60:.1f} min; all runs' recorded training and evaluation {sum(recorded) / 60:.1f} "
              "min). COCO AP (%) on the test set, mean ± sample std over seeds; "
              "s/iter: Detectron2's median training step time (metrics.json); FLOPs: backbone+FPN, "
              "multiply-adds (fvcore), at the test input size.")
    paths = write_results(rows, records, args.output_dir, header)
    with open(paths["markdown"]) as f:
        print(f.read(), end="")
    print(f"wall time {(time.perf_counter() - start) / 60:.1f} min")
    for p in paths.values():
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
