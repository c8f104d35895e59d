"""rwdet: randomly wired networks (RandWire, Xie et al., ICCV 2019) for Detectron2.

Importing ``rwdet`` registers the RandWire backbones in Detectron2's ``BACKBONE_REGISTRY``.
"""

from .config import add_randwire_config, freeze_graph_specs, randwire_graph_specs  # noqa: F401
from .graphs import GraphSpec, generate_graph  # noqa: F401
from . import modeling  # noqa: F401  (registers the backbones)

__version__ = "0.1.0"
