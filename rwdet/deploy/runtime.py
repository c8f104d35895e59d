"""Run an exported backbone+FPN or detector in ONNX Runtime, OpenVINO or TorchScript (CPU).

:class:`RuntimeBackbone` is a Detectron2 ``Backbone`` whose forward runs an exported
backbone+FPN in a runtime and returns the same dict of features (p2..p6) as the PyTorch
backbone, with the same ``output_shape()``, ``size_divisibility`` and ``padding_constraints``:
put in place of a detector's ``backbone``, Detectron2's RPN and ROI heads run on its outputs
(:func:`serve_backbone`, :func:`apply_deploy_runtime`, config key MODEL.DEPLOY.RUNTIME).
:class:`ExportedDetector` runs a whole exported detector (:func:`rwdet.deploy.export_model`)
and gives Detectron2's ``[{"instances": Instances}]``, as upstream ``export_model.py``'s
``eval_wrapper`` does for TorchScript, so ``inference_on_dataset`` and ``COCOEvaluator`` take it.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import Backbone
from detectron2.modeling.postprocessing import detector_postprocess
from torch import nn

from ..utils.io import file_sha256
from .precision import AutocastBackbone, check_precision, precision_note
from .quantize import calibration_batches, check_calibration_images, quantize_openvino
from .export import (
    BackboneAsTuple, backbone_dynamic_axes, check_pad_channels, export_in_memory, prepare_for_export, shapes_from_metadata,
)

__all__ = ["RUNTIMES", "DEPLOY_RUNTIMES", "RuntimeBackbone", "ExportedDetector", "load_runner", "serve_backbone",
           "apply_deploy_runtime", "check_runtime", "check_deploy_config", "check_export_weights", "needs_calibration"]

logger = logging.getLogger(__name__)

#: Runtimes that run an exported model here, and the formats each reads.
RUNTIMES = {"onnxruntime": ("onnx",), "openvino": ("openvino", "onnx"), "torchscript": ("torchscript",)}
#: Values of MODEL.DEPLOY.RUNTIME: "" and "pytorch" run the model as it is (eager PyTorch).
DEPLOY_RUNTIMES = ("", "pytorch", "onnxruntime", "openvino", "torchscript")
#: The runtime that runs each export format by default.
DEFAULT_RUNTIME = {"onnx": "onnxruntime", "openvino": "openvino", "torchscript": "torchscript"}


def check_runtime(runtime: str, key: str = "MODEL.DEPLOY.RUNTIME") -> None:
    """Raise ValueError naming ``key`` if ``runtime`` is not one of :data:`DEPLOY_RUNTIMES`,
    ImportError (with the install command) if its package is not installed."""
    if runtime not in DEPLOY_RUNTIMES:
        raise ValueError(f"{key}={runtime!r} is unknown; allowed: {', '.join(repr(r) for r in DEPLOY_RUNTIMES)}")
    package = {"onnxruntime": "onnxruntime", "openvino": "openvino"}.get(runtime)
    if package:
        try:
            __import__(package)
            if runtime == "onnxruntime":
                __import__("onnx")  # torch.onnx.export needs it
        except ImportError as e:
            raise ImportError(f"{key}={runtime!r} needs {e.name}: pip install -e '.[deploy]'") from e


def load_runner(model, runtime: str, threads: Optional[int] = None,
                precision: str = "fp32") -> Callable[[np.ndarray], List[np.ndarray]]:
    """A function running an exported model in ``runtime`` on the CPU: float32 array -> list of
    output arrays, in the export's output order.

    Args:
        model: a file path (``.onnx``, OpenVINO ``.xml``, TorchScript ``.ts``); or in memory:
            ONNX ``bytes`` (onnxruntime), an ``openvino.Model`` (openvino), a
            ``torch.jit.ScriptModule`` (torchscript).
        runtime: one of :data:`RUNTIMES`. OpenVINO compiles with the inference precision of
            ``precision`` (f32 by default: its CPU plugin would otherwise pick bf16 on CPUs that
            have it).
        precision: "fp32", "bf16" or "int8" (:mod:`rwdet.deploy.precision`): OpenVINO's
            ``INFERENCE_PRECISION_HINT``, TorchScript under ``torch.autocast``; ONNX Runtime
            serves fp32 only. "int8" takes an OpenVINO model already quantized by NNCF
            (:func:`rwdet.deploy.quantize.quantize_openvino`: its FakeQuantize nodes run int8,
            every other op f32).
        threads: CPU threads of the runtime (ONNX Runtime ``intra_op_num_threads``, OpenVINO
            ``INFERENCE_NUM_THREADS`` with the ``LATENCY`` performance hint; TorchScript uses
            torch's threads); None: the runtime's default (all physical cores).

    The returned function carries the runtime's handle for inspection: ``.session`` (ONNX
    Runtime ``InferenceSession``) or ``.compiled`` (OpenVINO ``CompiledModel``), and
    ``.precision``: what runs (OpenVINO: the precision its plugin compiled, read back; int8:
    the number of quantized inputs beside it).

    Raises:
        ValueError: an unknown runtime or precision, bf16 in ONNX Runtime, int8 outside
            OpenVINO, or int8 asked of a model that holds no FakeQuantize node (not quantized).
    """
    check_precision(precision, runtime, key="precision")
    if runtime == "onnxruntime":
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        session = ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def run_onnxruntime(x):
            return session.run(None, {name: x})
        run_onnxruntime.session, run_onnxruntime.precision = session, "fp32"
        return run_onnxruntime
    if runtime == "openvino":
        import openvino as ov

        core = ov.Core()
        if isinstance(model, str):
            model = core.read_model(model)
        quantized = sum(op.get_type_name() == "FakeQuantize" for op in model.get_ops())
        if precision == "int8" and not quantized:
            raise ValueError("precision 'int8' needs an int8 model (NNCF FakeQuantize nodes), and this one has none: "
                             "export with tools/export_model.py --precision int8, or serve with "
                             "MODEL.DEPLOY.PRECISION int8 (calibrated at load)")
        if precision != "int8" and quantized:
            raise ValueError(f"this OpenVINO model is quantized to int8 ({quantized} FakeQuantize nodes): serve it "
                             f"at precision 'int8', not {precision!r}")
        config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"}
        if threads is not None:
            config.update(INFERENCE_NUM_THREADS=threads, PERFORMANCE_HINT="LATENCY")
        compiled = core.compile_model(model, "CPU", config)
        outputs = compiled.outputs

        def run_openvino(x):
            result = compiled({0: x})
            return [np.array(result[o], dtype=np.float32) for o in outputs]
        run_openvino.compiled = compiled
        hint = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
        run_openvino.precision = f"int8 ({quantized} FakeQuantize), other ops {hint}" if quantized else hint
        return run_openvino
    if runtime == "torchscript":
        module = torch.jit.load(model, map_location="cpu") if isinstance(model, str) else model

        def run(x):
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                out = module(torch.from_numpy(x))
            return [t.float().numpy() for t in (out if isinstance(out, (tuple, list)) else (out,))]
        run.precision = precision
        return run
    raise ValueError(f"runtime {runtime!r} is unknown; allowed: {', '.join(RUNTIMES)}")


class RuntimeBackbone(Backbone):
    """A backbone+FPN exported with :func:`rwdet.deploy.export_backbone`, run in a runtime.

    Args:
        runner: from :func:`load_runner`: (B, 3, H, W) float32 array -> the feature arrays.
        output_shape: the PyTorch backbone's ``output_shape()`` (names in output order).
        size_divisibility, padding_constraints: the PyTorch backbone's (Detectron2's
            ``preprocess_image`` pads the images with them before the backbone).
        runtime: the runtime's name (for ``repr``).

    Forward: (B, 3, H, W) image batch (normalised, padded to ``size_divisibility``) ->
    ``{name: (B, C, H / stride, W / stride)}`` float32 tensors on the input's device.
    No parameters: the weights live in the runtime.
    """

    def __init__(self, runner, output_shape: Dict[str, ShapeSpec], size_divisibility: int = 0,
                 padding_constraints: Optional[dict] = None, runtime: str = ""):
        super().__init__()
        self._runner = runner
        self._shapes = dict(output_shape)
        self._out_features = list(output_shape)
        self._size_divisibility = int(size_divisibility)
        self._padding_constraints = dict(padding_constraints or {})
        self.runtime = runtime

    @property
    def size_divisibility(self) -> int:
        return self._size_divisibility

    @property
    def padding_constraints(self) -> Dict[str, int]:
        return self._padding_constraints

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return dict(self._shapes)

    def extra_repr(self) -> str:
        return f"runtime={self.runtime!r}, outputs={self._out_features}"

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        outs = self._runner(np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy()))
        return {n: torch.from_numpy(np.asarray(o)).to(x.device) for n, o in zip(self._out_features, outs)}

    @classmethod
    def from_export(cls, folder: str, runtime: Optional[str] = None, precision: Optional[str] = None,
                    threads: Optional[int] = None) -> "RuntimeBackbone":
        """Load ``folder/backbone.json`` and the model file it names.

        Args:
            folder: an export folder of ``--part backbone``.
            runtime: default the format's (:data:`DEFAULT_RUNTIME`); "openvino" also reads ONNX.
            precision: None: the export's (``backbone.json``'s "precision", fp32 when absent);
                an f32 export may also be served at "bf16"; an int8 export only at "int8".
            threads: the runtime's CPU threads (None: its default).

        Raises:
            FileNotFoundError: no ``backbone.json`` or model file in ``folder``.
            ValueError: a runtime that cannot read the export's format, or a precision the
                export cannot be served at.
        """
        meta_path = os.path.join(folder, "backbone.json")
        if not os.path.isfile(meta_path):
            raise FileNotFoundError(f"{meta_path} does not exist; export with --part backbone first")
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
        runtime = runtime or DEFAULT_RUNTIME[meta["format"]]
        if meta["format"] not in RUNTIMES.get(runtime, ()):
            raise ValueError(f"runtime {runtime!r} cannot run a {meta['format']} export; allowed: "
                             f"{[r for r, f in RUNTIMES.items() if meta['format'] in f]}")
        exported = meta.get("precision", "fp32")
        precision = precision or exported
        if (exported == "int8") != (precision == "int8"):
            raise ValueError(f"{folder} holds a {exported} export: it is served at "
                             f"{'int8' if exported == 'int8' else 'fp32 or bf16'}, not {precision!r}")
        path = os.path.join(folder, meta["file"])
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} (named in {meta_path}) does not exist")
        return cls(load_runner(path, runtime, threads=threads, precision=precision), shapes_from_metadata(meta),
                   meta["size_divisibility"], meta["padding_constraints"], runtime)


def _sample_image(backbone: Backbone, size: int = 256) -> torch.Tensor:
    div = max(int(backbone.size_divisibility), 1)
    side = -(-size // div) * div
    return torch.zeros(1, 3, side, side)


def serve_backbone(model: nn.Module, runtime: str, pad_channels: int = 0, precision: str = "fp32",
                   calibration: Optional[Sequence[np.ndarray]] = None) -> nn.Module:
    """Run ``model.backbone`` in ``runtime`` from now on: fold the model's BatchNorms, export
    its backbone+FPN in memory (ONNX bytes for onnxruntime, ``openvino.convert_model`` for
    openvino, ``torch.jit.trace`` for torchscript; dynamic batch, H and W) and put a
    :class:`RuntimeBackbone` in its place. Detectron2's heads stay in PyTorch.

    Args:
        model: a detector with a ``backbone`` attribute (``GeneralizedRCNN``), weights loaded.
        runtime: "onnxruntime", "openvino" or "torchscript".
        pad_channels: > 0: RandWire widths rounded up to a multiple of this before export
            (:func:`rwdet.deploy.pad_randwire_channels`; the same outputs); 0: off.
        precision: "fp32", "bf16" or "int8" (:func:`load_runner`); the heads stay fp32.
        calibration: int8 only: the calibration inputs of the backbone+FPN
            (:func:`rwdet.deploy.quantize.calibration_batches`), which NNCF quantizes with.

    Returns:
        ``model``, changed in place (eval mode).

    Raises:
        ValueError: an unknown runtime, a model without a ``backbone``, one already served, or
            int8 without calibration inputs.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime {runtime!r} is unknown; allowed: {', '.join(RUNTIMES)}")
    if not isinstance(getattr(model, "backbone", None), Backbone):
        raise ValueError(f"{type(model).__name__} has no Detectron2 backbone to run in {runtime}")
    if isinstance(model.backbone, RuntimeBackbone):
        raise ValueError(f"the backbone already runs in {model.backbone.runtime}; serve a PyTorch model")
    check_precision(precision, runtime, key="precision")
    if precision == "int8" and not calibration:
        raise ValueError("int8 serving needs calibration inputs (rwdet.deploy.quantize.calibration_batches)")
    prepare_for_export(model, pad_channels)
    backbone = model.backbone
    wrapper = BackboneAsTuple(backbone).eval()
    sample = _sample_image(backbone).to(next(backbone.parameters()).device)
    if runtime != "onnxruntime":  # OpenVINO and the traced module run on the CPU
        wrapper, sample = wrapper.cpu(), sample.cpu()
    exported = export_in_memory(wrapper, sample, RUNTIMES[runtime][0], wrapper.names,
                                backbone_dynamic_axes(wrapper.names))
    if precision == "int8":
        exported = quantize_openvino(exported, calibration)
    runner = load_runner(exported, runtime, precision=precision)
    model.backbone = RuntimeBackbone(runner, backbone.output_shape(),
                                     backbone.size_divisibility, backbone.padding_constraints, runtime)
    logger.info("Serving: the backbone+FPN runs in %s (BN folded) at %s (runs: %s); the heads in PyTorch, fp32",
                runtime, precision_note(precision), runner.precision)
    return model


