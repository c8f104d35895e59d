#!/usr/bin/env python
"""Speed and saved activations of RandWire's stage forwards, in interleaved rounds.

    python tools/benchmark_forward.py --threads 2                  # C=109 classifier, batch 4, 224 px
    python tools/benchmark_forward.py --threads 2 --channels-last --rounds 6
    python tools/benchmark_forward.py --config-file configs/imagenet/randwire_ws_small.yaml --batch 16

One classifier (``--config-file``, default the regular regime C=109) is built once and copied
into five variants with the same weights: ``node`` (MODEL.RANDWIRE.FORWARD node, the per-node
reference), ``level`` (level-batched stages), ``level`` with MODEL.RANDWIRE.RECOMPUTE
``depthwise`` and ``pointwise``, and ``node`` with RECOMPUTE ``stage``. In each of ``--rounds`` rounds every variant runs ``--iters`` timed training steps
(forward, cross-entropy, backward, SGD step with lr 0) and ``--iters`` inference steps (eval,
no_grad, BN folded into the convs by ``rwdet.layers.fold_batchnorm``), after one untimed step
each; the variants' order is reversed every round. The report gives each variant's median ms
per step and, per variant against ``node``, the median and [min-max] of the per-round speed
ratios (above 1: faster than ``node``), and the bytes of activations saved for backward in one
training forward (saved-tensor hooks). Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
import warnings

warnings.filterwarnings("ignore", message=r".*torch\.jit\.(script|trace).*deprecated", category=FutureWarning)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from rwdet.analysis.benchmark import ratio_summary, saved_activation_bytes  # noqa: E402
from rwdet.analysis.profile import profile_markdown, profile_op_kinds  # noqa: E402
from rwdet.classification.config import load_cls_config  # noqa: E402
from rwdet.classification.model import build_classifier  # noqa: E402
from rwdet.layers import fold_batchnorm  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = {
    "node": ("node", "none"),
    "level": ("level", "none"),
    "level+recompute depthwise": ("level", "depthwise"),
    "level+recompute pointwise": ("level", "pointwise"),
    "node+recompute stage": ("node", "stage"),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config-file", default=os.path.join(REPO, "configs/imagenet/randwire_ws_c109.yaml"))
    p.add_argument("--batch", type=int, default=4, help="images per step (default 4)")
    p.add_argument("--size", type=int, default=224, help="image side in pixels (default 224)")
    p.add_argument("--rounds", type=int, default=4, help="interleaved rounds (default 4)")
    p.add_argument("--iters", type=int, default=2, help="timed steps per variant, phase and round")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--channels-last", action="store_true", help="NHWC weights and images")
    p.add_argument("--profile", choices=list(VARIANTS), default=None,
                   help="also print where one variant's training step spends its time, per op kind")
    args = p.parse_args()
    if args.batch < 1 or args.size < 32 or args.rounds < 1 or args.iters < 1:
        p.error("--batch, --rounds and --iters must be >= 1 and --size >= 32")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = load_cls_config(args.config_file, ["MODEL.NUM_CLASSES", "1000"])
    base = build_classifier(cfg)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    x = torch.randn(args.batch, 3, args.size, args.size).to(memory_format=fmt)
    y = torch.randint(0, 1000, (args.batch,))
    steps = {}
    saved = {}
    for name, (mode, recompute) in VARIANTS.items():
        model = copy.deepcopy(base).to(memory_format=fmt)
        for m in model.modules():
            if hasattr(m, "forward_mode"):
                m.forward_mode, m.recompute = mode, recompute
        opt = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)

        def train(model=model, opt=opt):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

        deployed = fold_batchnorm(copy.deepcopy(model).eval())

        def infer(deployed=deployed):
            with torch.no_grad():
                deployed(x)

        saved[name] = saved_activation_bytes(lambda model=model: model(x), exclude=list(model.parameters()))
        train(), infer()  # untimed
        steps[name] = {"train": train, "infer": infer}
    ms = {name: {"train": [], "infer": []} for name in VARIANTS}
    for r in range(args.rounds):
        order = list(VARIANTS) if r % 2 == 0 else list(reversed(VARIANTS))
        for name in order:
            for phase in ("train", "infer"):
                t = time.perf_counter()
                for _ in range(args.iters):
                    steps[name][phase]()
                ms[name][phase].append(1000 * (time.perf_counter() - t) / args.iters)
    print(f"{os.path.relpath(args.config_file, REPO)}, batch {args.batch} at {args.size} px, "
          f"{'NHWC' if args.channels_last else 'NCHW'}, {torch.get_num_threads()} threads, "
          f"{args.rounds} rounds x {args.iters} steps, torch {torch.__version__}\n")
    print("| variant | train ms/step | infer ms/step | train speed vs node | infer speed vs node | saved activations MiB |")
    print("|---|---|---|---|---|---|")
    for name in VARIANTS:
        cells = []
        for phase in ("train", "infer"):
            s = ratio_summary(ms["node"][phase], ms[name][phase])
            cells.append(f"{s['median']:.2f}x [{s['spread'][0]:.2f}-{s['spread'][1]:.2f}]")
        print(f"| {name} | {statistics.median(ms[name]['train']):.0f} | {statistics.median(ms[name]['infer']):.0f} | "
              f"{cells[0]} | {cells[1]} | {saved[name] / 2**20:.0f} |")
    if args.profile:
        print_profile(steps[args.profile]["train"], args.profile)


def print_profile(step, name: str) -> None:
    """Print the time per op kind (``rwdet.analysis.profile``) over two passes of two calls of
    ``step``."""
    print(f"\nWhere a training step of '{name}' spends its time (torch.profiler, self time per op kind, "
          "2 passes of 2 steps):\n")
    print(profile_markdown({name: profile_op_kinds(step, steps=2)}), end="")


if __name__ == "__main__":
    main()
