"""What both trainers add for a RandWire model (rwdet.engine.graphs): the one "is this a
RandWire?" test, the graph-recording checkpointer and the graph table; and that the
classification trainer is Detectron2's DefaultTrainer."""

from pathlib import Path

import torch
from detectron2.engine import DefaultTrainer

from rwdet.classification.config import get_cls_cfg, load_cls_config
from rwdet.classification.trainer import ClassificationTrainer
from rwdet.config import is_randwire, randwire_stage_specs
from rwdet.engine.checkpoint import AtomicCheckpointer
from rwdet.engine.defaults import load_config
from rwdet.engine.graphs import build_checkpointer, graph_table
from rwdet.engine.trainer import Trainer
from rwdet.graphs import format_statistics

REPO = Path(__file__).resolve().parents[1]
DET = str(REPO / "tests" / "configs" / "tiny_bccd.yaml")
DET_RESNET = str(REPO / "tests" / "configs" / "tiny_bccd_resnet.yaml")
CLS = str(REPO / "tests" / "configs" / "tiny_fashion_mnist.yaml")


def _resnet50_cls_cfg():
    cfg = get_cls_cfg()
    cfg.MODEL.ARCH = "resnet50"
    return cfg


def test_is_randwire_decides_for_both_kinds_of_config():
    assert is_randwire(load_config(DET)) is True
    assert is_randwire(load_config(DET_RESNET)) is False  # Detectron2's ResNet, RandWire keys present
    assert is_randwire(load_cls_config(CLS)) is True
    assert is_randwire(_resnet50_cls_cfg()) is False
    assert is_randwire(get_cls_cfg()) is True  # the default MODEL.ARCH is "randwire"


class _Owner:
    """Stands for a trainer (the checkpointer holds a weak proxy to it and saves its state)."""

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def test_checkpointer_records_graphs_only_for_randwire(tmp_path):
    owner = _Owner()
    cfg = load_config(DET, ["OUTPUT_DIR", str(tmp_path)])
    ckpt = build_checkpointer(cfg, torch.nn.Linear(2, 2), owner)
    assert isinstance(ckpt, AtomicCheckpointer) and ckpt.save_dir == str(tmp_path)
    specs = [s for _, s in randwire_stage_specs(cfg)]
    assert ckpt.checkpointables["randwire_graphs"].specs == specs
    cfg = load_config(DET_RESNET, ["OUTPUT_DIR", str(tmp_path)])
    assert "randwire_graphs" not in build_checkpointer(cfg, torch.nn.Linear(2, 2), owner).checkpointables
    assert "randwire_graphs" not in build_checkpointer(_resnet50_cls_cfg(), torch.nn.Linear(2, 2), owner).checkpointables
    assert not list(tmp_path.iterdir())  # building a checkpointer writes nothing


def test_graph_table_only_for_randwire():
    cfg = load_cls_config(CLS)
    assert graph_table(cfg) == format_statistics(randwire_stage_specs(cfg))
    assert graph_table(load_config(DET)) == format_statistics(randwire_stage_specs(load_config(DET)))
    assert graph_table(load_config(DET_RESNET)) is None
    assert graph_table(_resnet50_cls_cfg()) is None


def test_both_trainers_are_default_trainers():
    assert issubclass(Trainer, DefaultTrainer)
    assert issubclass(ClassificationTrainer, DefaultTrainer)
