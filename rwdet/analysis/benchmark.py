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

On a CPU, run on an otherwise idle machine and set ``threads`` to the free physical cores.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torchvision
from detectron2 import model_zoo
from detectron2.config import get_cfg
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from PIL import Image
from torch import nn

# Everything either kind of model needs is imported here, before a worker reads its baseline
# RSS, so both sides of a pair start from the same libraries.
from ..classification.config import load_cls_config
from ..classification.model import build_classifier
from ..config import randwire_graph_specs
from ..data.datasets import BCCD_CLASSES, load_voc_instances
from ..engine.defaults import load_config
from ..graphs import format_setting
from ..layers import fold_batchnorm
from ..utils.io import atomic_write
from .flops import count_model, machine_description
from .profile import ONEDNN_KINDS, onednn_primitive_times, profile_markdown, profile_op_kinds

__all__ = [
    "PAIR_FAMILIES",
    "PHASES",
    "BenchmarkSetup",
    "ModelBench",
    "PairSpec",
    "SideSpec",
    "count_norm_layers",
    "default_setup",
    "markdown_report",
    "pair_specs",
    "parse_size",
    "ratio_summary",
    "round_order",
    "run_benchmark",
    "run_pair",
    "saved_activation_bytes",
    "select_pairs",
    "write_json",
]

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: The RandWire detector of the detector pairs (config paths are relative to the repository root,
#: so that the JSON names no machine-local path).
DET_CONFIG = "configs/faster_rcnn_randwire_ws.yaml"
#: The classification configs of the classifier pairs.
C109_CONFIG = "configs/imagenet/randwire_ws_c109.yaml"
SMALL_CONFIG = "configs/imagenet/randwire_ws_small.yaml"
RESNET50_CONFIG = "configs/imagenet/resnet50.yaml"
#: Detectron2 model-zoo config of the reference detector.
R50_FPN_CONFIG = "COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml"

#: Pair families, in report order; ``cls_c109`` makes one pair per batch (``cls_c109_b<B>``).
PAIR_FAMILIES = ("cls_c109", "cls_small", "det_trainable", "det_frozen")
PHASES = ("train", "infer")
#: The two sides of every pair; the first is the numerator of the ratios.
SIDES = ("randwire", "reference")
#: The ratios of a pair: name -> (phase of the figure, key in a round's result).
RATIO_KEYS = {"train": ("train", "images_per_s"), "infer": ("infer", "images_per_s"),
              "train_peak_mem": ("train", "peak_mem_mib")}
NUM_IMAGENET_CLASSES = 1000
#: Learning rate of the timed SGD steps: 0 keeps the weights (and so the detectors' proposals)
#: fixed; torch's SGD does the same arithmetic for any lr.
SGD_LR = 0.0
#: ``BenchmarkSetup.compile`` values: no compilation, or a ``torch.compile`` mode.
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")


# ---------------------------------------------------------------------------
# setup and pairs
# ---------------------------------------------------------------------------


def parse_size(text: str) -> Tuple[int, int]:
    """Parse a detector input size: ``"S"`` (short side S, 4:3 landscape: S x round(4S/3)) or ``"HxW"``.

    Returns:
        (height, width) in pixels.

    Raises:
        ValueError: not of either form, or a side < 32.
    """
    try:
        if "x" in text.lower():
            h, w = (int(v) for v in text.lower().split("x"))
        else:
            h = int(text)
            w = int(round(h * 4 / 3))
    except ValueError:
        raise ValueError(f"detector size {text!r} must be S or HxW, e.g. 800 or 320x427") from None
    if min(h, w) < 32:
        raise ValueError(f"detector size {text!r}: both sides must be >= 32")
    return h, w


@dataclass(frozen=True)
class BenchmarkSetup:
    """What to measure and how (see the module docstring); :func:`default_setup` fills it in.

    Attributes:
        device: "cpu", "cuda" or "cuda:N".
        threads: ``torch.set_num_threads`` in each worker (None: torch's default).
        batches: classifier batches; one ``cls_c109`` pair each, ``cls_small`` uses the first.
        size: classifier input side in pixels.
        det_size: detector input (height, width) in pixels.
        det_batch: detector batch.
        warmup, iters: untimed and timed steps per side, phase and round.
        rounds: rounds per phase (each side measured once per round).
        deploy: fold BN into convs before the inference rounds (both sides).
        amp: "none", "bf16" or "fp16": ``torch.autocast`` dtype (fp16 on CUDA only, with a
            GradScaler; bf16 on CUDA or CPU).
        compile: "none", or a ``torch.compile`` mode ("default", "reduce-overhead" (CUDA graphs),
            "max-autotune") applied to both sides alike: the whole classifier, or the detector's
            backbone + FPN (the heads have data-dependent shapes). Inference recompiles after
            the BN fold.
        compile_backend: ``torch.compile`` backend ("inductor"; "aot_eager" or "eager" to check
            that a model traces without generating code).
        rw_opts: ``KEY VALUE`` overrides of every RandWire config (after the pair's own).
        r50_opts: ``KEY VALUE`` overrides of both R50-FPN configs (after the pair's own).
        bccd_root: BCCD dataset root for the detectors' images ("" = random images).
        seed: seed of the models and of the synthetic inputs.
        flops: count FLOPs with fvcore.
        random_heads: keep the detectors' random RPN and box-predictor layers.
        channels_last: both sides' weights and inputs in ``torch.channels_last`` (NHWC) memory
            format (timm's ``--channels-last``); convs then return NHWC maps, which oneDNN's
            depthwise kernels run faster. The fold for inference keeps the format.
        profile: after each phase's rounds, profile 2 x ``iters`` more steps of each side, one side
            after the other, and report their time per op kind (:mod:`rwdet.analysis.profile`).
    """

    device: str
    threads: Optional[int]
    batches: Tuple[int, ...]
    size: int
    det_size: Tuple[int, int]
    det_batch: int
    warmup: int
    iters: int
    rounds: int = 5
    deploy: bool = True
    amp: str = "none"
    compile: str = "none"
    compile_backend: str = "inductor"
    rw_opts: Tuple[str, ...] = ()
    r50_opts: Tuple[str, ...] = ()
    bccd_root: str = ""
    seed: int = 0
    flops: bool = True
    random_heads: bool = False
    channels_last: bool = False
    profile: bool = False

    def check(self) -> None:
        """Raise ValueError naming the first bad field and what is allowed."""
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"device={self.device!r}; allowed: 'cpu', 'cuda', 'cuda:N'")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device={self.device!r} but CUDA is not available; use 'cpu'")
        if self.amp not in ("none", "bf16", "fp16"):
            raise ValueError(f"amp={self.amp!r}; allowed: 'none', 'bf16', 'fp16'")
        if self.amp == "fp16" and not self.device.startswith("cuda"):
            raise ValueError(f"amp='fp16' is for CUDA only (device={self.device!r}); on the CPU use 'bf16'")
        if self.compile not in COMPILE_MODES:
            raise ValueError(f"compile={self.compile!r}; allowed: {', '.join(repr(m) for m in COMPILE_MODES)}")
        if self.compile == "reduce-overhead" and not self.device.startswith("cuda"):
            raise ValueError("compile='reduce-overhead' (CUDA graphs) is for CUDA only "
                             f"(device={self.device!r})")
        if self.compile != "none":
            from torch._dynamo import list_backends

            allowed = sorted(set(list_backends()) | {"inductor", "eager", "aot_eager"})
            if self.compile_backend not in allowed:
                raise ValueError(f"compile_backend={self.compile_backend!r}; allowed: {', '.join(allowed)}")
        if not self.batches or min(self.batches) < 1:
            raise ValueError(f"batches={list(self.batches)}: need at least one, each >= 1")
        for name in ("size", "det_batch", "iters", "rounds"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if min(self.det_size) < 32:
            raise ValueError(f"det_size={self.det_size}: both sides must be >= 32")
        if self.warmup < 0:
            raise ValueError(f"warmup={self.warmup} must be >= 0")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads={self.threads} must be >= 1 (or None)")
        for name in ("rw_opts", "r50_opts"):
            if len(getattr(self, name)) % 2:
                raise ValueError(f"{name}={list(getattr(self, name))}: must be KEY VALUE pairs")
        if self.bccd_root and not os.path.isdir(self.bccd_root):
            raise ValueError(f"bccd_root={self.bccd_root!r} is not a directory")


def default_setup(device: Optional[str] = None, **overrides: Any) -> BenchmarkSetup:
    """A checked :class:`BenchmarkSetup` with the device's defaults, then ``overrides``.

    Defaults: CPU: classifier batches 4 and 16 at 224, detectors batch 2 at 320x427, warmup 1,
    iters 2. CUDA: classifier batch 32 at 224, detectors batch 2 at 800x1067, warmup 5, iters 20.
    Both: 5 rounds, deploy on. ``device`` None picks "cuda" when available, else "cpu".
    Overrides whose value is None keep the default.

    Raises:
        TypeError: an unknown field name. ValueError: see :meth:`BenchmarkSetup.check`.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    on_cuda = device.startswith("cuda")
    setup = BenchmarkSetup(
        device=device, threads=None, batches=(32,) if on_cuda else (4, 16), size=224,
        det_size=(800, 1067) if on_cuda else (320, 427), det_batch=2,
        warmup=5 if on_cuda else 1, iters=20 if on_cuda else 2,
    )
    setup = replace(setup, **{k: v for k, v in overrides.items() if v is not None})
    setup = replace(setup, batches=tuple(setup.batches), det_size=tuple(setup.det_size),
                    rw_opts=tuple(setup.rw_opts), r50_opts=tuple(setup.r50_opts))
    setup.check()
    return setup


@dataclass(frozen=True)
class SideSpec:
    """One model of a pair, as its worker builds it.

    Attributes:
        model: "randwire_cls", "resnet50_cls", "mobilenet_v2_cls", "randwire_det" or "r50fpn_det".
        config: config file, absolute or relative to the repository root (a model-zoo name for
            "r50fpn_det"; "" for "mobilenet_v2_cls").
        opts: ``KEY VALUE`` overrides of the config.
    """

    model: str
    config: str = ""
    opts: Tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        """"cls" or "det"."""
        return self.model.rsplit("_", 1)[1]


@dataclass(frozen=True)
class PairSpec:
    """A pair: RandWire (``sides[0]``, the ratios' numerator) against a reference (``sides[1]``).

    ``batch`` images of ``size`` (height, width) pixels per step; ``title`` heads its table.
    """

    name: str
    title: str
    kind: str
    batch: int
    size: Tuple[int, int]
    sides: Tuple[SideSpec, SideSpec]


def _freeze_opts(freeze_at: int, norm: str, randwire: bool) -> List[str]:
    """Overrides of a detector config for a freeze setting: MODEL.BACKBONE.FREEZE_AT and the norm."""
    opts = ["MODEL.BACKBONE.FREEZE_AT", str(freeze_at)]
    if not randwire:
        return opts + ["MODEL.RESNETS.NORM", norm]
    opts += ["MODEL.RANDWIRE.NORM", norm]  # RandWire reads MODEL.BACKBONE.FREEZE_AT as ResNet does
    return opts


def pair_specs(setup: BenchmarkSetup) -> Dict[str, PairSpec]:
    """Every pair of ``setup``, by name, in report order (see the module docstring).

    ``setup.rw_opts`` go after each RandWire side's own overrides, ``setup.r50_opts`` after each
    R50-FPN side's.
    """
    rw, r50 = tuple(setup.rw_opts), tuple(setup.r50_opts)
    square = (setup.size, setup.size)
    pairs: Dict[str, PairSpec] = {}
    for b in setup.batches:
        pairs[f"cls_c109_b{b}"] = PairSpec(
            f"cls_c109_b{b}", f"RandWire-WS C=109 vs ResNet-50 classifiers, batch {b}", "cls", b, square,
            (SideSpec("randwire_cls", C109_CONFIG, rw), SideSpec("resnet50_cls", RESNET50_CONFIG)),
        )
    pairs["cls_small"] = PairSpec(
        "cls_small", f"RandWire-WS small C=78 vs MobileNetV2 classifiers, batch {setup.batches[0]}", "cls",
        setup.batches[0], square, (SideSpec("randwire_cls", SMALL_CONFIG, rw), SideSpec("mobilenet_v2_cls")),
    )
    for name, freeze_at, norm, what in (("det_trainable", 0, "BN", "trainable BN, nothing frozen"),
                                        ("det_frozen", 2, "FrozenBN", "FrozenBN, FREEZE_AT 2")):
        pairs[name] = PairSpec(
            name, f"Faster R-CNN RandWire-WS-FPN vs R50-FPN, {what}, batch {setup.det_batch}", "det",
            setup.det_batch, tuple(setup.det_size),
            (SideSpec("randwire_det", DET_CONFIG, tuple(_freeze_opts(freeze_at, norm, True)) + rw),
             SideSpec("r50fpn_det", R50_FPN_CONFIG, tuple(_freeze_opts(freeze_at, norm, False)) + r50)),
        )
    return pairs


def select_pairs(names: Optional[Iterable[str]], setup: BenchmarkSetup) -> List[PairSpec]:
    """The pairs named by ``names``: families (:data:`PAIR_FAMILIES`) or exact pair names.

    Args:
        names: e.g. ``["cls_c109", "det_frozen"]`` or ``["cls_c109_b4"]``; None or empty: all.

    Returns:
        list[PairSpec] in report order, each once.

    Raises:
        ValueError: a name that is neither a family nor a pair of ``setup`` (lists the allowed).
    """
    specs = pair_specs(setup)
    if not names:
        return list(specs.values())
    wanted = set()
    for name in names:
        members = [p for p in specs if p == name or (name in PAIR_FAMILIES and p.startswith(name))]
        if not members:
            raise ValueError(f"unknown pair {name!r}; allowed: {list(PAIR_FAMILIES) + list(specs)}")
        wanted.update(members)
    return [spec for name, spec in specs.items() if name in wanted]


# ---------------------------------------------------------------------------
# arithmetic
# ---------------------------------------------------------------------------


def round_order(round_index: int) -> Tuple[int, int]:
    """Which side goes first in a round: (0, 1) in even rounds, (1, 0) in odd ones (A B, B A, ...)."""
    return (0, 1) if round_index % 2 == 0 else (1, 0)


def ratio_summary(numerators: Sequence[Optional[float]],
                  denominators: Sequence[Optional[float]]) -> Dict[str, Any]:
    """Per-round ratios ``numerators[r] / denominators[r]``, their median and [min, max].

    Rounds where either figure is None or the denominator is 0 are left out.

    Returns:
        ``{"ratios": [...], "median": float or None, "spread": [min, max] or None}``.

    Raises:
        ValueError: the two sequences differ in length.
    """
    if len(numerators) != len(denominators):
        raise ValueError(f"{len(numerators)} numerators but {len(denominators)} denominators")
    ratios = [a / b for a, b in zip(numerators, denominators) if a is not None and b]
    if not ratios:
        return {"ratios": [], "median": None, "spread": None}
    return {"ratios": ratios, "median": statistics.median(ratios), "spread": [min(ratios), max(ratios)]}


def _median(values: Iterable[Optional[float]]) -> Optional[float]:
    """Median of the values that are not None (None if there are none)."""
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


# ---------------------------------------------------------------------------
# measuring one model (inside a worker)
# ---------------------------------------------------------------------------


def saved_activation_bytes(fn: Callable[[], Any], exclude: Iterable[torch.Tensor] = ()) -> int:
    """Bytes of the tensors autograd saves for backward while ``fn()`` runs.

    Every saved tensor is counted by its whole storage (``untyped_storage().nbytes()``), each
    storage once (tensors and views sharing a storage count once); storages of ``exclude``
    (e.g. the model's parameters and buffers) are not counted. ``fn``'s result is dropped
    after counting, so its graph is freed without a backward.

    Args:
        fn: runs a forward with autograd on (e.g. a training forward and its loss).
        exclude: tensors whose storages are not activations.

    Returns:
        int: bytes.
    """
    excluded = {t.untyped_storage().data_ptr() for t in exclude}
    seen: Dict[int, Any] = {}  # holding the storages keeps their addresses from being reused

    def pack(t: torch.Tensor) -> torch.Tensor:
        """Note the tensor's storage; autograd keeps the tensor itself."""
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr and ptr not in excluded:
            seen.setdefault(ptr, storage)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    total = sum(s.nbytes() for s in seen.values())
    del out
    seen.clear()
    return int(total)


def count_norm_layers(model: nn.Module) -> int:
    """Number of BatchNorm layers in ``model`` (torch's ``_BatchNorm`` and Detectron2's
    ``FrozenBatchNorm2d``): what :func:`rwdet.layers.fold_batchnorm` removes."""
    return sum(isinstance(m, (nn.modules.batchnorm._BatchNorm, FrozenBatchNorm2d)) for m in model.modules())


def _synchronize(device: str) -> None:
    """Wait for the device's queued work (CUDA); no-op on the CPU."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _time_steps(step: Callable[[], None], warmup: int, iters: int, device: str) -> float:
    """Run ``warmup`` untimed steps, then return the wall seconds of ``iters`` steps."""
    for _ in range(warmup):
        step()
    _synchronize(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    _synchronize(device)
    return time.perf_counter() - t0


def _max_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024.0  # bytes on macOS, KiB on Linux


def _randwire_label(cfg, what: str) -> str:
    """E.g. ``RandWire-WS(4, 0.75) regular C=109 N=32 classifier``."""
    rw = cfg.MODEL.RANDWIRE
    spec = randwire_graph_specs(cfg)[-1]
    return f"RandWire-{format_setting(spec.model, spec.params)} {rw.REGIME} C={rw.CHANNELS} N={spec.num_nodes} {what}"


def _build_model(side: SideSpec, device: str) -> Tuple[nn.Module, Any, str]:
    """Build ``side``'s model (random init) on ``device``: (model, cfg or None, label).

    Raises:
        ValueError: an unknown ``side.model``, or bad config overrides.
    """
    opts = ["MODEL.DEVICE", device, *side.opts]
    config = os.path.join(REPO_ROOT, side.config)  # side.config itself when absolute
    if side.model in ("randwire_cls", "resnet50_cls"):
        cfg = load_cls_config(config, opts)
        label = _randwire_label(cfg, "classifier") if side.model == "randwire_cls" else "torchvision ResNet-50"
        return build_classifier(cfg).to(device), cfg, label
    if side.model == "mobilenet_v2_cls":
        model = torchvision.models.mobilenet_v2(weights=None, num_classes=NUM_IMAGENET_CLASSES)
        return model.to(device), None, "torchvision MobileNetV2"
    if side.model == "randwire_det":
        cfg = load_config(config, opts)
        label = f"Faster R-CNN {_randwire_label(cfg, 'FPN')}"
    elif side.model == "r50fpn_det":
        cfg = get_cfg()
        cfg.merge_from_file(model_zoo.get_config_file(side.config))
        cfg.merge_from_list(["MODEL.WEIGHTS", "", *opts])
        cfg.freeze()
        label = "Faster R-CNN R50-FPN (Detectron2 model zoo)"
    else:
        raise ValueError(f"unknown model {side.model!r}; allowed: randwire_cls, resnet50_cls, "
                         "mobilenet_v2_cls, randwire_det, r50fpn_det")
    return build_model(cfg), cfg, label


def _neutralize_detector_heads(model: nn.Module) -> None:
    """Zero the last layers of the RPN head and of the box predictor (weights and biases).

    The RPN then scores all anchors 0 and predicts zero deltas, so its proposals depend only on
    the anchors and the image size; the box predictor gives uniform class scores (below the
    test score threshold) and zero deltas.
    """
    rpn_head = model.proposal_generator.rpn_head
    predictor = model.roi_heads.box_predictor
    with torch.no_grad():
        for layer in (rpn_head.objectness_logits, rpn_head.anchor_deltas, predictor.cls_score, predictor.bbox_pred):
            layer.weight.zero_()
            layer.bias.zero_()


def _synthetic_detection_images(batch: int, size: Tuple[int, int], seed: int) -> List[Tuple[torch.Tensor, ...]]:
    """``batch`` random RGB images of ``size`` with 3-8 random boxes each (seeded).

    Returns:
        per image: (image float (3, H, W) in [0, 255] RGB, boxes (n, 4) XYXY absolute,
        class ids (n,) in [0, 80)).
    """
    h, w = size
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batch):
        image = torch.rand(3, h, w, generator=g) * 255.0
        n = int(torch.randint(3, 9, (1,), generator=g))
        wh = torch.rand(n, 2, generator=g) * 0.35 + 0.05  # 5% .. 40% of the side
        bw, bh = wh[:, 0] * w, wh[:, 1] * h
        x1 = torch.rand(n, generator=g) * (w - bw)
        y1 = torch.rand(n, generator=g) * (h - bh)
        out.append((image, torch.stack([x1, y1, x1 + bw, y1 + bh], dim=1), torch.randint(0, 80, (n,), generator=g)))
    return out


def _bccd_detection_images(root: str, batch: int, size: Tuple[int, int]) -> List[Tuple[torch.Tensor, ...]]:
    """The first ``batch`` BCCD train images, resized to ``size``, with their boxes.

    Returns:
        as :func:`_synthetic_detection_images` (class ids 0..2: RBC, WBC, Platelets).

    Raises:
        RuntimeError: no train images under ``root``.
    """
    records = load_voc_instances(root, "train", BCCD_CLASSES)
    if not records:
        raise RuntimeError(f"no BCCD train images under {root!r}")
    h, w = size
    out = []
    for i in range(batch):
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


def _detection_inputs(images: Sequence[Tuple[torch.Tensor, ...]], cfg, device: str,
                      with_gt: bool) -> List[Dict[str, Any]]:
    """Detectron2 inputs (list of dicts) on ``device`` in the model's ``INPUT.FORMAT``.

    ``height``/``width`` equal the image size, so inference does not rescale its outputs. With
    ``with_gt``, each dict has ``instances`` with ``gt_boxes`` and ``gt_classes`` (class ids
    modulo the model's number of classes).
    """
    num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    inputs = []
    for image, boxes, classes in images:
        if cfg.INPUT.FORMAT == "BGR":
            image = image.flip(0)
        h, w = image.shape[-2:]
        d = {"image": image.contiguous().to(device), "height": h, "width": w}
        if with_gt:
            inst = Instances((h, w))
            inst.gt_boxes = Boxes(boxes)
            inst.gt_classes = classes % num_classes
            d["instances"] = inst.to(device)
        inputs.append(d)
    return inputs


class ModelBench:
    """One model of a pair with its inputs, measured round by round (what a worker runs).

    Built once; then :meth:`train_round` any number of times, :meth:`stats` once, and
    :meth:`infer_round` any number of times (the first one switches to eval mode and, with
    ``setup.deploy``, folds the BNs; training after that raises RuntimeError);
    :meth:`profile` of a phase after its rounds.

    Args:
        side: the model to build.
        pair: its pair (batch and input size).
        setup: device, threads, steps, amp, seed, inputs (see :class:`BenchmarkSetup`).
    """

    def __init__(self, side: SideSpec, pair: PairSpec, setup: BenchmarkSetup):
        self.side, self.pair, self.setup = side, pair, setup
        self.device = setup.device
        if setup.threads is not None:
            torch.set_num_threads(setup.threads)
        if self.device.startswith("cuda"):
            if torch.device(self.device).index is not None:
                torch.cuda.set_device(torch.device(self.device))
            torch.backends.cudnn.benchmark = True  # fixed input sizes
        self.base_rss_mib = _max_rss_mib()  # before the model exists
        torch.manual_seed(setup.seed)
        self.model, self.cfg, self.label = _build_model(side, self.device)
        self.memory_format = torch.channels_last if setup.channels_last else torch.contiguous_format
        self.model = self.model.to(memory_format=self.memory_format)
        self.batch = pair.batch
        if side.kind == "cls":
            g = torch.Generator().manual_seed(setup.seed)
            self.x = torch.randn(pair.batch, 3, *pair.size, generator=g).to(self.device)
            self.x = self.x.contiguous(memory_format=self.memory_format)
            self.y = torch.randint(0, NUM_IMAGENET_CLASSES, (pair.batch,), generator=g).to(self.device)
        else:
            if not setup.random_heads:
                _neutralize_detector_heads(self.model)
            images = (_bccd_detection_images(setup.bccd_root, pair.batch, pair.size) if setup.bccd_root
                      else _synthetic_detection_images(pair.batch, pair.size, setup.seed))
            self.train_inputs = _detection_inputs(images, self.cfg, self.device, with_gt=True)
            self.infer_inputs = _detection_inputs(images, self.cfg, self.device, with_gt=False)
            self.proposal_counts: List[int] = []
            self.model.proposal_generator.register_forward_hook(
                lambda module, inputs, output: self.proposal_counts.extend(len(p) for p in output[0]))
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(params, lr=SGD_LR, momentum=0.9, weight_decay=1e-4)
        self.scaler = torch.amp.GradScaler("cuda", enabled=setup.amp == "fp16")
        self.deployed: Optional[Dict[str, int]] = None  # norm-layer counts once in eval mode
        self._compile()

    def _compile(self) -> None:
        """With ``setup.compile``, route the forward through ``torch.compile``: the classifier as
        a whole (``self.forward``), or the detector's backbone + FPN in place of
        ``model.backbone`` (kept uncompiled in ``self.backbone`` for FLOPs and the BN fold)."""
        s = self.setup
        self.forward: Callable[..., Any] = self.model
        self.backbone = None if self.side.kind == "cls" else self.model.backbone
        if s.compile == "none":
            return
        opts = dict(backend=s.compile_backend, mode=None if s.compile == "default" else s.compile)
        if s.compile_backend != "inductor":
            opts.pop("mode")  # modes are inductor's
        if self.side.kind == "cls":
            self.forward = torch.compile(self.model, **opts)
        else:
            self.model.backbone = torch.compile(self.backbone, **opts)

    # -- steps -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _eager(self):
        """Within it, the forward runs uncompiled (saved-tensor hooks and FLOP counting)."""
        forward, compiled = self.forward, None if self.backbone is None else self.model.backbone
        self.forward = self.model
        if self.backbone is not None:
            self.model.backbone = self.backbone
        try:
            yield
        finally:
            self.forward = forward
            if compiled is not None:
                self.model.backbone = compiled

    def _autocast(self):
        """``torch.autocast`` on this device with the ``amp`` dtype, or a null context."""
        if self.setup.amp == "none":
            return contextlib.nullcontext()
        return torch.autocast(torch.device(self.device).type,
                              dtype=torch.bfloat16 if self.setup.amp == "bf16" else torch.float16)

    def _storage(self):
        """Detectron2's ``EventStorage`` for a detector (its losses log into one), else a null context."""
        if self.side.kind == "det":
            return EventStorage(0)
        return contextlib.nullcontext()

    def loss(self) -> torch.Tensor:
        """One training forward and its scalar loss (cross-entropy, or the detector's loss sum)."""
        with self._autocast():
            if self.side.kind == "cls":
                return nn.functional.cross_entropy(self.forward(self.x), self.y)
            return sum(self.model(self.train_inputs).values())

    def train_step(self) -> None:
        """Forward, loss, backward, SGD step (learning rate 0)."""
        loss = self.loss()
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def infer_step(self) -> None:
        """One inference forward without autograd."""
        with torch.no_grad(), self._autocast():
            self.forward(self.x if self.side.kind == "cls" else self.infer_inputs)

    def profile(self, phase: str) -> Dict[str, float]:
        """Two passes of ``iters`` steps of ``phase`` under torch.profiler, after that phase's
        rounds (so warm).

        Returns:
            ``{op kind: ms per step, "total": ...}`` (:func:`rwdet.analysis.profile.profile_op_kinds`).

        Raises:
            ValueError: an unknown phase. RuntimeError: "train" after the first inference round.
        """
        return self._measure_phase("profile", phase,
                                   lambda step: profile_op_kinds(step, self.setup.iters, self.device))

    def onednn(self, phase: str) -> Dict[str, float]:
        """``iters`` steps of ``phase`` with oneDNN's verbose log on, after that phase's rounds.

        Returns:
            ``{kind: ms per step, "total": ...}`` of oneDNN's primitives
            (:func:`rwdet.analysis.profile.onednn_primitive_times`); ``{}`` off the CPU or
            without oneDNN.

        Raises:
            ValueError: an unknown phase. RuntimeError: "train" after the first inference round.
        """
        if not self.device.startswith("cpu"):
            if phase not in PHASES:
                raise ValueError(f"phase={phase!r}; allowed: {', '.join(PHASES)}")
            return {}
        return self._measure_phase("onednn", phase, lambda step: onednn_primitive_times(step, self.setup.iters))

    def _measure_phase(self, what: str, phase: str,
                       measure: Callable[[Callable[[], None]], Dict[str, float]]) -> Dict[str, float]:
        """``measure`` (a function of one step) applied to the train or inference step, with the
        model in that phase's form; shared by :meth:`profile` and :meth:`onednn`.

        Raises:
            ValueError: an unknown phase. RuntimeError: "train" after the first inference round.
        """
        if phase not in PHASES:
            raise ValueError(f"phase={phase!r}; allowed: {', '.join(PHASES)}")
        if phase == "train":
            if self.deployed is not None:
                raise RuntimeError(f"{what}('train') after infer_round: the model is in eval (deploy) form")
            self.model.train()
            with self._storage():
                out = measure(self.train_step)
        else:
            self.deploy()
            out = measure(self.infer_step)
        self._proposals()  # measured steps are not timed rounds
        return out

    # -- rounds ------------------------------------------------------------------------

    def _proposals(self) -> Optional[float]:
        """Mean RPN proposals per image since the last call (detectors), then reset; else None."""
        if self.side.kind != "det":
            return None
        counts, self.proposal_counts[:] = list(self.proposal_counts), []
        return sum(counts) / len(counts) if counts else None

    def train_round(self) -> Dict[str, Any]:
        """``warmup`` untimed then ``iters`` timed training steps.

        Returns:
            dict: seconds, images_per_s, peak_mem_mib (see the module docstring; on the CPU
            also peak_rss_mib and base_rss_mib), proposals_per_image (detectors).

        Raises:
            RuntimeError: called after the first inference round (the model is folded).
        """
        if self.deployed is not None:
            raise RuntimeError("train_round after infer_round: the model is in eval (deploy) form")
        s = self.setup
        self.model.train()
        if self.device.startswith("cuda"):
            _synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        with self._storage():
            seconds = _time_steps(self.train_step, s.warmup, s.iters, self.device)
        out: Dict[str, Any] = {"seconds": seconds, "images_per_s": self.batch * s.iters / seconds}
        if self.device.startswith("cuda"):
            out["peak_mem_mib"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            peak = _max_rss_mib()
            out.update(peak_mem_mib=peak - self.base_rss_mib, peak_rss_mib=peak, base_rss_mib=self.base_rss_mib)
        out["proposals_per_image"] = self._proposals()
        return out

    def stats(self) -> Dict[str, Any]:
        """Figures that need no timing: params, saved activations of one training forward, FLOPs.

        Call it after the train rounds and before the first inference round (FLOPs are of
        the unfolded model).

        Returns:
            dict: params, trainable_params, saved_activation_bytes, flops (None without
            ``setup.flops``), flops_of ("classifier" or "backbone+FPN").
        """
        model = self.model
        was_training = model.training
        model.train()
        exclude = [*model.parameters(), *model.buffers()]
        with self._storage(), self._eager():
            saved = saved_activation_bytes(self.loss, exclude=exclude)  # of the eager model
        flops = None
        if self.setup.flops:
            if self.side.kind == "cls":
                flops, _ = count_model(model, self.x[:1])
            else:
                images = model.preprocess_image(self.infer_inputs[:1]).tensor  # normalised, padded
                flops, _ = count_model(self.backbone, images)  # uncompiled
        model.train(was_training)
        self._proposals()  # the forward above is not a timed step
        return {
            "params": sum(p.numel() for p in model.parameters()),
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "saved_activation_bytes": saved, "flops": flops,
            "flops_of": "classifier" if self.side.kind == "cls" else "backbone+FPN",
        }

    def deploy(self) -> Dict[str, int]:
        """Switch to eval mode and, with ``setup.deploy``, fold the BNs into the convs (once).

        Returns:
            ``{"norm_layers_before": n, "norm_layers_after": m}`` (m == n without deploy).

        Raises:
            ImportError: deploy asked for but ``rwdet.layers.fold_batchnorm`` is missing.
        """
        if self.deployed is None:
            self.model.eval()
            before = count_norm_layers(self.model)
            if self.setup.deploy:
                if self.backbone is not None:
                    self.model.backbone = self.backbone  # fold the uncompiled modules
                self.model = fold_batchnorm(self.model).to(memory_format=self.memory_format)
                self._compile()  # the folded model compiles anew
            self.deployed = {"norm_layers_before": before, "norm_layers_after": count_norm_layers(self.model)}
        return self.deployed

    def infer_round(self) -> Dict[str, Any]:
        """``warmup`` untimed then ``iters`` timed inference steps (after :meth:`deploy`).

        Returns:
            dict: seconds, images_per_s, norm_layers_before/after, proposals_per_image
            (detectors), and on CUDA peak_mem_mib of the round.
        """
        s = self.setup
        out: Dict[str, Any] = dict(self.deploy())
        if self.device.startswith("cuda"):
            _synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        seconds = _time_steps(self.infer_step, s.warmup, s.iters, self.device)
        out.update(seconds=seconds, images_per_s=self.batch * s.iters / seconds)
        if self.device.startswith("cuda"):
            out["peak_mem_mib"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        out["proposals_per_image"] = self._proposals()
        return out


# ---------------------------------------------------------------------------
# worker process and its client
# ---------------------------------------------------------------------------


def _worker_main(payload: str) -> int:
    """Worker entry (``python -m rwdet.analysis.benchmark --worker JSON``).

    ``JSON`` holds ``side``, ``pair`` and ``setup``. The worker answers on its stdout, one JSON
    line per message: first ``{"ok": true, "ready": {...}}`` once the model is built, then one
    reply per command read from stdin: ``{"cmd": "round", "phase": "train"|"infer"}``,
    ``{"cmd": "profile", "phase": ...}``, ``{"cmd": "onednn", "phase": ...}``, ``{"cmd": "stats"}``
    or ``{"cmd": "quit"}``. A failure answers ``{"ok": false, "error": ...}`` (traceback on
    stderr) and ends the worker with exit status 1.
    """
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray prints go to stderr, never into the protocol
    try:
        spec = json.loads(payload)
        side = SideSpec(**{**spec["side"], "opts": tuple(spec["side"]["opts"])})
        p = spec["pair"]
        pair = PairSpec(p["name"], p["title"], p["kind"], p["batch"], tuple(p["size"]),
                        tuple(SideSpec(**{**d, "opts": tuple(d["opts"])}) for d in p["sides"]))
        s = spec["setup"]
        setup = BenchmarkSetup(**{**s, **{k: tuple(s[k]) for k in ("batches", "det_size", "rw_opts", "r50_opts")}})
        bench = ModelBench(side, pair, setup)
        device_name = (torch.cuda.get_device_name(torch.device(setup.device)) if setup.device.startswith("cuda")
                       else f"CPU, {os.cpu_count()} logical cores")
        channel.write(json.dumps({"ok": True, "ready": {
            "label": bench.label, "threads": torch.get_num_threads(), "device_name": device_name,
            "base_rss_mib": bench.base_rss_mib, "pid": os.getpid()}}) + "\n")
        for line in sys.stdin:
            cmd = json.loads(line)
            if cmd["cmd"] == "quit":
                return 0
            if cmd["cmd"] == "stats":
                result = bench.stats()
            elif cmd["cmd"] == "round" and cmd.get("phase") in PHASES:
                result = bench.train_round() if cmd["phase"] == "train" else bench.infer_round()
            elif cmd["cmd"] == "profile" and cmd.get("phase") in PHASES:
                result = bench.profile(cmd["phase"])
            elif cmd["cmd"] == "onednn" and cmd.get("phase") in PHASES:
                result = bench.onednn(cmd["phase"])
            else:
                raise ValueError(f"unknown command {cmd!r}; allowed: round, profile or onednn "
                                 "train/infer, stats, quit")
            channel.write(json.dumps({"ok": True, "result": result}) + "\n")
        return 0
    except Exception as exc:  # reported to the parent, which records the pair as failed
        traceback.print_exc()
        channel.write(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}) + "\n")
        return 1


class _WorkerClient:
    """The parent's handle on one worker process; its stderr goes to a file in ``log_dir``."""

    def __init__(self, side: SideSpec, pair: PairSpec, setup: BenchmarkSetup, log_dir: str, name: str):
        payload = json.dumps({"side": asdict(side), "pair": asdict(pair), "setup": asdict(setup)})
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([REPO_ROOT, *filter(None, [env.get("PYTHONPATH")])])
        self.log_path = os.path.join(log_dir, f"{name}.log")
        self.name = name
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "rwdet.analysis.benchmark", "--worker", payload],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, env=env, cwd=REPO_ROOT,
            )

    def send(self, cmd: Dict[str, Any]) -> None:
        """Send one command line."""
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def receive(self) -> Dict[str, Any]:
        """Read one reply; raises RuntimeError (with the tail of the worker's log) on a failure."""
        line = self.proc.stdout.readline()
        reply = json.loads(line) if line.strip() else {"ok": False, "error": f"exit {self.proc.wait()}"}
        if not reply.get("ok"):
            with open(self.log_path) as f:
                tail = "\n".join(f.read().strip().splitlines()[-15:])
            raise RuntimeError(f"worker {self.name} failed: {reply.get('error')}\n{tail}")
        return reply.get("result", reply.get("ready"))

    def request(self, cmd: Dict[str, Any]) -> Dict[str, Any]:
        """Send a command and return its result."""
        self.send(cmd)
        return self.receive()

    def close(self) -> None:
        """Ask the worker to quit; kill it if it has not within 60 s."""
        if self.proc.poll() is None:
            try:
                self.send({"cmd": "quit"})
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            stream.close()


def _log(msg: str) -> None:
    """Progress message on stderr."""
    print(f"[benchmark] {msg}", file=sys.stderr, flush=True)


def run_pair(pair: PairSpec, setup: BenchmarkSetup, log: Callable[[str], None] = _log) -> Dict[str, Any]:
    """Measure one pair in interleaved rounds (see the module docstring).

    Both workers are built, then for each phase (train, then infer) ``setup.rounds`` rounds run,
    each side once per round, the first side alternating (:func:`round_order`); between the
    phases each worker reports :meth:`ModelBench.stats`. With ``setup.profile``, each phase's
    rounds are followed by :meth:`ModelBench.profile` of one side, then of the other, and on the
    CPU by :meth:`ModelBench.onednn` the same way.

    Returns:
        dict as under ``pairs.<name>`` in :func:`run_benchmark`'s result; on a worker failure,
        ``{"error": ..., ...}`` with what was measured before it.
    """
    out: Dict[str, Any] = {"title": pair.title, "kind": pair.kind, "batch": pair.batch, "input_size": list(pair.size),
                           "sides": {name: {"model": asdict(s)} for name, s in zip(SIDES, pair.sides)},
                           "log": []}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rwdet-bench-") as log_dir:
        workers = [_WorkerClient(s, pair, setup, log_dir, f"{pair.name}-{name}") for name, s in zip(SIDES, pair.sides)]
        try:
            for name, w in zip(SIDES, workers):  # both build at once; nothing is timed yet
                out["sides"][name].update(w.receive())
                out["sides"][name]["rounds"] = {phase: [] for phase in PHASES}
            for phase in PHASES:
                if phase == "infer":
                    for w in workers:
                        w.send({"cmd": "stats"})
                    for name, w in zip(SIDES, workers):
                        out["sides"][name].update(w.receive())
                for r in range(setup.rounds):
                    for i in round_order(r):
                        res = workers[i].request({"cmd": "round", "phase": phase})
                        out["sides"][SIDES[i]]["rounds"][phase].append(res)
                        out["log"].append([phase, r, SIDES[i]])
                        log(f"{pair.name} {phase} round {r + 1}/{setup.rounds} {SIDES[i]}: "
                            f"{res['images_per_s']:.2f} img/s")
                if setup.profile:
                    for what in ("profile", "onednn") if setup.device.startswith("cpu") else ("profile",):
                        for name, w in zip(SIDES, workers):  # one at a time: nothing runs beside it
                            res = w.request({"cmd": what, "phase": phase})
                            if res:  # {} where PyTorch has no oneDNN
                                out["sides"][name].setdefault(what, {})[phase] = res
                                log(f"{pair.name} {phase} {what} {name}: {res['total']:.0f} ms/step")
        except RuntimeError as exc:
            out["error"] = str(exc)
            log(f"{pair.name} FAILED: {exc}")
        finally:
            for w in workers:
                w.close()
    out["seconds"] = time.perf_counter() - t0
    if "error" not in out:
        _summarize_pair(out)
    return out


def _summarize_pair(out: Dict[str, Any]) -> None:
    """Add per-side medians and the ratios' medians and spreads to a pair's result (in place)."""
    sides = [out["sides"][name] for name in SIDES]
    for side in sides:
        side["median"] = {
            f"{phase}_{key}": _median(r.get(key) for r in side["rounds"][phase])
            for phase, key in (("train", "images_per_s"), ("infer", "images_per_s"), ("train", "peak_mem_mib"))
        }
    out["ratios"], out["median_ratio"], out["spread"] = {}, {}, {}
    for ratio, (phase, key) in RATIO_KEYS.items():
        summary = ratio_summary(*[[r.get(key) for r in side["rounds"][phase]] for side in sides])
        out["ratios"][ratio] = summary["ratios"]
        out["median_ratio"][ratio] = summary["median"]
        out["spread"][ratio] = summary["spread"]
    out["static_ratio"] = {
        key: (sides[0][key] / sides[1][key] if sides[0].get(key) and sides[1].get(key) else None)
        for key in ("flops", "params", "saved_activation_bytes")
    }


def run_benchmark(setup: BenchmarkSetup, pairs: Optional[Iterable[str]] = None, command: str = "",
                  log: Callable[[str], None] = _log) -> Dict[str, Any]:
    """Run the chosen pairs one after the other and gather the results.

    Args:
        setup: a checked setup (:func:`default_setup`).
        pairs: names for :func:`select_pairs` (None: all).
        command: the command line, recorded in the setup.

    Returns:
        ``{"setup": {...}, "method": str, "pairs": {name: {...}}}`` where each pair has
        ``median_ratio.{train, infer, train_peak_mem}`` (RandWire / reference), ``spread`` of the
        same keys ([min, max]), ``ratios`` (per round), ``static_ratio.{flops, params,
        saved_activation_bytes}``, ``sides.{randwire, reference}`` (label, model, params,
        trainable_params, flops, saved_activation_bytes, ``median`` images/s and peak memory,
        ``rounds.{train, infer}``: the raw figures per round; with ``setup.profile``,
        ``profile.{train, infer}``: ms per step per op kind, and on the CPU ``onednn.{train,
        infer}``: ms per step per oneDNN primitive kind), ``log`` (the order in which
        the rounds ran: [phase, round, side]), title, kind, batch, input_size, seconds; or
        ``error``.

    Raises:
        ValueError: an unknown pair name.
    """
    chosen = select_pairs(pairs, setup)
    result: Dict[str, Any] = {
        "setup": {**asdict(setup), "torch": torch.__version__, "machine": machine_description(),
                  "command": command, "pairs": [p.name for p in chosen]},
        "method": METHOD_NOTE,
        "pairs": {},
    }
    t0 = time.perf_counter()
    for pair in chosen:
        log(f"{pair.name}: {pair.title}")
        result["pairs"][pair.name] = run_pair(pair, setup, log)
    result["setup"]["seconds"] = time.perf_counter() - t0
    return result


# ---------------------------------------------------------------------------
# reports
# ---------------------------------------------------------------------------

#: The method in a few lines, under every Markdown report and in the JSON.
METHOD_NOTE = (
    "Method: one worker process per model, built once; the two sides of a pair alternate in rounds "
    "(first side swapped each round), all train rounds then all inference rounds; each round runs "
    "warm-up then timed steps. Ratios are RandWire / reference per round; the table gives their median "
    "[min-max] and each side's median. Train: forward, loss, backward, SGD step (lr 0). Infer: eval, "
    "no_grad, BN folded into the convs on both sides when deploy is on. Peak training memory: CUDA max "
    "allocated over a train round, or on the CPU the worker's peak RSS minus its RSS before the model "
    "was built. Saved activations: bytes autograd saves for backward in one training forward (each "
    "storage once, parameters excluded). GFLOPs: fvcore, one image, multiply-add = 1 (detectors: "
    "backbone + FPN)."
)


def _fmt(value: Optional[float], fmt: str, suffix: str = "") -> str:
    """Format a number, or "n/a" for None."""
    return "n/a" if value is None else format(value, fmt) + suffix


def _ratio_cell(pair: Dict[str, Any], key: str) -> str:
    """``0.85x [0.80-0.91]`` for a ratio of the pair."""
    median, spread = pair["median_ratio"][key], pair["spread"][key]
    if median is None:
        return "n/a"
    return f"**{median:.2f}x** [{spread[0]:.2f}-{spread[1]:.2f}]"


def markdown_report(result: Dict[str, Any]) -> str:
    """The Markdown report of :func:`run_benchmark`'s result: setup lines, one table per pair
    (rows: figures; columns: RandWire, reference, ratio), then the method note."""
    s = result["setup"]
    firsts = [p["sides"]["randwire"] for p in result["pairs"].values() if "device_name" in p["sides"]["randwire"]]
    dev = firsts[0]["device_name"] if firsts else "?"
    threads = firsts[0]["threads"] if firsts else s["threads"]
    on_cuda = s["device"].startswith("cuda")
    lines = [
        "# RandWire vs reference networks: speed and memory", "",
        f"- device: {s['device']} ({dev}); torch {s['torch']}; CPU threads {threads}; amp {s['amp']}; "
        f"compile {s['compile']}; deploy (BN folded for inference) {'on' if s['deploy'] else 'off'}; "
        f"memory format {'channels_last (NHWC)' if s.get('channels_last') else 'contiguous (NCHW)'}",
        f"- {s['rounds']} interleaved rounds; per round and side {s['warmup']} warm-up + {s['iters']} timed steps",
    ]
    if s["rw_opts"] or s["r50_opts"]:
        lines.append(f"- RandWire overrides: {' '.join(s['rw_opts']) or '-'}; R50-FPN overrides: "
                     f"{' '.join(s['r50_opts']) or '-'}")
    mem = "MiB, CUDA max allocated" if on_cuda else "MiB, peak RSS minus RSS before the model"
    for name, p in result["pairs"].items():
        h, w = p["input_size"]
        lines += ["", f"## {name}: {p['title']}, {h}x{w}", ""]
        if "error" in p:
            lines.append(f"Failed: {p['error'].splitlines()[0]}")
            continue
        rw, ref = p["sides"]["randwire"], p["sides"]["reference"]
        lines += [f"| | {rw['label']} | {ref['label']} | ratio: median [min-max] |", "|---|---|---|---|"]

        def row(title: str, key: str, fmt: str, ratio: Optional[str] = None, scale: float = 1.0) -> None:
            """One table row: both sides' medians and the ratio cell."""
            a, b = rw["median"].get(key), ref["median"].get(key)
            a = a / scale if a is not None else None
            b = b / scale if b is not None else None
            cell = _ratio_cell(p, ratio) if ratio else ""
            lines.append(f"| {title} | {_fmt(a, fmt)} | {_fmt(b, fmt)} | {cell} |")

        row("train img/s (median)", "train_images_per_s", ".2f", "train")
        row("infer img/s (median)", "infer_images_per_s", ".2f", "infer")
        row(f"train peak memory ({mem})", "train_peak_mem_mib", ".0f", "train_peak_mem")
        for title, key, scale, fmt in (("saved activations, one training forward (MiB)", "saved_activation_bytes",
                                        2**20, ".0f"),
                                       (f"GFLOPs/img ({rw.get('flops_of', '')})", "flops", 1e9, ".2f"),
                                       ("params (M)", "params", 1e6, ".2f")):
            a, b, r = rw.get(key), ref.get(key), p["static_ratio"].get(key)
            lines.append(f"| {title} | {_fmt(a / scale if a is not None else None, fmt)} "
                         f"| {_fmt(b / scale if b is not None else None, fmt)} | {_fmt(r, '.2f', 'x')} |")
        folds = [side["rounds"]["infer"][0] if side["rounds"]["infer"] else {} for side in (rw, ref)]
        lines.append("| BN layers for inference (before -> after the deploy fold) | "
                     + " | ".join(f"{f.get('norm_layers_before', 'n/a')} -> {f.get('norm_layers_after', 'n/a')}"
                                  for f in folds) + " | |")
        if p["kind"] == "det":
            props = [_median(r.get("proposals_per_image") for r in side["rounds"][ph])
                     for side in (rw, ref) for ph in PHASES]
            lines.append(f"| RPN proposals/img (train, infer) | {_fmt(props[0], '.0f')}, {_fmt(props[1], '.0f')} "
                         f"| {_fmt(props[2], '.0f')}, {_fmt(props[3], '.0f')} | |")
        for phase in PHASES:
            for key, title, kinds in (
                ("profile", f"Where a {phase} step's time goes (torch.profiler, self time per op kind, "
                            f"2 passes of {s['iters']} steps per side):", None),
                ("onednn", f"Inside oneDNN, {phase} (oneDNN's own time per primitive kind, {s['iters']} steps "
                           "per side; part of the conv ops above):", ONEDNN_KINDS),
            ):
                if phase in rw.get(key, {}) and phase in ref.get(key, {}):
                    table = profile_markdown({"RandWire": rw[key][phase], "reference": ref[key][phase]},
                                             diff=("RandWire", "reference"), kinds=kinds)
                    lines += ["", title, "", table.rstrip("\n")]
    lines += ["", METHOD_NOTE]
    return "\n".join(lines) + "\n"


def write_json(result: Dict[str, Any], path: str) -> None:
    """Write :func:`run_benchmark`'s result to ``path`` as indented JSON, atomically (folders created)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    data = json.dumps(result, indent=2).encode("utf-8")
    atomic_write(path, lambda f: f.write(data))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        sys.exit(_worker_main(sys.argv[2]))
    sys.exit(f"usage: python -m rwdet.analysis.benchmark --worker JSON (run tools/benchmark.py instead), "
             f"got {sys.argv[1:]}")
