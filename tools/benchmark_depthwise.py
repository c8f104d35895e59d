#!/usr/bin/env python
"""Speed of RandWire's small-map depthwise path (``DepthwiseConv3x3``) against ``nn.Conv2d``.

``rwdet.modeling.DepthwiseConv3x3`` computes the 3x3 depthwise convolution of maps of at most
``MAX_MATRIX_PIXELS`` pixels on the CPU as a gathered per-channel matrix instead of calling
PyTorch's (oneDNN) depthwise kernel, which is slow when the map is smaller than the kernel.
This script measures that choice, with both sides in the same run on the same inputs:

* ``op``: forward + backward of one depthwise conv, for each (channels, map side, stride) of
  ``--shapes``, in each memory format: ``nn.Conv2d`` (baseline) against ``DepthwiseConv3x3``.
* ``step``: one training step (forward, cross-entropy, backward, SGD) of the classifier of
  ``--config-file`` (default: the Fashion-MNIST 64 px RandWire-WS config) at its own input
  size and ``--batch``: ``MAX_MATRIX_PIXELS = 0`` (every map through ``nn.Conv2d``, the
  baseline) against the default. The two settings alternate for ``--rounds`` rounds, so that
  drift in the machine's speed hits both alike.

Times are medians of ``--iters`` timed calls after ``--warmup`` untimed ones
(``time.perf_counter``); the ratio is baseline time / new time (> 1: the new path is faster).
Run on an otherwise idle machine; ``--threads`` sets ``torch.set_num_threads``.

    python tools/benchmark_depthwise.py --threads 2
"""

import argparse
import os
import statistics
import sys
import time
from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from rwdet.classification.config import load_cls_config
from rwdet.classification.model import build_classifier
from rwdet.modeling import DepthwiseConv3x3

DEFAULT_CONFIG = "configs/fashion_mnist/randwire_ws_small_64px.yaml"
DEFAULT_SHAPES = "78x8s1,156x4s1,312x4s2,312x2s1,312x1s1,156x2s1"


def parse_shapes(text: str) -> List[Tuple[int, int, int]]:
    """``"312x2s1,156x4s2"`` -> ``[(312, 2, 1), (156, 4, 2)]`` (channels, map side, stride).

    Raises:
        argparse.ArgumentTypeError: an item not of the form CxHsS with positive integers.
    """
    shapes = []
    for item in text.split(","):
        try:
            c, rest = item.strip().split("x")
            h, s = rest.split("s")
            shape = (int(c), int(h), int(s))
        except ValueError:
            shape = (0, 0, 0)
        if min(shape) < 1:
            raise argparse.ArgumentTypeError(
                f"shape {item!r} must be CxHsS with positive integers, e.g. 312x2s1"
            )
        shapes.append(shape)
    return shapes


def median_ms(fn: Callable[[], None], warmup: int, iters: int) -> float:
    """Median wall time of ``fn`` in milliseconds over ``iters`` calls after ``warmup``."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def bench_op(shapes: Sequence[Tuple[int, int, int]], batch: int, warmup: int, iters: int) -> None:
    """Print forward+backward ms of ``nn.Conv2d`` and ``DepthwiseConv3x3`` for each shape."""
    print(f"## op: 3x3 depthwise conv, forward + backward, batch {batch} (ms, median of {iters})")
    print("| channels | map | stride | format | nn.Conv2d | DepthwiseConv3x3 | ratio |")
    print("|---|---|---|---|---|---|---|")
    for c, h, s in shapes:
        for fmt, memory_format in (("NCHW", torch.contiguous_format), ("NHWC", torch.channels_last)):
            new = DepthwiseConv3x3(c, s).to(memory_format=memory_format)
            base = nn.Conv2d(c, c, 3, s, 1, groups=c, bias=False).to(memory_format=memory_format)
            base.weight.data.copy_(new.weight.data)
            x = torch.randn(batch, c, h, h).contiguous(memory_format=memory_format).requires_grad_()

            def run(module: nn.Module) -> Callable[[], None]:
                def fn() -> None:
                    module(x).sum().backward()
                return fn

            t_base = median_ms(run(base), warmup, iters)
            t_new = median_ms(run(new), warmup, iters)
            print(f"| {c} | {h}x{h} | {s} | {fmt} | {t_base:.2f} | {t_new:.2f} | {t_base / t_new:.2f}x |")


def bench_step(config_file: str, batch: int, warmup: int, iters: int, rounds: int) -> None:
    """Print the training-step time of the config's classifier with and without the matrix path."""
    cfg = load_cls_config(config_file, ["MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    model = build_classifier(cfg)
    memory_format = torch.channels_last if cfg.MODEL.CHANNELS_LAST else torch.contiguous_format
    model = model.to(memory_format=memory_format).train()
    size = cfg.DATA.IMAGE_SIZE
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=memory_format)
    y = torch.randint(0, cfg.MODEL.NUM_CLASSES, (batch,))
    opt = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    default = DepthwiseConv3x3.MAX_MATRIX_PIXELS
    times = {0: [], default: []}
    try:
        for _ in range(rounds):
            for pixels in (0, default):
                DepthwiseConv3x3.MAX_MATRIX_PIXELS = pixels
                times[pixels].append(median_ms(step, warmup, iters))
    finally:
        DepthwiseConv3x3.MAX_MATRIX_PIXELS = default
    t_base, t_new = statistics.median(times[0]), statistics.median(times[default])
    fmt = "channels_last" if cfg.MODEL.CHANNELS_LAST else "contiguous"
    print(f"\n## step: training step of {config_file} ({size}x{size}, batch {batch}, {fmt})")
    print(f"median over {rounds} alternating rounds of the median of {iters} steps (ms)")
    print("| MAX_MATRIX_PIXELS | ms per step | per round |")
    print("|---|---|---|")
    for pixels, t in ((0, t_base), (default, t_new)):
        rounds_ms = ", ".join(f"{v:.0f}" for v in times[pixels])
        print(f"| {pixels} | {t:.0f} | {rounds_ms} |")
    print(f"ratio (MAX_MATRIX_PIXELS 0 / {default}): {t_base / t_new:.2f}x")


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", choices=["op", "step", "all"], default="all")
    p.add_argument("--config-file", default=DEFAULT_CONFIG, help=f"classifier config (default: {DEFAULT_CONFIG})")
    p.add_argument("--shapes", type=parse_shapes, default=parse_shapes(DEFAULT_SHAPES),
                   help=f"op shapes, CxHsS comma-separated (default: {DEFAULT_SHAPES})")
    p.add_argument("--batch", type=int, default=128, help="batch of both benchmarks (default: 128)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls (default: 2)")
    p.add_argument("--iters", type=int, default=10, help="timed calls (default: 10)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds of the step benchmark")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = p.parse_args(argv)
    for name in ("batch", "iters", "rounds"):
        if getattr(args, name) < 1:
            p.error(f"--{name} {getattr(args, name)} must be >= 1")
    if args.warmup < 0:
        p.error(f"--warmup {args.warmup} must be >= 0")
    if not os.path.isfile(args.config_file):
        p.error(f"--config-file {args.config_file!r} does not exist")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    if args.only in ("op", "all"):
        bench_op(args.shapes, args.batch, args.warmup, args.iters)
    if args.only in ("step", "all"):
        bench_step(args.config_file, args.batch, args.warmup, args.iters, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
