"""The shared classification trainer on real Fashion-MNIST, exact resumption, transfer into the
detector, and a two-process (gloo) run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from detectron2.engine import HookBase
from detectron2.modeling import build_model

from rwdet.classification.config import load_cls_config
from rwdet.classification.data import DEFAULT_FASHION_MNIST_ROOT
from rwdet.classification.trainer import ClassificationTrainer
from rwdet.engine import AtomicCheckpointer
from rwdet.engine.defaults import load_config

REPO = Path(__file__).resolve().parents[1]
CLS = str(REPO / "tests" / "configs" / "tiny_fashion_mnist.yaml")
DET = str(REPO / "tests" / "configs" / "tiny_bccd.yaml")

if not os.path.isdir(DEFAULT_FASHION_MNIST_ROOT) and not os.environ.get("RWDET_REQUIRE_FASHION_MNIST"):
    pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)", allow_module_level=True)


def train(out, *opts, resume=False, stop_after=None):
    cfg = load_cls_config(CLS, ["OUTPUT_DIR", str(out), *opts])
    trainer = ClassificationTrainer(cfg)
    if stop_after is not None:
        trainer.register_hooks([_StopAt(stop_after)])
    trainer.resume_or_load(resume=resume)
    return trainer, trainer.train()


class _Interrupted(RuntimeError):
    pass


class _StopAt(HookBase):
    """Simulates a crash right after iteration ``it`` (a checkpoint was written at it)."""

    def __init__(self, it):
        self.it = it

    def after_step(self):
        if self.trainer.iter == self.it:
            raise _Interrupted(f"stopped after iteration {self.it}")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("cls")
    trainer, results = train(out)
    return out, trainer, results


def test_trainer_learns_fashion_mnist(trained):
    out, trainer, results = trained
    losses = [json.loads(l) for l in (out / "metrics.json").read_text().splitlines()]
    loss = [m["total_loss"] for m in losses if "total_loss" in m]  # = loss_cls (one loss term)
    assert loss[-1] < 0.6 * loss[0], loss
    assert results["num_images"] == 10000
    assert results["top1"] > 60.0, results  # chance is 10%
    assert results["top5"] >= results["top1"]
    saved = json.loads((out / "eval_results.json").read_text())
    assert saved["top1"] == pytest.approx(results["top1"]) and saved["iterations"] == 200
    assert (out / "model_final.pth").is_file() and not list(out.glob("*.tmp*"))
    assert list(out.glob("events.out.tfevents.*"))


def test_resume_reaches_the_same_state(tmp_path):
    opts = ["SOLVER.MAX_ITER", "20", "SOLVER.CHECKPOINT_PERIOD", "10", "TEST.EVAL_PERIOD", "0"]
    full, _ = train(tmp_path / "full", *opts)
    with pytest.raises(_Interrupted):
        train(tmp_path / "split", *opts, stop_after=9)
    assert (tmp_path / "split" / "last_checkpoint").read_text() == "model_0000009.pth"
    resumed, _ = train(tmp_path / "split", *opts, resume=True)
    assert resumed.start_iter == 10
    a, b = full.net.state_dict(), resumed.net.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6, rtol=0), k
    opt_a, opt_b = full.optimizer.state_dict(), resumed.optimizer.state_dict()
    assert opt_a["param_groups"][0]["lr"] == pytest.approx(opt_b["param_groups"][0]["lr"])


def test_checkpoint_loads_into_detector(trained):
    out, trainer, _ = trained
    ckpt = str(out / "model_final.pth")
    cfg = load_config(DET, ["MODEL.WEIGHTS", ckpt])
    model = build_model(cfg)
    report = AtomicCheckpointer(model).load(ckpt, checkpointables=[])["transfer_report"]
    bottom_up = [k for k in model.state_dict() if k.startswith("backbone.bottom_up.")]
    assert report["missing"] == [] and report["unexpected"] == []
    assert sorted(report["matched"]) == sorted(bottom_up)
    for k, v in trainer.net.body.state_dict().items():
        assert torch.equal(model.state_dict()["backbone.bottom_up." + k], v), k


def test_graph_mismatch_refused_unless_adopted(trained):
    out, trainer, _ = trained
    ckpt = str(out / "model_final.pth")
    cfg = load_config(DET, ["MODEL.WEIGHTS", ckpt, "MODEL.RANDWIRE.SEEDS", "[4, 5, 6]"])
    model = build_model(cfg)
    with pytest.raises(ValueError, match="pretrained with graphs.*PRETRAINED_GRAPHS adopt"):
        AtomicCheckpointer(model).load(ckpt, checkpointables=[])
    cfg = load_config(DET, ["MODEL.WEIGHTS", ckpt, "MODEL.RANDWIRE.SEEDS", "[4, 5, 6]",
                            "MODEL.RANDWIRE.PRETRAINED_GRAPHS", "adopt"])
    assert list(cfg.MODEL.RANDWIRE.SEEDS) == [1, 2, 3]
    model = build_model(cfg)
    assert AtomicCheckpointer(model).load(ckpt, checkpointables=[])["transfer_report"]["missing"] == []


def test_two_process_gloo_run(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "pretrain_net.py"), "--config-file", CLS, "--num-gpus", "2",
         "SOLVER.MAX_ITER", "4", "SOLVER.IMS_PER_BATCH", "32", "TEST.IMS_PER_BATCH", "1000",
         "OUTPUT_DIR", str(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = (tmp_path / "log.txt").read_text()
    assert "world size 2" in log.lower() or "Rank of current process: 0. World size: 2" in log
    results = json.loads((tmp_path / "eval_results.json").read_text())
    assert results["num_images"] == 10000  # the two shards were gathered
    assert (tmp_path / "model_final.pth").is_file()


def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match="SEED=-1"):
        load_cls_config(CLS, ["SEED", "-1"])
    with pytest.raises(ValueError, match="MODEL.ARCH='vgg'.*randwire"):
        ClassificationTrainer(load_cls_config(CLS, ["MODEL.ARCH", "vgg", "OUTPUT_DIR", str(tmp_path)]))
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        ClassificationTrainer(load_cls_config(CLS, ["DATA.ROOT", str(tmp_path / "none"), "OUTPUT_DIR", str(tmp_path)]))


def test_channels_last_trains_the_same_model(tmp_path):
    opts = ["SOLVER.MAX_ITER", "3", "TEST.EVAL_PERIOD", "0", "SOLVER.CHECKPOINT_PERIOD", "100"]
    plain, res_plain = train(tmp_path / "plain", *opts)
    nhwc, res_nhwc = train(tmp_path / "nhwc", *opts, "MODEL.CHANNELS_LAST", "True")
    conv = [p for p in nhwc.net.parameters() if p.dim() == 4]
    assert conv and all(p.is_contiguous(memory_format=torch.channels_last) for p in conv)
    assert not all(p.is_contiguous(memory_format=torch.channels_last) for p in plain.net.parameters() if p.dim() == 4)
    a, b = plain.net.state_dict(), nhwc.net.state_dict()
    assert a.keys() == b.keys()
    for k in a:  # same arithmetic in another order: equal up to float rounding
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-4, rtol=1e-4), (k, (a[k] - b[k]).abs().max())
    assert res_nhwc["top1"] == pytest.approx(res_plain["top1"], abs=0.2)
    # Its checkpoint is an ordinary one: it loads into the (contiguous) detector, every key matched.
    ckpt = str(tmp_path / "nhwc" / "model_final.pth")
    model = build_model(load_config(DET, ["MODEL.WEIGHTS", ckpt]))
    assert AtomicCheckpointer(model).load(ckpt, checkpointables=[])["transfer_report"]["missing"] == []
    for k, v in b.items():
        if k.startswith("body."):
            assert torch.equal(model.state_dict()["backbone.bottom_up." + k[len("body."):]], v), k
