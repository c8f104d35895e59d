"""Reporting: per-round ratios and their summaries, the Markdown report and the JSON file.

The method in full: :mod:`rwdet.analysis.benchmark`.
"""

from __future__ import annotations

import json
import os
import statistics
from typing import Any, Dict, Iterable, List, Optional, Sequence

from ...utils.io import atomic_write
from ..profile import ONEDNN_KINDS, profile_markdown
from .specs import PHASES, SIDES

#: The ratios of a pair: name -> (phase of the figure, key in a round's result).
RATIO_KEYS = {"train": ("train", "images_per_s"), "infer": ("infer", "images_per_s"),
              "train_peak_mem": ("train", "peak_mem_mib")}


def ratio_summary(numerators: Sequence[Optional[float]],
                  denominators: Sequence[Optional[float]]) -> Dict[str, Any]:
    """Per-round ratios ``numerators[r] / denominators[r]``, their median and [min, max].

    Rounds where either figure is None or the denominator is 0 are left out.

    Returns:
        ``{"ratios": [...], "median": float or None, "spread": [min, max] or None}``.

    Raises:
        ValueError: the two sequences differ in length.
    """
    if len(numerators) != len(denominators):
        raise ValueError(f"{len(numerators)} numerators but {len(denominators)} denominators")
    ratios = [a / b for a, b in zip(numerators, denominators) if a is not None and b]
    if not ratios:
        return {"ratios": [], "median": None, "spread": None}
    return {"ratios": ratios, "median": statistics.median(ratios), "spread": [min(ratios), max(ratios)]}


def _median(values: Iterable[Optional[float]]) -> Optional[float]:
    """Median of the values that are not None (None if there are none)."""
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def summarize_pair(out: Dict[str, Any]) -> None:
    """Add per-side medians and the ratios' medians and spreads to a pair's result (in place)."""
    sides = [out["sides"][name] for name in SIDES]
    for side in sides:
        side["median"] = {
            f"{phase}_{key}": _median(r.get(key) for r in side["rounds"][phase])
            for phase, key in (("train", "images_per_s"), ("infer", "images_per_s"), ("train", "peak_mem_mib"))
        }
    out["ratios"], out["median_ratio"], out["spread"] = {}, {}, {}
    for ratio, (phase, key) in RATIO_KEYS.items():
        summary = ratio_summary(*[[r.get(key) for r in side["rounds"][phase]] for side in sides])
        out["ratios"][ratio] = summary["ratios"]
        out["median_ratio"][ratio] = summary["median"]
        out["spread"][ratio] = summary["spread"]
    out["static_ratio"] = {
        key: (sides[0][key] / sides[1][key] if sides[0].get(key) and sides[1].get(key) else None)
        for key in ("flops", "params", "saved_activation_bytes")
    }


#: The method in a few lines, under every Markdown report and in the JSON.
METHOD_NOTE = (
    "Method: one worker process per model, built once; the two sides of a pair alternate in rounds "
    "(first side swapped each round), all train rounds then all inference rounds; each round runs "
    "warm-up then timed steps. Ratios are RandWire / reference per round; the table gives their median "
    "[min-max] and each side's median. Train: forward, loss, backward, SGD step (lr 0). Infer: eval, "
    "no_grad, BN folded into the convs on both sides when deploy is on. Peak training memory: CUDA max "
    "allocated over a train round, or on the CPU the worker's peak RSS minus its RSS before the model "
    "was built. Saved activations: bytes autograd saves for backward in one training forward (each "
    "storage once, parameters excluded). GFLOPs: fvcore, one image, multiply-add = 1 (detectors: "
    "backbone + FPN)."
)


def _fmt(value: Optional[float], fmt: str, suffix: str = "") -> str:
    """Format a number, or "n/a" for None."""
    return "n/a" if value is None else format(value, fmt) + suffix


def _ratio_cell(pair: Dict[str, Any], key: str) -> str:
    """``0.85x [0.80-0.91]`` for a ratio of the pair."""
    median, spread = pair["median_ratio"][key], pair["spread"][key]
    if median is None:
        return "n/a"
    return f"**{median:.2f}x** [{spread[0]:.2f}-{spread[1]:.2f}]"


