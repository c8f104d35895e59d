"""rwdet: randomly wired networks (RandWire, Xie et al., ICCV 2019) for Detectron2.

Importing ``rwdet`` registers the RandWire backbones in Detectron2's ``BACKBONE_REGISTRY``.

The package's layers, each importing only from those before it: ``graphs`` (random graphs,
``GraphSpec``, their statistics) -> ``config`` (config keys) -> ``layers`` (ops) ->
``modeling`` (RandWire stages, classifier, backbones) -> ``data`` (datasets) -> ``engine``
(detection trainer, checkpointing, run set-up) -> ``deploy`` (export, ONNX Runtime / OpenVINO
serving) -> ``classification`` (pretraining) ->
``analysis`` (the paper's analyses) -> ``model_zoo`` (the shipped configs) -> ``tools/``; ``utils`` (atomic file writes) sits at the
bottom, as ``detectron2.utils``.
"""

import logging
import warnings


def ignore_dependency_warnings() -> None:
    """Ignore exactly the warnings of rwdet's dependencies that no user of rwdet can act on, each
    by its message, category and the module that issues it (called once, at ``import rwdet``,
    before detectron2 is first imported; tools import rwdet first for this):

    * torch >= 2.10 reports each ``torch.jit.script`` decoration that importing detectron2
      makes with a FutureWarning (torch/jit/_script.py);
    * detectron2.model_zoo (Detectron2's R50-FPN configs, read by the benchmark, and its common
      LazyConfig pieces, imported by rwdet's Python configs through detectron2.config.lazy's
      import hook) imports pkg_resources, which setuptools >= 81 reports with a UserWarning at
      that import;
    * Detectron2's anchor generator (modeling/anchor_generator.py, _create_grid_offsets) calls
      torch.meshgrid without ``indexing``, which torch reports once, at the first training step
      (from torch/functional.py); its default ("ij") is what Detectron2 means;
    * Detectron2's ROIPooler (modeling/poolers.py) asks ``torch.fx``'s ``is_fx_tracing``, which
      torch >= 2.10 answers once with a log warning (logger ``torch.fx._symbolic_trace``, not a
      Python warning) about torch.export, at the first training step; that one message is dropped
      by a logging filter.
    """
    warnings.filterwarnings(
        "ignore", message=r"`torch\.jit\.script(_method)?` is (deprecated|not supported)",
        category=FutureWarning, module=r"torch\.jit\._script",
    )
    warnings.filterwarnings(
        "ignore", message=r"pkg_resources is deprecated as an API",
        category=UserWarning, module=r"detectron2\.(model_zoo\.model_zoo|config\.lazy)",
    )
    warnings.filterwarnings(
        "ignore", message=r"torch\.meshgrid: in an upcoming release, it will be required to pass the indexing argument",
        category=UserWarning, module=r"torch\.functional",
    )
    fx_logger = logging.getLogger("torch.fx._symbolic_trace")
    if _drop_is_fx_tracing_notice not in fx_logger.filters:
        fx_logger.addFilter(_drop_is_fx_tracing_notice)


def _drop_is_fx_tracing_notice(record: logging.LogRecord) -> bool:
    """False (drop) for torch.fx's "is_fx_tracing will return true for both ..." notice only."""
    return not str(record.msg).startswith("is_fx_tracing will return true for both fx.symbolic_trace")


ignore_dependency_warnings()

from .config import add_randwire_config, freeze_graph_specs, randwire_graph_specs  # noqa: E402,F401
from .graphs import GraphSpec, generate_graph  # noqa: E402,F401
from . import modeling  # noqa: E402,F401  (registers the backbones)

__version__ = "0.1.0"
