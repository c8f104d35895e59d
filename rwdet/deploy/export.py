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
"""

from __future__ import annotations

import io
import json
import logging
import os
import warnings
from typing import Dict, List, Sequence, Tuple

import torch
from detectron2.export import TracingAdapter
from detectron2.layers import ShapeSpec
from detectron2.modeling import Backbone, GeneralizedRCNN
from torch import nn

from ..engine.checkpoint import AtomicCheckpointer
from ..layers import fold_batchnorm

__all__ = [
    "FORMATS", "PARTS", "ONNX_OPSET", "FILE_NAMES", "BackboneAsTuple", "export_backbone",
    "export_model", "backbone_metadata", "model_tracing_adapter", "prepare_for_export",
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


def backbone_metadata(backbone: Backbone, fmt: str, file: str) -> dict:
    """What a runtime needs to stand in for ``backbone`` (written beside the export as
    ``backbone.json``): the output names in order, each one's channels and stride, and
    ``size_divisibility`` / ``padding_constraints`` (read by Detectron2's ``preprocess_image``)."""
    return {
        "format": fmt, "file": os.path.basename(file),
        "outputs": list(backbone.output_shape()),
        "output_shape": {k: {"channels": s.channels, "stride": s.stride} for k, s in backbone.output_shape().items()},
        "size_divisibility": int(backbone.size_divisibility),
        "padding_constraints": dict(backbone.padding_constraints),
    }


def shapes_from_metadata(meta: dict) -> Dict[str, ShapeSpec]:
    """``output_shape()`` of an exported backbone from its :func:`backbone_metadata`."""
    return {k: ShapeSpec(channels=meta["output_shape"][k]["channels"], stride=meta["output_shape"][k]["stride"])
            for k in meta["outputs"]}


def prepare_for_export(model: nn.Module) -> nn.Module:
    """Put ``model`` in eval mode and fold its BatchNorms (in place); returns it. Idempotent:
    a folded model has no BN left to fold."""
    return fold_batchnorm(model.eval())


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


def _write_format(module, sample, fmt, path, output_names, dynamic_axes) -> None:
    if fmt == "onnx":
        data = _onnx_bytes(module, sample, output_names, dynamic_axes)
        with open(path, "wb") as f:
            f.write(data)
    elif fmt == "openvino":
        import openvino as ov

        ov.save_model(_openvino_model(module, sample), path, compress_to_fp16=False)
    else:
        with torch.no_grad():
            traced = torch.jit.trace(module, (sample,), check_trace=False)
        torch.jit.save(traced, path)


def backbone_dynamic_axes(names: Sequence[str]) -> dict:
    """ONNX dynamic axes of :class:`BackboneAsTuple`: batch, height and width of the image and
    of every output."""
    axes = {"image": {0: "batch", 2: "height", 3: "width"}}
    axes.update({n: {0: "batch", 2: f"{n}_height", 3: f"{n}_width"} for n in names})
    return axes


def export_backbone(backbone: Backbone, sample: torch.Tensor, fmt: str, output_dir: str) -> str:
    """Export a (BN-folded, eval-mode) backbone+FPN to ``output_dir/backbone.{onnx,xml,ts}`` and
    write ``output_dir/backbone.json`` (:func:`backbone_metadata`).

    Args:
        backbone: a Detectron2 ``Backbone`` in eval mode (see :func:`prepare_for_export`).
        sample: (1, 3, H, W) float32 image batch, normalised and padded to
            ``backbone.size_divisibility``; its H and W are only a trace example (the export
            takes any batch, H and W).
        fmt: one of :data:`FORMATS`.
        output_dir: created if missing.

    Returns:
        The path of the model file.

    Raises:
        ValueError: an unknown ``fmt`` (before anything is written).
    """
    _check_format(fmt)
    wrapper = BackboneAsTuple(backbone).eval()
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, FILE_NAMES[fmt].format(part="backbone"))
    _write(wrapper, sample, fmt, path, wrapper.names, backbone_dynamic_axes(wrapper.names))
    with open(os.path.join(output_dir, "backbone.json"), "w", encoding="utf-8") as f:
        json.dump(backbone_metadata(backbone, fmt, path), f, indent=2)
    logger.info("Exported the backbone+FPN (%s) to %s", ", ".join(wrapper.names), path)
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


class _RecordingCheckpointer(AtomicCheckpointer):
    """Keeps what fvcore's ``Checkpointer._load_model`` reports (missing keys, shapes)."""

    incompatible = None

    def _load_model(self, checkpoint):
        self.incompatible = super()._load_model(checkpoint)
        return self.incompatible


def _load_complete(model: nn.Module, path: str) -> None:
    """Load the checkpoint ``path`` into ``model`` (Detectron2's checkpointer, rwdet's checks)
    and refuse one that leaves any parameter or buffer of the model unloaded.

    TODO(lead): a private stand-in for the complete-load function being added to
    ``rwdet/engine/checkpoint.py`` on another branch; swap it for that one.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: keys of the model missing from the checkpoint, or with another shape (the
            message names them); a file that is not a checkpoint (``CheckpointReadError``).
    """
    if not path or not os.path.isfile(path):
        raise FileNotFoundError(f"MODEL.WEIGHTS={path!r} does not exist; give a trained detector's checkpoint (.pth)")
    checkpointer = _RecordingCheckpointer(model)
    checkpointer.load(path, checkpointables=[])
    incompatible = checkpointer.incompatible
    missing = list(incompatible.missing_keys) if incompatible is not None else []
    shapes = [k for k, *_ in incompatible.incorrect_shapes] if incompatible is not None else []
    if missing or shapes:
        raise ValueError(
            f"checkpoint {path} does not fit the model: "
            + (f"{len(missing)} keys missing from it (e.g. {missing[:5]})" if missing else "")
            + ("; " if missing and shapes else "")
            + (f"{len(shapes)} keys with other shapes (e.g. {shapes[:5]})" if shapes else "")
            + "; export needs every parameter loaded (check the config matches the checkpoint)"
        )

