"""Backbone comparison: train the same detector with several backbones over fixed seeds and report
COCO AP mean ± std, seconds per iteration and backbone+FPN FLOPs per backbone.

Source: Xie et al., ICCV 2019, sec. 5 (RandWire-WS against ResNet-50 as Faster R-CNN FPN
backbones at about equal FLOPs). Each run is ``tools/train_net.py`` (Detectron2's
``DefaultTrainer`` through :class:`rwdet.engine.Trainer`) in a subprocess of its own, with
``--resume``, in ``OUTPUT_DIR/<config name>/seed<s>``: the same command as a user runs, so a
run here is repeatable by hand, an interrupted comparison resumes where it stopped, and a
finished run (its ``compare_run.json`` record) is reused, also where its folder has been moved or
copied to another OUTPUT_DIR (the records behind the published tables are in ``docs/runs/``).

Fairness is checked before any training: the configs must agree on every key except the
backbone's own (MODEL.BACKBONE.NAME, MODEL.RANDWIRE.*, MODEL.RESNETS.*, OUTPUT_DIR), i.e. the
same heads, data, input size, schedule, freezing (MODEL.BACKBONE.FREEZE_AT) and initialisation
(MODEL.WEIGHTS), and their backbones must use the same norm.

Transfer (backbone x initialisation; He et al., "Rethinking ImageNet Pre-training", ICCV 2019):
configs whose MODEL.WEIGHTS names an rwdet pretraining checkpoint form the pretrained group, the
others the from-scratch group. Each group is checked as above (in the pretrained group each
backbone has its own checkpoint); between the groups the initialisation keys
(:data:`~rwdet.analysis.initialization.INIT_KEYS`) and the backbone norm may differ too (the
fine-tuning recipe: e.g. FrozenBN and FREEZE_AT 2); the checkpoints must come from one
pretraining recipe (:func:`~rwdet.analysis.initialization.check_same_pretraining`). A run's
record holds its checkpoint's SHA-256: a run whose checkpoint has changed is not reused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import yaml

from ..config import is_randwire, randwire_graph_specs
from ..engine.checkpoint import resume_candidates
from ..engine.defaults import load_config
from ..graphs import format_setting
from ..utils.io import atomic_write
from .flops import count_detector
from .initialization import INIT_KEYS, check_same_pretraining, describe_init, init_label

__all__ = [
    "BACKBONE_KEYS",
    "TrainingDiverged",
    "backbone_label",
    "backbone_norm",
    "current_metrics_rows",
    "check_same_setup",
    "count_flops",
    "format_markdown",
    "format_runs_markdown",
    "read_run",
    "run_comparison",
    "summarize",
    "write_results",
]

logger = logging.getLogger(__name__)

#: Config keys (prefixes) that may differ between the compared configs: the backbone's own.
BACKBONE_KEYS = ("MODEL.BACKBONE.NAME", "MODEL.RANDWIRE.", "MODEL.RESNETS.", "OUTPUT_DIR")

#: File that marks a finished run in its output directory (written by :func:`run_comparison`).
RUN_RECORD = "compare_run.json"

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _flatten(node, prefix: str = "") -> Dict[str, object]:
    out = {}
    for k, v in node.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def backbone_norm(cfg) -> str:
    """The norm of a detection config's backbone: MODEL.RANDWIRE.NORM for RandWire, else
    MODEL.RESNETS.NORM (Detectron2's ResNet builders)."""
    return cfg.MODEL.RANDWIRE.NORM if is_randwire(cfg) else cfg.MODEL.RESNETS.NORM


def backbone_label(cfg) -> str:
    """A short name of a detection config's backbone, e.g. ``RandWire-WS(4, 0.75) small C=78``
    or ``ResNet-50``."""
    if is_randwire(cfg):
        rw = cfg.MODEL.RANDWIRE
        spec = randwire_graph_specs(cfg)[-1]
        return f"RandWire-{format_setting(spec.model, spec.params)} {rw.REGIME} C={rw.CHANNELS}"
    if "resnet" in cfg.MODEL.BACKBONE.NAME:
        return f"ResNet-{cfg.MODEL.RESNETS.DEPTH}"
    return str(cfg.MODEL.BACKBONE.NAME)


def check_same_setup(cfgs: Dict[str, object]) -> Dict[str, dict]:
    """Refuse configs that would compare more than their backbones (and, in a transfer
    comparison, their initialisations; see the module docstring).

    Args:
        cfgs: ``{config path: loaded detection config}``, at least one.

    Returns:
        ``{config path: describe_init(cfg)}``, each config's initialisation.

    Raises:
        ValueError: two configs of one group (from scratch, or pretrained) differ in a key
            outside :data:`BACKBONE_KEYS` (plus MODEL.WEIGHTS in the pretrained group), or
            configs of the two groups outside those and :data:`INIT_KEYS` (the message lists up
            to 10 such keys with both values); the backbone norms of a group differ; a config
            has no test dataset; MODEL.WEIGHTS is not an rwdet pretraining checkpoint; or the
            checkpoints were pretrained differently.
        FileNotFoundError: MODEL.WEIGHTS names no file.
    """
    items = list(cfgs.items())
    for path, cfg in items:
        if not cfg.DATASETS.TEST:
            raise ValueError(f"{path}: DATASETS.TEST is empty; the comparison needs a test set for AP")
    inits = {path: describe_init(cfg) for path, cfg in items}
    check_same_pretraining(inits)
    for kind, allowed in (("scratch", BACKBONE_KEYS), ("pretrained", BACKBONE_KEYS + ("MODEL.WEIGHTS",))):
        group = [(p, c) for p, c in items if inits[p]["kind"] == kind]
        _check_pairs(group, allowed, norms=True)
    _check_pairs(items, BACKBONE_KEYS + INIT_KEYS, norms=False)
    return inits


def _check_pairs(items, allowed: Tuple[str, ...], norms: bool) -> None:
    """Each config of ``items`` against the first: no difference outside ``allowed`` (and, with
    ``norms``, the same backbone norm)."""
    if not items:
        return
    ref_path, ref = items[0]
    ref_flat = _flatten(ref)
    for path, cfg in items[1:]:
        flat = _flatten(cfg)
        diff = sorted(
            k for k in set(ref_flat) | set(flat)
            if not k.startswith(allowed) and ref_flat.get(k) != flat.get(k)
        )
        if diff:
            shown = "; ".join(f"{k}: {ref_flat.get(k)!r} vs {flat.get(k)!r}" for k in diff[:10])
            raise ValueError(
                f"{ref_path} and {path} differ outside the backbone in {len(diff)} key(s): {shown}. "
                f"Only {', '.join(allowed)} may differ; put the rest in a shared _BASE_"
            )
        if norms and backbone_norm(cfg) != backbone_norm(ref):
            raise ValueError(
                f"backbone norms differ: {ref_path} uses {backbone_norm(ref)!r}, {path} uses "
                f"{backbone_norm(cfg)!r}; compare backbones with the same norm"
            )


def _config_name(config_file: str) -> str:
    return os.path.splitext(os.path.basename(config_file))[0]


def _config_hash(cfg, keys_of: Optional[dict] = None, with_output_dir: bool = False) -> str:
    """The hash of a run's config (its full dump, OUTPUT_DIR left out: where a run's folder lies
    does not change the run, so a comparison folder moved or copied elsewhere is reused). With
    ``keys_of`` (a run's saved config.yaml, as a dict): of ``cfg`` without the keys that config
    lacks, i.e. keys added to rwdet after that run was trained, which start at a default that
    keeps the former behaviour. ``with_output_dir``: the hash as records of earlier
    rwdet versions hold it, OUTPUT_DIR included."""
    if keys_of is not None:
        cfg = _without_keys_absent_from(cfg, keys_of)
    if not with_output_dir:
        cfg = cfg.clone()
        cfg.defrost()
        cfg.OUTPUT_DIR = ""
    return hashlib.sha256(cfg.dump().encode()).hexdigest()[:16]


def _without_keys_absent_from(cfg, reference: dict):
    """A copy of ``cfg`` (a CfgNode) keeping only the keys that ``reference`` (a nested dict)
    has too."""
    out = cfg.clone()
    out.defrost()

    def prune(node, ref):
        for key in list(node.keys()):
            if not isinstance(ref, dict) or key not in ref:
                del node[key]
            elif isinstance(node[key], dict):
                prune(node[key], ref[key])

    prune(out, reference)
    return out


def _same_config(cfg, recorded_hash: Optional[str], run_dir: str) -> bool:
    """Whether ``cfg`` is the config a run in ``run_dir`` recorded (``recorded_hash``): equal
    dumps but for OUTPUT_DIR, or equal but for keys added to rwdet since (read from the run's
    config.yaml). A record written before OUTPUT_DIR was left out of the hash matches where
    ``cfg.OUTPUT_DIR`` is the folder it was trained in."""
    def hashes(keys_of=None):
        return {_config_hash(cfg, keys_of, with_output_dir=w) for w in (False, True)}

    if recorded_hash is None:
        return False
    if recorded_hash in hashes():
        return True
    saved = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(saved):
        return False
    with open(saved, encoding="utf-8") as f:
        return recorded_hash in hashes(yaml.safe_load(f))


def current_metrics_rows(metrics_path: str) -> list:
    """The rows of Detectron2's ``metrics.json`` that the finished run stands on.

    Detectron2's ``JSONWriter`` appends one row per iteration, with strictly increasing
    iterations within one process. A run stopped and resumed (``--resume``) restarts from its
    last checkpoint and appends rows again from there, so the stopped attempt's rows past that
    checkpoint are superseded. The resumed attempt writes again every row the stopped one wrote
    after that checkpoint (same schedule and hooks), so a row whose iteration is not above the
    previous one drops every earlier row at or above its iteration. Returns ``[]`` when the file
    does not exist.
    """
    rows = []
    if not os.path.isfile(metrics_path):
        return rows
    with open(metrics_path) as f:
        for line in f:
            row = json.loads(line)
            it = int(row.get("iteration", -1))
            while rows and int(rows[-1].get("iteration", -1)) >= it:
                rows.pop()
            rows.append(row)
    return rows


def read_run(run_dir: str, test_dataset: str) -> dict:
    """The results of one finished training run in ``run_dir``.

    Reads ``eval_results.json`` (written by :class:`rwdet.engine.Trainer` after testing) and
    ``metrics.json`` (Detectron2's ``JSONWriter``; of a run stopped and resumed, only the rows
    of the attempt that finished it, see :func:`current_metrics_rows`).

    Args:
        run_dir: the run's OUTPUT_DIR.
        test_dataset: the dataset whose bbox results to take (the config's DATASETS.TEST[0]).

    Returns:
        ``{"bbox": {metric: value}}`` with COCO AP in percent (AP, AP50, AP75, APs, APm,
        APl, AP-<class>); ``"segm"``: the same for masks (Mask R-CNN; ``{}`` for a detector
        without masks); ``"sec_per_iter"``: the median of the ``time`` values in
        metrics.json (each one Detectron2's median step time, data loading included, over its
        logging window of 20 iterations; seconds; NaN for a run of at most 3 iterations, which
        Detectron2's IterationTimer leaves untimed); ``"evaluations"``: ``[[iteration, AP], ...]``
        of every evaluation logged during training (TEST.EVAL_PERIOD > 0), the final one
        included; ``"segm_evaluations"``: the same with mask AP (empty without masks).

    Raises:
        FileNotFoundError: a missing results file (the message names it).
        KeyError: no bbox results for ``test_dataset``.
    """
    path = os.path.join(run_dir, "eval_results.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist: the run in {run_dir} has not been evaluated")
    with open(path) as f:
        results = json.load(f)
    if test_dataset not in results or "bbox" not in results[test_dataset]:
        raise KeyError(f"{path} holds no bbox results for {test_dataset!r}; it has {sorted(results)}")
    times, evaluations, segm_evaluations = [], [], []
    for row in current_metrics_rows(os.path.join(run_dir, "metrics.json")):
        if "time" in row:
            times.append(float(row["time"]))
        if "bbox/AP" in row:
            evaluations.append([int(row["iteration"]), float(row["bbox/AP"])])
        if "segm/AP" in row:
            segm_evaluations.append([int(row["iteration"]), float(row["segm/AP"])])
    return {
        "bbox": {k: float(v) for k, v in results[test_dataset]["bbox"].items()},
        "segm": {k: float(v) for k, v in results[test_dataset].get("segm", {}).items()},
        "sec_per_iter": statistics.median(times) if times else math.nan,
        "evaluations": evaluations,
        "segm_evaluations": segm_evaluations,
    }


def _train(config_file: str, opts: Sequence[str], run_dir: str) -> float:
    """Run ``tools/train_net.py --resume`` for one run; return its wall time in seconds."""
    os.makedirs(run_dir, exist_ok=True)
    cmd = [sys.executable, os.path.join(REPO_ROOT, "tools", "train_net.py"), "--resume",
           "--config-file", config_file, *opts]
    log_path = os.path.join(run_dir, "train_net.log")
    start = time.perf_counter()
    with open(log_path, "a") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        with open(log_path) as f:
            tail = f.read()[-3000:]
        if any(m in tail for m in DIVERGED_MESSAGES):
            raise TrainingDiverged(run_dir, _last_iteration(run_dir), seconds)
        raise RuntimeError(f"training run {run_dir} failed (exit {proc.returncode}); end of {log_path}:\n{tail}")
    return seconds


#: Detectron2's messages when a run diverges (SimpleTrainer's loss check; the RPN's box check).
DIVERGED_MESSAGES = ("Loss became infinite or NaN", "Training has diverged")


class TrainingDiverged(RuntimeError):
    """A training run stopped because its loss or predictions became NaN or infinite.

    Attributes:
        run_dir: the run's folder.
        iteration: the last iteration logged to its metrics.json (-1 if none).
        seconds: wall time of the failed invocation.
    """

    def __init__(self, run_dir: str, iteration: int, seconds: float):
        super().__init__(f"training run {run_dir} diverged (NaN or infinite) at iteration {iteration}")
        self.run_dir, self.iteration, self.seconds = run_dir, iteration, seconds


def _last_iteration(run_dir: str) -> int:
    """The last iteration in the run's metrics.json, or -1."""
    last = -1
    path = os.path.join(run_dir, "metrics.json")
    if os.path.isfile(path):
        with open(path) as f:
            for line in f:
                last = max(last, int(json.loads(line).get("iteration", -1)))
    return last


def run_comparison(
    config_files: Sequence[str],
    seeds: Sequence[int],
    output_dir: str,
    opts: Sequence[str] = (),
) -> List[dict]:
    """Train (or reuse) every (config, seed) run and return one record per run.

    All configs are loaded and checked (:func:`check_same_setup`) before any training. Run
    ``(config, s)`` trains in ``output_dir/<config name>/seed<s>`` with ``SEED s`` (Detectron2's
    seed of initialisation, data order and augmentation; the RandWire graphs stay the config's).
    A run whose record ``compare_run.json`` matches the config is reused; an unfinished one
    resumes from its last checkpoint; a finished run of the same config with a smaller
    SOLVER.MAX_ITER is extended (trained on with ``--resume``, which continues exactly: the
    result is that of the longer run; :mod:`rwdet.engine.resume`); a record of another config
    is refused. Every run is planned, and any refusal raised, before the first one trains.

    Args:
        config_files: detection configs, one per backbone (e.g. a RandWire and a ResNet one).
        seeds: training seeds, e.g. 1 2 3; the same for every config.
        output_dir: root of the runs.
        opts: ``KEY VALUE`` overrides for every run (e.g. DATASETS.BCCD_ROOT, SOLVER.MAX_ITER).

    Returns:
        records ``{"config", "backbone", "init", "seed", "run_dir", "bbox", "sec_per_iter",
        "evaluations", "seconds", "resumed_at", "reused", "diverged_at"}``; init is the config's
        initialisation (:func:`~rwdet.analysis.initialization.describe_init` without the recipe);
        diverged_at is the iteration at
        which a run's loss or predictions became NaN or infinite (Detectron2 stops it; its
        bbox is then empty and the comparison goes on), else None; seconds is the wall time of training and
        evaluation, as recorded by the invocations that trained the run (an extended run:
        their sum; None for a record without it); resumed_at is the first iteration at which an
        invocation resumed one that had stopped before recording the run (the time of stopped
        invocations is not in seconds), else None; reused is True for a run finished by an
        earlier invocation.

    Raises:
        ValueError: no configs, no seeds, repeated seeds or configs, configs that differ
            outside their backbones (see :func:`check_same_setup`), bad overrides, or an
            output directory holding a run of another config, a longer run, or a shorter run
            that cannot be extended exactly.
        FileNotFoundError: a missing config file.
        RuntimeError: a training run failed for another reason than divergence (the message
            shows the end of its log).
    """
    if not config_files:
        raise ValueError("no configs given; e.g. configs/bccd/faster_rcnn_randwire_ws_small_bccd.yaml "
                         "configs/bccd/faster_rcnn_R_18_FPN_bccd.yaml")
    if not seeds:
        raise ValueError("no seeds given; e.g. 1 2 3")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds {list(seeds)} repeat a value")
    names = [_config_name(c) for c in config_files]
    if len(set(names)) != len(names):
        raise ValueError(f"configs {list(config_files)} repeat a file name; each names its runs' folder")
    for path in config_files:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"config file {path!r} does not exist")
    base = {path: load_config(path, opts) for path in config_files}
    inits = check_same_setup(base)
    # Plan every run (reuse, extend or train) before training any, so that a refused run
    # refuses the whole command before it changes anything.
    plans = []
    for path, name in zip(config_files, names):
        label = backbone_label(base[path])
        for seed in seeds:
            run_dir = os.path.abspath(os.path.join(output_dir, name, f"seed{seed}"))
            run_opts = list(opts) + ["SEED", str(int(seed)), "OUTPUT_DIR", run_dir]
            cfg = load_config(path, run_opts)
            record_path = os.path.join(run_dir, RUN_RECORD)
            done = None
            if os.path.isfile(record_path):
                with open(record_path) as f:
                    done = json.load(f)
                _check_same_weights(done, inits[path], run_dir)
            plans.append((path, label, seed, run_dir, run_opts, cfg, done, *_plan_run(cfg, done, run_dir)))
    records = []
    for path, label, seed, run_dir, run_opts, cfg, done, action, recorded in plans:
        diverged_at = done.get("diverged_at") if action == "reuse" else None
        resumed_at = done.get("resumed_at") if done else None  # kept from a reused or extended record
        if action == "reuse":
            seconds = done.get("seconds")
            logger.info("Reusing %s seed %d (%s)%s", label, seed, run_dir,
                        "" if diverged_at is None else f": diverged at iteration {diverged_at}")
        else:
            if action == "extend":
                logger.info("Extending %s seed %d from %d to %d iterations (%s)", label, seed,
                            recorded, cfg.SOLVER.MAX_ITER, run_dir)
            else:
                logger.info("Training %s seed %d -> %s", label, seed, run_dir)
            start = _resume_start(run_dir)
            if start is not None and start > (recorded if action == "extend" else 0):
                logger.info("Resuming %s seed %d at iteration %d (an earlier invocation stopped); the "
                            "record's time leaves that invocation out", label, seed, start)
                resumed_at = start if resumed_at is None else resumed_at
            try:
                seconds = _train(path, run_opts, run_dir)
            except TrainingDiverged as e:
                logger.warning("%s; the comparison goes on without it", e)
                seconds, diverged_at = e.seconds, e.iteration
            record = {"config": path, "opts": run_opts, "config_hash": _config_hash(cfg),
                      "max_iter": int(cfg.SOLVER.MAX_ITER), "seconds": seconds}
            if inits[path]["kind"] == "pretrained":
                record["weights_sha256"] = inits[path]["sha256"]
            if diverged_at is not None:
                record["diverged_at"] = diverged_at
            if resumed_at is not None:
                record["resumed_at"] = resumed_at
            if action == "extend":
                prior = done.get("seconds")
                record["seconds"] = None if prior is None else prior + seconds
                record["extended_from"] = done.get("extended_from", []) + [recorded]
                seconds = record["seconds"]
            atomic_write(os.path.join(run_dir, RUN_RECORD), lambda f, r=record: f.write(json.dumps(r, indent=2).encode()))
        if diverged_at is None:
            result = read_run(run_dir, cfg.DATASETS.TEST[0])
        else:
            result = {"bbox": {}, "segm": {}, "sec_per_iter": math.nan, "evaluations": [], "segm_evaluations": []}
        init = {k: v for k, v in inits[path].items() if k != "recipe"}
        records.append({"config": path, "backbone": label, "init": init, "seed": int(seed), "run_dir": run_dir,
                        "seconds": seconds, "resumed_at": resumed_at, "reused": action == "reuse",
                        "diverged_at": diverged_at, **result})
    return records


