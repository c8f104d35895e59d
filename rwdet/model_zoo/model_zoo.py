"""rwdet's shipped configs, found as Detectron2's model zoo finds its own.

``detectron2.model_zoo.get_config_file("COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml")`` reads the
configs that Detectron2's wheel ships inside its package; here
``rwdet.model_zoo.get_config_file("bccd/faster_rcnn_randwire_ws_small_bccd.yaml")`` does the same
for the files of the repository's ``configs/`` folder. A built wheel holds them as package data
in ``rwdet/model_zoo/configs/`` (setup.py copies them at build time, as Detectron2's setup.py
links its configs into its package); a source checkout (an editable install) reads the
checkout's ``configs/`` itself.
"""

from __future__ import annotations

import os
from typing import List, Optional, Sequence

__all__ = ["config_root", "get_config", "get_config_file", "list_configs"]

_PACKAGE_CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
_CHECKOUT_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                 "configs")

#: What a config file may end in: YAML configs (Detectron2's CfgNode) and Python ones (LazyConfig).
CONFIG_EXTENSIONS = (".yaml", ".py")


def config_root() -> str:
    """The folder that holds the shipped configs: the package's ``configs/`` (an installed
    wheel), else the source checkout's.

    Raises:
        FileNotFoundError: neither exists (a broken install).
    """
    for root in (_PACKAGE_CONFIGS, _CHECKOUT_CONFIGS):
        if os.path.isdir(root):
            return root
    raise FileNotFoundError(
        f"rwdet's configs are not installed: neither {_PACKAGE_CONFIGS} (a wheel's package data) nor "
        f"{_CHECKOUT_CONFIGS} (a source checkout) exists; reinstall rwdet")


def list_configs(root: Optional[str] = None) -> List[str]:
    """Every shipped config, as the paths :func:`get_config_file` takes (relative to the config
    folder, ``/``-separated, sorted); the ``Base-*`` files that other configs build on
    included."""
    root = root or config_root()
    found = []
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith(CONFIG_EXTENSIONS) and name != "__init__.py":
                found.append(os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/"))
    return sorted(found)


def get_config_file(config_path: str) -> str:
    """The absolute path of a shipped config (Detectron2's ``model_zoo.get_config_file``).

    Args:
        config_path: relative to the config folder, e.g.
            ``"bccd/faster_rcnn_randwire_ws_small_bccd.yaml"`` or
            ``"tiny_imagenet/randwire_ws_small.yaml"``.

    Raises:
        FileNotFoundError: no such shipped config; the message names the folder searched and
            the configs in the same sub-folder.
    """
    root = config_root()
    path = os.path.normpath(os.path.join(root, config_path))
    if not path.startswith(root + os.sep) or not os.path.isfile(path):
        folder = os.path.dirname(config_path.replace("\\", "/"))
        near = [c for c in list_configs(root) if os.path.dirname(c) == folder]
        raise FileNotFoundError(
            f"{config_path!r} is not a shipped rwdet config (looked in {root}); configs in "
            f"{folder or 'the top folder'}: {', '.join(near) or 'none'}")
    return path


def get_config(config_path: str, opts: Sequence[str] = ()):
    """Load a shipped config (Detectron2's ``model_zoo.get_config``): a detection or a
    classification YAML config as ``tools/train_net.py`` or ``tools/pretrain_net.py`` would
    (defaults, the file, then ``KEY VALUE`` overrides; graphs resolved; frozen), or a Python
    LazyConfig as ``tools/lazyconfig_train_net.py`` would (``LazyConfig.load``, then
    ``key=value`` overrides).

    Args:
        config_path: as for :func:`get_config_file`.
        opts: overrides: ``KEY VALUE`` items for YAML (e.g. ``["DATASETS.BCCD_ROOT",
            "/data/BCCD"]``), ``key=value`` items for a LazyConfig (e.g.
            ``["datasets.bccd_root=/data/BCCD"]``).

    Returns:
        a frozen ``CfgNode`` (which kind: ``rwdet.analysis.common.config_task``), or the
        LazyConfig's ``DictConfig``.

    Raises:
        FileNotFoundError: see :func:`get_config_file`.
        ValueError: bad overrides or RandWire keys.
    """
    path = get_config_file(config_path)
    if path.endswith(".py"):
        from detectron2.config import LazyConfig

        return LazyConfig.apply_overrides(LazyConfig.load(path), list(opts))
    from ..analysis.common import load_any_config

    return load_any_config(path, opts)[1]
