"""tools/train_net.py through Detectron2's ``launch`` on two CPU processes (gloo): trains,
checkpoints, resumes exactly, and evaluates on the sharded test set (issue 26, item 4).

The norm is Detectron2's "naiveSyncBN" (batch statistics all-reduced over the processes, as the
COCO configs' SyncBN does on GPUs; torch's SyncBN needs CUDA).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import write_mini_coco

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "tests" / "configs" / "tiny_bccd.yaml")


def train_net(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "train_net.py"), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stdout + proc.stderr


def weights(path):
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def test_two_process_detection_trains_resumes_exactly_and_evaluates(bccd_root, tmp_path):
    json_file, images = write_mini_coco(bccd_root, tmp_path / "mini", "test", n=4)
    common = ["--num-gpus", "2", "--config-file", TINY]
    opts = ["DATASETS.BCCD_ROOT", str(bccd_root), "MODEL.RANDWIRE.NORM", "naiveSyncBN", "SOLVER.IMS_PER_BATCH", "4",
            "SOLVER.CHECKPOINT_PERIOD", "1"]
    whole, part = tmp_path / "whole", tmp_path / "part"
    rc, log = train_net(*common, *opts, "OUTPUT_DIR", str(whole), "SOLVER.MAX_ITER", "2")
    assert rc == 0, log[-4000:]
    assert "World size: 2" in (whole / "log.txt").read_text() and (whole / "log.txt.rank1").is_file()
    rc, log = train_net(*common, *opts, "OUTPUT_DIR", str(part), "SOLVER.MAX_ITER", "1")
    assert rc == 0, log[-4000:]
    rc, log = train_net(*common[:2], "--resume", *common[2:], *opts, "OUTPUT_DIR", str(part), "SOLVER.MAX_ITER", "2",
                        "DATASETS.COCO_JSON", f"[['dist_mini', '{json_file}', '{images}']]",
                        "DATASETS.TEST", "('dist_mini',)")
    assert rc == 0, log[-4000:]
    text = (part / "log.txt").read_text()
    assert "Starting at iteration 1 of 2" in text and "random generators as saved (exactly)" in text
    a, b = weights(whole / "model_final.pth"), weights(part / "model_final.pth")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    # The 4 test images are split over the two processes (2 each), then gathered for COCO AP.
    assert "Start inference on 2 batches" in text
    assert "Start inference on 2 batches" in (part / "log.txt.rank1").read_text()
    results = json.loads((part / "eval_results.json").read_text())["dist_mini"]["bbox"]
    assert {"AP", "AP50", "AP-RBC", "AP-WBC", "AP-Platelets"} <= set(results)


def test_torch_syncbn_on_cpu_processes_refused_before_the_run(monkeypatch):
    from detectron2.utils import comm

    from rwdet.engine import Trainer
    from rwdet.engine.defaults import load_config

    monkeypatch.setattr(comm, "get_world_size", lambda: 2)  # as in a 2-process CPU run
    with pytest.raises(ValueError, match="MODEL.RANDWIRE.NORM naiveSyncBN"):
        Trainer(load_config(TINY, ["MODEL.RANDWIRE.NORM", "SyncBN", "DATASETS.TRAIN", "()"]))
