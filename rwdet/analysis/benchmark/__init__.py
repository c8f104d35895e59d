"""Speed and memory of RandWire against its reference networks, measured in interleaved rounds.

Pairs (the first side, RandWire, is the numerator of every ratio):

* ``cls_c109_b<B>``: the RandWire-WS(4, 0.75) classifier of the regular regime, C=109
  (``configs/imagenet/randwire_ws_c109.yaml``, about 4.0 GFLOPs at 224x224) against
  torchvision's ResNet-50 (the classification trainer's ``resnet50`` entry,
  ``configs/imagenet/resnet50.yaml``, 4.1 GFLOPs); one pair per ``--batch`` value B.
* ``cls_small``: RandWire-WS(4, 0.75) of the small regime, C=78
  (``configs/imagenet/randwire_ws_small.yaml``, about 0.58 GFLOPs) against torchvision's
  ``mobilenet_v2(weights=None)`` (about 0.30 GFLOPs; the nearest torchvision network in FLOPs),
  at the first ``--batch``.
* ``det_trainable``: Faster R-CNN RandWire-WS-FPN (``configs/faster_rcnn_randwire_ws.yaml``)
  against Detectron2's R50-FPN (model zoo ``COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml``, no
  weights), both with trainable BN and nothing frozen (MODEL.BACKBONE.FREEZE_AT 0; NORM BN).
* ``det_frozen``: the same two detectors at Detectron2's defaults: FrozenBN, stem and res2
  frozen (MODEL.BACKBONE.FREEZE_AT 2; NORM FrozenBN).
* ``det_backbone``: the backbone+FPN alone of the ``det_trainable`` detectors (p2..p6 of one
  image of ``det_size``, normalised and padded as ``preprocess_image`` does); inference only
  (it has no loss, so no training phase).

The classifiers get random images of ``size`` x ``size`` and random labels out of 1000
classes; the detectors ``det_batch`` images of ``det_size`` (H x W) with 3-8 random boxes each,
or the first BCCD train images with their boxes (``bccd_root``), each model in its own channel
order (RGB for RandWire, BGR for R50-FPN). Both sides of a pair get the same tensors.

Method:

* One persistent worker process per model (``python -m rwdet.analysis.benchmark --worker``):
  the model and its inputs are built once, then the parent sends commands over a pipe ("run a
  round of phase X") and the worker answers with its figures as one JSON line. Only the two
  workers of one pair are alive at a time.
* Phases. ``train``: train mode; forward, loss (cross-entropy for the classifiers, the sum of
  Detectron2's loss dict inside an ``EventStorage`` for the detectors), backward, SGD step
  (momentum 0.9, weight decay 1e-4, learning rate 0, so that the weights, and with them the
  detectors' work, stay the same; the step still does all its arithmetic). ``infer``: eval
  mode under ``torch.no_grad()`` (detectors: full inference, with proposals, box head and NMS).
  With ``deploy`` (the default), the worker folds every BN into the conv before it
  (:func:`rwdet.layers.fold_batchnorm`) once, before its first inference round, on both sides
  (ResNet's and MobileNet's BNs fold too: fused is compared with fused).
* Rounds. All ``rounds`` train rounds of a pair run first, then all its infer rounds (the fold
  happens in between, so every round of a phase measures the same model). In each round
  each side runs ``warmup`` untimed then ``iters`` timed steps; the side that goes first
  alternates (A B, B A, A B, ...), so a drift of the machine's speed hits both sides alike.
  Images/s = batch * iters / wall seconds of the timed steps (``time.perf_counter``, with
  ``torch.cuda.synchronize`` around the timed loop on CUDA). Inputs are on the device before
  timing: data loading is not measured.
* Memory format. With ``channels_last`` both sides' weights and inputs are NHWC (detectors: the
  weights; their first conv then returns NHWC maps); otherwise both are contiguous (NCHW).
* Ratios. Per round, RandWire / reference of train images/s, infer images/s and peak training
  memory; each pair reports the median of its per-round ratios and their [min, max], and each
  side's median images/s. A speed ratio below 1 means RandWire is slower; a memory ratio above
  1 means it needs more memory.
* Peak training memory. CUDA: ``torch.cuda.max_memory_allocated`` over one train round (reset
  before it). CPU: the worker's peak resident set size (``ru_maxrss``) after the round minus its
  RSS just before the model was built: what the model, its inputs, activations, gradients and
  optimizer state cost, without the interpreter and libraries (raw peak and base are in the
  JSON). ``ru_maxrss`` cannot be reset, so on the CPU each round's figure is the peak so far.
* Saved activations: the bytes of the tensors autograd saves for backward in one training
  forward (with the loss), counted with ``torch.autograd.graph.saved_tensors_hooks``, each
  storage once, parameters and buffers excluded (:func:`saved_activation_bytes`); taken after
  the train rounds, outside the timing.
* FLOPs: fvcore's count (:func:`rwdet.analysis.flops.count_model`; one fused multiply-add = 1
  flop) of one image in eval mode before the fold: the whole classifier, or a detector's
  backbone with its FPN on the preprocessed, padded image. Params: all parameters of the whole
  model (and the trainable ones).
* Profile (``profile``): after a phase's rounds, each side runs two passes of ``iters`` more
  steps under torch.profiler, one side after the other, and reports the self time of its ops
  summed per op kind (:func:`rwdet.analysis.profile.profile_op_kinds`: depthwise, 1x1 and
  dense convs, BN, ReLU, elementwise ops, copies, ...), so that a gap in speed can be traced to
  the ops that make it. Profiled steps are not timed rounds; the profiler adds a few microseconds per op.
  On the CPU, each side then runs ``iters`` steps with oneDNN's verbose log on and reports the
  time of oneDNN's primitives per kind (:func:`rwdet.analysis.profile.onednn_primitive_times`):
  convolutions by kernel and direction, and the reorders that convert tensors between PyTorch's
  NCHW layout and oneDNN's blocked layouts around them.
* Neutral detector heads (unless ``random_heads``): untrained BN statistics make one backbone's
  features explode and the other's vanish, so the RPN's proposals, and with them the cost of
  NMS and of the box head, would depend on the random weights. The last layers of the RPN head
  and of the box predictor are zeroed: proposals are then the anchors ranked by tied scores,
  the same for both models at the same input size, and inference ends with empty detections.

* Runtime (``runtime``): the inference rounds of both sides run in eager PyTorch, or in ONNX
  Runtime, OpenVINO or TorchScript: after the BN fold, the classifier, or the backbone+FPN
  (detectors: in place of ``model.backbone``, Detectron2's heads in PyTorch), is exported and
  loaded with ``threads`` threads, once, untimed; its outputs are compared with eager PyTorch's
  once (max abs error) and the layout reorders of its compiled graph counted
  (:mod:`.runtimes`). Training rounds always run in eager PyTorch (``phases`` can leave them out).

On a CPU, run on an otherwise idle machine and set ``threads`` to the free physical cores.

Modules, one job each: :mod:`.specs` (the setup, the pairs and their sides), :mod:`.models`
(building a side's model and inputs: the one place a model is made), :mod:`.runtimes` (export
to and running in ONNX Runtime / OpenVINO / TorchScript), :mod:`.measure` (timing
and memory of one model: :class:`ModelBench`), :mod:`.worker` (the worker process and its
line protocol), :mod:`.rounds` (the parent's interleaved rounds), :mod:`.report` (ratios,
Markdown report, JSON). Every public name is importable from this package.
"""