def markdown_report(result: Dict[str, Any]) -> str:
    """The Markdown report of :func:`run_benchmark`'s result: setup lines, one table per pair
    (rows: figures; columns: RandWire, reference, ratio), then the method note."""
    s = result["setup"]
    firsts = [p["sides"]["randwire"] for p in result["pairs"].values() if "device_name" in p["sides"]["randwire"]]
    dev = firsts[0]["device_name"] if firsts else "?"
    threads = firsts[0]["threads"] if firsts else s["threads"]
    on_cuda = s["device"].startswith("cuda")
    lines = [
        "# RandWire vs reference networks: speed and memory", "",
        f"- device: {s['device']} ({dev}); torch {s['torch']}; CPU threads {threads}; amp {s['amp']}; "
        f"compile {s['compile']}; deploy (BN folded for inference) {'on' if s['deploy'] else 'off'}; "
        f"memory format {'channels_last (NHWC)' if s.get('channels_last') else 'contiguous (NCHW)'}",
        f"- {s['rounds']} interleaved rounds; per round and side {s['warmup']} warm-up + {s['iters']} timed steps",
        f"- machine: {s.get('machine', '?')}; inference precision: {s.get('precision_note', s.get('precision', 'fp32'))}"
        + (f" for RandWire, {s['ref_precision_note']} for the reference"
           if s.get("ref_precision_note", s.get("precision_note")) != s.get("precision_note") else "")
        + ("; reference: RandWire itself" if s.get("reference") == "self" else ""),
        f"- inference runtime: {s.get('runtime', 'eager')}"
        + (f" for RandWire, {s['ref_runtime']} for the reference" if s.get("ref_runtime") not in (None, s.get("runtime")) else "")
        + ("" if s.get("runtime", "eager") == "eager" else
           " (classifiers whole; detectors: backbone+FPN, heads in PyTorch; training in eager PyTorch)")
        + f"; phases: {', '.join(s.get('phases', PHASES))}"
        + (f"; RandWire widths padded to multiples of {s['pad_channels']} (exact rewrite)" if s.get("pad_channels") else ""),
    ]
    if s["rw_opts"] or s["r50_opts"]:
        lines.append(f"- RandWire overrides: {' '.join(s['rw_opts']) or '-'}; R50-FPN overrides: "
                     f"{' '.join(s['r50_opts']) or '-'}")
    mem = "MiB, CUDA max allocated" if on_cuda else "MiB, peak RSS minus RSS before the model"
    for name, p in result["pairs"].items():
        h, w = p["input_size"]
        lines += ["", f"## {name}: {p['title']}, {h}x{w}", ""]
        if "error" in p:
            lines.append(f"Failed: {p['error'].splitlines()[0]}")
            continue
        rw, ref = p["sides"]["randwire"], p["sides"]["reference"]
        heads = [rw["label"], ref["label"]]
        serving = [f"{p.get('runtime', 'eager')} {p.get('precision', 'fp32')}",
                   f"{p.get('ref_runtime') or p.get('runtime', 'eager')} {p.get('ref_precision', p.get('precision', 'fp32'))}"]
        if serving[0] != serving[1]:  # say which side runs what
            heads = [f"{h} ({v})" for h, v in zip(heads, serving)]
        lines += [f"| | {heads[0]} | {heads[1]} | ratio: median [min-max] |", "|---|---|---|---|"]

        def row(title: str, key: str, fmt: str, ratio: Optional[str] = None, scale: float = 1.0) -> None:
            """One table row: both sides' medians and the ratio cell."""
            a, b = rw["median"].get(key), ref["median"].get(key)
            a = a / scale if a is not None else None
            b = b / scale if b is not None else None
            cell = _ratio_cell(p, ratio) if ratio else ""
            lines.append(f"| {title} | {_fmt(a, fmt)} | {_fmt(b, fmt)} | {cell} |")

        row("train img/s (median)", "train_images_per_s", ".2f", "train")
        row("infer img/s (median)", "infer_images_per_s", ".2f", "infer")
        row(f"train peak memory ({mem})", "train_peak_mem_mib", ".0f", "train_peak_mem")
        for title, key, scale, fmt in (("saved activations, one training forward (MiB)", "saved_activation_bytes",
                                        2**20, ".0f"),
                                       (f"GFLOPs/img ({rw.get('flops_of', '')})", "flops", 1e9, ".2f"),
                                       ("params (M)", "params", 1e6, ".2f")):
            a, b, r = rw.get(key), ref.get(key), p["static_ratio"].get(key)
            lines.append(f"| {title} | {_fmt(a / scale if a is not None else None, fmt)} "
                         f"| {_fmt(b / scale if b is not None else None, fmt)} | {_fmt(r, '.2f', 'x')} |")
        folds = [side["rounds"]["infer"][0] if side["rounds"]["infer"] else {} for side in (rw, ref)]
        lines.append("| BN layers for inference (before -> after the deploy fold) | "
                     + " | ".join(f"{f.get('norm_layers_before', 'n/a')} -> {f.get('norm_layers_after', 'n/a')}"
                                  for f in folds) + " | |")
        runtimes = [side.get("runtime", {}) for side in (rw, ref)]
        if any("max_abs_err" in r for r in runtimes):
            lines.append(f"| {runtimes[0].get('name')}: layout reorders in the compiled graph | "
                         + " | ".join(_fmt(r.get("reorders"), "d") for r in runtimes) + " | |")
            lines.append(f"| {runtimes[0].get('name')} vs eager: max abs error ({runtimes[0].get('parity_of')}, "
                         "max abs output) | " + " | ".join(
                             f"{_fmt(r.get('max_abs_err'), '.2g')} ({_fmt(r.get('max_abs_ref'), '.3g')})"
                             for r in runtimes) + " | |")
        if p["kind"] == "det":
            props = [_median(r.get("proposals_per_image") for r in side["rounds"][ph])
                     for side in (rw, ref) for ph in PHASES]
            lines.append(f"| RPN proposals/img (train, infer) | {_fmt(props[0], '.0f')}, {_fmt(props[1], '.0f')} "
                         f"| {_fmt(props[2], '.0f')}, {_fmt(props[3], '.0f')} | |")
        for phase in PHASES:
            in_openvino = phase == "infer" and s.get("runtime") == "openvino"
            for key, title, kinds in (
                ("profile", f"Where a {phase} step's time goes (torch.profiler, self time per op kind, "
                            f"2 passes of {s['iters']} steps per side):", None) if not in_openvino else
                ("profile", f"Where an OpenVINO inference's time goes (OpenVINO's per-layer real time, PERF_COUNT, "
                            f"summed per layer kind, {2 * s['iters']} runs per side; the runtime part only):",
                 _kinds_by_time(rw.get("profile", {}).get(phase, {}), ref.get("profile", {}).get(phase, {}))),
                ("onednn", f"Inside oneDNN, {phase} (oneDNN's own time per primitive kind, {s['iters']} steps "
                           "per side; part of the conv ops above):", ONEDNN_KINDS),
            ):
                if phase in rw.get(key, {}) and phase in ref.get(key, {}):
                    table = profile_markdown({"RandWire": rw[key][phase], "reference": ref[key][phase]},
                                             diff=("RandWire", "reference"), kinds=kinds)
                    lines += ["", title, "", table.rstrip("\n")]
    lines += ["", METHOD_NOTE]
    return "\n".join(lines) + "\n"


def _kinds_by_time(*columns: Dict[str, float]) -> List[str]:
    """Every kind of ``columns`` except "total", the largest summed time first."""
    kinds = {k for c in columns for k in c if k != "total"}
    return sorted(kinds, key=lambda k: -sum(c.get(k, 0.0) for c in columns))


def write_json(result: Dict[str, Any], path: str) -> None:
    """Write :func:`run_benchmark`'s result to ``path`` as indented JSON, atomically (folders created)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    data = json.dumps(result, indent=2).encode("utf-8")
    atomic_write(path, lambda f: f.write(data))