def _check_same_weights(done: dict, init: dict, run_dir: str) -> None:
    """Refuse to reuse or extend a finished run whose pretraining checkpoint (MODEL.WEIGHTS, the
    same path) has changed since it was trained (its record's ``weights_sha256``)."""
    recorded = done.get("weights_sha256")
    if init["kind"] == "pretrained" and recorded is not None and recorded != init["sha256"]:
        raise ValueError(
            f"{run_dir} was trained from another {init['weights']} (SHA-256 {recorded[:12]}..., now "
            f"{init['sha256'][:12]}...): the checkpoint changed since; remove that folder to train it "
            "again from the current checkpoint, or restore the former one")


def _recorded_max_iter(done: dict, run_dir: str) -> int:
    """SOLVER.MAX_ITER of a finished run: from its record, or (records written before rwdet
    stored it) from the run's own config.yaml."""
    if "max_iter" in done:
        return int(done["max_iter"])
    with open(os.path.join(run_dir, "config.yaml")) as f:
        return int(yaml.safe_load(f)["SOLVER"]["MAX_ITER"])


def _last_checkpoint(run_dir: str) -> Optional[dict]:
    """The checkpoint that ``train_net.py --resume`` goes on from in ``run_dir``, memory-mapped:
    the first of :func:`rwdet.engine.checkpoint.resume_candidates` that exists and reads (the
    tagged one, or the newest other when that is truncated or removed, as the checkpointer
    falls back); None when none does."""
    for path in resume_candidates(run_dir):
        if not os.path.isfile(path):
            continue
        try:
            return torch.load(path, map_location="cpu", mmap=True, weights_only=False)
        except Exception as e:  # truncated or not a checkpoint: the checkpointer skips it too
            logger.warning("Skipping %s, which does not read as a checkpoint (%s: %s)", path, type(e).__name__, e)
    return None