from .measure import SGD_LR, ModelBench, count_norm_layers, saved_activation_bytes
from .models import NUM_IMAGENET_CLASSES, build_side_model
from .report import METHOD_NOTE, RATIO_KEYS, markdown_report, ratio_summary, summarize_pair, write_json
from .rounds import round_order, run_benchmark, run_pair
from .runtimes import RuntimeModule, count_reorders, export_module, max_abs_error, runtime_runner
from .specs import (C109_CONFIG, COMPILE_MODES, DET_CONFIG, INFER_ONLY_KINDS, PAIR_FAMILIES, PHASES, R50_FPN_CONFIG,
                    REPO_ROOT, RESNET50_CONFIG, RUNTIMES, SIDES, SMALL_CONFIG, BenchmarkSetup, PairSpec, SideSpec,
                    default_setup, pair_specs, parse_size, select_pairs)
from .worker import WorkerClient, worker_main

__all__ = [
    "BenchmarkSetup",
    "C109_CONFIG",
    "COMPILE_MODES",
    "DET_CONFIG",
    "INFER_ONLY_KINDS",
    "METHOD_NOTE",
    "ModelBench",
    "NUM_IMAGENET_CLASSES",
    "PAIR_FAMILIES",
    "PHASES",
    "PairSpec",
    "R50_FPN_CONFIG",
    "RATIO_KEYS",
    "REPO_ROOT",
    "RESNET50_CONFIG",
    "RUNTIMES",
    "RuntimeModule",
    "SGD_LR",
    "SIDES",
    "SMALL_CONFIG",
    "SideSpec",
    "WorkerClient",
    "build_side_model",
    "count_norm_layers",
    "count_reorders",
    "default_setup",
    "export_module",
    "markdown_report",
    "max_abs_error",
    "pair_specs",
    "parse_size",
    "ratio_summary",
    "round_order",
    "run_benchmark",
    "run_pair",
    "runtime_runner",
    "saved_activation_bytes",
    "select_pairs",
    "summarize_pair",
    "worker_main",
    "write_json",
]
