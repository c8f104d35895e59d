#!/usr/bin/env python
"""Speed and memory of RandWire against ResNet-50, as a classifier and as a Faster R-CNN backbone.

Two pairs are measured, each pair on the same input size, batch and input tensors:

* ``cls``: the RandWire-WS(4, 0.75) classifier of the regular regime (C=109, N=32, about
  4.0 GFLOPs at 224x224; graphs and widths from ``--config``) against torchvision's
  ``resnet50(weights=None)`` (4.1 GFLOPs). Input: ``--batch`` random images of
  ``--size`` x ``--size`` with random labels out of 1000 classes.
* ``det``: Faster R-CNN RandWire-WS-FPN (``--config``, default
  configs/faster_rcnn_randwire_ws.yaml, with MODEL.RANDWIRE.NORM BN so that it runs in one
  process) against Detectron2's R50-FPN (model zoo COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml,
  no weights). Input: ``--det-batch`` images of ``--det-size`` (H x W), random pixels with
  3-8 random ground-truth boxes each, or the first BCCD train images and their boxes when
  ``--bccd-root`` is given (resized to ``--det-size``). Each model gets the images in its own
  channel order (RGB for RandWire, BGR for R50-FPN).

For each model and each phase:

* ``train``: model in train mode; forward, loss (cross-entropy for the classifiers, the sum of
  Detectron2's loss dict inside an ``EventStorage`` for the detectors), backward, SGD step.
* ``infer``: model in eval mode under ``torch.no_grad()`` (detectors: full inference, with
  proposals, box head and NMS).

Images/s = batch * ``--iters`` / wall time of ``--iters`` steps, timed with
``time.perf_counter`` after ``--warmup`` untimed steps (with ``torch.cuda.synchronize()``
before and after the timed loop on CUDA). Data loading and augmentation are not included:
the inputs are on the device before timing.

Each (model, phase) runs in its own subprocess (this script re-invoked with a hidden
``--worker`` flag), so the peak memory is that model's and that phase's alone:

* CUDA: ``torch.cuda.max_memory_allocated()`` after ``reset_peak_memory_stats()`` (taken once
  the model and inputs are on the GPU); it includes weights, gradients, optimizer state and
  activations.
* CPU: the peak resident set size (``ru_maxrss``) of the worker process. It includes the
  interpreter and libraries (torch, Detectron2); that baseline, read before the model is
  built, is printed below the tables and stored as ``base_rss_mib`` in the JSON.

Params are all parameters of the model (the JSON also has the trainable count; R50-FPN's
model-zoo config freezes its stem and res2 with FrozenBN). GFLOPs are fvcore's count for one
image at the benchmark's size in eval mode, where one fused multiply-add counts as one flop
(the convention behind ResNet-50's "4.1 GFLOPs"); elementwise ops are not counted. For the
detectors the table gives the backbone with its FPN; the JSON also has the whole model
(``flops_full_model``). Use ``--no-flops`` to skip counting.

Same work for both detectors ("neutral heads"): the models are randomly initialised, and
untrained BN statistics make the features of one explode (R50 with FrozenBN: std ~2000) and of
the other vanish (RandWire in eval mode), so the RPN's proposals, and with them the cost of NMS
and of the box head, would depend on the random weights (e.g. 5 against 1000 proposals per
image). So, unless ``--random-heads``, the last layers of the RPN head (objectness and box
deltas) and of the box predictor (class scores and box deltas) are zeroed: proposals are then
the anchors ranked by tied scores, the same for both models at the same input size, and no box
clears the test score threshold, so inference ends with empty detections. The table shows the
measured RPN proposals per image; in training the box head samples
ROI_HEADS.BATCH_SIZE_PER_IMAGE (512) of them plus the ground-truth boxes. All SGD steps use
learning rate 0, so that the weights, and thus this work, stay the same over the steps: the
step still does all its arithmetic (weight decay, momentum, update), so speed is unaffected.

On a CPU, run on an otherwise idle machine and set ``--threads`` to the free physical cores:
worker threads that share cores with another process run many times slower (on a loaded
2-core machine, 2 threads measured 10-85x fewer images/s than 1 thread), and the two sides of a
pair are measured at different times.

Reading the output: a Markdown table per pair, one row per model and a last row with the
ratio RandWire / ResNet of each column. A ratio of images/s below 1 means RandWire is slower;
a ratio of peak memory above 1 means RandWire needs more memory. ``--json PATH`` writes the
setup, the raw measurements and the ratios.

Examples::

    # full measurement on a GPU (defaults: cls batch 16 at 224, det batch 2 at 800x1067)
    python tools/benchmark.py --json output/benchmark.json
    # mixed precision, detectors only
    python tools/benchmark.py --only det --amp bf16
    # R50-FPN trained like the RandWire detector (all stages, plain BN)
    python tools/benchmark.py --only det --r50-opts MODEL.BACKBONE.FREEZE_AT 0 MODEL.RESNETS.NORM BN
    # quick check on a CPU
    python tools/benchmark.py --device cpu --size 64 --det-size 128 --batch 2 --iters 1 --warmup 1
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(REPO_ROOT, "configs", "faster_rcnn_randwire_ws.yaml")
R50_FPN_CONFIG = "COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml"

#: Model key -> (pair, side). The first side of each pair is the numerator of the ratios.
MODELS: Dict[str, Tuple[str, str]] = {
    "randwire_cls": ("cls", "randwire"),
    "resnet50_cls": ("cls", "resnet"),
    "randwire_det": ("det", "randwire"),
    "r50fpn_det": ("det", "resnet"),
}
PAIRS: Dict[str, Tuple[str, str]] = {
    "cls": ("randwire_cls", "resnet50_cls"),
    "det": ("randwire_det", "r50fpn_det"),
}
PHASES = ("train", "infer")
NUM_IMAGENET_CLASSES = 1000
#: Learning rate of the timed SGD steps: 0 keeps the weights (and so the detectors' proposals,
#: see the module docstring) fixed; torch's SGD does the same arithmetic for any lr.
SGD_LR = 0.0


# ---------------------------------------------------------------------------
# arguments
# ---------------------------------------------------------------------------


def parse_det_size(text: str) -> Tuple[int, int]:
    """Parse ``--det-size``: ``"S"`` (short side S, 4:3 landscape: S x round(4S/3)) or ``"HxW"``.

    Raises:
        argparse.ArgumentTypeError: not of either form, or a side < 32.
    """
    try:
        if "x" in text.lower():
            h, w = (int(v) for v in text.lower().split("x"))
        else:
            h = int(text)
            w = int(round(h * 4 / 3))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--det-size {text!r} must be S or HxW, e.g. 800 or 320x427")
    if min(h, w) < 32:
        raise argparse.ArgumentTypeError(f"--det-size {text!r}: both sides must be >= 32")
    return h, w


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (device-dependent defaults are left as None; see ``resolve_defaults``)."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="See the module docstring (top of tools/benchmark.py) for what is measured and how.",
    )
    p.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda if available)")
    p.add_argument("--only", choices=["cls", "det", "all"], default="all", help="which pair(s) to run")
    p.add_argument("--batch", type=int, default=None, help="classifier batch (default: 16 on GPU, 4 on CPU)")
    p.add_argument("--det-batch", type=int, default=2, help="detector batch (default: 2)")
    p.add_argument("--size", type=int, default=224, help="classifier input side (default: 224)")
    p.add_argument("--det-size", type=parse_det_size, default=None,
                   help="detector input: S (S x 4S/3) or HxW (default: 800 on GPU, 320x427 on CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps (default: 5 on GPU, 2 on CPU)")
    p.add_argument("--iters", type=int, default=None, help="timed steps (default: 20 on GPU, 5 on CPU)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in each worker")
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none",
                   help="autocast dtype on CUDA (fp16 training uses a GradScaler)")
    p.add_argument("--config", default=DEFAULT_CONFIG,
                   help="RandWire detector config; its graphs and widths also build the classifier")
    p.add_argument("--rw-opts", nargs="*", default=[], metavar="KEY VALUE",
                   help="overrides of the RandWire config (after MODEL.RANDWIRE.NORM BN)")
    p.add_argument("--r50-opts", nargs="*", default=[], metavar="KEY VALUE",
                   help="overrides of the R50-FPN config, e.g. MODEL.BACKBONE.FREEZE_AT 0")
    p.add_argument("--bccd-root", default=None, help="use BCCD train images and boxes for the detectors")
    p.add_argument("--no-flops", action="store_true", help="skip the fvcore FLOP count")
    p.add_argument("--random-heads", action="store_true",
                   help="keep the detectors' random RPN and box-predictor layers (work then depends on them)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic inputs and of the models")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # "MODEL:PHASE"
    p.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    return p


def resolve_defaults(args: argparse.Namespace, parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Fill in the device-dependent defaults and check the arguments (in place; returns ``args``)."""
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    on_cuda = args.device.startswith("cuda")
    if on_cuda and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available")
    if args.amp != "none" and not on_cuda:
        parser.error("--amp is for CUDA only")
    if args.batch is None:
        args.batch = 16 if on_cuda else 4
    if args.det_size is None:
        args.det_size = parse_det_size("800" if on_cuda else "320x427")
    if args.warmup is None:
        args.warmup = 5 if on_cuda else 2
    if args.iters is None:
        args.iters = 20 if on_cuda else 5
    for name in ("batch", "det_batch", "size", "iters"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    for name in ("rw_opts", "r50_opts"):
        if len(getattr(args, name)) % 2:
            parser.error(f"--{name.replace('_', '-')} takes KEY VALUE pairs")
    if args.bccd_root is not None and not os.path.isdir(args.bccd_root):
        parser.error(f"--bccd-root {args.bccd_root!r} is not a directory")
    return args


# ---------------------------------------------------------------------------
# worker: models and inputs
# ---------------------------------------------------------------------------


def load_randwire_cfg(args: argparse.Namespace):
    """The RandWire detector config (``--config``, NORM BN, ``--rw-opts``), frozen."""
    from rwdet.engine.defaults import load_config

    opts = ["MODEL.RANDWIRE.NORM", "BN", "MODEL.DEVICE", args.device, *args.rw_opts]
    return load_config(args.config, opts)


def randwire_label(cfg) -> str:
    """Short name of the RandWire network of ``cfg``, e.g. ``RandWire-WS(4, 0.75) regular C=109 N=32``."""
    from rwdet.graphs import GRAPH_MODELS

    rw = cfg.MODEL.RANDWIRE
    model = str(rw.GRAPH_MODEL).upper()
    params = ", ".join(f"{rw.get(k):g}" for k in GRAPH_MODELS[model])
    return f"RandWire-{model}({params}) {rw.REGIME} C={rw.CHANNELS} N={rw.NODES}"


def build_classifier(key: str, args: argparse.Namespace) -> Tuple[torch.nn.Module, str]:
    """Build a classifier (random init) on ``args.device``.

    Returns:
        (model, label).
    """
    if key == "randwire_cls":
        from rwdet.config import randwire_graph_specs
        from rwdet.modeling import RandWire, RandWireClassifier

        cfg = load_randwire_cfg(args)
        rw = cfg.MODEL.RANDWIRE
        body = RandWire(randwire_graph_specs(cfg), rw.REGIME, rw.CHANNELS, out_features=["res5"], norm=rw.NORM)
        model = RandWireClassifier(body, num_classes=NUM_IMAGENET_CLASSES, norm=rw.NORM)
        label = f"{randwire_label(cfg)} classifier"
    elif key == "resnet50_cls":
        import torchvision

        model = torchvision.models.resnet50(weights=None, num_classes=NUM_IMAGENET_CLASSES)
        label = "torchvision ResNet-50 classifier"
    else:
        raise ValueError(f"unknown classifier {key!r}")
    return model.to(args.device), label


def build_detector(key: str, args: argparse.Namespace) -> Tuple[torch.nn.Module, Any, str]:
    """Build a Faster R-CNN detector (random init, no weights loaded) on ``args.device``.

    Returns:
        (model, cfg, label); the label names the backbone's norm and freeze_at.
    """
    from detectron2.modeling import build_model

    if key == "randwire_det":
        import rwdet.modeling  # noqa: F401  (registers the RandWire backbones)

        cfg = load_randwire_cfg(args)
        rw = cfg.MODEL.RANDWIRE
        label = f"Faster R-CNN {randwire_label(cfg)}-FPN (norm {rw.NORM}, freeze_at {rw.FREEZE_AT})"
    elif key == "r50fpn_det":
        from detectron2 import model_zoo
        from detectron2.config import get_cfg

        cfg = get_cfg()
        cfg.merge_from_file(model_zoo.get_config_file(R50_FPN_CONFIG))
        cfg.merge_from_list(["MODEL.WEIGHTS", "", "MODEL.DEVICE", args.device, *args.r50_opts])
        cfg.freeze()
        label = (f"Faster R-CNN R50-FPN, Detectron2 model zoo (norm {cfg.MODEL.RESNETS.NORM}, "
                 f"freeze_at {cfg.MODEL.BACKBONE.FREEZE_AT})")
    else:
        raise ValueError(f"unknown detector {key!r}")
    return build_model(cfg), cfg, label


def neutralize_detector_heads(model: torch.nn.Module) -> None:
    """Zero the last layers of the RPN head and of the box predictor (weights and biases).

    The RPN then scores all anchors 0 and predicts zero deltas, so its proposals depend only on
    the anchors and the image size; the box predictor gives uniform class scores (below the
    test score threshold) and zero deltas. Two detectors with the same anchors, RPN/ROI settings
    and input size then do the same head work whatever their backbones compute.
    """
    rpn_head = model.proposal_generator.rpn_head
    predictor = model.roi_heads.box_predictor
    with torch.no_grad():
        for layer in (rpn_head.objectness_logits, rpn_head.anchor_deltas, predictor.cls_score, predictor.bbox_pred):
            layer.weight.zero_()
            layer.bias.zero_()


def make_classifier_batch(args: argparse.Namespace) -> Tuple[torch.Tensor, torch.Tensor]:
    """Random images ``(batch, 3, size, size)`` and labels, the same for every model (seeded)."""
    g = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=g)
    y = torch.randint(0, NUM_IMAGENET_CLASSES, (args.batch,), generator=g)
    return x.to(args.device), y.to(args.device)


