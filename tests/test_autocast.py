"""Mixed precision on the CPU (rwdet.engine.autocast): SOLVER.AMP.ENABLED with DTYPE bfloat16
trains under torch.autocast in both trainers; fp32 stays the default."""

import os

import pytest
import torch

from conftest import bccd_root_or_skip
from pathlib import Path

from rwdet.engine.autocast import AutocastTrainer, check_amp

REPO = Path(__file__).resolve().parents[1]
TINY_CLS = str(REPO / "tests" / "configs" / "tiny_fashion_mnist.yaml")
TINY_DET = str(REPO / "tests" / "configs" / "tiny_bccd.yaml")




def _conv_dtypes(trainer):
    """The dtype of every conv output in one training step."""
    seen = []
    model = trainer._trainer.model
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(o.dtype)) for m in model.modules()
             if isinstance(m, torch.nn.Conv2d)]
    try:
        trainer._trainer.iter = 0
        trainer._trainer.run_step()
    finally:
        for h in hooks:
            h.remove()
    return set(seen)


@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist") and not os.environ.get("RWDET_REQUIRE_FASHION_MNIST"),
                    reason="Fashion-MNIST not installed")
def test_pretraining_trains_in_bf16_on_the_cpu_only_when_asked(tmp_path):
    from detectron2.utils.events import EventStorage

    from rwdet.classification.config import load_cls_config
    from rwdet.classification.trainer import ClassificationTrainer

    opts = ["SOLVER.IMS_PER_BATCH", "16", "MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(tmp_path)]
    plain = ClassificationTrainer(load_cls_config(TINY_CLS, opts))  # the default: AMP on, float16: fp32 on a CPU
    bf16 = ClassificationTrainer(load_cls_config(TINY_CLS, opts + ["SOLVER.AMP.ENABLED", "True", "SOLVER.AMP.DTYPE",
                                                                   "bfloat16"]))
    assert type(plain._trainer).__name__ == "SimpleTrainer" and isinstance(bf16._trainer, AutocastTrainer)
    for t in (plain, bf16):
        t.resume_or_load(resume=False)
    with EventStorage(0):
        assert _conv_dtypes(plain) == {torch.float32}
        assert torch.bfloat16 in _conv_dtypes(bf16)
    assert all(p.dtype == torch.float32 for p in bf16.net.parameters())  # fp32 weights, bf16 arithmetic


def test_detection_bf16_autocast_and_refusals(tmp_path):
    from detectron2.utils.events import EventStorage

    from rwdet.data import prepare_datasets
    from rwdet.engine import Trainer
    from rwdet.engine.defaults import load_config

    root = str(bccd_root_or_skip())
    opts = ["DATASETS.BCCD_ROOT", root, "OUTPUT_DIR", str(tmp_path), "SOLVER.AMP.ENABLED", "True"]
    cfg = load_config(TINY_DET, opts + ["SOLVER.AMP.DTYPE", "bfloat16"])
    prepare_datasets(cfg, ("TRAIN",))
    trainer = Trainer(cfg)
    assert isinstance(trainer._trainer, AutocastTrainer)
    trainer.resume_or_load(resume=False)
    with EventStorage(0):
        assert torch.bfloat16 in _conv_dtypes(trainer)
    with pytest.raises(ValueError, match="SOLVER.AMP.ENABLED on cpu needs SOLVER.AMP.DTYPE 'bfloat16'"):
        Trainer(load_config(TINY_DET, opts))
    with pytest.raises(ValueError, match="SOLVER.AMP.DTYPE='int8' is unknown"):
        check_amp(load_config(TINY_DET, opts + ["SOLVER.AMP.DTYPE", "int8"]), torch.device("cpu"))
