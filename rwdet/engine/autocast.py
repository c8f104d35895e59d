"""Mixed precision on the CPU as on GPUs: SOLVER.AMP.ENABLED with SOLVER.AMP.DTYPE.

Detectron2's ``AMPTrainer`` runs ``torch.cuda.amp.autocast`` and asserts CUDA. On a CPU, PyTorch
autocasts to bfloat16 (oneDNN: convolutions and matmuls in bf16 with f32 accumulation; AVX512-BF16
or AMX run them natively), and bf16 keeps fp32's exponent range, so it needs no gradient scaling.
:class:`AutocastTrainer` is Detectron2's ``SimpleTrainer`` step under ``torch.autocast``;
:func:`build_step_trainer` builds the mixed-precision step trainer in place of the one that
``DefaultTrainer`` would build (SimpleTrainer, AMPTrainer), with the dtype a config key. Shared by
the detection and the classification trainers.
"""

from __future__ import annotations

from typing import Callable

import torch
from detectron2.engine import AMPTrainer, SimpleTrainer

__all__ = ["AMP_DTYPES", "AutocastTrainer", "build_step_trainer", "check_amp", "init_with_step_trainer"]

#: Values of SOLVER.AMP.DTYPE.
AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


class AutocastTrainer(SimpleTrainer):
    """``SimpleTrainer`` whose step (forward, losses, backward, optimizer step) runs under
    ``torch.autocast(device_type, dtype)``: the forward's autocast-listed ops in ``dtype``, the
    backward in the dtypes the forward used, the parameters and optimizer state in fp32.

    Args:
        model, data_loader, optimizer: as ``SimpleTrainer``.
        dtype: ``torch.bfloat16`` (the CPU's autocast dtype).
        device_type: ``"cpu"``.
    """

    def __init__(self, model, data_loader, optimizer, dtype: torch.dtype = torch.bfloat16, device_type: str = "cpu"):
        super().__init__(model, data_loader, optimizer)
        self.dtype, self.device_type = dtype, device_type

    def run_step(self):
        with torch.autocast(self.device_type, dtype=self.dtype):
            return super().run_step()


def check_amp(cfg, device: torch.device) -> bool:
    """Whether the run trains in mixed precision, checked.

    SOLVER.AMP.ENABLED on CUDA: AMPTrainer with SOLVER.AMP.DTYPE. On the CPU: autocast with
    "bfloat16"; "float16" there is what Detectron2 gives a CPU (no AMP): the classification
    config's default (ENABLED True, DTYPE float16) keeps training CPUs in fp32.

    Raises:
        ValueError: SOLVER.AMP.DTYPE not in :data:`AMP_DTYPES`.
    """
    dtype = cfg.SOLVER.AMP.get("DTYPE", "float16")
    if dtype not in AMP_DTYPES:
        raise ValueError(f"SOLVER.AMP.DTYPE={dtype!r} is unknown; allowed: {', '.join(map(repr, AMP_DTYPES))}")
    if not cfg.SOLVER.AMP.ENABLED:
        return False
    return device.type == "cuda" or dtype == "bfloat16"


def build_step_trainer(dtype: str, model, data_loader, optimizer, device: torch.device) -> SimpleTrainer:
    """The mixed-precision step trainer of a run whose :func:`check_amp` is True:
    ``AMPTrainer(precision=dtype)`` on CUDA, :class:`AutocastTrainer` on the CPU.

    Args:
        dtype: SOLVER.AMP.DTYPE, a key of :data:`AMP_DTYPES`.
        model, data_loader, optimizer: the run's (``DefaultTrainer``'s ``_trainer`` has them).
        device: the model's device.
    """
    if device.type == "cuda":
        return AMPTrainer(model, data_loader, optimizer, precision=AMP_DTYPES[dtype])
    return AutocastTrainer(model, data_loader, optimizer, AMP_DTYPES[dtype], device.type)


def init_with_step_trainer(trainer, init: Callable, cfg, device: torch.device, amp: bool) -> None:
    """Run ``init(cfg)`` (``DefaultTrainer.__init__`` of ``trainer``), then, when ``amp``, put
    :func:`build_step_trainer`'s step trainer of SOLVER.AMP.DTYPE in place of the one it built.

    ``init`` is given ``cfg`` with SOLVER.AMP.ENABLED off when ``amp``, so that it builds a plain
    ``SimpleTrainer`` (Detectron2's ``AMPTrainer`` is fp16 and asserts CUDA) and only one
    mixed-precision trainer is built; ``trainer.cfg`` is ``cfg`` again afterwards.

    Args:
        trainer: a ``DefaultTrainer`` being constructed (its ``_trainer`` is replaced).
        init: the bound ``DefaultTrainer.__init__`` (e.g. ``super().__init__``).
        cfg: the run's frozen config.
        device: the model's device.
        amp: :func:`check_amp`'s answer for ``cfg``.
    """
    built = cfg
    if amp:
        built = cfg.clone()
        built.defrost()
        built.SOLVER.AMP.ENABLED = False
        built.freeze()
    init(built)
    trainer.cfg = cfg
    if amp:
        step = trainer._trainer
        trainer._trainer = build_step_trainer(cfg.SOLVER.AMP.DTYPE, step.model, step.data_loader, step.optimizer, device)
