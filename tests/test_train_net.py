"""tools/train_net.py as a user runs it: train, resume, evaluate, rebuild from the saved config."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "tests" / "configs" / "tiny_bccd.yaml")


def run(args, check=True):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "train_net.py"), *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    if check and proc.returncode != 0:
        pytest.fail(f"train_net {args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def iterations(out):
    return [json.loads(line)["iteration"] for line in (out / "metrics.json").read_text().splitlines()]


def test_train_resume_eval(bccd_root, tmp_path):
    out = tmp_path / "run"
    common = ["DATASETS.BCCD_ROOT", str(bccd_root), "OUTPUT_DIR", str(out)]
    run(["--config-file", TINY, *common])
    assert (out / "model_final.pth").is_file() and (out / "last_checkpoint").read_text() == "model_final.pth"
    assert (out / "model_0000001.pth").is_file()  # periodic checkpoint (period 2)
    assert not list(out.glob("*.tmp*"))  # atomic writes leave no temporaries
    assert iterations(out)[-1] == 3
    ckpt = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)
    assert ckpt["iteration"] == 3 and len(ckpt["randwire_graphs"]["specs"]) == 3
    assert list((out / "events.out.tfevents").parent.glob("events.out.tfevents.*"))  # TensorBoard

    # --resume continues at the next iteration, not from scratch.
    proc = run(["--config-file", TINY, "--resume", *common, "SOLVER.MAX_ITER", "6"])
    assert "Starting at iteration 4 of 6" in proc.stdout + proc.stderr
    assert iterations(out)[-1] == 5 and 0 not in iterations(out)[-2:]

    # --eval-only from the run's own config.yaml (graphs saved in it) gives COCO AP on BCCD test.
    saved_cfg = out / "config.yaml"
    assert "GRAPHS:" in saved_cfg.read_text()
    ev = tmp_path / "eval"
    run(["--config-file", str(saved_cfg), "--eval-only", "MODEL.WEIGHTS", str(out / "model_final.pth"),
         "DATASETS.TEST", "('bccd_test',)", "OUTPUT_DIR", str(ev)])
    results = json.loads((ev / "eval_results.json").read_text())
    # Weights of other graphs are refused, even where every tensor shape would match.
    proc = run(["--config-file", TINY, "--eval-only", "MODEL.WEIGHTS", str(out / "model_final.pth"),
                "MODEL.RANDWIRE.SEEDS", "[4, 5, 6]", *common], check=False)
    assert proc.returncode != 0 and "different random graphs" in proc.stderr
    assert {"AP", "AP50", "AP75", "AP-RBC", "AP-WBC", "AP-Platelets"} <= set(results["bccd_test"]["bbox"])


def test_bad_input_fails_with_clear_message(tmp_path):
    proc = run(["--config-file", str(tmp_path / "nope.yaml")], check=False)
    assert proc.returncode != 0 and "nope.yaml" in proc.stderr and "does not exist" in proc.stderr
    proc = run(["--config-file", TINY, "OUTPUT_DIR", str(tmp_path)], check=False)
    assert proc.returncode != 0 and "DATASETS.BCCD_ROOT" in proc.stderr
    proc = run(["--config-file", TINY, "MODEL.RANDWIRE.P", "1.5", "OUTPUT_DIR", str(tmp_path)], check=False)
    assert proc.returncode != 0 and "P=1.5" in proc.stderr
