#!/usr/bin/env python
"""Print the structure statistics of every random stage's graph (rwdet.graphs.stats).

    python tools/graph_stats.py --config-file configs/fashion_mnist/randwire_ws_small.yaml
    python tools/graph_stats.py --config-file configs/faster_rcnn_randwire_er.yaml MODEL.RANDWIRE.P 0.1
    python tools/graph_stats.py --checkpoint output/fashion_mnist/randwire_ws_small/model_final.pth
    python tools/graph_stats.py --config-file CONFIG --json stats.json

The config may be a classification (tools/pretrain_net.py) or a detection (tools/train_net.py)
config; KEY VALUE overrides after the options change it, as in those tools. A checkpoint's graphs
are the ones it was trained with (its ``randwire_graphs`` record). Columns: nodes, edges, nodes
fed by the extra input node / averaged by the extra output node, mean/max in- and out-degree,
average shortest path and clustering of the undirected graph, depth (longest path in edges over
the N nodes); then each stage's degree distributions. --json writes the same numbers and each
stage's graph spec.
"""

import argparse
import json
import os
import sys

from rwdet.analysis.common import add_source_arguments, check_source_arguments


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_source_arguments(parser)
    parser.add_argument("--json", metavar="OUT.json", help="also write the statistics as JSON here")
    args = parser.parse_args(argv)
    check_source_arguments(parser, args)
    return args


def load_stage_specs(args):
    """The (stage, spec) pairs of the chosen source; exits with the error message on bad input."""
    from rwdet.analysis.common import stage_specs

    try:
        return stage_specs(args.config_file, args.opts, checkpoint=args.checkpoint)
    except (ValueError, FileNotFoundError, KeyError) as e:
        sys.exit(f"error: {e}")


def main(argv=None):
    args = parse_args(argv)
    specs = load_stage_specs(args)
    from rwdet.graphs.stats import format_statistics, graph_statistics
    from rwdet.utils.io import atomic_write

    print(f"Graphs of {args.config_file or args.checkpoint}:")
    print(format_statistics(specs))
    if args.json:
        out = {
            "source": args.config_file or args.checkpoint,
            "opts": list(args.opts),
            "stages": [
                {"stage": name, "graph": spec.describe(), "spec": spec.to_dict(), "statistics": graph_statistics(spec)}
                for name, spec in specs
            ],
        }
        parent = os.path.dirname(args.json)
        if parent:
            os.makedirs(parent, exist_ok=True)
        # NaN (a graph without edges) is written as null, keeping the file strict JSON.
        text = json.dumps(_nan_to_none(out), indent=2)
        atomic_write(args.json, lambda f: f.write(text.encode()))
        print(f"wrote {args.json}")


def _nan_to_none(x):
    if isinstance(x, float) and x != x:
        return None
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_nan_to_none(v) for v in x]
    return x


if __name__ == "__main__":
    main()
