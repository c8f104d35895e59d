"""Checkpointing that never leaves a half-written file behind, and checks RandWire graphs."""

from __future__ import annotations

import contextlib
import glob
import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from detectron2.checkpoint import DetectionCheckpointer

from ..graphs import GraphSpec
from ..modeling.randwire import RandWire
from ..utils.io import atomic_write
from .transfer import classifier_to_detector_state, is_pretraining_checkpoint

__all__ = ["AtomicCheckpointer", "CheckpointReadError", "GraphSpecRecord", "IncompleteCheckpointError",
           "resume_candidates",
           "load_for_inference"]

logger = logging.getLogger(__name__)


class CheckpointReadError(ValueError):
    """A file given as a checkpoint cannot be read as one (not a checkpoint, truncated,
    unreadable); the message names the file."""


class IncompleteCheckpointError(ValueError):
    """A checkpoint loaded for use (evaluation, demo, export, ``--resume``) leaves some of the
    model's parameters or buffers unloaded: missing from it, or of another shape. The message
    names every such tensor with both shapes and the likely cause."""


#: Final layers whose first dimension counts classes: (state-dict key, config key, rows that are
#: not classes, prefix of the layers sized by the class count). Detectron2's
#: ``FastRCNNOutputLayers`` has ``NUM_CLASSES + 1`` score rows (background) and class-specific box
#: deltas; rwdet's classifier ``fc`` has ``MODEL.NUM_CLASSES`` rows.
_CLASS_LAYERS = (
    ("roi_heads.box_predictor.cls_score.weight", "MODEL.ROI_HEADS.NUM_CLASSES", 1, "roi_heads.box_predictor."),
    ("fc.weight", "MODEL.NUM_CLASSES", 0, "fc."),
)


def _classes(n: int) -> str:
    return f"{n} class" + ("" if n == 1 else "es")


def _unloaded_message(path: str, incompatible, n_model: int) -> str:
    """One message naming every tensor that ``incompatible`` (fvcore's ``_IncompatibleKeys``)
    leaves unloaded, with both shapes, and the likely cause."""
    shapes = {k: (tuple(c), tuple(m)) for k, c, m in incompatible.incorrect_shapes}
    # fvcore drops the keys of other shapes before load_state_dict, so they are "missing" too.
    missing = sorted(set(incompatible.missing_keys) - set(shapes))
    parts = [f"{k}: checkpoint {list(c)}, model {list(m)}" for k, (c, m) in sorted(shapes.items())]
    parts += [f"{k}: not in the checkpoint" for k in missing]
    unloaded = set(shapes) | set(missing)
    causes, explained = [], set()
    for key, cfg_key, extra, prefix in _CLASS_LAYERS:
        if key in shapes:
            c, m = shapes[key][0][0] - extra, shapes[key][1][0] - extra
            causes.append(f"the checkpoint was trained for {_classes(c)} and the model is built for {m}: "
                          f"set {cfg_key} {c} (and a dataset with {_classes(c)}), or use a checkpoint trained "
                          "on this dataset")
            explained |= {k for k in unloaded if k.startswith(prefix)}
    if unloaded - explained:
        causes.append("the checkpoint belongs to another architecture or config (backbone, FPN, heads, "
                      "MODEL.RANDWIRE): use the config it was trained with (its run's config.yaml)")
    return (f"checkpoint {path} does not fit the model: {len(parts)} of {n_model} parameters and buffers "
            f"would be left unloaded ({'; '.join(parts)}). Likely cause: {'; or '.join(causes)}. "
            "Refused before the model is used.")


