"""Exact resumption of detection training: the data stream and the random draws continue where
they stopped.

Detectron2's ``--resume`` restores the weights, the optimizer, the scheduler and the iteration,
but its training data stream starts again from its first batch and the random generators
start again from ``SEED``, so a run stopped and resumed at iteration ``k`` trains on other
batches, with other flips and other sampled proposals, than the same run left alone. Here:

* :class:`ResumableSampler` wraps Detectron2's training sampler (its infinite, seeded index
  stream) so that the resumed stream drops the indices already trained on;
* :class:`ExactResume` (a hook) stores the Python, NumPy and torch (CPU and CUDA) generator
  states of every process in each checkpoint and restores them on ``--resume``, then starts
  the sampler at ``start_iter * IMS_PER_BATCH / world size``;
* :func:`isolated_rng` runs evaluation on a copy of those states (``Trainer.test``), so that
  how often a run evaluates (``TEST.EVAL_PERIOD``) does not change its training: Detectron2's
  test-time ``ResizeShortestEdge`` draws from NumPy's generator.

A run resumed at any checkpoint then ends with the same weights, bit for bit, as one that was
never stopped, provided ``SEED >= 0`` (a random seed draws another sampler seed on restart),
``DATALOADER.NUM_WORKERS`` is 0 (workers' generators are seeded when they start) and the
aspect-ratio groups do not hold a partial batch at the checkpoint (true when every image has
the same orientation, as in BCCD, or with ``DATALOADER.ASPECT_RATIO_GROUPING False``).
Otherwise the resumed run still continues the same index stream.

Source: Detectron2's ``TrainingSampler`` (seeded infinite stream) and ``HookBase`` state dicts;
the same idea as rwdet's classification trainer (``rwdet.classification.data``).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import random
from typing import Iterator, List, Optional

import numpy as np
import torch
from detectron2.engine import HookBase
from detectron2.utils import comm

__all__ = ["ResumableSampler", "ExactResume", "rng_state", "set_rng_state", "isolated_rng"]

logger = logging.getLogger(__name__)


def rng_state() -> dict:
    """This process's generator states: Python's ``random``, NumPy's global ``RandomState``,
    torch's CPU generator and (when CUDA is initialised) every CUDA device's, as tensors and
    plain values (loadable by ``torch.load(weights_only=True)``)."""
    version, internal, gauss_next = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    return {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64),
                   "gauss_next": gauss_next},
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": list(cuda),
    }


def set_rng_state(state: dict) -> None:
    """Restore states from :func:`rng_state`; CUDA states only if CUDA is available and
    they name as many devices as there are.

    Raises:
        KeyError: ``state`` lacks the python, numpy or torch entry.
    """
    py, npy = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss_next"]))
    np.random.set_state((npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


@contextlib.contextmanager
def isolated_rng():
    """Run the block on the current generator states and put them back afterwards, so that
    the block's draws (e.g. an evaluation's) do not shift the draws that follow it."""
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


class ResumableSampler(torch.utils.data.Sampler):
    """A training sampler whose stream can start at a given position.

    Iterating yields ``sampler``'s indices (this rank's share of Detectron2's infinite,
    seeded stream) without the first ``start`` of them (:meth:`start_at`; 0 at first). The
    wrapped sampler is iterated anew each time, so the stream is the one an uninterrupted run
    sees from that position on.

    Args:
        sampler: an infinite training sampler (e.g. Detectron2's ``TrainingSampler``).
    """

    def __init__(self, sampler: torch.utils.data.Sampler):
        self.sampler = sampler
        self.start = 0
        self._rng: Optional[dict] = None

    def start_at(self, start: int, rng: Optional[dict] = None) -> None:
        """Skip the first ``start`` indices (>= 0) from the next iteration on; with ``rng`` (a
        :func:`rng_state`), also restore those generator states when the next iteration starts
        in this process (once; not in a DataLoader worker).

        The loader's first item is mapped right after its iterator draws its base seed from
        torch's generator, so restoring here, not before, leaves the generators as they were
        at this point of an uninterrupted run.

        Raises:
            ValueError: ``start`` is negative.
        """
        if start < 0:
            raise ValueError(f"start={start} must be >= 0")
        self.start = int(start)
        self._rng = rng

    def __iter__(self) -> Iterator[int]:
        if self._rng is not None and torch.utils.data.get_worker_info() is None:
            set_rng_state(self._rng)
            self._rng = None
        return itertools.islice(iter(self.sampler), self.start, None)


class ExactResume(HookBase):
    """Store every process's generator states in each checkpoint; on ``--resume`` restore
    them and start the training stream where the checkpoint left it (see the module docstring).

    The states are gathered from all processes (``comm.all_gather``) in ``after_step`` of the
    iterations at which ``PeriodicCheckpointer`` saves (every ``checkpoint_period`` iterations
    and the last), so this hook must come before that one. A checkpoint without them (written
    before this hook existed) resumes as Detectron2 does, with a warning; a run resumed with
    another number of processes restores each process's state only if it has one.

    Args:
        sampler: the training loader's :class:`ResumableSampler`, or None (the stream then
            restarts, with a warning).
        images_per_rank: images each process takes per iteration (``IMS_PER_BATCH / world``).
        checkpoint_period: ``SOLVER.CHECKPOINT_PERIOD``.
        in_process: the loader maps data in this process (``DATALOADER.NUM_WORKERS`` 0): the
            states are then restored when the stream starts (:meth:`ResumableSampler.start_at`),
            else in ``before_train``.
    """

    def __init__(self, sampler: Optional[ResumableSampler], images_per_rank: int, checkpoint_period: int,
                 in_process: bool = True):
        self._sampler = sampler
        self._in_process = bool(in_process)
        self._images = int(images_per_rank)
        self._period = int(checkpoint_period)
        self._states: Optional[List[dict]] = None
        self._loaded: Optional[List[dict]] = None

    def after_step(self) -> None:
        nxt = self.trainer.iter + 1
        if (self._period > 0 and nxt % self._period == 0) or nxt >= self.trainer.max_iter:
            self.capture()

    def capture(self) -> None:
        """Gather every process's generator states as of now for the next checkpoint (a
        collective in a multi-process run: every process calls it at the same point; the
        preemption checkpoint does, :mod:`rwdet.engine.preemption`)."""
        self._states = comm.all_gather(rng_state()) if comm.get_world_size() > 1 else [rng_state()]

    def state_dict(self) -> dict:
        """``{"rng": [one state per rank]}`` as of the end of the current iteration."""
        states = self._states if self._states is not None else [rng_state()]
        return {"rng": states}

    def load_state_dict(self, state: dict) -> None:
        self._loaded = state.get("rng")

    def before_train(self) -> None:
        start = self.trainer.start_iter
        if start <= 0:
            return
        rank = comm.get_rank()
        state = self._loaded[rank] if self._loaded is not None and rank < len(self._loaded) else None
        if self._sampler is not None:
            # In-process loading: the sampler restores the states when the stream starts.
            self._sampler.start_at(start * self._images, state if self._in_process else None)
        else:
            logger.warning("Resuming at iteration %d: the training sampler is not resumable, "
                           "so its stream restarts from the beginning", start)
        if state is None:
            logger.warning("Resuming at iteration %d: the checkpoint holds no random generator "
                           "states for this process (written by an older rwdet?), so the random "
                           "draws differ from an uninterrupted run's", start)
            return
        if self._sampler is None or not self._in_process:
            set_rng_state(state)
        logger.info("Resuming at iteration %d: data stream from image %d of this process, random "
                    "generators as saved%s", start, start * self._images,
                    " (exactly)" if self._sampler is not None and self._in_process else "")
