"""Generator comparison: train one classifier per (generator setting, seed) and report the mean
and standard deviation of top-1 over seeds for each setting.

Source: Xie et al., ICCV 2019, sec. 4 and figure 3 (ER, BA and WS settings, each trained with
several random seeds, mean and standard deviation of top-1). Each instance is a run of rwdet's
:class:`~rwdet.classification.trainer.ClassificationTrainer` in its own output directory, so an
interrupted comparison resumes where it stopped and finished instances are not trained again.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import re
import statistics
import time
from typing import Dict, List, Optional, Sequence, Tuple

from matplotlib.figure import Figure

from ..classification.config import load_cls_config
from ..classification.trainer import ClassificationTrainer, build_dataset, iterations_per_epoch
from ..config import REGIMES
from ..graphs import GRAPH_MODELS, format_setting, validate_graph_params
from ..utils.io import atomic_write

__all__ = [
    "format_markdown",
    "instance_overrides",
    "parse_setting",
    "plot_comparison",
    "run_comparison",
    "setting_name",
    "summarize",
    "write_results",
]

logger = logging.getLogger(__name__)

_SETTING = re.compile(r"^\s*([A-Za-z]+)\s*\(([^()]*)\)\s*$")


def parse_setting(text: str, num_nodes: int = 32) -> Tuple[str, Dict[str, float]]:
    """Parse a generator setting in the paper's notation: ``ER(0.2)``, ``BA(5)``, ``WS(4, 0.75)``.

    Arguments are positional, in the paper's order (:data:`rwdet.graphs.GRAPH_MODELS`).

    Returns:
        (model, params), e.g. ``("WS", {"K": 4, "P": 0.75})``.

    Raises:
        ValueError: not of the form ``NAME(a[, b])``, an unknown model, the wrong number of
            arguments, or values out of range for N=``num_nodes`` (the message says which).
    """
    m = _SETTING.match(str(text))
    if not m:
        raise ValueError(
            f"generator setting {text!r} is not of the form NAME(args); examples: ER(0.2), BA(5), WS(4, 0.75)"
        )
    model = m.group(1).upper()
    if model not in GRAPH_MODELS:
        raise ValueError(f"generator setting {text!r}: unknown model {m.group(1)!r}; allowed: {sorted(GRAPH_MODELS)}")
    names = GRAPH_MODELS[model]
    values = [v.strip() for v in m.group(2).split(",") if v.strip()]
    if len(values) != len(names):
        raise ValueError(f"generator setting {text!r}: {model} takes {len(names)} argument(s) {list(names)}")
    try:
        params = {k: float(v) for k, v in zip(names, values)}
    except ValueError as e:
        raise ValueError(f"generator setting {text!r}: arguments must be numbers") from e
    return model, validate_graph_params(model, params, num_nodes)


#: The paper's notation for a setting, e.g. ``WS(4, 0.75)`` (:func:`rwdet.graphs.format_setting`).
setting_name = format_setting


def _dir_name(model: str, params: Dict[str, float]) -> str:
    return model + "_" + "_".join(f"{k}{params[k]:g}" for k in GRAPH_MODELS[model])


def instance_overrides(model: str, params: Dict[str, float], seed: int, regime: str, output_dir: str) -> List[str]:
    """Config overrides of one instance: the generator setting, the graph seeds and SEED.

    Stage ``i`` (0-based, in res2..res5 order) of instance ``seed`` draws its graph with seed
    ``1000 * seed + i``, so the stages of one instance have different graphs and instances
    never share one; training randomness (initialisation, data order) uses ``SEED = seed``.

    Raises:
        ValueError: unknown regime.
    """
    if regime not in REGIMES:
        raise ValueError(f"regime={regime!r} is unknown; allowed: {sorted(REGIMES)}")
    seeds = [1000 * seed + i for i in range(len(REGIMES[regime]))]
    opts = ["MODEL.RANDWIRE.GRAPH_MODEL", model, "MODEL.RANDWIRE.GRAPHS", "[]",
            "MODEL.RANDWIRE.SEEDS", str(seeds), "SEED", str(seed), "OUTPUT_DIR", output_dir]
    for k, v in params.items():
        opts += [f"MODEL.RANDWIRE.{k}", str(v)]
    return opts


def _read_result(output_dir: str) -> Optional[dict]:
    path = os.path.join(output_dir, "eval_results.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def run_comparison(
    config_file: str,
    settings: Sequence[str],
    seeds: Sequence[int],
    output_dir: str,
    opts: Sequence[str] = (),
) -> List[dict]:
    """Train (or reuse) every (setting, seed) instance and return one record per instance.

    Instance results live in ``output_dir/<setting>/seed<seed>/`` (the trainer's checkpoints,
    metrics and ``eval_results.json``). An instance whose ``eval_results.json`` reports all
    its iterations is reused; an unfinished one resumes from its last checkpoint.

    Args:
        config_file: a classification config of a RandWire (MODEL.ARCH "randwire").
        settings: generator settings, e.g. ``["ER(0.2)", "BA(5)", "WS(4, 0.75)"]``.
        seeds: instance seeds, e.g. 1..5.
        output_dir: root of the instances' output directories.
        opts: ``KEY VALUE`` overrides applied to every instance (e.g. SOLVER.MAX_ITER 300).

    Returns:
        records ``{"setting", "model", "params", "seed", "top1", "top5", "iterations",
        "seconds"}``; seconds is the training time (None when reused from an earlier run).

    Raises:
        ValueError: a bad setting (before any training), an empty settings or seeds list,
            repeated seeds, or a config that is not a RandWire classifier.
    """
    if not settings:
        raise ValueError("no generator settings given; e.g. ER(0.2) BA(5) 'WS(4, 0.75)'")
    if not seeds:
        raise ValueError("no seeds given; e.g. 1 2 3 4 5")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds {list(seeds)} repeat a value")
    base = load_cls_config(config_file, opts)
    if base.MODEL.ARCH != "randwire":
        raise ValueError(f"{config_file} builds MODEL.ARCH={base.MODEL.ARCH!r}; the comparison needs 'randwire'")
    parsed = [parse_setting(s, base.MODEL.RANDWIRE.NODES) for s in settings]
    records = []
    for model, params in parsed:
        name = setting_name(model, params)
        for seed in seeds:
            out = os.path.join(output_dir, _dir_name(model, params), f"seed{seed}")
            cfg = load_cls_config(
                config_file,
                list(opts) + instance_overrides(model, params, int(seed), base.MODEL.RANDWIRE.REGIME, out),
            )
            result = _read_result(out)
            seconds = None
            trainer = None
            if result is None or result.get("iterations") != _max_iter(cfg):
                os.makedirs(out, exist_ok=True)
                with open(os.path.join(out, "config.yaml"), "w") as f:
                    f.write(cfg.dump())
                logger.info("Training %s seed %d -> %s", name, seed, out)
                start = time.perf_counter()
                trainer = ClassificationTrainer(cfg)
                trainer.resume_or_load(resume=True)
                trainer.train()
                seconds = time.perf_counter() - start
                result = _read_result(out)
            else:
                logger.info("Reusing %s seed %d: top-1 %.2f (%s)", name, seed, result["top1"], out)
            records.append({
                "setting": name, "model": model, "params": dict(params), "seed": int(seed),
                "top1": float(result["top1"]), "top5": float(result["top5"]),
                "iterations": int(result["iterations"]), "seconds": seconds,
            })
            del trainer
    return records


def _max_iter(cfg) -> int:
    if cfg.SOLVER.MAX_ITER:
        return int(cfg.SOLVER.MAX_ITER)
    return int(cfg.SOLVER.EPOCHS * iterations_per_epoch(cfg, len(build_dataset(cfg, is_train=True))))


def summarize(records: Sequence[dict]) -> List[dict]:
    """Mean and standard deviation of top-1 over seeds, one row per setting (input order).

    The standard deviation is the sample one (n - 1 in the denominator, as
    ``statistics.stdev``); it is NaN for a setting with a single seed.

    Returns:
        rows ``{"setting", "n", "top1_mean", "top1_std", "top1_min", "top1_max", "seeds",
        "top1_per_seed"}`` with top-1 in percent.
    """
    rows: Dict[str, dict] = {}
    for r in records:
        row = rows.setdefault(r["setting"], {"setting": r["setting"], "seeds": [], "top1_per_seed": []})
        row["seeds"].append(r["seed"])
        row["top1_per_seed"].append(r["top1"])
    out = []
    for row in rows.values():
        vals = row["top1_per_seed"]
        out.append({
            **row, "n": len(vals), "top1_mean": statistics.fmean(vals),
            "top1_std": statistics.stdev(vals) if len(vals) > 1 else math.nan,
            "top1_min": min(vals), "top1_max": max(vals),
        })
    return out


def format_markdown(rows: Sequence[dict]) -> str:
    """A Markdown table: setting | seeds | top-1 mean ± std (%) | min | max."""
    lines = ["| generator | seeds | top-1 (%) mean ± std | min | max |", "|---|---|---|---|---|"]
    for r in rows:
        seeds = ",".join(str(s) for s in r["seeds"])
        lines.append(
            f"| {r['setting']} | {seeds} | {r['top1_mean']:.2f} ± {r['top1_std']:.2f} | "
            f"{r['top1_min']:.2f} | {r['top1_max']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def plot_comparison(rows: Sequence[dict], path: str, title: Optional[str] = None) -> str:
    """Mean top-1 with ± std error bars per setting, every seed as a dot (paper figure 3).

    Saved by matplotlib; the format follows the suffix (.png, .svg).
    """
    fig = Figure(figsize=(max(4.0, 1.1 * len(rows) + 1.5), 3.8))  # no pyplot: the backend is left alone
    ax = fig.subplots()
    colors = {"ER": "C0", "BA": "C1", "WS": "C2"}
    for i, r in enumerate(rows):
        c = colors.get(r["setting"].split("(")[0], "C3")
        std = 0.0 if math.isnan(r["top1_std"]) else r["top1_std"]
        ax.errorbar([i], [r["top1_mean"]], yerr=[std], fmt="o", color=c, capsize=4, markersize=7)
        ax.scatter([i] * r["n"], r["top1_per_seed"], s=10, color=c, alpha=0.4)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([r["setting"] for r in rows], rotation=30, ha="right")
    ax.set_ylabel("top-1 (%)")
    ax.grid(axis="y", alpha=0.3)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    return path


def write_results(records: Sequence[dict], output_dir: str, title: Optional[str] = None) -> Dict[str, str]:
    """Write ``results.md``, ``results.csv`` (per setting), ``instances.csv`` (per instance) and
    ``results.png`` into ``output_dir`` (atomically); return their paths by kind."""
    rows = summarize(records)
    paths = {k: os.path.join(output_dir, f) for k, f in (
        ("markdown", "results.md"), ("csv", "results.csv"), ("instances", "instances.csv"), ("plot", "results.png"))}

    def put(path: str, text: str) -> None:
        atomic_write(path, lambda f: f.write(text.encode()))

    put(paths["markdown"], format_markdown(rows))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["setting", "n", "top1_mean", "top1_std", "top1_min", "top1_max", "seeds", "top1_per_seed"])
    for r in rows:
        w.writerow([r["setting"], r["n"], f"{r['top1_mean']:.4f}", f"{r['top1_std']:.4f}", f"{r['top1_min']:.4f}",
                    f"{r['top1_max']:.4f}", " ".join(map(str, r["seeds"])),
                    " ".join(f"{v:.4f}" for v in r["top1_per_seed"])])
    put(paths["csv"], buf.getvalue())
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["setting", "seed", "top1", "top5", "iterations", "seconds"])
    for r in records:
        secs = "" if r["seconds"] is None else f"{r['seconds']:.1f}"
        w.writerow([r["setting"], r["seed"], f"{r['top1']:.4f}", f"{r['top5']:.4f}", r["iterations"], secs])
    put(paths["instances"], buf.getvalue())
    plot_comparison(rows, paths["plot"], title)
    return paths
