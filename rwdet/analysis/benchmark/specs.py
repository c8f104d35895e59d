"""The benchmark's setup and its pairs: what is measured (:class:`BenchmarkSetup`), which models
face each other (:class:`PairSpec` of two :class:`SideSpec`), and the pairs a setup names.

The method in full: :mod:`rwdet.analysis.benchmark`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any, Dict, Iterable, List, Optional, Tuple

import torch

#: The repository root: config paths of the pairs are relative to it, so that the JSON names no
#: machine-local path.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
#: The RandWire detector of the detector pairs.
DET_CONFIG = "configs/faster_rcnn_randwire_ws.yaml"
#: The classification configs of the classifier pairs.
C109_CONFIG = "configs/imagenet/randwire_ws_c109.yaml"
SMALL_CONFIG = "configs/imagenet/randwire_ws_small.yaml"
RESNET50_CONFIG = "configs/imagenet/resnet50.yaml"
#: Detectron2 model-zoo config of the reference detector.
R50_FPN_CONFIG = "COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml"
#: Pair families, in report order; ``cls_c109`` makes one pair per batch (``cls_c109_b<B>``).
PAIR_FAMILIES = ("cls_c109", "cls_small", "det_trainable", "det_frozen", "det_backbone")
PHASES = ("train", "infer")
#: Pair kinds without a training phase (their train rounds are skipped): the backbone+FPN alone.
INFER_ONLY_KINDS = ("backbone",)
#: The two sides of every pair; the first is the numerator of the ratios.
SIDES = ("randwire", "reference")
#: ``BenchmarkSetup.compile`` values: no compilation, or a ``torch.compile`` mode.
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")
#: ``BenchmarkSetup.runtime`` values (:mod:`rwdet.analysis.benchmark.runtimes`).
RUNTIMES = ("eager", "onnxruntime", "openvino", "torchscript")
#: ``BenchmarkSetup.reference`` values: each pair's own reference network, or RandWire itself.
REFERENCES = ("pair", "self")


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
    """What to measure and how (see :mod:`rwdet.analysis.benchmark`); :func:`default_setup` fills it in.

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
            after the other, and report their time per op kind (:mod:`rwdet.analysis.profile`);
            with runtime "openvino", the inference phase's figures are OpenVINO's own per-layer
            times of what runs in it (``PERF_COUNT``; :func:`runtimes.openvino_layer_times`).
        runtime: what runs the inference rounds, on both sides: "eager" (PyTorch), or
            "onnxruntime", "openvino", "torchscript": the BN-folded model exported and run there
            (classifiers whole; detectors' backbone+FPN, with Detectron2's heads in PyTorch;
            :mod:`rwdet.analysis.benchmark.runtimes`). CPU only, needs ``deploy``; training
            rounds stay in eager PyTorch.
        ref_runtime: the reference side's inference runtime, when it differs from RandWire's
            (e.g. RandWire in "openvino" against ResNet-50 in "eager", interleaved); None: ``runtime``.
        pad_channels: > 0: after the BN fold, RandWire widths rounded up to a multiple of this
            with zero filters (:func:`rwdet.deploy.pad_randwire_channels`; the same outputs; a
            ResNet side is unchanged); needs ``deploy``. 0: off.
        phases: the phases to measure, a non-empty subset of :data:`PHASES` (e.g. ("infer",)
            to skip the training rounds); pairs of :data:`INFER_ONLY_KINDS` skip "train" anyway.
        precision: the inference rounds' precision on both sides, as MODEL.DEPLOY.PRECISION
            serves it (:mod:`rwdet.deploy.precision`): "fp32", "bf16" (eager: under
            ``torch.autocast``; OpenVINO: its bf16 hint; TorchScript: autocast; not ONNX
            Runtime) or "int8" (OpenVINO only: NNCF post-training quantization, calibrated on
            the side's own benchmark input, which is enough for speed; AP comes from
            ``tools/export_model.py --precision int8 --run-eval``). Training rounds follow
            ``amp``. The JSON says whether the CPU runs it natively or emulated.
        ref_precision: the reference side's precision when it differs from RandWire's; None:
            ``precision``.
        reference: "pair": each pair's own reference network (ResNet-50, MobileNetV2,
            R50-FPN); "self": the RandWire side itself, so that a pair times RandWire at
            (``runtime``, ``precision``) against RandWire at (``ref_runtime``, ``ref_precision``),
            e.g. OpenVINO int8 against eager fp32, in the same interleaved rounds.
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
    runtime: str = "eager"
    phases: Tuple[str, ...] = PHASES
    pad_channels: int = 0
    ref_runtime: Optional[str] = None
    precision: str = "fp32"
    ref_precision: Optional[str] = None
    reference: str = "pair"

    def runtime_of(self, side: "SideSpec") -> str:
        """The inference runtime of ``side``: ``runtime`` for the RandWire side, ``ref_runtime``
        (default ``runtime``) for the reference."""
        if side.role != "reference" or self.ref_runtime is None:
            return self.runtime
        return self.ref_runtime

    def precision_of(self, side: "SideSpec") -> str:
        """The inference precision of ``side``: ``precision`` for the RandWire side,
        ``ref_precision`` (default ``precision``) for the reference."""
        if side.role != "reference" or self.ref_precision is None:
            return self.precision
        return self.ref_precision

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
        if not self.phases or any(p not in PHASES for p in self.phases) or len(set(self.phases)) < len(self.phases):
            raise ValueError(f"phases={list(self.phases)}: a non-empty subset of {', '.join(PHASES)}, each once")
        from ...deploy import check_pad_channels

        check_pad_channels(self.pad_channels, key="pad_channels")
        if self.pad_channels and not self.deploy:
            raise ValueError("pad_channels needs deploy on (the padding rewrites the BN-folded model)")
        self._check_runtime()
        from ...deploy import check_precision

        if self.reference not in REFERENCES:
            raise ValueError(f"reference={self.reference!r}; allowed: {', '.join(repr(r) for r in REFERENCES)}")
        for key, runtime, precision in (("precision", self.runtime, self.precision),
                                        ("ref_precision", self.ref_runtime or self.runtime,
                                         self.ref_precision or self.precision)):
            check_precision(precision, "" if runtime == "eager" else runtime, key=key)
            if precision not in ("fp32", "int8") and self.amp not in ("none", precision):
                raise ValueError(f"{key}={precision!r} does not go with amp={self.amp!r}")

    def _check_runtime(self) -> None:
        """Raise ValueError if ``runtime`` or ``ref_runtime`` is unknown or does not go with the
        other fields, ImportError (with the install command) if its package is missing."""
        self._check_one_runtime("runtime", self.runtime)
        if self.ref_runtime is not None:
            self._check_one_runtime("ref_runtime", self.ref_runtime)
            if self.profile and self.ref_runtime != self.runtime:
                raise ValueError(f"profile compares the two sides op by op: it needs ref_runtime={self.ref_runtime!r} "
                                 f"equal to runtime={self.runtime!r}")

    def _check_one_runtime(self, key: str, runtime: str) -> None:
        if runtime not in RUNTIMES:
            raise ValueError(f"{key}={runtime!r}; allowed: {', '.join(repr(r) for r in RUNTIMES)}")
        if runtime == "eager":
            return
        clashes = [(not self.device.startswith("cpu"), f"device={self.device!r} (the runtimes run on the CPU)"),
                   (not self.deploy, "deploy off (the runtimes run the BN-folded model)"),
                   (self.amp != "none", f"amp={self.amp!r}"), (self.compile != "none", f"compile={self.compile!r}"),
                   (self.channels_last, "channels_last (the runtime picks its own layouts)"),
                   (self.profile and runtime != "openvino",
                    "profile (torch.profiler cannot see inside the runtime; OpenVINO's own per-layer times can)")]
        for clash, what in clashes:
            if clash:
                raise ValueError(f"{key}={runtime!r} does not go with {what}; use {key}='eager' for it")
        from ...deploy import check_runtime

        check_runtime(runtime, key=key)


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
                    rw_opts=tuple(setup.rw_opts), r50_opts=tuple(setup.r50_opts), phases=tuple(setup.phases))
    setup.check()
    return setup


