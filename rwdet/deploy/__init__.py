"""Deployment: export a detector or its backbone+FPN (ONNX, OpenVINO IR, TorchScript) and run
it in ONNX Runtime / OpenVINO / TorchScript on the CPU (docs/DEPLOY.md).

Sits after ``engine`` in rwdet's import order (it uses ``modeling``, ``layers`` and
``engine``'s checkpointer); nothing below it imports it.
"""

from .export import (  # noqa: F401
    FILE_NAMES, FORMATS, ONNX_OPSET, PARTS, BackboneAsTuple, backbone_metadata, export_backbone, export_in_memory, export_model,
    check_pad_channels, model_tracing_adapter, prepare_for_export,
)
from .pad import pad_randwire_channels  # noqa: F401
from .precision import PRECISIONS, AutocastBackbone, check_precision, precision_note  # noqa: F401
from .runtime import (  # noqa: F401
    DEFAULT_RUNTIME, DEPLOY_RUNTIMES, RUNTIMES, ExportedDetector, RuntimeBackbone, apply_deploy_runtime,
    check_deploy_config, check_export_weights, check_runtime, load_runner, needs_calibration, serve_backbone,
)
from .quantize import DEFAULT_CALIBRATION_IMAGES, calibration_batches, quantize_openvino  # noqa: F401
