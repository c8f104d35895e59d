"""Timing and memory of one model: :class:`ModelBench` runs a side's timed rounds, its
profiles and its static figures (params, FLOPs, saved activations) inside its worker process.

The method in full: :mod:`rwdet.analysis.benchmark`.
"""

from __future__ import annotations

import contextlib
import resource
import sys
import time
from typing import Any, Callable, Dict, Iterable, List, Optional

import torch
from detectron2.layers import FrozenBatchNorm2d
from detectron2.utils.events import EventStorage
from torch import nn

from ...layers import fold_batchnorm
from ..flops import count_model
from ..profile import onednn_primitive_times, profile_op_kinds
from .models import (NUM_IMAGENET_CLASSES, backbone_inputs, bccd_detection_images, build_side_model,
                     detection_inputs, neutralize_detector_heads, synthetic_detection_images)
from .runtimes import RuntimeModule, max_abs_error, openvino_layer_times, runtime_runner
from .specs import PHASES, BenchmarkSetup, PairSpec, SideSpec

#: Learning rate of the timed SGD steps: 0 keeps the weights (and so the detectors' proposals)
#: fixed; torch's SGD does the same arithmetic for any lr.
SGD_LR = 0.0


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


class ModelBench:
    """One model of a pair with its inputs, measured round by round (what a worker runs).

    Built once; then :meth:`train_round` any number of times, :meth:`stats` once, and
    :meth:`infer_round` any number of times (the first one switches to eval mode and, with
    ``setup.deploy``, folds the BNs, then with ``setup.runtime`` other than "eager" hands the
    inference to that runtime; training after that raises RuntimeError); :meth:`profile` of a
    phase after its rounds. A backbone-only side ("*_backbone") has no training phase.

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
        self.model, self.cfg, self.label = build_side_model(side, self.device)
        self.memory_format = torch.channels_last if setup.channels_last else torch.contiguous_format
        self.model = self.model.to(memory_format=self.memory_format)
        self.batch = pair.batch
        if side.kind == "cls":
            g = torch.Generator().manual_seed(setup.seed)
            self.x = torch.randn(pair.batch, 3, *pair.size, generator=g).to(self.device)
            self.x = self.x.contiguous(memory_format=self.memory_format)
            self.y = torch.randint(0, NUM_IMAGENET_CLASSES, (pair.batch,), generator=g).to(self.device)
        else:
            images = (bccd_detection_images(setup.bccd_root, pair.batch, pair.size) if setup.bccd_root
                      else synthetic_detection_images(pair.batch, pair.size, setup.seed))
        if side.kind == "backbone":  # one preprocessed (normalised, padded) batch, as the detector's
            self.x = backbone_inputs(images, self.cfg, self.model, self.device)
            self.x = self.x.contiguous(memory_format=self.memory_format)
        elif side.kind == "det":
            if not setup.random_heads:
                neutralize_detector_heads(self.model)
            self.train_inputs = detection_inputs(images, self.cfg, self.device, with_gt=True)
            self.infer_inputs = detection_inputs(images, self.cfg, self.device, with_gt=False)
            self.proposal_counts: List[int] = []
            self.model.proposal_generator.register_forward_hook(
                lambda module, inputs, output: self.proposal_counts.extend(len(p) for p in output[0]))
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(params, lr=SGD_LR, momentum=0.9, weight_decay=1e-4)
        self.scaler = torch.amp.GradScaler("cuda", enabled=setup.amp == "fp16")
        self.deployed: Optional[Dict[str, int]] = None  # norm-layer counts once in eval mode
        self.runtime_info: Dict[str, Any] = {"name": "eager"}  # the runtime, its reorders and parity
        self._compile()

    def _compile(self) -> None:
        """With ``setup.compile``, route the forward through ``torch.compile``: the classifier (or
        backbone-only side) as a whole (``self.forward``), or the detector's backbone + FPN in
        place of ``model.backbone`` (kept uncompiled in ``self.backbone`` for FLOPs and the BN fold)."""
        s = self.setup
        self.forward: Callable[..., Any] = self.model
        self.backbone = None if self.side.kind != "det" else self.model.backbone
        if s.compile == "none":
            return
        opts = dict(backend=s.compile_backend, mode=None if s.compile == "default" else s.compile)
        if s.compile_backend != "inductor":
            opts.pop("mode")  # modes are inductor's
        if self.side.kind != "det":
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
        """One training forward and its scalar loss (cross-entropy, or the detector's loss sum).

        Raises:
            RuntimeError: a backbone-only side (it has no loss).
        """
        if self.side.kind == "backbone":
            raise RuntimeError(f"{self.side.model}: the backbone+FPN alone has no loss (inference only)")
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

    def _infer_autocast(self):
        """The inference rounds' autocast: bf16 with ``precision`` bf16 in eager PyTorch (a
        runtime runs its own precision), else :meth:`_autocast`."""
        if self.setup.precision_of(self.side) == "bf16" and self.setup.runtime_of(self.side) == "eager":
            return torch.autocast(torch.device(self.device).type, dtype=torch.bfloat16)
        return self._autocast()

    def infer_step(self) -> None:
        """One inference forward without autograd."""
        with torch.no_grad(), self._infer_autocast():
            self.forward(self.infer_inputs if self.side.kind == "det" else self.x)

    def profile(self, phase: str) -> Dict[str, float]:
        """Two passes of ``iters`` steps of ``phase`` under torch.profiler, after that phase's
        rounds (so warm).

        Returns:
            ``{op kind: ms per step, "total": ...}`` (:func:`rwdet.analysis.profile.profile_op_kinds`).

        Raises:
            ValueError: an unknown phase. RuntimeError: "train" after the first inference round.
        """
        if self.setup.runtime_of(self.side) == "openvino" and phase == "infer":
            return self._openvino_profile()
        return self._measure_phase("profile", phase,
                                   lambda step: profile_op_kinds(step, self.setup.iters, self.device))

    def _openvino_profile(self) -> Dict[str, float]:
        """OpenVINO's per-layer times of what runs in it (the classifier, or the backbone+FPN),
        2 x ``iters`` runs on the side's own input (:func:`runtimes.openvino_layer_times`)."""
        self.deploy()
        return openvino_layer_times(self._runner.exported, self._runner_input, self.setup.threads,
                                    2 * self.setup.iters, self.setup.precision_of(self.side))

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
            dict: seconds, images_per_s, peak_mem_mib (see :mod:`rwdet.analysis.benchmark`; on the CPU
            also peak_rss_mib and base_rss_mib), proposals_per_image (detectors).

        Raises:
            RuntimeError: called after the first inference round (the model is folded), or on a
            backbone-only side (no training phase).
        """
        if self.side.kind == "backbone":
            raise RuntimeError(f"{self.side.model}: the backbone+FPN alone has no training phase")
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
            dict: params, trainable_params, saved_activation_bytes (None for a backbone-only
            side: no loss), flops (None without ``setup.flops``), flops_of ("classifier" or
            "backbone+FPN").
        """
        model = self.model
        was_training = model.training
        model.train()
        exclude = [*model.parameters(), *model.buffers()]
        saved = None
        if self.side.kind != "backbone":
            with self._storage(), self._eager():
                saved = saved_activation_bytes(self.loss, exclude=exclude)  # of the eager model
        flops = None
        if self.setup.flops:
            if self.side.kind != "det":
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

        This is where the inference form of the model is made: fold, then ``torch.compile`` when
        asked, or with ``setup.runtime`` other than "eager" the export to that runtime
        (:meth:`_serve_runtime`: ``self.forward`` for a classifier or backbone-only side, the
        detector's ``model.backbone`` otherwise), so that the inference rounds run through it.
        Exporting, compiling and the parity check happen here, before any timed step.
        """
        if self.deployed is None:
            self.model.eval()
            before = count_norm_layers(self.model)
            if self.setup.deploy:
                if self.backbone is not None:
                    self.model.backbone = self.backbone  # fold the uncompiled modules
                self.model = fold_batchnorm(self.model).to(memory_format=self.memory_format)
                if self.setup.pad_channels:  # RandWire widths padded with zero filters (exact)
                    from ...deploy import pad_randwire_channels

                    pad_randwire_channels(self.model, self.setup.pad_channels)
                    self.model.to(memory_format=self.memory_format)
                self._compile()  # the folded model compiles anew
            if self.setup.runtime_of(self.side) != "eager":
                self.runtime_info = self._serve_runtime()
            self.deployed = {"norm_layers_before": before, "norm_layers_after": count_norm_layers(self.model)}
        return self.deployed

    def _serve_runtime(self) -> Dict[str, Any]:
        """Export the folded model (classifier), or the backbone+FPN (backbone-only side and
        detector), to ``setup.runtime`` with ``setup.threads`` and run the inference through it
        (:mod:`rwdet.analysis.benchmark.runtimes`); check its outputs against eager PyTorch's
        once, on the benchmark's own inputs.

        Returns:
            dict: name (the runtime), reorders (layout reorders in the compiled graph, or None),
            threads, max_abs_err (max |runtime - eager| over the outputs), max_abs_ref (max
            |eager output|, the scale of the error), parity_of (which outputs: "logits" or
            "backbone+FPN features").
        """
        from ...deploy import BackboneAsTuple, RuntimeBackbone
        from ...deploy.export import backbone_dynamic_axes

        runtime, threads, precision = self.setup.runtime_of(self.side), self.setup.threads, self.setup.precision_of(self.side)
        with torch.no_grad():
            if self.side.kind == "cls":
                ref = [self.model(self.x)]
                runner, info = runtime_runner(self.model, self.x, runtime, threads, ["logits"], precision=precision)
                self._runner, self._runner_input = runner, self.x.numpy()
                self.forward = RuntimeModule(runner)
                got, of = [self.forward(self.x)], "logits"
            else:
                backbone = self.model if self.side.kind == "backbone" else self.model.backbone
                x = self.x if self.side.kind == "backbone" else self.model.preprocess_image(self.infer_inputs).tensor
                wrapper = BackboneAsTuple(backbone).eval()
                ref = list(wrapper(x))
                runner, info = runtime_runner(wrapper, x, runtime, threads, wrapper.names,
                                              backbone_dynamic_axes(wrapper.names), precision=precision)
                self._runner, self._runner_input = runner, x.numpy()
                served = RuntimeBackbone(runner, backbone.output_shape(), backbone.size_divisibility,
                                         backbone.padding_constraints, runtime)
                features = served(x)
                got, of = [features[n] for n in wrapper.names], "backbone+FPN features"
                if self.side.kind == "backbone":
                    self.forward = served
                else:  # Detectron2's heads run on the runtime's features
                    self.model.backbone = served
        info.update(max_abs_error(got, ref), parity_of=of, threads=threads)
        return info

    def runtime(self) -> Dict[str, Any]:
        """The inference runtime's figures (after :meth:`deploy`, which it calls): ``{"name":
        "eager"}``, or as :meth:`_serve_runtime` returns them."""
        self.deploy()
        return dict(self.runtime_info)

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
