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

import torch

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
    common = ["--num-gpus", "2", "--config-file", TINY]
    opts = ["DATASETS.BCCD_ROOT", str(bccd_root), "MODEL.RANDWIRE.NORM", "naiveSyncBN", "SOLVER.IMS_PER_BATCH", "4"]
    whole, part = tmp_path / "whole", tmp_path / "part"
    rc, log = train_net(*common, *opts, "OUTPUT_DIR", str(whole), "SOLVER.MAX_ITER", "4")
    assert rc == 0, log[-4000:]
    assert "World size: 2" in (whole / "log.txt").read_text() and (whole / "log.txt.rank1").is_file()
    rc, log = train_net(*common, *opts, "OUTPUT_DIR", str(part), "SOLVER.MAX_ITER", "2")
    assert rc == 0, log[-4000:]
    rc, log = train_net(*common[:2], "--resume", *common[2:], *opts, "OUTPUT_DIR", str(part), "SOLVER.MAX_ITER", "4",
                        "DATASETS.TEST", "('bccd_test',)")
    assert rc == 0, log[-4000:]
    text = (part / "log.txt").read_text()
    assert "Starting at iteration 2 of 4" in text and "random generators as saved (exactly)" in text
    a, b = weights(whole / "model_final.pth"), weights(part / "model_final.pth")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    # The 72 test images are split over the two processes (36 each), then gathered for COCO AP.
    assert "Start inference on 36 batches" in text
    assert "Start inference on 36 batches" in (part / "log.txt.rank1").read_text()
    results = json.loads((part / "eval_results.json").read_text())["bccd_test"]["bbox"]
    assert {"AP", "AP50", "AP-RBC", "AP-WBC", "AP-Platelets"} <= set(results)
    # torch's SyncBN on CPU processes is refused before anything is written.
    refused = tmp_path / "refused"
    rc, log = train_net(*common, *opts, "MODEL.RANDWIRE.NORM", "SyncBN", "OUTPUT_DIR", str(refused))
    assert rc != 0 and "naiveSyncBN" in log and not refused.exists()
