"""Serving precision: fp32 (exact, the default), bf16 or int8, for the backbone+FPN in eager
PyTorch or in a runtime (MODEL.DEPLOY.PRECISION).

bf16 keeps fp32's exponent range with an 8-bit mantissa; CPUs with AVX512-BF16 or AMX run its
dot products natively (``rwdet.utils.cpu.bf16_support``). In eager PyTorch the backbone+FPN
runs under ``torch.autocast("cpu", torch.bfloat16)`` (oneDNN: convolutions and matmuls in bf16,
accumulating in f32; precision-sensitive ops stay f32) and hands f32 features to the heads, which
run as they are served today; in OpenVINO the CPU plugin's ``INFERENCE_PRECISION_HINT`` is bf16.
Where the CPU has neither instruction set the arithmetic is emulated (converted to f32 and back),
slower than fp32: rwdet says so in the log rather than report emulated speed as bf16's.

int8 is OpenVINO's alone: the backbone+FPN quantized after training by NNCF, calibrated on
training images (:mod:`rwdet.deploy.quantize`).
"""

from __future__ import annotations

import logging
from typing import Dict

import torch
from detectron2.modeling import Backbone

from ..utils.cpu import bf16_support, int8_support

__all__ = ["PRECISIONS", "AutocastBackbone", "check_precision", "precision_note"]

logger = logging.getLogger(__name__)

#: Values of MODEL.DEPLOY.PRECISION (and ``tools/benchmark.py --precision``).
PRECISIONS = ("fp32", "bf16", "int8")
#: Runtimes that serve each precision ("" and "pytorch": eager).
SERVED = {"fp32": ("", "pytorch", "onnxruntime", "openvino", "torchscript"),
          "bf16": ("", "pytorch", "openvino", "torchscript"),
          "int8": ("openvino",)}
#: Why a runtime does not serve a precision (the refusal's reason).
_WHY_NOT = {"bf16": "its CPU provider has no bf16 kernels",
            "int8": "int8 is NNCF's post-training quantization of an OpenVINO model"}


def check_precision(precision: str, runtime: str = "", key: str = "MODEL.DEPLOY.PRECISION") -> None:
    """Refuse an unknown precision, or one the runtime does not serve.

    Raises:
        ValueError: naming the key, the value and what is allowed (ONNX Runtime's CPU
            provider has no bf16 convolutions: serve bf16 in OpenVINO or eager PyTorch; int8
            runs in OpenVINO only, ``runtime`` "openvino").
    """
    if precision not in PRECISIONS:
        raise ValueError(f"{key}={precision!r} is unknown; allowed: {', '.join(repr(p) for p in PRECISIONS)}")
    if runtime not in SERVED[precision]:
        raise ValueError(f"{key}={precision!r} is not served by runtime {runtime!r} ({_WHY_NOT[precision]}); "
                         f"{precision} runs in: {', '.join(repr(r) for r in SERVED[precision] if r)}")


def precision_note(precision: str) -> str:
    """One line for the log and the benchmark JSON: what runs at ``precision`` on this CPU."""
    if precision == "fp32":
        return "fp32"
    if precision == "int8":
        how = int8_support()
        return f"int8 native ({how})" if how != "no VNNI" else "int8 WITHOUT VNNI: may be no faster than fp32"
    how = bf16_support()
    if how == "emulated":
        return "bf16 EMULATED: this CPU has neither AVX512-BF16 nor AMX; slower than fp32"
    return f"bf16 native ({how})"


class AutocastBackbone(Backbone):
    """A Detectron2 backbone run under ``torch.autocast(device, dtype)``, its features handed
    on in float32 (the heads run as before). Shapes, ``size_divisibility`` and
    ``padding_constraints`` are the wrapped backbone's.

    Args:
        backbone: the PyTorch backbone (e.g. RandWire + FPN), eval mode.
        dtype: ``torch.bfloat16``.

    Forward: (B, 3, H, W) float32 -> ``{name: (B, C, H / stride, W / stride)}`` float32.
    """

    def __init__(self, backbone: Backbone, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        self.backbone = backbone
        self.dtype = dtype

    @property
    def size_divisibility(self) -> int:
        return self.backbone.size_divisibility

    @property
    def padding_constraints(self) -> Dict[str, int]:
        return self.backbone.padding_constraints

    def output_shape(self):
        return self.backbone.output_shape()

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        with torch.autocast(x.device.type, dtype=self.dtype):
            out = self.backbone(x)
        return {k: v.float() for k, v in out.items()}
