#!/usr/bin/env python
"""Report pretraining runs side by side (tools/pretrain_net.py): validation top-1 / top-5 after
each evaluation, epochs done, s/iter and training hours, and a top-1 curve picture.

    python tools/compare_pretraining.py --runs output/tiny_imagenet/randwire_ws_small \\
        output/tiny_imagenet/resnet18 --labels "RandWire-WS small C=78" ResNet-18 \\
        --output-dir output/compare_pretraining_tiny_imagenet

Reads the run folders only (config.yaml, log.txt, metrics.json), so it reports runs still in
progress as well; it trains nothing. Writes OUTPUT_DIR/results.md, results.json and top1.png.
"""

import argparse
import json
import os
import sys


def parse_args(argv=None):
    """Parse and check the arguments; exit 2 naming a missing run folder or a label count."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", required=True, help="pretraining run folders (their OUTPUT_DIR)")
    p.add_argument("--labels", nargs="+", help="a name for each run (default: its arch and folder)")
    p.add_argument("--output-dir", required=True, help="where results.md, results.json and top1.png go")
    args = p.parse_args(argv)
    for run in args.runs:
        if not os.path.isfile(os.path.join(run, "config.yaml")):
            p.error(f"--runs: {run!r} is not a tools/pretrain_net.py run folder (no config.yaml)")
    if args.labels and len(args.labels) != len(args.runs):
        p.error(f"--labels: {len(args.labels)} labels for {len(args.runs)} runs")
    return args


def main(argv=None):
    """Read the runs, write the report and print its table; returns 0."""
    from rwdet.analysis.flops import machine_description
    from rwdet.analysis.pretraining import format_pretraining_markdown, plot_top1, read_pretraining_run, summary_rows
    from rwdet.utils.io import atomic_write

    args = parse_args(argv)
    labels = args.labels or [None] * len(args.runs)
    try:
        runs = [read_pretraining_run(r, label) for r, label in zip(args.runs, labels)]
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    os.makedirs(args.output_dir, exist_ok=True)
    command = " ".join(["python tools/compare_pretraining.py", *(sys.argv[1:] if argv is None else argv)])
    text = (f"`{command}`\n\nRead on {machine_description()}. Top-1 / top-5: % on the whole validation split, "
            "the last evaluation; s/iter: Detectron2's median step time on the machine that trained the run; "
            "training hours: iterations done x s/iter (evaluations excluded).\n\n" + format_pretraining_markdown(runs))
    md, js = os.path.join(args.output_dir, "results.md"), os.path.join(args.output_dir, "results.json")
    atomic_write(md, lambda f: f.write(text.encode()))
    data = json.dumps(summary_rows(runs), indent=2)
    atomic_write(js, lambda f: f.write(data.encode()))
    print(text, end="")
    print(md)
    print(js)
    if any(r["evaluations"] for r in runs):
        print(plot_top1(runs, os.path.join(args.output_dir, "top1.png"),
                        title=" vs ".join(r["label"] for r in runs) + f" ({runs[0]['dataset']})"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
