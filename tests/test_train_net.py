"""tools/train_net.py as a user runs it: train, resume, evaluate, rebuild from the saved config."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_model
from torch.nn import BatchNorm2d

from rwdet.engine.defaults import load_config

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
    proc = run(["--config-file", str(saved_cfg), "--eval-only", "MODEL.WEIGHTS", str(out / "model_final.pth"),
                "DATASETS.TEST", "('bccd_test',)", "OUTPUT_DIR", str(ev)])
    results = json.loads((ev / "eval_results.json").read_text())
    # Deploy mode (TEST.FOLD_BN, on by default): every BN of the detector folded before evaluation.
    folded = re.search(r"Deploy mode: folded (\d+) BatchNorm layers", proc.stdout + proc.stderr)
    model = build_model(load_config(str(saved_cfg), ["MODEL.DEVICE", "cpu"]))
    assert folded and int(folded.group(1)) == sum(isinstance(m, (BatchNorm2d, FrozenBatchNorm2d)) for m in model.modules()) > 0
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


def losses(out):
    rows = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    return [(r["iteration"], r.get("total_loss"), r.get("loss_cls")) for r in rows if "total_loss" in r]


def final_weights(out):
    return torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)["model"]


def test_same_seed_same_command_gives_the_same_ap_and_losses(bccd_root, tmp_path):
    from conftest import write_mini_coco

    json_file, image_root = write_mini_coco(bccd_root, tmp_path / "data", "test", 4)
    common = ["DATASETS.BCCD_ROOT", str(bccd_root), "DATASETS.COCO_JSON", f"[['mini_test', '{json_file}', '{image_root}']]",
              "DATASETS.TEST", "('mini_test',)", "SOLVER.MAX_ITER", "3", "DATALOADER.NUM_WORKERS", "0",
              "SOLVER.CHECKPOINT_PERIOD", "100", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]
    for name in ("a", "b"):
        run(["--config-file", TINY, *common, "OUTPUT_DIR", str(tmp_path / name)])
    ra, rb = (json.loads((tmp_path / n / "eval_results.json").read_text()) for n in ("a", "b"))
    assert "AP" in ra["mini_test"]["bbox"]
    assert ra == rb  # equal AP (every metric), bit for bit
    assert losses(tmp_path / "a") == losses(tmp_path / "b") and losses(tmp_path / "a")
    wa, wb = (final_weights(tmp_path / n) for n in "ab")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_eval_only_on_a_users_own_coco_json(bccd_root, tmp_path):
    from conftest import write_mini_coco
    from detectron2.modeling import build_model

    from rwdet.engine.defaults import load_config

    json_file, image_root = write_mini_coco(bccd_root, tmp_path / "mine", "test", 3)
    weights = tmp_path / "model.pth"
    torch.manual_seed(0)
    torch.save({"model": build_model(load_config(TINY)).state_dict()}, weights)  # a freshly initialised detector
    out = tmp_path / "eval"
    # The README's command: --eval-only MODEL.WEIGHTS ... DATASETS.COCO_JSON ... DATASETS.TEST ...;
    # DATASETS.TRAIN "()" as there: the training data need not be at hand.
    run(["--config-file", TINY, "--eval-only", "MODEL.WEIGHTS", str(weights),
         "DATASETS.COCO_JSON", f"[['mine', '{json_file}', '{image_root}']]", "DATASETS.TEST", "('mine',)",
         "DATASETS.TRAIN", "()", "OUTPUT_DIR", str(out)])
    bbox = json.loads((out / "eval_results.json").read_text())["mine"]["bbox"]
    assert {"AP", "AP50", "AP75", "APs", "APm", "APl", "AP-RBC", "AP-WBC", "AP-Platelets"} <= set(bbox)


def test_cuda_device_without_cuda_fails_clearly_unless_opted_in(monkeypatch, caplog, tmp_path):
    import logging

    from rwdet import config
    from rwdet.engine import defaults

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv(config.CPU_FALLBACK_ENV, raising=False)
    assert defaults.get_rwdet_cfg().MODEL.DEVICE == "cpu"  # a config that names no device runs on the CPU
    with pytest.raises(RuntimeError, match=r"MODEL.DEVICE='cuda'.*CUDA is not available.*RWDET_CPU_FALLBACK=1"):
        config.merge_config(defaults.get_rwdet_cfg(), TINY, ["MODEL.DEVICE", "cuda"])
    monkeypatch.setenv(config.CPU_FALLBACK_ENV, "1")
    with caplog.at_level(logging.WARNING):
        cfg = config.merge_config(defaults.get_rwdet_cfg(), TINY, ["MODEL.DEVICE", "cuda:1"])
    assert cfg.MODEL.DEVICE == "cpu" and "RWDET_CPU_FALLBACK=1" in caplog.text
    # The classification trainer's config obeys the same rule.
    from rwdet.classification.config import get_cls_cfg

    monkeypatch.delenv(config.CPU_FALLBACK_ENV)
    assert get_cls_cfg().MODEL.DEVICE == "cpu"
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        config.merge_config(get_cls_cfg(), str(REPO / "tests" / "configs" / "tiny_fashion_mnist.yaml"),
                            ["MODEL.DEVICE", "cuda"])



def test_resumed_extended_and_evaluated_runs_end_as_the_uninterrupted_run(bccd_root, tmp_path):
    """--resume continues the data stream and the random draws (rwdet.engine.resume): a run
    stopped after 2 of 4 iterations and resumed, or trained to 2 and extended to 4 with
    SOLVER.MAX_ITER 4 --resume, ends with the uninterrupted run's weights, bit for bit; and
    evaluating during training (which draws from NumPy's generator) changes nothing."""
    from conftest import write_mini_coco

    json_file, image_root = write_mini_coco(bccd_root, tmp_path / "data", "test", 2)
    # A warm-up and a step, so that the learning rate differs between iterations.
    common = ["DATASETS.BCCD_ROOT", str(bccd_root), "SOLVER.CHECKPOINT_PERIOD", "2",
              "SOLVER.WARMUP_ITERS", "2", "SOLVER.STEPS", "(3,)",
              "DATASETS.COCO_JSON", f"[['mini_test', '{json_file}', '{image_root}']]"]
    run(["--config-file", TINY, *common, "SOLVER.MAX_ITER", "4", "OUTPUT_DIR", str(tmp_path / "full")])
    full = final_weights(tmp_path / "full")

    # Stopped after iteration 1 (its checkpoint is the last one), then resumed.
    split = tmp_path / "split"
    run(["--config-file", TINY, *common, "SOLVER.MAX_ITER", "4", "OUTPUT_DIR", str(split)])
    (split / "model_final.pth").unlink()
    (split / "last_checkpoint").write_text("model_0000001.pth")
    proc = run(["--config-file", TINY, "--resume", *common, "SOLVER.MAX_ITER", "4", "OUTPUT_DIR", str(split)])
    assert "generators as saved (exactly)" in proc.stdout + proc.stderr
    # Trained to 2 iterations, then extended to 4.
    ext = tmp_path / "extended"
    run(["--config-file", TINY, *common, "SOLVER.MAX_ITER", "2", "OUTPUT_DIR", str(ext)])
    run(["--config-file", TINY, "--resume", *common, "SOLVER.MAX_ITER", "4", "OUTPUT_DIR", str(ext)])
    # Evaluated on the mini test set after iterations 1 and 3.
    run(["--config-file", TINY, *common, "SOLVER.MAX_ITER", "4", "DATASETS.TEST", "('mini_test',)",
         "TEST.EVAL_PERIOD", "2", "OUTPUT_DIR", str(tmp_path / "evaluated")])
    differ = {}
    for name in ("split", "extended", "evaluated"):
        other = final_weights(tmp_path / name)
        assert other.keys() == full.keys()
        differ[name] = [k for k in full if not torch.equal(full[k], other[k])]
    assert not any(differ.values()), {name: f"{len(ks)} tensors differ, e.g. {ks[:2]}" for name, ks in differ.items()}


def test_learning_rates_do_not_depend_on_max_iter():
    """Trainer.build_lr_scheduler: Detectron2's WarmupMultiStepLR rates, the same bit for bit
    whatever SOLVER.MAX_ITER (Detectron2's own differ in the last bit during warm-up)."""
    from detectron2.solver import build_lr_scheduler as d2_build

    from rwdet.engine.trainer import Trainer

    def rates(build, max_iter, n=300):
        cfg = load_config(TINY, ["SOLVER.MAX_ITER", str(max_iter), "SOLVER.STEPS", "(240,)",
                                 "SOLVER.WARMUP_ITERS", "50", "SOLVER.BASE_LR", "0.01"])
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
        sched, out = build(cfg, opt), []
        for _ in range(n):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out

    ours = rates(Trainer.build_lr_scheduler, 300)
    assert ours == rates(Trainer.build_lr_scheduler, 360) == rates(Trainer.build_lr_scheduler, 1000)
    d2 = rates(d2_build, 300)
    assert ours == pytest.approx(d2, rel=1e-12, abs=0)  # Detectron2's schedule
    assert ours[0] == pytest.approx(0.01 * 0.001) and ours[100] == 0.01 and ours[250] == pytest.approx(0.001)
    assert d2 != rates(d2_build, 360)  # what the horizon avoids