def check_deploy_config(cfg) -> None:
    """Check the MODEL.DEPLOY keys before any work: RUNTIME known and installed
    (:func:`check_runtime`), PAD_CHANNELS an integer >= 0, PRECISION known and served by the
    runtime (:func:`rwdet.deploy.precision.check_precision`), CALIBRATION_IMAGES >= 1, and
    BACKBONE_EXPORT (when set) a folder with ``backbone.json``, served by RUNTIME.

    Raises:
        ValueError, ImportError, FileNotFoundError: naming the key, the value and what is allowed.
    """
    check_runtime(cfg.MODEL.DEPLOY.RUNTIME)
    check_pad_channels(cfg.MODEL.DEPLOY.PAD_CHANNELS)
    check_precision(cfg.MODEL.DEPLOY.PRECISION, cfg.MODEL.DEPLOY.RUNTIME)
    check_calibration_images(cfg.MODEL.DEPLOY.CALIBRATION_IMAGES)
    folder = cfg.MODEL.DEPLOY.BACKBONE_EXPORT
    if folder:
        if cfg.MODEL.DEPLOY.RUNTIME in ("", "pytorch"):
            raise ValueError(f"MODEL.DEPLOY.BACKBONE_EXPORT={folder!r} is served by a runtime: set "
                             "MODEL.DEPLOY.RUNTIME to one that reads it (e.g. 'openvino')")
        if not os.path.isfile(os.path.join(folder, "backbone.json")):
            raise FileNotFoundError(f"MODEL.DEPLOY.BACKBONE_EXPORT={folder!r} holds no backbone.json: give a folder "
                                    "written by tools/export_model.py --part backbone")