def resume_candidates(save_dir: str) -> List[str]:
    """The checkpoints that ``--resume`` tries in a run folder, in order: the one named by its
    ``last_checkpoint`` tag (fvcore's ``Checkpointer``), then every other ``*.pth`` of the folder,
    newest (mtime) first. :meth:`AtomicCheckpointer.resume_or_load` resumes from the first that
    exists and reads; ``tools/compare_backbones.py`` follows the same order to tell where a
    stopped run goes on.

    Args:
        save_dir: the run folder (``OUTPUT_DIR``).

    Returns:
        Paths, possibly of missing files (a tag naming a removed file); ``[]`` without a tag,
        where ``--resume`` starts from iteration 0.
    """
    tag = os.path.join(save_dir, "last_checkpoint")
    if not os.path.isfile(tag):
        return []
    with open(tag) as f:
        tagged = os.path.join(save_dir, f.read().strip())
    others = [p for p in glob.glob(os.path.join(glob.escape(save_dir), "*.pth")) if p != tagged]
    return [tagged] + sorted(others, key=lambda p: (os.path.getmtime(p), p), reverse=True)


class AtomicCheckpointer(DetectionCheckpointer):
    """Detectron2's ``DetectionCheckpointer`` with atomic writes and RandWire pretraining input,
    for any model: the detection and the classification trainers both save through it.

    ``save`` writes the checkpoint and the ``last_checkpoint`` tag to a temporary file in the same
    folder, fsyncs it and renames it over the target (``os.replace``), so a crash mid-save leaves
    the previous checkpoint intact and ``--resume`` finds a complete file. Local paths only.

    Loading takes Detectron2's formats as before, plus rwdet pretraining checkpoints, whose
    classifier body goes into the detector's bottom-up network (RandWire, or Detectron2's ResNet
    for a ``resnet18`` classifier; ``rwdet.engine.transfer``; the
    log reports matched, missing and unexpected keys, and the dict that ``load`` returns holds
    them under ``"transfer_report"``). Any rwdet checkpoint whose graphs
    differ from the model's is refused with a ValueError, whatever path loads it.

    Completeness: with ``require_complete`` (evaluation, demo, export; set for the duration of
    :meth:`resume_or_load` when it resumes from ``save_dir``), a checkpoint that leaves any of
    the model's parameters or buffers unloaded (fvcore's ``_IncompatibleKeys``: missing keys and
    keys skipped for their shape; Detectron2's ``pixel_mean`` / ``pixel_std``, which come from
    the config, excepted) raises :class:`IncompleteCheckpointError` naming each with both shapes,
    and an empty path (nothing to load) is refused too. The model is then left partly loaded:
    discard it. Otherwise (fine-tuning from MODEL.WEIGHTS, where a new head is expected)
    Detectron2's behaviour is kept and one summary line is logged: how many tensors loaded and
    which were left at their initialisation. The last load's report is ``last_incompatible``.

    Args:
        model, save_dir, **checkpointables: as Detectron2's ``DetectionCheckpointer``.
        require_complete: refuse incomplete loads (see above); default False.
    """

    def __init__(self, model, save_dir: str = "", *, require_complete: bool = False, **kwargs):
        super().__init__(model, save_dir, **kwargs)
        self.require_complete = bool(require_complete)
        self.last_incompatible = None
        self._loading: Optional[str] = None

    @contextlib.contextmanager
    def requiring_complete(self):
        """Within the block, loads refuse incomplete checkpoints (``require_complete``)."""
        before, self.require_complete = self.require_complete, True
        try:
            yield self
        finally:
            self.require_complete = before

    def load(self, path: str, checkpointables: Optional[List[str]] = None) -> Dict[str, Any]:
        """Detectron2's ``load``, with the completeness check (see the class docstring).

        Raises:
            IncompleteCheckpointError: ``require_complete`` and the checkpoint leaves tensors
                unloaded, or ``path`` is empty.
            CheckpointReadError, ValueError: as :meth:`_load_file`.
        """
        if self.require_complete and not path:
            raise IncompleteCheckpointError(
                "no checkpoint to load (MODEL.WEIGHTS is empty): the model would be used with random "
                "weights; set MODEL.WEIGHTS path/to/model_final.pth")
        self._loading = path
        try:
            return super().load(path, checkpointables)
        finally:
            self._loading = None

    def _load_model(self, checkpoint: Any):
        """Detectron2's ``_load_model`` (fvcore's shape check, then ``load_state_dict(strict=False)``),
        then the completeness check or the summary line. Returns fvcore's ``_IncompatibleKeys``."""
        incompatible = super()._load_model(checkpoint)
        self.last_incompatible = incompatible
        state = self.model.state_dict()
        unloaded = set(incompatible.missing_keys) | {k for k, _, _ in incompatible.incorrect_shapes}
        path = self._loading or "(checkpoint)"
        if unloaded and self.require_complete:
            raise IncompleteCheckpointError(_unloaded_message(path, incompatible, len(state)))
        shown = sorted(unloaded)
        self.logger.info(
            "Loaded %d of %d model tensors from %s; left at their initialisation: %s",
            len(state) - len(unloaded), len(state), path,
            (", ".join(shown[:30]) + (f" ... and {len(shown) - 30} more" if len(shown) > 30 else "")) if shown
            else "none")
        return incompatible

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
            if "backbone" in dict(self.model.named_children()):  # into a detector
                bottom_up = getattr(self.model.backbone, "bottom_up", None)
                state, report = classifier_to_detector_state(
                    loaded, target, specs, filename, type(bottom_up).__name__ if bottom_up is not None else None)
                return {"model": state, "__author__": "rwdet pretraining", "matching_heuristics": False,
                        "transfer_report": report}
        if specs is not None and "randwire_graphs" in loaded:
            # Same architecture, other graphs: shapes may still match, so check the specs.
            GraphSpecRecord(specs).load_state_dict(loaded["randwire_graphs"])
        return loaded

    def resume_or_load(self, path: str, *, resume: bool = True) -> Dict[str, Any]:
        """fvcore's ``resume_or_load``, with a fallback: on ``resume``, when the checkpoint named
        by ``last_checkpoint`` cannot be read (truncated, corrupt, removed), the newest other
        ``*.pth`` of ``save_dir`` that loads is used instead, with a warning. A checkpoint
        refused for other graphs is not skipped (ValueError). Resuming requires a complete
        checkpoint (``require_complete``); loading ``path`` when not resuming follows
        ``require_complete`` as set (fine-tuning: off).

        Raises:
            CheckpointReadError: no checkpoint of ``save_dir`` can be read (the message names
                each), or ``path`` cannot be read when not resuming.
            IncompleteCheckpointError: the checkpoint resumed from leaves model tensors unloaded
                (it is not skipped for another).
        """
        if not (resume and self.has_checkpoint()):
            return super().resume_or_load(path, resume=resume)
        with self.requiring_complete():  # a resumed run continues the same model
            return self._resume()

    def _resume(self) -> Dict[str, Any]:
        """The loop of :meth:`resume_or_load` over :func:`resume_candidates`."""
        errors = []
        for candidate in resume_candidates(self.save_dir):
            if not os.path.isfile(candidate):  # a tag naming a removed file: fvcore would assert
                errors.append(f"{candidate} not found")
                continue
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


