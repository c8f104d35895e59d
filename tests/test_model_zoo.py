"""rwdet.model_zoo: the configs ship inside the package, as Detectron2's do; a wheel installed
outside the checkout finds, loads and builds every one of them."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rwdet import model_zoo

REPO = Path(__file__).resolve().parents[1]


def test_every_config_of_the_checkout_is_listed_and_found():
    listed = model_zoo.list_configs()
    on_disk = sorted(str(p.relative_to(REPO / "configs")) for p in (REPO / "configs").rglob("*.yaml"))
    assert [c for c in listed if c.endswith(".yaml")] == on_disk
    path = model_zoo.get_config_file("bccd/faster_rcnn_randwire_ws_small_bccd.yaml")
    assert Path(path) == REPO / "configs" / "bccd" / "faster_rcnn_randwire_ws_small_bccd.yaml"
    cfg = model_zoo.get_config("tiny_imagenet/resnet18.yaml", ["DATA.ROOT", "x"])
    assert cfg.MODEL.ARCH == "resnet18" and cfg.DATA.ROOT == "x"
    assert model_zoo.get_config("bccd/faster_rcnn_R_18_FPN_bccd.yaml").MODEL.RESNETS.DEPTH == 18


def test_an_unknown_config_is_refused_naming_its_neighbours():
    with pytest.raises(FileNotFoundError, match=r"'bccd/nope.yaml' is not a shipped rwdet config .*"
                                                r"faster_rcnn_R_18_FPN_bccd.yaml"):
        model_zoo.get_config_file("bccd/nope.yaml")
    with pytest.raises(FileNotFoundError, match="not a shipped rwdet config"):
        model_zoo.get_config_file("../setup.py")


_BUILD_EVERY_CONFIG = """
import os, sys
import rwdet
from rwdet import model_zoo
from rwdet.analysis.common import config_task
assert not rwdet.__file__.startswith(sys.argv[1]), rwdet.__file__  # the wheel, not the checkout
assert model_zoo.config_root().startswith(os.path.dirname(rwdet.__file__)), model_zoo.config_root()
from detectron2.modeling import build_model
from rwdet.classification.model import build_classifier
built = 0
from detectron2.config import instantiate
for name in model_zoo.list_configs():
    if name.endswith(".py"):
        cfg = model_zoo.get_config(name)
        if "model" in cfg:  # a LazyConfig detector (common/ holds pieces, no model)
            instantiate(cfg.model)
            built += 1
        continue
    if os.path.basename(name).startswith("Base-"):
        continue
    path = model_zoo.get_config_file(name)
    cfg = model_zoo.get_config(name, ["MODEL.DEVICE", "cpu"] + (["DATA.ROOT", "x"] if config_task(path) == "classification" else []))
    if config_task(path) == "classification":
        build_classifier(cfg)
    else:
        build_model(cfg)
    built += 1
print("built", built)
"""


def test_a_wheel_installed_elsewhere_loads_and_builds_every_config(tmp_path):
    source = tmp_path / "src"
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            (source / name).write_bytes((REPO / name).read_bytes())
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    wheel = next((tmp_path / "dist").glob("rwdet-*.whl"))
    target = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (target / "rwdet" / "model_zoo" / "configs" / "bccd" / "Base-RCNN-FPN-BCCD.yaml").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)
    proc = subprocess.run([sys.executable, "-c", _BUILD_EVERY_CONFIG, str(REPO)], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shipped = [c for c in model_zoo.list_configs() if c.endswith(".yaml") and not Path(c).name.startswith("Base-")]
    shipped += [c for c in model_zoo.list_configs() if c.endswith(".py") and not c.startswith("common/")]
    assert proc.stdout.split()[-1] == str(len(shipped))
