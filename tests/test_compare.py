"""Generator comparison: setting parsing, the mean ± std table, and tools/compare_generators.py on
real Fashion-MNIST (a tiny model, a few iterations per instance)."""

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rwdet.analysis.compare import format_markdown, instance_overrides, parse_setting, summarize
from rwdet.classification.data import DEFAULT_FASHION_MNIST_ROOT

REPO = Path(__file__).resolve().parents[1]
CLS = str(REPO / "tests" / "configs" / "tiny_fashion_mnist.yaml")


def test_parse_setting():
    assert parse_setting("ER(0.2)") == ("ER", {"P": 0.2})
    assert parse_setting("ba(5)") == ("BA", {"M": 5})
    assert parse_setting(" WS( 4 , 0.75 ) ") == ("WS", {"K": 4, "P": 0.75})
    for bad, msg in [("WS(4)", r"WS takes 2 argument"), ("XX(1)", "unknown model 'XX'"),
                     ("ER 0.2", "not of the form"), ("ER(1.5)", r"P=1.5 is out of range"),
                     ("WS(3, 0.5)", "K must be even"), ("BA(32)", r"1 <= M < N \(N=32\)"),
                     ("ER(a)", "must be numbers")]:
        with pytest.raises(ValueError, match=msg):
            parse_setting(bad)


def test_instance_overrides_give_each_stage_and_instance_its_own_graph_seed():
    a = instance_overrides("WS", {"K": 4, "P": 0.75}, 2, "small", "out")
    d = dict(zip(a[::2], a[1::2]))
    assert d["MODEL.RANDWIRE.SEEDS"] == "[2000, 2001, 2002]" and d["SEED"] == "2"
    assert d["MODEL.RANDWIRE.K"] == "4" and d["MODEL.RANDWIRE.P"] == "0.75" and d["MODEL.RANDWIRE.GRAPHS"] == "[]"
    b = dict(zip(*[iter(instance_overrides("BA", {"M": 5}, 3, "regular", "o"))] * 2))
    assert b["MODEL.RANDWIRE.SEEDS"] == "[3000, 3001, 3002, 3003]" and b["MODEL.RANDWIRE.M"] == "5"


def test_summarize_mean_and_sample_std():
    records = [{"setting": "ER(0.2)", "seed": s, "top1": v} for s, v in ((1, 80.0), (2, 82.0), (3, 84.0))]
    records += [{"setting": "BA(5)", "seed": 1, "top1": 70.0}]
    rows = summarize(records)
    assert [r["setting"] for r in rows] == ["ER(0.2)", "BA(5)"]
    assert rows[0]["top1_mean"] == pytest.approx(82.0) and rows[0]["top1_std"] == pytest.approx(2.0)
    assert rows[0]["n"] == 3 and rows[0]["top1_min"] == 80.0 and rows[0]["top1_max"] == 84.0
    assert math.isnan(rows[1]["top1_std"])  # one seed: no spread to report
    md = format_markdown(rows)
    assert "| ER(0.2) | 1,2,3 | 82.00 ± 2.00 | 80.00 | 84.00 |" in md


def run_tool(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, str(REPO / "tools" / "compare_generators.py"), *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.skipif(not os.path.isdir(DEFAULT_FASHION_MNIST_ROOT) and not os.environ.get("RWDET_REQUIRE_FASHION_MNIST"),
                    reason="Fashion-MNIST not installed")
def test_compare_tool_on_fashion_mnist(tmp_path):
    out = tmp_path / "cmp"
    args = ["--config-file", CLS, "--settings", "ER(0.3)", "WS(2, 0.5)", "--seeds", "1", "2",
            "--output-dir", str(out), "SOLVER.MAX_ITER", "60", "SOLVER.WARMUP_ITERS", "6"]
    proc = run_tool(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["setting"] for r in rows] == ["ER(0.3)", "WS(2, 0.5)"]
    for r in rows:
        assert r["n"] == "2" and r["seeds"] == "1 2"
        values = [float(r[k]) for k in ("top1_mean", "top1_std", "top1_min", "top1_max")]
        assert all(math.isfinite(v) for v in values)
        per_seed = [float(v) for v in r["top1_per_seed"].split()]
        assert float(r["top1_mean"]) == pytest.approx(sum(per_seed) / 2, abs=1e-3)
        assert 10.0 < float(r["top1_mean"]) <= 100.0
    with open(out / "instances.csv", newline="") as f:
        instances = list(csv.DictReader(f))
    assert len(instances) == 4 and all(i["iterations"] == "60" for i in instances)
    assert (out / "results.png").stat().st_size > 5_000
    assert "| ER(0.3) | 1,2 |" in (out / "results.md").read_text() and "| ER(0.3) | 1,2 |" in proc.stdout
    # Each instance trained its own graphs: setting and seeds differ as asked.
    cfg = yaml.safe_load((out / "WS_K2_P0.5" / "seed2" / "config.yaml").read_text())
    assert cfg["MODEL"]["RANDWIRE"]["GRAPH_MODEL"] == "WS" and cfg["MODEL"]["RANDWIRE"]["SEEDS"] == [2000, 2001, 2002]
    specs = [json.loads(s) for s in cfg["MODEL"]["RANDWIRE"]["GRAPHS"]]
    assert [s["params"] for s in specs] == [{"K": 2, "P": 0.5}] * 3
    # A rerun reuses finished instances: same table, nothing trained.
    proc2 = run_tool(*args)
    assert proc2.returncode == 0 and "0 trained now" in proc2.stdout
    with open(out / "results.csv", newline="") as f:
        assert list(csv.DictReader(f)) == rows


def test_compare_tool_rejects_bad_settings_before_training(tmp_path):
    proc = run_tool("--config-file", CLS, "--settings", "ER(0.2)", "WS(5, 0.5)", "--output-dir", str(tmp_path / "x"))
    assert proc.returncode != 0 and "K must be even" in proc.stderr
    assert not (tmp_path / "x").exists()
    proc = run_tool("--config-file", str(tmp_path / "none.yaml"), "--settings", "ER(0.2)", "--output-dir", str(tmp_path))
    assert proc.returncode != 0 and "none.yaml" in proc.stderr and "does not exist" in proc.stderr