def needs_calibration(cfg) -> bool:
    """Whether serving ``cfg`` quantizes at load (MODEL.DEPLOY.PRECISION int8 without
    BACKBONE_EXPORT), which reads DATASETS.TRAIN (:func:`rwdet.deploy.quantize.calibration_batches`)."""
    return cfg.MODEL.DEPLOY.PRECISION == "int8" and not cfg.MODEL.DEPLOY.BACKBONE_EXPORT


def check_export_weights(folder: str, weights: str) -> None:
    """Refuse to serve an exported backbone+FPN beside heads from other weights: the export's
    ``backbone.json`` names the SHA-256 of the checkpoint it was exported from.

    Raises:
        ValueError: naming both files, when the digests differ.
    """
    with open(os.path.join(folder, "backbone.json"), encoding="utf-8") as f:
        exported_from = json.load(f).get("weights_sha256")
    if exported_from and weights and os.path.isfile(weights) and file_sha256(weights) != exported_from:
        raise ValueError(f"MODEL.DEPLOY.BACKBONE_EXPORT={folder!r} was exported from other weights than "
                         f"MODEL.WEIGHTS={weights!r} (SHA-256 differs): its backbone would not fit these heads")


def apply_deploy_runtime(cfg, model: nn.Module) -> nn.Module:
    """Apply the config's MODEL.DEPLOY keys to a loaded detector. RUNTIME "" or "pytorch" leave
    it in PyTorch; "onnxruntime", "openvino" or "torchscript" run its backbone+FPN there
    (:func:`serve_backbone`), exported at load, or read from BACKBONE_EXPORT (a folder of
    ``tools/export_model.py --part backbone``). PAD_CHANNELS > 0 folds the BatchNorms and pads
    the RandWire widths first (:func:`rwdet.deploy.pad_randwire_channels`), in either case.
    PRECISION "bf16" runs the backbone+FPN in bf16 (eager: under ``torch.autocast``,
    :class:`AutocastBackbone`); "int8" in OpenVINO, quantized by NNCF on the first
    CALIBRATION_IMAGES images of DATASETS.TRAIN (:mod:`rwdet.deploy.quantize`) unless
    BACKBONE_EXPORT holds an int8 export. The heads stay fp32.

    Raises:
        ValueError, ImportError, FileNotFoundError: as :func:`check_deploy_config`, and
            :func:`check_export_weights`.
    """
    check_deploy_config(cfg)
    runtime, pad, precision = cfg.MODEL.DEPLOY.RUNTIME, cfg.MODEL.DEPLOY.PAD_CHANNELS, cfg.MODEL.DEPLOY.PRECISION
    if runtime in ("", "pytorch"):
        model = prepare_for_export(model, pad) if pad else model
        if precision == "bf16":
            model.backbone = AutocastBackbone(model.backbone, torch.bfloat16)
            logger.info("Serving: the backbone+FPN runs in eager PyTorch at %s; the heads fp32", precision_note(precision))
        return model
    folder = cfg.MODEL.DEPLOY.BACKBONE_EXPORT
    if folder:
        check_export_weights(folder, cfg.MODEL.WEIGHTS)
        prepare_for_export(model)  # eval mode; the backbone is replaced whole (PAD_CHANNELS was the export's)
        model.backbone = RuntimeBackbone.from_export(folder, runtime, precision)
        logger.info("Serving: the backbone+FPN of %s runs in %s at %s (runs: %s); the heads in PyTorch, fp32",
                    folder, runtime, precision_note(precision), model.backbone._runner.precision)
        return model
    calibration = None
    if precision == "int8":
        calibration = calibration_batches(cfg, model, cfg.MODEL.DEPLOY.CALIBRATION_IMAGES)
    return serve_backbone(model, runtime, pad, precision, calibration)


