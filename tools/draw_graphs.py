#!/usr/bin/env python
"""Draw every random stage's graph as a PNG and an SVG (rwdet.analysis.draw).

    python tools/draw_graphs.py --config-file configs/fashion_mnist/randwire_ws_small.yaml --output-dir out/graphs
    python tools/draw_graphs.py --checkpoint model_final.pth --output-dir out/graphs --prefix ws_
    python tools/draw_graphs.py --config-file CONFIG --output-dir DIR MODEL.RANDWIRE.SEEDS "[4, 5, 6]"

Writes ``DIR/<prefix><stage>.png`` (150 dpi) and ``.svg`` for each random stage (res3..res5, or
res2..res5 in the regular regime) and prints their paths. Each picture shows the DAG with its
extra input and output nodes, layered left to right by topological depth, nodes coloured by role.
The config may be a classification or a detection config; KEY VALUE overrides change it.
"""

import argparse
import os
import sys

from rwdet.analysis.common import add_source_arguments, check_source_arguments


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_source_arguments(parser)
    parser.add_argument("--output-dir", required=True, metavar="DIR", help="folder for the pictures (created)")
    parser.add_argument("--prefix", default="", help="file-name prefix, e.g. 'ws_seed1_'")
    args = parser.parse_args(argv)
    check_source_arguments(parser, args)
    if os.sep in args.prefix:
        parser.error(f"--prefix {args.prefix!r} must be a file-name prefix without '{os.sep}'")
    return args


def main(argv=None):
    args = parse_args(argv)
    from rwdet.analysis.common import stage_specs
    from rwdet.analysis.draw import draw_stages

    try:
        specs = stage_specs(args.config_file, args.opts, checkpoint=args.checkpoint)
    except (ValueError, FileNotFoundError, KeyError) as e:
        sys.exit(f"error: {e}")
    for path in draw_stages(specs, args.output_dir, prefix=args.prefix):
        print(path)


if __name__ == "__main__":
    main()
