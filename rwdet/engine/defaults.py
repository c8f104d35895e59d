"""Config and run set-up shared by rwdet's command-line tools: Detectron2's ``default_setup``
split in two, so that a run is validated before anything is written to its OUTPUT_DIR."""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Sequence

import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.engine import defaults as d2_defaults
from detectron2.engine.defaults import default_writers
from detectron2.utils import comm
from detectron2.utils.collect_env import collect_env_info
from detectron2.utils.env import seed_all_rng
from detectron2.utils.events import EventWriter
from detectron2.utils.logger import setup_logger

from ..config import add_randwire_config, default_device, freeze_graph_specs, merge_config, regime_of
from ..data import add_dataset_config
from ..utils.io import atomic_write, remove_stale_temporaries
from .transfer import read_checkpoint_specs

__all__ = ["DeferredWriters", "begin_run", "commit_run", "ddp_on_cpu", "get_rwdet_cfg", "load_config"]

logger = logging.getLogger(__name__)

def get_rwdet_cfg() -> CfgNode:
    """Detectron2's default config plus rwdet's keys (``rwdet.config.add_randwire_config``,
    ``rwdet.data.add_dataset_config``), with MODEL.DEVICE defaulting to
    :func:`rwdet.config.default_device`."""
    cfg = add_dataset_config(add_randwire_config(get_cfg()))
    cfg.MODEL.DEVICE = default_device()  # "cuda" where available, else "cpu"
    return cfg


#: Loggers that Detectron2's ``default_setup`` and rwdet configure.
_LOGGERS = ("fvcore", "detectron2", "rwdet")