def synthetic_detection_images(args: argparse.Namespace) -> List[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``--det-batch`` random RGB images of ``--det-size`` with 3-8 random boxes each (seeded).

    Returns:
        per image: (image float (3, H, W) in [0, 255] RGB, boxes (n, 4) XYXY absolute,
        class ids (n,) in [0, 80)).
    """
    h, w = args.det_size
    g = torch.Generator().manual_seed(args.seed)
    out = []
    for _ in range(args.det_batch):
        image = torch.rand(3, h, w, generator=g) * 255.0
        n = int(torch.randint(3, 9, (1,), generator=g))
        wh = torch.rand(n, 2, generator=g) * 0.35 + 0.05  # 5% .. 40% of the side
        bw, bh = wh[:, 0] * w, wh[:, 1] * h
        x1 = torch.rand(n, generator=g) * (w - bw)
        y1 = torch.rand(n, generator=g) * (h - bh)
        boxes = torch.stack([x1, y1, x1 + bw, y1 + bh], dim=1)
        classes = torch.randint(0, 80, (n,), generator=g)
        out.append((image, boxes, classes))
    return out


def bccd_detection_images(args: argparse.Namespace) -> List[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The first ``--det-batch`` BCCD train images, resized to ``--det-size``, with their boxes.

    Returns:
        as :func:`synthetic_detection_images` (class ids 0..2: RBC, WBC, Platelets).
    """
    import numpy as np
    from PIL import Image

    from rwdet.data.datasets import BCCD_CLASSES, load_voc_instances

    records = load_voc_instances(args.bccd_root, "train", BCCD_CLASSES)
    if not records:
        raise RuntimeError(f"no BCCD train images under {args.bccd_root!r}")
    h, w = args.det_size
    out = []
    for i in range(args.det_batch):
        rec = records[i % len(records)]
        with Image.open(rec["file_name"]) as im:
            w0, h0 = im.size
            im = im.convert("RGB").resize((w, h), Image.BILINEAR)
            image = torch.from_numpy(np.asarray(im, dtype=np.float32).copy()).permute(2, 0, 1)
        scale = torch.tensor([w / w0, h / h0, w / w0, h / h0])
        boxes = torch.tensor([a["bbox"] for a in rec["annotations"]], dtype=torch.float32).reshape(-1, 4) * scale
        classes = torch.tensor([a["category_id"] for a in rec["annotations"]], dtype=torch.int64)
        out.append((image, boxes, classes))
    return out


def make_detection_inputs(args: argparse.Namespace, cfg, with_gt: bool) -> List[Dict[str, Any]]:
    """Detectron2 inputs (list of dicts) on the device, the same images for every detector.

    Images are given in the model's ``INPUT.FORMAT`` (the RGB images are flipped to BGR where
    needed); ``height``/``width`` equal the image size, so inference does not rescale outputs.
    With ``with_gt``, each dict has ``instances`` with ``gt_boxes`` and ``gt_classes`` (class
    ids taken modulo the model's number of classes).
    """
    from detectron2.structures import Boxes, Instances

    images = bccd_detection_images(args) if args.bccd_root else synthetic_detection_images(args)
    num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    inputs = []
    for image, boxes, classes in images:
        if cfg.INPUT.FORMAT == "BGR":
            image = image.flip(0)
        h, w = image.shape[-2:]
        d = {"image": image.contiguous().to(args.device), "height": h, "width": w}
        if with_gt:
            inst = Instances((h, w))
            inst.gt_boxes = Boxes(boxes)
            inst.gt_classes = classes % num_classes
            d["instances"] = inst.to(args.device)
        inputs.append(d)
    return inputs


# ---------------------------------------------------------------------------
# worker: measurement
# ---------------------------------------------------------------------------


def autocast_context(args: argparse.Namespace):
    """``torch.autocast`` on CUDA with the ``--amp`` dtype, or a null context."""
    if args.amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if args.amp == "bf16" else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def make_train_step(model: torch.nn.Module, loss_fn: Callable[[], torch.Tensor],
                    args: argparse.Namespace) -> Callable[[], None]:
    """A closure doing one SGD step: ``loss_fn()`` under autocast, backward, step.

    ``loss_fn`` runs the forward pass and returns the scalar loss. With ``--amp fp16`` the loss
    is scaled with a GradScaler, as mixed-precision training does.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=SGD_LR, momentum=0.9, weight_decay=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=args.amp == "fp16")

    def step() -> None:
        """Forward, loss, backward and SGD step."""
        with autocast_context(args):
            loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    return step


def synchronize(device: str) -> None:
    """Wait for the device's queued work (CUDA); no-op on the CPU."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def time_steps(step: Callable[[], None], warmup: int, iters: int, device: str) -> float:
    """Run ``warmup`` untimed steps, then return the wall seconds of ``iters`` steps."""
    for _ in range(warmup):
        step()
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    synchronize(device)
    return time.perf_counter() - t0


def max_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024.0  # bytes on macOS, KiB on Linux


def reset_peak_memory(device: str) -> None:
    """Start the CUDA peak-memory window (the CPU's ``ru_maxrss`` cannot be reset)."""
    if device.startswith("cuda"):
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: str) -> Dict[str, float]:
    """Peak memory in MiB: CUDA max allocated (and reserved) since the reset, or the CPU peak RSS."""
    if device.startswith("cuda"):
        synchronize(device)
        return {
            "peak_mem_mib": torch.cuda.max_memory_allocated(device) / 2**20,
            "peak_reserved_mib": torch.cuda.max_memory_reserved(device) / 2**20,
        }
    return {"peak_mem_mib": max_rss_mib()}