def _resumes_exactly(run_dir: str) -> bool:
    """Whether the run's last checkpoint holds the states of an exact resumption
    (:class:`rwdet.engine.resume.ExactResume`)."""
    ckpt = _last_checkpoint(run_dir)
    return ckpt is not None and "ExactResume" in ckpt.get("trainer", {}).get("hooks", {})


def _resume_start(run_dir: str) -> Optional[int]:
    """The iteration at which ``train_net.py --resume`` goes on in a run folder without a record
    (an invocation stopped before it finished): the last checkpoint's ``iteration`` + 1, as
    Detectron2's ``DefaultTrainer.resume_or_load``; None when the folder has no checkpoint."""
    ckpt = _last_checkpoint(run_dir)
    return None if ckpt is None or "iteration" not in ckpt else int(ckpt["iteration"]) + 1


def _plan_run(cfg, done: Optional[dict], run_dir: str) -> Tuple[str, Optional[int]]:
    """What to do with one run, and the recorded run's SOLVER.MAX_ITER (None when not needed):
    "train" (no record), "reuse" (a record of this config, or of the same config with another
    SOLVER.MAX_ITER whose run diverged before this MAX_ITER) or "extend" (a record of this
    config with a smaller SOLVER.MAX_ITER, whose checkpoint resumes exactly: training it on to
    MAX_ITER ends as a run trained to MAX_ITER from the start would).

    Raises:
        ValueError: a record of another config, or of a longer run, or of a shorter run that
            cannot be extended exactly; the message names the folder.
    """
    if done is None:
        return "train", None
    if _same_config(cfg, done.get("config_hash"), run_dir):
        return "reuse", None
    recorded = _recorded_max_iter(done, run_dir)
    shorter = cfg.clone()
    shorter.defrost()
    shorter.SOLVER.MAX_ITER = recorded
    if not _same_config(shorter, done.get("config_hash"), run_dir):
        raise ValueError(
            f"{run_dir} holds a finished run of another config or overrides ({done.get('config')} "
            f"{done.get('opts')}); use another --output-dir or remove that folder"
        )
    if done.get("diverged_at") is not None and done["diverged_at"] < cfg.SOLVER.MAX_ITER:
        return "reuse", recorded  # this run repeats the recorded one's iterations, so diverges alike
    if recorded > cfg.SOLVER.MAX_ITER:
        raise ValueError(
            f"{run_dir} holds a longer run of this config ({recorded} iterations, not "
            f"SOLVER.MAX_ITER {cfg.SOLVER.MAX_ITER}); use another --output-dir or remove that folder"
        )
    if not _resumes_exactly(run_dir):
        raise ValueError(
            f"{run_dir} holds a {recorded}-iteration run of this config whose checkpoint cannot "
            f"resume exactly (trained by an rwdet before exact resumption), so extending it to "
            f"{cfg.SOLVER.MAX_ITER} iterations would not equal a {cfg.SOLVER.MAX_ITER}-iteration "
            "run; use another --output-dir or remove that folder"
        )
    return "extend", recorded


