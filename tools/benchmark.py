#!/usr/bin/env python
"""Speed and memory of RandWire against ResNet-50, MobileNetV2 and R50-FPN, in interleaved rounds.

    # all pairs on the CPU, 2 threads, JSON beside the Markdown report
    python tools/benchmark.py --threads 2 --json output/benchmark.json
    # detector pairs only, 7 rounds
    python tools/benchmark.py --pairs det_trainable det_frozen --rounds 7
    # no BN folding for inference; RandWire with its level-batched stage forward
    python tools/benchmark.py --no-deploy --rw-opts MODEL.RANDWIRE.FORWARD level
    # both sides in channels-last (NHWC) memory format; time per op kind beside the ratios
    python tools/benchmark.py --channels-last --profile --pairs cls_c109_b4
    # inference in OpenVINO (or onnxruntime, torchscript) on both sides; training rounds skipped
    python tools/benchmark.py --threads 2 --runtime openvino --phases infer \
        --pairs cls_c109_b1 det_backbone det_trainable --batch 1
    # RandWire served by OpenVINO against ResNet-50 in eager PyTorch, interleaved
    python tools/benchmark.py --threads 2 --runtime openvino --ref-runtime eager --phases infer --batch 1 4
    # RandWire served in OpenVINO int8 against RandWire itself in eager fp32, interleaved
    python tools/benchmark.py --threads 2 --pairs cls_c109_b4 det_backbone --phases infer --reference self \
        --runtime openvino --precision int8 --ref-runtime eager --ref-precision fp32
    # quick check
    python tools/benchmark.py --device cpu --size 64 --det-size 64x96 --batch 2 --warmup 0 --iters 1 --rounds 2

Pairs (RandWire first; ratios are RandWire / reference): ``cls_c109_b<B>`` (RandWire-WS C=109 vs
ResNet-50 at each --batch B), ``cls_small`` (RandWire-WS small C=78 vs MobileNetV2 at the first
--batch), ``det_trainable`` and ``det_frozen`` (Faster R-CNN RandWire-WS-FPN vs R50-FPN, with
trainable BN and nothing frozen, and at Detectron2's defaults: FrozenBN, FREEZE_AT 2),
``det_backbone`` (the two detectors' backbone+FPN alone, one preprocessed image of --det-size
(padded to a multiple of 32), BN folded; inference only: it has no training phase).

--runtime: what runs the inference rounds, on both sides of every pair alike. ``eager`` (default)
is PyTorch. ``onnxruntime``, ``openvino`` and ``torchscript`` take the BN-folded model (so
--deploy must stay on), export it (ONNX opset 17 with ``torch.onnx.export(dynamo=False)``,
``openvino.convert_model``, ``torch.jit.trace``) and run it there with --threads threads (ONNX
Runtime intra-op threads; OpenVINO INFERENCE_NUM_THREADS, LATENCY hint, f32): the classifiers
whole (static input shape), the detectors' backbone+FPN (dynamic shapes, as
``MODEL.DEPLOY.RUNTIME`` serves it) with Detectron2's RPN, ROI heads and NMS in PyTorch (the
"whole model" figure of det_trainable / det_frozen), and det_backbone's backbone+FPN. Training
rounds are not affected: they run in eager PyTorch as with --runtime eager (skip them with
--phases infer). CPU only; not with --amp, --compile or --channels-last; --profile only in
OpenVINO (its own per-layer times). --ref-runtime gives the reference side another runtime, e.g.
``--runtime openvino --ref-runtime eager``: RandWire served against ResNet-50 as users run it
today, in the same interleaved rounds. --pad-channels N rounds RandWire's widths up to a
multiple of N with zero filters after the fold (exact; docs/SPEED.md). The export
runs once per side before the first timed round; each side's outputs are then checked once
against eager PyTorch's (max abs error in the JSON and report), and the layout reorders the
runtime put into its compiled graph are counted (OpenVINO: runtime-model ops of type Reorder;
ONNX Runtime: ReorderInput/ReorderOutput nodes of its optimized graph; TorchScript: n/a).

Each model runs in its own persistent worker process; the two sides of a pair alternate in
--rounds rounds (the first side swapped every round), and the report gives, per pair, the
median and [min-max] of the per-round ratios for train images/s, inference images/s (BN folded
into the convs on both sides unless --no-deploy) and peak training memory, with each side's
medians, the bytes of activations saved for backward, FLOPs and params. The Markdown report
goes to stdout, progress to stderr. The method in full: the package ``rwdet/analysis/benchmark/``.

JSON (--json): ``pairs.<pair>.median_ratio.{train, infer, train_peak_mem}``, ``spread`` of the
same keys ([min, max]), ``ratios`` (per round), ``sides.{randwire, reference}`` (medians, raw
``rounds``, ``saved_activation_bytes``, ``flops``, ``params``; with --profile ``profile.{train,
infer}``: ms per step per op kind, and on the CPU ``onednn.{train, infer}``: ms per step per
oneDNN primitive kind), ``log`` (the order the rounds ran), ``runtime`` and ``phases`` (those run), each side's
``runtime`` (name, reorders, threads, max_abs_err, max_abs_ref, parity_of: once the runtime
runs it), and ``setup`` (device, threads, runtime, phases, torch version, sizes, rounds,
overrides, command).

--profile: after each phase's rounds, each side runs 2 x --iters more steps under torch.profiler,
one side after the other, and the report adds per pair a table of the time per op kind
(depthwise, 1x1 and dense convs told apart by their weights' shapes; batch norm; ReLU;
elementwise ops; copies; ...) on both sides and the difference: where RandWire's time goes
(``rwdet/analysis/profile.py``). On the CPU it adds a second table from oneDNN's verbose log
(--iters more steps per side): oneDNN's own time per convolution kind and direction, and in
the reorders that convert tensors between NCHW and oneDNN's blocked layouts around each conv.

On a CPU, run on an otherwise idle machine and set --threads to its free physical cores. CPU
defaults: classifier batches 4 and 16 at 224, detectors batch 2 at 320x427, 1 warm-up + 2
timed steps per round and side. CUDA defaults: classifier batch 32 at 224, detectors batch 2
at 800x1067, 5 warm-up + 20 timed steps.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import List, Optional

#: What may run the inference rounds (rwdet.analysis.benchmark.specs.RUNTIMES; written out here so
#: that --help needs no torch import).
RUNTIME_CHOICES = ["eager", "onnxruntime", "openvino", "torchscript"]
#: Inference precisions (rwdet.deploy.PRECISIONS).
PRECISION_CHOICES = ["fp32", "bf16", "int8"]


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser; device-dependent defaults stay None (``default_setup`` fills them)."""
    from rwdet.analysis.benchmark import PAIR_FAMILIES, parse_size

    def size_arg(text: str):
        """``--det-size`` value: S or HxW."""
        try:
            return parse_size(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--pairs", nargs="+", default=None, metavar="PAIR",
                   help=f"pairs to run: families {', '.join(PAIR_FAMILIES)} or exact names such as "
                        "cls_c109_b4 (default: all)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in each worker")
    p.add_argument("--batch", type=int, nargs="+", default=None,
                   help="classifier batches, one cls_c109 pair each; cls_small uses the first "
                        "(default: 4 16 on CPU, 32 on GPU)")
    p.add_argument("--size", type=int, default=None, help="classifier input side (default: 224)")
    p.add_argument("--det-size", type=size_arg, default=None,
                   help="detector input: S (S x 4S/3) or HxW (default: 320x427 on CPU, 800x1067 on GPU)")
    p.add_argument("--det-batch", type=int, default=None, help="detector batch (default: 2)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds per phase (default: 5)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed steps per round and side (default: 1 on CPU, 5 on GPU)")
    p.add_argument("--iters", type=int, default=None,
                   help="timed steps per round and side (default: 2 on CPU, 20 on GPU)")
    p.add_argument("--deploy", action=argparse.BooleanOptionalAction, default=True,
                   help="fold BN into the convs for the inference rounds, on both sides (default: on)")
    p.add_argument("--precision", choices=PRECISION_CHOICES, default=None,
                   help="inference rounds' precision, both sides, as MODEL.DEPLOY.PRECISION serves it: bf16 in eager "
                        "autocast, OpenVINO's bf16 hint, TorchScript autocast (not onnxruntime); int8 in OpenVINO only "
                        "(NNCF, calibrated on the benchmark's own input: speed only) (default: fp32). The JSON's "
                        "setup.precision_note says whether this CPU runs it natively or emulated")
    p.add_argument("--ref-precision", choices=PRECISION_CHOICES, default=None,
                   help="the reference side's precision when it differs from RandWire's (default: --precision)")
    p.add_argument("--reference", choices=["pair", "self"], default=None,
                   help="pair: each pair's own reference network (default); self: RandWire itself, e.g. "
                        "--runtime openvino --precision int8 --reference self --ref-runtime eager --ref-precision fp32 "
                        "times RandWire served in int8 against RandWire in eager fp32, interleaved")
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], default=None,
                   help="autocast dtype, both sides (fp16: CUDA only; bf16: CUDA or CPU)")
    p.add_argument("--compile", choices=["none", "default", "reduce-overhead", "max-autotune"], default=None,
                   help="torch.compile mode for both sides: the classifier, or the detector's backbone+FPN "
                        "(reduce-overhead = CUDA graphs, CUDA only; default: none)")
    p.add_argument("--compile-backend", default=None,
                   help="torch.compile backend (default: inductor; aot_eager checks tracing only)")
    p.add_argument("--rw-opts", nargs="+", default=[], metavar="KEY VALUE",
                   help="overrides of every RandWire config, e.g. MODEL.RANDWIRE.FORWARD node")
    p.add_argument("--r50-opts", nargs="+", default=[], metavar="KEY VALUE",
                   help="overrides of both R50-FPN configs (after the pair's freeze setting)")
    p.add_argument("--bccd-root", default=None, help="BCCD root: the detectors get its first train images")
    p.add_argument("--no-flops", action="store_true", help="skip the fvcore FLOP count")
    p.add_argument("--random-heads", action="store_true",
                   help="keep the detectors' random RPN and box-predictor layers (work then depends on them)")
    p.add_argument("--channels-last", action="store_true",
                   help="both sides' weights and inputs in channels_last (NHWC) memory format")
    p.add_argument("--profile", action="store_true",
                   help="after each phase's rounds, profile each side and report its time per op kind")
    p.add_argument("--runtime", choices=RUNTIME_CHOICES, default=None,
                   help="what runs the inference rounds, both sides: eager PyTorch (default), or the "
                        "BN-folded model exported to ONNX Runtime / OpenVINO / TorchScript (classifiers whole, "
                        "detectors' backbone+FPN with the heads in PyTorch); training rounds stay in eager "
                        "PyTorch (use --phases infer to skip them)")
    p.add_argument("--ref-runtime", choices=RUNTIME_CHOICES, default=None,
                   help="the reference side's runtime when it differs from RandWire's, e.g. --runtime openvino "
                        "--ref-runtime eager: RandWire served against ResNet-50 as users run it today, interleaved "
                        "(default: --runtime)")
    p.add_argument("--phases", nargs="+", choices=["train", "infer"], default=None,
                   help="phases to measure (default: train infer); det_backbone runs infer only")
    p.add_argument("--pad-channels", type=int, default=None, metavar="N",
                   help="after the BN fold, round RandWire widths up to a multiple of N with zero filters "
                        "(an exact rewrite; 16 = the AVX-512 f32 block); ResNet sides are unchanged (default: 0, off)")
    p.add_argument("--seed", type=int, default=None, help="seed of the models and inputs (default: 0)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON (atomically)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    """Parse the arguments, run the pairs, print the report; exit status 1 if a pair failed."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    from rwdet.analysis.benchmark import default_setup, markdown_report, run_benchmark, select_pairs, write_json

    try:
        setup = default_setup(
            args.device, threads=args.threads, batches=args.batch, size=args.size, det_size=args.det_size,
            det_batch=args.det_batch, rounds=args.rounds, warmup=args.warmup, iters=args.iters,
            deploy=args.deploy, amp=args.amp, compile=args.compile, compile_backend=args.compile_backend, rw_opts=args.rw_opts, r50_opts=args.r50_opts,
            bccd_root=args.bccd_root, seed=args.seed, flops=not args.no_flops, random_heads=args.random_heads,
            channels_last=args.channels_last, profile=args.profile, runtime=args.runtime, phases=args.phases,
            pad_channels=args.pad_channels, ref_runtime=args.ref_runtime, precision=args.precision,
            ref_precision=args.ref_precision, reference=args.reference,
        )
        select_pairs(args.pairs, setup)
    except (ValueError, ImportError) as exc:
        parser.error(str(exc))
    command = " ".join(["python tools/benchmark.py", *(shlex.quote(a) for a in argv)])
    result = run_benchmark(setup, args.pairs, command=command)
    print(markdown_report(result), end="")
    if args.json:
        write_json(result, args.json)
        print(f"[benchmark] wrote {args.json}", file=sys.stderr)
    return 1 if any("error" in p for p in result["pairs"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