def count_flops(key: str, model: torch.nn.Module, args: argparse.Namespace, cfg=None) -> Dict[str, float]:
    """fvcore FLOPs (one fused multiply-add = 1) of one eval forward on one image at the benchmark size.

    Returns:
        ``{"flops": ...}``: the whole classifier, or for a detector its backbone with FPN (the
        same work for any weights). Detectors also get ``flops_full_model``, which includes
        the RPN and the box head on the proposals that survive NMS: with random weights that
        count is arbitrary (see ``proposals_per_image``), so it is kept out of the table.
    """
    from fvcore.nn import FlopCountAnalysis

    def total(analysis) -> float:
        """The analysis' total, without fvcore's warnings about uncounted ops."""
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        return float(analysis.total())

    model.eval()
    with torch.no_grad():
        if MODELS[key][0] == "cls":
            return {"flops": total(FlopCountAnalysis(model, make_classifier_batch(args)[0][:1]))}
        from detectron2.utils.analysis import FlopCountAnalysis as DetectronFlopCountAnalysis

        inp = make_detection_inputs(args, cfg, with_gt=False)[:1]
        images = model.preprocess_image(inp).tensor  # normalised and padded, as in the forward
        return {
            "flops": total(FlopCountAnalysis(model.backbone, images)),
            "flops_full_model": total(DetectronFlopCountAnalysis(model, inp)),
        }


