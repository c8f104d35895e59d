"""Checkpointing that never leaves a half-written file behind."""

from __future__ import annotations

import os
from typing import Any, Dict, List

import torch
from detectron2.checkpoint import DetectionCheckpointer

from ..graphs import GraphSpec

__all__ = ["AtomicDetectionCheckpointer", "GraphSpecRecord"]


def _atomic_write(path: str, write) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class AtomicDetectionCheckpointer(DetectionCheckpointer):
    """Detectron2's ``DetectionCheckpointer`` with atomic writes.

    ``save`` writes the checkpoint and the ``last_checkpoint`` tag to a temporary file in the same
    folder, fsyncs it and renames it over the target (``os.replace``), so a crash mid-save leaves
    the previous checkpoint intact and ``--resume`` finds a complete file. Loading is unchanged.
    Local paths only (the save folder is a local directory).
    """

    def save(self, name: str, **kwargs: Any) -> None:
        """Same arguments as fvcore's ``Checkpointer.save``; the write is atomic."""
        if not self.save_dir or not self.save_to_disk:
            return
        data: Dict[str, Any] = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", save_file)
        _atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        """Write the ``last_checkpoint`` tag atomically."""
        path = os.path.join(self.save_dir, "last_checkpoint")
        _atomic_write(path, lambda f: f.write(last_filename_basename.encode()))


class GraphSpecRecord:
    """A checkpointable that stores a model's graph specs in its checkpoints.

    Saved as ``{"specs": [json, ...]}``; on load (``--resume``) a checkpoint whose specs differ
    from the model's is refused, since its weights belong to a different network.

    Args:
        specs: the model's graph specs, one per random stage.
    """

    def __init__(self, specs: List[GraphSpec]):
        self.specs = list(specs)

    def state_dict(self) -> dict:
        return {"specs": [s.to_json() for s in self.specs]}

    def load_state_dict(self, state: dict) -> None:
        """Raises ValueError if the saved specs are not the model's."""
        saved = [GraphSpec.from_json(s) for s in state.get("specs", [])]
        if saved != self.specs:
            raise ValueError(
                "the checkpoint was trained with different random graphs: "
                f"{[s.describe() for s in saved]} vs the model's {[s.describe() for s in self.specs]}"
                " (or the same settings with other edges)"
            )
