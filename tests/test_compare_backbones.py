"""tools/compare_backbones.py: same detector, same schedule, several backbones over seeds."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import write_mini_coco
from rwdet.analysis.compare_backbones import check_same_setup, format_markdown, format_runs_markdown, summarize
from rwdet.analysis.initialization import file_sha256
from rwdet.engine.defaults import load_config

REPO = Path(__file__).resolve().parents[1]
TINY_RW = str(REPO / "tests" / "configs" / "tiny_bccd.yaml")
TINY_R18 = str(REPO / "tests" / "configs" / "tiny_bccd_resnet.yaml")


def run_tool(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, str(REPO / "tools" / "compare_backbones.py"), *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


def test_shipped_pairs_differ_only_in_their_backbones():
    pairs = [("faster_rcnn_randwire_ws_c109_bccd.yaml", "faster_rcnn_R_50_FPN_bccd.yaml"),
             ("faster_rcnn_randwire_ws_small_bccd.yaml", "faster_rcnn_R_18_FPN_bccd.yaml")]
    for a, b in pairs:
        cfgs = {p: load_config(str(REPO / "configs" / "bccd" / p)) for p in (a, b)}
        check_same_setup(cfgs)  # raises if anything but the backbone differs
        for cfg in cfgs.values():
            assert cfg.MODEL.BACKBONE.FREEZE_AT == 0 and cfg.MODEL.WEIGHTS == "" and cfg.SEED >= 0


def test_setup_differences_are_refused_before_training():
    test = ["DATASETS.TEST", "('bccd_test',)"]
    a = load_config(TINY_RW, test)
    with pytest.raises(ValueError, match=r"differ outside the backbone in 1 key\(s\): SOLVER.BASE_LR: 0.01 vs 0.02"):
        check_same_setup({"a.yaml": a, "b.yaml": load_config(TINY_RW, test + ["SOLVER.BASE_LR", "0.02"])})
    with pytest.raises(ValueError, match="backbone norms differ: a.yaml uses 'BN', b.yaml uses 'FrozenBN'"):
        check_same_setup({"a.yaml": a, "b.yaml": load_config(TINY_R18, test + ["MODEL.RESNETS.NORM", "FrozenBN"])})
    with pytest.raises(ValueError, match="DATASETS.TEST is empty"):
        check_same_setup({"a.yaml": load_config(TINY_RW, ["DATASETS.TEST", "()"])})
    with pytest.raises(FileNotFoundError, match="MODEL.WEIGHTS='w.pth' does not exist: pretrain it first"):
        check_same_setup({"a.yaml": load_config(TINY_RW, test + ["MODEL.WEIGHTS", "w.pth"])})


def test_summarize_mean_sample_std_and_markdown():
    def rec(config, seed, ap, t):
        return {"config": config, "backbone": config.upper(), "seed": seed, "seconds": 1.0,
                "bbox": {"AP": ap, "AP50": 2 * ap, "AP75": ap / 2, "AP-RBC": ap, "AP-WBC": float("nan")},
                "sec_per_iter": t, "evaluations": [[9, ap - 1], [19, ap]]}
    diverged = {"config": "a", "backbone": "A", "seed": 3, "seconds": 1.0, "bbox": {}, "sec_per_iter": float("nan"),
                "evaluations": [], "diverged_at": 41}
    rows = summarize([rec("a", 1, 10.0, 1.0), rec("a", 2, 14.0, 3.0), diverged, rec("b", 1, 20.0, 2.0)],
                     {"a": {"flops": 2.5e9, "params": 3e6, "input_shape": [1, 3, 320, 448]}})
    a, b = rows
    assert a["metrics"]["AP"]["mean"] == 12.0 and abs(a["metrics"]["AP"]["std"] - 2.8284271) < 1e-6
    assert a["sec_per_iter"]["mean"] == 2.0 and a["seeds"] == [1, 2] and a["last_evaluations"][0] == [[9, 9.0], [19, 10.0]]
    assert a["n"] == 2 and a["diverged"] == {3: 41} and b["diverged"] == {}  # left out of the statistics
    text = format_markdown(rows)
    assert ("| A | `a` | 1,2 | seed 3 (iteration 41) | 12.00 ± 2.83 | 24.00 ± 5.66 | 6.00 ± 1.41 | 12.00 ± 2.83 | - "
            "| 2.000 ± 1.414 | 2.50 (320x448) | 3.00 |") in text
    assert "| B | `b` | 1 | - | 20.00 ± - |" in text
    empty = dict(rec("a", 2, 14.0, 3.0), evaluations=[[9, float("nan")], [19, 14.0]])  # no detection at 9
    runs = format_runs_markdown([rec("a", 1, 10.0, 1.0), diverged, empty]).splitlines()
    assert runs[0] == ("| backbone | seed | AP | AP50 | AP75 | AP-RBC | AP-WBC | evaluations (iteration: AP) | "
                       "last step | s/iter | minutes |")
    assert runs[2] == "| A | 1 | 10.00 | 20.00 | 5.00 | 10.00 | - | 9: 9.00, 19: 10.00 | +1.00 | 1.00 | 0.0 |"
    assert runs[3].startswith("| A | 3 | diverged at iteration 41 |") and runs[3].count("|") == runs[0].count("|")
    assert "| 9: -, 19: 14.00 | - |" in runs[4]  # NaN AP shows as "-", and so does a step from it


def test_compare_tool_end_to_end_on_a_tiny_schedule(bccd_root, tmp_path):
    json_file, image_root = write_mini_coco(bccd_root, tmp_path / "data", "test", 4)
    out = tmp_path / "cmp"
    opts = ["DATASETS.BCCD_ROOT", str(bccd_root), "DATASETS.COCO_JSON", f"[['mini_test', '{json_file}', '{image_root}']]",
            "DATASETS.TEST", "('mini_test',)", "SOLVER.MAX_ITER", "4"]  # Detectron2 times from the 4th on
    proc = run_tool("--configs", TINY_RW, TINY_R18, "--seeds", "1", "2", "--output-dir", str(out), *opts)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((out / "results.json").read_text())
    rows = {r["backbone"]: r for r in result["backbones"]}
    assert set(rows) == {"RandWire-WS(4, 0.75) small C=16", "ResNet-18"}
    for row in rows.values():
        assert row["n"] == 2 and row["seeds"] == [1, 2]
        assert {"AP", "AP50", "AP75", "AP-RBC", "AP-WBC", "AP-Platelets"} <= set(row["metrics"])
        assert len(row["metrics"]["AP"]["per_seed"]) == 2 and row["sec_per_iter"]["mean"] > 0
        assert row["flops"] > 0 and row["input_shape"] == [1, 3, 160, 224]
    assert rows["ResNet-18"]["flops"] > rows["RandWire-WS(4, 0.75) small C=16"]["flops"]
    assert (out / "tiny_bccd_resnet" / "seed2" / "eval_results.json").is_file()
    md = (out / "results.md").read_text()
    assert "| ResNet-18 | `tiny_bccd_resnet.yaml` | 1,2 |" in md and "s/iter" in md
    assert md.split("Per run:")[1].count("| ResNet-18 | ") == 2  # one row per seed
    # A rerun trains nothing: every run is reused.
    proc = run_tool("--configs", TINY_RW, TINY_R18, "--seeds", "1", "2", "--output-dir", str(out), *opts)
    assert proc.returncode == 0 and "(0 trained now" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
    # ... and keeps each run's wall time as recorded when it was trained
    first = {(r["config"], r["seed"]): r["seconds"] for r in result["runs"]}
    again = json.loads((out / "results.json").read_text())["runs"]
    assert all(r["reused"] for r in again) and not any(r["reused"] for r in result["runs"])
    assert {(r["config"], r["seed"]): r["seconds"] for r in again} == first and min(first.values()) > 0
    # A run whose invocation stopped before recording it is resumed from its last checkpoint,
    # and its record says that its time covers the resuming invocation only.
    (out / "tiny_bccd_resnet" / "seed2" / "compare_run.json").unlink()
    proc = run_tool("--configs", TINY_R18, "--seeds", "2", "--output-dir", str(out), *opts)
    assert proc.returncode == 0 and "Resuming ResNet-18 seed 2 at iteration 4" in proc.stdout + proc.stderr
    record = json.loads((out / "tiny_bccd_resnet" / "seed2" / "compare_run.json").read_text())
    assert record["resumed_at"] == 4 and record["seconds"] > 0
    assert "(resumed at 4) |" in (out / "results.md").read_text().split("Per run:")[1]
    # Other settings in the same folder are refused, naming the folder, before anything trains.
    before = sorted(p.name for p in (out / "tiny_bccd" / "seed1").iterdir())
    proc = run_tool("--configs", TINY_RW, "--seeds", "3", "1", "--output-dir", str(out), *opts, "SOLVER.BASE_LR", "0.02")
    assert proc.returncode != 0 and "holds a finished run of another config" in proc.stderr
    assert not (out / "tiny_bccd" / "seed3").exists()  # seed 3, planned first, did not train
    proc = run_tool("--configs", TINY_RW, "--seeds", "1", "--output-dir", str(out), *opts[:-1], "3")
    assert proc.returncode != 0 and "holds a longer run of this config (4 iterations" in proc.stderr
    assert sorted(p.name for p in (out / "tiny_bccd" / "seed1").iterdir()) == before
    # A longer schedule extends the finished run (exact resumption): it ends as a fresh run of
    # that length would, bit for bit, and its record counts both invocations' time.
    proc = run_tool("--configs", TINY_RW, "--seeds", "1", "--output-dir", str(out), *opts[:-1], "6")
    assert proc.returncode == 0 and "Extending" in proc.stdout + proc.stderr, proc.stderr[-3000:]
    fresh = tmp_path / "fresh"
    proc = run_tool("--configs", TINY_RW, "--seeds", "1", "--output-dir", str(fresh), *opts[:-1], "6")
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = (torch.load(d / "tiny_bccd" / "seed1" / "model_final.pth", map_location="cpu", weights_only=False)["model"]
            for d in (out, fresh))
    assert all(torch.equal(a[k], b[k]) for k in b)
    record = json.loads((out / "tiny_bccd" / "seed1" / "compare_run.json").read_text())
    assert record["extended_from"] == [4] and record["max_iter"] == 6 and record["seconds"] > first[(TINY_RW, 1)]
    assert "resumed_at" not in record  # the extension started where the record ended: nothing stopped


def test_compare_tool_refuses_bad_input(tmp_path):
    proc = run_tool("--configs", str(tmp_path / "nope.yaml"), "--output-dir", str(tmp_path))
    assert proc.returncode == 2 and "nope.yaml" in proc.stderr and "does not exist" in proc.stderr
    proc = run_tool("--configs", TINY_RW, TINY_R18, "--output-dir", str(tmp_path), "SOLVER.BASE_LR")
    assert proc.returncode == 2 and "KEY VALUE" in proc.stderr


def test_overrides_may_follow_the_configs():
    # Detectron2's tools take KEY VALUE last; after --configs argparse would read them as configs.
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import compare_backbones
    finally:
        sys.path.remove(str(REPO / "tools"))
    opts = ["SOLVER.MAX_ITER", "4", "SOLVER.STEPS", "(3,)"]
    last = compare_backbones.parse_args(["--seeds", "1", "2", "--output-dir", "o", "--configs", TINY_RW, TINY_R18, *opts])
    first = compare_backbones.parse_args(["--configs", TINY_RW, TINY_R18, "--seeds", "1", "2", "--output-dir", "o", *opts])
    for args in (last, first):
        assert args.configs == [TINY_RW, TINY_R18] and args.opts == opts and args.seeds == [1, 2]
    with pytest.raises(SystemExit):  # a YAML name that is not there is still a missing config
        compare_backbones.parse_args(["--output-dir", "o", "--configs", TINY_RW, "nope.yaml", *opts])
    with pytest.raises(SystemExit):
        compare_backbones.parse_args(["--output-dir", "o", "--configs", *opts])


def test_a_diverging_run_is_recorded_and_the_comparison_goes_on(bccd_root, tmp_path):
    """A learning rate that blows the tiny detector up: Detectron2 stops the run on NaN; the tool
    records where, leaves it out of the statistics, trains the next run, and reuses the record."""
    json_file, image_root = write_mini_coco(bccd_root, tmp_path / "data", "test", 2)
    out = tmp_path / "cmp"
    opts = ["DATASETS.BCCD_ROOT", str(bccd_root), "DATASETS.COCO_JSON", f"[['mini_test', '{json_file}', '{image_root}']]",
            "DATASETS.TEST", "('mini_test',)", "SOLVER.MAX_ITER", "4", "SOLVER.BASE_LR", "1e6"]
    proc = run_tool("--configs", TINY_RW, "--seeds", "1", "2", "--output-dir", str(out), *opts)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((out / "results.json").read_text())
    runs = result["runs"]
    assert [r["seed"] for r in runs] == [1, 2] and all(r["diverged_at"] is not None for r in runs)
    (row,) = result["backbones"]
    assert row["n"] == 0 and set(row["diverged"]) == {"1", "2"}  # JSON keys
    assert "seed 1 (iteration" in (out / "results.md").read_text()
    record = json.loads((out / "tiny_bccd" / "seed1" / "compare_run.json").read_text())
    assert record["diverged_at"] == runs[0]["diverged_at"]
    proc = run_tool("--configs", TINY_RW, "--seeds", "1", "2", "--output-dir", str(out), *opts)
    assert proc.returncode == 0 and "(0 trained now" in proc.stdout


def test_a_diverged_record_stands_for_the_runs_that_reach_its_iteration(tmp_path):
    """A run that diverged at iteration 250 of 300 stands for any run of that config long
    enough to reach iteration 250; a shorter one is not that run (refused as a longer run)."""
    from rwdet.analysis.compare_backbones import _config_hash, _plan_run

    def cfg(max_iter):
        return load_config(TINY_RW, ["SOLVER.MAX_ITER", str(max_iter), "OUTPUT_DIR", str(tmp_path)])

    done = {"config_hash": _config_hash(cfg(300)), "max_iter": 300, "diverged_at": 250}
    assert _plan_run(cfg(300), done, str(tmp_path)) == ("reuse", None)
    assert _plan_run(cfg(251), done, str(tmp_path)) == ("reuse", 300)
    assert _plan_run(cfg(400), done, str(tmp_path)) == ("reuse", 300)
    with pytest.raises(ValueError, match="holds a longer run of this config"):
        _plan_run(cfg(250), done, str(tmp_path))


def test_a_run_recorded_before_a_config_key_was_added_is_still_reused(tmp_path):
    """A finished run whose config.yaml lacks a key added to rwdet since (here
    MODEL.DEPLOY.PAD_CHANNELS, added after comparison runs had been trained) is the same run;
    a key whose value differs is not."""
    import yaml

    from rwdet.analysis.compare_backbones import _config_hash, _plan_run

    def cfg(*opts):
        return load_config(TINY_RW, ["SOLVER.MAX_ITER", "300", "OUTPUT_DIR", str(tmp_path), *opts])

    old = yaml.safe_load(cfg().dump())
    del old["MODEL"]["DEPLOY"]["PAD_CHANNELS"]  # the run's config.yaml, written before the key existed
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    old_hash = _config_hash(cfg(), keys_of=old)
    assert old_hash != _config_hash(cfg())  # a plain hash of today's config would refuse the run
    done = {"config_hash": old_hash, "max_iter": 300}
    assert _plan_run(cfg(), done, str(tmp_path)) == ("reuse", None)
    with pytest.raises(ValueError, match="holds a finished run of another config"):
        _plan_run(cfg("SOLVER.BASE_LR", "0.02"), done, str(tmp_path))
    (tmp_path / "config.yaml").unlink()  # no saved config: only the plain hash counts
    with pytest.raises(ValueError, match="holds a finished run of another config"):
        _plan_run(cfg(), done, str(tmp_path))


def test_a_resumed_run_is_read_from_the_attempt_that_finished_it(tmp_path):
    """metrics.json of a run stopped twice: once before its first checkpoint (restarted from
    iteration 0; that attempt's steps were slowed 5x by a paused process) and once after the
    checkpoint at iteration 100 (resumed there). Only the rows of the attempts that the final
    model stands on count: each evaluation once, at its iteration, and none of the stale times."""
    import json

    from rwdet.analysis.compare_backbones import read_run

    def train(it, t):
        return {"iteration": it, "time": t, "total_loss": 1.0}

    def evaluation(it, ap, t=None):  # JSONWriter writes one row per iteration
        return {"iteration": it, "bbox/AP": ap, "segm/AP": ap / 2, **({"time": t} if t else {})}

    rows = [train(19, 28.0), train(39, 28.0), evaluation(49, 9.0), train(59, 28.0)]  # stopped
    rows += [train(19, 5.0), train(39, 5.0), evaluation(49, 1.0), train(59, 5.0), train(79, 5.0),
             evaluation(99, 2.0, 5.0), train(119, 28.0), evaluation(149, 9.0, 28.0)]  # stopped
    rows += [train(119, 5.0), train(139, 5.0), evaluation(149, 3.0, 5.0), evaluation(150, 4.0)]  # resumed from model_0000099.pth, finished
    (tmp_path / "metrics.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "eval_results.json").write_text(json.dumps({"val": {"bbox": {"AP": 4.0}}}))
    run = read_run(str(tmp_path), "val")
    assert run["evaluations"] == [[49, 1.0], [99, 2.0], [149, 3.0], [150, 4.0]]
    assert run["segm_evaluations"] == [[49, 0.5], [99, 1.0], [149, 1.5], [150, 2.0]]
    assert run["sec_per_iter"] == 5.0


def test_a_run_folder_moved_elsewhere_is_the_same_run(tmp_path):
    """Where a finished run lies does not change it: its record is reused under another
    OUTPUT_DIR (a comparison folder moved, or restored from docs/runs). A record of an earlier
    rwdet, whose hash includes OUTPUT_DIR, is reused in the folder it was trained in only."""
    from rwdet.analysis.compare_backbones import _config_hash, _plan_run

    def cfg(out, *opts):
        return load_config(TINY_RW, ["SOLVER.MAX_ITER", "300", "OUTPUT_DIR", str(out), *opts])

    here, there = tmp_path / "here", tmp_path / "there"
    done = {"config_hash": _config_hash(cfg(here)), "max_iter": 300}
    assert _config_hash(cfg(here)) == _config_hash(cfg(there))
    assert _plan_run(cfg(there), done, str(there)) == ("reuse", None)
    with pytest.raises(ValueError, match="holds a finished run of another config"):
        _plan_run(cfg(there, "SOLVER.BASE_LR", "0.02"), done, str(there))
    legacy = {"config_hash": _config_hash(cfg(here), with_output_dir=True), "max_iter": 300}
    assert legacy["config_hash"] != done["config_hash"]
    assert _plan_run(cfg(here), legacy, str(here)) == ("reuse", None)
    with pytest.raises(ValueError, match="holds a finished run of another config"):
        _plan_run(cfg(there), legacy, str(there))


def test_resume_start_is_where_the_checkpointer_resumes(tmp_path):
    """The iteration at which train_net.py --resume goes on: the checkpoint's iteration + 1
    (Detectron2's resume_or_load), from the file AtomicCheckpointer resumes from: the tagged one,
    or the newest other when the tagged one is truncated or removed; None without a checkpoint."""
    from rwdet.analysis.compare_backbones import _resume_start
    from rwdet.engine.checkpoint import AtomicCheckpointer, CheckpointReadError

    model = torch.nn.Linear(2, 2)

    def resumed_at():  # where the checkpointer itself goes on, as DefaultTrainer.resume_or_load
        loaded = AtomicCheckpointer(model, save_dir=str(tmp_path)).resume_or_load("", resume=True)
        return loaded["iteration"] + 1

    assert _resume_start(str(tmp_path)) is None
    for it in (199, 399, 499):
        torch.save({"model": model.state_dict(), "iteration": it}, tmp_path / f"model_{it:07d}.pth")
        os.utime(tmp_path / f"model_{it:07d}.pth", (it, it))  # mtime order: the fallback takes the newest
    (tmp_path / "last_checkpoint").write_text("model_0000399.pth")
    assert _resume_start(str(tmp_path)) == resumed_at() == 400  # the tagged one, not the newest
    full = (tmp_path / "model_0000399.pth").read_bytes()
    (tmp_path / "model_0000399.pth").write_bytes(full[: len(full) // 2])  # truncated
    assert _resume_start(str(tmp_path)) == resumed_at() == 500
    (tmp_path / "model_0000499.pth").unlink()
    (tmp_path / "last_checkpoint").write_text("model_0000499.pth")  # names a removed file
    assert _resume_start(str(tmp_path)) == resumed_at() == 200
    (tmp_path / "model_0000199.pth").unlink()
    (tmp_path / "model_0000399.pth").unlink()
    assert _resume_start(str(tmp_path)) is None
    with pytest.raises(CheckpointReadError, match="model_0000499.pth not found"):
        resumed_at()


def _pretrain(out, arch, iters=2):
    """A pretraining checkpoint of ``arch`` (tiny Fashion-MNIST recipe; RandWire keys of
    tiny_bccd.yaml, so each loads into its tiny detector). Returns its path."""
    from rwdet.classification.config import load_cls_config
    from rwdet.classification.trainer import ClassificationTrainer

    cfg = load_cls_config(str(REPO / "tests" / "configs" / "tiny_fashion_mnist.yaml"),
                          ["MODEL.ARCH", arch, "SOLVER.MAX_ITER", str(iters), "SOLVER.IMS_PER_BATCH", "16",
                           "TEST.EVAL_PERIOD", "0", "OUTPUT_DIR", str(out)])
    trainer = ClassificationTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    return out / "model_final.pth"


def _finetune_config(folder, base, weights, norm_key) -> str:
    """A config beside nothing else: ``base`` fine-tuned from ``weights`` (Detectron2's recipe)."""
    path = folder / f"{Path(base).stem}_pretrained.yaml"
    path.write_text(f'_BASE_: "{base}"\nMODEL:\n  WEIGHTS: "{weights}"\n  BACKBONE:\n    FREEZE_AT: 2\n'
                    f'  {norm_key}:\n    NORM: "FrozenBN"\n')
    return str(path)


@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist")
                    and not os.environ.get("RWDET_REQUIRE_FASHION_MNIST"), reason="Fashion-MNIST not installed")
def test_transfer_grid_backbone_by_initialisation(bccd_root, tmp_path):
    rw_ckpt, r18_ckpt = _pretrain(tmp_path / "pre_rw", "randwire"), _pretrain(tmp_path / "pre_r18", "resnet18")
    rw_pre = _finetune_config(tmp_path, TINY_RW, rw_ckpt, "RANDWIRE")
    r18_pre = _finetune_config(tmp_path, TINY_R18, r18_ckpt, "RESNETS")
    test = ["DATASETS.TEST", "('bccd_test',)"]
    # Groups are checked apart: the pretrained pair may differ in its checkpoints, and from the
    # scratch pair in freezing and norm too; inside a group freezing must agree.
    inits = check_same_setup({p: load_config(p, test) for p in (TINY_RW, TINY_R18, rw_pre, r18_pre)})
    assert [inits[p]["kind"] for p in (TINY_RW, rw_pre)] == ["scratch", "pretrained"]
    assert inits[r18_pre]["arch"] == "resnet18" and inits[r18_pre]["iterations"] == 2
    with pytest.raises(ValueError, match=r"differ outside the backbone in 1 key\(s\): MODEL.BACKBONE.FREEZE_AT: 2 vs 3"):
        check_same_setup({rw_pre: load_config(rw_pre, test),
                          r18_pre: load_config(r18_pre, test + ["MODEL.BACKBONE.FREEZE_AT", "3"])})
    longer = _pretrain(tmp_path / "pre_r18_longer", "resnet18", iters=3)
    with pytest.raises(ValueError, match=r"were trained differently: SOLVER, iterations \(2 vs 3\) differ"):
        check_same_setup({rw_pre: load_config(rw_pre, test), r18_pre: load_config(r18_pre, test + ["MODEL.WEIGHTS", str(longer)])})
    with pytest.raises(ValueError, match="not an rwdet pretraining checkpoint"):
        detector = tmp_path / "detector.pth"
        torch.save({"model": {}}, detector)
        check_same_setup({rw_pre: load_config(rw_pre, test + ["MODEL.WEIGHTS", str(detector)])})

    out = tmp_path / "grid"
    opts = ["DATASETS.BCCD_ROOT", str(bccd_root), "SOLVER.MAX_ITER", "2", *test]
    proc = run_tool("--configs", TINY_RW, TINY_R18, rw_pre, r18_pre, "--seeds", "1", "--output-dir", str(out), *opts)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = {(r["backbone"], r["init"]) for r in json.loads((out / "results.json").read_text())["backbones"]}
    assert rows == {("RandWire-WS(4, 0.75) small C=16", "scratch"), ("ResNet-18", "scratch"),
                    ("RandWire-WS(4, 0.75) small C=16", "fashion_mnist, 2 it"), ("ResNet-18", "fashion_mnist, 2 it")}
    md = (out / "results.md").read_text()
    assert "| backbone | init | config |" in md and "| ResNet-18 | fashion_mnist, 2 it | 1 |" in md.split("Per run:")[1]
    for name in (Path(rw_pre).stem, Path(r18_pre).stem):  # every backbone tensor came from the checkpoint
        log = (out / name / "seed1" / "train_net.log").read_text()
        assert re.search(r"backbone from .*: (\d+) of \1 backbone tensors matched, 0 missing", log), name
    record = json.loads((out / Path(r18_pre).stem / "seed1" / "compare_run.json").read_text())
    assert record["weights_sha256"] == file_sha256(str(r18_ckpt))
    # Checkpoints pretrained differently are refused; a changed checkpoint is not the one the
    # finished run started from: refused too. Nothing trains.
    shutil.copy(longer, r18_ckpt)
    proc = run_tool("--configs", rw_pre, r18_pre, "--seeds", "1", "--output-dir", str(out), *opts)
    assert proc.returncode != 0 and "were trained differently" in proc.stderr
    shutil.copy(_pretrain(tmp_path / "pre_rw3", "randwire", iters=3), rw_ckpt)
    before = sorted(p.name for p in (out / Path(rw_pre).stem / "seed1").iterdir())
    proc = run_tool("--configs", rw_pre, r18_pre, "--seeds", "1", "--output-dir", str(out), *opts)
    assert proc.returncode != 0 and "the checkpoint changed since" in proc.stderr, proc.stderr[-2000:]
    assert sorted(p.name for p in (out / Path(rw_pre).stem / "seed1").iterdir()) == before
