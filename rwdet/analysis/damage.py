"""Graph damage: remove one node or one edge of a trained RandWire at evaluation time.

Source: Xie et al., ICCV 2019, sec. 5 ("graph damage", figure 7): after training, one node (or
one edge) is removed from one stage's graph and the network is evaluated again without any
retraining; the loss is plotted against the removed node's output degree (or the in-degree of
the removed edge's target node). What removal computes is defined in
:class:`rwdet.modeling.randwire.RandWireStage` (``set_damage``): a removed node or edge
contributes zero, and a node that loses all its inputs is removed too.
"""

from __future__ import annotations

import contextlib
import csv
import io
import random
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from matplotlib.figure import Figure
from torch import nn
from tqdm import tqdm

from ..graphs import format_setting
from ..modeling.randwire import RandWireStage
from ..utils.io import atomic_write

__all__ = [
    "DAMAGE_KINDS",
    "damage_targets",
    "damaged",
    "find_stages",
    "plot_damage",
    "read_damage_csv",
    "run_damage_sweep",
    "write_damage_csv",
]

#: What can be removed.
DAMAGE_KINDS = ("node", "edge")

#: Columns of the damage CSV, in order.
CSV_FIELDS = (
    "generator", "stage", "kind", "node", "edge_source", "edge_target", "out_degree",
    "target_in_degree", "metric", "baseline", "value", "drop",
)


def find_stages(model: nn.Module) -> Dict[str, RandWireStage]:
    """The random stages of a model, by stage name (``res2``..``res5``).

    Works for a :class:`RandWireClassifier` (``body.res3``...), a Detectron2 detector
    (``backbone.bottom_up.res3``...) or a bare :class:`RandWire`; a DistributedDataParallel
    wrapper is looked through.

    Raises:
        ValueError: the model has no RandWire stage, or two stages share a name.
    """
    stages: Dict[str, RandWireStage] = {}
    for name, module in model.named_modules():
        if isinstance(module, RandWireStage):
            short = name.rsplit(".", 1)[-1]
            if short in stages:
                raise ValueError(f"two RandWire stages are named {short!r}")
            stages[short] = module
    if not stages:
        raise ValueError(f"{type(model).__name__} has no RandWire stage to damage")
    return stages


@contextlib.contextmanager
def damaged(
    model: nn.Module, stage: str, nodes: Iterable[int] = (), edges: Iterable[Tuple[int, int]] = ()
) -> Iterator[RandWireStage]:
    """Context manager: ``model`` with ``nodes`` and ``edges`` removed from ``stage``.

    The damage is undone on exit, also after an exception.

    Raises:
        ValueError: unknown stage name (the message lists the model's stages), a node out of
            range or an edge not in the graph.
    """
    stages = find_stages(model)
    if stage not in stages:
        raise ValueError(f"stage {stage!r} is not a random stage of this model; allowed: {sorted(stages)}")
    module = stages[stage]
    module.set_damage(nodes, edges)
    try:
        yield module
    finally:
        module.clear_damage()


def damage_targets(
    stages: Dict[str, RandWireStage],
    kind: str,
    sample: Optional[int] = None,
    seed: int = 0,
) -> List[dict]:
    """Every node (or edge) of the given stages, or a seeded sample of them.

    Args:
        stages: stage name -> stage (see :func:`find_stages`).
        kind: "node" or "edge".
        sample: keep this many, drawn uniformly without replacement with ``random.Random(seed)``
            from all stages together; None or >= the total keeps all.
        seed: seed of the sample.

    Returns:
        list of dicts with ``stage``, ``kind``, ``node`` (node kind) or ``edge`` ((u, v)), the
        generator name (e.g. ``WS(4, 0.75)``), ``out_degree`` (the node's successors plus the
        output node if it is an output node) and ``target_in_degree`` (the in-degree of the
        edge's target ``v``), in stage then index order.

    Raises:
        ValueError: unknown kind, or sample < 1.
    """
    if kind not in DAMAGE_KINDS:
        raise ValueError(f"kind={kind!r} is unknown; allowed: {list(DAMAGE_KINDS)}")
    if sample is not None and sample < 1:
        raise ValueError(f"sample={sample} must be >= 1 (or None for every {kind})")
    targets = []
    for name, stage in stages.items():
        spec = stage.spec
        succs, preds = spec.successors(), spec.predecessors()
        generator = format_setting(spec.model, spec.params)
        if kind == "node":
            for v in range(spec.num_nodes):
                out_degree = len(succs[v]) + (0 if succs[v] else 1)
                targets.append({"stage": name, "kind": "node", "node": v, "generator": generator,
                                "out_degree": out_degree, "target_in_degree": None})
        else:
            for u, v in spec.edges:
                targets.append({"stage": name, "kind": "edge", "edge": (u, v), "generator": generator,
                                "out_degree": None, "target_in_degree": len(preds[v])})
    if sample is not None and sample < len(targets):
        keep = sorted(random.Random(seed).sample(range(len(targets)), sample))
        targets = [targets[i] for i in keep]
    return targets


