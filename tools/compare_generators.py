#!/usr/bin/env python
"""Compare random graph generators (paper sec. 4, figure 3): train one classifier per
(generator setting, seed) with a given classification config, and report top-1 mean ± std over
seeds per setting.

    python tools/compare_generators.py --config-file configs/fashion_mnist/compare_short.yaml \
        --settings "ER(0.1)" "ER(0.2)" "BA(3)" "BA(5)" "WS(4, 0.25)" "WS(4, 0.75)" --seeds 1 2 3 4 5 \
        --output-dir output/compare
    # a WS(K, P) grid
    python tools/compare_generators.py --config-file CONFIG --settings "WS(2, 0.75)" "WS(4, 0.75)" \
        "WS(6, 0.75)" "WS(4, 0.25)" "WS(4, 0.5)" --seeds 1 2 3 4 5 --output-dir output/ws_grid

Writes OUTPUT_DIR/results.md (Markdown table), results.csv (one row per setting),
instances.csv (one row per trained instance) and results.png (mean ± std, every seed as a
dot). Instances train one after another in this process, each in OUTPUT_DIR/<setting>/seed<n>;
a rerun reuses finished instances and resumes unfinished ones, so several machines can share
the work by taking different --settings with the same --output-dir, then one run with all
settings collects the table. Trailing ``KEY VALUE`` pairs override the config of every instance.
"""

import argparse
import os
import sys
import time

from rwdet.analysis.common import setup_output_dir
from rwdet.analysis.compare import parse_setting, run_comparison, write_results


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, help="classification config (MODEL.ARCH randwire)")
    p.add_argument("--settings", nargs="+", required=True,
                   help='generator settings in the paper\'s notation, e.g. "ER(0.2)" "BA(5)" "WS(4, 0.75)"')
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4, 5], help="instance seeds (default 1..5)")
    p.add_argument("--output-dir", required=True, help="root of the instances' runs and of the results")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides for every instance")
    args = p.parse_args(argv)
    if not os.path.isfile(args.config_file):
        p.error(f"--config-file {args.config_file!r} does not exist")
    for s in args.settings:
        try:
            parse_setting(s)
        except ValueError as e:
            p.error(str(e))
    if len(args.opts) % 2:
        p.error(f"overrides must be KEY VALUE pairs, got {args.opts}")
    return args


def main(argv=None):
    args = parse_args(argv)
    setup_output_dir(args.output_dir)
    start = time.perf_counter()
    records = run_comparison(args.config_file, args.settings, args.seeds, args.output_dir, args.opts)
    title = f"{os.path.basename(args.config_file)}, seeds {' '.join(map(str, args.seeds))}"
    paths = write_results(records, args.output_dir, title)
    with open(paths["markdown"]) as f:
        print(f.read(), end="")
    trained = [r["seconds"] for r in records if r["seconds"] is not None]
    print(f"{len(records)} instances ({len(trained)} trained now, {sum(trained) / 60:.1f} min of training); "
          f"wall time {(time.perf_counter() - start) / 60:.1f} min")
    for p in paths.values():
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
