"""Side-by-side report of pretraining runs (``tools/pretrain_net.py``): top-1 / top-5 after each
evaluation, epochs, time per iteration, and a top-1 curve picture.

Reads what a run writes and nothing else (its ``config.yaml``, ``log.txt``, ``metrics.json``,
``last_checkpoint``), so it reports finished runs and runs still in progress alike; it trains
nothing. The paper's classification claim (Xie et al., ICCV 2019, table 2: RandWire against
ResNet at the same epochs) is read off the table at equal epochs.
"""

from __future__ import annotations

import math
import os
import re
import statistics
from typing import Dict, List, Optional, Sequence

import yaml
from matplotlib.figure import Figure

from .compare_backbones import current_metrics_rows

__all__ = ["read_pretraining_run", "format_pretraining_markdown", "plot_top1", "summary_rows"]

_EVALUATION = re.compile(r"Evaluation after (\d+) iterations: top-1 ([\d.]+)%, top-5 ([\d.]+)%")
_SCHEDULE = re.compile(r"Training (\S+) for (\d+) iterations \(([\d.]+) epochs of (\d+) images, (\d+) iterations each\)")


def read_pretraining_run(run_dir: str, label: Optional[str] = None) -> dict:
    """The progress and results of one pretraining run.

    Args:
        run_dir: the run's OUTPUT_DIR.
        label: its name in tables and pictures (default: MODEL.ARCH and the folder's name).

    Evaluations come from metrics.json, and from the log's "Evaluation after N iterations" lines
    for any that metrics.json lacks (a process stopped before Detectron2's writer flushed them).

    Returns:
        ``{"label", "run_dir", "arch", "dataset", "image_size", "batch", "max_iter",
        "iters_per_epoch", "train_images", "last_iteration" (the last logged, 0-based),
        "checkpoint" (the file last_checkpoint names, or None), "evaluations": [{"iteration"
        (iterations done), "epoch", "top1", "top5"}, ...], "final": the last evaluation or None, "best_top1",
        "sec_per_iter" (median of Detectron2's step times, seconds), "train_hours"
        (iterations done x sec_per_iter / 3600: training only, evaluations excluded)}``. Only
        the rows of the attempt that continued a resumed run count (as compare_backbones reads
        metrics.json).

    Raises:
        FileNotFoundError: ``run_dir`` has no config.yaml or no log.txt naming the schedule
            (not a pretraining run folder, or one that has not started).
    """
    config_path = os.path.join(run_dir, "config.yaml")
    log_path = os.path.join(run_dir, "log.txt")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{config_path} does not exist: {run_dir} is not a tools/pretrain_net.py run folder")
    with open(config_path, encoding="utf-8") as f:
        cfg = yaml.safe_load(f)
    schedule, logged = None, {}
    if os.path.isfile(log_path):
        with open(log_path, encoding="utf-8", errors="replace") as f:
            for line in f:
                m = _SCHEDULE.search(line)
                if m:
                    schedule = m
                e = _EVALUATION.search(line)
                if e:  # a later attempt's evaluation of the same iteration supersedes an earlier one
                    logged[int(e.group(1))] = (float(e.group(2)), float(e.group(3)))
    if schedule is None:
        raise FileNotFoundError(f"{log_path} names no schedule ('Training ... iterations each'): the run has not started")
    max_iter, per_epoch, images = int(schedule.group(2)), int(schedule.group(5)), int(schedule.group(4))
    rows = current_metrics_rows(os.path.join(run_dir, "metrics.json"))
    times = [float(r["time"]) for r in rows if "time" in r]
    # Detectron2 logs a periodic evaluation at the 0-based index of the step just done, and the
    # final one (after_train) at the run's length: iterations done = min(index + 1, MAX_ITER).
    done = [min(int(r["iteration"]) + 1, max_iter) for r in rows if "top1" in r]
    found = {n: (float(r["top1"]), float(r["top5"])) for n, r in zip(done, [r for r in rows if "top1" in r])}
    # An evaluation the log holds but metrics.json lacks: a process stopped before Detectron2's
    # writer flushed it (it writes every 20 iterations); the log line is the run's own record.
    found.update({n: v for n, v in logged.items() if n not in found})
    evaluations = [{"iteration": n, "epoch": n / per_epoch, "top1": t1, "top5": t5} for n, (t1, t5) in sorted(found.items())]
    last = min(max((int(r["iteration"]) for r in rows), default=-1), max_iter - 1)
    tag = os.path.join(run_dir, "last_checkpoint")
    checkpoint = open(tag).read().strip() if os.path.isfile(tag) else None
    sec = statistics.median(times) if times else math.nan
    return {
        "label": label or f"{cfg['MODEL']['ARCH']} ({os.path.basename(os.path.normpath(run_dir))})",
        "run_dir": run_dir, "arch": cfg["MODEL"]["ARCH"], "dataset": cfg["DATA"]["NAME"],
        "image_size": cfg["DATA"]["IMAGE_SIZE"], "batch": cfg["SOLVER"]["IMS_PER_BATCH"],
        "max_iter": max_iter, "iters_per_epoch": per_epoch, "train_images": images,
        "last_iteration": last, "checkpoint": checkpoint, "evaluations": evaluations,
        "final": evaluations[-1] if evaluations else None,
        "best_top1": max((e["top1"] for e in evaluations), default=math.nan),
        "sec_per_iter": sec, "train_hours": (last + 1) * sec / 3600 if times else math.nan,
    }