def run_damage_sweep(
    model: nn.Module,
    evaluate: Callable[[nn.Module], float],
    targets: Sequence[dict],
    metric: str = "top1",
    baseline: Optional[float] = None,
    progress: bool = True,
) -> List[dict]:
    """Evaluate ``model`` once per target with that node or edge removed.

    Args:
        model: a trained model holding RandWire stages, in eval mode.
        evaluate: model -> metric value (e.g. top-1 in %, or box AP); higher is better.
        targets: from :func:`damage_targets`.
        metric: the metric's name, recorded in each row.
        baseline: the intact model's value; evaluated first when None.
        progress: show a tqdm progress bar.

    Returns:
        one row per target: the target's fields plus ``metric``, ``baseline``, ``value`` and
        ``drop`` (baseline - value, in the metric's units).
    """
    if baseline is None:
        baseline = float(evaluate(model))
    stages = find_stages(model)
    unknown = sorted({t["stage"] for t in targets} - set(stages))
    if unknown:
        raise ValueError(f"target stages {unknown} are not in the model; allowed: {sorted(stages)}")
    rows = []
    for t in tqdm(targets, desc=f"damage ({metric})", disable=not progress):
        if t["kind"] == "node":
            ctx = damaged(model, t["stage"], nodes=[t["node"]])
        else:
            ctx = damaged(model, t["stage"], edges=[t["edge"]])
        with ctx:
            value = float(evaluate(model))
        rows.append({**t, "metric": metric, "baseline": baseline, "value": value, "drop": baseline - value})
    return rows


def write_damage_csv(rows: Sequence[dict], path: str) -> str:
    """Write sweep rows as CSV (columns :data:`CSV_FIELDS`), atomically; return ``path``."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
    writer.writeheader()
    for r in rows:
        edge = r.get("edge") or (None, None)
        writer.writerow({
            "generator": r["generator"], "stage": r["stage"], "kind": r["kind"],
            "node": r.get("node", ""), "edge_source": "" if edge[0] is None else edge[0],
            "edge_target": "" if edge[1] is None else edge[1],
            "out_degree": "" if r["out_degree"] is None else r["out_degree"],
            "target_in_degree": "" if r["target_in_degree"] is None else r["target_in_degree"],
            "metric": r["metric"], "baseline": f"{r['baseline']:.4f}", "value": f"{r['value']:.4f}",
            "drop": f"{r['drop']:.4f}",
        })
    atomic_write(path, lambda f: f.write(buf.getvalue().encode()))
    return path


def read_damage_csv(path: str) -> List[dict]:
    """Rows of a CSV written by :func:`write_damage_csv` (numbers parsed; blanks are None).

    Raises:
        FileNotFoundError: no such file. ValueError: the header is not :data:`CSV_FIELDS`.
    """
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != CSV_FIELDS:
            raise ValueError(f"{path} is not a damage CSV: columns {reader.fieldnames}, expected {list(CSV_FIELDS)}")
        rows = []
        for r in reader:
            row = dict(r)
            for k in ("node", "edge_source", "edge_target", "out_degree", "target_in_degree"):
                row[k] = int(r[k]) if r[k] != "" else None
            for k in ("baseline", "value", "drop"):
                row[k] = float(r[k])
            rows.append(row)
    return rows


def plot_damage(rows: Sequence[dict], path: str, title: Optional[str] = None) -> str:
    """Scatter plot of the loss per removal, one row of panels per generator (paper figure 7).

    Left panel: node removal, loss against the removed node's output degree; right panel: edge
    removal, loss against the in-degree of the removed edge's target node. Each point is one
    removal; the line joins the mean loss at each degree. Saved by matplotlib (format from the
    file suffix, e.g. .png or .svg).

    Raises:
        ValueError: no rows.
    """
    if not rows:
        raise ValueError("no damage rows to plot")
    generators = sorted({r["generator"] for r in rows})
    metric = rows[0]["metric"]
    fig = Figure(figsize=(10, 3.6 * len(generators)))  # no pyplot: the backend is left alone
    axes = fig.subplots(len(generators), 2, squeeze=False)
    for gi, gen in enumerate(generators):
        for ki, (kind, key, xlabel) in enumerate((
            ("node", "out_degree", "output degree of the removed node"),
            ("edge", "target_in_degree", "input degree of the removed edge's target node"),
        )):
            ax = axes[gi][ki]
            pts = [(r[key], r["drop"]) for r in rows if r["generator"] == gen and r["kind"] == kind]
            if pts:
                xs, ys = zip(*pts)
                ax.scatter(xs, ys, s=14, alpha=0.6)
                by_degree: Dict[int, List[float]] = {}
                for x, y in pts:
                    by_degree.setdefault(x, []).append(y)
                ds = sorted(by_degree)
                ax.plot(ds, [sum(by_degree[d]) / len(by_degree[d]) for d in ds], color="C3", label="mean")
                ax.legend(loc="upper left", fontsize=8)
            else:
                ax.text(0.5, 0.5, f"no {kind} removals", ha="center", va="center", transform=ax.transAxes)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f"{metric} loss")
            ax.set_title(f"{gen}: remove one {kind}")
            ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path