@dataclass(frozen=True)
class SideSpec:
    """One model of a pair, as its worker builds it.

    Attributes:
        model: "randwire_cls", "resnet50_cls", "mobilenet_v2_cls", "randwire_det", "r50fpn_det",
            or the detectors' backbone+FPN alone: "randwire_backbone", "r50fpn_backbone".
        config: config file, absolute or relative to the repository root (a model-zoo name for
            "r50fpn_det" and "r50fpn_backbone"; "" for "mobilenet_v2_cls").
        opts: ``KEY VALUE`` overrides of the config.
        role: "randwire" (the ratios' numerator) or "reference" (set by :func:`pair_specs`;
            it picks the side's runtime and precision).
    """

    model: str
    config: str = ""
    opts: Tuple[str, ...] = ()
    role: str = "randwire"

    @property
    def kind(self) -> str:
        """"cls", "det" or "backbone"."""
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
    """Every pair of ``setup``, by name, in report order (see :mod:`rwdet.analysis.benchmark`).

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
    pairs["det_backbone"] = PairSpec(
        "det_backbone", "RandWire-WS-FPN vs R50-FPN backbone+FPN alone (one preprocessed image, inference only)",
        "backbone", 1, tuple(setup.det_size),
        (SideSpec("randwire_backbone", DET_CONFIG, tuple(_freeze_opts(0, "BN", True)) + rw),
         SideSpec("r50fpn_backbone", R50_FPN_CONFIG, tuple(_freeze_opts(0, "BN", False)) + r50)),
    )
    for name, pair in pairs.items():
        rw_side, ref_side = pair.sides
        if setup.reference == "self":
            title = pair.title.split(" vs ")[0] + " vs itself at the reference runtime and precision"
            pair = replace(pair, title=title, sides=(rw_side, replace(rw_side, role="reference")))
        else:
            pair = replace(pair, sides=(rw_side, replace(ref_side, role="reference")))
        pairs[name] = pair
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
