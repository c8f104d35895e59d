"""rwdet: randomly wired networks (RandWire, Xie et al., ICCV 2019) for Detectron2.

Importing ``rwdet`` registers the RandWire backbones in Detectron2's ``BACKBONE_REGISTRY``.

The package's layers, each importing only from those before it: ``graphs`` (random graphs,
``GraphSpec``, their statistics) -> ``config`` (config keys) -> ``layers`` (ops) ->
``modeling`` (RandWire stages, classifier, backbones) -> ``data`` (datasets) -> ``engine``
(detection trainer, checkpointing, run set-up) -> ``deploy`` (export, ONNX Runtime / OpenVINO
serving) -> ``classification`` (pretraining) ->
``analysis`` (the paper's analyses) -> ``tools/``; ``utils`` (atomic file writes) sits at the
bottom, as ``detectron2.utils``.
"""

import warnings

# Importing detectron2 decorates functions with torch.jit.script, which torch >= 2.10 reports
# with a FutureWarning per use (torch/jit/_script.py) that no user of rwdet can act on. Ignore
# exactly those, before detectron2 is first imported (tools import rwdet first for this).
warnings.filterwarnings(
    "ignore", message=r"`torch\.jit\.script(_method)?` is (deprecated|not supported)",
    category=FutureWarning, module=r"torch\.jit\._script",
)

from .config import add_randwire_config, freeze_graph_specs, randwire_graph_specs  # noqa: E402,F401
from .graphs import GraphSpec, generate_graph  # noqa: E402,F401
from . import modeling  # noqa: E402,F401  (registers the backbones)

__version__ = "0.1.0"
