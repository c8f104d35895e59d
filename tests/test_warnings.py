"""No UserWarning or FutureWarning at the start of a tool or during a training step (issue 27):
rwdet filters exactly the warnings of its dependencies that no user can act on
(rwdet/__init__.py), and nothing else."""

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "tests" / "configs" / "tiny_bccd.yaml")
# Every UserWarning and FutureWarning becomes an error, as a user's `-W error` would make it.
STRICT = [sys.executable, "-W", "error::UserWarning", "-W", "error::FutureWarning"]
WARNING_LINE = re.compile(r"\b(UserWarning|FutureWarning)\b")
# torch.fx's log notice (glog style: "W1205 17:18:57.279000 28454 torch/fx/_symbolic_trace.py:57] ...")
FX_NOTICE = re.compile(r"^W\d{4} .*_symbolic_trace\.py.*is_fx_tracing will return true", re.M)


def run(args, timeout=600):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run(STRICT + args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_benchmark_starts_without_warnings():
    # --help builds the parser, which imports rwdet.analysis.benchmark and with it
    # detectron2.model_zoo (whose `import pkg_resources` warns on setuptools >= 81).
    proc = run([str(REPO / "tools" / "benchmark.py"), "--help"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not WARNING_LINE.search(proc.stdout + proc.stderr), proc.stderr[-3000:]


def test_a_training_step_runs_without_warnings(bccd_root, tmp_path):
    # The first training step reaches Detectron2's anchor generator, whose torch.meshgrid call
    # without `indexing` warns once per process.
    proc = run([str(REPO / "tools" / "train_net.py"), "--config-file", TINY, "DATASETS.BCCD_ROOT", str(bccd_root),
                "SOLVER.MAX_ITER", "1", "DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", str(tmp_path / "run")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "run" / "model_final.pth").is_file()
    assert not WARNING_LINE.search(proc.stdout + proc.stderr), proc.stderr[-3000:]
    # ...and Detectron2's ROIPooler asks torch.fx's is_fx_tracing, which logs a notice once
    assert not FX_NOTICE.search(proc.stdout + proc.stderr), proc.stderr[-3000:]


def test_the_filters_are_exact():
    """The same messages from another module, and other messages from the same modules, still warn."""
    from rwdet import ignore_dependency_warnings

    def warn_from(module: str, message: str, category=UserWarning):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ignore_dependency_warnings()
            warnings.warn_explicit(message, category, f"{module.replace('.', '/')}.py", 1, module=module)
        return caught

    meshgrid = "torch.meshgrid: in an upcoming release, it will be required to pass the indexing argument."
    assert not warn_from("torch.functional", meshgrid + " (Triggered internally)")
    assert not warn_from("detectron2.model_zoo.model_zoo", "pkg_resources is deprecated as an API. See ...")
    assert not warn_from("torch.jit._script", "`torch.jit.script` is deprecated.", FutureWarning)
    assert warn_from("torch.functional", "something else")
    assert warn_from("torch.functional", meshgrid, FutureWarning)
    assert warn_from("mypackage.anchors", meshgrid)
    assert warn_from("mypackage", "pkg_resources is deprecated as an API.")


def test_the_fx_tracing_notice_alone_is_dropped():
    """The logging filter drops torch.fx's is_fx_tracing notice and nothing else of that logger."""
    import logging

    from rwdet import ignore_dependency_warnings

    ignore_dependency_warnings()
    logger = logging.getLogger("torch.fx._symbolic_trace")
    notice = ("is_fx_tracing will return true for both fx.symbolic_trace and torch.export. Please use "
              "is_fx_tracing_symbolic_tracing() for specifically fx.symbolic_trace")
    make = lambda msg: logger.makeRecord(logger.name, logging.WARNING, __file__, 1, msg, (), None)  # noqa: E731
    assert not logger.filter(make(notice))
    assert logger.filter(make("something else from torch.fx"))
