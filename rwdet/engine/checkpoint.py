"""Checkpointing that never leaves a half-written file behind, and checks RandWire graphs."""

from __future__ import annotations

import glob
import logging
import os
from typing import Any, Dict, List

import torch
from detectron2.checkpoint import DetectionCheckpointer

from ..graphs import GraphSpec
from ..modeling.randwire import RandWire
from ..utils.io import atomic_write
from .transfer import classifier_to_detector_state, is_pretraining_checkpoint

__all__ = ["AtomicCheckpointer", "CheckpointReadError", "GraphSpecRecord"]

logger = logging.getLogger(__name__)


class CheckpointReadError(ValueError):
    """A file given as a checkpoint cannot be read as one (not a checkpoint, truncated,
    unreadable); the message names the file."""


class AtomicCheckpointer(DetectionCheckpointer):
    """Detectron2's ``DetectionCheckpointer`` with atomic writes and RandWire pretraining input,
    for any model: the detection and the classification trainers both save through it.

    ``save`` writes the checkpoint and the ``last_checkpoint`` tag to a temporary file in the same
    folder, fsyncs it and renames it over the target (``os.replace``), so a crash mid-save leaves
    the previous checkpoint intact and ``--resume`` finds a complete file. Local paths only.

    Loading takes Detectron2's formats as before, plus rwdet pretraining checkpoints, whose
    classifier body goes into the model's RandWire backbone (``rwdet.engine.transfer``; the
    log reports matched, missing and unexpected keys, and the dict that ``load`` returns holds
    them under ``"transfer_report"``). Any rwdet checkpoint whose graphs
    differ from the model's is refused with a ValueError, whatever path loads it.
    """

    def _load_file(self, filename: str) -> Dict[str, Any]:
        """Detectron2's ``_load_file``, then the RandWire checks.

        Raises:
            CheckpointReadError: ``filename`` is not a readable checkpoint (not a pickle, a
                truncated file, a pickle that is not a dict); the message names it.
            ValueError: its graphs differ from the model's.
        """
        try:
            loaded = super()._load_file(filename)
            if not isinstance(loaded, dict) or not isinstance(loaded.get("model"), dict):
                raise TypeError(f"it holds a {type(loaded).__name__}, not a dict with a 'model' state dict")
        except Exception as e:
            raise CheckpointReadError(
                f"{filename} is not a readable checkpoint ({type(e).__name__}: {e}); expected a "
                "file written by torch.save (Detectron2 / rwdet .pth) or a Detectron2 .pkl"
            ) from e
        specs = next((m.specs for m in self.model.modules() if isinstance(m, RandWire)), None)
        if is_pretraining_checkpoint(loaded):
            target = self.model.state_dict()
            if any(k.startswith("backbone.bottom_up.") for k in target):  # into a detector
                state, report = classifier_to_detector_state(loaded, target, specs, filename)
                return {"model": state, "__author__": "rwdet pretraining", "matching_heuristics": False,
                        "transfer_report": report}
        if specs is not None and "randwire_graphs" in loaded:
            # Same architecture, other graphs: shapes may still match, so check the specs.
            GraphSpecRecord(specs).load_state_dict(loaded["randwire_graphs"])
        return loaded

    def resume_or_load(self, path: str, *, resume: bool = True) -> Dict[str, Any]:
        """fvcore's ``resume_or_load``, with a fallback: on ``resume``, when the checkpoint named
        by ``last_checkpoint`` cannot be read (truncated, corrupt), the newest other
        ``*.pth`` of ``save_dir`` that loads is used instead, with a warning. A checkpoint
        refused for other graphs is not skipped (ValueError).

        Raises:
            CheckpointReadError: no checkpoint of ``save_dir`` can be read (the message names
                each), or ``path`` cannot be read when not resuming.
        """
        if not (resume and self.has_checkpoint()):
            return super().resume_or_load(path, resume=resume)
        tagged = self.get_checkpoint_file()
        others = [p for p in glob.glob(os.path.join(glob.escape(self.save_dir), "*.pth")) if p != tagged]
        candidates = [tagged] + sorted(others, key=lambda p: (os.path.getmtime(p), p), reverse=True)
        errors = []
        for candidate in candidates:
            try:
                loaded = self.load(candidate)
            except CheckpointReadError as e:
                errors.append(str(e))
                self._parsed_url_during_load = None  # DetectionCheckpointer.load leaves it set
                continue
            if errors:
                self.logger.warning(
                    "Resuming from %s instead: %s", candidate, "; ".join(errors)
                )
            return loaded
        raise CheckpointReadError(f"--resume: no checkpoint in {self.save_dir} can be read: " + "; ".join(errors))

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
        atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        """Write the ``last_checkpoint`` tag atomically."""
        path = os.path.join(self.save_dir, "last_checkpoint")
        atomic_write(path, lambda f: f.write(last_filename_basename.encode()))


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