class ExportedDetector:
    """A whole detector exported with :func:`rwdet.deploy.export_model`, run in a runtime,
    called as a Detectron2 model in eval mode (for ``inference_on_dataset``).

    Args:
        path: the model file.
        runtime: one of :data:`RUNTIMES` that reads its format.
        outputs_schema: the ``TracingAdapter``'s ``outputs_schema`` (it rebuilds ``Instances``
            from the flat outputs); it is not stored in the file, so evaluate in the process
            that exported, as upstream does.
        precision: "fp32" or "bf16" (:func:`load_runner`).

    Call: ``[{"image": (3, H, W) tensor resized for the model, "height": h, "width": w}, ...]``
    -> ``[{"instances": Instances in the (h, w) original image}]`` (one image per run).
    """

    def __init__(self, path: str, runtime: str, outputs_schema, precision: str = "fp32"):
        self.runner = load_runner(path, runtime, precision=precision)
        self.outputs_schema = outputs_schema
        self.runtime = runtime

    def __call__(self, inputs: Sequence[dict]) -> List[dict]:
        results = []
        for item in inputs:
            image = item["image"]
            outs = self.runner(np.ascontiguousarray(image.to(torch.float32).numpy()))
            instances = self.outputs_schema(tuple(torch.from_numpy(np.asarray(o)) for o in outs))[0]["instances"]
            height, width = item.get("height", image.shape[1]), item.get("width", image.shape[2])
            results.append({"instances": detector_postprocess(instances, height, width)})
        return results