def format_pretraining_markdown(runs: Sequence[dict]) -> str:
    """A Markdown table, one row per run: run | arch | data | epochs done (of the schedule) |
    top-1 | top-5 (the last evaluation, %) | best top-1 | s/iter | training hours; then each
    run's evaluations as ``epoch: top-1``."""
    head = ["run", "arch", "data", "epochs", "top-1", "top-5", "best top-1", "s/iter", "training hours"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def num(x, fmt=".2f"):
        return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)

    for r in runs:
        done = (r["last_iteration"] + 1) / r["iters_per_epoch"]
        total = r["max_iter"] / r["iters_per_epoch"]
        final = r["final"] or {}
        lines.append("| " + " | ".join([
            r["label"], r["arch"], f"{r['dataset']} {r['image_size']} px", f"{done:.2f} of {total:g}",
            num(final.get("top1")), num(final.get("top5")), num(r["best_top1"]), num(r["sec_per_iter"], ".3f"),
            num(r["train_hours"], ".1f"),
        ]) + " |")
    lines.append("")
    for r in runs:
        shown = ", ".join(f"{e['epoch']:g}: {e['top1']:.2f}" for e in r["evaluations"]) or "none yet"
        lines.append(f"- {r['label']}, top-1 after each evaluation (epoch: %): {shown}")
    return "\n".join(lines) + "\n"


def plot_top1(runs: Sequence[dict], path: str, title: str = "") -> str:
    """Draw each run's validation top-1 (and top-5, dashed) against epochs into ``path`` (PNG or
    SVG, by its extension; matplotlib's object API, no pyplot state). Returns ``path``.

    Raises:
        ValueError: no run has an evaluation yet.
    """
    if not any(r["evaluations"] for r in runs):
        raise ValueError("no run has an evaluation yet: nothing to draw")
    fig = Figure(figsize=(6.4, 4.2), dpi=120)
    ax = fig.add_subplot()
    for r in runs:
        xs = [e["epoch"] for e in r["evaluations"]]
        line, = ax.plot(xs, [e["top1"] for e in r["evaluations"]], marker="o", markersize=3, label=f"{r['label']} top-1")
        ax.plot(xs, [e["top5"] for e in r["evaluations"]], linestyle="--", color=line.get_color(), alpha=0.6,
                label=f"{r['label']} top-5")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    return path


def summary_rows(runs: Sequence[dict]) -> List[Dict[str, object]]:
    """The JSON form of the report: each run without its folder path, NaN as None."""
    def clean(v):
        return None if isinstance(v, float) and math.isnan(v) else v

    return [{k: clean(v) for k, v in r.items() if k != "run_dir"} for r in runs]
