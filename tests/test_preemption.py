"""Preemption: a stop signal (SIGTERM) in the middle of training writes a checkpoint at the current
iteration and stops; ``--resume`` then ends exactly as an unstopped run. Both trainers, and a
two-process (gloo) run in which the signal reaches one process only.

The signal is sent by the training process to itself at a set iteration, through a
``sitecustomize`` on the subprocess's PYTHONPATH (so it also acts in the processes that
Detectron2's ``launch`` spawns), never by a watcher polling from outside.
"""

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import bccd_root_or_skip

REPO = Path(__file__).resolve().parents[1]
TINY_CLS = str(REPO / "tests" / "configs" / "tiny_fashion_mnist.yaml")
TINY_DET = str(REPO / "tests" / "configs" / "tiny_bccd.yaml")

needs_fmnist = pytest.mark.skipif(
    not os.path.isdir("/usr/share/datasets/fashion-mnist") and not os.environ.get("RWDET_REQUIRE_FASHION_MNIST"),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")

# SIGNAL_AT_ITER=N: the process of rank SIGNAL_RANK (default 0) sends itself SIGTERM right after
# iteration N (before the preemption hook looks). SIGNAL_AGAIN_IN_SAVE=1: a second SIGTERM as
# the preemption checkpoint starts to be written.
_SITECUSTOMIZE = """
import os, signal
if "SIGNAL_AT_ITER" in os.environ:
    from detectron2.utils import comm
    from rwdet.engine.checkpoint import AtomicCheckpointer
    from rwdet.engine.preemption import PreemptionCheckpoint
    at, rank = int(os.environ["SIGNAL_AT_ITER"]), int(os.environ.get("SIGNAL_RANK", "0"))
    step = PreemptionCheckpoint.after_step
    def after_step(self):
        if self.trainer.iter == at and comm.get_rank() == rank:
            os.kill(os.getpid(), signal.SIGTERM)
        return step(self)
    PreemptionCheckpoint.after_step = after_step
    if os.environ.get("SIGNAL_AGAIN_IN_SAVE"):
        save = AtomicCheckpointer.save
        def save_signalled(self, name, **kwargs):
            if name == f"model_{at:07d}":
                os.kill(os.getpid(), signal.SIGTERM)
            return save(self, name, **kwargs)
        AtomicCheckpointer.save = save_signalled
"""


def _tool(tool, args, tmp_path, **signal_env):
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(REPO)]),
               **{k: str(v) for k, v in signal_env.items()})
    proc = subprocess.run([sys.executable, str(REPO / "tools" / tool), *args], cwd=REPO, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stdout + proc.stderr


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@needs_fmnist
def test_pretraining_sigterm_checkpoints_and_resume_is_exact(tmp_path):
    common = ["--config-file", TINY_CLS, "SOLVER.MAX_ITER", "8", "SOLVER.CHECKPOINT_PERIOD", "3",
              "SOLVER.IMS_PER_BATCH", "16", "TEST.IMS_PER_BATCH", "1000", "TEST.EVAL_PERIOD", "0"]
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    rc, log = _tool("pretrain_net.py", [*common, "OUTPUT_DIR", str(whole)], tmp_path)
    assert rc == 0, log[-3000:]
    # SIGTERM after iteration 4 (0-based): a checkpoint there, between the periodic ones (2 and 5).
    rc, log = _tool("pretrain_net.py", [*common, "OUTPUT_DIR", str(stopped)], tmp_path, SIGNAL_AT_ITER=4)
    assert rc == 128 + signal.SIGTERM, log[-3000:]
    assert "Stopped by SIGTERM after iteration 5 of 8: checkpoint model_0000004.pth written; continue with --resume" in log
    assert (stopped / "last_checkpoint").read_text() == "model_0000004.pth"
    assert torch.load(stopped / "model_0000004.pth", map_location="cpu", weights_only=False)["iteration"] == 4
    assert not (stopped / "model_final.pth").exists() and not list(stopped.glob("*.tmp.*"))
    rc, log = _tool("pretrain_net.py", ["--resume", *common, "OUTPUT_DIR", str(stopped)], tmp_path)
    assert rc == 0 and "starting at iteration 5" in log, log[-3000:]
    _same(_weights(whole / "model_final.pth"), _weights(stopped / "model_final.pth"))


@needs_fmnist
def test_a_second_sigterm_during_the_save_changes_nothing(tmp_path):
    out = tmp_path / "run"
    common = ["--config-file", TINY_CLS, "SOLVER.MAX_ITER", "8", "SOLVER.CHECKPOINT_PERIOD", "3",
              "SOLVER.IMS_PER_BATCH", "16", "TEST.EVAL_PERIOD", "0", "OUTPUT_DIR", str(out)]
    rc, log = _tool("pretrain_net.py", common, tmp_path, SIGNAL_AT_ITER=5, SIGNAL_AGAIN_IN_SAVE=1)
    assert rc == 128 + signal.SIGTERM, log[-3000:]
    # iteration 5 is also a periodic checkpoint (period 3): the preemption save of the same name
    # was signalled again and completed; the earlier checkpoint is as the periodic hook wrote it.
    assert (out / "last_checkpoint").read_text() == "model_0000005.pth"
    assert torch.load(out / "model_0000005.pth", map_location="cpu", weights_only=False)["iteration"] == 5
    assert torch.load(out / "model_0000002.pth", map_location="cpu", weights_only=False)["iteration"] == 2
    assert log.count("Received SIGTERM") == 1 and not list(out.glob("*.tmp.*"))
    rc, log = _tool("pretrain_net.py", ["--resume", *common], tmp_path)
    assert rc == 0 and "starting at iteration 6" in log, log[-3000:]


def test_detection_sigterm_checkpoints_and_resume_is_exact(tmp_path):
    root = str(bccd_root_or_skip())
    common = ["--config-file", TINY_DET, "DATASETS.BCCD_ROOT", root, "SOLVER.MAX_ITER", "5",
              "SOLVER.CHECKPOINT_PERIOD", "100"]
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    rc, log = _tool("train_net.py", [*common, "OUTPUT_DIR", str(whole)], tmp_path)
    assert rc == 0, log[-3000:]
    rc, log = _tool("train_net.py", [*common, "OUTPUT_DIR", str(stopped)], tmp_path, SIGNAL_AT_ITER=2)
    assert rc == 128 + signal.SIGTERM, log[-3000:]
    assert "checkpoint model_0000002.pth written" in log and not (stopped / "model_final.pth").exists()
    before = _sha(stopped / "model_0000002.pth")
    rc, log = _tool("train_net.py", [common[0], common[1], "--resume", *common[2:], "OUTPUT_DIR", str(stopped)],
                    tmp_path)
    assert rc == 0 and "Starting at iteration 3 of 5" in log, log[-3000:]
    assert _sha(stopped / "model_0000002.pth") == before
    _same(_weights(whole / "model_final.pth"), _weights(stopped / "model_final.pth"))


@needs_fmnist
def test_two_process_run_stops_every_process_at_the_same_iteration(tmp_path):
    out = tmp_path / "run"
    common = ["--config-file", TINY_CLS, "--num-gpus", "2", "SOLVER.MAX_ITER", "6", "SOLVER.CHECKPOINT_PERIOD",
              "100", "SOLVER.IMS_PER_BATCH", "32", "TEST.IMS_PER_BATCH", "1000", "TEST.EVAL_PERIOD", "0",
              "OUTPUT_DIR", str(out)]
    # Only rank 1 receives the signal; rank 0 writes the checkpoint after the same iteration.
    rc, log = _tool("pretrain_net.py", common, tmp_path, SIGNAL_AT_ITER=2, SIGNAL_RANK=1)
    assert rc != 0, log[-3000:]
    assert (out / "last_checkpoint").read_text() == "model_0000002.pth"
    assert torch.load(out / "model_0000002.pth", map_location="cpu", weights_only=False)["iteration"] == 2
    assert "Stopped by SIGTERM after iteration 3 of 6" in (out / "log.txt").read_text()
    assert "Stopped by SIGTERM after iteration 3 of 6" in (out / "log.txt.rank1").read_text()
    rc, log = _tool("pretrain_net.py", [*common[:4], "--resume", *common[4:]], tmp_path)
    assert rc == 0, log[-3000:]
    assert torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)["iteration"] == 5


def test_unknown_signal_name_is_refused_before_anything_is_written(tmp_path):
    root = str(bccd_root_or_skip())
    out = tmp_path / "run"
    rc, log = _tool("train_net.py", ["--config-file", TINY_DET, "DATASETS.BCCD_ROOT", root, "OUTPUT_DIR", str(out),
                                     "SOLVER.CHECKPOINT_ON_SIGNALS", "('SIGKILL',)"], tmp_path)
    assert rc != 0 and "SOLVER.CHECKPOINT_ON_SIGNALS=['SIGKILL']" in log and "allowed: SIGTERM" in log
    assert not out.exists()