class _Buffer(logging.Handler):
    """Keeps the records logged before the run's folder may be written, for its log.txt."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def begin_run(cfg: CfgNode, args) -> CfgNode:
    """Start a run without writing anything: the first half of Detectron2's ``default_setup``.

    Console logging for the "fvcore", "detectron2" and "rwdet" loggers (Detectron2's
    ``setup_logger`` without a file; the records are kept for the run's log.txt), the log lines
    of ``default_setup`` (rank, environment, command line, config file), the seeds
    (``seed_all_rng(SEED + rank)``, before the model is built, as ``default_setup`` does) and
    ``cudnn.benchmark``. Then validate the run (datasets, model build, checkpoint to load), and
    call :func:`commit_run` to write to OUTPUT_DIR: a refused command leaves it unchanged.

    Returns:
        ``cfg``.
    """
    rank = comm.get_rank()
    buffer = _Buffer()
    for name in _LOGGERS:
        setup_logger(None, distributed_rank=rank, name=name)
        if getattr(begin_run, "buffer", None):  # a run refused earlier in this process
            logging.getLogger(name).removeHandler(begin_run.buffer)
        logging.getLogger(name).addHandler(buffer)
    begin_run.buffer = buffer
    log = logging.getLogger("detectron2")
    log.info("Rank of current process: %d. World size: %d", rank, comm.get_world_size())
    log.info("Environment info:\n%s", collect_env_info())
    log.info("Command line arguments: %s", args)
    if getattr(args, "config_file", ""):
        with open(args.config_file, encoding="utf-8") as f:
            log.info("Contents of args.config_file=%s:\n%s", args.config_file, f.read())
    seed_all_rng(None if cfg.SEED < 0 else cfg.SEED + rank)
    if not getattr(args, "eval_only", False):
        torch.backends.cudnn.benchmark = cfg.CUDNN_BENCHMARK
    return cfg


def commit_run(cfg: CfgNode) -> CfgNode:
    """Write the run's files, once it has been validated: the second half of ``default_setup``.

    Creates OUTPUT_DIR (main process), removes temporaries left there by an interrupted
    write (:func:`~rwdet.utils.io.remove_stale_temporaries`, logged), adds
    Detectron2's log file (``log.txt``, ``log.txt.rank<N>`` on other ranks; appended to, with
    the records logged since :func:`begin_run`), and writes ``config.yaml`` atomically.

    Returns:
        ``cfg``.
    """
    rank, output_dir = comm.get_rank(), cfg.OUTPUT_DIR
    buffer = getattr(begin_run, "buffer", None)
    if not output_dir:
        return cfg
    os.makedirs(output_dir, exist_ok=True)
    filename = os.path.join(output_dir, "log.txt" + (f".rank{rank}" if rank else ""))
    handler = logging.StreamHandler(open(filename, "a", buffering=1, encoding="utf-8"))
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter(  # Detectron2's plain_formatter
        "[%(asctime)s] %(name)s %(levelname)s: %(message)s", datefmt="%m/%d %H:%M:%S"))
    for record in buffer.records if buffer else ():
        handler.handle(record)
    for name in _LOGGERS:
        if buffer:
            logging.getLogger(name).removeHandler(buffer)
        logging.getLogger(name).addHandler(handler)
    begin_run.buffer = None
    if comm.is_main_process():
        remove_stale_temporaries(output_dir)
        path = os.path.join(output_dir, "config.yaml")
        logger.info("Running with full config:\n%s", cfg.dump())
        atomic_write(path, lambda f: f.write(cfg.dump().encode()))
        logger.info("Full config saved to %s", path)
    return cfg


class DeferredWriters(EventWriter):
    """Detectron2's ``default_writers`` (console, ``metrics.json``, TensorBoard), created at
    the first write rather than when the trainer is built: building a trainer to validate a
    run writes nothing to OUTPUT_DIR.

    Args:
        output_dir: the run's folder.
        max_iter: the run's iterations (for the console's ETA).
    """

    def __init__(self, output_dir: str, max_iter: int):
        self.output_dir, self.max_iter, self.writers = output_dir, max_iter, None

    def write(self):
        if self.writers is None:
            self.writers = default_writers(self.output_dir, self.max_iter)
        for w in self.writers:
            w.write()

    def close(self):
        for w in self.writers or ():
            w.close()


def load_config(config_file: str, opts: Sequence[str] = ()) -> CfgNode:
    """Build the full config of a run: defaults, ``config_file``, then ``KEY VALUE`` overrides.

    The random graphs are resolved and written into MODEL.RANDWIRE.GRAPHS, so the config.yaml
    saved in OUTPUT_DIR rebuilds the same networks. MODEL.DEVICE: see :func:`rwdet.config.merge_config`.

    Args:
        config_file: path to a YAML config.
        opts: flat list of overrides, e.g. ``["SOLVER.MAX_ITER", "100"]``.

    Returns:
        CfgNode: the config, frozen.

    Raises:
        FileNotFoundError: ``config_file`` does not exist.
        ValueError: an odd number of overrides, or invalid RandWire keys.
        RuntimeError: MODEL.DEVICE "cuda" without CUDA (see :func:`rwdet.config.merge_config`).
    """
    cfg = merge_config(get_rwdet_cfg(), config_file, opts)
    _apply_pretrained_graphs(cfg)
    freeze_graph_specs(cfg)
    cfg.freeze()
    return cfg


def _apply_pretrained_graphs(cfg: CfgNode) -> None:
    """With MODEL.RANDWIRE.PRETRAINED_GRAPHS "adopt", take the graphs of the MODEL.WEIGHTS
    pretraining checkpoint (generator keys and edges), so the detector is built with them."""
    mode = cfg.MODEL.RANDWIRE.PRETRAINED_GRAPHS
    if mode not in ("check", "adopt"):
        raise ValueError(f"MODEL.RANDWIRE.PRETRAINED_GRAPHS={mode!r}; allowed: 'check', 'adopt'")
    if mode != "adopt" or not cfg.MODEL.WEIGHTS or not os.path.isfile(cfg.MODEL.WEIGHTS):
        return
    specs = read_checkpoint_specs(cfg.MODEL.WEIGHTS)
    if not specs:
        raise ValueError(f"MODEL.WEIGHTS={cfg.MODEL.WEIGHTS} holds no RandWire graphs to adopt")
    rw = cfg.MODEL.RANDWIRE
    regime = regime_of(len(specs))
    if regime is None:
        raise ValueError(f"{cfg.MODEL.WEIGHTS} has {len(specs)} graphs; a RandWire body has 3 or 4")
    rw.REGIME = regime
    rw.GRAPH_MODEL = specs[0].model
    for key, value in specs[0].params.items():
        setattr(rw, key, value)
    rw.SEEDS = [s.seed for s in specs]
    rw.NODES = specs[-1].num_nodes
    rw.GRAPHS = [s.to_json() for s in specs]
    logger.info("Adopted the graphs of %s: %s", cfg.MODEL.WEIGHTS, [s.describe() for s in specs])


@contextlib.contextmanager
def ddp_on_cpu(device):
    """Let ``DefaultTrainer.__init__`` wrap a CPU model for a multi-process (gloo) run.

    Detectron2's ``create_ddp_model`` passes ``device_ids=[local rank]``, which assumes one GPU
    per process; DistributedDataParallel refuses device ids for a CPU module. For CPU runs with
    more than one process, the call gets ``device_ids=None`` (what DDP wants on the CPU) for the
    duration of the block; otherwise nothing changes. Shared by the detection and the
    classification trainers.

    Args:
        device: the model's device (MODEL.DEVICE: a str or ``torch.device``).
    """
    if torch.device(device).type == "cuda" or comm.get_world_size() == 1:
        yield
        return
    create = d2_defaults.create_ddp_model
    d2_defaults.create_ddp_model = lambda model, **kwargs: create(model, **{**kwargs, "device_ids": None})
    try:
        yield
    finally:
        d2_defaults.create_ddp_model = create
