"""Export a detector, or its backbone+FPN alone, to ONNX, OpenVINO IR or TorchScript.

The whole detector goes through Detectron2's ``TracingAdapter`` (``detectron2.export.flatten``),
as upstream ``tools/deploy/export_model.py`` (``--export-method tracing``): the graph takes one
image tensor (3, H, W), already resized (not padded: normalisation and padding to
``size_divisibility`` are traced in) and returns flat tensors that the adapter's
``outputs_schema`` turns back into ``Instances``. The backbone+FPN alone (a Detectron2
``Backbone``: image batch -> dict of p2..p6) is exported as :class:`BackboneAsTuple`, a module
returning the features as a tuple in ``output_shape()`` order, with dynamic batch, height and
width. BatchNorm is folded into the convs first (:func:`rwdet.layers.fold_batchnorm`).

Formats:

- ``onnx``: ``torch.onnx.export(dynamo=False)`` at opset :data:`ONNX_OPSET` (>= 16, so that
  ROIAlign keeps ``aligned=True``), dynamic H/W axes.
- ``openvino``: IR ``.xml``/``.bin`` from ``openvino.convert_model`` on the PyTorch module
  (OpenVINO's PyTorch frontend traces it itself), saved in f32 (``compress_to_fp16=False``).
  Reading the ONNX file instead gives the same backbone features but, for the whole detector,
  one spurious detection where PyTorch and ONNX Runtime give none (the empty-NMS case); the
  PyTorch route has no such case and needs no ONNX file.
- ``torchscript``: ``torch.jit.trace`` (upstream's tracing export).

Known limit: the whole detector in OpenVINO pads some image sizes 32 px further than PyTorch
(its conversion of Detectron2's ``ImageList.from_tensors``), so its detections differ; the
backbone+FPN export is not affected (docs/DEPLOY.md).
"""

from __future__ import annotations

import io
import json
import logging
import os
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from detectron2.export import TracingAdapter
from detectron2.layers import ShapeSpec
from detectron2.modeling import Backbone, GeneralizedRCNN
from torch import nn

from ..layers import fold_batchnorm
from .pad import pad_randwire_channels

__all__ = [
    "FORMATS", "PARTS", "ONNX_OPSET", "FILE_NAMES", "BackboneAsTuple", "export_backbone", "export_in_memory",
    "export_model", "backbone_metadata", "model_tracing_adapter", "prepare_for_export", "check_pad_channels",
]

logger = logging.getLogger(__name__)

#: Export formats, as ``--format`` takes them.
FORMATS = ("onnx", "openvino", "torchscript")
#: What is exported: the whole detector or its backbone+FPN alone.
PARTS = ("model", "backbone")
#: ONNX opset: >= 16 keeps ROIAlign's ``aligned=True`` (Detectron2's ROIAlignV2).
ONNX_OPSET = 17
#: File written per format (``{part}`` is "model" or "backbone"); OpenVINO adds the ``.bin``.
FILE_NAMES = {"onnx": "{part}.onnx", "openvino": "{part}.xml", "torchscript": "{part}.ts"}


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"export format {fmt!r} is unknown; allowed: {', '.join(FORMATS)}")


class BackboneAsTuple(nn.Module):
    """A Detectron2 ``Backbone`` whose output dict is returned as a tuple, for export.

    Args:
        backbone: e.g. RandWire-FPN (``build_randwire_fpn_backbone``).

    Forward: (B, 3, H, W) float image batch, normalised and padded to ``size_divisibility``
    (as ``GeneralizedRCNN.preprocess_image`` gives it) -> tuple of (B, C_i, H / s_i, W / s_i),
    in the order of :attr:`names` (``backbone.output_shape()``'s order, p2..p6 for an FPN).
    """

    def __init__(self, backbone: Backbone):
        super().__init__()
        self.backbone = backbone
        self.names: List[str] = list(backbone.output_shape())

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        out = self.backbone(x)
        return tuple(out[n] for n in self.names)


def backbone_metadata(backbone: Backbone, fmt: str, file: str, precision: str = "fp32", **extra) -> dict:
    """What a runtime needs to stand in for ``backbone`` (written beside the export as
    ``backbone.json``): the output names in order, each one's channels and stride,
    ``size_divisibility`` / ``padding_constraints`` (read by Detectron2's ``preprocess_image``),
    the precision it is served at, and ``extra`` items (e.g. ``weights_sha256``,
    ``calibration_images``)."""
    return {
        "format": fmt, "file": os.path.basename(file), "precision": precision, **extra,
        "outputs": list(backbone.output_shape()),
        "output_shape": {k: {"channels": s.channels, "stride": s.stride} for k, s in backbone.output_shape().items()},
        "size_divisibility": int(backbone.size_divisibility),
        "padding_constraints": dict(backbone.padding_constraints),
    }