def count_flops(config_files: Sequence[str], opts: Sequence[str] = ()) -> Dict[str, dict]:
    """Backbone+FPN FLOPs and whole-detector params of each config, at the size its test images
    are resized to (INPUT.MIN_SIZE_TEST x INPUT.MAX_SIZE_TEST, e.g. 320x427 for BCCD's 640x480
    photos), counted with fvcore by :func:`rwdet.analysis.flops.count_detector` (CPU, random
    weights).

    Returns:
        ``{config: {"flops": multiply-adds, "params": count, "input_shape": (1, 3, H, W)}}``.
    """
    out = {}
    for path in config_files:
        cfg = load_config(path, list(opts) + ["MODEL.DEVICE", "cpu"])
        size = (int(cfg.INPUT.MIN_SIZE_TEST), int(cfg.INPUT.MAX_SIZE_TEST))
        flops, params, shape = count_detector(cfg, size)
        out[path] = {"flops": flops, "params": params, "input_shape": list(shape)}
    return out


def _mean_std(values: Sequence[float]) -> Tuple[float, float]:
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return math.nan, math.nan
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else math.nan)


def summarize(records: Sequence[dict], flops: Optional[Dict[str, dict]] = None) -> List[dict]:
    """Mean and sample standard deviation over seeds, one row per config (input order).

    Args:
        records: from :func:`run_comparison`.
        flops: optional ``{config: {"flops", "params", "input_shape"}}`` (backbone+FPN
            multiply-adds, whole-detector parameters, counted (1, 3, H, W)).

    Returns:
        rows ``{"config", "backbone", "seeds", "n", "diverged", "metrics": {name: {"mean", "std",
        "per_seed"}}, "sec_per_iter": {"mean", "std", "per_seed"}, "last_evaluations":
        [[iteration, AP], ...] per seed (the last two), "flops", "params", "input_shape"}``;
        metric names are AP, AP50, AP75 and AP-<class> (COCO AP in percent), and for runs with
        masks (Mask R-CNN) also "mask AP", "mask AP50", "mask AP75" (:data:`MASK_METRICS`). The std is the
        sample one (n - 1), NaN with one seed; NaN values (a class absent from the test set)
        are left out of the mean. Runs that diverged are left out of seeds, n and every
        statistic, and listed in "diverged" as ``{seed: iteration}``.
    """
    rows: Dict[str, dict] = {}
    for r in records:
        row = rows.setdefault(r["config"], {"config": r["config"], "backbone": r["backbone"],
                                            "init": init_label(r.get("init") or {"kind": "scratch"}), "runs": []})
        row["runs"].append(r)
    out = []
    for row in rows.values():
        every = row.pop("runs")
        diverged = {r["seed"]: r["diverged_at"] for r in every if r.get("diverged_at") is not None}
        runs = [r for r in every if r.get("diverged_at") is None]
        keys = ["AP", "AP50", "AP75"] + [k for k in (runs[0]["bbox"] if runs else {}) if k.startswith("AP-")]
        metrics = {}
        for k in keys:
            per_seed = [r["bbox"].get(k, math.nan) for r in runs]
            mean, std = _mean_std(per_seed)
            metrics[k] = {"mean": mean, "std": std, "per_seed": per_seed}
        if any(r.get("segm") for r in runs):
            for name, k in MASK_METRICS.items():
                per_seed = [r.get("segm", {}).get(k, math.nan) for r in runs]
                mean, std = _mean_std(per_seed)
                metrics[name] = {"mean": mean, "std": std, "per_seed": per_seed}
        times = [r["sec_per_iter"] for r in runs]
        mean, std = _mean_std(times)
        count = (flops or {}).get(row["config"], {})
        out.append({
            **row, "seeds": [r["seed"] for r in runs], "n": len(runs), "diverged": diverged, "metrics": metrics,
            "sec_per_iter": {"mean": mean, "std": std, "per_seed": times},
            "last_evaluations": [r["evaluations"][-2:] for r in runs],
            "flops": count.get("flops"), "params": count.get("params"), "input_shape": count.get("input_shape"),
        })
    return out