def record_proposals(model: torch.nn.Module) -> List[int]:
    """Hook the detector's proposal generator; returns the list it appends proposals/image to."""
    counts: List[int] = []

    def hook(module, inputs, output) -> None:
        """Append the number of proposals of each image of this forward."""
        counts.extend(len(p) for p in output[0])

    model.proposal_generator.register_forward_hook(hook)
    return counts


def run_worker(args: argparse.Namespace) -> Dict[str, Any]:
    """Measure one model in one phase (``--worker MODEL:PHASE``) and write the result as JSON.

    Returns:
        dict: label, batch, input size, seconds, images/s, peak memory, params (and FLOPs in
        the ``infer`` phase unless ``--no-flops``).
    """
    key, phase = args.worker.split(":")
    if key not in MODELS or phase not in PHASES:
        raise ValueError(f"bad --worker {args.worker!r}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        if torch.device(args.device).index is not None:
            torch.cuda.set_device(torch.device(args.device))
        torch.backends.cudnn.benchmark = True  # fixed input sizes
    torch.manual_seed(args.seed)
    kind = MODELS[key][0]
    base_rss = max_rss_mib()
    cfg = None
    if kind == "cls":
        model, label = build_classifier(key, args)
        x, y = make_classifier_batch(args)
        batch, size = args.batch, [args.size, args.size]
        loss_fn = lambda: torch.nn.functional.cross_entropy(model(x), y)  # noqa: E731
        infer_fn = lambda: model(x)  # noqa: E731
    else:
        model, cfg, label = build_detector(key, args)
        if not args.random_heads:
            neutralize_detector_heads(model)
        train_inputs = make_detection_inputs(args, cfg, with_gt=True)
        infer_inputs = make_detection_inputs(args, cfg, with_gt=False)
        batch, size = args.det_batch, list(args.det_size)
        proposal_counts = record_proposals(model)
        loss_fn = lambda: sum(model(train_inputs).values())  # noqa: E731
        infer_fn = lambda: model(infer_inputs)  # noqa: E731

    if phase == "train":
        model.train()
        step = make_train_step(model, loss_fn, args)
    else:
        model.eval()

        def step() -> None:
            """One inference forward without autograd."""
            with torch.no_grad(), autocast_context(args):
                infer_fn()

    reset_peak_memory(args.device)
    if kind == "det":
        from detectron2.utils.events import EventStorage

        with EventStorage(0):
            seconds = time_steps(step, args.warmup, args.iters, args.device)
    else:
        seconds = time_steps(step, args.warmup, args.iters, args.device)
    result: Dict[str, Any] = {
        "model": key, "phase": phase, "label": label, "device": args.device,
        "batch": batch, "size": size, "iters": args.iters, "warmup": args.warmup,
        "seconds": seconds, "images_per_s": batch * args.iters / seconds,
        "sec_per_iter": seconds / args.iters, "threads": torch.get_num_threads(),
        "device_name": (torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith("cuda")
                        else f"CPU, {os.cpu_count()} logical cores"),
        **peak_memory(args.device),
        "params": sum(p.numel() for p in model.parameters()),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    if not args.device.startswith("cuda"):
        result["base_rss_mib"] = base_rss
    if kind == "det":
        # RPN proposals per image in the timed and warm-up steps; the box head's cost scales
        # with it (in training, it samples ROI_HEADS.BATCH_SIZE_PER_IMAGE of them)
        result["proposals_per_image"] = sum(proposal_counts) / max(len(proposal_counts), 1)
    if phase == "infer" and not args.no_flops:
        result.update(count_flops(key, model, args, cfg))  # after the peak memory was read
    if args.worker_out:
        with open(args.worker_out, "w") as f:
            json.dump(result, f)
    return result


# ---------------------------------------------------------------------------
# parent: run the workers, report
# ---------------------------------------------------------------------------


def log(msg: str) -> None:
    """Progress message on stderr (stdout holds only the report)."""
    print(f"[benchmark] {msg}", file=sys.stderr, flush=True)


def spawn_worker(argv: Sequence[str], args: argparse.Namespace, key: str, phase: str) -> Dict[str, Any]:
    """Run this script as ``--worker KEY:PHASE`` in a fresh process and return its result.

    On failure, returns ``{"error": ...}`` with the tail of the worker's output.
    """
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        cmd = [sys.executable, os.path.abspath(__file__), *argv, "--device", args.device,
               "--worker", f"{key}:{phase}", "--worker-out", out]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0 or not os.path.isfile(out):
            tail = "\n".join(proc.stdout.strip().splitlines()[-15:])
            log(f"{key} {phase} FAILED (exit {proc.returncode}) after {wall:.0f}s:\n{tail}")
            return {"error": f"exit {proc.returncode}: {tail.splitlines()[-1] if tail else ''}"}
        with open(out) as f:
            result = json.load(f)
    log(f"{key} {phase}: {result['images_per_s']:.2f} img/s, peak {result['peak_mem_mib']:.0f} MiB "
        f"(worker {wall:.0f}s)")
    return result


def merge_phases(train: Dict[str, Any], infer: Dict[str, Any]) -> Dict[str, Any]:
    """One model's summary from its train and infer results (None where a phase failed)."""
    ok = [r for r in (train, infer) if "error" not in r]
    first = ok[0] if ok else {}
    return {
        "label": first.get("label"),
        "params": first.get("params"),
        "trainable_params": first.get("trainable_params"),
        "flops": infer.get("flops"),
        "train_images_per_s": train.get("images_per_s"),
        "infer_images_per_s": infer.get("images_per_s"),
        "train_peak_mem_mib": train.get("peak_mem_mib"),
        "infer_peak_mem_mib": infer.get("peak_mem_mib"),
        "base_rss_mib": first.get("base_rss_mib"),
        "train_proposals_per_image": train.get("proposals_per_image"),
        "infer_proposals_per_image": infer.get("proposals_per_image"),
        "train": train,
        "infer": infer,
    }


RATIO_FIELDS = ("params", "flops", "train_images_per_s", "infer_images_per_s",
                "train_peak_mem_mib", "infer_peak_mem_mib")


def ratios(rw: Dict[str, Any], rn: Dict[str, Any]) -> Dict[str, Optional[float]]:
    """RandWire / ResNet of each measured field (None where either is missing or zero)."""
    out = {}
    for f in RATIO_FIELDS:
        a, b = rw.get(f), rn.get(f)
        out[f] = a / b if a is not None and b else None
    return out


def _fmt(value: Optional[float], fmt: str) -> str:
    """Format a number, or "n/a" for None."""
    return "n/a" if value is None else format(value, fmt)


def markdown_report(args: argparse.Namespace, summary: Dict[str, Dict[str, Any]],
                    pair_ratios: Dict[str, Dict[str, Optional[float]]]) -> str:
    """The Markdown report: setup lines, then one table per pair with a ratio row."""
    on_cuda = args.device.startswith("cuda")
    mem = "CUDA max allocated" if on_cuda else "peak RSS of the worker process"
    done = [s[ph] for s in summary.values() for ph in PHASES if "error" not in s[ph]]
    dev = done[0]["device_name"] if done else "?"  # read in a worker: the parent does not touch CUDA
    threads = done[0]["threads"] if done else args.threads
    lines = [
        "# RandWire vs ResNet-50: speed and memory", "",
        f"- device: {args.device} ({dev}); torch {torch.__version__}; CPU threads {threads}; amp {args.amp}",
        f"- timing: {args.warmup} warm-up + {args.iters} timed steps per model and phase; "
        "images/s = batch x steps / seconds",
        f"- memory: {mem}, per model and phase (MiB)",
        "- GFLOPs: fvcore, one image, multiply-add = 1 flop (detectors: backbone + FPN only)",
    ]
    titles = {
        "cls": f"## Classifiers: batch {args.batch}, {args.size}x{args.size}, random images",
        "det": (f"## Detectors (Faster R-CNN + FPN): batch {args.det_batch}, "
                f"{args.det_size[0]}x{args.det_size[1]}, "
                + ("BCCD train images with their boxes" if args.bccd_root
                   else "random images with 3-8 random gt boxes each")),
    }
    header = ("| model | params (M) | GFLOPs/img | train img/s | infer img/s "
              "| train peak mem (MiB) | infer peak mem (MiB) |")
    for pair, r in pair_ratios.items():
        det = pair == "det"
        lines += ["", titles[pair], "", header + (" RPN proposals/img train, infer |" if det else ""),
                  "|" + "---|" * (8 if det else 7)]
        for key in PAIRS[pair]:
            s = summary[key]
            params = s["params"] / 1e6 if s["params"] is not None else None
            flops = s["flops"] / 1e9 if s["flops"] is not None else None
            lines.append(
                f"| {s['label'] or key} | {_fmt(params, '.2f')} | {_fmt(flops, '.2f')} "
                f"| {_fmt(s['train_images_per_s'], '.2f')} | {_fmt(s['infer_images_per_s'], '.2f')} "
                f"| {_fmt(s['train_peak_mem_mib'], '.0f')} | {_fmt(s['infer_peak_mem_mib'], '.0f')} |"
                + (f" {_fmt(s['train_proposals_per_image'], '.0f')}, "
                   f"{_fmt(s['infer_proposals_per_image'], '.0f')} |" if det else "")
            )
        lines.append("| **ratio RandWire / ResNet** | "
                     + " | ".join(_fmt(r[f], ".2f") + ("x" if r[f] is not None else "") for f in RATIO_FIELDS)
                     + " |" + (" |" if det else ""))
    bases = [s["base_rss_mib"] for s in summary.values() if s.get("base_rss_mib")]
    if bases:
        lines += ["", f"CPU peak RSS includes {min(bases):.0f}-{max(bases):.0f} MiB of interpreter and "
                  "libraries (RSS before the model was built)."]
    errors = [f"{k} {ph}: {s[ph]['error']}" for k, s in summary.items() for ph in PHASES if "error" in s[ph]]
    if errors:
        lines += ["", "Failed: " + "; ".join(errors)]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point: a worker measures one model and phase; otherwise run all workers and report."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = resolve_defaults(parser.parse_args(argv), parser)
    if args.worker:
        run_worker(args)
        return 0
    pairs = list(PAIRS) if args.only == "all" else [args.only]
    t0 = time.perf_counter()
    summary: Dict[str, Dict[str, Any]] = {}
    for pair in pairs:
        for key in PAIRS[pair]:
            res = {phase: spawn_worker(argv, args, key, phase) for phase in PHASES}
            summary[key] = merge_phases(res["train"], res["infer"])
    pair_ratios = {pair: ratios(summary[PAIRS[pair][0]], summary[PAIRS[pair][1]]) for pair in pairs}
    print(markdown_report(args, summary, pair_ratios))
    log(f"total {time.perf_counter() - t0:.0f}s")
    if args.json:
        setup = {k: v for k, v in vars(args).items() if k not in ("worker", "worker_out", "json")}
        payload = {"setup": setup, "results": summary, "ratios": pair_ratios}
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(payload, f, indent=2)
        log(f"wrote {args.json}")
    failed = any("error" in s[ph] for s in summary.values() for ph in PHASES)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
