#!/usr/bin/env python
"""FLOPs and parameters of the shipped configs (fvcore), as a Markdown table.

    python tools/flops_table.py                          # every configs/**/*.yaml but Base-*
    python tools/flops_table.py --configs configs/imagenet/randwire_ws_small.yaml
    python tools/flops_table.py --write-readme README.md # also write it into the README

Prints the table (with a footer naming this command, the machine and the library versions) on
stdout; with --write-readme, also writes it between the ``<!-- flops-table:begin -->`` and
``<!-- flops-table:end -->`` lines of that file (atomically; an error if the markers are
missing). What is counted: see ``rwdet/analysis/flops.py``. Runs on the CPU, random weights,
no data; the whole set takes a few minutes on a 2-core CPU (the detectors' backbones are
counted at 800x1333).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time
import warnings
from typing import List, Optional


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", metavar="YAML",
                        help="configs to count (default: every shipped config, Base-* excluded)")
    parser.add_argument("--write-readme", metavar="FILE",
                        help="write the table between the flops-table markers of FILE (e.g. README.md)")
    return parser.parse_args(argv)


def command_line(argv: Optional[List[str]]) -> str:
    """The command as a user would type it from the repository root."""
    args = sys.argv[1:] if argv is None else argv
    return " ".join(["python tools/flops_table.py", *(shlex.quote(a) for a in args)])


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    # fvcore traces with torch.jit, whose deprecation warnings say nothing about the counts
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.", category=FutureWarning)
    from rwdet.analysis.flops import count_config, render_table, replace_between_markers, shipped_configs

    configs = args.configs or shipped_configs()
    counts = []
    start = time.perf_counter()
    for path in configs:
        t0 = time.perf_counter()
        counts.append(count_config(path))
        print(f"[flops_table] {os.path.relpath(path)}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    table = render_table(counts, command=command_line(argv))
    print(table, end="")
    if args.write_readme:
        replace_between_markers(args.write_readme, table)
        print(f"[flops_table] wrote the table into {args.write_readme}", file=sys.stderr)
    print(f"[flops_table] {len(counts)} configs in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
