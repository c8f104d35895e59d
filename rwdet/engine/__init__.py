"""Training and checkpointing built on Detectron2's engine."""

from .checkpoint import AtomicCheckpointer, GraphSpecRecord, IncompleteCheckpointError, load_for_inference  # noqa: F401
from .trainer import Trainer, format_results, save_results  # noqa: F401
