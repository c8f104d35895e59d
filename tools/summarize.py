#!/usr/bin/env python
"""Print a Markdown table comparing detection runs (their OUTPUT_DIR/eval_results.json).

    python tools/summarize.py [--pretrain PRETRAIN_DIR] RUN_DIR [RUN_DIR ...]

Columns: AP, AP50, AP75 and the AP of every class (COCO AP, percent); with --pretrain, the
pretraining run's top-1/top-5 is printed above the table.
"""

import argparse
import json
import os
import sys


def load(run_dir):
    path = os.path.join(run_dir, "eval_results.json")
    if not os.path.isfile(path):
        sys.exit(f"no evaluation results at {path}")
    with open(path) as f:
        return json.load(f)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="detection OUTPUT_DIRs")
    parser.add_argument("--pretrain", help="classification OUTPUT_DIR whose top-1 to show")
    args = parser.parse_args(argv)
    if args.pretrain:
        r = load(args.pretrain)
        print(f"Pretraining ({args.pretrain}): top-1 {r['top1']:.2f}%, top-5 {r['top5']:.2f}% "
              f"on {int(r['num_images'])} test images, after {r['iterations']} iterations\n")
    rows = []
    for run in args.runs:
        for dataset, tasks in load(run).items():
            rows.append((run, dataset, tasks["bbox"]))
    keys = ["AP", "AP50", "AP75"] + sorted({k for _, _, m in rows for k in m if k.startswith("AP-")})
    print("| run | dataset | " + " | ".join(keys) + " |")
    print("|---|---|" + "---|" * len(keys))
    for run, dataset, m in rows:
        print(f"| {run} | {dataset} | " + " | ".join(f"{m.get(k, float('nan')):.1f}" for k in keys) + " |")


if __name__ == "__main__":
    main()
