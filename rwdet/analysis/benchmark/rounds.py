"""The parent's interleaved rounds: both workers of a pair, each side once per round, the first
side alternating; then all pairs of a setup one after the other.

The method in full: :mod:`rwdet.analysis.benchmark`.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import asdict
from typing import Any, Callable, Dict, Iterable, Optional, Tuple

import torch

from ...deploy.precision import precision_note
from ..flops import machine_description
from .report import METHOD_NOTE, summarize_pair
from .specs import INFER_ONLY_KINDS, PHASES, SIDES, BenchmarkSetup, PairSpec, select_pairs
from .worker import WorkerClient


def round_order(round_index: int) -> Tuple[int, int]:
    """Which side goes first in a round: (0, 1) in even rounds, (1, 0) in odd ones (A B, B A, ...)."""
    return (0, 1) if round_index % 2 == 0 else (1, 0)


def _log(msg: str) -> None:
    """Progress message on stderr."""
    print(f"[benchmark] {msg}", file=sys.stderr, flush=True)


def run_pair(pair: PairSpec, setup: BenchmarkSetup, log: Callable[[str], None] = _log) -> Dict[str, Any]:
    """Measure one pair in interleaved rounds (see :mod:`rwdet.analysis.benchmark`).

    Both workers are built, then for each phase of ``setup.phases`` (train, then infer; a pair of
    :data:`INFER_ONLY_KINDS` skips train) ``setup.rounds`` rounds run, each side once per round,
    the first side alternating (:func:`round_order`); between the phases each worker reports
    :meth:`ModelBench.stats`, and before the infer rounds :meth:`ModelBench.runtime` (the BN
    fold, the export to ``setup.runtime`` and its parity check happen then, untimed).
    With ``setup.profile``, each phase's rounds are followed by :meth:`ModelBench.profile` of one
    side, then of the other, and on the CPU by :meth:`ModelBench.onednn` the same way.

    Returns:
        dict as under ``pairs.<name>`` in :func:`run_benchmark`'s result; on a worker failure,
        ``{"error": ..., ...}`` with what was measured before it.
    """
    phases = [p for p in PHASES if p in setup.phases and not (p == "train" and pair.kind in INFER_ONLY_KINDS)]
    out: Dict[str, Any] = {"title": pair.title, "kind": pair.kind, "batch": pair.batch, "input_size": list(pair.size),
                           "sides": {name: {"model": asdict(s)} for name, s in zip(SIDES, pair.sides)},
                           "runtime": setup.runtime, "ref_runtime": setup.runtime_of(pair.sides[1]),
                           "precision": setup.precision_of(pair.sides[0]),
                           "ref_precision": setup.precision_of(pair.sides[1]),
                           "phases": phases, "log": []}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rwdet-bench-") as log_dir:
        workers = [WorkerClient(s, pair, setup, log_dir, f"{pair.name}-{name}") for name, s in zip(SIDES, pair.sides)]
        try:
            for name, w in zip(SIDES, workers):  # both build at once; nothing is timed yet
                out["sides"][name].update(w.receive())
                out["sides"][name]["rounds"] = {phase: [] for phase in PHASES}
            for phase in PHASES:
                if phase == "infer":
                    for w in workers:
                        w.send({"cmd": "stats"})
                    for name, w in zip(SIDES, workers):
                        out["sides"][name].update(w.receive())
                    if phase in phases:  # deploy both sides (fold, export) before the first timed round
                        for name, w in zip(SIDES, workers):
                            out["sides"][name]["runtime"] = info = w.request({"cmd": "runtime"})
                            if "max_abs_err" in info:
                                log(f"{pair.name} {name} in {info['name']}: {info['reorders']} reorders, "
                                    f"max abs error vs eager {info['max_abs_err']:.3g} "
                                    f"(outputs up to {info['max_abs_ref']:.3g})")
                if phase not in phases:
                    continue
                for r in range(setup.rounds):
                    for i in round_order(r):
                        res = workers[i].request({"cmd": "round", "phase": phase})
                        out["sides"][SIDES[i]]["rounds"][phase].append(res)
                        out["log"].append([phase, r, SIDES[i]])
                        log(f"{pair.name} {phase} round {r + 1}/{setup.rounds} {SIDES[i]}: "
                            f"{res['images_per_s']:.2f} img/s")
                if setup.profile:
                    in_runtime = phase == "infer" and "eager" not in (setup.runtime, setup.runtime_of(pair.sides[1]))
                    for what in ("profile", "onednn") if setup.device.startswith("cpu") and not in_runtime else ("profile",):
                        for name, w in zip(SIDES, workers):  # one at a time: nothing runs beside it
                            res = w.request({"cmd": what, "phase": phase})
                            if res:  # {} where PyTorch has no oneDNN
                                out["sides"][name].setdefault(what, {})[phase] = res
                                log(f"{pair.name} {phase} {what} {name}: {res['total']:.0f} ms/step")
        except RuntimeError as exc:
            out["error"] = str(exc)
            log(f"{pair.name} FAILED: {exc}")
        finally:
            for w in workers:
                w.close()
    out["seconds"] = time.perf_counter() - t0
    if "error" not in out:
        summarize_pair(out)
    return out


def run_benchmark(setup: BenchmarkSetup, pairs: Optional[Iterable[str]] = None, command: str = "",
                  log: Callable[[str], None] = _log) -> Dict[str, Any]:
    """Run the chosen pairs one after the other and gather the results.

    Args:
        setup: a checked setup (:func:`default_setup`).
        pairs: names for :func:`select_pairs` (None: all).
        command: the command line, recorded in the setup.

    Returns:
        ``{"setup": {...}, "runtime": str, "method": str, "pairs": {name: {...}}}`` where each pair has
        ``median_ratio.{train, infer, train_peak_mem}`` (RandWire / reference), ``spread`` of the
        same keys ([min, max]), ``ratios`` (per round), ``static_ratio.{flops, params,
        saved_activation_bytes}``, ``sides.{randwire, reference}`` (label, model, params,
        trainable_params, flops, saved_activation_bytes, ``median`` images/s and peak memory,
        ``rounds.{train, infer}``: the raw figures per round; with ``setup.profile``,
        ``profile.{train, infer}``: ms per step per op kind, and on the CPU ``onednn.{train,
        infer}``: ms per step per oneDNN primitive kind; ``runtime``: name, reorders, threads,
        max_abs_err, max_abs_ref, parity_of), ``runtime`` and ``phases`` (those run), ``log`` (the order in which
        the rounds ran: [phase, round, side]), title, kind, batch, input_size, seconds; or
        ``error``.

    Raises:
        ValueError: an unknown pair name.
    """
    chosen = select_pairs(pairs, setup)
    result: Dict[str, Any] = {
        "setup": {**asdict(setup), "torch": torch.__version__, "machine": machine_description(),
                  "precision_note": precision_note(setup.precision),
                  "ref_precision_note": precision_note(setup.ref_precision or setup.precision),
                  "command": command, "pairs": [p.name for p in chosen]},
        "runtime": setup.runtime,
        "method": METHOD_NOTE,
        "pairs": {},
    }
    t0 = time.perf_counter()
    for pair in chosen:
        log(f"{pair.name}: {pair.title}")
        result["pairs"][pair.name] = run_pair(pair, setup, log)
    result["setup"]["seconds"] = time.perf_counter() - t0
    return result