#: Mask metrics in the tables (Mask R-CNN): column name -> Detectron2's "segm" metric.
MASK_METRICS = {"mask AP": "AP", "mask AP50": "AP50", "mask AP75": "AP75"}


def _mask_columns(metric_dicts) -> List[str]:
    """The :data:`MASK_METRICS` columns when any of ``metric_dicts`` has them, else none."""
    return list(MASK_METRICS) if any(name in m for m in metric_dicts for name in MASK_METRICS) else []


def _has_pretrained(labels) -> bool:
    """Whether any of the init labels (:func:`~rwdet.analysis.initialization.init_label`) is
    not "scratch": then the tables get an init column."""
    return any(label not in (None, "scratch") for label in labels)


def _pm(stat: dict, digits: int = 2) -> str:
    if math.isnan(stat["mean"]):
        return "-"
    std = "-" if math.isnan(stat["std"]) else f"{stat['std']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} ± {std}"


def format_markdown(rows: Sequence[dict]) -> str:
    """A Markdown table, one row per backbone: backbone | (init, in a transfer comparison:
    "scratch" or the pretraining's dataset and iterations) | config | seeds | diverged (seeds whose
    run diverged, left out of the statistics, with the iteration) | AP | AP50 | AP75 | (mask AP |
    mask AP50 | mask AP75, for Mask R-CNN) | AP of each class (mean ± std over seeds, COCO AP in percent) | s/iter (mean ± std) |
    backbone+FPN GFLOPs (at the counted input) | params (M, whole detector)."""
    classes = []
    for r in rows:
        classes += [k for k in r["metrics"] if k.startswith("AP-") and k not in classes]
    cols = ["AP", "AP50", "AP75"] + _mask_columns(r["metrics"] for r in rows) + classes
    with_init = _has_pretrained(r.get("init") for r in rows)
    head = ["backbone", *(["init"] if with_init else []), "config", "seeds", "diverged", *cols, "s/iter",
            "backbone+FPN GFLOPs", "params (M)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        diverged = ", ".join(f"seed {s} (iteration {i})" for s, i in sorted(r.get("diverged", {}).items())) or "-"
        cells = [r["backbone"], *([r.get("init", "scratch")] if with_init else []),
                 f"`{os.path.basename(r['config'])}`", ",".join(map(str, r["seeds"])) or "-", diverged]
        cells += [_pm(r["metrics"][c]) if c in r["metrics"] else "-" for c in cols]
        cells.append(_pm(r["sec_per_iter"], 3))
        if r["flops"] is None:
            cells += ["-", "-"]
        else:
            shape = "x".join(str(d) for d in r["input_shape"][2:])
            cells += [f"{r['flops'] / 1e9:.2f} ({shape})", f"{r['params'] / 1e6:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def format_runs_markdown(records: Sequence[dict]) -> str:
    """A Markdown table, one row per run, to check that AP has settled: backbone | (init, in a
    transfer comparison) | seed | AP |
    AP50 | AP75 | (mask AP | mask AP50 | mask AP75, for Mask R-CNN) | AP of each class (COCO AP in
    percent) | every evaluation during training as
    ``iteration: AP`` (``iteration: AP / mask AP`` with masks) (the iteration as Detectron2 logs it: the 0-based index of the step just
    done for a periodic evaluation, the run's length for the final one) | last step (AP of the
    last evaluation minus the one before; a clearly positive step means AP was still climbing) |
    s/iter | minutes (the run's recorded training and evaluation time; "resumed at N" when an
    invocation stopped and the next resumed it at iteration N: the stopped one's time is not
    counted). A missing or NaN value shows as ``-`` (e.g. an absent class, or an evaluation
    with no detection above the score threshold, for which Detectron2's COCOEvaluator returns
    NaN AP).

    Args:
        records: from :func:`run_comparison`, in their order; a diverged run gets one row that
            names the iteration.
    """
    classes = []
    for r in records:
        classes += [k for k in r.get("bbox", {}) if k.startswith("AP-") and k not in classes]
    masks = _mask_columns({name: 0 for name in MASK_METRICS} if r.get("segm") else {} for r in records)
    cols = ["AP", "AP50", "AP75"] + masks + classes
    with_init = _has_pretrained(init_label(r["init"]) for r in records if r.get("init"))
    head = ["backbone", *(["init"] if with_init else []), "seed", *cols, "evaluations (iteration: AP)",
            "last step", "s/iter", "minutes"]
    if masks:
        head[head.index("evaluations (iteration: AP)")] = "evaluations (iteration: AP / mask AP)"
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def num(x, fmt=".2f"):
        return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)

    for r in records:
        cells = [r["backbone"], *([init_label(r.get("init") or {"kind": "scratch"})] if with_init else []),
                 str(r["seed"])]
        if r.get("diverged_at") is not None:
            cells += [f"diverged at iteration {r['diverged_at']}"] + [""] * (len(head) - len(cells) - 1)
        else:
            evals = r.get("evaluations") or []
            step = evals[-1][1] - evals[-2][1] if len(evals) > 1 else None
            cells += [num(r.get("segm", {}).get(MASK_METRICS[c]) if c in MASK_METRICS else r["bbox"].get(c))
                      for c in cols]
            masked = dict(r.get("segm_evaluations") or [])
            shown = [f"{i}: {num(ap)}" + (f" / {num(masked[i])}" if i in masked else "") for i, ap in evals]
            cells += [", ".join(shown) or "-", num(step, "+.2f"),
                      num(r.get("sec_per_iter")),
                      num(None if r.get("seconds") is None else r["seconds"] / 60, ".1f")
                      + ("" if r.get("resumed_at") is None else f" (resumed at {r['resumed_at']})")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_results(rows: Sequence[dict], records: Sequence[dict], output_dir: str,
                  header: str = "") -> Dict[str, str]:
    """Write ``results.md`` (``header``, :func:`format_markdown`, then under "Per run"
    :func:`format_runs_markdown`) and ``results.json``
    (``{"backbones": rows, "runs": records}``, NaN as null) into ``output_dir`` (atomically);
    return their paths by kind ("markdown", "json")."""
    os.makedirs(output_dir, exist_ok=True)
    paths = {"markdown": os.path.join(output_dir, "results.md"), "json": os.path.join(output_dir, "results.json")}
    text = ((header.rstrip() + "\n\n" if header else "") + format_markdown(rows)
            + "\nPer run:\n\n" + format_runs_markdown(records))
    atomic_write(paths["markdown"], lambda f: f.write(text.encode()))

    def clean(x):
        if isinstance(x, float) and math.isnan(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    data = json.dumps(clean({"backbones": list(rows), "runs": list(records)}), indent=2)
    atomic_write(paths["json"], lambda f: f.write(data.encode()))
    return paths
