"""Training that survives preemption: a scheduler's stop signal saves a checkpoint at the current
iteration, and ``--resume`` continues exactly from it.

SLURM and Kubernetes stop a job with SIGTERM (then SIGKILL after a grace period); SLURM's
``--signal=USR1@<seconds>`` warns with SIGUSR1 first. Detectron2 handles neither, so a stopped run
loses everything since its last periodic checkpoint. :class:`PreemptionCheckpoint` (the idea of
PyTorch Lightning's SLURM signal handling, as a Detectron2 hook): the signal handler only records
the signal; after the iteration in progress, every process agrees to stop (in a multi-process
run, at the same iteration), the main process writes ``model_<iteration>.pth`` atomically
through the run's checkpointer (with the generator states that make resumption exact, see
:mod:`rwdet.engine.resume`), and the run exits with status 128 + the signal's number and one
log line that says how to continue. A second signal while the checkpoint is written changes
nothing: the write completes (and were the process killed, the atomic write leaves the previous
checkpoint intact).

The evaluation scheduled at the stopped iteration, if any, is skipped: it would delay the exit
past the grace period, and the resumed run goes on from the next iteration.
"""

from __future__ import annotations

import logging
import signal
from typing import Optional, Sequence

from detectron2.engine import HookBase
from detectron2.utils import comm

from .resume import ExactResume

__all__ = ["PreemptionCheckpoint", "Preempted", "check_signal_names", "insert_preemption_hook", "SIGNAL_NAMES"]

logger = logging.getLogger(__name__)

#: Signals that may stop a run with a checkpoint (SOLVER.CHECKPOINT_ON_SIGNALS).
SIGNAL_NAMES = ("SIGTERM", "SIGUSR1", "SIGUSR2", "SIGINT")


class Preempted(SystemExit):
    """Raised (through the training loop, as ``SystemExit``) after the checkpoint of a stop
    signal is written; its ``code`` is 128 + the signal number, the shell's status for a process
    ended by that signal. Attributes: ``signal_name``, ``iteration`` (the last one done),
    ``checkpoint`` (the file name)."""

    def __init__(self, signal_name: str, iteration: int, checkpoint: str):
        super().__init__(128 + int(getattr(signal, signal_name)))
        self.signal_name, self.iteration, self.checkpoint = signal_name, iteration, checkpoint


def check_signal_names(names: Sequence[str], key: str = "SOLVER.CHECKPOINT_ON_SIGNALS") -> list:
    """The names, checked.

    Raises:
        ValueError: a name not in :data:`SIGNAL_NAMES` (the message names the key).
    """
    bad = [n for n in names if n not in SIGNAL_NAMES]
    if bad:
        raise ValueError(f"{key}={list(names)}: {bad} not allowed; allowed: {', '.join(SIGNAL_NAMES)}")
    return list(names)


class PreemptionCheckpoint(HookBase):
    """Checkpoint at the current iteration and stop when one of ``signals`` arrives.

    Put it after the hooks that must see the iteration (LRScheduler, the periodic checkpointer)
    and before the evaluation hook. Handlers are installed in ``before_train`` (main thread, as
    Detectron2's ``launch`` runs each process's main) and the previous ones restored in
    ``after_train``. In a multi-process run each ``after_step`` all-gathers one flag, so that
    every process stops after the same iteration even when the signal reaches them at different
    times.

    Args:
        checkpointer: the run's checkpointer (its ``save(name, iteration=...)`` is the
            periodic checkpointer's; rwdet's writes atomically).
        signals: names from :data:`SIGNAL_NAMES`; empty turns the hook off.

    Raises:
        ValueError: an unknown signal name.
    """

    def __init__(self, checkpointer, signals: Sequence[str] = ("SIGTERM",)):
        self.checkpointer = checkpointer
        self.signals = check_signal_names(signals)
        self._received: Optional[str] = None
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self._received is None:
            self._received = signal.Signals(signum).name
            logger.warning("Received %s: the run stops with a checkpoint after the current iteration",
                           self._received)

    def before_train(self) -> None:
        for name in self.signals:
            sig = getattr(signal, name)
            self._previous[sig] = signal.signal(sig, self._handle)

    def after_train(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def after_step(self) -> None:
        if not self.signals:
            return
        received = self._received
        if comm.get_world_size() > 1:
            received = next((r for r in comm.all_gather(received) if r is not None), None)
        if received is None:
            return
        it = self.trainer.iter
        for h in self.trainer._hooks:  # the generator states as of now, from every process
            if isinstance(h, ExactResume):
                h.capture()
        name = f"model_{it:07d}"
        if comm.is_main_process():
            self.checkpointer.save(name, iteration=it)
        comm.synchronize()
        logger.warning("Stopped by %s after iteration %d of %d: checkpoint %s.pth written; continue with --resume",
                       received, it + 1, self.trainer.max_iter, name)
        raise Preempted(received, it, name + ".pth")


def insert_preemption_hook(hooks_list: list, checkpointer, signals: Sequence[str]) -> list:
    """``hooks_list`` (a trainer's ``build_hooks``) with a :class:`PreemptionCheckpoint` before
    its first ``EvalHook`` or ``PeriodicWriter`` (so after LRScheduler and the periodic
    checkpointer, and the iteration's metrics are still written); unchanged when ``signals`` is
    empty. Shared by the detection and the classification trainers.

    Raises:
        ValueError: an unknown signal name.
    """
    from detectron2.engine import hooks

    signals = check_signal_names(signals)
    if not signals:
        return hooks_list
    at = next((i for i, h in enumerate(hooks_list) if isinstance(h, (hooks.EvalHook, hooks.PeriodicWriter))),
              len(hooks_list))
    hooks_list.insert(at, PreemptionCheckpoint(checkpointer, signals))
    return hooks_list