def shapes_from_metadata(meta: dict) -> Dict[str, ShapeSpec]:
    """``output_shape()`` of an exported backbone from its :func:`backbone_metadata`."""
    return {k: ShapeSpec(channels=meta["output_shape"][k]["channels"], stride=meta["output_shape"][k]["stride"])
            for k in meta["outputs"]}


def prepare_for_export(model: nn.Module, pad_channels: int = 0) -> nn.Module:
    """Put ``model`` in eval mode and fold its BatchNorms (in place); returns it. Idempotent:
    a folded model has no BN left to fold.

    Args:
        model: a classifier or detector.
        pad_channels: > 0: then round its RandWire widths up to a multiple of this with zero
            filters (:func:`rwdet.deploy.pad_randwire_channels`: the same outputs); 0: off.

    Raises:
        ValueError: ``pad_channels`` < 0, or a model the padding cannot handle (nothing is
            changed then but the fold).
    """
    check_pad_channels(pad_channels)
    fold_batchnorm(model.eval())
    if pad_channels:
        pad_randwire_channels(model, pad_channels)
    return model


def check_pad_channels(value, key: str = "MODEL.DEPLOY.PAD_CHANNELS") -> None:
    """Raise ValueError naming ``key`` unless ``value`` is an integer >= 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{key}={value!r} must be an integer >= 0 (0: off; 16: the AVX-512 f32 channel block)")


def _onnx_bytes(module: nn.Module, sample: torch.Tensor, output_names: Sequence[str], dynamic_axes: dict) -> bytes:
    f = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(module, (sample,), f, dynamo=False, opset_version=ONNX_OPSET,
                          input_names=["image"], output_names=list(output_names), dynamic_axes=dynamic_axes)
    return f.getvalue()


def _openvino_model(module: nn.Module, sample: torch.Tensor):
    import openvino as ov

    with torch.no_grad():
        return ov.convert_model(module, example_input=(sample,))


def _write(module: nn.Module, sample: torch.Tensor, fmt: str, path: str, output_names, dynamic_axes) -> None:
    with warnings.catch_warnings():
        # Detectron2's shape asserts and Python ints in the traced code: checked by the tests
        # (other input sizes, no detections), not actionable by a user.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        _write_format(module, sample, fmt, path, output_names, dynamic_axes)


def export_in_memory(module: nn.Module, sample: torch.Tensor, fmt: str, output_names: Sequence[str] = (),
                     dynamic_axes: Optional[dict] = None):
    """Export an eval-mode ``module`` (one tensor in, a tensor or tuple of tensors out), traced on
    ``sample``, without writing a file: the one place where each format is made.

    Args:
        module: e.g. a folded classifier or :class:`BackboneAsTuple`.
        sample: its input, e.g. (B, 3, H, W) float32.
        fmt: "onnx" (``torch.onnx.export(dynamo=False)`` at :data:`ONNX_OPSET`, input "image"),
            "openvino" (``openvino.convert_model`` on the module) or "torchscript"
            (``torch.jit.trace``).
        output_names, dynamic_axes: ONNX output names and dynamic axes (None: static shapes);
            the other formats take the shapes from the trace.

    Returns:
        ONNX bytes, an ``openvino.Model`` or a ``torch.jit.ScriptModule``, as
        :func:`rwdet.deploy.load_runner` takes them.

    Raises:
        ValueError: an unknown format.
    """
    if fmt == "onnx":
        return _onnx_bytes(module, sample, output_names, dynamic_axes or {})
    if fmt == "openvino":
        return _openvino_model(module, sample)
    if fmt == "torchscript":
        with torch.no_grad():
            return torch.jit.trace(module, (sample,), check_trace=False)
    raise ValueError(f"format {fmt!r} is unknown; allowed: {', '.join(FORMATS)}")


def _write_format(module, sample, fmt, path, output_names, dynamic_axes) -> None:
    exported = export_in_memory(module, sample, fmt, output_names, dynamic_axes)
    if fmt == "onnx":
        with open(path, "wb") as f:
            f.write(exported)
    elif fmt == "openvino":
        import openvino as ov

        ov.save_model(exported, path, compress_to_fp16=False)
    else:
        torch.jit.save(exported, path)


def backbone_dynamic_axes(names: Sequence[str]) -> dict:
    """ONNX dynamic axes of :class:`BackboneAsTuple`: batch, height and width of the image and
    of every output."""
    axes = {"image": {0: "batch", 2: "height", 3: "width"}}
    axes.update({n: {0: "batch", 2: f"{n}_height", 3: f"{n}_width"} for n in names})
    return axes


def export_backbone(backbone: Backbone, sample: torch.Tensor, fmt: str, output_dir: str, precision: str = "fp32",
                    calibration: Optional[Sequence] = None, **extra) -> str:
    """Export a (BN-folded, eval-mode) backbone+FPN to ``output_dir/backbone.{onnx,xml,ts}`` and
    write ``output_dir/backbone.json`` (:func:`backbone_metadata`).

    Args:
        backbone: a Detectron2 ``Backbone`` in eval mode (see :func:`prepare_for_export`).
        sample: (1, 3, H, W) float32 image batch, normalised and padded to
            ``backbone.size_divisibility``; its H and W are only a trace example (the export
            takes any batch, H and W).
        fmt: one of :data:`FORMATS`.
        output_dir: created if missing.
        precision: "fp32" or "bf16" (the same f32 file; bf16 is the precision it is served at,
            recorded in ``backbone.json``), or "int8": ``fmt`` "openvino" only, the IR quantized
            by NNCF on ``calibration`` (:func:`rwdet.deploy.quantize.quantize_openvino`).
        calibration: int8: (1, 3, H, W) float32 arrays as ``sample``.
        extra: more items for ``backbone.json``.

    Returns:
        The path of the model file.

    Raises:
        ValueError: an unknown ``fmt``, int8 in another format than openvino or without
            calibration (before anything is written).
    """
    _check_format(fmt)
    if precision == "int8" and fmt != "openvino":
        raise ValueError(f"int8 export is an OpenVINO IR quantized by NNCF: use format 'openvino', not {fmt!r}")
    if precision == "int8" and not calibration:
        raise ValueError("int8 export needs calibration images")
    wrapper = BackboneAsTuple(backbone).eval()
    path = os.path.join(output_dir, FILE_NAMES[fmt].format(part="backbone"))
    if precision == "int8":
        import openvino as ov

        from .quantize import quantize_openvino

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            quantized = quantize_openvino(export_in_memory(wrapper, sample, fmt), calibration)
        extra["calibration_images"] = len(calibration)
        os.makedirs(output_dir, exist_ok=True)
        ov.save_model(quantized, path, compress_to_fp16=False)
    else:
        os.makedirs(output_dir, exist_ok=True)
        _write(wrapper, sample, fmt, path, wrapper.names, backbone_dynamic_axes(wrapper.names))
    with open(os.path.join(output_dir, "backbone.json"), "w", encoding="utf-8") as f:
        json.dump(backbone_metadata(backbone, fmt, path, precision, **extra), f, indent=2)
    logger.info("Exported the backbone+FPN (%s) at %s to %s", ", ".join(wrapper.names), precision, path)
    return path


def model_tracing_adapter(model: nn.Module, image: torch.Tensor) -> TracingAdapter:
    """Detectron2's ``TracingAdapter`` of a detector, as upstream's ``export_tracing``: for a
    ``GeneralizedRCNN``, ``model.inference(..., do_postprocess=False)`` (boxes in the resized
    input's coordinates; :func:`detectron2.modeling.postprocessing.detector_postprocess` maps
    them back), else the model itself.

    Args:
        model: a detector in eval mode.
        image: (3, H, W) float32 image in the model's INPUT.FORMAT, resized as at test time.

    Returns:
        The adapter in eval mode: ``adapter(image)`` gives a tuple of tensors (for Faster
        R-CNN: boxes (N, 4), classes (N,), scores (N,), image size (2,));
        ``adapter.outputs_schema(outputs)`` rebuilds ``[{"instances": Instances}]``.
    """
    if isinstance(model, GeneralizedRCNN):
        def inference(m, inputs):
            return [{"instances": m.inference(inputs, do_postprocess=False)[0]}]
    else:
        inference = None
    # eval(): the adapter itself starts in training mode, and export restores that mode
    # recursively, which would put the detector in training mode.
    return TracingAdapter(model, [{"image": image}], inference).eval()


def export_model(model: nn.Module, image: torch.Tensor, fmt: str, output_dir: str) -> Tuple[str, TracingAdapter]:
    """Export a whole (BN-folded, eval-mode) detector to ``output_dir/model.{onnx,xml,ts}``
    through :func:`model_tracing_adapter`.

    Args:
        model: the detector (see :func:`prepare_for_export`).
        image: (3, H, W) float32 sample image, resized as at test time; H and W are dynamic in
            the export.
        fmt: one of :data:`FORMATS`.
        output_dir: created if missing.

    Returns:
        ``(path of the model file, the adapter)``: the adapter's ``outputs_schema`` turns the
        exported model's outputs back into Detectron2's structures.

    Raises:
        ValueError: an unknown ``fmt`` (before anything is written).
    """
    _check_format(fmt)
    adapter = model_tracing_adapter(model, image)
    with torch.no_grad():
        n_out = len(adapter(image))
    names = [f"output{i}" for i in range(n_out)]
    axes = {"image": {1: "height", 2: "width"}}
    axes.update({n: {0: f"{n}_dim0"} for n in names})
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, FILE_NAMES[fmt].format(part="model"))
    _write(adapter, image, fmt, path, names, axes)
    adapter.eval()
    logger.info("Exported the whole detector to %s; outputs schema: %s", path, adapter.outputs_schema)
    return path, adapter
