"""The inference runtime of a benchmark side: the BN-folded model exported and run in ONNX Runtime,
OpenVINO or TorchScript instead of eager PyTorch, its layout reorders counted, its outputs checked
against eager PyTorch's.

What runs in the runtime (``BenchmarkSetup.runtime``; eager PyTorch runs everything else):

* a classifier: the whole folded classifier, exported at the benchmark's input shape (static);
* a backbone-only side: the folded backbone+FPN as :class:`rwdet.deploy.BackboneAsTuple` with
  dynamic batch, height and width, as :func:`rwdet.deploy.serve_backbone` exports it;
* a detector: the same backbone+FPN export, put in place of ``model.backbone`` as a
  :class:`rwdet.deploy.RuntimeBackbone` (the serving path of ``MODEL.DEPLOY.RUNTIME``);
  Detectron2's RPN, ROI heads and NMS stay in PyTorch.

Exports: ONNX opset :data:`rwdet.deploy.ONNX_OPSET` through ``torch.onnx.export(dynamo=False)``
(kept in memory), ``openvino.convert_model`` on the PyTorch module, ``torch.jit.trace``
(rwdet.deploy's exporters); runners: :func:`rwdet.deploy.load_runner` with the benchmark's
threads (ONNX Runtime ``intra_op_num_threads``, OpenVINO ``INFERENCE_NUM_THREADS`` and the
``LATENCY`` hint, f32).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from .specs import RUNTIMES



def export_module(module: nn.Module, sample: torch.Tensor, runtime: str, output_names: Sequence[str],
                  dynamic_axes: Optional[dict] = None) -> Any:
    """Export an eval-mode module (one tensor in, a tensor or tuple of tensors out) for ``runtime``,
    in memory.

    Args:
        module: e.g. a folded classifier or :class:`rwdet.deploy.BackboneAsTuple`.
        sample: its input, e.g. (B, 3, H, W) float32 on the CPU.
        runtime: "onnxruntime", "openvino" or "torchscript".
        output_names, dynamic_axes: ONNX output names and dynamic axes (input "image"); None or
            {}: static shapes.

    Returns:
        ONNX bytes, an ``openvino.Model`` or a ``torch.jit.ScriptModule``, as
        :func:`rwdet.deploy.load_runner` takes them.

    Raises:
        ValueError: an unknown runtime.
    """
    from ...deploy import RUNTIMES as FORMATS_OF, export_in_memory

    if runtime not in FORMATS_OF:
        raise ValueError(f"runtime {runtime!r} is unknown; allowed: {', '.join(RUNTIMES[1:])}")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit.trace's deprecation
        return export_in_memory(module, sample, FORMATS_OF[runtime][0], output_names, dynamic_axes)


def count_reorders(exported: Any, runner: Callable, runtime: str, threads: Optional[int]) -> Optional[int]:
    """Layout reorders the runtime inserts into the compiled graph, or None where it exposes none.

    * OpenVINO: ops of ``compiled_model.get_runtime_model()`` whose ``layerType`` is "Reorder".
    * ONNX Runtime: nodes whose ``op_type`` contains "Reorder" (``ReorderInput`` /
      ``ReorderOutput`` of the NCHWc layout transformer) in the optimized graph, written by a
      second session with the same options and ``optimized_model_filepath`` (built once, not timed).
    * TorchScript: None (oneDNN reorders happen inside PyTorch's ops; see ``--profile`` in eager).
    """
    if runtime == "openvino":
        ops = runner.compiled.get_runtime_model().get_ordered_ops()
        return sum(1 for op in ops if str(op.get_rt_info()["layerType"].astype(str)) == "Reorder")
    if runtime == "onnxruntime":
        import onnx
        import onnxruntime as ort

        with tempfile.TemporaryDirectory(prefix="rwdet-ort-") as tmp:
            options = ort.SessionOptions()
            options.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")
            if threads is not None:
                options.intra_op_num_threads = threads
            ort.InferenceSession(exported, sess_options=options, providers=["CPUExecutionProvider"])
            graph = onnx.load(options.optimized_model_filepath).graph
        return sum(1 for node in graph.node if "Reorder" in node.op_type)
    return None


def runtime_runner(module: nn.Module, sample: torch.Tensor, runtime: str, threads: Optional[int],
                   output_names: Sequence[str], dynamic_axes: Optional[dict] = None, precision: str = "fp32",
                   ) -> Tuple[Callable[[np.ndarray], List[np.ndarray]], Dict[str, Any]]:
    """Export ``module`` (:func:`export_module`) and load it in ``runtime`` with ``threads`` at
    ``precision`` (:func:`rwdet.deploy.load_runner`). int8 (OpenVINO): the export is quantized by
    NNCF first, calibrated on ``sample`` alone (speed does not depend on the ranges it sets).

    Returns:
        (runner: float32 array -> list of output arrays, ``{"name": runtime, "reorders": int or
        None, "precision": what the runtime compiled}``).
    """
    from ...deploy import load_runner

    exported = export_module(module, sample, runtime, output_names, dynamic_axes)
    if precision == "int8":
        from ...deploy.quantize import quantize_openvino

        exported = quantize_openvino(exported, [sample.detach().cpu().numpy()])
    runner = load_runner(exported, runtime, threads=threads, precision=precision)
    runner.exported = exported  # for openvino_layer_times
    return runner, {"name": runtime, "reorders": count_reorders(exported, runner, runtime, threads),
                    "precision": runner.precision}


class RuntimeModule:
    """A classifier run by a runtime, called as the PyTorch module was.

    Call: (B, 3, H, W) float32 CPU tensor -> (B, classes) tensor (the runner's first output).
    """

    def __init__(self, runner: Callable[[np.ndarray], List[np.ndarray]]):
        self.runner = runner

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.runner(np.ascontiguousarray(x.detach().numpy()))[0]))


def max_abs_error(got: Sequence[torch.Tensor], ref: Sequence[torch.Tensor]) -> Dict[str, float]:
    """``{"max_abs_err": max |got - ref| over all outputs, "max_abs_ref": max |ref|}`` (float32 units
    of the outputs: logits or feature values).

    Raises:
        ValueError: different numbers or shapes of outputs.
    """
    if len(got) != len(ref):
        raise ValueError(f"{len(got)} runtime outputs but {len(ref)} eager outputs")
    err, scale = 0.0, 0.0
    for a, b in zip(got, ref):
        if tuple(a.shape) != tuple(b.shape):
            raise ValueError(f"runtime output of shape {tuple(a.shape)} against eager {tuple(b.shape)}")
        err = max(err, float((a.float() - b.float()).abs().max()))
        scale = max(scale, float(b.float().abs().max()))
    return {"max_abs_err": err, "max_abs_ref": scale}


def openvino_layer_kind(node_type: str, exec_type: str) -> str:
    """The row of :func:`openvino_layer_times` for one executed layer: OpenVINO's layer type, with
    1x1 convolutions and depthwise (grouped) convolutions told apart by their kernel's name."""
    if node_type == "Convolution":
        return "Convolution 1x1" if "1x1" in exec_type else "Convolution kxk"
    if node_type == "GroupConvolution":
        return "GroupConvolution (depthwise)" if "dw" in exec_type else "GroupConvolution"
    return node_type


def openvino_layer_times(exported: Any, sample: np.ndarray, threads: Optional[int], iters: int,
                         precision: str = "fp32") -> Dict[str, float]:
    """Where an OpenVINO inference's time goes: ``exported`` compiled as :func:`rwdet.deploy.load_runner`
    compiles it (``precision``'s hint: bf16 for "bf16", else f32; ``threads``, ``LATENCY``) plus
    ``PERF_COUNT``, run ``iters`` times after 2 warm-up runs; OpenVINO's own per-layer
    ``real_time`` summed per layer kind (:func:`openvino_layer_kind`).

    Args:
        exported: an ``openvino.Model`` (what :func:`export_module` gives for "openvino").
        sample: the input, float32.
        threads: CPU threads (None: OpenVINO's default).
        iters: measured runs (>= 1).
        precision: "fp32", "bf16" or "int8" (an int8 ``exported`` is already quantized).

    Returns:
        ``{kind: ms per run, ..., "total": ms per run}`` (the total of the executed layers).
    """
    import openvino as ov

    config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32", "PERF_COUNT": True}
    if threads is not None:
        config.update(INFERENCE_NUM_THREADS=threads, PERFORMANCE_HINT="LATENCY")
    request = ov.Core().compile_model(exported, "CPU", config).create_infer_request()
    for _ in range(2):
        request.infer({0: sample})
    times: Dict[str, float] = {}
    for _ in range(iters):
        request.infer({0: sample})
        for info in request.get_profiling_info():
            if info.status.name == "EXECUTED":
                kind = openvino_layer_kind(info.node_type, info.exec_type)
                times[kind] = times.get(kind, 0.0) + info.real_time.total_seconds() * 1000 / iters
    times["total"] = sum(times.values())
    return times