def load_for_inference(model, path: str, checkpointer: Optional[AtomicCheckpointer] = None) -> Dict[str, Any]:
    """Load the checkpoint at ``path`` into ``model`` for use (evaluation, demo, export): every
    parameter and buffer of ``model`` must be loaded from it, else nothing is used.

    Args:
        model: the built model (detector or classifier), not wrapped in DistributedDataParallel.
        path: a checkpoint file (Detectron2 / rwdet ``.pth``, Detectron2 ``.pkl``).
        checkpointer: an :class:`AtomicCheckpointer` of ``model`` to load through (e.g. a
            trainer's, which checks the graphs); default a new one.

    Returns:
        What the checkpoint holds besides the weights (fvcore's ``load``; no checkpointable is
        loaded).

    Raises:
        IncompleteCheckpointError: ``path`` is empty, or the checkpoint leaves a parameter or
            buffer unloaded (missing, or another shape); the message names each with both
            shapes and the likely cause (MODEL.ROI_HEADS.NUM_CLASSES, another architecture).
            ``model`` is then partly loaded: discard it.
        CheckpointReadError: ``path`` is not a readable checkpoint.
        ValueError: its random graphs differ from the model's.
    """
    checkpointer = checkpointer if checkpointer is not None else AtomicCheckpointer(model)
    with checkpointer.requiring_complete():
        return checkpointer.load(path, checkpointables=[])
